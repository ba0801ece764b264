"""Influence maxima and top-k: shortcut, pruning and dense paths against per-pair convs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compute.summit.activation import topk_mask
from compute.summit.influence import (
    influence_maxima,
    influence_maxima_1x1,
    influence_maxima_batched,
    influence_maxima_gemm,
    influence_maxima_pruned,
    influence_topk,
    influence_upper_bounds,
    pair_maxima,
    range_upper_bounds,
    topk_triples,
)

# torch on one thread for the whole module (fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


GEOMETRIES = [
    # kernel, stride, padding, dilation
    (3, (1, 1), (1, 1), (1, 1)),
    (3, (2, 2), (0, 0), (1, 1)),
    (3, (1, 2), (2, 1), (2, 1)),
    (5, (2, 1), (2, 2), (1, 1)),
    (1, (2, 2), (1, 1), (1, 1)),
    (1, (1, 1), (0, 0), (1, 1)),
]


def per_pair(x: torch.Tensor, w: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
    """``[B, C_out, C_in]`` by one single-channel convolution per (image, i, j)."""
    b, c_in = x.shape[:2]
    out = torch.empty(b, w.shape[0], c_in, dtype=x.dtype)
    for n in range(b):
        for i in range(w.shape[0]):
            for j in range(c_in):
                term = F.conv2d(
                    x[n, j][None, None], w[i, j][None, None], None, stride, padding, dilation
                )
                out[n, i, j] = term.max()
    return out


def reference_topk(scores: torch.Tensor, k: int) -> set[tuple[int, int, int]]:
    chosen = set()
    for n in range(scores.shape[0]):
        for i in range(scores.shape[1]):
            row = scores[n, i].tolist()
            order = sorted(range(len(row)), key=lambda j: (-row[j], j))
            chosen |= {(n, i, j) for j in order[:k] if row[j] > 0}
    return chosen


def _data(seed: int, signed: bool, kernel: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 6, 11, 10, generator=g, dtype=dtype)
    if not signed:
        x = torch.relu(x)
    w = torch.randn(5, 6, kernel, kernel, generator=g, dtype=dtype)
    return x, w


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("signed", [False, True])
def test_all_paths_agree_with_per_pair_convolutions(geometry, signed: bool) -> None:
    kernel, stride, padding, dilation = geometry
    x, w = _data(3, signed, kernel)
    exact = per_pair(x, w, stride, padding, dilation)
    dense = influence_maxima(x, w, stride, padding, dilation, budget=200)
    torch.testing.assert_close(dense, exact, rtol=1e-12, atol=1e-12)
    for tile in (7, 40, 1 << 18):  # spans inside one image, several images, everything
        gemm = influence_maxima_gemm(x, w, stride, padding, dilation, budget=500, tile=tile)
        torch.testing.assert_close(gemm, exact, rtol=1e-12, atol=1e-12)
    for tile in (1, 500, 1 << 20):  # one image per block, a few, the whole batch
        batched = influence_maxima_batched(x, w, stride, padding, dilation, tile=tile)
        torch.testing.assert_close(batched, exact, rtol=1e-12, atol=1e-12)
    assert (influence_upper_bounds(x, w, stride, padding, dilation) >= exact).all()
    want = reference_topk(exact, 2)
    for method in ("auto", "batched", "gemm", "dense", "pruned", "pruned-gemm"):
        b, i, j = influence_topk(x, w, stride, padding, dilation, 2, budget=300, method=method)
        got = set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True))
        assert got == want, method


def test_one_by_one_shortcut_is_bitwise_exact_in_float32() -> None:
    x, w = _data(4, True, 1, torch.float32)
    for stride, padding in (((1, 1), (0, 0)), ((2, 3), (1, 2))):
        exact = per_pair(x, w, stride, padding, (1, 1))
        assert torch.equal(influence_maxima_1x1(x, w, stride, padding), exact)


def test_pair_maxima_for_selected_triples() -> None:
    x, w = _data(5, True, 3)
    exact = per_pair(x, w, (1, 1), (1, 1), (1, 1))
    b = torch.tensor([0, 2, 1, 1])
    i = torch.tensor([4, 0, 3, 3])
    j = torch.tensor([5, 1, 0, 2])
    got = pair_maxima(x, w, b, i, j, (1, 1), (1, 1), (1, 1), budget=150)
    torch.testing.assert_close(got, exact[b, i, j], rtol=1e-12, atol=1e-12)


def test_integer_ties_go_to_lowest_input_channel() -> None:
    x = torch.ones(1, 4, 5, 5, dtype=torch.float64)
    w = torch.zeros(2, 4, 3, 3, dtype=torch.float64)
    w[0, :, 1, 1] = torch.tensor([1.0, 2.0, 2.0, 2.0])  # three-way tie for the top
    w[1, :, 1, 1] = torch.tensor([-1.0, 0.0, 1.0, 1.0])  # only positive ones count
    for method in ("auto", "batched", "gemm", "dense", "pruned", "pruned-gemm"):
        _, i, j = influence_topk(x, w, (1, 1), (1, 1), (1, 1), 2, method=method)
        got = sorted(zip(i.tolist(), j.tolist(), strict=True))
        assert got == [(0, 1), (0, 2), (1, 2), (1, 3)], method


def test_fewer_positive_than_k_keeps_only_positive() -> None:
    x = torch.relu(-torch.ones(2, 3, 4, 4, dtype=torch.float64))  # all zero input
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    b, _, _ = influence_topk(x, w, (1, 1), (0, 0), (1, 1), 2, method="pruned")
    assert b.numel() == 0


@pytest.mark.parametrize("tile", [5, 200, 1 << 18])
def test_auto_prunes_wide_layers_exactly(monkeypatch, tile: int) -> None:
    from compute.summit import influence

    monkeypatch.setattr(influence, "GEMM_TILE", tile)  # spans, image blocks, whole batch
    monkeypatch.setattr(influence, "PRUNE_MIN_RATIO", 12)
    g = torch.Generator().manual_seed(7)
    x = torch.relu(torch.randn(3, 30, 7, 6, generator=g, dtype=torch.float64))
    w = torch.randn(4, 30, 3, 3, generator=g, dtype=torch.float64)
    assert influence.PRUNE_MIN_RATIO * 2 <= 30  # "auto" takes the pruned GEMM path
    exact = per_pair(x, w, (1, 1), (1, 1), (1, 1))
    b, i, j = influence_topk(x, w, (1, 1), (1, 1), (1, 1), 2)
    assert set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True)) == reference_topk(exact, 2)


def test_topk_triples_equals_mask_with_ties_nan_and_non_positive() -> None:
    """One ``torch.topk`` plus the tie repair selects exactly what ``topk_mask`` selects."""
    g = torch.Generator().manual_seed(11)
    # Few distinct values: ties at the k-th value in most rows, some of them <= 0.
    scores = torch.randint(-2, 4, (6, 7, 9), generator=g).double()
    scores[0, 0, 3] = torch.nan
    scores[1, 2] = -torch.inf
    scores[2, 3] = torch.nan
    for k in (1, 2, 3, 9, 12):
        want = topk_mask(scores, k, positive_only=True).nonzero(as_tuple=True)
        got = topk_triples(scores, k)
        for w_, g_ in zip(want, got, strict=True):
            assert torch.equal(w_, g_), k  # same triples, same row-major order
    random = torch.randn(4, 5, 30, generator=g)
    want = topk_mask(random, 5).nonzero(as_tuple=True)
    assert all(torch.equal(a, b) for a, b in zip(want, topk_triples(random, 5), strict=True))


def test_auto_picks_batched_for_small_layers_only() -> None:
    from compute.summit import influence

    small = torch.zeros(64, 64, 3, 3)
    assert influence.batched_fits(small, 16)  # demo conv4: 64 x 16 positions x 64
    assert not influence.batched_fits(torch.zeros(256, 256, 3, 3), 56 * 56)  # VGG conv


def test_thread_cap_is_restored(monkeypatch) -> None:
    from compute.summit import influence

    monkeypatch.setattr(influence, "INFLUENCE_THREADS", 1)
    torch.set_num_threads(2)  # the module fixture restores the previous setting
    try:
        x, w = _data(9, False, 3)
        exact = per_pair(x, w, (1, 1), (1, 1), (1, 1))
        b, i, j = influence_topk(x, w, (1, 1), (1, 1), (1, 1), 2)
        assert torch.get_num_threads() == 2
        assert set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True)) == reference_topk(exact, 2)
        with pytest.raises(RuntimeError), influence.intra_op_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("signed", [False, True])
def test_range_bounds_hold_for_every_pair(geometry, signed: bool) -> None:
    kernel, stride, padding, dilation = geometry
    for dtype in (torch.float64, torch.float32):
        x, w = _data(5, signed, kernel, dtype=dtype)
        exact = per_pair(x, w, stride, padding, dilation)
        assert bool((range_upper_bounds(x, w, padding) >= exact).all())


@pytest.mark.parametrize("geometry", GEOMETRIES[:4])
@pytest.mark.parametrize("signed", [False, True])
def test_pruned_bmm_equals_per_pair_top_k(geometry, signed: bool) -> None:
    """Top-k of the pruned scores is the reference's; what is computed is exact."""
    kernel, stride, padding, dilation = geometry
    g = torch.Generator().manual_seed(13)
    x = torch.randn(4, 23, 9, 10, generator=g, dtype=torch.float64)
    if not signed:
        x = torch.relu(x)
    w = torch.randn(6, 23, kernel, kernel, generator=g, dtype=torch.float64)
    exact = per_pair(x, w, stride, padding, dilation)
    for k in (1, 3, 5, 23, 30):
        # tiny tiles and column budgets: one item per product, one image per block
        for tile, columns in ((1, 1), (300, 5000), (1 << 18, 1 << 22)):
            scores = influence_maxima_pruned(x, w, stride, padding, dilation, k, tile, columns)
            computed = torch.isfinite(scores)
            torch.testing.assert_close(scores[computed], exact[computed], rtol=1e-12, atol=1e-12)
            b, i, j = topk_triples(scores, k)
            got = set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True))
            assert got == reference_topk(exact, k), (k, tile)


def test_pruned_bmm_skips_pairs_that_cannot_reach_the_top_k() -> None:
    """Channels of very different scale (as in trained nets): most pairs are never computed."""
    g = torch.Generator().manual_seed(29)
    scale = torch.logspace(-2, 1, 30, dtype=torch.float64)[torch.randperm(30, generator=g)]
    x = torch.relu(torch.randn(3, 30, 8, 8, generator=g, dtype=torch.float64))
    x *= scale[:, None, None]
    w = torch.randn(7, 30, 3, 3, generator=g, dtype=torch.float64)
    exact = per_pair(x, w, (1, 1), (1, 1), (1, 1))
    scores = influence_maxima_pruned(x, w, (1, 1), (1, 1), (1, 1), 3, tile=100)
    assert torch.isfinite(scores).float().mean() < 0.5
    b, i, j = topk_triples(scores, 3)
    assert set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True)) == reference_topk(exact, 3)


def test_pruned_bmm_values_equal_the_batched_products_in_float32() -> None:
    """Pruned exact values come from the same products, within float32 rounding (bit for bit
    on some CPUs; on others the BLAS picks another kernel for the pruned shapes and a few
    values differ in the last bit), and select the same top-k."""
    g = torch.Generator().manual_seed(17)
    x = torch.relu(torch.randn(5, 40, 12, 12, generator=g))
    w = torch.randn(24, 40, 3, 3, generator=g)
    dense = influence_maxima_batched(x, w, (1, 1), (1, 1), (1, 1))
    scores = influence_maxima_pruned(x, w, (1, 1), (1, 1), (1, 1), 5, tile=4096)
    computed = torch.isfinite(scores)
    torch.testing.assert_close(scores[computed], dense[computed], rtol=1e-6, atol=0)
    for got, want in zip(topk_triples(scores, 5), topk_triples(dense, 5), strict=True):
        assert torch.equal(got, want)


def test_pruned_bmm_breaks_integer_ties_by_lowest_input_channel() -> None:
    g = torch.Generator().manual_seed(19)
    x = torch.randint(0, 3, (3, 20, 6, 6), generator=g).double()
    w = torch.randint(-1, 2, (5, 20, 3, 3), generator=g).double()
    exact = per_pair(x, w, (1, 1), (1, 1), (1, 1))
    for k in (1, 2, 4):
        scores = influence_maxima_pruned(x, w, (1, 1), (1, 1), (1, 1), k, tile=50)
        b, i, j = topk_triples(scores, k)
        assert set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True)) == reference_topk(exact, k)


def test_auto_prunes_wide_layers_and_falls_back_on_non_finite_input(monkeypatch) -> None:
    from compute.summit import influence

    calls: list[int] = []
    original = influence.influence_maxima_pruned

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(influence, "influence_maxima_pruned", spy)
    monkeypatch.setattr(influence, "BATCHED_TILE", 10)  # "batched" does not fit
    monkeypatch.setattr(influence, "PRUNE_MIN_RATIO", 4)
    g = torch.Generator().manual_seed(23)
    x = torch.relu(torch.randn(2, 12, 7, 7, generator=g, dtype=torch.float64))
    w = torch.randn(3, 12, 3, 3, generator=g, dtype=torch.float64)
    exact = per_pair(x, w, (1, 1), (1, 1), (1, 1))
    b, i, j = influence_topk(x, w, (1, 1), (1, 1), (1, 1), 3)
    assert calls == [1]
    assert set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True)) == reference_topk(exact, 3)
    influence_topk(x, w, (1, 1), (1, 1), (1, 1), 4)  # 12 < 4 * 4: dense
    assert calls == [1]
    x[1, 3, 2, 2] = torch.nan  # bounds need finite numbers: the dense path, same selection
    want = influence_topk(x, w, (1, 1), (1, 1), (1, 1), 3, method="gemm")
    got = influence_topk(x, w, (1, 1), (1, 1), (1, 1), 3)
    assert calls == [1]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_topk_triples_all_positive_rows_with_ties() -> None:
    """The no-filter fast path (every row has k positive entries) keeps the exact order."""
    g = torch.Generator().manual_seed(41)
    scores = torch.randint(1, 4, (5, 6, 8), generator=g).float()  # positive, tied everywhere
    for k in (1, 3, 7, 8):
        want = topk_mask(scores, k, positive_only=True).nonzero(as_tuple=True)
        got = topk_triples(scores, k)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True)), k


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_strided_columns_equal_unfold(geometry) -> None:
    """im2col by one strided copy holds exactly the taps ``F.unfold`` reads."""
    from compute.summit.influence import _columns, _columns_by_image

    kernel, stride, padding, dilation = geometry
    x, _ = _data(13, True, kernel)
    unfolded = F.unfold(x, (kernel, kernel), dilation, padding, stride)  # [B, C*T, P]
    b, c = x.shape[:2]
    want = unfolded.view(b, c, kernel * kernel, -1)
    assert torch.equal(_columns_by_image(x, (kernel, kernel), stride, padding, dilation), want)
    cols = _columns(x, (kernel, kernel), stride, padding, dilation)  # [C, T, B, Ho, Wo]
    assert cols.is_contiguous()
    assert torch.equal(cols.flatten(3).permute(2, 0, 1, 3), want)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("batch", [1, 3])
def test_input_major_maxima_and_selection_equal_per_pair(geometry, batch: int) -> None:
    """The ``"batched"`` path keeps ``[C_in, B, C_out]`` and selects from it directly."""
    from compute.summit.influence import influence_maxima_input_major

    kernel, stride, padding, dilation = geometry
    x, w = _data(17, False, kernel)
    x = x[:batch]
    exact = per_pair(x, w, stride, padding, dilation)
    for tile in (1, 700, 1 << 20):  # one image per block, a few, the whole batch
        maxima = influence_maxima_input_major(x, w, stride, padding, dilation, tile)
        assert maxima.shape == (w.shape[1], batch, w.shape[0])
        torch.testing.assert_close(maxima.permute(1, 2, 0), exact, rtol=1e-12, atol=1e-12)
    for k in (1, 2, 6, 9):
        b, i, j = influence_topk(x, w, stride, padding, dilation, k, method="batched")
        assert set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True)) == reference_topk(exact, k)


def _tricky_scores(g: torch.Generator, shape: tuple[int, int, int], dtype) -> torch.Tensor:
    """Few distinct values (ties at the k-th place), signed zeros, NaN and infinities."""
    scores = torch.randint(-3, 4, shape, generator=g).to(dtype)
    scores[scores == 0] = -0.0
    flat = scores.view(-1)
    flat[::7] = 0.0
    flat[2::11] = torch.nan
    flat[3::13] = torch.inf
    flat[5::17] = -torch.inf
    return scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("chunk", [1, 40, 1 << 17])
def test_packed_selection_equals_topk_mask(monkeypatch, dtype, chunk: int) -> None:
    """Packed int64 keys select exactly what ``topk_mask`` selects: ties to the lowest
    ``j``, only strictly positive scores (not ``-0.0``), NaN never; chunked or not."""
    from compute.summit import influence

    monkeypatch.setattr(influence, "SELECT_CHUNK", chunk)
    g = torch.Generator().manual_seed(19)
    for shape in ((7, 1, 5), (9, 4, 3), (1, 3, 2), (30, 5, 4)):  # [C_in, B, C_out]
        tricky = _tricky_scores(g, shape, dtype)
        smooth = torch.randn(shape, generator=g).to(dtype)
        positive = torch.randint(1, 3, shape, generator=g).to(dtype)  # every row has k
        for maxima in (tricky, smooth, positive):
            rows = maxima.permute(1, 2, 0)  # [B, C_out, C_in]
            for k in (1, 2, 5, 40):
                want = topk_mask(rows, k, positive_only=True).nonzero(as_tuple=True)
                got = influence.topk_triples_input_major(maxima, k)
                for w_, g_ in zip(want, got, strict=True):
                    assert torch.equal(w_, g_), (shape, k)  # same triples, same order


def test_float32_integer_ties_go_to_lowest_input_channel_on_the_batched_path() -> None:
    """float32 takes the packed selection; exact integer arithmetic makes real ties."""
    g = torch.Generator().manual_seed(29)
    x = torch.randint(0, 3, (5, 7, 6, 5), generator=g).float()
    w = torch.randint(-1, 2, (4, 7, 3, 3), generator=g).float()
    exact = per_pair(x.double(), w.double(), (1, 1), (1, 1), (1, 1))
    for k in (1, 3, 7):
        b, i, j = influence_topk(x, w, (1, 1), (1, 1), (1, 1), k, method="batched")
        got = set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True))
        assert got == reference_topk(exact, k)
        assert any(len(set(row)) < len(row) for row in exact.flatten(0, 1).tolist())
