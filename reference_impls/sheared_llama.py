"""Sheared LLaMA: targeted structured pruning with hard-concrete masks, then continued pre-training.

Paper:    Xia, Gao, Zeng, Chen. "Sheared LLaMA: Accelerating Language Model Pre-training via Structured
          Pruning". ICLR 2024, arXiv:2310.06694. Record id: `sheared-llama`.
Official: princeton-nlp/LLM-Shearing: masks in `llmshearing/models/l0_module.py` (log-alpha init 5, clamped to
          [log 0.01, log 100], temperature 2/3, stretch (-0.1, 1.1), one pair of Lagrange multipliers per
          structure, target sparsity warmed up linearly over 20% of the pruning steps), recipe in
          `llmshearing/scripts/pruning.sh:24-63` (masks over heads, intermediate channels, layers and hidden
          channels; lr 1e-4 for the model, 1.0 for masks and multipliers; 3200 steps, ~0.4B tokens, 10% lr
          warm-up) with `llmshearing/configs/llama2/7b.yaml:75-94` (decoupled AdamW, betas (0.9, 0.95), eps
          1e-8, no weight decay; cosine schedule with warm-up down to 0.1x; gradient norm clipped at 1.0),
          one optimiser whose three parameter groups (model, masks, multipliers with a negated lr) all follow
          that schedule (`llmshearing/train.py:81-103`), and `continue_pretrain.sh:22-31` (~50B tokens, lr
          1e-4, 3% warm-up); dynamic batch loading in `callbacks/dynamic_loading_callback.py`.
Idea:     (1) pick a smaller target shape; (2) train the model and hard-concrete masks (`primitives.l0`)
          together on the LM loss plus, per structure, a Lagrangian lambda_1 (s - t) + lambda_2 (s - t)^2
          whose multipliers are maximised, so each structure's expected sparsity s is pulled to the sparsity t
          of the target shape; (3) keep in every layer the units with the largest log-alpha, exactly as many
          as the target has, fold their deterministic mask values into the weights and slice the rest out;
          (4) continue pre-training the smaller model.
Recipe:   every optimiser step of both phases (`train_phase`) runs upstream's optimiser: AdamW with betas
          (0.9, 0.95), eps 1e-8, no weight decay, the gradient norm of everything trained clipped at 1.0, and
          each parameter group's lr times `lr_scale(step)`: linear from 0 over the warm-up share of the phase
          (10% when pruning, 3% when continuing), then a cosine from 1 down to 0.1 (Composer's
          `cosine_with_warmup`, whose first step runs at lr 0).
Target:   on SmolLM2-135M (30 layers, hidden 576, 9 query / 3 KV heads of 64, MLP 1536) the default target is
          the project brief's 24 layers, hidden 448, MLP 1024 and 6 query heads in 2 KV groups (SmolLM2's 3:1
          GQA only allows 3, 6 or 9), about half of the parameters. Other models get the same fractions of
          their own shape.
Budget:   200 mask-learning steps of one window, then 20 continued-training steps of 4 windows in *every* arm
          (`Config.train_steps`). Compressed into tens of steps, upstream's 20% target ramp drives the masks
          faster than the multipliers settle: on a 30-layer model with SmolLM2's unit counts (random weights,
          pre-trained briefly on the corpus) the expected sparsities overshoot to 0.8-0.9 and swing back, and
          after 60-120 steps the layer mask still ended 4-6 layers and the hidden mask 3-11 of 72 channels off
          target; after 160 and 200 steps every structure ended on its target. Upstream, too, prunes with a
          smaller batch (32 x 4096 tokens) than it continues with (256 x 4096). Time on tiny-llama, scaled from
          the committed timings (3.2 s per 4-window mask step of the old loop, 1.0 s per 4-window step of the
          46M-parameter old target) by the same steps timed side by side on a random SmolLM2-shaped model:
          ~1.3 s per mask step and ~1.1 s per step of the 66M-parameter target, ~330 s of training for the
          three arms plus ~25 s of evaluation.
Differs:  (1) attention units are whole KV groups (GQA); (2) N-step runs (see Budget) instead of 0.4B + 50B
          tokens, and the target is not an existing model's shape (the paper's targets were Pythia-1.4B's and
          INCITE-3B's); (3) one corpus, so dynamic batch loading (per-domain reweighting against reference
          losses) has nothing to reweigh and is not implemented; (4) hidden masks end binary (a tied LM head
          cannot absorb a scale), the other masks' kept values are folded into o_proj / down_proj as upstream
          does, and when a kept value is below `FOLD_WARNING` (the masks had too few steps to separate kept
          from pruned units, so the folds shrink what they keep) the run says so (`ctx.log`, details
          `fold_warning`); (5) `init` selects the comparison arms: `learned` (the method), `random-masks`
          (the same shape, units drawn at random) and `random-init` (the same shape with fresh random
          weights); all three get the same continued-training steps after pruning, the learned arm's
          mask-learning steps come on top (details: `post_prune_steps`, `training_tokens`); (6) the details
          report `reached_shape`, the shape the masks themselves arrive at (per structure the expected number
          of kept units, upstream's `expected_num_nonzeros`, averaged over layers), next to the target shape
          the final model is cut to; (7) both phases run this module's `train_phase` rather than
          `l0.learn_masks` / `harness.recovery.train_steps`, which have no lr schedule, clipping or betas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers, input_embedding, model_config, small_ops
from .harness.recovery import Budget, adamw, batch_order
from .primitives import groups as G
from .primitives import l0
from .primitives.sizing import share_for_params

# the default target as fractions of SmolLM2-135M's shape: layers, KV groups, MLP channels, hidden channels
SOURCE = {"layers": 30, "kv": 3, "intermediate": 1536, "hidden": 576}
TARGET = {"layers": 24, "kv": 2, "intermediate": 1024, "hidden": 448}
BETAS = (0.9, 0.95)  # upstream `configs/llama2/7b.yaml` optimizer.betas
EPS = 1e-8
FOLD_WARNING = 0.5  # kept mask values below this, folded into the weights, are reported
# the units each l0 structure masks, by the target-shape key that counts them
UNIT_KEYS = {"heads": "kv", "intermediate": "intermediate", "layers": "layers", "hidden": "hidden"}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    init: Literal["learned", "random-masks", "random-init"] = "learned"
    target_layers: int | None = Field(None, ge=1)  # None: the default target's fraction of the model's layers
    target_kv_heads: int | None = Field(None, ge=1)  # KV groups per layer kept (each with its query heads)
    target_intermediate: int | None = Field(None, ge=1)
    target_hidden: int | None = Field(None, ge=1)
    mask_steps: int = Field(200, ge=0)  # model + mask steps, learned arm only (upstream 3200)
    mask_batch_size: int = Field(1, ge=1)  # windows per mask step (upstream 32 x 4096 tokens, an 8th of 256)
    train_steps: int = Field(20, ge=0)  # continued pre-training steps after pruning, the same in every arm
    batch_size: int = Field(4, ge=1)  # windows per continued-training step (upstream 256 x 4096 tokens)
    lr: float = Field(1e-4, gt=0)  # model weights, both phases (upstream)
    mask_lr: float = Field(1.0, gt=0)  # log-alpha and multipliers (upstream `lag_lr`)
    sparsity_warmup: float = Field(0.2, ge=0, le=1)  # share of mask steps ramping the target sparsity up
    lr_warmup: float = Field(0.1, ge=0, le=1)  # share of mask steps of lr warm-up (pruning.sh t_warmup)
    train_lr_warmup: float = Field(0.03, ge=0, le=1)  # the same for continued training (continue_pretrain.sh)
    lr_floor: float = Field(0.1, ge=0, le=1)  # the cosine ends at this fraction of each lr (7b.yaml alpha_f)
    clip: float = Field(1.0, gt=0)  # gradient-norm clipping threshold over everything trained (7b.yaml)
    seed: int = 0
    params: float | None = None  # the `params` target: share of decoder params removed; sets the target shape


def target_shape(model: nn.Module, config: Config) -> dict[str, int]:
    """Layers, KV groups per layer, MLP channels and hidden channels of the target."""
    n = len(decoder_layers(model))
    _heads, kv = G.attention_widths(model, 0)
    have = {
        "layers": n,
        "kv": kv,
        "intermediate": G.mlp_width(model, 0),
        "hidden": int(model_config(model).hidden_size),
    }
    given = {"layers": config.target_layers, "kv": config.target_kv_heads,
             "intermediate": config.target_intermediate, "hidden": config.target_hidden}  # fmt: skip
    out = {}
    for key, wanted in given.items():
        value = (
            wanted if wanted is not None else max(1, math.floor(have[key] * TARGET[key] / SOURCE[key] + 0.5))
        )
        if value > have[key]:
            raise KBError(f"sheared-llama: target {key} {value} exceeds the model's {have[key]}")
        out[key] = value
    if out == have:
        raise KBError("sheared-llama: the target shape equals the model's shape; nothing to prune")
    return out


def params_target(model: nn.Module, config: Config, params: float) -> Config:
    """The config for the `params` target: every size left unset moves from the model's own towards the default
    target's by one common share t, the t whose shape (decoder parameters counted from the shape) comes closest
    to removing `params` of the decoder's parameters; sizes given explicitly stay as given."""
    heads, kv = G.attention_widths(model, 0)
    rep, hd = heads // kv, G.head_dim(model)
    have = {"layers": len(decoder_layers(model)), "kv": kv, "intermediate": G.mlp_width(model, 0),
            "hidden": int(model_config(model).hidden_size)}  # fmt: skip
    aim = target_shape(model, config)
    fields = {"layers": "target_layers", "kv": "target_kv_heads", "intermediate": "target_intermediate",
              "hidden": "target_hidden"}  # fmt: skip
    moving = [k for k, f in fields.items() if getattr(config, f) is None]

    def shape(t: float) -> dict[str, int]:
        return {
            k: math.floor(have[k] - t * (have[k] - aim[k]) + 0.5) if k in moving else aim[k] for k in have
        }

    def decoder(s: dict[str, int]) -> int:  # q and o with their query heads, k and v, the MLP, two norms
        h = s["hidden"]
        return s["layers"] * (2 * h * hd * s["kv"] * (rep + 1) + 3 * h * s["intermediate"] + 2 * h)

    full = decoder(have)
    t = share_for_params(model, params, lambda t: full - decoder(shape(t)), name="sheared-llama")
    return config.model_copy(update={fields[k]: v for k, v in shape(t).items()})


# ---- upstream's optimiser and schedule -------------------------------------------------------------
def lr_scale(step: int, steps: int, warmup: float, floor: float) -> float:
    """The factor on every group's lr at optimiser step `step` (0-based) of `steps`: step / w during the first
    w = round(warmup x steps) steps, then floor + (1 - floor) (1 + cos(pi x)) / 2 with x going from 0 (step w)
    towards 1 (step `steps`)."""
    w = math.floor(warmup * steps + 0.5)
    if step < w:
        return step / w
    x = min(1.0, (step - w) / max(1, steps - w))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * x))


@dataclass
class PhaseReport:
    kind: str
    steps: int
    batch_size: int
    tokens: int
    losses: list[float] = field(default_factory=list)  # LM loss of each step
    penalties: list[float] = field(default_factory=list)  # Lagrangian of each step (mask learning only)
    lrs: list[float] = field(default_factory=list)  # the model group's lr of each step

    def summary(self) -> dict[str, object]:
        def r(values: list[float], i: int, digits: int = 4) -> float | None:
            return round(values[i], digits) if values else None

        out: dict[str, object] = {
            "kind": self.kind, "steps": self.steps, "batch_size": self.batch_size, "tokens": self.tokens,
            "loss_first": r(self.losses, 0), "loss_last": r(self.losses, -1),
            "lr_max": max(self.lrs) if self.lrs else None, "lr_last": r(self.lrs, -1, 10),
        }  # fmt: skip
        if self.penalties:
            out["penalty_last"] = r(self.penalties, -1, 6)
        return out


def train_phase(
    model: nn.Module,
    tokens: torch.Tensor,
    steps: int,
    batch_size: int,
    config: Config,
    *,
    kind: str,
    warmup: float,
    masks: l0.StructureMasks | None = None,
    penalty: Callable[[int], torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhaseReport:
    """`steps` steps of upstream's recipe on the LM loss over windows of `tokens` (n, t), every model weight
    trained. With `masks` (mask learning), a fresh z is sampled and applied for every step, `penalty(step)`
    is added to the loss, log-alpha trains at `mask_lr` and the multipliers ascend at `mask_lr`; all groups
    share the lr schedule and one gradient-norm clip. Batches as `harness.recovery` draws them (seeded)."""
    if tokens.dim() != 2 or tokens.shape[0] < 1:
        raise KBError("sheared-llama needs calibration windows (a 2-D tensor of token ids)")
    report = PhaseReport(kind, steps, batch_size, steps * batch_size * tokens.shape[1])
    if steps == 0:
        return report
    weights = list(model.parameters())
    groups: list[dict[str, object]] = [{"params": weights, "lr": config.lr}]
    if masks is not None:
        multipliers = [p for pair in masks.multipliers.values() for p in pair]
        groups.append({"params": masks.parameters(), "lr": config.mask_lr})
        groups.append({"params": multipliers, "lr": config.mask_lr, "maximize": True})  # upstream: -lag_lr
    base = [float(g["lr"]) for g in groups]  # type: ignore[arg-type]
    optimiser = adamw(groups, config.lr, betas=BETAS, eps=EPS)
    trained = [p for g in optimiser.param_groups for p in g["params"]]
    order = batch_order(tokens.shape[0], Budget(steps, batch_size), config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    device = input_embedding(model).weight.device
    hooks = l0.MaskHooks(model, masks.head_block).install() if masks is not None else None
    flags = {id(p): p.requires_grad for p in model.parameters()}
    was_training = model.training
    size = sum(p.numel() for p in weights)
    try:
        for p in trained:
            p.requires_grad_(True)
        model.train()
        with (
            torch.random.fork_rng(devices=[]),
            torch.inference_mode(False),
            torch.enable_grad(),
            small_ops(size),
        ):
            torch.manual_seed(config.seed)
            for step, rows in enumerate(order):
                scale = lr_scale(step, steps, warmup, config.lr_floor)
                for g, lr in zip(optimiser.param_groups, base, strict=True):
                    g["lr"] = lr * scale
                if masks is not None and hooks is not None:
                    masks.constrain()
                    hooks.z = masks.sample(gen)
                ids = tokens[rows].to(device)
                lm = model(input_ids=ids, labels=ids, use_cache=False).loss
                extra = penalty(step) if penalty is not None else torch.zeros(())
                optimiser.zero_grad(set_to_none=True)
                (lm + extra.to(lm.device)).backward()
                torch.nn.utils.clip_grad_norm_(trained, config.clip)
                optimiser.step()
                report.losses.append(float(lm.detach()))
                report.lrs.append(float(optimiser.param_groups[0]["lr"]))
                if masks is not None:
                    report.penalties.append(float(extra.detach()))
                if not math.isfinite(report.losses[-1]):
                    raise KBError(
                        f"sheared-llama: {kind} diverged at step {step + 1}; lower the learning rates"
                    )
                if progress is not None:
                    progress(step + 1, steps)
        if masks is not None:
            masks.constrain()
    finally:
        if hooks is not None:
            hooks.remove()
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), False))
        model.train(was_training)
    return report


# ---- the three arms' masks ------------------------------------------------------------------------------
def random_values(model: nn.Module, shape: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    """Binary masks of the target shape with the kept units drawn uniformly at random (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(decoder_layers(model))
    _h, kv = G.attention_widths(model, 0)
    hidden = int(model_config(model).hidden_size)
    sizes = {"heads": (n, kv, shape["kv"]), "intermediate": (n, G.mlp_width(model, 0), shape["intermediate"]),
             "layers": (1, n, shape["layers"]), "hidden": (1, hidden, shape["hidden"])}  # fmt: skip
    out = {}
    for name, (rows, units, keep) in sizes.items():
        z = torch.zeros(rows, units)
        for r in range(rows):
            z[r, torch.randperm(units, generator=gen)[:keep]] = 1.0
        out[name] = z if name in ("heads", "intermediate") else z[0]
    return out


def reached_shape(masks: l0.StructureMasks) -> dict[str, int]:
    """The shape the masks arrive at by themselves: per structure the expected number of kept units (the sum of
    the keep probabilities, upstream's `expected_num_nonzeros`), averaged over layers, rounded."""
    out = {}
    for name, key in UNIT_KEYS.items():
        kept = masks.masks[name].keep_probability().detach().sum(-1)  # (layers,) or ()
        out[key] = math.floor(float(kept.mean()) + 0.5)
    return out


def low_folds(
    values: dict[str, torch.Tensor], threshold: float = FOLD_WARNING
) -> dict[str, dict[str, object]]:
    """For each structure whose kept values are folded into the weights (heads, intermediate, layers): how many
    kept values of the layers that stay are below `threshold`, out of how many, and the smallest; structures
    with none below are left out."""
    stays = values["layers"] != 0  # (layers,)
    kept_values = {"heads": values["heads"][stays], "intermediate": values["intermediate"][stays],
                   "layers": values["layers"][stays]}  # fmt: skip
    out: dict[str, dict[str, object]] = {}
    for name, v in kept_values.items():
        kept = v[v != 0]
        below = int((kept < threshold).sum())
        if below:
            out[name] = {"below": below, "kept": int(kept.numel()), "min": round(float(kept.min()), 4)}
    return out


def learned_values(
    model: nn.Module, calib: torch.Tensor, shape: dict[str, int], config: Config, ctx: Context
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Learn hard-concrete masks towards the target shape (model weights train too); deterministic values."""
    masks = l0.StructureMasks.for_model(model, l0.STRUCTURES, seed=config.seed)
    masks.add_multipliers(l0.STRUCTURES)
    keep = {name: shape[key] for name, key in UNIT_KEYS.items()}
    targets = {k: 1.0 - keep[k] / masks.masks[k].units for k in l0.STRUCTURES}
    warm = math.floor(config.sparsity_warmup * config.mask_steps + 0.5)

    def penalty(step: int) -> torch.Tensor:
        total = torch.zeros(())
        for name in l0.STRUCTURES:
            l1, l2 = masks.multipliers[name]
            total = total + l0.lagrangian(l0.expected_sparsity(masks, name),
                                          l0.warmed_target(targets[name], step, warm), l1, l2)  # fmt: skip
        return total

    report = train_phase(model, calib, config.mask_steps, config.mask_batch_size, config, kind="mask-learning",
                         warmup=config.lr_warmup, masks=masks, penalty=penalty, progress=ctx.progress)  # fmt: skip
    values: dict[str, torch.Tensor] = {k: masks.masks[k].deterministic(keep[k]) for k in l0.STRUCTURES}
    values["hidden"] = (values["hidden"] != 0).float()  # binary: see `l0.finalize`
    expected = {k: round(float(l0.expected_sparsity(masks, k).mean().detach()), 4) for k in l0.STRUCTURES}
    reached = reached_shape(masks)
    details = {"mask_learning": report.summary(), "target_sparsity": {k: round(v, 4) for k, v in targets.items()},
               "expected_sparsity_end": expected, "reached_shape": reached,
               "reached_target": reached == shape}  # fmt: skip
    return values, details


@torch.no_grad()
def reinitialise(model: nn.Module, seed: int) -> None:
    """Fresh random weights for the (already pruned) model, seeded: every linear and embedding weight from
    N(0, initializer_range), biases 0, norm weights 1 (LLaMA's initialiser). Written out rather than
    `model._init_weights`, which skips tensors a checkpoint load marked as initialised."""
    std = float(getattr(model.config, "initializer_range", 0.02))
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))
        elif name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.zero_()


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Prune to the target shape (learned or random masks, or random weights), then continue training."""
    if config.params is not None:
        config = params_target(model, config, config.params)
    shape = target_shape(model, config)
    before = sum(p.numel() for p in model.parameters())
    head_block = l0.StructureMasks.for_model(model, ("heads",)).head_block
    details: dict[str, object] = {"init": config.init, "target_shape": shape}
    mask_tokens = 0
    if config.init == "learned":
        ctx.log(f"sheared-llama: {config.mask_steps} mask-learning steps of {config.mask_batch_size} windows")
        values, learned = learned_values(model, calib, shape, config, ctx)
        details.update(learned)
        mask_tokens = config.mask_steps * config.mask_batch_size * calib.shape[1]
        if learned["reached_shape"] != shape:
            ctx.log(f"sheared-llama: the masks reached {learned['reached_shape']}, not the target {shape}")
        low = low_folds(values)
        if low:
            details["fold_warning"] = low
            parts = ", ".join(f"{k}: {v['below']} of {v['kept']}, min {v['min']}" for k, v in low.items())
            ctx.log(
                f"sheared-llama: warning: kept mask values below {FOLD_WARNING} are folded into the weights ({parts})"
            )
    else:
        values = random_values(model, shape, config.seed)
    result = l0.finalize(model, values, head_block)
    if config.init == "random-init":
        reinitialise(model, config.seed)
    ctx.log(f"sheared-llama: {config.train_steps} continued-training steps")
    report = train_phase(model, calib, config.train_steps, config.batch_size, config, kind="continued-pretraining",
                         warmup=config.train_lr_warmup, progress=ctx.progress)  # fmt: skip
    after = sum(p.numel() for p in model.parameters())
    heads, kv = G.attention_widths(model, 0)
    details.update({
        "removed_layers": result["removed_layers"], "continued_training": report.summary(),
        "post_prune_steps": report.steps, "training_tokens": report.tokens + mask_tokens,
        "final_shape": {"layers": len(decoder_layers(model)), "heads": heads, "kv_heads": kv,
                        "intermediate": G.mlp_width(model, 0), "hidden": int(model_config(model).hidden_size)},
        "params_before": before, "params_after": after,
    })  # fmt: skip
    shapes = result["shapes"]
    assert isinstance(shapes, dict)
    return Outcome(kind="width", shapes=shapes, details=details)
