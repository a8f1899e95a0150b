"""Depth: methods that remove whole layers or sublayers (ShortGPT, Deeper Layers, Shortened LLaMA, LLM-Streamline,
What Matters, Reassessing Layer Pruning, A Deeper Look, Heterogeneous Sublayers).

Every depth comparison measures CPU speed (prefill latency, decode tokens/s, KV-cache bytes) on its main arm against
the dense model, next to perplexity, the probe and the sizes every run reports."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from .specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite

if TYPE_CHECKING:
    from kb.results import Figure

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("shortgpt", "reference_impls.shortgpt", "depth",
               "remove the layers with the lowest Block Influence", True, ("layers",), paper="shortgpt"),
    MethodSpec("deeper-layers", "reference_impls.deeper_layers", "depth",
               "remove the window of layers with the smallest angular distance, then heal with LoRA", True,
               ("layers",), paper="deeper-layers"),
    MethodSpec("shortened-llama", "reference_impls.shortened_llama", "depth",
               "remove the blocks whose single removal raises calibration perplexity least (or Taylor+)", True,
               ("layers",), paper="shortened-llama"),
    MethodSpec("llm-streamline", "reference_impls.llm_streamline", "depth",
               "replace the most similar window of layers by one trained MLP", True, ("layers",),
               paper="llm-streamline"),
    MethodSpec("what-matters", "reference_impls.what_matters", "depth",
               "drop the attention sublayers (or MLPs, or blocks) that change the stream least", True, ("layers",),
               paper="what-matters"),
    MethodSpec("reassessing-layer-pruning", "reference_impls.reassessing_layer_pruning", "depth",
               "remove the last layers, then fine-tune the last three and the head", True, ("layers",),
               paper="reassessing-layer-pruning"),
    MethodSpec("deeper-look-depth", "reference_impls.deeper_look_depth", "depth",
               "drop sublayers by cosine or Shapley importance, optionally adding their mean update", True,
               ("layers",), paper="deeper-look-depth"),
    MethodSpec("heterogeneous-sublayers", "reference_impls.heterogeneous_sublayers", "depth",
               "remove sublayers progressively by loss impact per parameter to a parameter budget", True,
               paper="heterogeneous-sublayers"),
)  # fmt: skip


def _shortgpt_claim(r: Results) -> Verdict:
    randoms = r.labels("random-")
    low, high = r.ppl("lowest-bi"), r.ppl("highest-bi")
    rand = r.mean(randoms, r.ppl)
    acc_low, acc_high, acc_rand = r.acc("lowest-bi"), r.acc("highest-bi"), r.mean(randoms, r.acc)
    ppl_ok = finite(low, rand, high) and low < rand and low < high
    acc_ok = finite(acc_low, acc_rand, acc_high) and acc_low > acc_rand and acc_low > acc_high
    best = min((r.ppl(label) for label in randoms), default=math.nan)
    reason = (
        f"ppl lowest-BI {low:.2f} vs random mean {rand:.2f} (best draw {best:.2f}) and highest-BI {high:.2f}; "
        f"probe acc_norm lowest-BI {acc_low:.3f} vs random mean {acc_rand:.3f} and highest-BI {acc_high:.3f}"
    )
    return ppl_ok and acc_ok, reason


PAPERS: tuple[PaperSpec, ...] = (
    PaperSpec(
        paper="shortgpt",
        method="shortgpt",
        runs=(
            Run("lowest-bi", "shortgpt", {"selection": "lowest"}, speed=True),
            *(Run(f"random-{i}", "shortgpt", {"selection": "random", "seed": i}) for i in range(3)),
            Run("highest-bi", "shortgpt", {"selection": "highest"}),
        ),
        claim="Removing the {layers} layers with the lowest Block Influence gives lower perplexity and higher "
        "multiple-choice probe accuracy than removing {layers} random layers (mean of 3 draws) or the "
        "{layers} highest-BI layers (ShortGPT: low-BI layers are redundant)",
        check=_shortgpt_claim,
        # Block Influence from 8 x 512 calibration tokens; 2048 evaluation tokens and 200 probe items keep the
        # eight arms within the reproduction budget
        defaults={"layers": 6, "nsamples": 8, "eval_tokens": 2048, "probe_items": 200},
        metrics=("ppl", "probe"),
    ),
)


# ---- helpers shared by the depth claims ----------------------------------------------------------------
def _decode(r: Results, label: str) -> float:
    speed = r[label].speed
    return math.nan if speed is None else float(speed.decode_tokens_per_s)


def _kv(r: Results, label: str) -> float:
    speed = r[label].speed
    return math.nan if speed is None else float(speed.kv_cache_bytes)


def _params(r: Results, label: str) -> int:
    return int(r[label].size.params_decoder)


def _detail(r: Results, label: str, key: str) -> object:
    outcome = r.outcome(label)
    return None if outcome is None else outcome.details.get(key)


def _speed_text(r: Results, label: str) -> str:
    speed = r[label].speed
    if speed is None or speed.decode_speedup is None or speed.prefill_speedup is None:
        return ""
    return f"; {label}: prefill x{speed.prefill_speedup:.2f}, decode x{speed.decode_speedup:.2f} vs dense"


# ---- deeper-layers ----------------------------------------------------------------------------------------
WINDOWS = 25  # window runs: starts 0..24 cover every 6-window of a 30-layer model (larger starts are clamped)


def _deeper_layers_claim(r: Results) -> Verdict:
    angular, healed = r.ppl("angular"), r.ppl("angular-healed")
    by_start: dict[int, float] = {}
    for label in r.labels("window-"):
        start = _detail(r, label, "start")
        if isinstance(start, int):
            by_start.setdefault(start, r.ppl(label))
    start = _detail(r, "angular", "start")
    layers = r["dense"].size.layers
    if not by_start or not isinstance(start, int):
        return False, "no window runs or no angular window"
    median = statistics.median(by_start.values())
    first = by_start.get(0, math.nan)
    deep = 2 * start >= layers
    ok = (
        finite(angular, median, first, healed)
        and angular <= median
        and angular < first
        and deep
        and healed < angular
    )
    reason = (f"angular window starts at layer {start} of {layers} ({'second' if deep else 'first'} half): ppl "
              f"{angular:.2f} vs median {median:.2f} over {len(by_start)} contiguous windows and {first:.2f} for the "
              f"window at the start; after healing ppl {healed:.2f}; "
              f"probe acc_norm angular {r.acc('angular'):.3f}, healed {r.acc('angular-healed'):.3f}"
              + _speed_text(r, "angular"))  # fmt: skip
    return ok, reason


def _deeper_layers_figures(r: Results) -> list[Figure]:
    """Perplexity of every contiguous window (by start layer) and the angular distances that chose one."""
    from kb.results import Figure, Series

    by_start: dict[int, float] = {}
    for label in r.labels("window-"):
        start = _detail(r, label, "start")
        if isinstance(start, int):
            by_start.setdefault(start, r.ppl(label))
    figures = []
    if by_start:
        xs = sorted(by_start)
        figures.append(Figure(key="window-perplexity", title="Perplexity after removing each contiguous window",
                              x_label="first removed layer", y_label="perplexity", y_log=True,
                              series=[Series(label="window removed", x=[float(s) for s in xs],
                                             y=[by_start[s] for s in xs])]))  # fmt: skip
    distances = _detail(r, "angular", "angular_distance")
    if isinstance(distances, list) and distances:
        figures.append(Figure(key="angular-distance", title="Angular distance between a window's input and output",
                              x_label="first removed layer", y_label="angular distance (last token)",
                              series=[Series(label="angular distance", x=[float(i) for i in range(len(distances))],
                                             y=distances)]))  # fmt: skip
    return figures


# ---- shortened-llama --------------------------------------------------------------------------------------
def _shortened_llama_claim(r: Results) -> Verdict:
    ppl, taylor = r.ppl("ppl"), r.ppl("taylor+")
    randoms = r.labels("random-")
    rand = r.mean(randoms, r.ppl)
    depth_rate, width_rate = _decode(r, "ppl"), _decode(r, "width")
    p_depth, p_width = _params(r, "ppl"), _params(r, "width")
    same = abs(p_depth - p_width) <= 0.01 * p_depth
    quality = finite(ppl, taylor, rand) and ppl < taylor and ppl < rand
    faster = finite(depth_rate, width_rate) and depth_rate > 1.10 * width_rate
    reason = (f"ppl criterion {ppl:.2f} vs Taylor+ {taylor:.2f} and random mean {rand:.2f}; probe acc_norm "
              f"{r.acc('ppl'):.3f} vs {r.acc('taylor+'):.3f} and {r.mean(randoms, r.acc):.3f}; decode "
              f"{depth_rate:.1f} tok/s depth vs {width_rate:.1f} width (x{depth_rate / width_rate:.2f}, needs > x1.10) "
              f"at {p_depth / 1e6:.2f}M vs {p_width / 1e6:.2f}M decoder params"
              + ("" if same else " (parameter counts differ by more than 1%)") + _speed_text(r, "ppl"))  # fmt: skip
    return quality and faster and same, reason


# ---- llm-streamline ---------------------------------------------------------------------------------------
def _llm_streamline_claim(r: Results) -> Verdict:
    rep, plain = r.ppl("streamline"), r.ppl("plain")
    same = _detail(r, "streamline", "start") == _detail(r, "plain", "start")
    extra = _params(r, "streamline") - _params(r, "plain")
    ok = same and finite(rep, plain) and rep < plain
    reason = (f"window at layer {_detail(r, 'streamline', 'start')}: ppl with the trained MLP replacement {rep:.2f} vs "
              f"plain removal {plain:.2f}; probe acc_norm {r.acc('streamline'):.3f} vs {r.acc('plain'):.3f}; the "
              f"replacement adds {extra / 1e6:.2f}M decoder params ({_params(r, 'streamline') / 1e6:.2f}M vs "
              f"{_params(r, 'plain') / 1e6:.2f}M)" + _speed_text(r, "streamline"))  # fmt: skip
    return ok, reason


# ---- what-matters -----------------------------------------------------------------------------------------
def _what_matters_claim(r: Results) -> Verdict:
    a, m, b = r.acc("attention"), r.acc("mlp"), r.acc("block")
    pa, pm, pb = r.ppl("attention"), r.ppl("mlp"), r.ppl("block")
    outcome = r.outcome("attention")
    k = len(outcome.removed_sublayers) if outcome is not None else 0
    layers = r["dense"].size.layers
    ratio = _kv(r, "attention") / _kv(r, "dense")
    expected = 1 - k / layers
    kv_ok = finite(ratio) and abs(ratio - expected) <= 0.01
    ok = finite(a, m, b) and a > m > b and kv_ok
    reason = (f"probe acc_norm dropping {k} attention sublayers {a:.3f} > {k} MLP sublayers {m:.3f} > {k} blocks "
              f"{b:.3f}; ppl {pa:.2f} / {pm:.2f} / {pb:.2f}; KV cache x{ratio:.4f} of dense (expected "
              f"{expected:.4f})" + _speed_text(r, "attention") + _speed_text(r, "block"))  # fmt: skip
    return ok, reason


# ---- reassessing-layer-pruning --------------------------------------------------------------------------
LRS = (1e-4, 3e-4)


def _best(r: Results, prefix: str) -> tuple[float, str]:
    labels = r.labels(prefix)
    if not labels:
        return math.nan, ""
    return min((r.ppl(label), label) for label in labels)


def _reassessing_claim(r: Results) -> Verdict:
    partial, pl = _best(r, "reverse-partial-")
    lora, ll = _best(r, "reverse-lora-")
    bi, bl = _best(r, "bi-partial-")
    ok = finite(partial, lora, bi) and partial <= lora and partial <= 1.05 * bi
    reason = (f"last layers removed, best of lr {', '.join(f'{lr:g}' for lr in LRS)}: partial-layer fine-tuning ppl "
              f"{partial:.2f} ({pl}) vs LoRA {lora:.2f} ({ll}); reverse order {partial:.2f} vs Block Influence "
              f"{bi:.2f} ({bl}) after partial-layer fine-tuning (needs <= x1.05); probe acc_norm {r.acc(pl):.3f} "
              f"vs LoRA {r.acc(ll):.3f} and BI {r.acc(bl):.3f}" if pl and ll and bl else "runs missing")  # fmt: skip
    return ok, reason + (
        _speed_text(r, "reverse-partial-0.0001") if "reverse-partial-0.0001" in r.labels() else ""
    )


# ---- deeper-look-depth ------------------------------------------------------------------------------------
def _deeper_look_claim(r: Results) -> Verdict:
    a, m, mm = r.ppl("attention"), r.ppl("mlp"), r.ppl("mlp-mean")
    ok = finite(a, m, mm) and a < m and mm < m
    reason = (f"ppl dropping the attention sublayers {a:.2f} vs the MLP sublayers {m:.2f}; MLP drop with the mean "
              f"update {mm:.2f} vs plain {m:.2f}; probe acc_norm {r.acc('attention'):.3f} / {r.acc('mlp'):.3f} / "
              f"{r.acc('mlp-mean'):.3f}" + _speed_text(r, "attention"))  # fmt: skip
    return ok, reason


# ---- heterogeneous-sublayers ------------------------------------------------------------------------------
def _heterogeneous_claim(r: Results) -> Verdict:
    s, b = r.ppl("sublayers"), r.ppl("blocks")
    dense = _params(r, "dense")
    ps, pb = _params(r, "sublayers"), _params(r, "blocks")
    fair = ps <= pb * 1.01
    ok = fair and finite(s, b) and s < b
    reason = (f"ppl progressive sublayer removal {s:.2f} vs whole blocks {b:.2f}; decoder params removed "
              f"{1 - ps / dense:.1%} vs {1 - pb / dense:.1%}; probe acc_norm {r.acc('sublayers'):.3f} vs "
              f"{r.acc('blocks'):.3f}" + ("" if fair else " (the sublayer arm kept more parameters)")
              + _speed_text(r, "sublayers") + _speed_text(r, "blocks"))  # fmt: skip
    return ok, reason


PAPERS += (
    PaperSpec(
        paper="deeper-layers",
        method="deeper-layers",
        runs=(
            Run("angular", "deeper-layers", {"selection": "angular", "heal_steps": 0}, speed=True),
            Run("angular-healed", "deeper-layers", {"selection": "angular", "heal_steps": 20}),
            *(
                Run(
                    f"window-{s:02d}",
                    "deeper-layers",
                    {"selection": "window", "start": s, "heal_steps": 0},
                    probe=False,
                )  # the window sweep is judged by perplexity
                for s in range(WINDOWS)
            ),
            Run("deepest", "deeper-layers", {"selection": "deepest", "heal_steps": 0}, extra=True),
        ),
        claim="Removing the window of {layers} consecutive layers with the smallest angular distance (last token) "
        "gives a perplexity no higher than the median over every contiguous {layers}-layer window and lower than "
        "the window at the start, the window lies in the second half of the network, and 20 LoRA healing steps "
        "lower the perplexity further (Gromov et al.: deep layers are the most removable; healing repairs the loss)",
        check=_deeper_layers_claim,
        figures=_deeper_layers_figures,
        defaults={"layers": 6, "nsamples": 32, "seqlen": 128, "eval_tokens": 1536, "probe_items": 60},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="shortened-llama",
        method="shortened-llama",
        runs=(
            Run("ppl", "shortened-llama", {"criterion": "ppl"}, speed=True),
            Run("taylor+", "shortened-llama", {"criterion": "taylor+"}),
            *(Run(f"random-{i}", "shortened-llama", {"criterion": "random", "seed": i}) for i in range(3)),
            Run("width", "llm-pruner", {"attention": "none", "mlp": True, "ratio": 1 / 3}, speed=True),
            Run("magnitude", "shortened-llama", {"criterion": "magnitude"}, extra=True),
            Run("ppl-lora", "shortened-llama", {"criterion": "ppl", "recovery_steps": 20}, extra=True),
        ),
        claim="Removing {layers} blocks chosen by the perplexity criterion gives lower perplexity than Taylor+ and "
        "than {layers} random blocks (mean of 3 draws), and the depth-pruned model decodes more than 10% faster "
        "at batch 1 than a width-pruned model of the same parameter count (LLM-Pruner's MLP channels, a third "
        "of them in the middle layers) (Shortened LLaMA: depth pruning matches width pruning and runs faster)",
        check=_shortened_llama_claim,
        # the PPL criterion scores each single-block removal on 10 x 128 calibration tokens, as upstream does
        defaults={"layers": 6, "nsamples": 10, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="llm-streamline",
        method="llm-streamline",
        runs=(
            Run("streamline", "llm-streamline", {"replacement": "mlp"}, speed=True),
            Run("plain", "llm-streamline", {"replacement": "none"}),
            Run(
                "streamline-identity-init",
                "llm-streamline",
                {"replacement": "mlp", "init": "identity"},
                extra=True,
            ),
        ),
        claim="Replacing the most similar window of {layers} consecutive layers by one MLP trained for 200 steps to "
        "map the window's input hidden states to its output gives lower perplexity than removing the same window "
        "(LLM-Streamline: a lightweight replacement beats plain layer removal)",
        check=_llm_streamline_claim,
        defaults={"layers": 6, "nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 200},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="what-matters",
        method="what-matters",
        runs=(
            Run("attention", "what-matters", {"target": "attention"}, speed=True),
            Run("mlp", "what-matters", {"target": "mlp"}),
            Run("block", "what-matters", {"target": "block"}, speed=True),
            Run("joint", "what-matters", {"target": "joint"}, extra=True),
            Run(
                "attention-iterative",
                "what-matters",
                {"target": "attention", "mode": "iterative"},
                extra=True,
            ),
        ),
        claim="Dropping the {layers} most redundant attention sublayers (by input/output similarity) keeps a higher "
        "multiple-choice probe accuracy than dropping {layers} MLP sublayers, which keeps more than dropping "
        "{layers} blocks, and the KV cache shrinks by the share of layers whose attention is gone (What Matters: "
        "not all attention is needed)",
        check=_what_matters_claim,
        defaults={"layers": 6, "nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 200},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="reassessing-layer-pruning",
        method="reassessing-layer-pruning",
        runs=(
            *(
                Run(
                    f"reverse-partial-{lr:g}",
                    "reassessing-layer-pruning",
                    {"metric": "reverse", "recovery": "partial", "lr": lr},
                    speed=lr == LRS[0],
                )
                for lr in LRS
            ),
            *(
                Run(
                    f"reverse-lora-{lr:g}",
                    "reassessing-layer-pruning",
                    {"metric": "reverse", "recovery": "lora", "lr": lr},
                )
                for lr in LRS
            ),
            *(
                Run(
                    f"bi-partial-{lr:g}",
                    "reassessing-layer-pruning",
                    {"metric": "bi", "recovery": "partial", "lr": lr},
                )
                for lr in LRS
            ),
            Run(
                "reverse-none",
                "reassessing-layer-pruning",
                {"metric": "reverse", "recovery": "none"},
                extra=True,
            ),
            Run(
                "magnitude-l1-partial",
                "reassessing-layer-pruning",
                {"metric": "magnitude-l1", "recovery": "partial"},
                extra=True,
            ),
            Run(
                "taylor-partial",
                "reassessing-layer-pruning",
                {"metric": "taylor", "recovery": "partial"},
                extra=True,
            ),
        ),
        claim="After removing the last {layers} layers, fine-tuning only the last three remaining layers and the LM "
        "head gives a perplexity no higher than LoRA with the same steps and tokens (best of two learning rates "
        "each), and after that fine-tuning reverse-order removal is within 5% of removing the {layers} lowest "
        "Block Influence layers (Reassessing Layer Pruning: reverse order plus partial-layer fine-tuning)",
        check=_reassessing_claim,
        defaults={"layers": 8, "nsamples": 32, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="deeper-look-depth",
        method="deeper-look-depth",
        runs=(
            Run("attention", "deeper-look-depth", {"target": "attention"}, speed=True),
            Run("mlp", "deeper-look-depth", {"target": "mlp"}),
            Run("mlp-mean", "deeper-look-depth", {"target": "mlp", "emulate": "mean"}),
            Run(
                "attention-mean", "deeper-look-depth", {"target": "attention", "emulate": "mean"}, extra=True
            ),
            Run(
                "attention-shapley",
                "deeper-look-depth",
                {"target": "attention", "metric": "shapley"},
                extra=True,
            ),
        ),
        claim="Dropping the {layers} attention sublayers with the highest input/output cosine similarity gives lower "
        "perplexity than dropping {layers} MLP sublayers chosen the same way, and replacing each dropped MLP by "
        "its mean calibration update lowers the perplexity of the MLP drop (A Deeper Look: attention is more "
        "prunable; emulated updates help)",
        check=_deeper_look_claim,
        defaults={"layers": 6, "nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 200},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="heterogeneous-sublayers",
        method="heterogeneous-sublayers",
        runs=(
            Run(
                "sublayers",
                "heterogeneous-sublayers",
                {"unit": "sublayer", "per_round": 8, "examples": 2},
                speed=True,
            ),
            Run("blocks", "heterogeneous-sublayers", {"unit": "block"}, speed=True),
        ),
        claim="Removing attention and MLP sublayers progressively by normalized relative impact (loss change per "
        "parameter, re-scored every 8 removals) until 20% of the decoder parameters are gone gives lower "
        "perplexity than removing whole blocks (lowest Block Influence) to the same parameter count "
        "(Heterogeneous Sublayers, reconstructed from the abstract)",
        check=_heterogeneous_claim,
        defaults={"nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 200},
        metrics=("ppl", "probe"),
    ),
)
