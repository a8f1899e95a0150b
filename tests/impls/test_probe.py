"""The offline multiple-choice probe: deterministic items, cached scoring equal to naive scoring, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kb.errors import KBError
from reference_impls.harness import probe
from reference_impls.harness.models import byte_tokenizer, random_llama


def _stream(n=4000, seed=0):
    return torch.randint(32, 127, (n,), generator=torch.Generator().manual_seed(seed))  # printable ASCII


def test_items_are_deterministic_and_hold_the_true_continuation():
    stream = _stream()
    task = probe.continuation_task(stream, byte_tokenizer(), items=40, context=10, length=3)
    again = probe.continuation_task(stream, byte_tokenizer(), items=40, context=10, length=3)
    assert torch.equal(task.choices, again.choices) and torch.equal(task.answer, again.answer)
    step = stream.numel() // 40
    for i in range(40):
        s = i * step
        assert torch.equal(task.context[i], stream[s : s + 10])
        assert torch.equal(task.choices[i, task.answer[i]], stream[s + 10 : s + 13])
        others = [task.choices[i, j] for j in range(4) if j != task.answer[i]]
        assert all(not torch.equal(o, task.choices[i, task.answer[i]]) for o in others)
    assert len(set(task.answer.tolist())) == 4  # the answer position varies
    assert (task.choice_bytes == 3).all()  # ASCII through the byte tokenizer: one byte per token


def test_cached_scoring_equals_scoring_whole_sequences():
    model = random_llama(seed=0, layers=2)
    task = probe.continuation_task(_stream(), byte_tokenizer(), items=12, context=8, length=3)
    got = probe.score_task(model, task, batch_size=5)
    sums = []
    with torch.inference_mode():
        for i in range(task.items):
            seqs = torch.cat([task.context[i].expand(4, -1), task.choices[i]], 1)  # (4, C+L)
            logp = F.log_softmax(model(seqs).logits.float(), -1)
            picked = logp[:, 7:-1].gather(2, seqs[:, 8:, None]).squeeze(2)
            sums.append(picked.sum(1))
    scores = torch.stack(sums)
    expected = float((scores.argmax(1) == task.answer).float().mean())
    assert got.acc == pytest.approx(expected) and got.items == 12 and got.choices == 4
    text = [probe.TextItem(byte_tokenizer().decode(task.context[i].tolist()),
                           tuple(byte_tokenizer().decode(c.tolist()) for c in task.choices[i]),
                           int(task.answer[i])) for i in range(task.items)]  # fmt: skip
    assert probe.score_text_items(model, byte_tokenizer(), text, "same").acc == pytest.approx(expected)


def test_too_little_text_and_bad_task_names_are_one_line_errors():
    with pytest.raises(KBError, match="held-out tokens"):
        probe.continuation_task(_stream(100), byte_tokenizer(), items=300)
    with pytest.raises(KBError, match="unknown probe task"):
        probe.load_task("mmlu")


def test_real_tasks_without_the_datasets_package_are_one_line_errors(no_datasets):
    with pytest.raises(KBError, match="needs the optional 'datasets' package"):
        probe.load_task("hellaswag")
