"""Honest stand-ins: papers whose contribution is not a pruning algorithm for a pretrained LLM.

- `sparse-scaling-laws` (kind `training`): a scaling law and its fit. The run trains its own tiny sparse
  sweep from scratch, fits the law and reads the compute-optimal sparsity off the fit.
- `flash-llm` (kind `stand-in`): a GPU kernel. The run Wanda-prunes the model, stores every linear in the
  kernel's Tiled-CSL format, checks the "load sparse, compute dense" product against dense and models the
  weight bytes the kernel would read; no kernel, no speed.
- `bitnet-b158` (kind `training`): ternary quantisation-aware training from scratch. The run trains the same
  tiny LLaMA in full precision and with BitLinear for the same steps.
None of them is judged on the `--model`'s perplexity (`metrics=()`), except that Flash-LLM prunes it.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from .specs import MethodSpec, PaperSpec, Results, Run, Verdict

if TYPE_CHECKING:
    from kb.results import Figure

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("sparse-scaling-laws", "reference_impls.sparse_scaling_laws", "training",
               "trains a tiny sparse sweep from scratch (GMP) and fits the sparse scaling law; prunes no model",
               False, (), paper="sparse-scaling-laws"),
    MethodSpec("flash-llm", "reference_impls.flash_llm", "stand-in",
               "Wanda pruning, then Tiled-CSL encoding, a load-sparse compute-dense matmul check and a byte model",
               True, ("sparsity",), paper="flash-llm"),
    MethodSpec("bitnet-b158", "reference_impls.bitnet_b158", "training",
               "trains a tiny LLaMA from scratch with ternary BitLinear and in full precision; prunes no model",
               False, (), paper="bitnet-b158"),
)  # fmt: skip


def _details(r: Results, label: str) -> dict[str, Any]:
    outcome = r.outcome(label)
    return dict(outcome.details) if outcome is not None else {}


# ---- sparse scaling laws ---------------------------------------------------------------------------------
def _ssl_claim(r: Results) -> Verdict:
    d = _details(r, "sweep")
    s_opt, budgets, points = d.get("optimal_sparsity", []), d.get("budgets", []), d.get("points", [])
    if not s_opt or not points:
        return False, "the sweep reported no fit"
    longest = max(p["steps"] for p in points)
    at_longest = {p["sparsity"]: p["eval_loss"] for p in points if p["steps"] == longest}
    dense, sparsest = at_longest.get(0.0, math.nan), at_longest[max(at_longest)]
    grows = s_opt[-1] >= s_opt[0] + 0.1 and all(b >= a for a, b in itertools.pairwise(s_opt))
    pays = sparsest < dense
    fits = d.get("fit_rmse_log_loss", math.inf) <= 0.03
    swept = d.get("swept_budgets", [math.nan])[-1]
    reason = (f"fitted optimal sparsity {s_opt[0]:.2f} at {budgets[0]:.3g} to {s_opt[-1]:.2f} at {budgets[-1]:.3g} "
              f"(10^12 FLOPs of dense-shape training; swept up to {swept:.3g}); at {longest} steps held-out loss "
              f"S={max(at_longest):.2f} {sparsest:.4f} vs dense {dense:.4f} at equal non-zeros; fit RMSE of log-loss "
              f"{d.get('fit_rmse_log_loss', math.nan):.4f}")  # fmt: skip
    return grows and pays and fits, reason


def _ssl_figures(r: Results) -> list[Figure]:
    from kb.results import Figure, Series

    d = _details(r, "sweep")
    if not d:
        return []
    series = []
    for s in sorted({p["sparsity"] for p in d["points"]}):
        pts = sorted((p["tokens"] / 1e6, p["eval_loss"]) for p in d["points"] if p["sparsity"] == s)
        series.append(Series(label=f"measured S={s:.2f}", x=[x for x, _ in pts], y=[y for _, y in pts]))
    for s, curve in sorted(d.get("fit_curves", {}).items(), key=lambda kv: float(kv[0])):
        series.append(Series(label=f"fitted law S={float(s):.2f}", x=curve["tokens"], y=curve["loss"]))
    return [
        Figure(key="loss-vs-tokens", title="Held-out loss of the sweep and the fitted law (equal non-zeros)",
               x_label="training tokens (millions of bytes)", y_label="held-out loss (nats per byte)",
               series=series, x_log=True),
        Figure(key="optimal-sparsity", title="Compute-optimal sparsity read off the fitted law",
               x_label="training compute 6 N D / (1 - S) (10^12 FLOPs)", y_label="optimal sparsity",
               series=[Series(label="fitted law", x=d["budgets"], y=d["optimal_sparsity"])], x_log=True),
    ]  # fmt: skip


# ---- Flash-LLM -----------------------------------------------------------------------------------------
_FLASH_SWEEP = (0.5, 0.6, 0.7, 0.9)  # the claim run takes --sparsity (default 0.8)


def _flash_points(r: Results) -> list[tuple[float, dict[str, Any]]]:
    points = [
        (float(_details(r, label).get("sparsity", math.nan)), _details(r, label))
        for label in r.labels("tiled-csl")
    ]
    return sorted(points, key=lambda p: p[0])


def _flash_claim(r: Results) -> Verdict:
    d = _details(r, "tiled-csl")
    if not d:
        return False, "the Tiled-CSL run reported nothing"
    exact = d["roundtrip_exact"] and not d["linears_mismatched"] and d["linears_checked"] == d["linears"]
    ratios = [p["bytes_ratio"] for _, p in _flash_points(r)]
    falling = all(b < a for a, b in itertools.pairwise(ratios))
    holds = exact and d["bytes_ratio"] <= 0.45 and falling
    sweep = ", ".join(f"{s:.0%} {p['bytes_ratio']:.3f}" for s, p in _flash_points(r))
    reason = (f"{d['linears_checked']}/{d['linears']} linears checked, round trip exact: {d['roundtrip_exact']}, "
              f"mismatched: {len(d['linears_mismatched'])}, largest |sparse - dense| {d['max_abs_diff_linear']:.2e} "
              f"(logits {d['max_abs_diff_logits']:.2e}); bytes vs dense fp16 at {d['sparsity']:.0%}: "
              f"{d['bytes_ratio']:.3f} (<= 0.45); by sparsity: {sweep}")  # fmt: skip
    return holds, reason


def _flash_figures(r: Results) -> list[Figure]:
    from kb.results import Figure, Series

    points = _flash_points(r)
    if not points:
        return []
    xs = [s * 100 for s, _ in points]
    mib = 2**20
    return [Figure(
        key="weight-bytes", title="Weight bytes a decoding step reads: Tiled-CSL vs dense fp16 (modelled)",
        x_label="sparsity (%)", y_label="decoder weight bytes (MiB)",
        series=[Series(label="Tiled-CSL (fp16 value + int16 position, tile offsets)", x=xs,
                       y=[p["bytes_tiled_csl"] / mib for _, p in points]),
                Series(label="dense fp16", x=xs, y=[p["bytes_dense_fp16"] / mib for _, p in points])],
    )]  # fmt: skip


# ---- BitNet b1.58 ----------------------------------------------------------------------------------------
def _bitnet_claim(r: Results) -> Verdict:
    d = _details(r, "qat")
    if not d:
        return False, "the training run reported nothing"
    fp, tern = d["fp"]["eval_loss"], d["ternary"]["eval_loss"]
    ternary_ok = d["ternary"]["max_distinct_weight_values"] <= 3 and d["ternary"]["bitlinear_layers"] > 0
    holds = ternary_ok and math.isfinite(fp) and math.isfinite(tern) and tern <= 1.15 * fp
    return holds, (f"held-out loss ternary {tern:.4f} vs 1.15 x full precision {1.15 * fp:.4f} after {d['steps']} "
                   f"equal steps (final training loss {d['ternary']['final_train_loss']:.4f} vs "
                   f"{d['fp']['final_train_loss']:.4f}); {d['ternary']['bitlinear_layers']} BitLinear layers, at most "
                   f"{d['ternary']['max_distinct_weight_values']} weight values each")  # fmt: skip


def _bitnet_figures(r: Results) -> list[Figure]:
    from kb.results import Figure, Series

    d = _details(r, "qat")
    if not d:
        return []
    names = {"fp": "full precision", "ternary": "BitNet b1.58 (ternary weights, 8-bit activations)"}
    return [Figure(
        key="loss-curves", title="Training loss from scratch, same model, data and steps",
        x_label="optimiser step", y_label="training loss (nats per byte)",
        series=[Series(label=names[arm], x=d[arm]["curve_steps"], y=d[arm]["curve_loss"]) for arm in names],
    )]  # fmt: skip


PAPERS: tuple[PaperSpec, ...] = (
    PaperSpec(
        paper="sparse-scaling-laws",
        method="sparse-scaling-laws",
        runs=(Run("sweep", "sparse-scaling-laws"),),
        claim="Stand-in (a law and its fit, no billion-token training): byte-level 2-layer LLaMAs with equal "
        "non-zero weights at sparsity 0, 0.5 and 0.75, each trained from scratch with gradual magnitude pruning for "
        "three step counts; the paper's law fitted to their held-out losses (RMSE of log-loss at most 0.03) puts the "
        "compute-optimal sparsity at 1000x the largest swept budget at least 0.1 above that at the smallest, never "
        "falling in between, and at the longest training the sparsest model beats the dense one at equal non-zeros "
        "(paper: optimal sparsity grows with the training budget)",
        check=_ssl_claim,
        metrics=(),
        figures=_ssl_figures,
    ),
    PaperSpec(
        paper="flash-llm",
        method="flash-llm",
        runs=(
            Run("tiled-csl", "flash-llm"),
            *(Run(f"tiled-csl-{round(s * 100)}", "flash-llm", {"sparsity": s}) for s in _FLASH_SWEEP),
        ),
        claim="Stand-in (the format and a byte model, no GPU kernel, no speed): after Wanda pruning to "
        "{sparsity:.0%}, every decoder linear stored in Tiled-CSL decodes exactly and its load-sparse compute-dense "
        "product equals the dense one (atol 1e-5, rtol 1e-5) in a forward pass, the modelled weight bytes are at most "
        "0.45x dense fp16, and they fall steadily from 50% to 90% sparsity (paper: reading only the non-zeros is what "
        "lets the kernel beat dense cuBLAS at 70-90% sparsity)",
        check=_flash_claim,
        defaults={"sparsity": 0.8},
        metrics=(),
        figures=_flash_figures,
    ),
    PaperSpec(
        paper="bitnet-b158",
        method="bitnet-b158",
        runs=(Run("qat", "bitnet-b158"),),
        claim="Stand-in (tiny training from scratch, no kernel, no 3B-scale parity): the same byte-level 2-layer "
        "LLaMA trained from scratch for the same steps with ternary BitLinear weights and 8-bit activations reaches a "
        "held-out loss at most 1.15x that of full-precision training (paper: BitNet b1.58 matches full precision "
        "from 3B parameters)",
        check=_bitnet_claim,
        metrics=(),
        figures=_bitnet_figures,
    ),
)
