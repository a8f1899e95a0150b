"""Short recovery training after pruning: LoRA steps and distillation steps with equal, explicit budgets.

Papers that prune structure (width or depth) usually heal the model with a little training. Two helpers,
usable by any method on any LLaMA-style model, both seeded and with per-step progress:

- `lora_steps(model, tokens, ...)`: wrap the decoder's linear layers (LLM-Pruner's targets: q, k, v, o,
  gate, up, down) with low-rank adapters W x + (alpha / r) * B A x (A random, B zero, so training starts at
  the pruned model), train only A and B on next-token cross-entropy, then merge B A into W and remove the
  adapters: the result is a plain model of unchanged shape that saves like any other.
- `distill_steps(student, teacher, tokens, ...)`: the same loop with the loss replaced by the KL divergence
  from the teacher's next-token distribution to the student's (forward KL, temperature T, scaled by T^2;
  Minitron's logit-only distillation); it trains either LoRA adapters (merged at the end) or every weight
  of the student's decoder.

- `partial_layer_steps(model, tokens, ...)`: Reassessing Layer Pruning's recovery: train only the last few
  decoder layers and the LM head (untied from the input embedding first, `primitives.norms.untie_head`),
  cross-entropy.
- `mse_steps(module, params, inputs, targets, ...)`: train a small module to map captured hidden states to
  targets (LLM-Streamline's replacement of a removed window).

Budgets: `Budget(steps, batch_size)` fixes how many optimiser steps and how many calibration windows per
step, so two arms given the same budget see the same number of tokens (in the same order: batches are a
seeded permutation of the windows, cycled when the steps need more). `RecoveryReport` echoes the budget,
the tokens seen and the loss curve, for the outcome's details.

Why no `peft`: merging, seeding and per-step control take ~60 lines here; a dependency would add a
version to pin and a model wrapper that changes parameter names, for nothing this harness uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kb.errors import KBError

from ..primitives.norms import untie_head
from .layerwise import capture_layer_inputs, decoder_layers, input_embedding, output_embedding, small_ops

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Budget:
    steps: int
    batch_size: int = 4  # calibration windows per optimiser step

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise KBError(
                f"recovery budget needs steps >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}"
            )


@dataclass
class RecoveryReport:
    kind: str
    steps: int
    batch_size: int
    tokens: int
    lr: float
    losses: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        first = self.losses[0] if self.losses else None
        last = self.losses[-1] if self.losses else None
        return {"kind": self.kind, "steps": self.steps, "batch_size": self.batch_size, "tokens": self.tokens,
                "lr": self.lr, "loss_first": _round(first), "loss_last": _round(last)}  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# ---- LoRA ----------------------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """A frozen linear plus a trainable low-rank update (alpha / rank) * B A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # the usual LoRA initialisation of A
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base: torch.Tensor = self.base(x)
        return base + F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             targets: Sequence[str] = LORA_TARGETS) -> list[LoRALinear]:  # fmt: skip
    """Wrap every targeted linear of the decoder layers in place; returns the adapters."""
    if rank < 1:
        raise KBError(f"LoRA rank must be at least 1, got {rank}")
    adapters = []
    for layer in decoder_layers(model):
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if name in targets and isinstance(child, nn.Linear):
                    wrapped = LoRALinear(child, rank, alpha, dropout)
                    setattr(parent, name, wrapped)
                    adapters.append(wrapped)
    if not adapters:
        raise KBError(f"no linear layer named {', '.join(targets)} in the decoder to adapt")
    return adapters


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and put the plain linear back; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                count += 1
    return count


# ---- the training loop -------------------------------------------------------------------------------
def adamw(
    params: Sequence[nn.Parameter] | Sequence[dict[str, Any]], lr: float, **options: object
) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where the parameters allow it (float tensors on CPU or CUDA): the
    same update as the default per-tensor loop, about 6x faster on CPU for a 28M-parameter LM head, which
    is what the head-training recoveries spend a fifth of their time on otherwise. `options` go to AdamW."""
    options.setdefault("weight_decay", 0.0)
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True, **options)  # type: ignore[arg-type]
    except RuntimeError:  # a device or dtype the fused kernel does not cover
        return torch.optim.AdamW(params, lr=lr, **options)  # type: ignore[arg-type]


def batch_order(windows: int, budget: Budget, seed: int) -> list[list[int]]:
    """Window indices of every step: a seeded permutation, cycled (each pass reshuffled) as needed."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    need = budget.steps * budget.batch_size
    while len(order) < need:
        order += torch.randperm(windows, generator=gen).tolist()
    return [order[i * budget.batch_size : (i + 1) * budget.batch_size] for i in range(budget.steps)]


@contextmanager
def _only_trainable(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    flags = {id(p): p.requires_grad for p in model.parameters()}
    was_training = model.training
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        model.train()
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), False))
        model.train(was_training)


def kl_to_teacher(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student) at temperature T, times T^2."""
    t = temperature
    s = F.log_softmax(student_logits.float() / t, dim=-1).reshape(-1, student_logits.shape[-1])
    p = F.log_softmax(teacher_logits.float() / t, dim=-1).reshape(-1, teacher_logits.shape[-1])
    return F.kl_div(s, p, log_target=True, reduction="batchmean") * t * t


def train_steps(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    tokens: torch.Tensor,
    budget: Budget,
    *,
    lr: float,
    seed: int = 0,
    teacher: nn.Module | None = None,
    temperature: float = 1.0,
    progress: Progress | None = None,
    kind: str = "lm",
    after_backward: Callable[[int], None] | None = None,
    also_grad: Sequence[nn.Parameter] = (),
    embeds: torch.Tensor | None = None,
) -> RecoveryReport:
    """AdamW on `params` for `budget.steps` steps over windows of `tokens` (n, t): next-token cross-entropy,
    or KL to `teacher` when given. Seeded: batch order, dropout and any randomness inside the step.

    `after_backward(step)` (1-based) runs after each backward pass, before the optimiser step, while the
    gradients exist (pruning during training reads them there); `also_grad` parameters get gradients too
    but are not trained (their gradients are dropped after the callback). `embeds` (n, t, hidden), when
    given, is fed to the model in place of the token embeddings of `tokens` (row i for window i), which
    still give the labels (see `partial_layer_steps`)."""
    if tokens.dim() != 2 or tokens.shape[0] < 1:
        raise KBError("recovery needs calibration windows (a 2-D tensor of token ids)")
    report = RecoveryReport(kind, budget.steps, budget.batch_size, budget.steps * budget.batch_size * tokens.shape[1],
                            lr)  # fmt: skip
    if budget.steps == 0:
        return report
    device = input_embedding(model).weight.device
    steps = batch_order(tokens.shape[0], budget, seed)
    optimiser = adamw(params, lr)
    # a tiny model's steps are many small ops, far faster on one thread (see `layerwise.small_ops`)
    size = sum(p.numel() for p in model.parameters())
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad(), \
            _only_trainable(model, [*params, *also_grad]), small_ops(size):  # fmt: skip
        torch.manual_seed(seed)
        for i, rows in enumerate(steps):
            ids = tokens[rows].to(device)
            inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds[rows].to(device)}
            out = model(**inputs, labels=None if teacher is not None else ids, use_cache=False)
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(input_ids=ids, use_cache=False).logits
                loss = kl_to_teacher(out.logits, target, temperature)
            else:
                loss = out.loss
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward(i + 1)
            for p in also_grad:
                p.grad = None
            optimiser.step()
            report.losses.append(float(loss.detach()))
            if not math.isfinite(report.losses[-1]):
                raise KBError(
                    f"recovery diverged at step {i + 1} (loss {report.losses[-1]}); lower the learning rate"
                )
            if progress is not None:
                progress(i + 1, budget.steps)
    return report


def lora_steps(
    model: nn.Module,
    tokens: torch.Tensor,
    budget: Budget,
    *,
    lr: float = 1e-4,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.05,
    targets: Sequence[str] = LORA_TARGETS,
    seed: int = 0,
    teacher: nn.Module | None = None,
    temperature: float = 1.0,
    progress: Progress | None = None,
) -> RecoveryReport:
    """LoRA recovery in place (cross-entropy, or KL to `teacher`), merged into the weights at the end."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapters = add_lora(model, rank, alpha, dropout, targets)
    try:
        params = [p for a in adapters for p in (a.lora_a, a.lora_b)]
        return train_steps(model, params, tokens, budget, lr=lr, seed=seed, teacher=teacher, temperature=temperature,
                           progress=progress, kind="lora-kd" if teacher is not None else "lora")  # fmt: skip
    finally:
        merge_lora(model)


def distill_steps(
    student: nn.Module,
    teacher: nn.Module,
    tokens: torch.Tensor,
    budget: Budget,
    *,
    lr: float = 1e-4,
    train: Literal["lora", "all"] = "lora",
    temperature: float = 1.0,
    seed: int = 0,
    progress: Progress | None = None,
    **lora: object,
) -> RecoveryReport:
    """Logit distillation from `teacher` (never modified) into `student`, in place: LoRA (merged) or every
    decoder weight of the student (`train="all"`)."""
    if train == "lora":
        return lora_steps(student, tokens, budget, lr=lr, seed=seed, teacher=teacher, temperature=temperature,
                          progress=progress, **lora)  # type: ignore[arg-type]  # fmt: skip
    params = list(decoder_layers(student).parameters())
    return train_steps(student, params, tokens, budget, lr=lr, seed=seed, teacher=teacher, temperature=temperature,
                       progress=progress, kind="kd")  # fmt: skip


# ---- partial-layer fine-tuning (Reassessing Layer Pruning) ---------------------------------------------
def partial_layer_steps(
    model: nn.Module,
    tokens: torch.Tensor,
    budget: Budget,
    *,
    last: int = 3,
    head: bool = True,
    norm: bool = True,
    lr: float = 1e-4,
    seed: int = 0,
    progress: Progress | None = None,
    prefix: torch.Tensor | None = None,
) -> RecoveryReport:
    """Fine-tune only the last `last` decoder layers, the final norm in front of the head (`norm`) and the LM head
    (`head`, untied first) on next-token cross-entropy, in place; every other parameter stays bit-identical. The
    official recipe (Reassessing Layer Pruning, `partial_fine-tuning.py`) trains both the norm and the head.

    The frozen layers in front of the trained ones map each window to the same hidden states at every
    step, so those are computed once (`frozen_prefix`; or passed as `prefix`, e.g. by two arms that differ
    only in learning rate) and each step runs the trained layers alone: the same training as full forward
    passes, up to float summation order, with the frozen layers run once per window instead of once per
    step."""
    layers = decoder_layers(model)
    if not 0 <= last <= len(layers) or (last == 0 and not head and not norm):
        raise KBError(f"partial-layer fine-tuning of the last {last} of {len(layers)} layers trains nothing")
    start = len(layers) - last
    params = [p for layer in list(layers)[start:] for p in layer.parameters()]
    if norm:
        params += list(final_norm(model).parameters())
    if head:
        untie_head(model)
        lm_head = output_embedding(model)
        assert lm_head is not None, "partial-layer fine-tuning with `head` needs a model with an LM head"
        params += list(lm_head.parameters())
    if prefix is None:
        prefix = frozen_prefix(model, tokens, start)
    if prefix is None:
        return train_steps(
            model, params, tokens, budget, lr=lr, seed=seed, progress=progress, kind="partial-layer"
        )
    if prefix.shape[:2] != tokens.shape:
        raise KBError(
            f"frozen-prefix states {tuple(prefix.shape)} do not match the windows {tuple(tokens.shape)}"
        )
    with _layers_from(model, start):
        return train_steps(model, params, tokens, budget, lr=lr, seed=seed, progress=progress,
                           kind="partial-layer", embeds=prefix)  # fmt: skip


PREFIX_CACHE_BYTES = 1 << 30  # above this, `frozen_prefix` declines and every step runs the whole stack


def frozen_prefix(
    model: nn.Module, tokens: torch.Tensor, start: int, batch_size: int | None = None
) -> torch.Tensor | None:
    """The hidden states entering decoder layer `start` for every window of `tokens`, (n, t, hidden), or
    None where caching them would change the training (dropout in the model) or would not pay
    (`start` = 0, nothing trained after the last layer, or more than `PREFIX_CACHE_BYTES`)."""
    layers = decoder_layers(model)
    hidden = input_embedding(model).weight.shape[1]
    dropout = float(getattr(model.config, "attention_dropout", 0.0) or 0.0) > 0 or any(
        isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()
    )
    if dropout or not 0 < start < len(layers) or tokens.numel() * hidden * 4 > PREFIX_CACHE_BYTES:
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            chunks = capture_layer_inputs(model, tokens, batch_size or tokens.shape[0], index=start)
    finally:
        model.train(was_training)
    return torch.cat([c.hidden for c in chunks]).clone()  # a normal tensor, usable under autograd


def final_norm(model: nn.Module) -> nn.Module:
    """The norm in front of the LM head (LLaMA-style `model.model.norm`)."""
    found = getattr(getattr(model, "model", None), "norm", None)
    if not isinstance(found, nn.Module):
        raise KBError(f"{type(model).__name__} has no final norm at model.norm to fine-tune")
    return found


@contextmanager
def _layers_from(model: nn.Module, start: int) -> Iterator[None]:
    """Temporarily drop decoder layers before `start` from the stack, so that a forward from
    `inputs_embeds` = the states entering layer `start` computes what the whole stack computes."""
    layers = decoder_layers(model)
    owner, name = next((m, n) for m in model.modules() for n, c in m.named_children() if c is layers)
    setattr(owner, name, nn.ModuleList(list(layers)[start:]))
    try:
        yield
    finally:
        setattr(owner, name, layers)


# ---- a module trained to imitate a removed part (LLM-Streamline) ------------------------------------------
def mse_steps(
    module: Callable[[torch.Tensor], torch.Tensor],
    params: Sequence[nn.Parameter],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    *,
    batch_tokens: int = 512,
    lr: float = 1e-4,
    seed: int = 0,
    progress: Progress | None = None,
) -> RecoveryReport:
    """AdamW on `params` so that `module(inputs)` matches `targets` (rows are tokens) in mean squared error;
    each step draws `batch_tokens` rows from a seeded permutation."""
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] < 1:
        raise KBError("replacement training needs as many input rows as target rows")
    report = RecoveryReport("mse", steps, batch_tokens, steps * batch_tokens, lr)
    if steps == 0:
        return report
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(inputs.shape[0], generator=gen)
    optimiser = adamw(params, lr)
    flags = [p.requires_grad for p in params]
    position = 0
    # a small module's steps are many tiny ops, far faster on one thread (see `layerwise.small_ops`)
    try:
        with torch.inference_mode(False), torch.enable_grad(), small_ops(8 * sum(p.numel() for p in params)):
            for p in params:
                p.requires_grad_(True)
            for i in range(steps):
                if position + batch_tokens > order.numel():
                    order, position = torch.randperm(inputs.shape[0], generator=gen), 0
                rows = order[position : position + batch_tokens]
                position += batch_tokens
                x = inputs[rows].to(params[0].device, params[0].dtype)
                y = targets[rows].to(params[0].device)
                loss = F.mse_loss(module(x).float(), y.float())
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                report.losses.append(float(loss.detach()))
                if not math.isfinite(report.losses[-1]):
                    raise KBError(f"replacement training diverged at step {i + 1}; lower the learning rate")
                if progress is not None:
                    progress(i + 1, steps)
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    return report
