"""One common shift to meet a weighted budget, with clipping to the bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impls.primitives.budget import shift_to_budget


def test_clipped_values_hand_their_share_to_the_others():
    assert shift_to_budget([0.5, 0.5], [1, 1], 1.2) == pytest.approx([0.6, 0.6])
    assert shift_to_budget([0.95, 0.1], [100, 100], 120) == pytest.approx([1.0, 0.2])
    assert shift_to_budget([-0.03, 0.05, 0.13], [1, 1, 1], 0.15) == pytest.approx([0.0, 0.035, 0.115])


def test_a_budget_the_bounds_cannot_meet_is_refused():
    with pytest.raises(ValueError, match="outside"):
        shift_to_budget([0.5], [1], 2.0)


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=12),
       share=st.floats(0.0, 1.0), data=st.data())  # fmt: skip
def test_the_budget_is_met_within_bounds_and_the_order_is_kept(values, share, data):
    weights = data.draw(st.lists(st.integers(1, 1000), min_size=len(values), max_size=len(values)))
    total = share * sum(weights)
    out = shift_to_budget(values, weights, total)
    assert all(0.0 <= v <= 1.0 for v in out)
    assert sum(w * v for w, v in zip(weights, out, strict=True)) == pytest.approx(
        total, abs=1e-6 * sum(weights)
    )
    pairs = [(x, y) for x, y in zip(values, out, strict=True)]
    assert all(ya <= yb for (xa, ya) in pairs for (xb, yb) in pairs if xa <= xb)  # monotone in the input
