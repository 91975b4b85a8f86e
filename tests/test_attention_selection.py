"""Global mask: top-K frame selection by pose distance."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iasa.attention.frame_selection import select_frames

distances = st.integers(1, 9).flatmap(
    lambda t: st.lists(
        st.sampled_from([0.0, 0.1, 0.1, 0.5, 1.0, 2.0, float("inf")]), min_size=t * t, max_size=t * t
    ).map(lambda values: torch.tensor(values, dtype=torch.float64).reshape(t, t))
)


def expected_selection(distance, top_k, direction, keep_first_frame):
    """Brute force: sort each query's candidates by (distance, frame index) and take the first K."""
    frames = distance.shape[0]
    selection = np.eye(frames, dtype=bool)
    for query in range(frames):
        candidates = [k for k in range(frames) if (k < query if direction == "past" else k != query)]
        if keep_first_frame:
            candidates = [k for k in candidates if k != 0]
            selection[query, 0] = True
        for key in sorted(candidates, key=lambda k: (float(distance[query, k]), k))[:top_k]:
            selection[query, key] = True
    return selection


@settings(max_examples=150, deadline=None)
@given(distance=distances, top_k=st.integers(0, 10), direction=st.sampled_from(["past", "both"]), keep_first=st.booleans())
def test_selection_matches_brute_force_and_properties(distance, top_k, direction, keep_first):
    selection = select_frames(distance, top_k, direction, keep_first)
    frames = distance.shape[0]
    assert selection.dtype == torch.bool and selection.shape == (frames, frames)
    assert np.array_equal(selection.numpy(), expected_selection(distance, top_k, direction, keep_first))
    assert selection.diagonal().all()  # own frame always
    if keep_first:
        assert selection[:, 0].all()
    if direction == "past":
        assert not torch.triu(selection, diagonal=1).any()  # no future frame
    for query in range(frames):
        keys = [k for k in range(frames) if (k < query if direction == "past" else k != query)]
        if keep_first:
            keys = [k for k in keys if k != 0]
        chosen = [k for k in keys if selection[query, k]]
        assert len(chosen) == min(top_k, len(keys))  # exactly min(K, available)


def test_ties_go_to_the_earlier_frame():
    distance = torch.ones(5, 5, dtype=torch.float64)
    selection = select_frames(distance, 2, "both", keep_first_frame=False)
    assert selection[4].tolist() == [True, True, False, False, True]
    assert selection[0].tolist() == [True, True, True, False, False]


def test_keep_first_frame_comes_on_top_of_k():
    distance = torch.rand(6, 6, dtype=torch.float64)
    distance[:, 0] = 0.0  # frame 0 the most similar: it must not use up one of the K
    selection = select_frames(distance, 2, "past", keep_first_frame=True)
    assert selection[5].sum() == 1 + 2 + 1  # frame 0, K = 2 others, itself


def test_negative_k_and_unknown_direction_are_errors():
    with pytest.raises(ValueError, match="top_k"):
        select_frames(torch.zeros(3, 3), -1, "past", True)
    with pytest.raises(ValueError, match="direction"):
        select_frames(torch.zeros(3, 3), 1, "future", True)
