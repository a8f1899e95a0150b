"""Hard-concrete (L0) structure masks for LLaMA-style models: sampling, masked forward, Lagrangian, finalisation.

Shared by Sheared LLaMA (masks learned towards a target *shape*) and Compresso (towards a target *sparsity*,
with LoRA); both follow CoFi's recipe, as the official `l0_module.py` files do.

- `HardConcrete`: one tensor of log-alpha parameters (rows x units). A training step samples
  z = clamp(sigmoid((logit(u) + log_alpha) / T) * (hi - lo) + lo, 0, 1) with u ~ U(0, 1), T = 2/3 and the
  stretch (lo, hi) = (-0.1, 1.1), so a unit is exactly off or on with non-zero probability and gradients still
  reach log-alpha. `keep_probability` is P(z > 0) (the expected L0 norm of each unit). `deterministic(keep)`
  keeps the `keep` units of every row with the largest log-alpha and gives them sigmoid(0.8 * log_alpha / T),
  zeroing the rest (upstream's "magical number" 0.8). Log-alpha starts at `init` + N(0, 0.01) noise, i.e.
  every unit on. The default init 5 is LLM-Shearing's `param_init_fn`; it lies above the clamp log(100) = 4.605,
  so the first clamp erases the noise and every unit starts tied, as upstream. Compresso's `l0_module.py`
  instead starts channels at log((1 - d) / d) with `droprate_init` d = 0.01, i.e. 4.595 (`init_for_droprate`),
  just below the clamp, so most start distinct (a draw above 4.605 still ties there); its heads start at 10
  (tied at the clamp), and `for_model` takes one init per structure for that.
- `StructureMasks`: the masks a LLaMA model can carry: attention units per layer (a KV head with its query
  heads, as `primitives.groups` defines them), MLP channels per layer, whole layers, hidden (residual) channels.
- `MaskHooks`: forward hooks that apply given z values without changing the model: attention units scale the
  o_proj input, MLP channels the down_proj input, a layer's z and the hidden z scale both sublayer outputs, the
  hidden z also the embedding output, and every RMSNorm averages over the hidden channels that are on
  (`norms.kept_channel_scale`; upstream does the same), so that slicing those channels out later gives the same
  function.
- `lagrangian(expected, target, l1, l2)` = l1 (s - t) + l2 (s - t)^2: minimised by the model and masks,
  maximised by the multipliers (`torch.optim.Adam(maximize=True)`), which makes the constraint bind.
- `finalize(model, masks, values)`: fold the kept units' deterministic z into the weights (o_proj and down_proj
  columns for units, their rows for layers; hidden channels are binary because a tied LM head cannot absorb a
  scale), then slice everything that is off (`groups.compact`, `structure.remove_layers`). The compact model
  computes what the hooked model computes with the same values (tests check it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from kb.errors import KBError

from ..harness.layerwise import decoder_layers, input_embedding, model_config, small_ops
from . import groups as G
from .norms import kept_channel_scale

LIMIT_LO, LIMIT_HI, EPS = -0.1, 1.1, 1e-6
TEMPERATURE = 2.0 / 3.0
INIT_LOG_ALPHA = 5.0  # LLM-Shearing's `param_init_fn` (every unit on; above the clamp, so tied after it)
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))  # upstream `constrain_parameters`
DETERMINISTIC_SCALE = 0.8  # upstream `magical_number`
Structure = Literal["heads", "intermediate", "layers", "hidden"]
STRUCTURES: tuple[Structure, ...] = ("heads", "intermediate", "layers", "hidden")


def init_for_droprate(droprate: float) -> float:
    """The log-alpha mean for an initial drop rate d: log((1 - d) / d) (Compresso's `reset_loga`)."""
    return math.log(1.0 - droprate) - math.log(droprate)


class HardConcrete(nn.Module):
    """Log-alpha of `units` gates in each of `rows` rows (rows=0: a single vector)."""

    def __init__(self, rows: int, units: int, init: float = INIT_LOG_ALPHA, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        shape = (rows, units) if rows else (units,)
        self.log_alpha = nn.Parameter(init + 0.01 * torch.randn(shape, generator=gen))

    @property
    def units(self) -> int:
        return int(self.log_alpha.shape[-1])

    def constrain(self) -> None:
        with torch.no_grad():
            self.log_alpha.clamp_(*LOG_ALPHA_RANGE)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(self.log_alpha.shape, generator=generator).clamp(EPS, 1 - EPS)
        return sample_z(self.log_alpha, u)

    def keep_probability(self) -> torch.Tensor:
        return keep_probability(self.log_alpha)

    def deterministic(self, keep: int | torch.Tensor) -> torch.Tensor:
        return deterministic_z(self.log_alpha.detach(), keep)


# ---- pure functions -------------------------------------------------------------------------------
def sample_z(log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Stretched, clamped hard-concrete sample for uniform noise `u` in (0, 1)."""
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / TEMPERATURE)
    return (s * (LIMIT_HI - LIMIT_LO) + LIMIT_LO).clamp(0.0, 1.0)


def keep_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z > 0) = 1 - CDF(0) of the stretched distribution."""
    return torch.sigmoid(log_alpha - TEMPERATURE * math.log(-LIMIT_LO / LIMIT_HI)).clamp(EPS, 1 - EPS)


def deterministic_z(log_alpha: torch.Tensor, keep: int | torch.Tensor) -> torch.Tensor:
    """Per row, the `keep` largest log-alpha get sigmoid(0.8 log_alpha / T), the others 0 (ties: lower index)."""
    rows = log_alpha.reshape(-1, log_alpha.shape[-1])
    counts = [int(keep)] * rows.shape[0] if isinstance(keep, int) else [int(k) for k in keep.reshape(-1)]
    soft = torch.sigmoid(rows / TEMPERATURE * DETERMINISTIC_SCALE)
    out = torch.zeros_like(rows)
    for r, k in enumerate(counts):
        order = sorted(range(rows.shape[1]), key=lambda i: (-float(rows[r, i]), i))[:k]
        idx = torch.tensor(sorted(order), dtype=torch.long)
        out[r, idx] = soft[r, idx]
    return out.reshape(log_alpha.shape)


def lagrangian(
    expected: torch.Tensor, target: float, lambda_1: torch.Tensor, lambda_2: torch.Tensor
) -> torch.Tensor:
    """lambda_1 (s - t) + lambda_2 (s - t)^2, averaged over the entries of `expected` (e.g. one per layer)."""
    gap = expected - target
    return (lambda_1 * gap + lambda_2 * gap.square()).mean()


def warmed_target(target: float, step: int, warmup_steps: int) -> float:
    """The target grows linearly from 0 over the warm-up steps (upstream `get_target_sparsity`, start 0)."""
    return target if warmup_steps <= 0 else target * min(1.0, step / warmup_steps)


# ---- the masks of one model ---------------------------------------------------------------------------
@dataclass
class StructureMasks:
    """Hard-concrete masks over some of heads / intermediate / layers / hidden of a uniform LLaMA model."""

    masks: dict[str, HardConcrete]
    head_block: int  # o_proj input channels per attention unit (query heads of one KV head x head_dim)
    layers: int
    multipliers: dict[str, tuple[nn.Parameter, nn.Parameter]] = field(default_factory=dict)

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        structures: tuple[str, ...],
        seed: int = 0,
        init: Mapping[str, float] | None = None,
    ) -> StructureMasks:
        """Masks for `structures`; `init` gives a structure's initial log-alpha mean (default INIT_LOG_ALPHA)."""
        n = len(decoder_layers(model))
        start = dict.fromkeys(structures, INIT_LOG_ALPHA) | dict(init or {})
        heads, kv = G.attention_widths(model, 0)
        widths = {G.attention_widths(model, i) for i in range(n)} | {
            (-1, G.mlp_width(model, i)) for i in range(n)
        }
        if len(widths) != 2:
            raise KBError("L0 masks need a model whose layers all have the same widths")
        masks: dict[str, HardConcrete] = {}
        for i, name in enumerate(structures):
            if name == "heads":
                masks[name] = HardConcrete(n, kv, start[name], seed=seed + i)
            elif name == "intermediate":
                masks[name] = HardConcrete(n, G.mlp_width(model, 0), start[name], seed=seed + i)
            elif name == "layers":
                masks[name] = HardConcrete(0, n, start[name], seed=seed + i)
            elif name == "hidden":
                masks[name] = HardConcrete(
                    0, int(model_config(model).hidden_size), start[name], seed=seed + i
                )
            else:
                raise KBError(f"unknown L0 structure {name!r}; choose from {', '.join(STRUCTURES)}")
        block = (heads // kv) * G.head_dim(model)
        return cls(masks, block, n)

    def parameters(self) -> list[nn.Parameter]:
        return [m.log_alpha for m in self.masks.values()]

    def constrain(self) -> None:
        for m in self.masks.values():
            m.constrain()

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return {k: m.sample(generator) for k, m in self.masks.items()}

    def add_multipliers(self, names: tuple[str, ...]) -> list[nn.Parameter]:
        """Two Lagrange multipliers (starting at 0) per name; returns them for a maximising optimiser."""
        out = []
        for name in names:
            pair = (nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(())))
            self.multipliers[name] = pair
            out += list(pair)
        return out


def expected_sparsity(masks: StructureMasks, name: str) -> torch.Tensor:
    """1 - expected kept fraction of one structure (one value per row for per-layer structures)."""
    return 1.0 - masks.masks[name].keep_probability().mean(-1)


def expected_kept_params(masks: StructureMasks, per_head: int, per_channel: int) -> torch.Tensor:
    """Expected parameters kept in the attention units and MLP channels (CoFi's scalar-target size model);
    layer masks, when present, scale both."""
    total = torch.zeros(())
    layer = masks.masks["layers"].keep_probability()[:, None] if "layers" in masks.masks else None
    for name, size in (("heads", per_head), ("intermediate", per_channel)):
        if name in masks.masks:
            p = masks.masks[name].keep_probability()
            total = total + ((p * layer) if layer is not None else p).sum() * size
    return total


# ---- applying z values with hooks ------------------------------------------------------------------------
class MaskHooks:
    """Hooks that apply the z values in `self.z` (set before each forward) to a LLaMA model."""

    def __init__(self, model: nn.Module, head_block: int) -> None:
        self.model = model
        self.head_block = head_block
        self.z: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _scale_out(self, layer: int) -> Callable[..., torch.Tensor]:
        def hook(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            if "layers" in self.z:
                out = out * self.z["layers"][layer].to(out.device, out.dtype)
            if "hidden" in self.z:
                out = out * self.z["hidden"].to(out.device, out.dtype)
            return out

        return hook

    def _scale_in(self, name: str, layer: int, block: int) -> Callable[..., tuple[Any, ...]]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            if name not in self.z:
                return args
            z = self.z[name][layer]
            if block > 1:
                z = z.repeat_interleave(block)
            return (args[0] * z.to(args[0].device, args[0].dtype), *args[1:])

        return hook

    def _norm_hooks(self, norm: nn.Module) -> None:
        def scale() -> torch.Tensor | None:
            if "hidden" not in self.z:
                return None
            on = int((self.z["hidden"] != 0).sum())
            return torch.tensor(kept_channel_scale(on, self.z["hidden"].numel()))

        def pre(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            c = scale()
            return args if c is None else (args[0] * c.to(args[0].device, args[0].dtype), *args[1:])

        def post(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            c = scale()
            return out if c is None else out / c.to(out.device, out.dtype)

        self._handles += [norm.register_forward_pre_hook(pre), norm.register_forward_hook(post)]

    def install(self) -> MaskHooks:
        model: Any = self.model  # a transformers model: its submodules are read as Any
        for i, layer in enumerate(model.model.layers):
            self._handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
                self._scale_in("heads", i, self.head_block)))  # fmt: skip
            self._handles.append(
                layer.mlp.down_proj.register_forward_pre_hook(self._scale_in("intermediate", i, 1))
            )
            self._handles.append(layer.self_attn.o_proj.register_forward_hook(self._scale_out(i)))
            self._handles.append(layer.mlp.down_proj.register_forward_hook(self._scale_out(i)))
            self._norm_hooks(layer.input_layernorm)
            self._norm_hooks(layer.post_attention_layernorm)
        self._norm_hooks(model.model.norm)

        def embed(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            return out * self.z["hidden"].to(out.device, out.dtype) if "hidden" in self.z else out

        self._handles.append(input_embedding(model).register_forward_hook(embed))
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextmanager
def masked(model: nn.Module, z: Mapping[str, torch.Tensor], head_block: int) -> Iterator[MaskHooks]:
    """Run `model` with the given z values applied (hooks removed on exit)."""
    hooks = MaskHooks(model, head_block).install()
    hooks.z = dict(z)
    try:
        yield hooks
    finally:
        hooks.remove()


# ---- finalisation --------------------------------------------------------------------------------
@torch.no_grad()
def finalize(model: nn.Module, values: Mapping[str, torch.Tensor], head_block: int) -> dict[str, object]:
    """Fold deterministic z `values` into the weights and slice out every unit whose value is 0.

    Hidden values must be binary (0 or 1): a tied LM head cannot absorb a per-channel scale.
    Returns the new shapes of the changed parameters and the removed layers (indices in the input model).
    """
    from ..harness.structure import remove_layers

    layers = decoder_layers(model)
    removals: dict[G.Family, list[int]] = {}
    layer: Any  # transformers' decoder layer: its parts are read as Any
    for i, layer in enumerate(layers):
        o, down = layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight
        if "heads" in values:
            z = values["heads"][i]
            o.mul_(z.repeat_interleave(head_block).to(o.device, o.dtype)[None, :])
            removals[G.kv_head_family(model, i)] = [int(u) for u in torch.nonzero(z == 0).flatten()]
        if "intermediate" in values:
            z = values["intermediate"][i]
            down.mul_(z.to(down.device, down.dtype)[None, :])
            removals[G.mlp_family(model, i)] = [int(u) for u in torch.nonzero(z == 0).flatten()]
        if "layers" in values:
            zl = values["layers"][i].to(o.device, o.dtype)
            o.mul_(zl)
            down.mul_(zl)
    if "hidden" in values:
        if not bool(((values["hidden"] == 0) | (values["hidden"] == 1)).all()):
            raise KBError("hidden-channel mask values must be 0 or 1")
        removals[G.hidden_family(model)] = [int(u) for u in torch.nonzero(values["hidden"] == 0).flatten()]
    gone = [i for i in range(len(layers)) if "layers" in values and float(values["layers"][i]) == 0.0]
    keep_layers = [i for i in range(len(layers)) if i not in gone]
    # a removed layer's own units need not be sliced (the layer goes), and must not empty a family
    removals = {f: u for f, u in removals.items() if u and (f.layer is None or f.layer in keep_layers)}
    shapes = G.compact(model, removals) if removals else {}
    if gone:
        remove_layers(model, gone)
        n = len(decoder_layers(model))  # the removed layers' widths no longer count in the config
        widths = [G.attention_widths(model, i) for i in range(n)]
        G.set_layer_widths(model_config(model), [h for h, _ in widths], [kv for _, kv in widths],
                           [G.mlp_width(model, i) for i in range(n)])  # fmt: skip
        shapes = {n: list(p.shape) for n, p in model.named_parameters() if n.startswith("model.layers.")} | {
            n: s for n, s in shapes.items() if not n.startswith("model.layers.")
        }
    return {"shapes": shapes, "removed_layers": gone}


# ---- the training loop -------------------------------------------------------------------------------
@dataclass
class LearnReport:
    steps: int
    batch_size: int
    tokens: int
    lm_losses: list[float] = field(default_factory=list)
    penalties: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        first, last = (self.lm_losses[0], self.lm_losses[-1]) if self.lm_losses else (None, None)
        return {"steps": self.steps, "batch_size": self.batch_size, "tokens": self.tokens,
                "lm_loss_first": None if first is None else round(first, 4),
                "lm_loss_last": None if last is None else round(last, 4),
                "penalty_last": round(self.penalties[-1], 6) if self.penalties else None}  # fmt: skip


def learn_masks(
    model: nn.Module,
    masks: StructureMasks,
    tokens: torch.Tensor,
    steps: int,
    batch_size: int,
    *,
    weights: list[nn.Parameter],
    lr: float,
    mask_lr: float,
    penalty: Callable[[int], torch.Tensor],
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[int], bool] | None = None,
) -> LearnReport:
    """Joint steps on LM loss + `penalty(step)` (the Lagrangian): AdamW on `weights` (lr), Adam on log-alpha
    (mask_lr), Adam *maximising* on the multipliers (mask_lr). A fresh z is sampled for every step.

    `stop(step)` (0-based), when given, is asked after each step, once the log-alphas are clamped again; True
    ends the learning there, so `steps` is a cap and the report holds the steps taken."""
    from ..harness.recovery import Budget, adamw, batch_order

    if tokens.dim() != 2 or tokens.shape[0] < 1:
        raise KBError("L0 mask learning needs calibration windows (a 2-D tensor of token ids)")
    report = LearnReport(steps, batch_size, steps * batch_size * tokens.shape[1])
    if steps == 0:
        return report
    order = batch_order(tokens.shape[0], Budget(steps, batch_size), seed)
    multipliers = [p for pair in masks.multipliers.values() for p in pair]
    optimisers = [torch.optim.Adam(masks.parameters(), lr=mask_lr)]
    if weights:
        optimisers.append(adamw(weights, lr))
    if multipliers:
        optimisers.append(torch.optim.Adam(multipliers, lr=mask_lr, maximize=True))
    flags = {id(p): p.requires_grad for p in model.parameters()}
    gen = torch.Generator().manual_seed(seed)
    device = input_embedding(model).weight.device
    hooks = MaskHooks(model, masks.head_block).install()
    was_training = model.training
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in weights:
            p.requires_grad_(True)
        model.train()
        # a toy model's steps are many small ops, far faster on one thread (as `recovery.train_steps`)
        size = sum(p.numel() for p in model.parameters())
        with (
            torch.random.fork_rng(devices=[]),
            torch.inference_mode(False),
            torch.enable_grad(),
            small_ops(size),
        ):
            torch.manual_seed(seed)
            for step, rows in enumerate(order):
                masks.constrain()
                hooks.z = masks.sample(gen)
                ids = tokens[rows].to(device)
                lm = model(input_ids=ids, labels=ids, use_cache=False).loss
                extra = penalty(step)
                for opt in optimisers:
                    opt.zero_grad(set_to_none=True)
                (lm + extra).backward()
                for opt in optimisers:
                    opt.step()
                report.lm_losses.append(float(lm.detach()))
                report.penalties.append(float(extra.detach()))
                if not math.isfinite(report.lm_losses[-1]):
                    raise KBError(f"L0 mask learning diverged at step {step + 1}; lower the learning rates")
                if progress is not None:
                    progress(step + 1, steps)
                if stop is not None:
                    masks.constrain()  # idempotent: the next step (or the end) clamps the same values again
                    if stop(step):
                        report.steps = step + 1
                        report.tokens = report.steps * batch_size * tokens.shape[1]
                        break
        masks.constrain()
    finally:
        hooks.remove()
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), False))
        model.train(was_training)
    return report
