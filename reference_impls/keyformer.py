"""Keyformer: keep the "key tokens" (accumulated Gumbel-softmax score) and a recent window in the KV cache.

Paper:    Adnan, Arunkumar, Jain, Nair, Soloveychik, Kamath. "Keyformer: KV Cache Reduction through Key Tokens
          Selection for Efficient Generative Inference". MLSys 2024, arXiv:2403.09054. Record id: `keyformer`.
Official: d-matrix-ai/keyformer-llm, `models/*-keyformer-lib/` (`_attn` of GPT-J, MPT, Cerebras-GPT): budget
          `kv_cache` = 60% of the prompt (the headline experiments use 50%), of which `recent` = 30% is a
          recent window; temperature tau = tau_init + step * (tau_end - tau_init) / max_new_tokens, 1 -> 2
          (`conversation/dialogue.py`).
Idea:     once tokens are discarded, the softmax over the survivors over-rewards them; Keyformer scores keys with
          a regularised distribution instead: softmax((x + g) / tau) of the unnormalised logits x with Gumbel
          noise g ~ Gumbel(0, 1), summed over the query rows and accumulated over steps. After the prompt keep
          the w most recent tokens and the k - w best-scored ones; during generation the cache stays at k
          entries (the new token enters, the lowest-scored older one leaves). Attention itself keeps the normal
          softmax over the kept keys; only the score uses noise and temperature.
Differs:  (1) the budget is relative to the prompt as upstream, but evaluated on prompt + continuation windows
          of our corpus (upstream: summarisation and dialogue); (2) GQA: scores are summed over the query
          heads of each KV head, eviction is per KV head (upstream models are multi-head); (3) upstream simulates
          eviction by masking; here the same policy also cuts a real cache (`harness/eviction.py`); (4) the
          noise is drawn from a generator seeded by (seed, sequence, layer, query position) so that a run is
          deterministic and the masked and the real-cache modes see the same noise; (5) tau reaches tau_end at
          the last decoding step of the planned length (upstream stops one step short of it).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.eviction import AttentionView, Budget, CachePolicy, per_kv_head, policy_outcome


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_budget: float = Field(
        0.5, gt=0
    )  # cache size as a fraction of the prompt (headline: 50%; code default 60%)
    budget_tokens: int | None = Field(None, ge=1)  # a count of cache entries instead (wins over kv_budget)
    recent_share: float = Field(0.3, ge=0, le=1)  # share of the budget kept as the recent window
    tau_init: float = Field(1.0, gt=0)
    tau_end: float = Field(2.0, gt=0)
    noise: bool = True  # Gumbel noise on the logits (False: plain softmax at temperature tau)
    seed: int = 0


# ---- pure math ------------------------------------------------------------------------------
def temperature(step: int, steps: int | None, tau_init: float, tau_end: float) -> float:
    """tau at decoding step `step` (0 = the prompt): linear from tau_init to tau_end at step `steps`."""
    if not steps:
        return tau_init
    return tau_init + (tau_end - tau_init) * min(step, steps) / steps


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel samples: -log(-log U), U uniform in (0, 1)."""
    u = torch.rand(shape, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def keyformer_probs(logits: torch.Tensor, noise: torch.Tensor | None, tau: float) -> torch.Tensor:
    """softmax((logits + noise) / tau) over the last axis; -inf logits (hidden keys) get probability 0."""
    x = logits.float() if noise is None else logits.float() + noise
    return torch.softmax(x / tau, dim=-1)


def _generator(seed: int, stream: int, layer: int, row: int) -> torch.Generator:
    mixed = hash((seed, stream, layer, row)) & ((1 << 63) - 1)
    return torch.Generator().manual_seed(mixed)


def noise_for(view: AttentionView, seed: int) -> torch.Tensor:
    """Gumbel noise (b, Hq, q, k) for the view's logits, a function of (seed, sequence, layer, query position,
    key position) only: the prompt rows share one (P x P) draw, each later row its own (t + 1) draw."""
    b, hq, q, _k = view.logits.shape
    keys = view.key_positions.repeat_interleave(view.groups, dim=1)  # (b, Hq, k)
    if view.step == 0:
        p = int(view.query_positions[-1]) + 1
        block = gumbel_noise((b, hq, p, p), _generator(seed, view.stream, view.layer, -1)).to(
            view.logits.device
        )
        rows = block[:, :, view.query_positions]
        return rows.gather(-1, keys.clamp(max=p - 1).unsqueeze(2).expand(-1, -1, q, -1))
    out = []
    for t in view.query_positions.tolist():
        row = gumbel_noise((b, hq, t + 1), _generator(seed, view.stream, view.layer, t)).to(
            view.logits.device
        )
        out.append(row.gather(-1, keys.clamp(max=t)))
    return torch.stack(out, dim=2)


class KeyTokenScore:
    """Scorer: the Gumbel-softmax of the logits at the scheduled temperature, summed over query rows and the
    query heads of a KV head, accumulated over steps."""

    name = "gumbel-softmax"

    def __init__(
        self, tau_init: float = 1.0, tau_end: float = 2.0, noise: bool = True, seed: int = 0
    ) -> None:
        self.tau_init, self.tau_end, self.noise, self.seed = tau_init, tau_end, noise, seed

    def update(self, previous: torch.Tensor, view: AttentionView) -> torch.Tensor:
        tau = temperature(view.step, view.decode_steps, self.tau_init, self.tau_end)
        noise = noise_for(view, self.seed) if self.noise else None
        return previous + per_kv_head(keyformer_probs(view.logits, noise, tau), view.groups)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "tau_init": self.tau_init, "tau_end": self.tau_end, "noise": self.noise,
                "seed": self.seed}  # fmt: skip


def policy(config: Config) -> CachePolicy:
    """The Keyformer cache policy of `config` (the harness evaluates it; see `harness/eviction.py`)."""
    if config.budget_tokens is not None:
        budget = Budget(tokens=config.budget_tokens, recent=config.recent_share)
    else:
        budget = Budget(fraction=config.kv_budget, recent=config.recent_share)
    scorer = KeyTokenScore(config.tau_init, config.tau_end, config.noise, config.seed)
    return CachePolicy("keyformer", budget, scorer)


# ---- model driver ---------------------------------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Report the Keyformer cache policy; no weight changes (the harness builds it with `policy(config)` and
    evaluates it while decoding)."""
    return policy_outcome(policy(config))
