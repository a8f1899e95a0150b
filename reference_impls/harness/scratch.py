"""Tiny language models trained from scratch on the corpus, for the papers whose claim is about training.

Two stand-ins need models trained from random weights rather than a pruned checkpoint: the sparse scaling
law (a sweep of sparsities and training lengths) and BitNet b1.58 (ternary against full-precision training).
Both use this one loop so that their arms differ only in what the paper varies:

- `byte_streams(corpus)`: the corpus's calibration and evaluation halves as byte tokens (vocabulary 256).
  A byte vocabulary keeps the embedding and the softmax small, so a 2-layer model trains in seconds on a
  CPU; the `--model`'s own tokenizer (49k entries for tiny-llama) would spend most of the compute there.
- `tiny_llama(shape, seed)`: a LLaMA (RMSNorm, SwiGLU, RoPE, no biases) of the given width and depth.
- `train(model, streams, schedule, ...)`: AdamW with linear warm-up then cosine decay, gradient clipping,
  seeded batches of random windows of the training stream; an optional hook runs after every optimiser step
  (gradual magnitude pruning re-applies its masks there). Returns the loss curve and the held-out loss.

Equal budgets: two calls with the same `Schedule` and seed see exactly the same token windows in the same
order, whatever the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kb.errors import KBError

from .data import load_corpus
from .recovery import adamw


@dataclass(frozen=True)
class Streams:
    train: torch.Tensor  # 1-D int64 byte ids
    eval: torch.Tensor

    @property
    def vocab(self) -> int:
        return 256


def byte_streams(corpus: str = "pydoc") -> Streams:
    """The corpus's calibration half (training) and evaluation half as UTF-8 byte ids."""
    text = load_corpus(corpus)

    def ids(s: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(s.encode("utf-8")), dtype=torch.uint8).long()

    return Streams(ids(text.calib_text), ids(text.eval_text))


@dataclass(frozen=True)
class Shape:
    hidden: int = 64
    layers: int = 2
    intermediate: int | None = None  # default: about 8/3 x hidden, rounded to a multiple of 16
    heads: int = 4

    def mlp(self) -> int:
        return self.intermediate or 16 * math.ceil(self.hidden * 8 / 3 / 16)


def tiny_llama(shape: Shape, seed: int, max_positions: int = 512) -> nn.Module:
    """A freshly initialised byte-level LLaMA (seeded, float32, training mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if shape.hidden % shape.heads or (shape.hidden // shape.heads) % 2:
        raise KBError(f"hidden {shape.hidden} must split into {shape.heads} heads of even size")
    config = LlamaConfig(
        vocab_size=256, hidden_size=shape.hidden, intermediate_size=shape.mlp(), num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.heads, max_position_embeddings=max_positions,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model: nn.Module = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    return model.float().train()


@dataclass(frozen=True)
class Schedule:
    steps: int = 300
    batch_size: int = 16
    seqlen: int = 64
    lr: float = 3e-3
    warmup: float = 0.1  # fraction of steps with a linear warm-up
    weight_decay: float = 0.0
    clip: float = 1.0
    eval_windows: int = 32

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_size * self.seqlen

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step `step` (0-based): linear warm-up, then cosine to 10%."""
        warm = max(1, int(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        progress = (step - warm) / max(1, self.steps - warm)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainReport:
    steps: int
    tokens: int
    curve_steps: list[int] = field(default_factory=list)
    curve_loss: list[float] = field(default_factory=list)  # mean training loss over each logging interval
    eval_loss: float = math.nan  # mean next-byte NLL (nats) on held-out windows
    eval_window_loss: list[float] = field(default_factory=list)  # the same, window by window
    seconds: float = 0.0


def batches(stream: torch.Tensor, schedule: Schedule, seed: int) -> torch.Tensor:
    """(steps, batch, seqlen + 1) windows of `stream` at seeded random offsets."""
    span = schedule.seqlen + 1
    if stream.numel() <= span:
        raise KBError(f"training stream of {stream.numel()} tokens is shorter than one window of {span}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - span, (schedule.steps, schedule.batch_size), generator=gen)
    return stream[starts.unsqueeze(-1) + torch.arange(span)]


def lm_loss(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    logits = model(window[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))


@torch.no_grad()
def eval_losses(model: nn.Module, stream: torch.Tensor, seqlen: int, windows: int) -> list[float]:
    """Mean next-token NLL of each of the first `windows` non-overlapping windows of `stream`."""
    span = seqlen + 1
    count = min(windows, stream.numel() // span)
    if count < 1:
        raise KBError(f"evaluation stream of {stream.numel()} tokens is shorter than one window of {span}")
    was_training = model.training
    model.eval()
    ids = stream[: count * span].reshape(count, span)
    logits = model(ids[:, :-1]).logits  # (count, seqlen, vocab)
    nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (count, seqlen)
    model.train(was_training)
    return [float(v) for v in nll.double().mean(dim=1)]


def train(
    model: nn.Module,
    streams: Streams,
    schedule: Schedule,
    *,
    seed: int = 0,
    after_step: Callable[[int, nn.Module], None] | None = None,
    log_every: int = 10,
) -> TrainReport:
    """Train every parameter of `model` on next-token prediction; `after_step(step, model)` runs after each
    optimiser step (under no_grad)."""
    start = time.perf_counter()
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = adamw([{"params": decay, "weight_decay": schedule.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                schedule.lr, betas=(0.9, 0.95))  # fmt: skip
    report = TrainReport(steps=schedule.steps, tokens=schedule.tokens)
    data = batches(streams.train, schedule, seed)
    running, count = 0.0, 0
    for step in range(schedule.steps):
        for group in opt.param_groups:
            group["lr"] = schedule.lr_at(step)
        loss = lm_loss(model, data[step])
        if not torch.isfinite(loss):
            raise KBError(f"training diverged at step {step} (loss {float(loss)})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if schedule.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), schedule.clip)
        opt.step()
        if after_step is not None:
            with torch.no_grad():
                after_step(step, model)
        running += float(loss.detach())
        count += 1
        if count == log_every or step == schedule.steps - 1:
            report.curve_steps.append(step + 1)
            report.curve_loss.append(round(running / count, 5))
            running, count = 0.0, 0
    report.eval_window_loss = eval_losses(model, streams.eval, schedule.seqlen, schedule.eval_windows)
    report.eval_loss = math.fsum(report.eval_window_loss) / len(report.eval_window_loss)
    model.eval()
    report.seconds = time.perf_counter() - start
    return report
