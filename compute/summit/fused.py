"""Influence maxima and their top-k in one compiled CPU loop, never materialising the terms.

The exact all-pairs influence ``inf_ij = max_p (X_j ⋆ K_ij)(p)`` has the multiply-adds of
the convolution itself, but the matrix-product paths in :mod:`compute.summit.influence`
write every term ``(image, j, p, i)`` to memory before taking its maximum: ``C_in`` times
the convolution's output. On small layers (the demo CNN: 16-64 channels, 4×4 to 16×16
maps) that traffic, not the arithmetic, is the cost. This kernel keeps the terms in
vector registers instead:

* per (image, input channel ``j``, block of 32 output channels), 4 output positions at a
  time: for each tap ``t`` one load of ``K[j, t, i0:i0+32]`` and a fused multiply-add into
  8 accumulators (4 positions × 2 vectors of 16), then a running maximum over positions;
* the running top-``k`` over ``j`` of every (image, output channel) is kept as ``k``
  sorted vectors; a new maximum enters by a branch-free insertion ordered by (value
  descending, ``j`` ascending), and the initial entries (value 0, ``j = -1``) mean only
  strictly positive influence is ever selected: exactly
  :func:`compute.summit.activation.topk_mask`.

The taps are read straight from the zero-padded input through two offset tables (output
positions and taps), so any kernel size, stride and dilation works with no ``im2col``
copy. Each term is ``fma`` over the taps in order from 0, the same rounding as the
K=9 matrix products on this machine (tests compare with per-pair convolutions).

Why hand-written: no library offers "convolution, then max over positions per input
channel" (grouped convolutions are 4× slower than the matrix products on CPU, numba does
not register-block this loop), and a C extension would need a compiler on every install.
The kernel is built as LLVM IR with llvmlite (installed with numba, which umap-learn needs)
and compiled once per process for the host CPU (~0.2 s); vectors of 16 floats become
AVX-512, two AVX2 or four NEON registers as the CPU has them. Where llvmlite is missing
or compilation fails, :func:`fused_available` is false and callers use the matrix-product
paths (same results, slower).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from typing import Any

import torch
from torch import Tensor

from compute.summit.conv_geometry import Pair, conv_output_hw, zero_padded

logger = logging.getLogger(__name__)


#: Floats per vector in the kernel (one AVX-512 register).
WIDTH = 16
#: Vectors of output channels per block (the block is ``WIDTH * VECTORS`` channels).
VECTORS = 2
#: Output positions accumulated together (``VECTORS * POSITIONS`` accumulators).
POSITIONS = 4
#: Output channels per block; ``C_out`` is padded to a multiple of it with zero kernels.
BLOCK = WIDTH * VECTORS

_lock = threading.Lock()


class _Kernel:
    """The compiled kernel and the engine that owns its machine code."""

    def __init__(self, engine: Any, function: Any) -> None:
        self.engine = engine
        self.function = function


def _build_ir() -> str:
    """LLVM IR of ``topk(img, kern, poff, toff, topv, topj, B, C_in, T, P, C_pad, HW, k)``.

    ``img``: float ``[B, C_in, HW]`` (the zero-padded input, ``HW = H' * W'``); ``kern``:
    float ``[C_in, T, C_pad]``; ``poff``: int64 ``[P]`` offset of each output position's
    first tap; ``toff``: int64 ``[T]`` offset of each tap; ``topv``: float scratch
    ``[k, C_pad]``; ``topj``: int32 ``[B, k, C_pad]``, filled with -1 (empty: value 0,
    below any ``j`` in a tie, so a zero never enters) by the caller, receives the selected
    input channels, largest influence first.
    """
    import llvmlite.ir as ir

    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    fvec, ivec = ir.VectorType(f32, WIDTH), ir.VectorType(i32, WIDTH)
    module = ir.Module(name="network_atlas_influence")
    fma = ir.Function(module, ir.FunctionType(fvec, [fvec, fvec, fvec]), f"llvm.fma.v{WIDTH}f32")
    vmax = ir.Function(module, ir.FunctionType(fvec, [fvec, fvec]), f"llvm.maxnum.v{WIDTH}f32")
    fptr, iptr, jptr = ir.PointerType(f32), ir.PointerType(i64), ir.PointerType(i32)
    signature = ir.FunctionType(ir.VoidType(), [fptr, fptr, iptr, iptr, fptr, jptr] + [i64] * 7)
    fn = ir.Function(module, signature, name="influence_topk")
    img, kern, poff, toff, topv, topj, n_b, n_c, n_t, n_p, n_o, n_hw, n_k = fn.args
    for pointer in (img, kern, poff, toff, topv, topj):
        pointer.add_attribute("noalias")

    def const(value: int) -> Any:
        return ir.Constant(i64, value)

    zero_f = ir.Constant(fvec, [0.0] * WIDTH)
    minus_inf = ir.Constant(fvec, [float("-inf")] * WIDTH)
    undef_f, undef_i = ir.Constant(fvec, ir.Undefined), ir.Constant(ivec, ir.Undefined)
    splat_mask = ir.Constant(ir.VectorType(i32, WIDTH), [0] * WIDTH)

    def loop(builder: Any, start: Any, stop: Any, step: Any, carried: list[Any], body: Any):
        """``for v in range(start, stop, step)`` with loop-carried values; returns them."""
        before = builder.block
        head, inside, after = (fn.append_basic_block() for _ in range(3))
        builder.branch(head)
        builder.position_at_end(head)
        counter = builder.phi(i64)
        counter.add_incoming(start, before)
        phis = []
        for value in carried:
            phi = builder.phi(value.type)
            phi.add_incoming(value, before)
            phis.append(phi)
        builder.cbranch(builder.icmp_signed("<", counter, stop), inside, after)
        builder.position_at_end(inside)
        updated = body(builder, counter, phis) or []
        counter.add_incoming(builder.add(counter, step), builder.block)
        for phi, value in zip(phis, updated, strict=True):
            phi.add_incoming(value, builder.block)
        builder.branch(head)
        builder.position_at_end(after)
        return phis

    def vector_at(builder: Any, base: Any, index: Any, vtype: Any = fvec) -> Any:
        """Pointer to the vector that starts at ``base[index]``."""
        return builder.bitcast(builder.gep(base, [index]), ir.PointerType(vtype))

    def splat(builder: Any, scalar: Any, undef: Any) -> Any:
        lane = builder.insert_element(undef, scalar, ir.Constant(i32, 0))
        return builder.shuffle_vector(lane, undef, splat_mask)

    builder = ir.IRBuilder(fn.append_basic_block("entry"))

    def per_image(b: Any, image: Any, _: list[Any]) -> None:
        def reset(b: Any, r: Any, _: list[Any]) -> None:
            def reset_block(b: Any, i: Any, _: list[Any]) -> None:
                at = b.add(b.mul(r, n_o), i)
                b.store(zero_f, vector_at(b, topv, at), align=4)

            loop(b, const(0), n_o, const(WIDTH), [], reset_block)

        loop(b, const(0), n_k, const(1), [], reset)

        def per_channel(b: Any, j: Any, _: list[Any]) -> None:
            plane = b.mul(b.add(b.mul(image, n_c), j), n_hw)
            kernels = b.mul(b.mul(j, n_t), n_o)
            j_vector = splat(b, b.trunc(j, i32), undef_i)
            full = b.sub(n_p, b.srem(n_p, const(POSITIONS)))

            def per_block(b: Any, i0: Any, _: list[Any]) -> None:
                def kernel_row(b: Any, t: Any) -> list[Any]:
                    row = b.add(kernels, b.add(b.mul(t, n_o), i0))
                    return [
                        b.load(vector_at(b, kern, b.add(row, const(v * WIDTH))), align=4)
                        for v in range(VECTORS)
                    ]

                def tap_value(b: Any, t: Any, p: Any) -> Any:
                    offset = b.add(b.load(b.gep(toff, [t])), b.load(b.gep(poff, [p])))
                    return splat(b, b.load(b.gep(img, [b.add(plane, offset)]), align=4), undef_f)

                def positions(b: Any, p0: Any, best: list[Any]) -> list[Any]:
                    def taps(b: Any, t: Any, acc: list[Any]) -> list[Any]:
                        rows = kernel_row(b, t)
                        out = []
                        for q in range(POSITIONS):
                            value = tap_value(b, t, b.add(p0, const(q)))
                            out += [
                                b.call(fma, [value, rows[v], acc[q * VECTORS + v]])
                                for v in range(VECTORS)
                            ]
                        return out

                    acc = loop(b, const(0), n_t, const(1), [zero_f] * (POSITIONS * VECTORS), taps)
                    return [
                        functools.reduce(
                            lambda m, q: b.call(vmax, [m, acc[q * VECTORS + v]]),
                            range(POSITIONS),
                            best[v],
                        )
                        for v in range(VECTORS)
                    ]

                best = loop(b, const(0), full, const(POSITIONS), [minus_inf] * VECTORS, positions)

                def remainder(b: Any, p: Any, best: list[Any]) -> list[Any]:
                    def taps(b: Any, t: Any, acc: list[Any]) -> list[Any]:
                        rows, value = kernel_row(b, t), tap_value(b, t, p)
                        return [b.call(fma, [value, rows[v], acc[v]]) for v in range(VECTORS)]

                    acc = loop(b, const(0), n_t, const(1), [zero_f] * VECTORS, taps)
                    return [b.call(vmax, [best[v], acc[v]]) for v in range(VECTORS)]

                best = loop(b, full, n_p, const(1), list(best), remainder)

                # Insert each vector of maxima into the sorted top-k of its 16 channels.
                for v in range(VECTORS):
                    lane0 = b.add(i0, const(v * WIDTH))

                    def insert(b: Any, r: Any, state: list[Any], lane0: Any = lane0) -> list[Any]:
                        value, index = state
                        at = b.add(b.mul(r, n_o), lane0)
                        slot_v = vector_at(b, topv, at)
                        picked = b.mul(b.add(b.mul(image, n_k), r), n_o)
                        slot_j = vector_at(b, topj, b.add(picked, lane0), ivec)
                        held_v = b.load(slot_v, align=4)
                        held_j = b.load(slot_j, align=4)
                        # Displaced entries move down with their j, which may be lower
                        # than the one they meet: equal values are ordered by j too.
                        wins = b.or_(
                            b.fcmp_ordered(">", value, held_v),
                            b.and_(
                                b.fcmp_ordered("==", value, held_v),
                                b.icmp_signed("<", index, held_j),
                            ),
                        )
                        b.store(b.select(wins, value, held_v), slot_v, align=4)
                        b.store(b.select(wins, index, held_j), slot_j, align=4)
                        return [b.select(wins, held_v, value), b.select(wins, held_j, index)]

                    loop(b, const(0), n_k, const(1), [best[v], j_vector], insert)

            loop(b, const(0), n_o, const(BLOCK), [], per_block)

        loop(b, const(0), n_c, const(1), [], per_channel)

    loop(builder, const(0), n_b, const(1), [], per_image)
    builder.ret_void()
    return str(module)


#: The compiled kernel once tried (``[None]``: impossible here); empty before the first use.
_compiled: list[_Kernel | None] = []


def _kernel() -> _Kernel | None:
    """The kernel for this CPU, compiled on first use, once per process even when several
    influence workers ask at once (``None`` if it cannot be built here)."""
    if not _compiled:
        with _lock:
            if not _compiled:
                _compiled.append(_compile())
    return _compiled[0]


def _compile() -> _Kernel | None:
    """Build the IR, optimise and compile it for the host CPU."""
    try:
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        triple = llvm.get_process_triple()
        features = llvm.get_host_cpu_features()
        if triple.startswith(("x86_64", "i686", "i386")) and not features.get("fma"):
            # without hardware FMA each fma is a libm call: 25x slower than the BLAS
            logger.info("no FMA on this CPU: influence by matrix products")
            return None
        target = llvm.Target.from_triple(triple)
        machine = target.create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=features.flatten(), opt=3
        )
        module = llvm.parse_assembly(_build_ir())
        module.verify()
        if hasattr(llvm, "create_pass_builder"):
            options = llvm.create_pipeline_tuning_options(speed_level=3)
            passes = llvm.create_pass_builder(machine, options)
            passes.getModulePassManager().run(module, passes)
        engine = llvm.create_mcjit_compiler(module, machine)
        engine.finalize_object()
        address = engine.get_function_address("influence_topk")
    except Exception as error:  # any failure means "use the matrix-product paths"
        logger.warning("fused influence kernel unavailable (%s); using matrix products", error)
        return None
    pointer = ctypes.c_void_p
    prototype = ctypes.CFUNCTYPE(None, *[pointer] * 6, *[ctypes.c_int64] * 7)
    return _Kernel(engine, prototype(address))


def fused_available() -> bool:
    """Whether the compiled kernel can run here (compiles it on first call)."""
    return _kernel() is not None


def fused_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`influence_topk_fused` takes this input: float32 on the CPU, finite.

    Non-finite values fall back to the matrix-product paths, whose NaN terms make a pair
    unselectable (a vector maximum would skip them instead).
    """
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
        and x.numel() > 0
        and fused_available()
        and bool(torch.isfinite(x).all())
        and bool(torch.isfinite(weight).all())
    )


def _offsets(
    shape: tuple[int, int], kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair
) -> tuple[Tensor, Tensor]:
    """Flat offsets in a padded ``[H', W']`` plane: of each output position, of each tap."""
    width = shape[1]
    oy = torch.arange(out_hw[0]) * stride[0]
    ox = torch.arange(out_hw[1]) * stride[1]
    positions = (oy[:, None] * width + ox[None, :]).reshape(-1)
    ky = torch.arange(kernel[0]) * dilation[0]
    kx = torch.arange(kernel[1]) * dilation[1]
    taps = (ky[:, None] * width + kx[None, :]).reshape(-1)
    return positions.contiguous(), taps.contiguous()


def influence_topk_fused(
    x: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per (image, output channel), the ``k`` input channels of largest positive influence.

    The same selection as :func:`compute.summit.influence.influence_topk` (ties: lowest
    ``j``; only ``inf_ij > 0``), from the compiled kernel. Call only where
    :func:`fused_applies`.

    Args:
        x: ``float32 [B, C_in, H, W]`` the convolution's input, finite.
        weight: ``[C_out, C_in, kh, kw]``, finite.
        stride: the convolution's stride.
        padding: the convolution's (zero) padding.
        dilation: the convolution's dilation.
        k: input channels kept per (image, output channel).

    Returns:
        ``(b, i, j)``: ``int64 [T]`` each, in row-major order (``j`` ascending per row).

    Example:
        >>> x = torch.rand(2, 8, 6, 6)
        >>> w = torch.randn(4, 8, 3, 3)
        >>> b, i, j = influence_topk_fused(x, w, (1, 1), (1, 1), (1, 1), 2)
    """
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("the fused influence kernel is not available here")
    c_out, c_in, kh, kw = weight.shape
    batch = x.shape[0]
    k = min(k, c_in)
    empty = torch.empty(0, dtype=torch.int64)
    if k == 0 or batch == 0 or c_out == 0:
        return empty, empty, empty
    # the same geometry helpers as the other paths (imported here: influence imports us)
    ho, wo = conv_output_hw(x, (kh, kw), stride, padding, dilation)
    padded = zero_padded(x, padding)
    hp, wp = padded.shape[2:]
    if ho <= 0 or wo <= 0:
        return empty, empty, empty
    positions, taps = _offsets((hp, wp), (kh, kw), stride, dilation, (ho, wo))
    c_pad = -(-c_out // BLOCK) * BLOCK
    kernels = torch.zeros((c_in, kh * kw, c_pad), dtype=torch.float32)
    kernels[:, :, :c_out] = (
        weight.detach().to("cpu", torch.float32).reshape(c_out, c_in, -1).permute(1, 2, 0)
    )
    scratch = torch.empty((k, c_pad), dtype=torch.float32)
    picked = torch.full((batch, k, c_pad), -1, dtype=torch.int32)
    kernel.function(
        padded.data_ptr(),
        kernels.data_ptr(),
        positions.data_ptr(),
        taps.data_ptr(),
        scratch.data_ptr(),
        picked.data_ptr(),
        batch,
        c_in,
        kh * kw,
        ho * wo,
        c_pad,
        hp * wp,
        k,
    )
    # [B, k, C_pad] -> [B * C_out, k], each row by j ascending; C_in marks an empty slot.
    j = picked[:, :, :c_out].permute(0, 2, 1).reshape(batch * c_out, k).to(torch.int64)
    j = torch.where(j < 0, c_in, j).sort(dim=1).values
    if bool((j[:, -1] < c_in).all()):  # the usual case: k per row
        bb = torch.arange(batch).repeat_interleave(c_out * k)
        ii = torch.arange(c_out).repeat_interleave(k).repeat(batch)
        return bb, ii, j.reshape(-1)
    row, slot = (j < c_in).nonzero(as_tuple=True)
    return row // c_out, row % c_out, j[row, slot]
