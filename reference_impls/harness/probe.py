"""A zero-shot multiple-choice probe that runs offline, and a loader for real tasks when online.

Depth papers claim that multiple-choice accuracy survives layer removal better than perplexity does, so
the harness needs a task scored the way lm-evaluation-harness scores HellaSwag or ARC: each choice's
log-likelihood given the context, the highest wins; `acc` compares sums, `acc_norm` divides each sum by
the byte length of the choice's text.

The built-in task (`continuation`) is made from held-out text of the run's corpus (the evaluation stream
after the perplexity windows, so it never overlaps calibration): item i takes `context` tokens of the
stream and the `length` tokens that really follow them; the distractors are the true continuations of
other items, so every choice is genuine corpus text and only the context tells them apart. Items are
evenly spaced over the stream and choices are shuffled with a fixed seed: deterministic for a given
corpus and tokenizer, and licence-clean (the default corpus is CPython's documentation). Chance is 1/choices.

Scoring reuses the context: one forward over the contexts with the KV cache on, the cache repeated once
per choice, then one forward over all choices (cost per item: context + choices x length tokens).

`load_task("hellaswag" | "piqa" | "arc_easy" | "arc_challenge")` builds text items from the Hugging Face
copies that lm-evaluation-harness uses (needs the optional `datasets` package and a network).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kb.errors import KBError

from .kvcache import cache_kwarg, output_cache
from .layerwise import input_embedding

BUILTIN = "continuation"
_SEED = 1234  # fixed: the task never depends on --seed


@dataclass(frozen=True)
class TokenTask:
    """The built-in task: every context and every choice has the same token length (no padding)."""

    name: str
    context: torch.Tensor  # (items, C) token ids
    choices: torch.Tensor  # (items, K, L) token ids
    answer: torch.Tensor  # (items,) index of the true continuation
    choice_bytes: torch.Tensor  # (items, K) UTF-8 byte length of each choice's text

    @property
    def items(self) -> int:
        return self.context.shape[0]


@dataclass(frozen=True)
class TextItem:
    context: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class ProbeScore:
    task: str
    items: int
    choices: int
    acc: float
    acc_norm: float
    hits_norm: tuple[int, ...] = ()  # item by item: 1 where acc_norm picked the true choice


def continuation_task(
    stream: torch.Tensor,
    tokenizer: Any,
    *,
    items: int = 300,
    context: int = 16,
    length: int = 4,
    choices: int = 4,
) -> TokenTask:
    """Build the built-in task from a 1-D token stream (see the module docstring)."""
    span = context + length
    if items < choices:
        raise KBError(f"the probe needs at least {choices} items, got {items}")
    if stream.numel() < items * span:
        raise KBError(
            f"the probe needs {items * span} held-out tokens ({items} items x {span}) but the corpus leaves "
            f"{stream.numel()}; use a larger corpus or fewer --probe-items"
        )
    step = stream.numel() // items
    starts = [i * step for i in range(items)]
    ctx = torch.stack([stream[s : s + context] for s in starts])
    true = torch.stack([stream[s + context : s + span] for s in starts])  # (items, L)
    rng = random.Random(_SEED)
    rows, answers = [], []
    for i in range(items):
        pool = [j for j in range(items) if j != i and not torch.equal(true[j], true[i])]
        picked = [true[j] for j in rng.sample(pool, choices - 1)]
        where = rng.randrange(choices)
        picked.insert(where, true[i])
        rows.append(torch.stack(picked))
        answers.append(where)
    options = torch.stack(rows)  # (items, K, L)
    text_bytes = [[len(tokenizer.decode(c.tolist()).encode("utf-8")) for c in row] for row in options]
    return TokenTask(
        BUILTIN, ctx, options, torch.tensor(answers), torch.tensor(text_bytes, dtype=torch.float32)
    )


def _hits(scores: torch.Tensor, answer: torch.Tensor) -> list[int]:
    """1 for each item whose highest-scoring choice is the true one."""
    return [int(v) for v in (scores.argmax(-1) == answer).tolist()]


def _score(name: str, k: int, sums: torch.Tensor, norms: torch.Tensor, answer: torch.Tensor) -> ProbeScore:
    hits, hits_norm = _hits(sums, answer), _hits(norms, answer)
    n = len(hits)
    return ProbeScore(name, n, k, sum(hits) / n, sum(hits_norm) / n, tuple(hits_norm))


def score_task(model: nn.Module, task: TokenTask, *, batch_size: int = 64) -> ProbeScore:
    """Accuracy of `model` on the built-in task; log-likelihoods are summed in float32."""
    device = input_embedding(model).weight.device
    k, length = task.choices.shape[1], task.choices.shape[2]
    totals = []
    with torch.inference_mode():
        for start in range(0, task.items, batch_size):
            ctx = task.context[start : start + batch_size].to(device)  # (B, C)
            opts = task.choices[start : start + batch_size].to(device).reshape(-1, length)  # (B*K, L)
            out = model(input_ids=ctx, use_cache=True, logits_to_keep=1)
            first = F.log_softmax(out.logits[:, -1].float(), -1).repeat_interleave(k, 0)  # (B*K, V)
            total = first.gather(1, opts[:, :1]).squeeze(1)  # (B*K,)
            if length > 1:
                cache = output_cache(out)
                cache.batch_repeat_interleave(k)
                logits = model(input_ids=opts[:, :-1], use_cache=True, **{cache_kwarg(model): cache}).logits
                logp = F.log_softmax(logits.float(), -1).gather(2, opts[:, 1:, None]).squeeze(2)  # (B*K, L-1)
                total = total + logp.sum(-1)
            totals.append(total.reshape(-1, k).cpu())
    scores = torch.cat(totals)  # (items, K)
    return _score(task.name, k, scores, scores / task.choice_bytes, task.answer)


def score_text_items(model: nn.Module, tokenizer: Any, items: list[TextItem], name: str) -> ProbeScore:
    """Accuracy on text items of any length (real tasks); one padded batch per item."""
    device = input_embedding(model).weight.device
    sums, norms, answers = [], [], []
    with torch.inference_mode():
        for item in items:
            ctx = tokenizer(item.context, add_special_tokens=False)["input_ids"]
            seqs = [ctx + tokenizer(c, add_special_tokens=False)["input_ids"] for c in item.choices]
            width = max(len(s) for s in seqs)
            ids = torch.zeros(len(seqs), width, dtype=torch.long)
            mask = torch.zeros(len(seqs), width, dtype=torch.long)
            for row, s in enumerate(seqs):
                ids[row, : len(s)] = torch.tensor(s)
                mask[row, : len(s)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = F.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None].to(device)).squeeze(2).cpu()
            row_sums = [float(logp[r, len(ctx) - 1 : len(s) - 1].sum()) for r, s in enumerate(seqs)]
            sums.append(row_sums)
            norms.append(
                [v / max(1, len(c.encode("utf-8"))) for v, c in zip(row_sums, item.choices, strict=True)]
            )
            answers.append(item.answer)
    k = max(len(i.choices) for i in items)
    return _score(name, k, _padded(sums), _padded(norms), torch.tensor(answers))


def _padded(rows: list[list[float]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [float("-inf")] * (width - len(r)) for r in rows])


# ---- real tasks (online) ----------------------------------------------------------------------------
REAL_TASKS = ("hellaswag", "piqa", "arc_easy", "arc_challenge")


def load_task(name: str, *, limit: int | None = None) -> list[TextItem]:
    """Text items of a real task, from the datasets lm-evaluation-harness reads (validation/test split)."""
    if name not in REAL_TASKS:
        raise KBError(f"unknown probe task {name!r}; built in: {BUILTIN}; online: {', '.join(REAL_TASKS)}")
    try:
        from datasets import load_dataset
    except ImportError:
        raise KBError(
            f"probe task {name} needs the optional 'datasets' package (pip install datasets)"
        ) from None
    try:
        if name == "hellaswag":
            rows = load_dataset("Rowan/hellaswag", split="validation")
            items = [TextItem(r["ctx"], tuple(" " + e for e in r["endings"]), int(r["label"])) for r in rows]
        elif name == "piqa":
            rows = load_dataset("baber/piqa", split="validation")
            items = [TextItem(f"Question: {r['goal']}\nAnswer:", (" " + r["sol1"], " " + r["sol2"]), int(r["label"]))
                     for r in rows]  # fmt: skip
        else:
            subset = "ARC-Easy" if name == "arc_easy" else "ARC-Challenge"
            rows = load_dataset("allenai/ai2_arc", subset, split="test")
            items = [TextItem(f"Question: {r['question']}\nAnswer:", tuple(" " + t for t in r["choices"]["text"]),
                              list(r["choices"]["label"]).index(r["answerKey"])) for r in rows]  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - datasets raises many types when offline; all become one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KBError(f"cannot load probe task {name} (offline?): {first}") from None
    return items[:limit] if limit else items
