from __future__ import annotations

from pathlib import Path

import pytest

from kb.vocab import AXES, load_vocabulary, parse_quantity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary(ROOT / "concepts")


def test_six_axes_in_fixed_order_with_distinct_colours(vocab):
    assert [a.axis for a in vocab.ordered()] == list(AXES)
    assert len({a.colour for a in vocab.ordered()}) == 6


def test_every_value_is_defined_in_words(vocab):
    for axis in vocab.ordered():
        for v in axis.values:
            assert len(v.definition.split()) >= 5, (axis.axis, v.id)


def test_seed_vocabulary_is_covered(vocab):
    # the union of the seed legend and concept pages (seed-repo §1.3, §4)
    expected = {
        "type": {"unstructured", "structured", "semi-structured", "other"},
        "criteria": {
            "magnitude",
            "taylor",
            "hessian",
            "fisher",
            "wanda",
            "ria",
            "geometric-median",
            "kl-divergence",
            "perplexity",
            "cosine-similarity",
            "trainable",
            "other",
        },
        "budget": {
            "sparsity",
            "flops",
            "latency",
            "energy",
            "parameters",
            "layer-count",
            "array",
            "compiler",
            "other",
        },
        "data": {"data-free", "calibration", "small", "medium", "large", "extra-large", "other"},
        "retrain": {"without", "efficient", "extensive", "scratch", "other"},
        "weight": {"frozen", "update"},
    }
    for axis, ids in expected.items():
        assert ids <= {v.id for v in vocab[axis].values}, axis


@pytest.mark.parametrize(
    ("axis", "seed_token", "value"),
    [
        ("data", "Samll", "small"),
        ("data", "Data_free", "data-free"),
        ("data", "Medium-size", "medium"),
        ("criteria", "KL", "kl-divergence"),
        ("criteria", "Angular_Distance", "cosine-similarity"),
        ("criteria", "Hessian--Approximation", "hessian"),
        ("budget", "Layer_Numbers", "layer-count"),
        ("budget", "Parameter", "parameters"),
        ("retrain", "Efficient_LoRA", "efficient"),
        ("type", "Head/Neuron", "structured"),
        ("weight", "Updat", "update"),
    ],
)
def test_seed_tokens_get_the_nearest_value_suggested(vocab, axis, seed_token, value):
    assert vocab[axis].suggest(seed_token) == value


def test_nonsense_gets_no_suggestion(vocab):
    assert vocab["type"].suggest("zzzz") is None


def test_typed_qualifiers(vocab):
    assert vocab["budget"].qualifiers_for("sparsity")["scope"].values == [
        "row",
        "layer",
        "block",
        "global",
        "mix",
        "kv-cache",
    ]
    assert "granularity" in vocab["type"].qualifiers_for("structured")
    assert vocab["type"].qualifiers_for("unstructured") == {}
    assert vocab["data"].qualifiers_for("small")["size"].kind == "quantity"


@pytest.mark.parametrize(
    ("text", "amount", "unit", "approx", "at_least"),
    [
        ("50K samples", 50_000, "samples", False, False),
        ("~50B tokens", 50_000_000_000, "tokens", True, False),
        ("150B+ tokens", 150_000_000_000, "tokens", False, True),
        ("1.8B tokens", 1_800_000_000, "tokens", False, False),
        ("128 sequences", 128, "sequences", False, False),
    ],
)
def test_quantities_parse(text, amount, unit, approx, at_least):
    q = parse_quantity(text, ["samples", "tokens", "sequences"])
    assert (q.amount, q.unit, q.approx, q.at_least) == (amount, unit, approx, at_least)


@pytest.mark.parametrize("text", ["fifty samples", "50K", "50K widgets", "-5 tokens"])
def test_bad_quantities_are_rejected(text):
    with pytest.raises(ValueError):
        parse_quantity(text, ["samples", "tokens"])


def test_broken_vocabulary_names_file_and_line(tmp_path):
    import shutil

    from kb.vocab import VocabularyError

    shutil.copytree(ROOT / "concepts", tmp_path / "concepts")
    path = tmp_path / "concepts" / "weight.yaml"
    path.write_text(path.read_text().replace('colour: "#b8941f"', "colour: yellow"))
    with pytest.raises(VocabularyError) as info:
        load_vocabulary(tmp_path / "concepts")
    assert info.value.where == "concepts/weight.yaml:5"
    assert "colour" in info.value.message
