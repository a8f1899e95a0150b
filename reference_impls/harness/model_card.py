"""The model card (`README.md`) and Hub evaluation results (`.eval_results/*.yaml`) of a `kb prune --save` directory.

`write_card` runs after the save is published and reloaded: the card says which method and paper produced the
model, from what base model, what shrank and what did not (parameters, layers, zeros), the exact command and
the code hash of the method's files, so anyone can re-create the directory. Masked (sparse) weights are
stored dense: the card claims no speed-up or smaller file for them, and says why.

`add_evaluation` adds `kb eval` scores: a table in the card (between two markers, replaced on each call) and,
for every task whose data is a Hub dataset, one `.eval_results/<task>.yaml` in the Hub's format (written with
`huggingface_hub`'s own `EvalResultEntry`, so the layout follows the library that defines it). A task on local
data (such as `kb_smoke`) has no Hub dataset id: its score goes in the card only, and the card says so.

Torch-free: it writes text from numbers the caller measured. Every file is written atomically.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kb.errors import KBError
from kb.eval_record import EvalRecord, TaskScore
from kb.fsutil import write_text_atomic

CARD = "README.md"
EVAL_DIR = ".eval_results"
MARK = "kb-pruned-model-card"  # in the card's metadata: a card this module wrote (and may update)
EVAL_BEGIN, EVAL_END = "<!-- kb-eval:begin -->", "<!-- kb-eval:end -->"
TINY_LLAMA_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # tiny-llama: its Q4_1 GGUF, dequantised
# `datasets` builders that read local files: a task on them has no Hub dataset id to report under
LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "xml", "sql"})
# lm-eval's headline metric per task family: normalised accuracy where papers quote it, else accuracy
PREFERRED_METRICS = ("acc_norm", "acc", "exact_match", "f1", "mcc")
SPARSE_NOTE = (
    "The pruned weights are zeros stored in dense tensors: the files are as large as the base model's and "
    "inference is no faster without a sparse kernel. No speed-up is claimed. (2:4 sparse checkpoints no longer "
    "have a serving path in vLLM: vllm-project/vllm#36799.)"
)
MERGED_NOTE = (
    "Each matrix was fitted as a sparse part plus a low-rank part, then stored merged as one dense weight: the files "
    "are as large as the base model's and inference is no faster. No speed-up is claimed; the size above counts "
    "the decomposition's own parameters."
)
REMOTE_NOTE = (
    "This model keeps a structure a stock LLaMA cannot express (skipped sublayers, per-layer widths or biases on "
    "o_proj / down_proj alone); its modeling file ships in this directory."
)


def base_model(name: str, config: Mapping[str, Any] | None = None) -> str | None:
    """The Hub id the pruned model derives from, or None (a random model, or a local directory of unknown origin)."""
    if name == "tiny-llama":
        return TINY_LLAMA_BASE
    if name == "random-llama":
        return None
    if not Path(name).expanduser().exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return name
    origin = (config or {}).get("_name_or_path")
    if isinstance(origin, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", origin) and not Path(origin).exists():
        return origin
    return None


def _paper(paper_id: str | None, root: Path) -> dict[str, str] | None:
    """Title and link of the paper's record (`kb.store.load_record`, validated), or None."""
    from kb.store import Record, load_record

    if paper_id is None:
        return None
    record, _problems = load_record(root / "papers" / f"{paper_id}.yaml", root)
    if not isinstance(record, Record):
        return None
    paper = record.paper
    arxiv = paper.identifiers.arxiv or ""
    url = f"https://arxiv.org/abs/{arxiv}" if arxiv else str(paper.links.paper or "")
    return {"id": paper_id, "title": paper.title, "arxiv": arxiv, "url": url}


def _millions(n: int | float) -> str:
    return f"{n / 1e6:.2f}M"


def shrink_lines(
    kind: str, before: Mapping[str, Any] | None, after: Mapping[str, Any], kept_share: float | None = None
) -> list[str]:
    """What shrank and what did not, from `metrics.Size` dumps (before may be missing: the low-memory path);
    `kept_share`: the share of the linear weights' parameters a sparse + low-rank fit keeps (OATS), if any."""
    lines = []
    if before is not None:
        total = f"{_millions(before['params_total'])} -> {_millions(after['params_total'])}"
        decoder = f"{_millions(before['params_decoder'])} -> {_millions(after['params_decoder'])}"
        lines.append(f"- parameters: {total} (decoder {decoder})")
        lines.append(f"- decoder layers: {before['layers']} -> {after['layers']}")
        lines.append(f"- weight bytes: {before['weight_bytes']:,} -> {after['weight_bytes']:,}")
    else:
        lines.append(f"- decoder layers: {after['layers']} (unchanged)")
    lines.append(f"- zeros in the decoder's linear weights: {after['decoder_sparsity']:.1%}")
    if kept_share is not None:
        fit = (f"- parameters of the sparse + low-rank fit: {kept_share:.1%} of the decoder's linear weights "
               "(non-zeros of the sparse part plus the low-rank factors)")  # fmt: skip
        lines += [fit, "- unchanged: every shape, the parameter count and the file size", "", MERGED_NOTE]
    elif kind in ("weight-sparsity", "allocation"):
        lines += ["- unchanged: every shape, the parameter count and the file size", "", SPARSE_NOTE]
    elif kind == "depth":
        lines.append("- unchanged: every kept layer's weights and widths; the model loads as a stock "
                     "`LlamaForCausalLM` (no `trust_remote_code`)")  # fmt: skip
    elif kind == "width":
        lines.append("- unchanged: the layer count and the vocabulary")
    return lines


def card_text(
    *,
    method: str,
    kind: str,
    paper: dict[str, str] | None,
    base: str | None,
    source: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    config: Mapping[str, Any],
    command: str,
    code_hash: str,
    reload: Mapping[str, Any] | None,
    remote_code: bool,
    kept_share: float | None = None,
) -> str:
    # the Hub's model card metadata keys (huggingface_hub.ModelCardData names the same ones)
    meta: dict[str, Any] = {"base_model": base} if base else {}
    meta |= {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["pruning", method, MARK],
    }
    if paper is not None and paper["arxiv"]:
        meta["tags"].append(f"arxiv:{paper['arxiv']}")
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    title = f"{method} pruning of {base or source}"
    who = None
    if paper is not None:
        who = f"[{paper['title']}]({paper['url']})" if paper["url"] else paper["title"]
    lines = [
        "---", head, "---", "", f"# {title}", "",
        f"Pruned with the reference implementation of **{method}** ({kind}) in pruning-kb"
        + (f", after {who}." if who else " (a baseline method, not a paper's own)."), "",
        f"- base model: {base or 'none on the Hub'} (loaded from: {source})", "",
        "## What shrank", "", *shrink_lines(kind, before, after, kept_share), "",
        "## Settings", "", "```yaml", yaml.safe_dump(dict(config), sort_keys=True).strip(), "```", "",
        "## Reproduce", "", "```bash", command, "```", "", f"Code hash of the method's files: `{code_hash}`", "",
    ]  # fmt: skip
    if reload:
        checked = (f"Reloaded from this directory: logits within {reload['max_abs_logit_diff']:.2g} of the pruned "
                   f"model's on {reload['prompts']} prompts, and `generate` runs.")  # fmt: skip
        lines += ["## Checked after saving", "", checked, ""]
    load = "trust_remote_code=True" if remote_code else ""
    lines += [
        "## Load", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained(\"path/to/this/directory\"{', ' + load if load else ''})",
        "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/directory\")", "```", "",
    ]  # fmt: skip
    if remote_code:
        lines += [REMOTE_NOTE, ""]
    lines += [
        EVAL_BEGIN,
        "No evaluation yet: `kb eval DIR --tasks paper --update-card` adds one.",
        EVAL_END,
        "",
    ]
    return "\n".join(lines)


def write_card(directory: Path, **fields: Any) -> Path:
    """Write `directory/README.md` (see `card_text` for the fields); returns its path."""
    path = Path(directory) / CARD
    write_text_atomic(path, card_text(**fields))
    return path


def is_kb_card(directory: Path) -> bool:
    path = Path(directory) / CARD
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return MARK in text.split("\n---", 1)[0] and EVAL_BEGIN in text and EVAL_END in text


def headline_metric(score: TaskScore) -> str | None:
    return next((m for m in PREFERRED_METRICS if m in score.metrics), next(iter(sorted(score.metrics)), None))


def hub_dataset(score: TaskScore) -> str | None:
    """The Hub dataset id a task's data comes from, or None for local files and packaged builders."""
    path = score.dataset
    if not path or path in LOCAL_BUILDERS or Path(path).expanduser().exists() or "://" in path:
        return None
    return path if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) else None


def _result_file(task: str) -> str:
    """The `.eval_results/` file name of a task (lm-eval task names may hold characters a file name should not)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task) + ".yaml"


def hub_entries(record: EvalRecord) -> dict[str, list[dict[str, Any]]]:
    """File name under `.eval_results/` -> its YAML data, one file per task on a Hub dataset."""
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    files: dict[str, list[dict[str, Any]]] = {}
    for score in record.tasks:
        dataset, metric = hub_dataset(score), headline_metric(score)
        if dataset is None or metric is None:
            continue
        shots = "-" if score.n_shot is None else score.n_shot
        entry = EvalResultEntry(
            dataset_id=dataset, task_id=score.dataset_config or "default", value=round(score.metrics[metric], 6),
            date=record.produced.isoformat(),
            notes=f"lm-evaluation-harness {record.versions.get('lm_eval', '?')} task {score.task} "
                  f"(version {score.version or '?'}), {metric}, {shots}-shot, {score.items} items, via kb eval",
        )  # fmt: skip
        files[_result_file(score.task)] = eval_result_entries_to_yaml([entry])
    return files


def _eval_table(record: EvalRecord, written: set[str]) -> str:
    rows = [
        "| task | metric | value | stderr | shots | items | Hub eval result |",
        "|---|---|---|---|---|---|---|",
    ]
    for score in record.tasks:
        hub = "yes" if _result_file(score.task) in written else "no (local data)"
        for metric, value in sorted(score.metrics.items()):
            err = score.stderr.get(metric)
            rows.append(f"| {score.task} | {metric} | {value:.4f} | {'-' if err is None else f'{err:.4f}'} | "
                        f"{'-' if score.n_shot is None else score.n_shot} | {score.items}/{score.items_total} | "
                        f"{hub} |")  # fmt: skip
    notes = [f"- {n}" for n in record.notes]
    lm_eval = record.versions.get("lm_eval", "?")
    where = record.machine.cpu or "this machine"
    about = f"lm-evaluation-harness {lm_eval}, {record.produced.isoformat()}, {record.total_seconds:.0f} s on {where}."
    return "\n".join(["## Evaluation", "", about, "", *rows, *(["", *notes] if notes else [])])


def add_evaluation(directory: Path, record: EvalRecord) -> list[Path]:
    """Put `record`'s scores in the card and in `.eval_results/`; returns the files written."""
    directory = Path(directory)
    if not is_kb_card(directory):
        raise KBError(f"{directory} has no model card written by kb prune; --update-card needs one")
    written: list[Path] = []
    for name, data in hub_entries(record).items():
        path = directory / EVAL_DIR / name
        path.parent.mkdir(exist_ok=True)
        write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
        written.append(path)
    card = directory / CARD
    text = card.read_text(encoding="utf-8")
    start, end = text.index(EVAL_BEGIN) + len(EVAL_BEGIN), text.index(EVAL_END)
    body = _eval_table(record, {p.name for p in written})
    write_text_atomic(card, text[:start] + "\n" + body + "\n" + text[end:])
    return [card, *written]


def card_for_save(save: Path, summary: Mapping[str, Any], *, model: str, command: str, root: Path) -> Path:
    """The card of a `kb prune --save` directory from the prune summary (`runner.prune_to_dir`, or the low-memory
    path's, which has no before-size or reload check: it never holds the whole model)."""
    from reference_impls import registry

    spec = registry.method_spec(summary["method"])
    config_path = Path(save) / "config.json"
    try:
        saved_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved_config = {}
    after = summary.get("after") or {
        "layers": summary["layers"],
        "decoder_sparsity": summary["decoder_sparsity"],
    }
    return write_card(
        Path(save), method=summary["method"], kind=spec.kind, paper=_paper(spec.paper, root),
        base=base_model(model, saved_config), source=model, before=summary.get("before"), after=after,
        config=summary.get("config") or {}, command=command, code_hash=registry.sweep_code([summary["method"]]).hash,
        reload=summary.get("reload"), remote_code="auto_map" in (saved_config or {}),
        kept_share=((summary.get("outcome") or {}).get("details") or {}).get("kept_share"),
    )  # fmt: skip
