"""Flash-LLM (kind `stand-in`): a GPU kernel, reproduced as its storage format and a byte model.

The run Wanda-prunes the model, stores every linear in the kernel's Tiled-CSL format, checks the "load sparse,
compute dense" product against dense and models the weight bytes the kernel would read; no kernel, no speed
(`metrics=()`).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import check, details, fail, verdict

if TYPE_CHECKING:
    from kb.results import Figure

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("flash-llm", "reference_impls.flash_llm", "stand-in",
               "Wanda pruning, then Tiled-CSL encoding, a load-sparse compute-dense matmul check and a byte model",
               True, ("sparsity",), paper="flash-llm"),
)  # fmt: skip


_SWEEP = (0.5, 0.6, 0.7, 0.9)  # the claim run takes --sparsity (default 0.8)


def _points(r: Results) -> list[tuple[float, dict[str, Any]]]:
    points = [
        (float(details(r, label).get("sparsity", math.nan)), details(r, label))
        for label in r.labels("tiled-csl")
    ]
    return sorted(points, key=lambda p: p[0])


def _claim(r: Results) -> Verdict:
    d = details(r, "tiled-csl")
    if not d:
        return fail("the Tiled-CSL run reported nothing")
    exact = d["roundtrip_exact"] and not d["linears_mismatched"] and d["linears_checked"] == d["linears"]
    ratios = [p["bytes_ratio"] for _, p in _points(r)]
    falling = all(b < a for a, b in itertools.pairwise(ratios))
    sweep = ", ".join(f"{s:.0%} {p['bytes_ratio']:.3f}" for s, p in _points(r))
    return verdict(
        check(exact, f"{d['linears_checked']}/{d['linears']} linears checked, round trip exact: "
                     f"{d['roundtrip_exact']}, mismatched: {len(d['linears_mismatched'])}, largest |sparse - dense| "
                     f"{d['max_abs_diff_linear']:.2e} (logits {d['max_abs_diff_logits']:.2e})"),
        check(d["bytes_ratio"] <= 0.45,
              f"bytes vs dense fp16 at {d['sparsity']:.0%}: {d['bytes_ratio']:.3f} (<= 0.45)"),
        check(falling, f"by sparsity (falling): {sweep}"),
    )  # fmt: skip


def _figures(r: Results) -> list[Figure]:
    from kb.results import Figure, Series

    points = _points(r)
    if not points:
        return []
    xs = [s * 100 for s, _ in points]
    mib = 2**20
    return [
        Figure(
            key="weight-bytes",
            title="Weight bytes a decoding step reads: Tiled-CSL vs dense fp16 (modelled)",
            x_label="sparsity (%)",
            y_label="decoder weight bytes (MiB)",
            series=[
                Series(
                    label="Tiled-CSL (fp16 value + int16 position, tile offsets)",
                    x=xs,
                    y=[p["bytes_tiled_csl"] / mib for _, p in points],
                ),
                Series(label="dense fp16", x=xs, y=[p["bytes_dense_fp16"] / mib for _, p in points]),
            ],
        )
    ]


PAPER = PaperSpec(
    paper="flash-llm",
    method="flash-llm",
    runs=(
        Run("tiled-csl", "flash-llm"),
        *(Run(f"tiled-csl-{round(s * 100)}", "flash-llm", {"sparsity": s}) for s in _SWEEP),
    ),
    claim="Stand-in (the format and a byte model, no GPU kernel, no speed): after Wanda pruning to "
    "{sparsity:.0%}, every decoder linear stored in Tiled-CSL decodes exactly and its load-sparse compute-dense "
    "product equals the dense one (atol 1e-5, rtol 1e-5) in a forward pass, the modelled weight bytes are at most "
    "0.45x dense fp16, and they fall steadily from 50% to 90% sparsity (paper: reading only the non-zeros is what "
    "lets the kernel beat dense cuBLAS at 70-90% sparsity)",
    check=_claim,
    defaults={"sparsity": 0.8},
    metrics=(),
    figures=_figures,
)
