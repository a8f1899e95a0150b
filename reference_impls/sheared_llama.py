"""Sheared LLaMA: targeted structured pruning with hard-concrete masks, then continued pre-training.

Paper:    Xia, Gao, Zeng, Chen. "Sheared LLaMA: Accelerating Language Model Pre-training via Structured
          Pruning". ICLR 2024, arXiv:2310.06694. Record id: `sheared-llama`.
Official: princeton-nlp/LLM-Shearing: masks in `llmshearing/models/l0_module.py` (log-alpha init 5, clamped to
          [log 0.01, log 100], temperature 2/3, stretch (-0.1, 1.1), one pair of Lagrange multipliers per
          structure, target sparsity warmed up linearly over 20% of the pruning steps), recipe in
          `llmshearing/scripts/pruning.sh` (masks over heads, intermediate channels, layers and hidden
          channels; lr 1e-4 for the model, 1.0 for masks and multipliers; 3200 steps, ~0.4B tokens) and
          `continue_pretrain.sh` (~50B tokens, lr 1e-4), dynamic batch loading in
          `callbacks/dynamic_loading_callback.py`.
Idea:     (1) pick the shape of an existing smaller model as the target; (2) train the model and
          hard-concrete masks (`primitives.l0`) together on the LM loss plus, per structure, a Lagrangian
          lambda_1 (s - t) + lambda_2 (s - t)^2 whose multipliers are maximised, so each structure's expected
          sparsity s is pulled to the sparsity t of the target shape; (3) keep in every layer the units with
          the largest log-alpha, exactly as many as the target has, fold their deterministic mask values
          into the weights and slice the rest out; (4) continue pre-training the smaller model.
Target:   on SmolLM2-135M (30 layers, hidden 576, 9 query / 3 KV heads of 64, MLP 1536) the default target is
          the shape of llama2.c's `stories42M` (a LLaMA-2-architecture model: 8 layers, hidden 512, MLP 1376,
          heads of 64) with 6 query heads in 2 KV groups instead of its 8 heads: SmolLM2's 3:1 GQA only allows
          3, 6 or 9 (the paper, too, adapted its Pythia-1.4B target, to LLaMA's MLP ratio). Other models get
          the same fractions of their own shape.
Differs:  (1) attention units are whole KV groups (GQA); (2) N-step runs (default 20 mask-learning steps and
          10 continued-training steps of 4 x 128 tokens) instead of 0.4B + 50B tokens; (3) one corpus, so
          dynamic batch loading (per-domain reweighting against reference losses) has nothing to reweigh and
          is not implemented; (4) hidden masks end binary (a tied LM head cannot absorb a scale), the other
          masks' kept values are folded into o_proj / down_proj as upstream does; (5) `init` selects the
          comparison arms: `learned` (the method), `random-masks` (the same shape, units drawn at random)
          and `random-init` (the same shape with fresh random weights), both trained for mask + continued
          steps so every arm sees the same tokens.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers, model_config
from .harness.recovery import Budget, train_steps
from .primitives import groups as G
from .primitives import l0
from .primitives.sizing import share_for_params

# the default target as fractions of SmolLM2-135M's shape (stories42M's, with 6 heads): layers, KV groups,
# MLP channels, hidden channels
SOURCE = {"layers": 30, "kv": 3, "intermediate": 1536, "hidden": 576}
TARGET = {"layers": 8, "kv": 2, "intermediate": 1376, "hidden": 512}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    init: Literal["learned", "random-masks", "random-init"] = "learned"
    target_layers: int | None = Field(None, ge=1)  # None: the default target's fraction of the model's layers
    target_kv_heads: int | None = Field(None, ge=1)  # KV groups per layer kept (each with its query heads)
    target_intermediate: int | None = Field(None, ge=1)
    target_hidden: int | None = Field(None, ge=1)
    mask_steps: int = Field(20, ge=0)  # joint model + mask steps (upstream 3200 of 32 x 4096 tokens)
    train_steps: int = Field(10, ge=0)  # continued pre-training steps after pruning
    batch_size: int = Field(4, ge=1)  # calibration windows per step
    lr: float = Field(1e-4, gt=0)  # model weights, both phases (upstream)
    mask_lr: float = Field(1.0, gt=0)  # log-alpha and multipliers (upstream `lag_lr`)
    warmup: float = Field(0.2, ge=0, le=1)  # share of mask steps over which the target sparsity ramps up
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


def learned_values(
    model: nn.Module, calib: torch.Tensor, shape: dict[str, int], config: Config, ctx: Context
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Learn hard-concrete masks towards the target shape (model weights train too); deterministic values."""
    masks = l0.StructureMasks.for_model(model, l0.STRUCTURES, seed=config.seed)
    masks.add_multipliers(l0.STRUCTURES)
    sizes = {"heads": masks.masks["heads"].units, "intermediate": masks.masks["intermediate"].units,
             "layers": masks.masks["layers"].units, "hidden": masks.masks["hidden"].units}  # fmt: skip
    keep = {"heads": shape["kv"], "intermediate": shape["intermediate"], "layers": shape["layers"],
            "hidden": shape["hidden"]}  # fmt: skip
    targets = {k: 1.0 - keep[k] / sizes[k] for k in l0.STRUCTURES}
    warm = math.floor(config.warmup * config.mask_steps + 0.5)

    def penalty(step: int) -> torch.Tensor:
        total = torch.zeros(())
        for name in l0.STRUCTURES:
            l1, l2 = masks.multipliers[name]
            total = total + l0.lagrangian(l0.expected_sparsity(masks, name),
                                          l0.warmed_target(targets[name], step, warm), l1, l2)  # fmt: skip
        return total

    report = l0.learn_masks(
        model, masks, calib, config.mask_steps, config.batch_size, weights=list(model.parameters()), lr=config.lr,
        mask_lr=config.mask_lr, penalty=penalty, seed=config.seed, progress=ctx.progress,
    )  # fmt: skip
    values: dict[str, torch.Tensor] = {k: masks.masks[k].deterministic(keep[k]) for k in l0.STRUCTURES}
    values["hidden"] = (values["hidden"] != 0).float()  # binary: see `l0.finalize`
    expected = {k: round(float(l0.expected_sparsity(masks, k).mean().detach()), 4) for k in l0.STRUCTURES}
    details = {"mask_learning": report.summary(), "target_sparsity": {k: round(v, 4) for k, v in targets.items()},
               "expected_sparsity_end": expected}  # fmt: skip
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
    if config.init == "learned":
        ctx.log(f"sheared-llama: {config.mask_steps} mask-learning steps of {config.batch_size} windows")
        values, learned = learned_values(model, calib, shape, config, ctx)
        details.update(learned)
        steps = config.train_steps
    else:
        values = random_values(model, shape, config.seed)
        steps = config.mask_steps + config.train_steps  # the same tokens as the learned arm
    result = l0.finalize(model, values, head_block)
    if config.init == "random-init":
        reinitialise(model, config.seed)
    ctx.log(f"sheared-llama: {steps} continued-training steps")
    report = train_steps(model, list(model.parameters()), calib, Budget(steps, config.batch_size), lr=config.lr,
                         seed=config.seed, progress=ctx.progress, kind="continued-pretraining")  # fmt: skip
    after = sum(p.numel() for p in model.parameters())
    heads, kv = G.attention_widths(model, 0)
    details.update({
        "removed_layers": result["removed_layers"], "continued_training": report.summary(),
        "training_tokens": report.tokens + (config.mask_steps * config.batch_size * calib.shape[1]
                                            if config.init == "learned" else 0),
        "final_shape": {"layers": len(decoder_layers(model)), "heads": heads, "kv_heads": kv,
                        "intermediate": G.mlp_width(model, 0), "hidden": int(model_config(model).hidden_size)},
        "params_before": before, "params_after": after,
    })  # fmt: skip
    shapes = result["shapes"]
    assert isinstance(shapes, dict)
    return Outcome(kind="width", shapes=shapes, details=details)
