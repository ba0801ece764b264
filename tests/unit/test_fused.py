"""The compiled influence kernel (compute/summit/fused.py) against per-pair convolutions."""

from __future__ import annotations

import threading

import pytest
import torch

from compute.summit import influence
from compute.summit.fused import (
    BLOCK,
    POSITIONS,
    fused_applies,
    fused_available,
    influence_topk_fused,
)
from compute.summit.influence import influence_topk
from tests.unit.test_influence import GEOMETRIES, per_pair, reference_topk

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _triples(found: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[tuple[int, ...]]:
    b, i, j = found
    return list(zip(b.tolist(), i.tolist(), j.tolist(), strict=True))


def test_kernel_compiles_on_this_machine() -> None:
    """llvmlite is a compute dependency: the fast path must not silently fall back here
    (only an x86 CPU without FMA, where the kernel would be slow, declines it)."""
    import llvmlite.binding as llvm

    x86 = llvm.get_process_triple().startswith(("x86_64", "i686", "i386"))
    assert fused_available() == (not x86 or bool(llvm.get_host_cpu_features().get("fma")))


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("signed", [False, True])
def test_selection_equals_per_pair_convolutions(geometry, signed: bool) -> None:
    """Any kernel size, stride, padding and dilation; ``k`` up to more than ``C_in``."""
    kernel, stride, padding, dilation = geometry
    g = torch.Generator().manual_seed(31)
    x = torch.randn(4, 7, 13, 11, generator=g)
    if not signed:
        x = torch.relu(x)
    w = torch.randn(6, 7, kernel, kernel, generator=g)
    exact = per_pair(x.double(), w.double(), stride, padding, dilation)
    for k in (1, 3, 7, 10):
        got = influence_topk_fused(x, w, stride, padding, dilation, k)
        assert set(_triples(got)) == reference_topk(exact, k), k
        # row-major order, j ascending within a row, like the other paths
        assert _triples(got) == sorted(_triples(got))


@pytest.mark.parametrize("c_out", [1, BLOCK - 1, BLOCK, BLOCK + 3, 2 * BLOCK + 5])
@pytest.mark.parametrize("size", [1, POSITIONS - 1, POSITIONS + 1, 6])
def test_output_blocks_and_position_remainders(c_out: int, size: int) -> None:
    """Output channels padded to whole blocks and positions left over from a group of
    ``POSITIONS`` give the same selection as the matrix products."""
    g = torch.Generator().manual_seed(37)
    x = torch.relu(torch.randn(3, 5, size, size, generator=g))
    w = torch.randn(c_out, 5, 3, 3, generator=g)
    for k in (1, 2, 5):
        want = influence_topk(x, w, (1, 1), (1, 1), (1, 1), k, method="batched")
        got = influence_topk_fused(x, w, (1, 1), (1, 1), (1, 1), k)
        assert _triples(got) == _triples(want), (c_out, size, k)


def test_exact_integer_ties_go_to_the_lowest_input_channel() -> None:
    """Integer data makes float32 arithmetic exact, so ties are real ties."""
    g = torch.Generator().manual_seed(29)
    x = torch.randint(0, 3, (5, 9, 6, 5), generator=g).float()
    w = torch.randint(-1, 2, (40, 9, 3, 3), generator=g).float()
    exact = per_pair(x.double(), w.double(), (1, 1), (1, 1), (1, 1))
    assert any(len(set(row)) < len(row) for row in exact.flatten(0, 1).tolist())
    for k in (1, 3, 9):
        got = influence_topk_fused(x, w, (1, 1), (1, 1), (1, 1), k)
        assert set(_triples(got)) == reference_topk(exact, k)


def test_only_strictly_positive_influence_is_selected() -> None:
    x = torch.zeros(2, 4, 5, 5)
    x[0, 1] = 1.0  # channel 1 of image 0 is the only non-zero input
    w = torch.ones(3, 4, 3, 3)
    w[2] = -1.0  # output channel 2 sees only negative influence
    got = _triples(influence_topk_fused(x, w, (1, 1), (1, 1), (1, 1), 2))
    assert got == [(0, 0, 1), (0, 1, 1)]


def test_applies_to_finite_float32_on_the_cpu_only() -> None:
    x, w = torch.rand(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    assert fused_applies(x, w)
    assert not fused_applies(x.double(), w)
    assert not fused_applies(x.half(), w)
    for bad in (torch.nan, torch.inf):
        poisoned = x.clone()
        poisoned[1, 2, 3, 4] = bad
        assert not fused_applies(poisoned, w)
        weights = w.clone()
        weights[0, 0, 0, 0] = bad
        assert not fused_applies(x, weights)


def test_auto_uses_the_kernel_and_non_finite_input_falls_back(monkeypatch) -> None:
    calls: list[int] = []
    original = influence.influence_topk_fused

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(influence, "influence_topk_fused", counted)
    g = torch.Generator().manual_seed(41)
    x = torch.relu(torch.randn(3, 6, 7, 7, generator=g))
    w = torch.randn(5, 6, 3, 3, generator=g)
    want = _triples(influence_topk(x, w, (1, 1), (1, 1), (1, 1), 2, method="batched"))
    assert _triples(influence_topk(x, w, (1, 1), (1, 1), (1, 1), 2)) == want
    assert calls == [1]
    x[0, 0, 0, 0] = torch.nan  # NaN terms are never selected: the matrix products know that
    nan_want = _triples(influence_topk(x, w, (1, 1), (1, 1), (1, 1), 2, method="batched"))
    assert _triples(influence_topk(x, w, (1, 1), (1, 1), (1, 1), 2, method="fused")) == nan_want
    assert calls == [1]


def test_concurrent_calls_do_not_share_state() -> None:
    """The aggregation pass calls the kernel from worker threads at once."""
    g = torch.Generator().manual_seed(43)
    inputs = [
        (torch.relu(torch.randn(8, 9, 9, 9, generator=g)), torch.randn(33, 9, 3, 3, generator=g))
        for _ in range(4)
    ]
    want = [_triples(influence_topk_fused(x, w, (1, 1), (1, 1), (1, 1), 3)) for x, w in inputs]
    got: dict[int, list[tuple[int, ...]]] = {}

    def work(n: int) -> None:
        for _ in range(5):
            x, w = inputs[n]
            got[n] = _triples(influence_topk_fused(x, w, (1, 1), (1, 1), (1, 1), 3))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [got[n] for n in range(4)] == want


def test_first_use_from_several_threads_compiles_once(monkeypatch) -> None:
    """The influence workers may all ask for the kernel at once on the first batch."""
    import time

    from compute.summit import fused

    built: list[int] = []
    original = fused._compile

    def slow_compile():
        built.append(1)
        time.sleep(0.2)  # keep the others waiting at the lock
        return original()

    monkeypatch.setattr(fused, "_compiled", [])
    monkeypatch.setattr(fused, "_compile", slow_compile)
    found: list[object] = []
    threads = [threading.Thread(target=lambda: found.append(fused._kernel())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == [1]
    assert len(found) == 4 and all(k is found[0] for k in found) and found[0] is not None
