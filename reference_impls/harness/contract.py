"""The method contract: how the harness calls a method, and the invariants it checks afterwards.

Every method module exposes
    Config                                   a frozen pydantic model (extra keys forbidden) with its defaults
    prune(model, calib, config, ctx) -> Outcome
`prune` changes `model` in place (weights zeroed, layers removed, matrices shrunk, a cache policy attached)
and returns an `Outcome` saying what it changed. `calib` is a (samples, seq) tensor of token ids, or None
for methods that need no data. `ctx` carries what is not the method's business to choose: the calibration
chunk size, a progress callback, the seed for random choices.

After every run the harness compares the model before and after (`ModelFacts`) with the outcome and the
method's kind (`check_outcome`), so a method that silently did nothing, or changed something other than
what it claims, fails loudly instead of producing a table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import torch
from pydantic import BaseModel
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .layerwise import decoder_layers, iter_decoder_linears

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Context:
    """Run-level settings a method receives but does not choose."""

    batch_size: int | None = None  # calibration chunk; None = all samples in one pass per layer
    progress: Progress | None = None
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda _msg: None)
    # Shared by every run of one comparison, which all start from the same dense model and calibration
    # tokens: a method may keep statistics of the *unmodified dense model* here (keyed by what they depend
    # on) so that sibling runs reuse them. Never store anything computed after the model was changed,
    # except the output of a stack of its untouched dense layers, keyed by exactly which layers they are.
    dense_stats: dict[Any, Any] = field(default_factory=dict)

    def dense_statistic(self, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()` once per comparison for `key`; later runs get the stored value."""
        if key not in self.dense_stats:
            self.dense_stats[key] = compute()
        return self.dense_stats[key]


class Method(Protocol):
    """What a method module looks like to the harness (see the module docstring)."""

    Config: type[BaseModel]

    def prune(self, model: nn.Module, calib: torch.Tensor | None, config: Any, ctx: Context) -> Outcome: ...


class ContractError(KBError):
    """A method broke the contract: a bug in the method, reported as one line (exit 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=1)


@dataclass(frozen=True)
class ModelFacts:
    """What the invariants compare: counts and shapes, cheap to take before and after a run."""

    layers: int
    config_layers: int
    layer_idx: tuple[tuple[int, ...], ...]  # per decoder layer: every `layer_idx` attribute inside it
    shapes: dict[str, tuple[int, ...]]  # decoder parameter name -> shape
    zeros: int  # exact zeros in decoder linear weights
    weights: int  # decoder linear weight count
    skipped: int = 0  # sublayers the config lists as skipped (attention + MLP)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def model_facts(model: nn.Module) -> ModelFacts:
    layers = decoder_layers(model)
    zeros = total = 0
    for _name, linear in iter_decoder_linears(model):
        zeros += int((linear.weight == 0).sum())
        total += linear.weight.numel()
    idx = tuple(
        tuple(int(i) for m in layer.modules() if isinstance(i := getattr(m, "layer_idx", None), int))
        for layer in layers
    )
    shapes = {n: tuple(p.shape) for n, p in layers.named_parameters()}
    skipped = sum(
        len(getattr(model.config, name, None) or []) for name in ("skipped_attention", "skipped_mlp")
    )
    return ModelFacts(len(layers), int(getattr(model.config, "num_hidden_layers", len(layers))), idx, shapes, zeros,
                      total, skipped)  # fmt: skip


def _fail(method: str, message: str) -> NoReturn:
    raise ContractError(f"method {method} broke its contract: {message}")


def check_outcome(
    method: str, kind: str, before: ModelFacts, after: ModelFacts, outcome: object, target: dict[str, Any]
) -> None:
    """Raise `ContractError` when the model change does not match the outcome and the method's kind.

    Stand-ins for papers that are not a pruning algorithm report their evidence in `outcome.details`: a
    `stand-in` (e.g. a storage format checked on a pruned model) keeps the structure and meets a sparsity
    target like a weight method; a `training` stand-in trains its own small models and leaves the given
    model exactly as it was."""
    if not isinstance(outcome, Outcome):
        _fail(method, f"prune returned {type(outcome).__name__}, not an Outcome")
    if outcome.kind != kind:
        _fail(method, f"outcome kind {outcome.kind!r}, registered as {kind!r}")
    if kind in ("weight-sparsity", "allocation", "kv-cache", "stand-in", "training"):
        if after.layers != before.layers or after.shapes != before.shapes:
            _fail(method, f"a {kind} method changed the model's structure")
    if kind in ("stand-in", "training") and not outcome.details:
        _fail(method, f"a {kind} method must report its evidence in the outcome's details")
    if kind == "training" and after.zeros != before.zeros:
        _fail(method, "a training stand-in trains its own models and must leave the given model unchanged")
    if kind in ("weight-sparsity", "allocation", "stand-in"):
        sparsity = target.get("sparsity")
        if sparsity is not None:
            # each comparison group rounds down; pre-existing zeros can only add
            slack = 1.0 / min(s[-1] for s in before.shapes.values() if len(s) == 2) + before.sparsity
            if not sparsity - slack - 1e-6 <= after.sparsity <= sparsity + slack + 1e-6:
                _fail(method, f"decoder sparsity {after.sparsity:.4f}, target {sparsity}")
            if sparsity > 0 and after.zeros <= before.zeros:
                _fail(method, "no weight was zeroed")
    if kind == "allocation":
        ratios = outcome.layer_sparsity
        if not ratios or len(ratios) != before.layers:
            _fail(method, "an allocation outcome needs one sparsity per decoder layer")
        assert ratios is not None
        if target.get("sparsity") is not None and not math.isclose(
            sum(ratios) / len(ratios), target["sparsity"], abs_tol=1e-6
        ):
            _fail(
                method,
                f"per-layer ratios average {sum(ratios) / len(ratios):.6f}, target {target['sparsity']}",
            )
    if kind == "depth":
        removed = outcome.removed_layers
        if len(set(removed)) != len(removed) or not all(0 <= i < before.layers for i in removed):
            _fail(method, f"removed_layers {removed} are not distinct layer indices")
        if after.layers != before.layers - len(removed) or after.config_layers != after.layers:
            _fail(method, f"{after.layers} layers left ({after.config_layers} in the config), expected "
                  f"{before.layers - len(removed)}")  # fmt: skip
        subs = outcome.removed_sublayers
        if not removed and not subs:
            _fail(method, "a depth method removed no layer and no sublayer")
        if any(not re.fullmatch(r"\d+\.(attn|mlp)", s) for s in subs) or len(set(subs)) != len(subs):
            _fail(method, f"removed_sublayers {subs} are not distinct names like '3.attn' or '7.mlp'")
        if after.skipped < len(subs):
            _fail(method, f"reports {len(subs)} removed sublayers, the model skips {after.skipped}")
        # `--layers K` counts removed modules: a whole layer or a single sublayer each
        if target.get("layers") is not None and len(removed) + len(subs) != target["layers"]:
            _fail(
                method, f"removed {len(removed)} layers and {len(subs)} sublayers, target {target['layers']}"
            )
        if any(v != i for i, values in enumerate(after.layer_idx) for v in values):
            _fail(method, "layer_idx is not renumbered 0..n-1 after removing layers")
    if kind == "width":
        if sum(math.prod(s) for s in after.shapes.values()) >= sum(
            math.prod(s) for s in before.shapes.values()
        ):
            _fail(method, "a width method did not shrink any matrix")
        if not outcome.shapes:
            _fail(method, "a width method must report the new shapes of what it shrank")
        for name, shape in outcome.shapes.items():
            inside = name.removeprefix("model.layers.")  # decoder parameters as `model_facts` names them
            if inside in after.shapes and list(after.shapes[inside]) != list(shape):
                _fail(
                    method, f"reported shape {shape} for {name}, the model has {list(after.shapes[inside])}"
                )
    if kind == "kv-cache" and outcome.cache_policy is None:
        _fail(method, "a kv-cache method must report its cache policy")
    if kind == "kv-cache" and after.zeros != before.zeros:
        _fail(method, "a kv-cache method changed decoder weights")
