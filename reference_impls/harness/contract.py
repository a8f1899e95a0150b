"""The method contract: how the harness calls a method, what a method must do, and the invariants it checks.

Every method module exposes
    Config                                   a frozen pydantic model (extra keys forbidden)
    prune(model, calib, config, ctx) -> Outcome
and a kv-cache method also
    policy(config) -> eviction.CachePolicy
`prune` changes `model` in place (weights zeroed, layers removed, matrices shrunk; a kv-cache method changes
nothing) and returns an `Outcome` saying what it changed. What a method must do:

1. Inputs. `calib` and `ctx` are always passed, so a method never defaults `ctx` and never tests `calib` for
   None. The harness (`runner.apply_method`, through `prune_inputs`) passes a `Context` to every method and the
   calibration tokens, a (samples, seq) tensor of token ids, to every method whose `MethodSpec` says
   `needs_calibration`; a method that needs no data gets `calib=None` (its signature says
   `torch.Tensor | None`). A caller without calibration for a method that needs it gets a one-line
   `ContractError` from `prune_inputs`; tests that call `prune` directly pass both. `ctx` carries what is not
   the method's to choose: the calibration chunk size, a progress callback, the seed, a log, and statistics of
   the dense model shared by sibling runs (`Context.dense_statistic`).
2. Config. Every field has a default (the paper's setting), so `Config()` is a run. The command-line targets a
   method declares in `MethodSpec.targets` are fields of the same name, and the harness holds the outcome to
   them: `sparsity` (decoder sparsity within rounding of the target) and `pattern` (N:M) for weight-sparsity,
   `sparsity` for allocation (the per-layer ratios average it) and stand-in; `layers` for depth (whole layers
   plus sublayers removed, read with `primitives.depth.layers_to_remove` / `modules_to_drop`); `kv_budget`
   for kv-cache; `params` for width (the share of the decoder's parameters removed: a `params: float | None =
   None` field, None keeping the method's own size options; when set, the method derives those options from it
   with `primitives.sizing.share_for_params`, and the decoder's parameter count must fall by that share within
   `PARAMS_TOLERANCE`). Training stand-ins declare no target. A target's bounds are not the method's to check:
   `registry.check_target` (one table, `registry.specs.TARGET_BOUNDS`) checks every value before the config is
   built, whichever way it came in.
3. Determinism. The same model, calibration, config and `ctx.seed` give bit-identical weights and an equal
   outcome: every random choice is seeded from the config or `ctx.seed`. The contract test runs every
   registered method twice and compares both.
4. Outcome. Of the method's registered kind, true to the model (`check_outcome` compares it with the model
   before and after, `ModelFacts`). `details` (method-specific evidence) and `cache_policy` must be plain JSON,
   since they are written into the result as they are: dicts with str keys, lists, str, int, finite float,
   bool, None; no tensor, numpy scalar, tuple, set, or int key (`check_details_json`).
5. KV-cache. The policy never travels on the model or the outcome: `prune` returns
   `eviction.policy_outcome(policy(config))` (its description); the harness builds the object with the module's
   `policy(config)` (`cache_policy`, which checks that the outcome describes it), `apply_method` returns it, and
   it is passed to the cache evaluation as an argument (`metrics.measure(cache_policy=...)`).
6. Around the residual stream. A method that trains or edits the LM head alone unties a tied head first with
   `primitives.norms.untie_head` (slicing hidden channels with `groups.compact` needs no untying: the shared
   tensor is sliced once, for both roles). After cutting hidden channels every RMSNorm averages over fewer
   channels: a method that wants the compact model to compute what its masked reference did rescales them
   with `primitives.norms.rescale_rmsnorm` (the L0 masks go the other way, `norms.kept_channel_scale`, so
   slicing changes nothing); a method that retrains the compact model as it is (Minitron) says so in its
   docstring. Either way the tensors must stay what the config describes (`structure_problems`).

After every run the harness compares the model before and after (`ModelFacts`) with the outcome and the
method's kind (`check_outcome`), so a method that silently did nothing, or changed something other than
what it claims, fails loudly instead of producing a table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import torch
from pydantic import BaseModel
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .eviction import CachePolicy
from .layerwise import decoder_layers, iter_decoder_linears

Progress = Callable[[int, int], None]

# How far a width method's outcome may miss its `params` target (absolute, as a share of the decoder's
# parameters): whole KV groups and channels are removed, so a small model cannot hit every share exactly.
PARAMS_TOLERANCE = 0.05
_PARAMS_SLACK: ContextVar[float] = ContextVar("kb_params_slack", default=PARAMS_TOLERANCE)


def params_tolerance() -> float:
    """How far a `params` target may be missed here and now: `PARAMS_TOLERANCE`, unless `any_size()` is open."""
    return _PARAMS_SLACK.get()


@contextmanager
def any_size() -> Iterator[None]:
    """While open, a width method takes the size nearest its `params` target however far it is: the behavioural
    fingerprint's small model (hidden 64, two KV heads) cannot reach every share tiny-llama can, and a fingerprint
    digests what the code does, not whether the target fits that model."""
    token = _PARAMS_SLACK.set(math.inf)
    try:
        yield
    finally:
        _PARAMS_SLACK.reset(token)


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
    # Outside the decoder, and what the config says: a saved copy is rebuilt from the config, so every size
    # it states must be the size of the real tensors (see `structure_problems`).
    embedding: tuple[int, ...] = ()  # input embedding weight shape
    head: tuple[int, ...] | None = None  # LM head weight shape; None when the model has no output embedding
    tied: bool = False  # the head's weight is the embedding's tensor
    head_bias: tuple[int, ...] | None = None
    final_norm: tuple[int, ...] | None = None  # the norm before the head (LLaMA-style `model.norm`)
    config: dict[str, Any] = field(default_factory=dict)  # see `_config_facts`

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def _config_facts(config: Any, layers: int) -> dict[str, Any]:
    """The config fields a reload builds tensors from: hidden and vocabulary size, tying, the intermediate
    size of every layer (per-layer widths when the config lists them), LLaMA's bias flags (None for
    other architectures, whose bias layout is fixed by the class), and the output-bias flags of any
    architecture (`pruned_llama.OUTPUT_BIASES`: a bias on o_proj / down_proj alone, which a method such as
    FLAP announces when it adds one)."""
    from .pruned_llama import MODEL_TYPE, OUTPUT_BIASES  # transformers is loaded by now: a model exists

    def number(name: str) -> int | None:
        value = getattr(config, name, None)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    per_layer = getattr(config, "layer_intermediate_sizes", None)
    inter = number("intermediate_size")
    intermediate = [int(v) for v in per_layer] if per_layer else [inter] * layers
    llama = getattr(config, "model_type", None) in ("llama", MODEL_TYPE)
    flags = {k: bool(getattr(config, k, False)) if llama else None for k in ("attention_bias", "mlp_bias")}
    flags.update({k: bool(getattr(config, k, False)) for k in OUTPUT_BIASES})
    tie = getattr(config, "tie_word_embeddings", None)
    return {
        "hidden_size": number("hidden_size"), "vocab_size": number("vocab_size"),
        "tie_word_embeddings": None if tie is None else bool(tie), "intermediate": intermediate, **flags,
    }  # fmt: skip


def _outer_facts(model: nn.Module) -> dict[str, Any]:
    """Embedding, head (and whether it is tied) and final norm: the tensors around the decoder."""

    def embeddings(getter: str) -> nn.Module | None:
        try:
            found = getattr(model, getter)()
        except (AttributeError, NotImplementedError):
            return None
        return found if isinstance(found, nn.Module) else None

    emb, head = embeddings("get_input_embeddings"), embeddings("get_output_embeddings")
    emb_w = getattr(emb, "weight", None)
    head_w, head_b = getattr(head, "weight", None), getattr(head, "bias", None)
    norm = getattr(getattr(getattr(model, "model", None), "norm", None), "weight", None)
    return {
        "embedding": tuple(emb_w.shape) if emb_w is not None else (),
        "head": tuple(head_w.shape) if head_w is not None else None,
        "tied": head_w is not None and head_w is emb_w,
        "head_bias": tuple(head_b.shape) if head_b is not None else None,
        "final_norm": tuple(norm.shape) if isinstance(norm, torch.Tensor) else None,
    }


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
                      total, skipped, **_outer_facts(model),
                      config=_config_facts(model.config, len(layers)))  # fmt: skip


# LLaMA-style projection names: which side of the weight is the residual stream (hidden_size), and which config
# flag decides whether the projection has a bias.
_READS_HIDDEN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
_WRITES_HIDDEN = ("self_attn.o_proj", "mlp.down_proj")
_HIDDEN_VECTORS = ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.bias", "mlp.bias")
_BIAS_FLAG = {
    **dict.fromkeys(
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"), "attention_bias"
    ),
    **dict.fromkeys(("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"), "mlp_bias"),
}
# The config flags that give one output projection a bias of its own (`pruned_llama.OUTPUT_BIASES`).
_OUTPUT_BIAS_FLAG = {"self_attn.o_proj": "o_proj_bias", "mlp.down_proj": "down_proj_bias"}


def structure_problems(facts: ModelFacts) -> list[str]:
    """Every way the tensors disagree with the config (which is all a saved copy is rebuilt from), or a bias
    disagrees with its weight: embedding and head shapes against vocab_size x hidden_size, head tying against
    tie_word_embeddings, hidden_size against every tensor that reads or writes the residual stream,
    intermediate_size (per layer) against the real MLP width, every bias against its weight's output size and,
    for LLaMA, against the attention_bias / mlp_bias flags. LLaMA-style names are checked by name; other
    architectures get the embedding, head and bias checks. Empty when consistent."""
    c, problems = facts.config, []
    hidden, vocab = c.get("hidden_size"), c.get("vocab_size")
    want = (vocab, hidden)
    if facts.embedding and hidden is not None and vocab is not None and facts.embedding != want:
        problems.append(f"the embedding is {list(facts.embedding)}, the config says vocab_size x hidden_size = "
                        f"{list(want)}")  # fmt: skip
    if facts.head is not None and hidden is not None and vocab is not None and facts.head != want:
        problems.append(f"the LM head is {list(facts.head)}, the config says {list(want)}")
    if facts.head_bias is not None and facts.head is not None and facts.head_bias != facts.head[:1]:
        problems.append(f"the LM head's bias is {list(facts.head_bias)}, its weight has {facts.head[0]} rows")
    tie = c.get("tie_word_embeddings")
    if facts.head is not None and tie is not None and facts.tied != tie:
        problems.append(f"the LM head is {'' if facts.tied else 'not '}tied to the embedding, the config says "
                        f"tie_word_embeddings={tie}")  # fmt: skip
    if facts.final_norm is not None and hidden is not None and facts.final_norm != (hidden,):
        problems.append(f"the final norm is {list(facts.final_norm)}, hidden_size is {hidden}")
    inter = c.get("intermediate") or []
    for name, shape in facts.shapes.items():
        layer, _, rest = name.partition(".")
        if not layer.isdigit():
            continue
        proj = rest.removesuffix(".weight").removesuffix(".bias")
        if hidden is not None and (
            (rest.endswith(".weight") and len(shape) == 2
             and ((proj in _READS_HIDDEN and shape[1] != hidden) or (proj in _WRITES_HIDDEN and shape[0] != hidden)))
            or (rest in _HIDDEN_VECTORS and shape != (hidden,))
        ):  # fmt: skip
            problems.append(f"layer {layer}: {rest} is {list(shape)}, hidden_size is {hidden}")
        if rest in ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight") and len(shape) == 2:
            width = shape[1] if proj == "mlp.down_proj" else shape[0]
            stated = inter[int(layer)] if int(layer) < len(inter) else None
            if stated is not None and width != stated:
                problems.append(f"layer {layer}: {rest} is {list(shape)}, the config's intermediate size for this "
                                f"layer is {stated}")  # fmt: skip
        if rest.endswith(".bias") and len(weight := facts.shapes.get(f"{layer}.{proj}.weight", ())) == 2:
            if shape != weight[:1]:
                problems.append(
                    f"layer {layer}: {rest} is {list(shape)}, its weight has {weight[0]} output rows"
                )
        if (
            rest.endswith(".weight")
            and len(shape) == 2
            and c.get(flag := _BIAS_FLAG.get(proj, "")) is not None
        ):
            has = f"{layer}.{proj}.bias" in facts.shapes
            own = _OUTPUT_BIAS_FLAG.get(proj, "")
            said = own if c.get(own) and not c[flag] else flag  # the flag that gives this projection its bias
            if has != c[said]:
                problems.append(f"layer {layer}: {proj} {'has' if has else 'lacks'} a bias, the config says "
                                f"{said}={c[said]}")  # fmt: skip
    return problems


def _bias_layout(facts: ModelFacts) -> set[tuple[str, bool]]:
    """(projection name without its layer index, has a bias) for every 2-D decoder weight."""
    return {(rest.removesuffix(".weight"), f"{layer}.{rest.removesuffix('.weight')}.bias" in facts.shapes)
            for name, shape in facts.shapes.items() if len(shape) == 2 and name.endswith(".weight")
            for layer, _, rest in [name.partition(".")]}  # fmt: skip


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
    check_details_json(method, outcome)
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
        params = target.get("params")
        if params is not None:
            share = 1 - sum(math.prod(s) for s in after.shapes.values()) / sum(
                math.prod(s) for s in before.shapes.values()
            )
            if abs(share - params) > params_tolerance():
                _fail(method, f"removed {share:.4f} of the decoder's parameters, target {params}")
    if kind == "kv-cache" and outcome.cache_policy is None:
        _fail(method, "a kv-cache method must report its cache policy")
    if kind == "kv-cache" and after.zeros != before.zeros:
        _fail(method, "a kv-cache method changed decoder weights")
    # every kind: what the method leaves must still be described by the config (problems the model came in
    # with are not the method's), and it may not add or drop a projection bias, except to add the output-
    # projection biases its config now announces (`pruned_llama.OUTPUT_BIASES`: FLAP's bias compensation)
    known = set(structure_problems(before))
    new = [p for p in structure_problems(after) if p not in known]
    if new:
        more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
        _fail(method, f"the model no longer matches its config: {new[0]}{more}")
    announced = {proj for proj, flag in _OUTPUT_BIAS_FLAG.items() if after.config.get(flag)}
    changed = sorted(
        (proj, has)
        for proj, has in _bias_layout(after) - _bias_layout(before)
        if not (has and proj in announced)
    )
    if changed:
        proj, has = changed[0]
        _fail(method, f"{'added a bias to' if has else 'removed the bias of'} {proj}, which the model "
              f"{'did not have' if has else 'had'} before")  # fmt: skip


# ---- inputs, free-form outcome fields, cache policies ----------------------------------------------------
def prune_inputs(
    method: str, needs_calibration: bool, calib: torch.Tensor | None, ctx: object
) -> torch.Tensor | None:
    """The `calib` a method's `prune` receives: the calibration tokens when it declares it needs them
    (`MethodSpec.needs_calibration`), else None. The one place the rule is enforced: a method that needs data and
    is given none, or a missing `Context`, is a one-line `ContractError` before the method runs."""
    if not isinstance(ctx, Context):
        raise ContractError(f"method {method} must be given a Context, got {type(ctx).__name__}")
    if not needs_calibration:
        return None
    if calib is None:
        raise ContractError(f"method {method} needs calibration tokens (its MethodSpec says needs_calibration) "
                            "and was given none")  # fmt: skip
    return calib


def _not_json(value: object, path: str) -> str | None:
    """Why `value` would not survive a JSON round trip unchanged (None: it would). Types are exact: a subclass
    (a numpy float, an enum) is not plain JSON either."""
    if value is None or type(value) in (str, bool, int):
        return None
    if isinstance(value, float) and type(value) is float:
        finite = math.isfinite(value)
        return None if finite else f"{path} is {value}: JSON has no inf or nan (it would be written as null)"
    if isinstance(value, dict) and type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{path} has the key {key!r} ({type(key).__name__}); JSON keys are strings"
            problem = _not_json(item, f"{path}[{key!r}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, list) and type(value) is list:
        for i, item in enumerate(value):
            problem = _not_json(item, f"{path}[{i}]")
            if problem is not None:
                return problem
        return None
    return f"{path} is a {type(value).__name__}, not plain JSON (dict, list, str, int, float, bool or None)"


def check_details_json(method: str, outcome: Outcome) -> None:
    """Raise `ContractError` unless the outcome's free-form fields (`details`, `cache_policy`) are plain JSON, so
    that the result is written as the method reported it, instead of failing (a tensor) or changing (a tuple, an
    int key, an inf) only when it is saved."""
    for name, value in (("details", outcome.details), ("cache_policy", outcome.cache_policy)):
        problem = None if value is None else _not_json(value, name)
        if problem is not None:
            _fail(method, f"outcome {problem}")


def cache_policy(method: str, module: Any, config: BaseModel, outcome: Outcome) -> CachePolicy:
    """The cache policy of a kv-cache method, as the harness passes it to the cache evaluation: built by the
    module's `policy(config)`, the one place it comes from; the outcome `prune` returned must describe it."""
    build = getattr(module, "policy", None)
    if not callable(build):
        _fail(method, "a kv-cache method module must expose policy(config) -> CachePolicy")
    policy = build(config)
    if not isinstance(policy, CachePolicy):
        _fail(method, f"policy(config) returned {type(policy).__name__}, not a CachePolicy")
    if outcome.cache_policy != policy.describe():
        _fail(method, "the outcome's cache_policy does not describe the policy that policy(config) builds")
    return policy
