"""Summit's per-image neuron influence through one convolution, computed fast and exactly.

For a convolution with weight ``K [C_out, C_in, kh, kw]`` and actual input ``X``, the
influence of input channel ``j`` on output channel ``i`` in one image is::

    inf_ij = max over output positions p of (X_j ⋆ K_ij)(p)

at the convolution's stride, zero padding and dilation, without bias. Per (image, i) the
``k`` input channels with the largest strictly positive ``inf_ij`` are counted (ties: lowest
``j``).

Materialising all ``C_out × C_in × positions`` terms is what made the original slow. Here:

* on CPU, k×k convolutions with finite float32 input run through the compiled kernel of
  :mod:`compute.summit.fused` (``"fused"``, chosen by ``"auto"`` while :data:`FUSED`):
  maxima and top-k in vector registers, no term ever written to memory. The paths below
  are the GPU's, the fallback where that kernel cannot run, and cross-checks in tests.
* 1×1 convolutions need no convolution at all: ``max_p K_ij X_j(p)`` is ``K_ij max X_j`` if
  ``K_ij >= 0`` else ``K_ij min X_j`` (over the sampled positions, padding zeros included).
* small k×k layers (``"batched"``, chosen by ``"auto"`` when one image's
  ``C_in × positions × C_out`` fits :data:`BATCHED_TILE`, 1M elements = 4 MB in float32):
  per block of images, im2col of the block and one batched product over all input channels
  ``[C_in, n*P, T] @ [C_in, T, C_out]``, reduced over positions at once. Memory per block:
  the product (≤ the tile) plus its columns (``T/C_out`` of that).
* other k×k convolutions (``"gemm"``): per input channel ``j``, one matrix product of its
  im2col columns ``[positions, kh*kw]`` with ``K_:j`` ``[kh*kw, C_out]``, in cache-sized
  tiles whose maximum over positions is taken at once. On CPU this runs 5-20× faster than
  grouped or depthwise convolutions, which fall off the fast GEMM kernels.
* wide k×k layers (``"pruned-bmm"``, chosen by ``"auto"`` when ``C_in >=``
  :data:`PRUNE_MIN_RATIO` ``* k`` and ``"batched"`` does not fit): rigorous range bounds
  ``UB_ij = ΣK⁺·max X_j + ΣK⁻·min X_j`` (plus a rounding margin, no convolution); exact
  values first for the ``k`` best-bounded pairs of each (image, output channel), then for
  every pair whose bound reaches the smallest of those; the (image, input channel) items
  are sorted by how many output channels they need and multiplied in groups
  ``[G, M, T] @ [G, T, P]``. On VGG-11 at 28×28 it computes 5-11% of the pairs.
* ``"pruned"`` (optional): rigorous upper bounds ``UB_ij >= inf_ij`` (a range bound
  ``ΣK⁺·max X + ΣK⁻·min X`` and a Cauchy–Schwarz bound ``‖K‖·max_p ‖patch_p(X_j)‖``,
  widened by a rounding margin) rule out pairs that cannot reach the k-th exact value of the
  ``k`` best-bounded pairs; the rest are computed by one depthwise convolution. Exact, and
  it skips 65-90% of the pairs on VGG-11, but depthwise convolution is so slow on CPU that
  it loses to ``"gemm"`` there; kept for accelerators and as an independent check.
* ``"dense"``: grouped convolution (``groups=C_in``) chunked over output channels; the
  simplest exact path, used as a cross-check in tests.

All paths give the same top-k (tests compare them with per-pair convolutions).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compute.summit.activation import intra_op_threads, topk_mask
from compute.summit.conv_geometry import Pair, conv_output_hw, conv_output_size, zero_padded
from compute.summit.fused import fused_applies, influence_topk_fused

logger = logging.getLogger(__name__)

#: Default bound on the elements of any intermediate tensor (64M, 256 MB in float32).
DEFAULT_BUDGET = 64 * 1024 * 1024


#: Whether ``"auto"`` runs k×k layers through the compiled kernel of
#: :mod:`compute.summit.fused` where it applies (float32 on the CPU, finite values):
#: terms stay in registers, 3-5× faster than the matrix products on the demo CNN.
FUSED = True

#: Intra-op CPU threads for the influence step (``None``: whatever torch uses). The step
#: is hundreds of ~1-4 MB operations per batch; with 2 threads on a shared 2-core machine
#: every one of them waits for the slower thread, which measured 5-10× slower in wall time
#: (and in CPU time, spinning) than one thread, while the forward pass, a few big
#: convolutions, still gains from 2. Only CPU ops are affected.
INFLUENCE_THREADS: int | None = 1


def conv_geometry(conv: nn.Conv2d) -> tuple[Pair, Pair, Pair]:
    """``(stride, padding, dilation)`` of a convolution as integer pairs."""
    padding = conv.padding
    if isinstance(padding, str):
        raise ValueError(f"string padding {padding!r} is not supported")
    return (
        (int(conv.stride[0]), int(conv.stride[1])),
        (int(padding[0]), int(padding[1])),
        (int(conv.dilation[0]), int(conv.dilation[1])),
    )


def _sampled_1x1(x: Tensor, stride: Pair, padding: Pair) -> Tensor:
    """The input positions a 1×1 convolution reads (zero padding included): ``[B, C, Ho, Wo]``."""
    if padding != (0, 0):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    return x[:, :, :: stride[0], :: stride[1]]


def influence_maxima_1x1(x: Tensor, weight: Tensor, stride: Pair, padding: Pair) -> Tensor:
    """All ``inf_ij`` of a 1×1 convolution without any convolution.

    Rounding is monotone, so ``max_p round(K x_p) == round(K max_p x_p)`` for ``K >= 0``
    (and with ``min`` for ``K < 0``): the result equals the direct computation bit for bit.

    Args:
        x: ``[B, C_in, H, W]`` the convolution's input.
        weight: ``[C_out, C_in, 1, 1]``.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.

    Returns:
        ``[B, C_out, C_in]`` influence maxima.
    """
    sampled = _sampled_1x1(x, stride, padding)
    high = sampled.amax(dim=(2, 3))[:, None, :]  # [B, 1, C_in]
    low = sampled.amin(dim=(2, 3))[:, None, :]
    k = weight[:, :, 0, 0].to(x.dtype)[None]  # [1, C_out, C_in]
    return torch.where(k >= 0, k * high, k * low)


def influence_maxima(
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    budget: int = DEFAULT_BUDGET,
) -> Tensor:
    """All ``inf_ij`` by grouped convolution, chunked over output channels (dense, slow).

    Used when most pairs are needed anyway and as an independent cross-check in tests.

    Args:
        x: ``[B, C_in, H, W]`` the convolution's input.
        weight: ``[C_out, C_in, kh, kw]``.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.
        dilation: the convolution's dilation.
        budget: maximum elements of the per-chunk intermediate ``[B, C_in*n, Ho, Wo]``.

    Returns:
        ``[B, C_out, C_in]`` influence maxima.
    """
    c_out, c_in, kh, kw = weight.shape
    if (kh, kw) == (1, 1):
        return influence_maxima_1x1(x, weight, stride, padding)
    b, _, h, w = x.shape
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    weight = weight.to(x.dtype)
    out = torch.empty((b, c_out, c_in), dtype=x.dtype, device=x.device)
    batch_step = max(1, min(b, budget // max(1, c_in * ho * wo)))
    channel_step = max(1, budget // max(1, batch_step * c_in * ho * wo))
    for b0 in range(0, b, batch_step):
        xb = x[b0 : b0 + batch_step]
        for i0 in range(0, c_out, channel_step):
            chunk = weight[i0 : i0 + channel_step]  # [n, C_in, kh, kw]
            n = chunk.shape[0]
            # Group j holds the n filters K_{i0..i0+n, j}: output channel j*n + m.
            grouped = chunk.transpose(0, 1).reshape(c_in * n, 1, kh, kw)
            terms = F.conv2d(xb, grouped, None, stride, padding, dilation, groups=c_in)
            maxima = terms.amax(dim=(2, 3)).view(xb.shape[0], c_in, n)
            out[b0 : b0 + batch_step, i0 : i0 + n] = maxima.transpose(1, 2)
    return out


#: ``"auto"`` prunes with bounds (:func:`influence_maxima_pruned`) when ``C_in >= ratio * k``
#: and one image's product does not fit :data:`BATCHED_TILE` (``None``: never). On VGG-11
#: at 28×28 (256-512 input channels, k = 5) the range bounds leave 5-11% of the pairs and
#: the step runs ~1.4-1.6× faster than ``"gemm"``; on narrow layers (the demo CNN, 16-64
#: channels, 30-80% of pairs left) the per-item bookkeeping costs more than it saves.
PRUNE_MIN_RATIO: int | None = 16

#: Elements of one GEMM output tile in :func:`influence_maxima_gemm` (~1 MB in float32:
#: small enough to stay in cache between the product and its max).
GEMM_TILE = 1 << 18


def influence_maxima_gemm(
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    budget: int = DEFAULT_BUDGET,
    tile: int = GEMM_TILE,
) -> Tensor:
    """All ``inf_ij`` by one small matrix product per input channel (dense, fast on CPU).

    For input channel ``j``, ``im2col(X_j)`` is ``[T, positions]`` (``T = kh*kw``) and
    ``im2col(X_j)ᵀ @ K_:jᵀ`` gives every term ``(X_j ⋆ K_ij)(p)`` for all ``i`` at once.
    Products are taken in cache-sized tiles and reduced to their maximum immediately, so the
    ``C_out × C_in × positions`` intermediate never exists. Matrix products run at close to
    the convolution's own speed, unlike depthwise convolutions with many groups.

    Args:
        x: ``[B, C_in, H, W]`` the convolution's input.
        weight: ``[C_out, C_in, kh, kw]``.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.
        dilation: the convolution's dilation.
        budget: maximum elements of the unfolded input held at once.
        tile: target elements of one product tile.

    Returns:
        ``[B, C_out, C_in]`` influence maxima.
    """
    c_out, c_in = weight.shape[:2]
    out = torch.empty((x.shape[0], c_out, c_in), dtype=x.dtype, device=x.device)
    _gemm_fill(out, None, x, weight, stride, padding, dilation, budget, tile)
    return out


#: Default elements of one batched product ``[C_in, images*positions, C_out]`` in
#: :func:`influence_maxima_input_major` (4 MB in float32; ``"auto"`` runs it in smaller
#: :data:`BATCHED_BLOCK` blocks). Layers where one image's ``C_in * positions * C_out``
#: exceeds this take the per-channel ``"gemm"`` path.
BATCHED_TILE = 1 << 20


#: Elements of one block's product in :func:`influence_maxima_input_major` as ``"auto"``
#: runs it (2 MB in float32: the product stays in a 2 MB L2 between the GEMM and its max;
#: on the demo CNN 1M-element blocks spent ~1.5x as long in the max).
BATCHED_BLOCK = 1 << 18

#: Keys selected at once by :func:`topk_triples_input_major` (int64: 1 MB, in L2 for the
#: ``k`` rounds over them).
SELECT_CHUNK = 1 << 17


def batched_fits(weight: Tensor, positions: int, tile: int = BATCHED_TILE) -> bool:
    """Whether one image's full product ``C_in * positions * C_out`` fits in ``tile``.

    The deterministic rule by which ``"auto"`` picks :func:`influence_maxima_input_major`
    (small maps and few channels: the demo CNN, late VGG layers) over the per-channel loop.
    """
    c_out, c_in = weight.shape[:2]
    return c_in * positions * c_out <= tile


def influence_maxima_batched(
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    tile: int = BATCHED_TILE,
) -> Tensor:
    """All ``inf_ij`` as ``[B, C_out, C_in]`` (a permuted view of
    :func:`influence_maxima_input_major`, which see)."""
    return influence_maxima_input_major(x, weight, stride, padding, dilation, tile).permute(1, 2, 0)


def influence_maxima_input_major(
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    tile: int = BATCHED_TILE,
) -> Tensor:
    """All ``inf_ij`` by one batched matrix product per block of images (small layers).

    For a block of ``n`` images, ``im2col`` of the block is ``[C_in, T, n*P]`` (one strided
    copy) and one ``bmm`` with the kernels ``[C_in, T, C_out]`` gives every term
    ``(X_j ⋆ K_ij)(p)`` as ``[C_in, n*P, C_out]``, reduced over ``P`` at once straight into
    the result. Compared with :func:`influence_maxima_gemm` this replaces ``C_in`` tiny
    products per block by one (fewer, bigger ops: less Python and thread-pool overhead)
    and builds the columns per block, so they are still in cache when the product reads
    them. The result keeps the product's input-major layout (no transposing copy);
    :func:`topk_triples_input_major` selects from it directly.

    Memory: the block's columns ``C_in*T*n*P`` plus the product ``C_in*n*P*C_out``
    (``<= tile`` elements, one image at least).

    Args:
        x: ``[B, C_in, H, W]`` the convolution's input.
        weight: ``[C_out, C_in, kh, kw]``.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.
        dilation: the convolution's dilation.
        tile: target elements of one block's product.

    Returns:
        ``[C_in, B, C_out]`` influence maxima.
    """
    c_out, c_in, kh, kw = weight.shape
    batch = x.shape[0]
    taps = kh * kw
    kernels = weight.to(x.dtype).permute(1, 2, 3, 0).reshape(c_in, taps, c_out).contiguous()
    ho, wo = conv_output_hw(x, (kh, kw), stride, padding, dilation)
    positions = ho * wo
    out = torch.empty((c_in, batch, c_out), dtype=x.dtype, device=x.device)
    step = max(1, min(batch, tile // max(1, c_in * positions * c_out)))
    padded = zero_padded(x, padding)  # once: each block's columns are then one strided copy
    for b0 in range(0, batch, step):
        n = min(step, batch - b0)
        taps_view = _tap_view(padded[b0 : b0 + n], (kh, kw), stride, dilation, (ho, wo), True)
        cols = taps_view.reshape(c_in, taps, n * positions)
        # [C_in, T, n*P]ᵀ @ [C_in, T, C_out]: the transposed operand is a strided view,
        # which the BLAS takes as is (no copy).
        terms = torch.bmm(cols.transpose(1, 2), kernels)
        torch.amax(terms.view(c_in, n, positions, c_out), dim=2, out=out[:, b0 : b0 + n])
    return out


def _gemm_fill(
    out: Tensor,
    mask: Tensor | None,
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    budget: int,
    tile: int,
) -> None:
    """Write exact ``inf_ij`` into ``out [B, C_out, C_in]`` where ``mask`` (or everywhere).

    A tile (input channel ``j``, block of images) multiplies only the output channels that
    some image of the block needs; entries outside ``mask`` may be written too (exactly).
    """
    c_out, c_in, kh, kw = weight.shape
    batch = x.shape[0]
    taps = kh * kw
    # per input channel: [T, C_out], contiguous for the right-hand side of the product
    kernels = weight.to(x.dtype).permute(1, 2, 3, 0).reshape(c_in, taps, c_out).contiguous()
    ho, wo = conv_output_hw(x, (kh, kw), stride, padding, dilation)
    positions = ho * wo
    group = max(1, min(c_in, budget // (taps * batch * positions)))
    images_per_tile = max(1, min(batch, tile // max(1, c_out * positions)))
    span = max(1, tile // c_out)  # positions per tile when one image is too large
    for j0 in range(0, c_in, group):
        if mask is not None and not bool(mask[:, :, j0 : j0 + group].any()):
            continue
        cols = _columns(x[:, j0 : j0 + group], (kh, kw), stride, padding, dilation)
        for jj in range(cols.shape[0]):
            j = j0 + jj
            rows = cols[jj].view(taps, batch * positions)  # [T, B*P]; used transposed
            if positions <= span:
                for b0 in range(0, batch, images_per_tile):
                    n = min(images_per_tile, batch - b0)
                    block = rows[:, b0 * positions : (b0 + n) * positions].t()
                    if mask is None:
                        terms = block @ kernels[j]
                        out[b0 : b0 + n, :, j] = terms.view(n, positions, c_out).amax(dim=1)
                        continue
                    wanted = mask[b0 : b0 + n, :, j].any(dim=0).nonzero().squeeze(1)
                    if wanted.numel() == 0:
                        continue
                    terms = block @ kernels[j][:, wanted]
                    best = terms.view(n, positions, wanted.numel()).amax(dim=1)
                    out[b0 : b0 + n, wanted, j] = best
                continue
            for b in range(batch):  # one image exceeds a tile: running max over spans
                if mask is not None and not bool(mask[b, :, j].any()):
                    continue
                best = None
                for p0 in range(b * positions, (b + 1) * positions, span):
                    p1 = min(p0 + span, (b + 1) * positions)
                    part = (rows[:, p0:p1].t() @ kernels[j]).amax(dim=0)
                    best = part if best is None else torch.maximum(best, part)
                out[b, :, j] = best


def _tap_view(
    padded: Tensor, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair, taps_first: bool
) -> Tensor:
    """Every tap of every output position as a strided view of ``padded [B, C, H', W']``.

    ``taps_first``: ``[C, kh, kw, B, Ho, Wo]``, else ``[B, C, kh, kw, Ho, Wo]``. Element
    ``(c, ky, kx, b, oy, ox)`` is ``padded[b, c, oy*sh + ky*dh, ox*sw + kx*dw]``: nothing is
    copied until the caller reshapes, which then costs one strided copy (instead of one copy
    per tap, which dominated on small maps).
    """
    batch, channels, hp, wp = padded.shape
    ho, wo = out_hw
    size_c, size_b = hp * wp, channels * hp * wp
    strides_taps = (dilation[0] * wp, dilation[1])
    strides_out = (stride[0] * wp, stride[1])
    if taps_first:
        return padded.as_strided(
            (channels, kernel[0], kernel[1], batch, ho, wo),
            (size_c, *strides_taps, size_b, *strides_out),
            padded.storage_offset(),
        )
    return padded.as_strided(
        (batch, channels, kernel[0], kernel[1], ho, wo),
        (size_b, size_c, *strides_taps, *strides_out),
        padded.storage_offset(),
    )


def _columns(x: Tensor, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Tensor:
    """im2col with taps before images: ``[C, T, B, Ho, Wo]`` from ``x [B, C, H, W]``.

    One padding copy and one strided copy (:func:`_tap_view`), whatever the kernel size;
    contiguous, so ``cols[c]`` views as ``[T, B*Ho*Wo]``.
    """
    batch, channels = x.shape[:2]
    ho, wo = conv_output_hw(x, kernel, stride, padding, dilation)
    view = _tap_view(zero_padded(x, padding), kernel, stride, dilation, (ho, wo), True)
    # reshape copies unless the taps happen to be a plain view (1×1, stride 1): then the
    # view may still be strided, and callers need it contiguous
    return view.reshape(channels, kernel[0] * kernel[1], batch, ho, wo).contiguous()


def pair_maxima(
    x: Tensor,
    weight: Tensor,
    b: Tensor,
    i: Tensor,
    j: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    budget: int = DEFAULT_BUDGET,
) -> Tensor:
    """``inf_ij`` of image ``b`` for a list of (image, output, input) triples.

    One depthwise convolution over the gathered channels ``x[b, j]`` with filters
    ``weight[i, j]``, in chunks of at most ``budget`` elements.

    Args:
        x: ``[B, C_in, H, W]`` the convolution's input.
        weight: ``[C_out, C_in, kh, kw]``.
        b: ``int64 [T]`` image of each triple.
        i: ``int64 [T]`` output channel.
        j: ``int64 [T]`` input channel.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.
        dilation: the convolution's dilation.
        budget: maximum elements gathered plus produced per chunk.

    Returns:
        ``[T]`` maxima, dtype of ``x``.
    """
    _, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    total = b.shape[0]
    out = torch.empty(total, dtype=x.dtype, device=x.device)
    step = max(1, budget // (h * w + ho * wo))
    weight = weight.to(x.dtype)
    for t0 in range(0, total, step):
        bb, ii, jj = b[t0 : t0 + step], i[t0 : t0 + step], j[t0 : t0 + step]
        gathered = x[bb, jj].unsqueeze(0)  # [1, T, H, W]
        filters = weight[ii, jj].unsqueeze(1)  # [T, 1, kh, kw]
        terms = F.conv2d(gathered, filters, None, stride, padding, dilation, groups=bb.shape[0])
        out[t0 : t0 + step] = terms[0].amax(dim=(1, 2))
    return out


#: Elements of one product ``[items, positions, columns]`` in :func:`influence_maxima_pruned`
#: (1 MB in float32: the product and the columns it reads stay in L2 until reduced).
PRUNED_TILE = 1 << 18

#: Elements of the unfolded input ``[images, C_in, taps, positions]`` built at once by
#: :func:`influence_maxima_pruned` (16 MB in float32); one image at least.
PRUNED_COLUMNS = 1 << 22


def range_upper_bounds(x: Tensor, weight: Tensor, padding: Pair) -> Tensor:
    """Rigorous, cheap upper bounds ``UB_ij >= inf_ij`` from each input channel's range.

    Every tap of ``K_ij`` reads a value in ``[min X_j, max X_j]`` (zero included when the
    convolution pads), so ``inf_ij <= Σ K⁺_ij · max X_j + Σ K⁻_ij · min X_j``. A margin of
    ``4 (T + 4) ε Σ|K_ij| max(|max X_j|, |min X_j|)`` covers rounding in both this bound and
    the exact sums of ``T`` products it is compared with. ``O(B · C_out · C_in)``: no
    convolution.

    Args:
        x: ``[B, C_in, H, W]`` the convolution's input (finite).
        weight: ``[C_out, C_in, kh, kw]``.
        padding: the convolution's (zero) padding.

    Returns:
        ``[B, C_out, C_in]`` bounds, dtype of ``x``.
    """
    taps = weight.to(x.dtype).flatten(2)  # [C_out, C_in, T]
    high = x.amax(dim=(2, 3))  # [B, C_in]
    low = x.amin(dim=(2, 3))
    if padding != (0, 0):
        high, low = high.clamp(min=0), low.clamp(max=0)
    positive = taps.clamp(min=0).sum(-1)  # [C_out, C_in]
    negative = taps.clamp(max=0).sum(-1)
    eps = torch.finfo(x.dtype).eps
    margin = (4.0 * (taps.shape[-1] + 4) * eps) * taps.abs().sum(-1)
    reach = torch.maximum(high.abs(), low.abs())
    bound = high[:, None, :] * positive + low[:, None, :] * negative
    return bound.addcmul_(reach[:, None, :], margin)


def _columns_by_image(
    x: Tensor, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair
) -> Tensor:
    """im2col with images first: ``[B, C, T, Ho*Wo]`` from ``x [B, C, H, W]`` (one copy)."""
    batch, channels = x.shape[:2]
    ho, wo = conv_output_hw(x, kernel, stride, padding, dilation)
    view = _tap_view(zero_padded(x, padding), kernel, stride, dilation, (ho, wo), False)
    return view.reshape(batch, channels, kernel[0] * kernel[1], ho * wo).contiguous()


def influence_maxima_pruned(
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    k: int,
    tile: int = PRUNED_TILE,
    columns: int = PRUNED_COLUMNS,
) -> Tensor:
    """``[B, C_out, C_in]`` scores equal to ``inf_ij`` wherever it can reach the top-k.

    Exact top-k with most pairs skipped: :func:`range_upper_bounds` ``UB`` for every pair;
    round 1 computes the ``k`` pairs of best bound per (image, output channel), whose
    smallest exact value ``θ`` (or 0) is a lower bound on the row's k-th value; round 2
    computes every other pair with ``UB >= θ`` and ``UB > 0``. A skipped pair has
    ``inf <= UB < θ <= k-th value`` (or ``inf <= 0``), so it can never be selected; skipped
    pairs are ``-inf``. Pairs that are computed may also include a few extra ones (padding
    of a product), always with their exact value.

    Exact values come from the same products as :func:`influence_maxima_batched`: the
    items ``(image, input channel)`` that need work are sorted by how many output channels
    they need and multiplied in groups, ``[G, P, T] @ [G, T, M]`` with the group's kernels
    gathered to ``M`` columns, then reduced over positions at once.

    Args:
        x: ``[B, C_in, H, W]`` the convolution's input (finite).
        weight: ``[C_out, C_in, kh, kw]``.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.
        dilation: the convolution's dilation.
        k: input channels kept per (image, output channel).
        tile: target elements of one group's product.
        columns: elements of unfolded input built at once (one image at least).

    Returns:
        ``[B, C_out, C_in]`` scores.
    """
    c_out, c_in, kh, kw = weight.shape
    batch = x.shape[0]
    k = min(k, c_in)
    bound = range_upper_bounds(x, weight, padding)
    scores = torch.full_like(bound, -torch.inf)
    if k == 0 or bound.numel() == 0:
        return scores
    first = torch.topk(bound, k, dim=-1).indices  # [B, C_out, k]
    chosen = torch.zeros_like(bound, dtype=torch.bool).scatter_(-1, first, True)
    chosen &= bound > 0
    kernels = weight.to(x.dtype).permute(1, 2, 3, 0).reshape(c_in, kh * kw, c_out).contiguous()
    ho, wo = conv_output_hw(x, (kh, kw), stride, padding, dilation)
    step = max(1, min(batch, columns // max(1, c_in * kh * kw * ho * wo)))
    for b0 in range(0, batch, step):
        xb = x[b0 : b0 + step]
        cols = _columns_by_image(xb, (kh, kw), stride, padding, dilation)
        part = scores[b0 : b0 + step]
        _exact_into(part, chosen[b0 : b0 + step], cols, kernels, tile)
        found = torch.nan_to_num(part.gather(-1, first[b0 : b0 + step]), nan=-torch.inf)
        theta = found.amin(dim=-1, keepdim=True).clamp(min=0)
        sure = bound[b0 : b0 + step]
        needed = (sure >= theta) & (sure > 0) & ~chosen[b0 : b0 + step]
        _exact_into(part, needed, cols, kernels, tile)
    return scores


def _exact_into(scores: Tensor, needed: Tensor, cols: Tensor, kernels: Tensor, tile: int) -> None:
    """Write exact ``inf_ij`` into ``scores [n, C_out, C_in]`` wherever ``needed``.

    Args:
        scores: ``[n, C_out, C_in]`` written in place.
        needed: ``bool [n, C_out, C_in]``.
        cols: ``[n, C_in, T, P]`` the images' columns.
        kernels: ``[C_in, T, C_out]``.
        tile: target elements of one product.
    """
    n, c_out, c_in = scores.shape
    taps, positions = cols.shape[2], cols.shape[3]
    per_item = needed.transpose(1, 2).reshape(n * c_in, c_out)  # item = b * C_in + j
    counts = per_item.sum(dim=1)
    order = torch.argsort(counts, descending=True, stable=True)
    widths = counts[order].tolist()
    busy = next((t for t, m in enumerate(widths) if m == 0), len(widths))
    if busy == 0:
        return
    # Slot s of a row holds the s-th needed output channel; unused slots hold channel 0
    # (computed exactly as well, which is harmless).
    slot = torch.cumsum(per_item, dim=1) - 1
    slot = torch.where(per_item, slot, c_out)
    index = torch.zeros((n * c_in, c_out + 1), dtype=torch.int64, device=scores.device)
    channels = torch.arange(c_out, device=scores.device).expand(n * c_in, c_out)
    index.scatter_(1, slot, channels)
    flat_cols = cols.view(n * c_in, taps, positions)
    flat_scores = scores.view(n * c_out * c_in)
    start = 0
    while start < busy:
        width = widths[start]
        size = max(1, min(busy - start, tile // max(1, positions * width)))
        items = order[start : start + size]
        start += size
        picked = index[items, :width]  # [G, M]
        j = items % c_in
        b = items // c_in
        weights = kernels[j].gather(2, picked[:, None, :].expand(-1, taps, -1))  # [G, T, M]
        # [G, M, T] @ [G, T, P]: the reduction runs along contiguous positions.
        terms = torch.bmm(weights.transpose(1, 2), flat_cols[items])  # [G, M, P]
        best = terms.amax(dim=2)  # [G, M]
        where = (b[:, None] * c_out + picked) * c_in + j[:, None]
        flat_scores[where.reshape(-1)] = best.reshape(-1)


def influence_upper_bounds(
    x: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair
) -> Tensor:
    """Rigorous upper bounds ``UB_ij >= inf_ij`` (including a floating-point margin).

    Args:
        x: ``[B, C_in, H, W]`` the convolution's input.
        weight: ``[C_out, C_in, kh, kw]``.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.
        dilation: the convolution's dilation.

    Returns:
        ``[B, C_out, C_in]`` bounds.
    """
    weight = weight.to(x.dtype)
    c_in, kh, kw = weight.shape[1:]
    taps = weight.flatten(2)  # [C_out, C_in, T]
    padded = x
    if padding != (0, 0):
        padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    # Range bound: every tap sees a value in [min, max] of the (padded) channel.
    high = padded.amax(dim=(2, 3))[:, None, :]  # [B, 1, C_in]
    low = padded.amin(dim=(2, 3))[:, None, :]
    positive = taps.clamp(min=0)
    negative = taps.clamp(max=0)
    bound = high * positive.sum(-1)[None] + low * negative.sum(-1)[None]
    # Cauchy-Schwarz: K·patch <= ||K|| ||patch||; with patch >= 0 only K⁺ can contribute.
    ones = torch.ones((c_in, 1, kh, kw), dtype=x.dtype, device=x.device)
    patch_sq = F.conv2d(x * x, ones, None, stride, padding, dilation, groups=c_in)
    patch_norm = patch_sq.amax(dim=(2, 3)).clamp(min=0).sqrt()[:, None, :]  # [B, 1, C_in]
    norm_all = taps.norm(dim=-1)[None]
    norm_pos = positive.norm(dim=-1)[None]
    bound = torch.minimum(bound, patch_norm * torch.where(low >= 0, norm_pos, norm_all))
    # Margin for rounding in both the bounds and the exact values (sums of T products).
    eps = torch.finfo(x.dtype).eps
    scale = torch.maximum(high.abs(), low.abs()) * taps.abs().sum(-1)[None]
    return bound + 4.0 * (taps.shape[-1] + 4) * eps * scale


def topk_triples(scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per row of ``scores``, the ``k`` largest strictly positive entries (ties: lowest ``j``).

    Same selection as ``topk_mask(scores, k).nonzero()``, but from one ``torch.topk`` (one
    pass over the scores instead of ``k`` rounds of argmax plus a mask and ``nonzero`` over
    the whole ``[B, C_out, C_in]`` tensor). ``torch.topk`` may break a tie at the k-th value
    in favour of a higher ``j``; it takes ``k + 1`` values, so such rows show as a
    ``(k+1)``-th value equal to the k-th, and are redone with the exact :func:`topk_mask`.
    Ties at a k-th value ``<= 0`` need no fix: those entries are never selected.

    Args:
        scores: ``[B, C_out, C_in]`` influence maxima (NaN is never selected).
        k: entries kept per row.

    Returns:
        ``(b, i, j)``: ``int64 [T]`` each, in row-major order.
    """
    batch, c_out, c_in = scores.shape
    k = min(k, c_in)
    if k == 0 or scores.numel() == 0:
        empty = torch.empty(0, dtype=torch.int64, device=scores.device)
        return empty, empty, empty
    clean = scores
    if bool(torch.isnan(scores).any()):
        clean = torch.nan_to_num(scores, nan=-torch.inf)
    wide = min(k + 1, c_in)
    values, index = torch.topk(clean, wide, dim=-1)  # [B, C_out, wide], descending
    kth = values[..., k - 1]
    if wide > k:
        ambiguous = (kth > 0) & (values[..., k] == kth)
        values, index = values[..., :k], index[..., :k]
        if bool(ambiguous.any()):
            rows = ambiguous.nonzero(as_tuple=True)
            # kth > 0 there, so exactly k entries are selected in each of these rows.
            exact = topk_mask(clean[rows], k, positive_only=True).nonzero(as_tuple=True)[1]
            index[rows] = exact.view(-1, k)
            values[rows] = clean[rows].gather(-1, index[rows])
    positive = values > 0
    if bool(positive.all()):  # the usual case: k per row, no filtering needed
        per_image = c_out * k
        device = scores.device
        bb = torch.arange(batch, device=device).repeat_interleave(per_image)
        ii = torch.arange(c_out, device=device).repeat_interleave(k).repeat(batch)
        return bb, ii, index.sort(dim=-1).values.reshape(-1)
    # Unselected places get the sentinel C_in so that one small sort orders each row by j.
    index = torch.where(positive, index, c_in).sort(dim=-1).values
    bb, ii, slot = (index < c_in).nonzero(as_tuple=True)
    return bb, ii, index[bb, ii, slot]


#: Float dtypes whose values map exactly onto 32 ordered bits (packed selection keys).
_PACKABLE = (torch.float32, torch.float16, torch.bfloat16)
_LOW = 1 << 32


def topk_triples_input_major(maxima: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`topk_triples` of ``maxima.permute(1, 2, 0)``, from the ``[C_in, B, C_out]``
    layout of :func:`influence_maxima_input_major` (no transposing copy).

    For 32-bit and 16-bit floats each score becomes one int64 key: its bits mapped to an
    order-preserving int32 (negative floats flip their magnitude bits; ``-0.0`` sorts just
    below ``+0.0``) times ``2**32``, plus ``C_in - 1 - j``. Keys are distinct within a row
    and order exactly as (value descending, ``j`` ascending), so ``k`` rounds of "largest
    key over ``j``, then remove it" are the reference selection; each round is one
    vectorised maximum over the contiguous ``B * C_out`` rows (``torch.topk`` along a
    short last dimension, and ``max`` with indices, are several times slower on CPU). A key
    ``>= 2**32`` is a strictly positive score. NaN is ranked below everything. Other dtypes
    (float64) use :func:`topk_triples`.

    Args:
        maxima: ``[C_in, B, C_out]`` influence maxima.
        k: entries kept per (image, output channel).

    Returns:
        ``(b, i, j)``: ``int64 [T]`` each, in row-major order (``j`` ascending per row).
    """
    c_in, batch, c_out = maxima.shape
    k = min(k, c_in)
    if maxima.dtype not in _PACKABLE or k == 0 or maxima.numel() == 0:
        return topk_triples(maxima.permute(1, 2, 0), k)
    if bool(torch.isnan(maxima).any()):
        maxima = torch.nan_to_num(maxima, nan=-torch.inf)
    step = max(1, SELECT_CHUNK // max(1, c_in * c_out))
    found = [_select_packed(maxima[:, b0 : b0 + step], k) for b0 in range(0, batch, step)]
    chosen = torch.cat(found) if len(found) > 1 else found[0]  # [B * C_out, k]
    j = (c_in - 1) - (chosen & (_LOW - 1))
    positive = chosen >= _LOW
    device = maxima.device
    if bool(positive.all()):  # the usual case: k per row, no filtering needed
        bb = torch.arange(batch, device=device).repeat_interleave(c_out * k)
        ii = torch.arange(c_out, device=device).repeat_interleave(k).repeat(batch)
        return bb, ii, j.sort(dim=1).values.reshape(-1)
    # Unselected places get the sentinel C_in so that one small sort orders each row by j.
    j = torch.where(positive, j, c_in).sort(dim=1).values
    row, slot = (j < c_in).nonzero(as_tuple=True)
    return row // c_out, row % c_out, j[row, slot]


def _select_packed(maxima: Tensor, k: int) -> Tensor:
    """The ``k`` largest packed keys over ``j`` of ``maxima [C_in, n, C_out]`` (no NaN).

    Returns:
        ``int64 [n * C_out, k]``, largest first (see :func:`topk_triples_input_major`).
    """
    c_in = maxima.shape[0]
    bits = maxima.float().view(torch.int32).reshape(c_in, -1)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    low = torch.arange(c_in - 1, -1, -1, device=maxima.device).view(c_in, 1)
    keys = ordered.to(torch.int64).mul_(_LOW).add_(low)
    smallest = torch.iinfo(torch.int64).min
    picked: list[Tensor] = []
    for _ in range(k):
        best = keys.amax(dim=0)  # [n * C_out]
        picked.append(best)
        if len(picked) == k:
            break
        j = (c_in - 1) - (best & (_LOW - 1))
        keys.scatter_(0, j.view(1, -1), smallest)
    return torch.stack(picked, dim=1)


def influence_topk(
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    k: int,
    budget: int = DEFAULT_BUDGET,
    method: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Per (image, output channel), the ``k`` input channels of largest positive influence.

    Args:
        x: ``[B, C_in, H, W]`` the convolution's actual input.
        weight: ``[C_out, C_in, kh, kw]``.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.
        dilation: the convolution's dilation.
        k: input channels kept per (image, output channel); ties go to the lowest ``j``,
            only ``inf_ij > 0`` counts.
        budget: bound on the elements of any intermediate.
        method: ``"auto"`` (1×1 shortcut; else ``"fused"`` where
            :func:`~compute.summit.fused.fused_applies`; else ``"batched"`` when one
            image's product fits :data:`BATCHED_TILE`; else ``"pruned-bmm"`` when ``C_in >=``
            :data:`PRUNE_MIN_RATIO` ``* k``; else ``"gemm"``), ``"batched"``, ``"gemm"``,
            ``"pruned-bmm"`` (range bounds + grouped products on the pairs that can reach
            the top-k, :func:`influence_maxima_pruned`), ``"dense"`` (grouped convolution),
            ``"pruned"`` (bounds + depthwise convolution on the surviving pairs) or
            ``"pruned-gemm"`` (bounds + GEMM on the rows a tile needs); ``"fused"`` asks
            for the compiled kernel and falls back to ``"auto"``'s other choices where it
            does not apply.

    Returns:
        ``(b, i, j)``: ``int64 [T]`` each, the selected triples in row-major order.
    """
    c_out, c_in, kh, kw = weight.shape
    batch = x.shape[0]
    per_image = max(1, c_out * c_in)
    ho, wo = conv_output_hw(x, (kh, kw), stride, padding, dilation)
    positions = ho * wo
    # Chunk images so the [b, C_out, C_in] score tensors stay within budget / 4.
    step = max(1, min(batch, budget // (4 * per_image)))
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    with intra_op_threads(INFLUENCE_THREADS if x.device.type == "cpu" else None):
        for b0 in range(0, batch, step):
            found.append(
                _topk_step(
                    x[b0 : b0 + step],
                    b0,
                    weight,
                    stride,
                    padding,
                    dilation,
                    k,
                    budget,
                    method,
                    positions,
                )
            )
    return (
        torch.cat([f[0] for f in found]),
        torch.cat([f[1] for f in found]),
        torch.cat([f[2] for f in found]),
    )


def _topk_step(
    xb: Tensor,
    b0: int,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    k: int,
    budget: int,
    method: str,
    positions: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`influence_topk` on one block of images ``xb`` (the first is image ``b0``)."""
    kh, kw = weight.shape[2:]
    if (method == "fused" or (method == "auto" and FUSED and (kh, kw) != (1, 1))) and (
        fused_applies(xb, weight)
    ):
        bb, ii, jj = influence_topk_fused(xb, weight, stride, padding, dilation, k)
        return bb + b0, ii, jj
    if method == "fused":  # not applicable here: the same selection by matrix products
        method = "auto"
    if method in ("auto", "pruned-bmm") and (kh, kw) != (1, 1):
        method = _choose(xb, weight, k, positions, method)
    if (kh, kw) == (1, 1) and method == "auto":
        scores = influence_maxima_1x1(xb, weight, stride, padding)
    elif method == "pruned-bmm":
        scores = influence_maxima_pruned(xb, weight, stride, padding, dilation, k, PRUNED_TILE)
    elif method == "batched" or (
        method == "auto" and batched_fits(weight, positions, BATCHED_TILE)
    ):
        maxima = influence_maxima_input_major(
            xb, weight, stride, padding, dilation, min(BATCHED_TILE, BATCHED_BLOCK)
        )
        bb, ii, jj = topk_triples_input_major(maxima, k)
        return bb + b0, ii, jj
    elif method == "dense":
        scores = influence_maxima(xb, weight, stride, padding, dilation, budget)
    elif method == "pruned":
        scores = _pruned_scores(xb, weight, stride, padding, dilation, k, budget)
    elif method == "pruned-gemm":
        scores = _pruned_scores(xb, weight, stride, padding, dilation, k, budget, "gemm")
    else:
        scores = influence_maxima_gemm(xb, weight, stride, padding, dilation, budget)
    bb, ii, jj = topk_triples(scores, k)
    return bb + b0, ii, jj


def _choose(x: Tensor, weight: Tensor, k: int, positions: int, method: str) -> str:
    """``"auto"``/``"pruned-bmm"`` for a k×k convolution: prune or compute densely.

    ``"auto"`` prunes a layer with ``C_in >= PRUNE_MIN_RATIO * k`` whose product for one
    image does not fit :data:`BATCHED_TILE`. Bounds need finite numbers: with an infinite
    or NaN input or weight, both fall back to the dense paths (which give those pairs NaN,
    never selected).
    """
    c_in = weight.shape[1]
    if method == "auto" and (
        PRUNE_MIN_RATIO is None
        or c_in < PRUNE_MIN_RATIO * k
        or batched_fits(weight, positions, BATCHED_TILE)
    ):
        return "auto"
    if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(weight).all())):
        return "auto"
    return "pruned-bmm"


def _pruned_scores(
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    k: int,
    budget: int,
    engine: str = "depthwise",
) -> Tensor:
    """``[B, C_out, C_in]`` scores that equal ``inf_ij`` wherever it can reach the top-k.

    Pairs that provably cannot be among the top-k (bound below the k-th exact value, or
    bound <= 0) are left at ``-inf``.
    """
    c_out, c_in = weight.shape[:2]
    k = min(k, c_in)
    bound = influence_upper_bounds(x, weight, stride, padding, dilation)
    scores = torch.full_like(bound, -torch.inf)
    # Round 1: exact values of the k best pairs by bound give a lower bound on the k-th.
    first = torch.topk(bound, k, dim=-1).indices  # [B, C_out, k]
    chosen = torch.zeros_like(bound, dtype=torch.bool).scatter_(-1, first, True)
    chosen &= bound > 0
    _fill_exact(scores, chosen, x, weight, stride, padding, dilation, budget, engine)
    # Round 2: every pair whose bound reaches that k-th value (all positive ones if fewer
    # than k candidates were positive).
    kth = torch.topk(scores, k, dim=-1).values[..., -1:].clamp(min=0)
    needed = (bound >= kth) & (bound > 0) & ~chosen
    _fill_exact(scores, needed, x, weight, stride, padding, dilation, budget, engine)
    if logger.isEnabledFor(logging.DEBUG):
        share = (chosen.sum() + needed.sum()).item() / max(1, bound.numel())
        logger.debug("influence %dx%d: exact values for %.1f%% of pairs", c_out, c_in, 100 * share)
    return scores


def _fill_exact(
    scores: Tensor,
    mask: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    budget: int,
    engine: str,
) -> None:
    if engine == "gemm":
        fresh = torch.full_like(scores, -torch.inf)
        _gemm_fill(fresh, mask, x, weight, stride, padding, dilation, budget, GEMM_TILE)
        scores[mask] = fresh[mask]  # only the asked-for pairs; the rest stay -inf
        return
    b, i, j = mask.nonzero(as_tuple=True)
    if b.numel():
        scores[b, i, j] = pair_maxima(x, weight, b, i, j, stride, padding, dilation, budget)
