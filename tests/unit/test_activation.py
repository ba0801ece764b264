"""Channel statistics, selection and running examples against plain Python."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compute.summit.activation import select_mass, select_topk, spatial_max, topk_mask
from compute.summit.examples import RunningTopExamples
from tests import reference

# torch on one thread for the whole module (fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mask_of(chosen: set[int], n: int) -> list[bool]:
    return [j in chosen for j in range(n)]


def test_spatial_max_takes_first_position_in_row_major_order() -> None:
    z = torch.zeros(2, 2, 3, 4, dtype=torch.float64)
    z[0, 0, 1, 2] = z[0, 0, 2, 0] = 5.0  # tie: (1, 2) comes first
    z[0, 1] = -1.0  # all equal: (0, 0)
    z[1, 0, 2, 3] = 2.0
    z[1, 1, 0, 1] = z[1, 1, 0, 0] = 1.0
    values, flat = spatial_max(z)
    assert values.tolist() == [[5.0, -1.0], [2.0, 1.0]]
    assert flat.tolist() == [[1 * 4 + 2, 0], [2 * 4 + 3, 0]]
    for b in range(2):
        for j in range(2):
            value, (r, c) = reference.channel_max(z[b, j].numpy())
            assert (value, r * 4 + c) == (values[b, j].item(), flat[b, j].item())


def test_mass_selection_matches_reference_on_random_and_tied_rows() -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.relu(torch.randn(200, 9, generator=g, dtype=torch.float64))
    ties = torch.randint(0, 3, (200, 9), generator=g).double()
    signed = torch.randn(50, 9, generator=g, dtype=torch.float64) - 0.3
    for a in (rows, ties, signed):
        for tau in (0.01, 0.3, 0.5, 0.75, 1.0):
            got = select_mass(a, tau)
            for b in range(a.shape[0]):
                want = _mask_of(reference.select_mass(a[b].tolist(), tau), 9)
                assert got[b].tolist() == want, (a[b], tau)


def test_mass_selection_edge_cases() -> None:
    a = torch.tensor([[2.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-1.0, -2.0, 0.0]])
    got = select_mass(a, 0.5)
    assert got[0].tolist() == [True, False, False]  # 2/4 reaches exactly 0.5
    assert got[1].tolist() == [False] * 3  # nothing to normalise
    assert got[2].tolist() == [True, True, False]  # ties: lowest channel first
    assert got[3].tolist() == [False] * 3  # total <= 0


def test_topk_selection_breaks_ties_by_lowest_index_and_needs_positive() -> None:
    a = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0], [0.0, 0.0, 2.0, 0.0, 0.0]])
    assert select_topk(a, 2).tolist() == [
        [False, True, True, False, False],
        [False, False, True, False, False],
    ]
    g = torch.Generator().manual_seed(1)
    ties = torch.randint(-1, 3, (300, 7), generator=g).double()
    got = select_topk(ties, 3)
    for b in range(300):
        assert got[b].tolist() == _mask_of(reference.select_topk(ties[b].tolist(), 3), 7)


def test_topk_mask_never_picks_nan_and_handles_large_k() -> None:
    a = torch.tensor([[float("nan"), 1.0, 2.0]])
    assert topk_mask(a, 1).tolist() == [[False, False, True]]
    assert topk_mask(a, 10).tolist() == [[False, True, True]]
    assert topk_mask(-a, 10, positive_only=False).tolist() == [[False, True, True]]


def test_running_examples_equal_a_full_sort_whatever_the_batching() -> None:
    g = torch.Generator().manual_seed(2)
    n_images, channels, width = 40, 5, 6
    values = torch.randint(0, 4, (n_images, channels), generator=g).double()  # many ties
    positions = torch.randint(0, width * width, (n_images, channels), generator=g)
    indices = torch.randperm(1000, generator=g)[:n_images]
    want_index = np.full((channels, 7), -1)
    for j in range(channels):
        ranked = sorted(range(n_images), key=lambda b: (-values[b, j].item(), indices[b].item()))
        want_index[j] = [indices[b].item() for b in ranked[:7]]
    for batch in (1, 3, 40):
        order = torch.randperm(n_images, generator=g)
        table = RunningTopExamples(channels, 7, torch.device("cpu"), torch.float64)
        for start in range(0, n_images, batch):
            pick = order[start : start + batch]
            table.update(values[pick], positions[pick], indices[pick])
        index, value, position = table.result(width)
        np.testing.assert_array_equal(index, want_index)
        lookup = {indices[b].item(): b for b in range(n_images)}
        for j in range(channels):
            for rank in range(7):
                b = lookup[int(index[j, rank])]
                assert value[j, rank] == np.float32(values[b, j].item())
                flat = positions[b, j].item()
                assert tuple(position[j, rank]) == (flat // width, flat % width)


def test_running_examples_leave_empty_slots_when_few_images() -> None:
    table = RunningTopExamples(2, 4, torch.device("cpu"))
    table.update(torch.tensor([[1.0, -3.0]]), torch.tensor([[4, 0]]), torch.tensor([9]))
    index, value, position = table.result(3)
    assert index.tolist() == [[9, -1, -1, -1], [9, -1, -1, -1]]
    assert value.tolist() == [[1.0, 0, 0, 0], [-3.0, 0, 0, 0]]
    assert position[0, 0].tolist() == [1, 1] and position.dtype == np.int32
