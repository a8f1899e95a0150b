"""`kb eval`: score a (pruned) model on lm-evaluation-harness tasks, the way pruning papers report accuracy.

lm-evaluation-harness (`lm_eval`, the optional `eval` extra) is imported inside the functions here; without it
`require_lm_eval` is a one-line error naming the extra. The model is loaded by the harness's own loader
(`models.load_model`: a saved directory, with the project's modeling file where the save has one, a hub id,
tiny-llama or random-llama) and handed to lm-eval as an already-built `HFLM`, so what is scored is exactly
what `kb prune --save` wrote and reloaded.

Tasks are named three ways (`resolve_tasks`):
- `paper`: the zero-shot suite LLM pruning papers report (`PAPER_TASKS`; the data comes from the Hugging Face
  hub, so online or from its cache);
- a local task of this repository (`reference_impls/eval_tasks/<name>/<name>.yaml`) or a path to such a YAML
  file: loaded with a safe YAML loader, its `data_files` made absolute relative to the file, and handed to
  lm-eval as a config dict (offline: `kb_smoke` is the one the tests use);
- any other name: lm-eval's own task registry (plus `include_path`, lm-eval's way of adding a task folder).
  Unknown names are refused before the model is loaded, with the closest known names.

Perplexity stays the harness's: lm-eval's `wikitext` task reports word and byte perplexity over whole
documents (rolling windows), while `kb reproduce` reports token perplexity over fixed windows of one corpus.
The two are not comparable, and a run that includes `wikitext` says so in its notes (`WIKITEXT_NOTE`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from kb.errors import KBError
from kb.eval_record import EvalRecord, TaskScore

# The zero-shot commonsense suite of LLM-Pruner, Wanda, SliceGPT, Sheared LLaMA and most structured-pruning papers.
PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "piqa")
LOCAL_TASKS = Path(__file__).resolve().parents[1] / "eval_tasks"
WIKITEXT_NOTE = (
    "lm-eval's wikitext scores are word and byte perplexity over whole documents (rolling windows); kb "
    "reproduce's perplexity is token perplexity over fixed windows: the two are not comparable"
)
EXTRA_HINT = "install the optional extra: .venv/bin/pip install -e '.[eval]'"


def require_lm_eval() -> ModuleType:
    try:
        import lm_eval
    except ImportError:
        raise KBError(f"kb eval needs lm-evaluation-harness, which is not installed; {EXTRA_HINT}") from None
    module: ModuleType = lm_eval
    return module


def local_task_names() -> list[str]:
    return sorted(p.parent.name for p in LOCAL_TASKS.glob("*/*.yaml") if p.stem == p.parent.name)


def load_task_file(path: Path) -> dict[str, Any]:
    """A task config dict from an lm-eval task YAML file, its `data_files` made absolute (relative to the file)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KBError(f"cannot read task file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KBError(f"task file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise KBError(f"task file {path} is not YAML this loader reads ({first}); a task using lm-eval's "
                      "!function tags goes in a folder given to --include-path") from None  # fmt: skip
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise KBError(f"task file {path} is not an lm-eval task config (a mapping with a `task` name)")
    kwargs = data.get("dataset_kwargs")
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    if isinstance(kwargs, dict) and isinstance(files, (str, list, dict)):
        kwargs["data_files"] = _absolute(files, path.parent)
        for name in _file_names(kwargs["data_files"]):
            if not Path(name).is_file():
                raise KBError(f"task file {path}: data file {name} does not exist")
    return data


def _absolute(files: Any, base: Path) -> Any:
    if isinstance(files, str):
        return files if "://" in files else str((base / files).resolve())
    if isinstance(files, list):
        return [_absolute(f, base) for f in files]
    return {split: _absolute(f, base) for split, f in files.items()}


def _file_names(files: Any) -> list[str]:
    if isinstance(files, str):
        return [] if "://" in files else [files]
    if isinstance(files, list):
        return [n for f in files for n in _file_names(f)]
    return [n for f in files.values() for n in _file_names(f)]


def resolve_tasks(names: list[str], include_path: Path | None = None) -> list[str | dict[str, Any]]:
    """What to hand lm-eval for each name given (see the module docstring); unknown names are one line, exit 2."""
    specs: list[str | dict[str, Any]] = []
    registry: set[str] | None = None
    for name in names:
        if name == "paper":
            specs.extend(n for n in PAPER_TASKS if n not in specs)
        elif name.endswith((".yaml", ".yml")) or Path(name).is_file():
            specs.append(load_task_file(Path(name).expanduser()))
        elif (LOCAL_TASKS / name / f"{name}.yaml").is_file():
            specs.append(load_task_file(LOCAL_TASKS / name / f"{name}.yaml"))
        else:
            if registry is None:
                registry = set(_task_manager(include_path).all_tasks)
            if name not in registry:
                close = difflib.get_close_matches(name, sorted(registry) + local_task_names(), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise KBError(f"unknown task {name!r}{hint}: name an lm-eval task, `paper` "
                              f"({', '.join(PAPER_TASKS)}), a local task ({', '.join(local_task_names())}) "
                              "or a task YAML file")  # fmt: skip
            specs.append(name)
    return specs


@functools.cache
def _task_manager(include_path: Path | None, *, defaults: bool = True) -> Any:
    """lm-eval's task index. With `defaults` it reads every task config lm-eval ships (over ten thousand files,
    tens of seconds), so it is built once, and only when a task is named from lm-eval's registry."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is not None and not include_path.is_dir():
        raise KBError(f"--include-path {include_path} is not a directory")
    _quiet()
    return TaskManager(include_path=str(include_path) if include_path else None, include_defaults=defaults)


def _quiet() -> None:
    """lm-eval logs a warning for every pre-built model and few-shot override: errors only."""
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


@contextlib.contextmanager
def _no_environment_probe() -> Iterator[None]:
    """lm-eval adds a report of the environment to every result through torch's `collect_env`, which runs pip,
    conda and GPU tools in subprocesses (seconds, minutes on a loaded machine). `kb eval` records the library
    versions and the machine itself, so the probe is replaced by a no-op for the duration of the call."""
    import lm_eval.evaluator as evaluator

    saved = getattr(evaluator, "add_env_info", None)
    if saved is None:  # another lm-eval layout: leave it alone
        yield
        return
    evaluator.add_env_info = lambda _storage: None
    try:
        yield
    finally:
        evaluator.add_env_info = saved


def _spec_name(spec: str | dict[str, Any]) -> str:
    return spec if isinstance(spec, str) else str(spec["task"])


def prefix_token(tokenizer: Any) -> int | None:
    """The token lm-eval puts before an empty context: the tokenizer's BOS or EOS (None: lm-eval picks it), else
    the first token of a newline (a byte-level tokenizer without special tokens, such as random-llama's)."""
    if tokenizer.bos_token_id is not None or tokenizer.eos_token_id is not None:
        return None
    ids = tokenizer.encode("\n", add_special_tokens=False)
    if not ids:
        raise KBError(
            "the tokenizer has no BOS or EOS token and encodes a newline to nothing: lm-eval needs one"
        )
    return int(ids[0])


def scores(raw: dict[str, Any]) -> list[TaskScore]:
    """lm-eval's `results` dict -> one `TaskScore` per task (metric keys are "acc,none": the filter is dropped)."""
    out = []
    for task, entry in raw["results"].items():
        metrics: dict[str, float] = {}
        stderr: dict[str, float | None] = {}
        for key, value in entry.items():
            if "," not in key or isinstance(value, str) or value is None:
                continue
            metric, _filter = key.split(",", 1)
            if metric.endswith("_stderr"):
                stderr[metric.removesuffix("_stderr")] = (
                    float(value) if isinstance(value, (int, float)) else None
                )
            elif isinstance(value, (int, float)):
                metrics[metric] = float(value)
        counts = raw.get("n-samples", {}).get(task, {})
        version = raw.get("versions", {}).get(task)
        source = raw.get("configs", {}).get(task, {})
        path, config = source.get("dataset_path"), source.get("dataset_name")
        out.append(TaskScore(
            task=task, version=None if version is None else str(version), n_shot=raw.get("n-shot", {}).get(task),
            items=int(counts.get("effective", 0)), items_total=int(counts.get("original", 0)),
            metrics=metrics, stderr={k: v for k, v in stderr.items() if k in metrics},
            dataset=path if isinstance(path, str) else None, dataset_config=config if isinstance(config, str) else None,
        ))  # fmt: skip
    return out


def notes(specs: list[str | dict[str, Any]], limit: int | None) -> list[str]:
    """Caveats that go next to the scores."""
    out = [WIKITEXT_NOTE] if any(_spec_name(s).startswith("wikitext") for s in specs) else []
    if limit is not None:
        out.append(f"--limit {limit}: at most {limit} items per task, a smoke test, not a score to report")
    return out


def evaluate(
    name: str,
    tasks: list[str],
    *,
    device: str | None = None,
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    max_length: int | None = None,
    include_path: Path | None = None,
    progress: Any = None,
) -> EvalRecord:
    """Score model `name` on `tasks`; every input is checked before the model is loaded."""
    import torch

    from .models import load_model
    from .report import machine, today, versions
    from .runner import set_threads

    say = progress or (lambda _msg: None)
    require_lm_eval()
    specs = resolve_tasks(tasks, include_path)
    set_threads(None)  # every core this process may use, or $KB_THREADS
    start = time.perf_counter()
    loaded = load_model(name, device)
    say(f"model {name}: {loaded.source}")
    _quiet()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    prefix = prefix_token(loaded.tokenizer)
    run_device = str(next(loaded.model.parameters()).device)
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size, device=run_device,
              max_length=max_length, prefix_token_id=prefix)  # fmt: skip
    say(f"tasks: {', '.join(_spec_name(s) for s in specs)}")
    named = any(isinstance(s, str) for s in specs)  # dict configs need no index of lm-eval's own tasks
    with _no_environment_probe():
        raw = simple_evaluate(
            model=lm, tasks=specs, num_fewshot=num_fewshot, limit=limit, log_samples=False,
            task_manager=_task_manager(include_path, defaults=named),
        )  # fmt: skip
    if raw is None:
        raise KBError("lm-eval returned no results (a distributed run's worker rank?)")
    cfg = raw.get("config", {})
    import lm_eval

    return EvalRecord(
        model=name, source=loaded.source, tasks=scores(raw),
        config={
            "tasks": tasks, "num_fewshot": num_fewshot, "limit": limit, "batch_size": batch_size,
            "max_length": lm.max_length, "prefix_token_id": prefix, "device": run_device,
            "include_path": str(include_path) if include_path else None,
            "random_seed": cfg.get("random_seed"), "numpy_seed": cfg.get("numpy_seed"),
            "torch_seed": cfg.get("torch_seed"), "fewshot_seed": cfg.get("fewshot_seed"),
            "bootstrap_iters": cfg.get("bootstrap_iters"),
        },
        versions={**versions(), "lm_eval": str(getattr(lm_eval, "__version__", raw.get("lm_eval_version", "")))},
        machine=machine(torch.get_num_threads(), run_device),
        total_seconds=round(time.perf_counter() - start, 2), produced=today(), notes=notes(specs, limit),
    )  # fmt: skip
