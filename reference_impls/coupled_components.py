"""Coupled components elimination: remove coupled heads and MLP channels scored by the data flowing through them.

Paper:    Zhang, Shi, Sun, Sun. "Structured Pruning for Large Language Models Using Coupled Components
          Elimination and Minor Fine-tuning". Findings of NAACL 2024 (ACL Anthology 2024.findings-naacl.1).
          Record id: `coupled-components`.
Official: none found (no code repository, no arXiv version); only the abstract was checked.
Idea:     the components of a weight matrix (its rows and columns) are scored from the intermediate data
          that flows between consecutive matrices, and components coupled across matrices (the gate and up
          rows of an MLP channel with the down column that reads it; the q/k/v rows of a head with the o_proj
          columns that read it) are eliminated together so the remaining parameters stay consistent; a few
          epochs of fine-tuning then recover most of the quality (20% fewer parameters on LLaMA, Vicuna and
          ChatGLM3 keep at least 94.4% of the original scores).
This is a RECONSTRUCTION from the abstract, not the paper's formula:
          (1) groups are LLM-Pruner's (`primitives.groups`: a KV head with all its query heads, an MLP
          channel); (2) a group's score is the data-dependency score `contribution` of
          `primitives.importance`: for every channel c the group feeds into its output projection,
          ||x_c||_2 * ||W_out[:, c]||_2 over the calibration tokens (the size of what that channel adds to the
          sublayer's output; Wanda's |W| * ||X|| at column level), summed over the group's channels; (3) the
          lowest-scoring quarter of the KV groups and MLP channels of every layer but the first and the last
          is removed, which takes away 20% of SmolLM2-135M's parameters (28 layers x (one KV group + 384
          channels)); (4) "minor fine-tuning" is a short LoRA run merged into the weights
          (`harness.recovery`). The removal and recovery machinery is LLM-Pruner's (`llm_pruner.prune_groups`);
          only the scores differ. The weight-magnitude baseline ranks the same groups by the squared L2 norm
          of all their weights (`importance="l2"`).
Use:      `kb prune coupled-components --model tiny-llama --save DIR [--set recovery_steps=20]`; load with
          `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from . import llm_pruner
from .harness.contract import Context


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(0.25, ge=0.0, lt=1.0)  # share of KV groups and MLP channels removed per pruned layer
    importance: Literal["contribution", "l2", "l1", "random"] = "contribution"
    attention: Literal["kv-head", "q-head", "none"] = "kv-head"
    keep_first: int = Field(1, ge=0)  # layers left whole at the start
    keep_last: int = Field(1, ge=0)  # ... and at the end
    num_examples: int = Field(16, ge=1)  # calibration windows for the activations (forward only)
    example_len: int = Field(128, ge=2)
    seed: int = 0  # random importance
    recovery_steps: int = Field(0, ge=0)  # "minor fine-tuning": LoRA steps after pruning (0 = none)
    recovery_batch: int = Field(2, ge=1)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_lr: float = Field(1e-4, gt=0)
    params: float | None = None  # the `params` target: share of decoder parameters removed; sets `ratio`


def as_group_config(config: Config) -> llm_pruner.Config:
    """The per-layer group removal this paper shares with LLM-Pruner, with its own scores and defaults."""
    return llm_pruner.Config(**config.model_dump())


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Score the coupled groups by the data they pass on, remove the lowest share per layer, optionally fine-tune."""
    return llm_pruner.prune_groups(model, calib, as_group_config(config), ctx, name="coupled-components")
