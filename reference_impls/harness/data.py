"""Text corpora and the calibration / evaluation token streams cut from them.

Every corpus is split once into two disjoint texts, calibration and evaluation, independently of `--seed`:
- `pydoc` (default, offline, ships with CPython under the PSF licence): the documentation topics of
  `pydoc_data.topics`, in sorted key order; every fourth topic after a fixed shuffle goes to evaluation.
- `PATH`: any UTF-8 text file; the first ~75% of its lines calibrate, the rest evaluate.
- `wikitext2` / `c4` (needs the optional `datasets` package and a network): the papers' usual choice,
  calibration from the training split, evaluation from test / validation.
Calibration samples are `nsamples` random windows of `seqlen` tokens from the calibration stream (drawn
with `seed`, as upstream does; they may overlap, so the stream needs only more than `seqlen` tokens);
evaluation uses the first `eval_tokens` tokens of the evaluation stream cut into non-overlapping windows of
`seqlen` tokens, and a stream shorter than that is an error, never a smaller evaluation; the rest of the
evaluation stream is kept as `heldout` (the multiple-choice probe is built from it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kb.errors import KBError

_SPLIT_SEED = 20240101  # fixed: the calibration/evaluation split never depends on --seed


@dataclass(frozen=True)
class Corpus:
    name: str
    calib_text: str
    eval_text: str


@dataclass(frozen=True)
class TokenData:
    corpus: str
    calib: torch.Tensor  # (nsamples, seqlen) int64
    eval: torch.Tensor  # (windows, seqlen) int64
    heldout: torch.Tensor  # the evaluation stream after the perplexity windows (the probe's text), 1-D
    calib_stream_tokens: int
    eval_stream_tokens: int

    def describe(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "calibration": {"samples": self.calib.shape[0], "seqlen": self.calib.shape[1],
                            "tokens": self.calib.numel(), "stream_tokens": self.calib_stream_tokens},
            "evaluation": {"windows": self.eval.shape[0], "seqlen": self.eval.shape[1],
                           "tokens": self.eval.numel(), "stream_tokens": self.eval_stream_tokens},
        }  # fmt: skip


def pydoc_corpus() -> Corpus:
    from pydoc_data.topics import topics

    keys = sorted(topics)
    order = list(range(len(keys)))
    random.Random(_SPLIT_SEED).shuffle(order)
    eval_ids = set(order[::4])
    calib = [topics[k] for i, k in enumerate(keys) if i not in eval_ids]
    held = [topics[k] for i, k in enumerate(keys) if i in eval_ids]
    return Corpus("pydoc", "\n\n".join(calib), "\n\n".join(held))


def file_corpus(path: Path) -> Corpus:
    try:
        raw = path.read_bytes()
        if b"\x00" in raw[: 1 << 20]:
            raise KBError(f"dataset file {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise KBError(f"dataset file not found: {path}") from None
    except IsADirectoryError:
        raise KBError(f"dataset path is a directory, not a text file: {path}") from None
    except UnicodeDecodeError as exc:
        raise KBError(f"dataset file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise KBError(f"cannot read dataset file {path}: {exc.strerror}") from None
    if not text.strip():
        raise KBError(f"dataset file {path} is empty")
    lines = text.splitlines(keepends=True)
    if len(lines) >= 2:
        cut, seen = 0, 0
        while cut < len(lines) - 1 and seen < 0.75 * len(text):
            seen += len(lines[cut])
            cut += 1
        return Corpus(str(path), "".join(lines[:cut]), "".join(lines[cut:]))
    cut = int(len(text) * 0.75)
    return Corpus(str(path), text[:cut], text[cut:])


def hub_corpus(name: str) -> Corpus:
    try:
        import datasets  # noqa: F401
        from datasets import load_dataset
    except ImportError:
        raise KBError(
            f"--dataset {name} needs the optional 'datasets' package (pip install datasets)"
        ) from None
    try:
        if name == "wikitext2":
            train = load_dataset("wikitext", "wikitext-2-raw-v1", split="train")
            test = load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
            return Corpus(name, "\n\n".join(train["text"]), "\n\n".join(test["text"]))
        files = {
            "train": "en/c4-train.00000-of-01024.json.gz",
            "validation": "en/c4-validation.00000-of-00008.json.gz",
        }
        c4 = load_dataset("allenai/c4", data_files=files)
        return Corpus(
            name, "\n\n".join(c4["train"]["text"][:20000]), "\n\n".join(c4["validation"]["text"][:3000])
        )
    except Exception as exc:  # noqa: BLE001 - datasets raises many types when offline; all become one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KBError(f"cannot load dataset {name} (offline?): {first}") from None


def load_corpus(spec: str) -> Corpus:
    if spec == "pydoc":
        return pydoc_corpus()
    if spec in ("wikitext2", "c4"):
        return hub_corpus(spec)
    return file_corpus(Path(spec).expanduser())


def tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """One long 1-D int64 stream, no special tokens added."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def token_data(
    tokenizer: Any, corpus: Corpus, *, nsamples: int, seqlen: int, eval_tokens: int, seed: int
) -> TokenData:
    """Tokenise both halves and cut calibration windows and evaluation windows (see the module docstring)."""
    calib_stream = tokenize(tokenizer, corpus.calib_text)
    eval_stream = tokenize(tokenizer, corpus.eval_text)
    if calib_stream.numel() <= seqlen:
        raise KBError(
            f"dataset {corpus.name}: calibration part has {calib_stream.numel()} tokens, need more than seqlen={seqlen}"
        )
    windows = eval_tokens // seqlen
    if windows < 1:
        raise KBError(f"eval_tokens ({eval_tokens}) must be at least seqlen ({seqlen})")
    if eval_stream.numel() < windows * seqlen:
        fit = eval_stream.numel() // seqlen * seqlen
        hint = (
            f"ask for --eval-tokens {fit} or fewer"
            if fit
            else f"use a longer file or a smaller --seqlen than {seqlen}"
        )
        raise KBError(f"dataset {corpus.name}: evaluation part has {eval_stream.numel()} tokens, fewer than the "
                      f"{windows * seqlen} requested ({windows} windows of {seqlen}); {hint}")  # fmt: skip
    calib = sample_windows(calib_stream, nsamples, seqlen, seed)
    evaluation = eval_stream[: windows * seqlen].reshape(windows, seqlen)
    heldout = eval_stream[windows * seqlen :]
    return TokenData(corpus.name, calib, evaluation, heldout, calib_stream.numel(), eval_stream.numel())


def sample_windows(stream: torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """(nsamples, seqlen): windows of a 1-D stream at starts drawn with `seed` (they may overlap)."""
    if stream.numel() <= seqlen:
        raise KBError(f"the calibration text has {stream.numel()} tokens, need more than {seqlen}")
    rng = random.Random(seed)
    starts = [rng.randrange(0, stream.numel() - seqlen) for _ in range(nsamples)]
    return torch.stack([stream[s : s + seqlen] for s in starts])
