"""Record how training refined chosen Linear/Conv2d layers (Pfahler & Morik, arXiv 2109.05880).

A :class:`Tracer` wraps a user's own training loop and any ``torch.optim`` optimizer. For each
traced layer it keeps ``W_0`` and, accumulated online, the sum of the updates per
(epoch, class) plus a "regularisation" component (weight decay), and per training example
either its exact summed update (small layers) or a fixed random projection of it (k numbers).
Storage depends on epochs, classes and examples, never on the number of steps.

How a step's update ``ΔW`` is split (see ``docs/trace.md``):

- per-example gradients come from hooks on the real batch backward pass: a forward hook
  keeps the layer input ``a_b`` and a tensor hook on its output keeps ``δ_b = ∂loss/∂z_b``,
  so ``g_b = δ_b ⊗ a_b`` (summed over positions for a conv) and ``Σ_b g_b`` is the batch
  gradient exactly, BatchNorm included;
- ``torch.optim.SGD`` (momentum, dampening, Nesterov, weight decay, maximize): exact, one
  momentum buffer per class plus one for weight decay (their sum is the optimizer's buffer)
  and, by default, one per example (so per-example credit sums exactly to the totals); the
  buffers are kept lazily (:class:`_MomentumLedger`): a step touches only its batch's rows;
  ``example_momentum="decayed"`` instead credits each gradient's momentum-decayed effect at
  its step's learning rate, ``-η (1 + μ + μ² + …)(1 - τ) g`` (a documented approximation);
- ``torch.optim.Adam`` / ``AdamW``: one first-moment buffer per class plus one for
  regularisation, divided by the optimizer's own preconditioner at each step (exact class
  split, momentum included); per-example credit ``-lr · g_b / d_t`` (approximate);
- any other optimizer (RMSprop, …): the measured ``ΔW = W_after - W_before`` is
  split element-wise in proportion to each member's share of the (preconditioned) gradient
  entry, members being the batch's classes/examples and coupled weight decay; decoupled
  weight decay (AdamW) is its own exact component. Totals stay exact.

What is split is the gradient the optimizer actually applies: before each step ``.grad`` is
compared with the traced ``Σ_b g_b``. A uniform rescaling (``GradScaler``, ``clip_grad_norm_``)
rescales the split; a step the scaler skips records nothing; any other change
(``clip_grad_value_``, a hook editing entries) raises :class:`TraceError`; under autocast the
low-precision rounding remainder is recorded with the regularisation component. ``finish()``
raises :class:`TraceError` if ``W_0 + Σ components`` misses ``W_T``.

Biases are not traced: the refinement is ``(W_T - W_0) ⋆ a(x)``; a bias only shifts every
input's pre-activation by the same vector.

Examples:
    >>> tracer = Tracer(model, optimizer, TraceConfig(layers=("fc",), num_classes=10),
    ...                 num_examples=len(train_set))                       # doctest: +SKIP
    >>> for epoch in range(epochs):                                        # doctest: +SKIP
    ...     for x, y, idx in loader:
    ...         optimizer.zero_grad()
    ...         tracer.set_batch(y, idx)          # before the forward pass
    ...         loss_fn(model(x), y).backward()
    ...         optimizer.step()                  # the tracer records through step hooks
    ...     tracer.end_epoch()
    >>> result = tracer.finish()                                           # doctest: +SKIP
    >>> result.reconstruction_error()                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compute.capture import HookSet

log = logging.getLogger(__name__)


class TraceError(ValueError):
    """The trace would be wrong, so the tracer refuses (one-line message naming the cause).

    Raised by a step whose applied gradient is not a uniform rescaling of the traced
    examples' gradients (before the optimizer changes anything), and by
    :meth:`Tracer.finish` when the reconstruction misses ``W_T``.

    Attributes:
        result: the finished trace when :meth:`Tracer.finish` raised (so a long run's record
            is not lost), else ``None``.
    """

    def __init__(self, message: str, result: TraceResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class TraceConfig:
    """What the tracer records.

    Attributes:
        layers: names of the ``nn.Linear`` / ``nn.Conv2d`` modules to trace (``groups=1``).
        num_classes: number of classes (labels are ``0..num_classes-1``).
        projection_dim: numbers kept per training example for a layer without exact
            per-example storage (a Kronecker Gaussian sketch ``k_out × k_in ≈ projection_dim``).
        exact_max_weights: layers with at most this many weights keep each example's exact
            summed update (``[N, *W]``); larger layers keep the projection only.
        seed: seeds the projections (own generator: the training RNG is not touched).
        dtype: accumulator dtype; float64 keeps the reconstruction exact to ~1e-12.
        checkpoint_dir: if set, :meth:`Tracer.end_epoch` saves ``epoch-{e}.pt`` there
            (``{"model_state_dict", "learning_rate", "epoch"}``) for TracIn comparisons.
        example_momentum: per-example credit under SGD momentum: ``"exact"`` keeps one
            momentum buffer per example in the stored form (lazily: ``O(B·stored)`` work per
            step plus an ``O(N·stored)`` fold every ``log 1024 / log(1/μ)`` steps;
            per-example updates then sum exactly to the class totals) or ``"decayed"`` credits
            each gradient's whole momentum-decayed effect at its step's learning rate,
            ``-η(1-τ)/(1-μ)·g`` (no extra memory, approximate).
        per_example_budget: largest ``batch × #W`` for which a step forms per-example
            gradients ``[B, *W]`` where it needs them (layers with exact per-example storage;
            the ratio rule); above it, class gradients come from one weight-gradient call per
            class. Under ``torch.optim.SGD`` sketched layers never form them (class gradients
            from label-sorted rows, sketches from a factored product).
        ratio_eps: entries whose total gradient is below ``ratio_eps × max|gradient|`` are
            split equally among the batch's members in the non-linear-optimizer rule.
        grad_rtol: largest relative residual ``‖G - s·h‖ / max(‖G‖, Σ_c ‖s·h_c‖)`` between
            the gradient ``G`` the optimizer applies and the best uniform rescaling ``s·h``
            of the traced examples' gradient ``h = Σ_c h_c`` (class gradients ``h_c``);
            above it the step raises :class:`TraceError`. ``None``:
            ``sqrt(eps)`` of the lowest precision the layer's forward or gradient used
            (float64 1.5e-8, float32 3.5e-4, float16 0.031, bfloat16 0.088): far above
            the rounding of the two summation orders, far below what ``clip_grad_value_`` or
            an editing hook leaves.
        max_reconstruction_error: :meth:`Tracer.finish` raises when a layer's
            ``‖W_0 + Σ components - W_T‖ / ‖W_T‖`` exceeds this plus the rounding allowance
            of the weights' dtype, ``256 · sqrt(steps) · eps`` (0 for float64 in practice;
            about 3e-4 for 138 float32 steps). ``math.inf`` only logs it (nan still raises).
    """

    layers: tuple[str, ...]
    num_classes: int
    projection_dim: int = 64
    exact_max_weights: int = 1024
    seed: int = 0
    dtype: torch.dtype = torch.float64
    checkpoint_dir: str | Path | None = None
    ratio_eps: float = 1e-12
    example_momentum: str = "exact"
    per_example_budget: int = 1 << 25
    grad_rtol: float | None = None
    max_reconstruction_error: float = 1e-6

    def __post_init__(self) -> None:
        if isinstance(self.layers, str) or not self.layers:
            raise ValueError("layers must be a non-empty tuple of module names")
        object.__setattr__(self, "layers", tuple(self.layers))
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers lists a module twice: {self.layers}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if self.projection_dim < 1:
            raise ValueError(f"projection_dim must be positive, got {self.projection_dim}")
        if self.exact_max_weights < 0:
            raise ValueError("exact_max_weights must be >= 0")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if self.example_momentum not in ("exact", "decayed"):
            raise ValueError(
                f"example_momentum must be 'exact' or 'decayed', got {self.example_momentum!r}"
            )
        if self.per_example_budget < 0:
            raise ValueError("per_example_budget must be >= 0")
        if not 0 <= self.ratio_eps < 1:
            raise ValueError("ratio_eps must be in [0, 1)")
        if self.grad_rtol is not None and not 0 < self.grad_rtol < 1:
            raise ValueError("grad_rtol must be in (0, 1)")
        if not self.max_reconstruction_error > 0:
            raise ValueError("max_reconstruction_error must be positive")


@dataclass
class LayerTrace:
    """Everything recorded for one traced layer (arrays are torch tensors, CPU).

    Attributes:
        name: module name.
        kind: ``"linear"`` or ``"conv2d"``.
        conv: ``{"stride", "padding", "dilation"}`` for a conv, else ``{}``.
        w0: ``[*W]`` initial weight.
        wt: ``[*W]`` final weight.
        class_epoch: ``[E, C, *W]`` sum of the updates credited to each class in each epoch.
        reg_epoch: ``[E, *W]`` updates credited to weight decay in each epoch.
        example: ``[N, *W]`` each example's credited summed update, or ``None``.
        example_proj: ``[N, k_out, k_in]`` ``P_out · A_i · P_inᵀ`` (``A_i`` flattened to
            ``[out, in·kh·kw]``), or ``None`` where ``example`` is kept.
        proj_out: ``[k_out, out]`` and ``proj_in``: ``[k_in, in·kh·kw]`` Gaussian factors
            (scaled so that ``E[⟨PA, PB⟩] = ⟨A, B⟩``), or ``None``.
    """

    name: str
    kind: str
    conv: dict[str, Any]
    w0: torch.Tensor
    wt: torch.Tensor
    class_epoch: torch.Tensor
    reg_epoch: torch.Tensor
    example: torch.Tensor | None
    example_proj: torch.Tensor | None
    proj_out: torch.Tensor | None
    proj_in: torch.Tensor | None

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return tuple(self.w0.shape)

    def components_total(self) -> torch.Tensor:
        """``[*W]``: the sum of every class and regularisation component."""
        return self.class_epoch.sum(dim=(0, 1)) + self.reg_epoch.sum(dim=0)


@dataclass
class TraceResult:
    """The finished trace of one training run.

    Attributes:
        layers: one :class:`LayerTrace` per traced layer, in config order.
        train_labels: ``int64[N]`` label of each training example (``-1`` if never seen).
        epoch_steps: optimizer steps per epoch.
        learning_rates: learning rate of the first param group at each epoch's end.
        rule: ``"sgd"`` (exact linear split) or ``"ratio"`` (element-wise split of ``ΔW``).
        momentum_credit: the per-example credit factor rule used (documented in docs).
        checkpoints: epoch-end checkpoint paths (empty without ``checkpoint_dir``).
    """

    layers: list[LayerTrace]
    train_labels: np.ndarray
    epoch_steps: list[int]
    learning_rates: list[float]
    rule: str
    num_classes: int
    checkpoints: list[Path] = field(default_factory=list)

    def layer(self, name: str) -> LayerTrace:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"layer {name!r} not traced; traced: {[x.name for x in self.layers]}")

    def reconstruction_error(self) -> dict[str, float]:
        """Relative error ``‖W_0 + Σ components - W_T‖ / ‖W_T‖`` of every traced layer."""
        errors = {}
        for layer in self.layers:
            residual = layer.w0 + layer.components_total() - layer.wt
            errors[layer.name] = float(residual.norm() / layer.wt.norm().clamp_min(1e-300))
        return errors

    def example_reconstruction_error(self) -> dict[str, float]:
        """Relative error ``‖Σ_i A_i + regularisation - (W_T - W_0)‖ / ‖W_T - W_0‖``.

        Layers with exact per-example storage compare the updates themselves; sketched layers
        compare the sketches (``Σ_i P A_i`` against ``P (W_T - W_0 - regularisation)``,
        exact because the sketch is linear). The error is float-level for plain SGD, for SGD
        momentum with ``example_momentum="exact"`` and for the ratio rule; with
        ``"decayed"`` momentum credit it is not zero (a documented approximation).
        """
        errors = {}
        for layer in self.layers:
            delta = (layer.wt - layer.w0).reshape(layer.wt.shape[0], -1)
            target = delta - layer.reg_epoch.sum(dim=0).reshape(delta.shape)
            if layer.example is not None:
                got = layer.example.sum(dim=0).reshape(delta.shape)
            else:
                assert layer.example_proj is not None and layer.proj_out is not None
                assert layer.proj_in is not None
                got = layer.example_proj.sum(dim=0)
                target = layer.proj_out @ target @ layer.proj_in.T
                delta = layer.proj_out @ delta @ layer.proj_in.T
            errors[layer.name] = float((got - target).norm() / delta.norm().clamp_min(1e-300))
        return errors

    _TENSORS = (
        "w0",
        "wt",
        "class_epoch",
        "reg_epoch",
        "example",
        "example_proj",
        "proj_out",
        "proj_in",
    )

    def save(self, path: str | Path) -> Path:
        """Write the trace to one ``.npz`` file (arrays and a JSON header, no pickle).

        Examples:
            >>> result.save("trace.npz"); TraceResult.load("trace.npz")  # doctest: +SKIP
        """
        header = {
            "layers": [{"name": x.name, "kind": x.kind, "conv": x.conv} for x in self.layers],
            "epoch_steps": self.epoch_steps,
            "learning_rates": self.learning_rates,
            "rule": self.rule,
            "num_classes": self.num_classes,
            "checkpoints": [str(p) for p in self.checkpoints],
        }
        arrays: dict[str, np.ndarray] = {
            "header": np.array(json.dumps(header)),
            "train_labels": self.train_labels,
        }
        for j, layer in enumerate(self.layers):
            for name in self._TENSORS:
                tensor = getattr(layer, name)
                if tensor is not None:
                    arrays[f"{j}.{name}"] = tensor.cpu().numpy()
        path = Path(path)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TraceResult:
        """Read a trace written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            layers = []
            for j, info in enumerate(header["layers"]):
                tensors = {
                    name: torch.from_numpy(data[f"{j}.{name}"]) if f"{j}.{name}" in data else None
                    for name in cls._TENSORS
                }
                conv = {k: tuple(v) for k, v in info["conv"].items()}
                layers.append(
                    LayerTrace(name=info["name"], kind=info["kind"], conv=conv, **tensors)
                )
            return cls(
                layers=layers,
                train_labels=data["train_labels"].copy(),
                epoch_steps=list(header["epoch_steps"]),
                learning_rates=list(header["learning_rates"]),
                rule=header["rule"],
                num_classes=int(header["num_classes"]),
                checkpoints=[Path(p) for p in header["checkpoints"]],
            )

    @property
    def num_epochs(self) -> int:
        return len(self.epoch_steps)

    def nbytes(self) -> int:
        """Bytes of all recorded arrays (what a saved trace costs)."""
        total = self.train_labels.nbytes
        for layer in self.layers:
            for t in (
                layer.w0,
                layer.wt,
                layer.class_epoch,
                layer.reg_epoch,
                layer.example,
                layer.example_proj,
                layer.proj_out,
                layer.proj_in,
            ):
                if t is not None:
                    total += t.numel() * t.element_size()
        return total


# ---------------------------------------------------------------------------------------
# Per-example gradients from (input, grad_output) pairs
# ---------------------------------------------------------------------------------------


def input_patches(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """``[B, I, L]`` layer input as columns: ``I = in·kh·kw`` (conv) or ``in`` (linear).

    Same layout as ``F.unfold`` (channel, then kernel row, then kernel column), built from
    ``kh·kw`` strided slices: several times faster than ``F.unfold`` on CPU.
    """
    if isinstance(module, nn.Conv2d):
        (kh, kw), (sh, sw) = module.kernel_size, module.stride
        (ph, pw), (dh, dw) = module.padding, module.dilation  # type: ignore[misc]
        x = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a
        ho = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        wo = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        slices = [
            x[
                :,
                :,
                i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                j * dw : j * dw + sw * (wo - 1) + 1 : sw,
            ]
            for i in range(kh)
            for j in range(kw)
        ]
        return torch.stack(slices, dim=2).reshape(a.shape[0], -1, ho * wo)
    # Linear on [B, ..., in]: every extra position is one column.
    return a.reshape(a.shape[0], -1, a.shape[-1]).transpose(1, 2)


def _eps(dtype: torch.dtype) -> float:
    """Machine epsilon of a floating dtype (1.0 for anything else: the least precise)."""
    return float(torch.finfo(dtype).eps) if dtype.is_floating_point else 1.0


def _scatter_add(
    store: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, alpha: float = 1.0
) -> None:
    """``store[indices] += alpha · values`` (repeated indices add up).

    ``index_put_(accumulate=True)`` rather than ``index_add_``: several times faster on CPU
    for these row-sized float64 updates.
    """
    store.index_put_((indices,), values if alpha == 1.0 else values * alpha, accumulate=True)


def _deltas(module: nn.Module, d: torch.Tensor) -> torch.Tensor:
    """``[B, O, L]`` output gradients laid out like :func:`input_patches`."""
    if isinstance(module, nn.Conv2d):
        return d.reshape(d.shape[0], d.shape[1], -1)
    return d.reshape(d.shape[0], -1, d.shape[-1]).transpose(1, 2)


def _rows(
    module: nn.Module, a: torch.Tensor, d: torch.Tensor, order: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, L, I], [B, L, O])``: input patches and output gradients, a row per position.

    ``Σ_{b,l} d[b, l] ⊗ cols[b, l]`` is the weight gradient. Examples come in ``order`` (a
    permutation of the batch, gathered in the same copy) or as given. For a conv the columns
    are in channels-last order (kernel row, kernel column, channel; :func:`_rows_to_weight`
    restores the weight's order): one copy out of a channels-last padded input reads
    contiguous channel runs, several times faster on CPU than :func:`input_patches` or
    ``F.unfold`` for small images.
    """
    if isinstance(module, nn.Conv2d):
        (kh, kw), (sh, sw) = module.kernel_size, module.stride
        (ph, pw), (dh, dw) = module.padding, module.dilation  # type: ignore[misc]
        x = F.pad(a.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # [B, H, W, C], contiguous
        x = x.unfold(1, dh * (kh - 1) + 1, sh)[..., ::dh]  # [B, ho, W, C, kh]
        x = x.unfold(2, dw * (kw - 1) + 1, sw)[..., ::dw]  # [B, ho, wo, C, kh, kw]
        x = x.permute(0, 1, 2, 4, 5, 3)
        g = d.permute(0, 2, 3, 1)
        width = x.shape[3] * x.shape[4] * x.shape[5]
    else:
        x, g = a, d
        width = a.shape[-1]
    if order is not None:
        x, g = x.index_select(0, order), g.index_select(0, order)
    b = x.shape[0]
    return x.reshape(b, -1, width), g.reshape(b, -1, g.shape[-1])


def _rows_to_weight(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``[..., I]`` in :func:`_rows`' column order → a view ``[..., *W[1:]]`` in the weight's.

    A view, not a copy: the caller's conversion to the trace dtype does the one copy.
    """
    if not isinstance(module, nn.Conv2d):
        return t
    (kh, kw), c = module.kernel_size, module.in_channels
    lead = t.shape[:-1]
    t = t.reshape(*lead, kh, kw, c)
    n = len(lead)
    return t.permute(*range(n), n + 2, n, n + 1)


class _MomentumLedger:
    """Credited updates of SGD momentum buffers, one per row, in ``O(rows touched)`` per step.

    torch's SGD keeps ``m_t = μ m_{t-1} + w_t g_t`` (``w_t = 1`` at a fresh buffer, else
    ``1 - dampening``) and applies ``-η_t m_t`` (Nesterov: ``-η_t (g_t + μ m_t)``). With
    ``k`` steps since the last fold and ``m_t = μ^k u_t``, a step only adds
    ``x = w_t μ^{-k} g_t`` to the rows it touches: ``u += x`` and ``v += Λ x``, with
    ``Λ = Σ λ`` the running sum of ``λ_t = η_t μ^k`` (Nesterov ``η_t μ^{k+1}``) before this
    step. The credited total is then ``v - Λ u`` at any time, algebraically equal to
    updating every row's buffer and total each step (which costs ``O(all rows)`` per step:
    ``O(N)`` for per-example credit). :meth:`fold` materialises it (``v ← v - Λ u``,
    ``u ← μ^k u`` = the buffers, ``Λ ← 0``); a fold happens whenever ``μ^{-k}`` exceeds
    ``max_scale``, which bounds the rounding to about ``max_scale`` ulps.

    Dense steps (every row, e.g. the class and weight-decay buffers) are written into a
    window of ``window`` slots (:meth:`slot`) with their two coefficients, and applied to
    ``u`` and ``v`` together by one ``[2, k] @ [k, rows]`` product when the window fills or
    before any read: one pass over each step's values instead of four.

    Attributes:
        total: the credited sum (``v``); exact after :meth:`fold`.
    """

    def __init__(self, total: torch.Tensor, max_scale: float, window: int = 1) -> None:
        self.total = total
        self.max_scale = max_scale
        self._window = max(1, window)
        self._ring: torch.Tensor | None = None
        self._pending: list[tuple[float, float]] = []
        self._base: torch.Tensor | None = None
        self._mu = 0.0
        self._steps = 0
        self._lam = 0.0
        self._scale = 1.0
        self.fresh = True

    def restart(self) -> None:
        """The optimizer's buffer starts over (its first step, or a reset state)."""
        self.fold()
        if self._base is not None:
            self._base.zero_()
        self.fresh = True

    def begin(self, mu: float, dampening: float) -> float:
        """Open a step with momentum ``mu``; returns the weight ``w_t`` of its gradient."""
        if self._steps and mu != self._mu:
            self.fold()
        if self._base is None:
            self._base = torch.zeros_like(self.total)
        self._mu = mu
        self._steps += 1
        self._scale = mu ** (-self._steps)
        return 1.0 if self.fresh else 1.0 - dampening

    def slot(self) -> torch.Tensor:
        """A tensor shaped like :attr:`total` to fill with a dense step's values."""
        if self._window == 1:
            return torch.empty_like(self.total)
        if self._ring is None:
            self._ring = self.total.new_empty((self._window, *self.total.shape))
        return self._ring[len(self._pending)]

    def add_dense(self, values: torch.Tensor, weight: float, direct: float) -> None:
        """Add ``weight · values`` to every row's buffer and credit ``direct · values``.

        ``weight`` needs an open step (:meth:`begin`) unless it is 0. ``values`` should come
        from :meth:`slot`: then the update waits in the window.
        """
        coef_base = weight * self._scale if weight else 0.0
        coef_total = coef_base * self._lam + direct
        if self._ring is not None and values.data_ptr() == self.slot().data_ptr():
            self._pending.append((coef_base, coef_total))
            if len(self._pending) == self._window:
                self.flush()
            return
        if coef_base:
            assert self._base is not None
            self._base.add_(values, alpha=coef_base)
        if coef_total:
            self.total.add_(values, alpha=coef_total)

    def flush(self) -> None:
        """Apply the dense steps waiting in the window."""
        if not self._pending:
            return
        assert self._ring is not None
        k = len(self._pending)
        coefs = torch.tensor(self._pending, dtype=self.total.dtype).T  # [2, k]
        both = coefs @ self._ring[:k].reshape(k, -1)
        if self._base is not None:
            self._base.view(-1).add_(both[0])
        self.total.view(-1).add_(both[1])
        self._pending.clear()

    def add(self, values: torch.Tensor, weight: float, rows: torch.Tensor | None = None) -> None:
        """Add ``weight · values`` to the buffers (of ``rows``, or all rows)."""
        assert self._base is not None
        coef = weight * self._scale
        if rows is None:
            self._base.add_(values, alpha=coef)
            if self._lam:
                self.total.add_(values, alpha=coef * self._lam)
            return
        values = values.to(self.total.dtype)
        _scatter_add(self._base, rows, values, coef)
        if self._lam:
            _scatter_add(self.total, rows, values, coef * self._lam)

    def direct(self, values: torch.Tensor, coef: float, rows: torch.Tensor | None = None) -> None:
        """Credit ``coef · values`` at once (no momentum)."""
        if rows is None:
            self.total.add_(values, alpha=coef)
        else:
            _scatter_add(self.total, rows, values.to(self.total.dtype), coef)

    def end(self, lr: float, nesterov: bool) -> None:
        """Close the step: its buffers are credited ``-lr · μ^{[nesterov]} m_t``."""
        self._lam += lr * self._mu ** (self._steps + (1 if nesterov else 0))
        self.fresh = False
        if max(self._scale, 1 / self._scale) > self.max_scale:
            self.fold()

    def fold(self) -> None:
        """Make :attr:`total` exact and the base the buffers themselves."""
        self.flush()
        if self._base is None or not self._steps:
            return
        if self._lam:
            self.total.add_(self._base, alpha=-self._lam)
        self._base.mul_(self._mu**self._steps)
        self._lam = 0.0
        self._steps = 0
        self._scale = 1.0


@dataclass
class _StepTerms:
    """What the pre-step check computed from one step's captures, for the post-step split.

    Attributes:
        pairs: :meth:`_LayerState.pairs` (kept alive: per-example gradients are cached by
            tensor identity).
        class_g: ``[C, O, I]`` or ``[C, *W]`` gradient of each class, as traced.
        examples: per traced forward ``(indices, [B, *storage])`` for the SGD rule, else
            ``None``.
    """

    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    class_g: torch.Tensor
    examples: list[tuple[torch.Tensor, torch.Tensor]] | None


class _LayerState:
    """Online accumulators and hook captures of one traced layer."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        config: TraceConfig,
        num_examples: int,
        generator: torch.Generator,
    ) -> None:
        if isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.padding_mode != "zeros":
                raise ValueError(f"conv layer {name!r}: only groups=1, zero padding are traced")
            if isinstance(module.padding, str):
                raise ValueError(f"conv layer {name!r}: give padding as numbers, not a string")
            self.kind = "conv2d"
            self.conv = {
                "stride": tuple(module.stride),
                "padding": tuple(module.padding),
                "dilation": tuple(module.dilation),
            }
        elif isinstance(module, nn.Linear):
            self.kind = "linear"
            self.conv = {}
        else:
            raise ValueError(f"layer {name!r} is a {type(module).__name__}; trace Linear/Conv2d")
        self.name = name
        self.module = module
        self.param: torch.Tensor = module.weight
        dtype = config.dtype
        shape = tuple(self.param.shape)
        self.out = shape[0]
        self.inp = int(np.prod(shape[1:]))
        self.w0 = self.param.detach().to("cpu", dtype).clone()
        self.c = config.num_classes
        # The current epoch's credit: one row per class, the last for weight decay.
        self.acc = torch.zeros((self.c + 1, self.out, self.inp), dtype=dtype)
        self.class_acc = self.acc[: self.c]
        self.reg_acc = self.acc[self.c]
        # Adam / AdamW: first-moment buffers per class and regularisation ([C + 1, O, I]).
        self.adam_m: torch.Tensor | None = None
        self.class_epochs: list[torch.Tensor] = []
        self.reg_epochs: list[torch.Tensor] = []
        # SGD momentum, kept lazily: one buffer per class plus one for weight decay, and one
        # per example in the stored form. Folds bound the rounding to ~max_scale ulps.
        max_scale = 2.0**10 if dtype == torch.float64 else 4.0
        window = min(8, (1 << 22) // self.acc.numel())  # at most 32 MiB of float64
        self.class_ledger = _MomentumLedger(self.acc, max_scale, window)
        self.exact = self.out * self.inp <= config.exact_max_weights
        self.example: torch.Tensor | None = None
        self.example_proj: torch.Tensor | None = None
        self.proj_out: torch.Tensor | None = None
        self.proj_in: torch.Tensor | None = None
        if self.exact:
            self.example = torch.zeros((num_examples, self.out, self.inp), dtype=dtype)
        else:
            k_out = max(1, min(self.out, math.isqrt(config.projection_dim)))
            k_in = max(1, math.ceil(config.projection_dim / k_out))
            self.proj_out = torch.randn(k_out, self.out, generator=generator, dtype=dtype)
            self.proj_out /= math.sqrt(k_out)
            self.proj_in = torch.randn(k_in, self.inp, generator=generator, dtype=dtype)
            self.proj_in /= math.sqrt(k_in)
            self.example_proj = torch.zeros((num_examples, k_out, k_in), dtype=dtype)
        store = self.example if self.example is not None else self.example_proj
        self.example_ledger = _MomentumLedger(store, max_scale)
        # Captures of the current step: (input, labels, indices), and output grads.
        self.inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.grads: dict[int, torch.Tensor] = {}
        self.before: torch.Tensor | None = None
        # Lowest-precision dtype the captured forwards computed in (autocast: below the
        # weight's), and what the pre-step check found: the step's terms, the uniform factor
        # ``scale`` of the applied gradient and the rounding ``remainder`` to record.
        self.compute_dtype: torch.dtype | None = None
        self.terms: _StepTerms | None = None
        self.scale = 1.0
        self.remainder: torch.Tensor | None = None
        self._proj_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._p_in_rows_cache: torch.Tensor | None = None
        self._grad_cache: dict[int, torch.Tensor | None] = {}
        self.per_example_budget = config.per_example_budget

    # -- hooks ------------------------------------------------------------------------

    def capture(
        self, a: torch.Tensor, out: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor
    ) -> None:
        slot = len(self.inputs)
        self.inputs.append((a.detach(), labels, indices))
        if self.compute_dtype is None or _eps(out.dtype) > _eps(self.compute_dtype):
            self.compute_dtype = out.dtype

        def keep(grad: torch.Tensor) -> None:
            # Several backward passes through one output would add up in .grad, so add here.
            self.grads[slot] = grad.detach() if slot not in self.grads else self.grads[slot] + grad

        out.register_hook(keep)

    def reset(self) -> None:
        self.inputs.clear()
        self.grads.clear()
        self._grad_cache.clear()
        self.before = None
        self.compute_dtype = None
        self.terms = None
        self.scale = 1.0
        self.remainder = None

    def gradient_discarded(self) -> bool:
        """Whether captured backward passes exist whose gradient is no longer in ``.grad``.

        ``zero_grad`` after a step the optimizer never took (``GradScaler`` skipping a step
        with inf/nan gradients, or a loop that drops a batch) leaves the captures of that
        backward behind; a weight whose gradient is ``None`` or all zero holds none of them.
        """
        if not self.grads:
            return False
        grad = self.param.grad
        return grad is None or not bool(grad.any())

    # -- per-step quantities ----------------------------------------------------------

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(input, output grad, labels [B], indices [B])`` of each traced forward of the step.

        Inputs and output gradients stay in the weight's dtype and layout; per-example and
        per-class gradients are computed in that dtype (as the optimizer's own gradient is)
        and only accumulated in the trace's dtype. Under autocast the captures are in a lower
        precision: they are raised to the weight's, so the split is as precise as the
        weight's dtype allows and autograd's own rounding is the recorded remainder.
        """
        result = []
        dtype = self.param.dtype
        for slot, (a, labels, indices) in enumerate(self.inputs):
            if slot not in self.grads:
                continue  # a forward pass that did not reach the loss
            result.append((a.to(dtype), self.grads[slot].to(dtype), labels, indices))
        return result

    def _weight_grad(self, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``[O, I]`` summed weight gradient of the examples in ``a``, ``d``."""
        if self.kind == "conv2d":
            grad = torch.nn.grad.conv2d_weight(
                a,
                tuple(self.param.shape),
                d,
                stride=self.conv["stride"],
                padding=self.conv["padding"],
                dilation=self.conv["dilation"],
            )
            return grad.reshape(self.out, self.inp)
        return d.reshape(-1, self.out).T @ a.reshape(-1, self.inp)

    def _example_grads_raw(self, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor | None:
        """``[B, O, I]`` per-example gradients in the model's dtype, cached for the step.

        ``None`` when ``B · #W`` exceeds the budget: callers then use the per-class weight
        gradient and the factored sketch, which never form per-example gradients.
        """
        key = id(a)
        if key not in self._grad_cache:
            if a.shape[0] * self.out * self.inp > self.per_example_budget:
                self._grad_cache[key] = None
            else:
                cols = input_patches(self.module, a)
                self._grad_cache[key] = torch.bmm(_deltas(self.module, d), cols.transpose(1, 2))
        return self._grad_cache[key]

    def class_grads(self, pairs: Sequence[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """``[C, O, I]`` gradient of each class (from per-example gradients, or per class)."""
        grads = torch.zeros_like(self.class_acc)
        for a, d, labels, _ in pairs:
            full = self._example_grads_raw(a, d)
            if full is not None:
                # Row sums by label: B·#W additions (a one-hot matmul would cost C times more).
                per_class = torch.zeros((self.c, self.out * self.inp), dtype=full.dtype)
                per_class.index_put_((labels,), full.reshape(full.shape[0], -1), accumulate=True)
                grads += per_class.reshape(grads.shape).to(grads.dtype)
                continue
            order = torch.argsort(labels, stable=True)
            a_sorted, d_sorted = a[order], d[order]
            classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
            start = 0
            for c, count in zip(classes.tolist(), counts.tolist(), strict=True):
                stop = start + count
                grad = self._weight_grad(a_sorted[start:stop], d_sorted[start:stop])
                grads[c] += grad.to(grads.dtype)
                start = stop
        return grads

    def example_grads(self, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``[B, O, I]`` per-example gradients (trace dtype)."""
        full = self._example_grads_raw(a, d)
        if full is None:
            cols = input_patches(self.module, a)
            full = torch.bmm(_deltas(self.module, d), cols.transpose(1, 2))
        return full.to(self.w0.dtype)

    def project(self, full: torch.Tensor) -> torch.Tensor:
        """``[B, k_out, k_in]`` sketch of ``[B, O, I]`` per-example updates (trace dtype)."""
        p_out, p_in = self._projections(full.dtype)
        # (P_out g_b) then P_inᵀ: two plain matmuls, the cheap contraction order.
        return ((p_out @ full) @ p_in.T).to(self.w0.dtype)

    def _projections(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.proj_out is not None and self.proj_in is not None
        if self._proj_cache is None or self._proj_cache[0].dtype != dtype:
            self._proj_cache = (self.proj_out.to(dtype), self.proj_in.to(dtype))
        return self._proj_cache

    def _p_in_rows(self, p_in: torch.Tensor) -> torch.Tensor:
        """``P_in`` with its columns in :func:`_rows`' order (cached per dtype)."""
        if self._p_in_rows_cache is None or self._p_in_rows_cache.dtype != p_in.dtype:
            if isinstance(self.module, nn.Conv2d):
                (kh, kw), c = self.module.kernel_size, self.module.in_channels
                rows = p_in.reshape(-1, c, kh, kw).permute(0, 2, 3, 1).reshape(p_in.shape[0], -1)
            else:
                rows = p_in
            self._p_in_rows_cache = rows.contiguous()
        return self._p_in_rows_cache

    def _sketch(self, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``[B, k_out, k_in]`` sketches ``Σ_l (P_out δ_bl)(P_in patch_bl)ᵀ`` (trace dtype).

        For a conv, ``P_in · patches`` is a convolution with ``P_in`` as ``k_in`` kernels.
        """
        p_out, p_in = self._projections(a.dtype)
        if self.kind == "conv2d":
            kernels = p_in.reshape(-1, *self.param.shape[1:])
            pa = F.conv2d(a, kernels, None, **self.conv).flatten(2)  # [B, k_in, L]
            pd = torch.einsum("ko,bol->bkl", p_out, d.flatten(2))
        else:
            pa = torch.einsum("ji,bli->bjl", p_in, a.reshape(a.shape[0], -1, a.shape[-1]))
            pd = torch.einsum("ko,blo->bkl", p_out, d.reshape(d.shape[0], -1, d.shape[-1]))
        return torch.bmm(pd, pa.transpose(1, 2)).to(self.w0.dtype)

    def sgd_terms(
        self, pairs: Sequence[tuple[torch.Tensor, ...]]
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Class gradients and per-example gradients in the stored form, for a linear rule.

        Returns:
            ``[C, O, I]`` or ``[C, *W]`` (a view) gradient of each class (any float dtype)
            and, per traced forward,
            ``(indices [B], [B, *storage])`` each example's gradient, exact or sketched
            (trace dtype).

        Layers with exact per-example storage form per-example gradients (one batched
        matmul) and sum them by label. Sketched layers form them only where they are no
        larger than the layer's input patches (``O ≤ L`` output positions, e.g. early convs:
        the batched matmul is then efficient and the sketches of the formed gradients
        cheap). Otherwise the batch's rows are gathered sorted by label, each class's
        gradient is one matmul over its contiguous rows (the multiply count of the batch's
        weight gradient), and the sketches come from the factored product
        (:meth:`_sketch`).
        """
        if self.example is not None:
            class_g = self.class_grads(pairs)
            return class_g, [(idx, self.example_grads(a, d)) for a, d, _, idx in pairs]
        grads: torch.Tensor | None = None
        terms = []
        for a, d, labels, indices in pairs:
            length = d[0].numel() // self.out
            if length >= self.out and a.shape[0] * self.out * self.inp <= self.per_example_budget:
                cols, deltas = _rows(self.module, a, d)
                full = torch.bmm(deltas.transpose(1, 2), cols)  # [B, O, I] in rows order
                if grads is None:
                    grads = cols.new_zeros((self.c, self.out, cols.shape[2]))
                grads.view(self.c, -1).index_put_(
                    (labels.to(a.device),), full.reshape(full.shape[0], -1), accumulate=True
                )
                p_out, p_in = self._projections(a.dtype)
                sketch = (p_out @ full) @ self._p_in_rows(p_in).T
                terms.append((indices, sketch.to(self.w0.dtype)))
                continue
            order = torch.argsort(labels, stable=True)
            counts = torch.bincount(labels, minlength=self.c).tolist()
            cols, deltas = _rows(self.module, a, d, order.to(a.device))
            length = cols.shape[1]
            first = grads is None
            if grads is None:
                grads = cols.new_empty((self.c, self.out, cols.shape[2]))
            flat_cols = cols.reshape(-1, cols.shape[2])
            flat_deltas = deltas.reshape(-1, deltas.shape[2])
            start = 0
            for c, count in enumerate(counts):
                rows = slice(start * length, (start + count) * length)
                if count and first:
                    torch.mm(flat_deltas[rows].T, flat_cols[rows], out=grads[c])
                elif count:
                    grads[c].addmm_(flat_deltas[rows].T, flat_cols[rows])
                elif first:
                    grads[c].zero_()
                start += count
            terms.append((indices, self._sketch(a, d)))
        assert grads is not None
        return _rows_to_weight(self.module, grads), terms

    def add_example_full(self, indices: torch.Tensor, updates: torch.Tensor) -> None:
        """Credit ``[B, O, I]`` per-example updates."""
        if self.example is not None:
            _scatter_add(self.example, indices, updates)
        else:
            assert self.example_proj is not None
            _scatter_add(self.example_proj, indices, self.project(updates))

    def end_epoch(self) -> None:
        self.class_ledger.fold()
        self.class_epochs.append(self.class_acc.clone())
        self.reg_epochs.append(self.reg_acc.clone())
        self.acc.zero_()

    def restart_momentum(self) -> None:
        """torch's momentum buffer starts over: so do the class and example buffers."""
        self.class_ledger.restart()
        self.example_ledger.restart()

    def finish(self) -> LayerTrace:
        self.example_ledger.fold()
        shape = tuple(self.param.shape)
        e = len(self.class_epochs)
        return LayerTrace(
            name=self.name,
            kind=self.kind,
            conv=dict(self.conv),
            w0=self.w0.reshape(shape),
            wt=self.param.detach().to("cpu", self.w0.dtype).clone(),
            class_epoch=torch.stack(self.class_epochs).reshape((e, self.c, *shape)),
            reg_epoch=torch.stack(self.reg_epochs).reshape((e, *shape)),
            example=None if self.example is None else self.example.reshape((-1, *shape)),
            example_proj=self.example_proj,
            proj_out=self.proj_out,
            proj_in=self.proj_in,
        )


# ---------------------------------------------------------------------------------------
# The tracer
# ---------------------------------------------------------------------------------------


def _split_rule(optimizer: torch.optim.Optimizer) -> str:
    """How the tracer splits a step of ``optimizer``: ``"sgd"`` (exact momentum buffers),
    ``"adam"`` (Adam / AdamW: exact first-moment buffers) or ``"ratio"`` (any other
    optimizer: the measured update split in proportion to the current gradient)."""
    if type(optimizer) is torch.optim.SGD:
        return "sgd"
    adam = type(optimizer) in (torch.optim.Adam, torch.optim.AdamW)
    if adam and not any(g.get("maximize", False) for g in optimizer.param_groups):
        return "adam"
    return "ratio"


class Tracer:
    """Wraps a training loop: hooks on the traced layers and on ``optimizer.step``.

    Args:
        model: the model being trained.
        optimizer: any ``torch.optim.Optimizer`` holding the traced weights.
        config: what to record.
        num_examples: size of the training set (example indices are ``0..N-1``).

    Call :meth:`set_batch` before each forward pass, :meth:`end_epoch` after each epoch and
    :meth:`finish` at the end (which removes the hooks). A step whose traced weight has a
    gradient but no declared batch raises, so an untraced update cannot slip in unnoticed.

    Examples:
        >>> config = TraceConfig(layers=("fc",), num_classes=10)
        >>> tracer = Tracer(model, opt, config, num_examples=1000)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TraceConfig,
        num_examples: int,
    ) -> None:
        if num_examples < 1:
            raise ValueError("num_examples must be positive")
        self.model = model
        self.optimizer = optimizer
        self.config = config
        self.num_examples = num_examples
        modules = dict(model.named_modules())
        missing = [name for name in config.layers if name not in modules]
        if missing:
            raise ValueError(f"no module named {missing} in the model")
        generator = torch.Generator().manual_seed(config.seed)
        self.states = [
            _LayerState(name, modules[name], config, num_examples, generator)
            for name in config.layers
        ]
        self._by_param: dict[int, tuple[_LayerState, dict[str, Any]]] = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for state in self.states:
                    if p is state.param:
                        self._by_param[id(p)] = (state, group)
        for state in self.states:
            if id(state.param) not in self._by_param:
                raise ValueError(f"the optimizer does not hold the weight of {state.name!r}")
        self.rule = _split_rule(optimizer)
        self.train_labels = np.full(num_examples, -1, dtype=np.int64)
        self._labels: torch.Tensor | None = None
        self._indices: torch.Tensor | None = None
        self._steps_in_epoch = 0
        self._skip = False
        self.epoch_steps: list[int] = []
        self.learning_rates: list[float] = []
        self.checkpoints: list[Path] = []
        self._hooks = HookSet()
        for state in self.states:
            self._hooks.on_forward(state.module, self._forward_hook(state))
        self._hooks.adopt(optimizer.register_step_pre_hook(self._pre_step))
        self._hooks.adopt(optimizer.register_step_post_hook(self._post_step))
        log.debug("tracing %s with the %r rule", list(config.layers), self.rule)

    # -- user calls ------------------------------------------------------------------

    def set_batch(self, labels: torch.Tensor, indices: torch.Tensor) -> None:
        """Declare the labels ``int[B]`` and dataset indices ``int[B]`` of the next forward."""
        labels = torch.as_tensor(labels).detach().to("cpu", torch.int64).reshape(-1)
        indices = torch.as_tensor(indices).detach().to("cpu", torch.int64).reshape(-1)
        if labels.shape != indices.shape:
            raise ValueError(f"{labels.shape[0]} labels for {indices.shape[0]} indices")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_classes):
            raise ValueError("a label is outside 0..num_classes-1")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_examples):
            raise ValueError("an example index is outside 0..num_examples-1")
        self._labels, self._indices = labels, indices
        self.train_labels[indices.numpy()] = labels.numpy()

    def end_epoch(self) -> None:
        """Close the current epoch's accumulators (and save a checkpoint if configured)."""
        for state in self.states:
            state.end_epoch()
        self.epoch_steps.append(self._steps_in_epoch)
        self._steps_in_epoch = 0
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.learning_rates.append(lr)
        if self.config.checkpoint_dir is not None:
            folder = Path(self.config.checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"epoch-{len(self.epoch_steps)}.pt"
            torch.save(
                {
                    "model_state_dict": self.model.state_dict(),
                    "learning_rate": lr,
                    "epoch": len(self.epoch_steps),
                },
                path,
            )
            self.checkpoints.append(path)

    def finish(self) -> TraceResult:
        """Remove the hooks and return the trace (closing a last unfinished epoch).

        Checks ``W_0 + Σ components = W_T`` for every layer and raises :class:`TraceError`
        (carrying the trace as ``.result``) when a layer misses by more than
        ``max_reconstruction_error`` plus its dtype's rounding allowance: a weight changed
        outside the traced steps (an edit under ``no_grad``, an optimizer stepped with the
        hooks removed, a state dict loaded mid-run) must not pass silently.
        """
        if self._steps_in_epoch or not self.epoch_steps:
            self.end_epoch()
        self._hooks.close()
        result = TraceResult(
            layers=[state.finish() for state in self.states],
            train_labels=self.train_labels.copy(),
            epoch_steps=list(self.epoch_steps),
            learning_rates=list(self.learning_rates),
            rule=self.rule,
            num_classes=self.config.num_classes,
            checkpoints=list(self.checkpoints),
        )
        errors = result.reconstruction_error()
        log.info("trace reconstruction error per layer: %s", errors)
        steps = sum(self.epoch_steps)
        for state in self.states:
            allowed = self.config.max_reconstruction_error + 256 * math.sqrt(steps) * _eps(
                state.param.dtype
            )
            error = errors[state.name]
            if not error <= allowed:  # nan fails too
                raise TraceError(
                    f"layer {state.name!r}: reconstruction error {error:.3g} > {allowed:.3g} "
                    f"after {steps} steps: W_0 + the recorded components misses W_T, so the "
                    "weight changed outside the traced optimizer steps (edited, reloaded, or "
                    "stepped untraced); the trace (error.result) would be wrong",
                    result,
                )
        return result

    # -- hooks ------------------------------------------------------------------------

    def _forward_hook(self, state: _LayerState) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            if not (torch.is_grad_enabled() and output.requires_grad):
                return  # evaluation passes do not train anything
            if self._labels is None or self._indices is None:
                # Not a declared training batch (e.g. a probe); a step that uses its gradient
                # without any declared batch raises in the step hook.
                return
            if inputs[0].shape[0] != self._labels.shape[0]:
                raise RuntimeError(
                    f"layer {state.name!r} saw a batch of {inputs[0].shape[0]}, "
                    f"set_batch declared {self._labels.shape[0]}"
                )
            if state.gradient_discarded():
                log.debug("layer %r: dropping captures of a step never taken", state.name)
                state.reset()
            state.capture(inputs[0], output, self._labels, self._indices)

        return hook

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Check each traced gradient against the captures; prepare the split.

        A fused optimizer (``fused=True``) stepped by ``GradScaler`` is handed
        ``optimizer.grad_scale`` / ``optimizer.found_inf`` (attributes set for the call)
        instead of unscaled gradients: its kernel divides the gradient by the first and
        skips the whole step when the second is non-zero, so the check divides too and a
        skipped step records nothing.
        """
        found_inf = getattr(optimizer, "found_inf", kwargs.get("found_inf"))
        self._skip = found_inf is not None and bool(torch.as_tensor(found_inf).any())
        grad_scale = getattr(optimizer, "grad_scale", kwargs.get("grad_scale"))
        unscale = 1.0 if grad_scale is None else 1.0 / float(grad_scale)
        for state in self.states:
            if self._skip:
                state.reset()
                continue
            _, group = self._by_param[id(state.param)]
            if self.rule != "sgd" or group["weight_decay"]:
                state.before = state.param.detach().to("cpu", state.w0.dtype, copy=True)
            if self.rule == "sgd" and group["momentum"] != 0:
                buf = optimizer.state.get(state.param, {}).get("momentum_buffer")
                if buf is None:
                    state.restart_momentum()  # torch starts the buffer at the first gradient
            if state.param.grad is None:
                continue  # torch optimizers skip a parameter without a gradient
            pairs = state.pairs()
            if not pairs:
                raise RuntimeError(
                    f"layer {state.name!r} has a gradient but no traced batch: call "
                    "tracer.set_batch(labels, indices) before each forward pass"
                )
            try:
                self._check_gradient(state, pairs, unscale)
            except TraceError:
                for other in self.states:  # the step is refused: no half-prepared split
                    other.reset()
                raise

    def _check_gradient(
        self,
        state: _LayerState,
        pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
        unscale: float,
    ) -> None:
        """Compare the gradient ``G`` the optimizer will apply with the traced one ``h``.

        ``h = Σ_b g_b`` comes from the hooks, i.e. from the loss as it was backpropagated;
        ``G`` is ``.grad`` after whatever the loop did in between. A uniform rescaling
        (``GradScaler``'s unscale, ``clip_grad_norm_``, a loss or hook scaled by a
        constant) gives ``G = s·h``: the split is rescaled by the least-squares ``s``.
        Anything else (``clip_grad_value_``, a hook editing entries, gradient from a forward
        the tracer did not see) leaves a residual ``G - s·h`` above ``grad_rtol`` and is
        refused here, before the optimizer changes anything. Under autocast the residual
        below ``grad_rtol`` is autograd's low-precision rounding: it is recorded with the
        regularisation component so the totals stay exact.
        """
        if self.rule == "sgd":
            class_g, examples = state.sgd_terms(pairs)
        else:
            class_g, examples = state.class_grads(pairs), None
        assert state.param.grad is not None
        applied = state.param.grad.detach().to("cpu", torch.float64).reshape(state.out, -1)
        if unscale != 1.0:
            applied = applied * unscale
        per_class = class_g.to(torch.float64).reshape(class_g.shape[0], state.out, -1)
        traced = per_class.sum(dim=0)
        if not (bool(applied.isfinite().all()) and bool(traced.isfinite().all())):
            raise TraceError(
                f"layer {state.name!r}: the gradient is not finite (inf/nan) and no "
                "GradScaler skipped the step; the trace would be wrong"
            )
        norm_h2 = float((traced * traced).sum())
        scale = float((applied * traced).sum()) / norm_h2 if norm_h2 > 0 else 0.0
        remainder = applied - scale * traced
        # Relative to the size of what was summed (the class gradients, at the applied
        # scale), not to the sum: an early conv's gradient cancels between classes, and
        # float32 rounding of the summands is then large next to the sum (demo conv1: 3e-4
        # of ‖G‖, 4e-5 of Σ_c ‖s·h_c‖), which is rounding, not an edit.
        size = max(float(applied.norm()), abs(scale) * float(per_class.norm(dim=(1, 2)).sum()))
        residual = float(remainder.norm()) / size if size > 0 else 0.0
        grad_dtype = state.param.grad.dtype
        compute = state.compute_dtype if state.compute_dtype is not None else grad_dtype
        low = max(_eps(compute), _eps(grad_dtype))
        tol = self.config.grad_rtol if self.config.grad_rtol is not None else math.sqrt(low)
        if residual > tol:
            raise TraceError(
                f"layer {state.name!r}: the gradient the optimizer applies is not a uniform "
                f"rescaling of the traced examples' gradients (relative residual "
                f"{residual:.3g} > grad_rtol {tol:.3g}): it was changed non-uniformly, e.g. "
                "by clip_grad_value_ or a gradient hook, or also came from a forward pass "
                "the tracer did not see; the trace would be wrong"
            )
        state.terms = _StepTerms(pairs, class_g, examples)
        state.scale = scale
        lower = _eps(compute) > _eps(state.param.dtype)
        state.remainder = remainder.to(state.w0.dtype) if lower and residual > 0 else None
        if scale != 1.0 or state.remainder is not None:
            log.debug(
                "layer %r: applied gradient = %.6g × traced (+ rounding %.2g)",
                state.name,
                scale,
                residual if state.remainder is not None else 0.0,
            )

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._skip:
            # A fused kernel found inf/nan and left the weights alone: nothing happened.
            self._skip = False
            self._labels = self._indices = None
            return
        for state in self.states:
            _, group = self._by_param[id(state.param)]
            if state.param.grad is None or state.terms is None:
                # torch optimizers skip a parameter without a gradient: nothing to credit.
                state.reset()
                continue
            if self.rule == "sgd":
                self._sgd_split(state, group, state.terms)
            else:
                assert state.before is not None
                after = state.param.detach().to("cpu", state.w0.dtype)
                w_old = state.before.reshape(state.out, state.inp)
                delta = (after - state.before).reshape(state.out, state.inp)
                if self.rule == "adam":
                    self._adam_split(state, group, state.terms, w_old, delta)
                else:
                    self._ratio_split(state, group, state.terms, w_old, delta)
            state.reset()
        self._steps_in_epoch += 1
        self._labels = self._indices = None

    def _sgd_split(self, state: _LayerState, group: dict[str, Any], terms: _StepTerms) -> None:
        """Exact class split of a ``torch.optim.SGD`` step (mirrors its update rule).

        One momentum buffer per class, one for weight decay and (``example_momentum="exact"``)
        one per example, kept lazily by :class:`_MomentumLedger`: their sums are the
        optimizer's buffer, and a step costs ``O(B + C)`` rows, not ``O(N)``. The traced
        gradients enter at the applied gradient's scale (:meth:`_check_gradient`); an
        autocast rounding remainder joins weight decay's row (it is part of the gradient the
        buffer accumulates, so it rides the same momentum).
        """
        lr = float(group["lr"])
        mu = float(group["momentum"])
        tau = float(group["dampening"])
        wd = float(group["weight_decay"])
        nesterov = bool(group["nesterov"])
        sign = -1.0 if group.get("maximize", False) else 1.0
        class_g, examples = terms.class_g, terms.examples
        assert examples is not None
        ledger = state.class_ledger
        grads = ledger.slot()  # [C + 1, O, I]: classes, then weight decay
        grads[: state.c].view(class_g.shape).copy_(class_g)  # one copy: dtype and layout
        if sign * state.scale != 1.0:
            grads[: state.c].mul_(sign * state.scale)
        if wd:
            assert state.before is not None
            torch.mul(state.before.reshape(state.out, state.inp), wd, out=grads[state.c])
        else:
            grads[state.c].zero_()
        if state.remainder is not None:
            grads[state.c].add_(state.remainder, alpha=sign)
        sign *= state.scale  # per-example terms enter at the applied gradient's scale
        if mu == 0:
            ledger.add_dense(grads, 0.0, -lr)
        else:
            weight = ledger.begin(mu, tau)
            ledger.add_dense(grads, weight, -lr if nesterov else 0.0)
            ledger.end(lr, nesterov)
        ex_ledger = state.example_ledger
        if mu == 0:
            for indices, terms in examples:
                ex_ledger.direct(terms, -lr * sign, indices)
        elif self.config.example_momentum == "exact":
            weight = ex_ledger.begin(mu, tau)
            for indices, terms in examples:
                ex_ledger.add(terms, weight * sign, indices)
                if nesterov:
                    ex_ledger.direct(terms, -lr * sign, indices)
            ex_ledger.end(lr, nesterov)
        else:
            # Documented rule: the gradient's whole momentum-decayed effect at this step's lr.
            factor = 1.0 + mu * (1 - tau) / (1 - mu) if nesterov else (1 - tau) / (1 - mu)
            for indices, terms in examples:
                ex_ledger.direct(terms, -lr * sign * factor, indices)

    def _decoupled(self, group: dict[str, Any]) -> bool:
        """Whether ``group``'s weight decay scales ``W`` directly (AdamW's), not the gradient."""
        return bool(group.get("decoupled_weight_decay", False)) or isinstance(
            self.optimizer, torch.optim.AdamW
        )

    def _adam_split(
        self,
        state: _LayerState,
        group: dict[str, Any],
        terms: _StepTerms,
        w_old: torch.Tensor,
        delta: torch.Tensor,
    ) -> None:
        """Split an Adam / AdamW step through its first moment, as it was applied.

        Adam's update is ``-lr/(1-β1^t) · m_t / d_t`` with ``m_t = β1 m_{t-1} + (1-β1) g_t``
        and the preconditioner ``d_t = sqrt(v_t / (1-β2^t)) + eps`` read from the optimizer
        after the step. Given ``d_t``, the update is linear in the gradient history, so one
        first-moment buffer per class plus one for regularisation (coupled weight decay, an
        autocast remainder) sums to the optimizer's ``m_t``, and each member is credited
        ``-lr/(1-β1^t) · m_member / d_t``: the class and epoch components are exact and
        credit every update to the gradients that built it, momentum included. (The ratio
        rule credited each update to the current batch only, although with β1 = 0.9 most of
        it comes from earlier batches: on the shapes model its head proponents were at
        chance.) Per-example credit is each gradient's whole momentum-decayed effect at this
        step's learning rate and preconditioner, ``-lr · g_b / d_t`` (as SGD's "decayed"
        rule; documented approximation).
        """
        beta1, beta2 = (float(b) for b in group["betas"])
        lr, eps = float(group["lr"]), float(group["eps"])
        wd = float(group.get("weight_decay", 0.0))
        decoupled = self._decoupled(group)
        opt_state = self.optimizer.state[state.param]
        step = float(opt_state["step"])
        second = opt_state["max_exp_avg_sq"] if group.get("amsgrad") else opt_state["exp_avg_sq"]
        v = second.detach().to("cpu", state.w0.dtype).reshape(state.out, state.inp)
        denom = (v / (1.0 - beta2**step)).sqrt() + eps
        step_size = lr / (1.0 - beta1**step)
        rows = torch.zeros((state.c + 1, state.out, state.inp), dtype=state.w0.dtype)
        rows[: state.c].copy_(terms.class_g.reshape(state.c, state.out, state.inp))
        rows[: state.c].mul_(state.scale)
        if wd and not decoupled:
            rows[state.c].add_(w_old, alpha=wd)
        if state.remainder is not None:
            rows[state.c].add_(state.remainder.reshape(state.out, state.inp))
        if state.adam_m is None:
            state.adam_m = torch.zeros_like(rows)
        state.adam_m.mul_(beta1).add_(rows, alpha=1.0 - beta1)
        updates = state.adam_m * (-step_size / denom)
        applied = updates.sum(dim=0)
        if wd and decoupled:
            reg_exact = -lr * wd * w_old  # AdamW first scales W by (1 - lr·wd)
            state.reg_acc.add_(reg_exact)
            applied = applied + reg_exact
        state.class_acc.add_(updates[: state.c].reshape(state.class_acc.shape))
        regularised = bool(wd) or state.remainder is not None
        # What the optimizer's own float arithmetic did differently (rounding) goes with
        # regularisation when there is one; otherwise it stays out (at 1e-15 relative).
        reg = updates[state.c] + (delta - applied) if regularised else updates[state.c]
        state.reg_acc.add_(reg.reshape(state.reg_acc.shape))
        per_unit = (-lr * state.scale) / denom
        for cols, deltas, _, indices in terms.pairs:
            state.add_example_full(indices, state.example_grads(cols, deltas) * per_unit)

    def _ratio_split(
        self,
        state: _LayerState,
        group: dict[str, Any],
        terms: _StepTerms,
        w_old: torch.Tensor,
        delta: torch.Tensor,
    ) -> None:
        """Split the measured update element-wise by each member's share of the gradient.

        Members' gradients enter at the applied gradient's scale and an autocast rounding
        remainder is a member of its own, credited with the regularisation component, so the
        shares are those of the gradient the optimizer actually used.
        """
        pairs = terms.pairs
        wd = float(group.get("weight_decay", 0.0))
        decoupled = self._decoupled(group)
        lr = float(group["lr"])
        rest = delta
        if wd and decoupled:
            # AdamW first scales W by (1 - lr·wd): that part is exactly weight decay's.
            reg_exact = -lr * wd * w_old
            state.reg_acc.add_(reg_exact)
            rest = delta - reg_exact
        class_g = terms.class_g * state.scale
        reg_g = wd * w_old if (wd and not decoupled) else torch.zeros_like(w_old)
        if state.remainder is not None:
            reg_g = reg_g + state.remainder
        total = class_g.sum(dim=0) + reg_g
        scale = float(total.abs().max()) if total.numel() else 0.0
        # Entries with (almost) no gradient are split equally among the batch's examples.
        small = total.abs() <= self.config.ratio_eps * scale
        safe = torch.where(small, torch.ones_like(total), total)
        n_members = sum(int(p[2].numel()) for p in pairs)
        if n_members == 0:
            # No gradient this step (e.g. only Adam's momentum moved W): regularisation's.
            state.reg_acc.add_(rest)
            return
        ratio = rest / safe  # update per unit of gradient, entry-wise
        equal = torch.where(small, rest / n_members, torch.zeros_like(rest))
        ratio = torch.where(small, torch.zeros_like(ratio), ratio)
        counts = torch.zeros(state.c, dtype=rest.dtype)
        for _, _, labels, _ in pairs:
            counts += torch.bincount(labels, minlength=state.c).to(rest.dtype)
        state.class_acc.add_(class_g * ratio + counts[:, None, None] * equal)
        state.reg_acc.add_(reg_g * ratio)
        for cols, deltas, _, indices in pairs:
            updates = state.example_grads(cols, deltas) * (ratio * state.scale) + equal
            state.add_example_full(indices, updates)

    def remove(self) -> None:
        """Remove the hooks without producing a result."""
        self._hooks.close()
