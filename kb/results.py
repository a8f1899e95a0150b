"""The result record of `kb reproduce`, shared by its writer (the harness) and its readers (the site).

One pydantic model, torch-free: `reference_impls.harness` builds it and writes it as JSON, the site builder
validates the committed `reproductions/<paper>.json` files with the same classes, so a field renamed on
one side fails on the other instead of silently dropping a number.

A record holds the dense baseline and every labelled run of the paper's headline comparison. Each run
says what its method changed (`Outcome`) and what was measured (`Metrics`); metrics that do not apply to a
run (speed for unstructured sparsity, probe accuracy when the paper is judged on perplexity) are `None`.
JSON has no inf/nan: non-finite floats are written as the strings "inf"/"nan" and read back as floats.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

SCHEMA_VERSION: Final = 3

# What a method does to a model; decides which invariants the harness checks after it ran.
Kind = Literal["weight-sparsity", "allocation", "depth", "width", "kv-cache", "training", "stand-in"]


def _read_number(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in {"inf", "-inf", "nan", "infinity", "-infinity"}:
        return float(value)
    return value


def _write_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


Number = Annotated[float, BeforeValidator(_read_number), PlainSerializer(_write_number)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Outcome(_Strict):
    """What a method changed in the model, as reported by the method itself (checked by the harness)."""

    kind: Kind
    layer_sparsity: list[Number] | None = None  # allocation: the ratio each decoder layer was pruned to
    removed_layers: list[int] = []  # depth: indices in the *dense* model
    removed_sublayers: list[str] = []  # e.g. "3.attn", "7.mlp" (dense layer index)
    shapes: dict[str, list[int]] = {}  # width: new shapes of changed tensors
    cache_policy: dict[str, Any] | None = None  # kv-cache: the policy and its budget
    details: dict[str, Any] = {}  # method-specific evidence (scores, ratios) for the reader


class Size(_Strict):
    params_total: int = Field(ge=0)  # unique parameters (tied embeddings counted once)
    params_non_embedding: int = Field(ge=0)  # without input embeddings and LM head
    params_decoder: int = Field(ge=0)  # parameters inside the decoder layers
    weight_bytes: int = Field(ge=0)  # bytes of the weights a save would write
    decoder_sparsity: Number  # fraction of exact zeros in decoder linear weights
    layers: int = Field(ge=0)


class Probe(_Strict):
    task: str
    items: int = Field(ge=1)
    choices: int = Field(ge=2)
    acc: Number  # argmax of summed log-likelihood
    acc_norm: Number  # argmax of log-likelihood per byte of the choice (lm-evaluation-harness's acc_norm)
    hits_norm: list[Literal[0, 1]] = []  # item by item: 1 where acc_norm picked the true choice


class Speed(_Strict):
    """CPU timings in the same process and thread count as the dense baseline; medians of `repeats`."""

    prompt_tokens: int
    decode_tokens: int
    repeats: int
    threads: int
    prefill_ms: Number
    decode_tokens_per_s: Number
    kv_cache_bytes: int  # bytes held by the KV cache after prompt + decode
    prefill_speedup: Number | None = (
        None  # dense prefill time / this prefill time (geometric mean of the ratios)
    )
    decode_speedup: Number | None = (
        None  # this decode rate / dense decode rate (geometric mean of the ratios)
    )
    # Repeat by repeat, timed alternately with the dense model in the same process (dense, this, this, dense, ...):
    prefill_ratios: list[Number] = []  # dense prefill time / this prefill time
    decode_ratios: list[Number] = []  # this decode rate / dense decode rate


class CacheEval(_Strict):
    """Long-context evaluation under a KV-cache policy (`policy` "full" = no eviction, the dense baseline).

    Windows of the evaluation stream are split into a prompt and a continuation; quality is the teacher-forced
    perplexity of the continuation tokens only, with the cache the policy would hold at each step (simulated
    mask). Memory and speed come from real eviction while generating after the first window's prompt."""

    policy: str
    windows: int = Field(ge=1)
    prompt_tokens: int = Field(ge=1)
    continuation_tokens: int = Field(ge=1)
    budget_tokens: int | None = None  # cache entries per layer and KV head between steps; None = unbounded
    recent_tokens: int | None = None  # of which the newest positions (never evicted)
    ppl: Number  # exp(mean NLL of the continuation tokens)
    nll: Number  # mean NLL of the continuation tokens (nats)
    window_nll: list[Number] = []  # window by window: mean NLL of its continuation tokens
    generate_tokens: int = Field(ge=0)  # greedy decoding steps after the prompt, with real eviction
    cache_bytes_prompt: int = Field(ge=0)  # KV cache bytes after the prompt (after the cut to the budget)
    cache_bytes_end: int = Field(ge=0)  # KV cache bytes after the last decoding step
    decode_tokens_per_s: Number  # median over the timed runs
    decode_speedup: Number | None = None  # this decode rate / the full cache's, same process and threads
    threads: int = Field(ge=1)


class Metrics(_Strict):
    ppl: Number | None = None
    window_nll: list[Number] = []  # perplexity window by window: mean NLL of its predicted tokens (nats)
    probe: Probe | None = None
    size: Size
    speed: Speed | None = None
    cache: CacheEval | None = None  # kv-cache papers: the long-context evaluation of the cache policy


class RunResult(_Strict):
    label: str
    method: str | None = None  # None for the dense baseline
    kind: Kind | Literal["dense"]
    config: dict[str, Any] = {}  # the method's validated configuration
    outcome: Outcome | None = None
    metrics: Metrics
    prune_seconds: Number = 0.0
    eval_seconds: Number = 0.0


VerdictState = Literal["holds", "does not hold", "inconclusive"]


class Comparison(_Strict):
    """One condition of a claim judged with an interval (`reference_impls.claims._kit.compare`)."""

    verdict: VerdictState
    scale: Literal["ratio", "difference"]  # subject / bound (against 1), or subject - bound (against 0)
    estimate: Number
    low: Number  # the bootstrap interval (equal to the estimate when exact)
    high: Number
    units: str = ""  # what was resampled, e.g. "8 windows x 3 draws"; "" when exact


class ClaimPart(_Strict):
    text: str
    verdict: VerdictState
    comparisons: list[Comparison] = []


class PastVerdict(_Strict):
    """A verdict this result replaced, kept so a reader sees how it moved and why."""

    verdict: VerdictState
    reason: str = ""
    produced: dt.date | None = None
    code_hash: str | None = None


class Claim(_Strict):
    statement: str
    verdict: VerdictState  # holds / does not hold: every interval on one side; inconclusive otherwise
    reason: str = ""  # the numbers the verdict rests on, each comparison with its estimate and interval
    parts: list[ClaimPart] = []  # the judged parts in order
    level: Number = 0.9  # of the bootstrap intervals
    bootstrap_reps: int = Field(default=2000, ge=0)
    bootstrap_seed: int = 0
    draws: int = Field(default=1, ge=1)  # calibration draws (K) the intervals combine
    history: list[PastVerdict] = []  # earlier committed verdicts, newest last

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"


class TokenSplit(_Strict):
    samples: int | None = None
    windows: int | None = None
    seqlen: int
    tokens: int = Field(ge=0)
    stream_tokens: int = Field(ge=0)


class DatasetInfo(_Strict):
    corpus: str
    calibration: TokenSplit
    evaluation: TokenSplit

    def __str__(self) -> str:
        return (f"{self.corpus} (calibration {self.calibration.tokens:,} tokens, "
                f"evaluation {self.evaluation.tokens:,} tokens)")  # fmt: skip


class Series(_Strict):
    label: str
    x: list[Number]
    y: list[Number]

    @model_validator(mode="after")
    def _same_length(self) -> Series:
        if len(self.x) != len(self.y):
            raise ValueError(f"series {self.label!r}: {len(self.x)} x values but {len(self.y)} y values")
        return self


class Figure(_Strict):
    """A paper-level plot the site renders (SVG plus a data table), e.g. a sparsity sweep or loss curves."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")  # file-name slug, unique within the reproduction
    title: str
    x_label: str
    y_label: str
    series: list[Series] = Field(min_length=1)
    x_log: bool = False
    y_log: bool = False


class CodeVersion(_Strict):
    """The code a result was produced with (`kb.codehash`): sha256 of each file it depends on, and one digest
    over them. `kb build --check` recomputes it; a mismatch (or a result without one) is stale."""

    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    files: dict[str, str] = {}  # path relative to the checkout -> sha256 of its bytes ("-": missing)


class Fingerprint(_Strict):
    """What the code did, not what it says (`reference_impls.harness.fingerprint`): a digest of the same
    comparison on a small random model, taken at the code hash `code_hash`. A result whose code hash moved is
    still fresh when today's fingerprint (recorded for today's hash) equals its own."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    code_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    version: int = Field(ge=1)


class Machine(_Strict):
    """Where a result was produced: speed numbers are this machine's; quality numbers may move in the last digits
    with the vector unit and the BLAS library, which are recorded so such a move can be traced."""

    system: str  # e.g. "Linux 6.1 x86_64"
    cpu: str  # processor model, as the system names it ("" when unknown)
    cpu_flags: list[str] = []  # the vector extensions present: avx2, avx512f, avx512_bf16, amx_tile, ...
    # the kernels torch dispatches to (torch.backends.cpu.get_cpu_capability: AVX2, AVX512, ...)
    torch_cpu: str = ""
    blas: str = ""  # the BLAS/LAPACK torch was built with (from torch.__config__.show())
    cores: int = Field(ge=1)  # cores the process could run on
    threads: int = Field(ge=1)  # torch threads used
    device: str  # "cpu", "cuda:0", ...


def find_run(runs: list[RunResult], label: str) -> RunResult:
    for r in runs:
        if r.label == label:
            return r
    raise KeyError(label)


class Draw(_Strict):
    """A further calibration draw of the whole comparison: every arm again, calibrated on samples drawn with
    `seed` (the first draw is `Reproduction.runs`)."""

    seed: int
    runs: list[RunResult] = Field(min_length=1)

    def run(self, label: str) -> RunResult:
        return find_run(self.runs, label)


class Reproduction(_Strict):
    schema_version: Literal[3] = SCHEMA_VERSION
    paper: str
    model: str
    dataset: DatasetInfo
    config: dict[str, Any] = {}  # every option the run depended on
    versions: dict[str, str] = {}
    total_seconds: Number | None = None
    runs: list[RunResult] = Field(min_length=1)  # the first calibration draw (seed: config["seed"])
    draws: list[Draw] = []  # the further calibration draws a claim near its bound runs (K - 1 of them)
    claim: Claim
    figures: list[Figure] = []  # paper-level plots made from the runs (PaperSpec.figures)
    code: CodeVersion | None = None  # None: written before results carried it (always stale)
    fingerprint: Fingerprint | None = None  # behaviour at `code` (None: not taken yet)
    produced: dt.date | None = None  # the day (UTC) the run finished; None in results written before
    machine: Machine | None = None

    def run(self, label: str) -> RunResult:
        return find_run(self.runs, label)


SweepAxis = Literal["sparsity", "layers", "kv_budget", "params"]


class Sweep(_Strict):
    """`kb sweep`: several methods, each at every value of one target (sparsity, layers removed, KV budget or
    the share of decoder parameters a width method removes), all from one dense model measured once. Runs are
    labelled `<method>@<value>`; the value is also in each run's `config` under the axis name."""

    schema_version: Literal[3] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")  # the file name under reproductions/sweeps/
    model: str
    axis: SweepAxis
    values: list[Number] = Field(min_length=1)
    methods: list[str] = Field(min_length=1)
    dataset: DatasetInfo
    config: dict[str, Any] = {}
    versions: dict[str, str] = {}
    total_seconds: Number | None = None
    runs: list[RunResult] = Field(min_length=1)
    code: CodeVersion | None = None
    fingerprint: Fingerprint | None = None
    produced: dt.date | None = None
    machine: Machine | None = None

    def points(self, method: str) -> list[tuple[float, RunResult]]:
        """(target value, run) of one method, in the order of `values`."""
        return [(float(r.config[self.axis]), r) for r in self.runs if r.method == method]
