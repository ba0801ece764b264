"""Explain inputs with a finished trace: refinement, class shares, ridge histograms, proponents.

For a traced layer with final weight ``W_T = W_0 + Σ_m A_m`` (components ``m``: every
(epoch, class) pair and every epoch's regularisation) and an input ``x`` whose layer input in
the final network is ``a(x)``:

- refinement ``r = (W_T - W_0) ⋆ a(x) = Σ_m c_m``, ``c_m = A_m ⋆ a(x)`` (exact);
- signed projection ``π_m = ⟨c_m, r⟩ / ‖r‖`` (``Σ_m π_m = ‖r‖`` exactly), cosine, norm;
- class shares ``Σ_{m∈c} π_m / ‖r‖`` (last column: regularisation), cumulative per epoch;
- per training example ``i``: ``π_i = ⟨A_i ⋆ a(x), r⟩/‖r‖ = ⟨A_i, G(x)⟩/‖r‖`` with
  ``G(x) = Σ_p r_p ⊗ patch_p(x)``; exact where ``A_i`` is kept, otherwise estimated from the
  sketches ``⟨P A_i, P G(x)⟩`` (unbiased);
- ridge histograms: per class, cosines weighted by norm over the training examples (layers
  with exact per-example updates) or over the (epoch, class) components (other layers).

Everything returned is plain numpy arrays (:class:`TraceExplanation`), ready for an atlas.

Examples:
    >>> exp = explain(result, model, test_images)                      # doctest: +SKIP
    >>> exp.class_share[0, -1]        # image 0, last traced layer: [C + 1] shares  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import nn

from compute.atlas import PART_TRACE, TRACE_KINDS, TRACE_PATHS, TRACE_TEXTS, Atlas, update_atlas
from compute.capture import HookSet
from compute.trace.tracer import LayerTrace, TraceResult, input_patches

log = logging.getLogger(__name__)

#: What the traced model takes: an image batch ``[n, ...]``, or a text model's batch
#: mapping (``input_ids``, ``attention_mask``, ... each ``int64 [n, T]``, right-padded as
#: :class:`compute.text_data.TextCollate` pads it).
ModelInputs: TypeAlias = torch.Tensor | Mapping[str, torch.Tensor]


def check_inputs(inputs: object) -> ModelInputs:
    """``inputs`` if :func:`explain` can take it, else a one-line error saying what to pass.

    A text batch must carry its ``attention_mask``: without it padding cannot be told from
    text, and the explanation of a padded input would depend on its batch.

    Raises:
        TypeError: neither a tensor nor a batch mapping of tensors.
        ValueError: token ids as a bare tensor, or a text batch without
            ``input_ids`` / ``attention_mask``.
    """
    if isinstance(inputs, Mapping):
        missing = [key for key in ("input_ids", "attention_mask") if key not in inputs]
        if missing:
            raise ValueError(
                f"a text batch needs {' and '.join(repr(k) for k in missing)} (as "
                "compute.text_data.TextCollate, or the tokenizer with padding=True and "
                f"return_tensors='pt', give it); got {sorted(inputs)}"
            )
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if not all(isinstance(v, torch.Tensor) for v in inputs.values()):
            raise ValueError(
                "a text batch's values must be tensors (tokenizer(..., return_tensors='pt'))"
            )
        if ids.ndim != 2 or tuple(mask.shape) != tuple(ids.shape):
            raise ValueError(
                f"a text batch needs input_ids and attention_mask of one shape [n, T], not "
                f"{tuple(ids.shape)} and {tuple(mask.shape)} (one input: add a batch "
                "dimension)"
            )
        return inputs
    if isinstance(inputs, torch.Tensor):
        if not inputs.is_floating_point():
            raise ValueError(
                f"integer inputs {tuple(inputs.shape)} look like token ids: pass a text "
                "model's batch as a mapping with 'input_ids' and 'attention_mask'"
            )
        return inputs
    raise TypeError(
        f"explain takes an image tensor [n, ...] or a text batch mapping, not "
        f"{type(inputs).__name__} (tokenise texts first: compute.text_data.TextCollate)"
    )


def count_inputs(inputs: ModelInputs) -> int:
    """How many inputs ``inputs`` holds (its first dimension)."""
    if isinstance(inputs, Mapping):
        return int(inputs["input_ids"].shape[0])
    return int(inputs.shape[0])


def slice_inputs(inputs: ModelInputs, start: int, stop: int) -> ModelInputs:
    """Inputs ``start:stop`` (every key of a batch mapping sliced alike)."""
    if isinstance(inputs, Mapping):
        return {key: value[start:stop] for key, value in inputs.items()}
    return inputs[start:stop]


def token_mask(inputs: ModelInputs) -> torch.Tensor | None:
    """``bool [n, T]``: the real (non-padding) tokens of a text batch; ``None`` for images
    (or a text batch without ``attention_mask``: every token is real)."""
    if isinstance(inputs, Mapping) and "attention_mask" in inputs:
        return inputs["attention_mask"] != 0
    return None


def _masked(a: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A token layer's input ``[n, T, D]`` with padding tokens zeroed.

    A traced Linear has no bias in the identity (``r = ΔW a``), so a zero input column
    contributes nothing to ``r``, ``W_0 a``, ``W_T a`` or any score: padding is excluded
    exactly, and an input's explanation does not depend on how much padding its batch had.
    """
    if mask is None or a.ndim == 2:  # images, or a pooled [n, D] input (a head)
        return a
    if a.ndim != 3 or a.shape[:2] != mask.shape:
        # Padding could not be told apart here: refuse rather than let it into the figures.
        raise ValueError(
            f"a traced layer's input {tuple(a.shape)} is neither [n, D] nor [n, T, D] with "
            f"the batch's {tuple(mask.shape)} tokens: its padding cannot be excluded"
        )
    return a * mask[..., None].to(a.dtype)


@dataclass(frozen=True)
class ExplainConfig:
    """How explanations are summarised.

    Attributes:
        top_k: proponents and opponents kept per image and layer.
        bins: ridge histogram bins over cosine ``[-1, 1]``.
        batch_size: images per forward pass when capturing layer inputs.
    """

    top_k: int = 10
    bins: int = 20
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be positive, got {self.top_k}")
        if self.bins < 2:
            raise ValueError(f"bins must be at least 2, got {self.bins}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


@dataclass(frozen=True)
class TraceExplanation:
    """Explanations of ``n`` inputs over ``T`` traced layers (numpy only, no pickle needed).

    ``C`` classes, ``E`` epochs, ``k`` = top_k, ``B`` = bins. Share columns are the ``C``
    classes followed by the regularisation component.

    Attributes:
        layers: traced layer names, length ``T``.
        per_example: ``"exact"`` or ``"projected"`` per layer (how proponents were scored).
        ridge_unit: ``"example"`` or ``"epoch-class"`` per layer (what the ridge counts).
        predictions: ``int64[n]`` the final model's top-1 class.
        norms: ``float32[n, T, 3]``: ``‖r‖``, ``‖W_0 ⋆ a(x)‖``, ``‖W_T ⋆ a(x)‖``.
        class_share: ``float32[n, T, C+1]``: ``Σ_{m∈c} π_m / ‖r‖`` (rows sum to 1).
        epoch_share: ``float32[n, T, E, C+1]``: the same, cumulative up to each epoch's end.
        epoch_cosine: ``float32[n, T, E]``: ``cos(r(≤e), r)``: when the direction settled.
        ridge_hist: ``float32[n, T, C, B]``: norm-weighted cosine histogram per class.
        ridge_edges: ``float32[B+1]`` bin edges (``-1..1``).
        proponent_index / opponent_index: ``int64[n, T, k]`` training indices, best first.
        proponent_score / opponent_score: ``float32[n, T, k]`` their ``π_i`` (``/ ‖r‖``
            makes them shares).
        sum_error: ``float64[n, T]`` ``|Σ_m π_m - ‖r‖| / ‖r‖`` (the exactness check).
    """

    layers: tuple[str, ...]
    per_example: tuple[str, ...]
    ridge_unit: tuple[str, ...]
    predictions: np.ndarray
    norms: np.ndarray
    class_share: np.ndarray
    epoch_share: np.ndarray
    epoch_cosine: np.ndarray
    ridge_hist: np.ndarray
    ridge_edges: np.ndarray
    proponent_index: np.ndarray
    proponent_score: np.ndarray
    opponent_index: np.ndarray
    opponent_score: np.ndarray
    sum_error: np.ndarray

    @property
    def num_images(self) -> int:
        return int(self.predictions.shape[0])


def capture_inputs(
    model: nn.Module, layers: tuple[str, ...], images: ModelInputs, batch_size: int = 64
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs of ``layers`` in the final network (eval mode) and the logits.

    Args:
        model: the trained model.
        layers: module names.
        images: ``[n, ...]`` model inputs, or a text model's batch mapping
            (:data:`ModelInputs`).
        batch_size: inputs per forward pass.

    Returns:
        ``({layer: [n, *input_shape]}, logits [n, classes])``; a token layer's input
        ``[n, T, D]`` has its padding tokens zeroed (:func:`token_mask`).
    """
    images = check_inputs(images)
    modules = dict(model.named_modules())
    store: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    was_training = model.training
    model.eval()
    logits = []
    try:
        with HookSet() as hooks, torch.no_grad():
            for name in layers:
                hooks.on_input(modules[name], lambda x, name=name: store[name].append(x.detach()))
            for start in range(0, count_inputs(images), batch_size):
                logits.append(model(slice_inputs(images, start, start + batch_size)))
    finally:
        model.train(was_training)
    mask = token_mask(images)
    captured = {name: _masked(torch.cat(v), mask) for name, v in store.items()}
    return captured, torch.cat(logits)


def _prepare(layer: LayerTrace) -> dict[str, torch.Tensor]:
    """Per-layer tensors reused by every explanation (built once per :class:`Explainer`)."""
    e, c = layer.class_epoch.shape[:2]
    o = layer.w0.shape[0]
    i_dim = layer.w0[0].numel()
    # Components m = (epoch, class) then (epoch, regularisation): [E, C+1, O, I].
    comps = torch.cat(
        [layer.class_epoch.reshape(e, c, o, i_dim), layer.reg_epoch.reshape(e, 1, o, i_dim)],
        dim=1,
    )
    prepared = {
        "w0": layer.w0.reshape(o, i_dim),
        "delta": (layer.wt - layer.w0).reshape(o, i_dim),
        "comps": comps.reshape(-1, o * i_dim),  # [M, O·I]: plain matmuls beat einsum here
        # Norms only feed cosines (ridge), so float32 is enough and twice as fast.
        "flat32": comps.reshape(-1, i_dim).float(),  # [M·O, I]
        "epoch_sum": comps.sum(dim=1),  # [E, O, I]
    }
    if layer.example is not None:
        prepared["example"] = layer.example.reshape(layer.example.shape[0], o * i_dim)
        prepared["example32"] = prepared["example"].float()
    else:
        assert layer.example_proj is not None
        prepared["example_proj"] = layer.example_proj.reshape(layer.example_proj.shape[0], -1)
    return prepared


def _layer_scores(
    layer: LayerTrace,
    prep: dict[str, torch.Tensor],
    module: nn.Module,
    a: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    config: ExplainConfig,
) -> dict[str, np.ndarray]:
    """All per-image figures of one layer for inputs ``a`` ``[n, ...]``."""
    dtype = layer.w0.dtype
    e, c = layer.class_epoch.shape[:2]
    o, i_dim = prep["w0"].shape
    m = e * (c + 1)
    cols = input_patches(module, a.to(dtype))  # [n, I, L]
    n, _, length = cols.shape
    init = torch.einsum("oi,nil->nol", prep["w0"], cols)
    r = torch.einsum("oi,nil->nol", prep["delta"], cols)  # [n, O, L]
    final = init + r
    r_norm = r.flatten(1).norm(dim=1)  # [n]
    safe = r_norm.clamp_min(torch.finfo(dtype).tiny)
    g = torch.einsum("nol,nil->noi", r, cols)  # G(x): ⟨A ⋆ a, r⟩ = ⟨A, G⟩
    pi = (g.reshape(n, -1) @ prep["comps"].T) / safe[:, None]  # [n, M]
    # Norms of the components' outputs: via the patch Gram when I < L (cheaper), else direct.
    cols32 = cols.float()
    flat32 = prep["flat32"]
    if i_dim < length:
        gram = torch.bmm(cols32, cols32.transpose(1, 2))  # [n, I, I]
        sq = ((flat32 @ gram) * flat32).sum(dim=2).clamp_min(0)  # [n, M·O]
        comp_norm = sq.reshape(n, m, o).sum(dim=2).sqrt().to(dtype)
    else:
        out = flat32 @ cols32  # [n, M·O, L]
        comp_norm = out.reshape(n, m, -1).norm(dim=2).to(dtype)
    pi_ec = pi.reshape(n, e, c + 1)
    class_share = pi_ec.sum(dim=1) / safe[:, None]
    epoch_share = pi_ec.cumsum(dim=1) / safe[:, None, None]
    # cos(r(≤e), r): cumulative refinement after each epoch against the final one.
    per_epoch = torch.einsum("eoi,nil->neol", prep["epoch_sum"], cols).cumsum(dim=1)
    cum_norm = per_epoch.flatten(2).norm(dim=2).clamp_min(torch.finfo(dtype).tiny)
    epoch_cosine = torch.einsum("neol,nol->ne", per_epoch, r) / (cum_norm * safe[:, None])
    sum_error = (pi.sum(dim=1) - r_norm).abs() / safe

    # Per-example scores π_i.
    if layer.example is not None:
        scores = (g.reshape(n, -1) @ prep["example"].T) / safe[:, None]
        per_example = "exact"
    else:
        assert layer.example_proj is not None and layer.proj_out is not None
        assert layer.proj_in is not None
        pg = torch.einsum("ko,noi,ji->nkj", layer.proj_out, g, layer.proj_in)
        scores = (pg.reshape(n, -1) @ prep["example_proj"].T) / safe[:, None]
        per_example = "projected"
    k = min(config.top_k, scores.shape[1])
    top = torch.topk(scores, k, dim=1)
    bottom = torch.topk(-scores, k, dim=1)

    # Ridge: norm-weighted cosine histogram per class.
    edges = torch.linspace(-1, 1, config.bins + 1, dtype=dtype)
    hist = torch.zeros((n, num_classes, config.bins), dtype=dtype)
    if layer.example is not None:
        ex32 = prep["example32"].reshape(-1, i_dim)  # [N·O, I]
        if i_dim < length:
            gram = torch.bmm(cols32, cols32.transpose(1, 2))
            ex_sq = ((ex32 @ gram) * ex32).sum(dim=2).reshape(n, -1, o).sum(dim=2)
        else:
            ex_sq = (ex32 @ cols32).reshape(n, -1, o * length).pow(2).sum(dim=2)
        weights, labels = ex_sq.clamp_min(0).sqrt().to(dtype), train_labels
        cosines = scores / weights.clamp_min(torch.finfo(dtype).tiny)
        ridge_unit = "example"
    else:
        weights = comp_norm.reshape(n, e, c + 1)[:, :, :c].reshape(n, e * c)
        cosines = pi.reshape(n, e, c + 1)[:, :, :c].reshape(n, e * c) / weights.clamp_min(
            torch.finfo(dtype).tiny
        )
        labels = torch.arange(c).repeat(e)
        ridge_unit = "epoch-class"
    bins = torch.bucketize(cosines.clamp(-1, 1), edges[1:-1])
    valid = labels >= 0
    flat_index = labels.clamp_min(0)[None, :] * config.bins + bins  # [n, X]
    weights = torch.where(valid[None, :], weights, torch.zeros_like(weights))
    hist.view(n, -1).scatter_add_(1, flat_index, weights)
    return {
        "norms": torch.stack(
            [r_norm, init.flatten(1).norm(dim=1), final.flatten(1).norm(dim=1)], dim=1
        ),
        "class_share": class_share,
        "epoch_share": epoch_share,
        "epoch_cosine": epoch_cosine,
        "ridge_hist": hist,
        "edges": edges,
        "proponent_index": top.indices,
        "proponent_score": top.values,
        "opponent_index": bottom.indices,
        "opponent_score": -bottom.values,
        "sum_error": sum_error,
        "per_example": per_example,  # type: ignore[dict-item]
        "ridge_unit": ridge_unit,  # type: ignore[dict-item]
    }


def explain(
    result: TraceResult,
    model: nn.Module,
    images: ModelInputs,
    config: ExplainConfig = ExplainConfig(),
) -> TraceExplanation:
    """Explain ``images`` with the trace of the model's training.

    Args:
        result: the finished trace (:meth:`Tracer.finish`).
        model: the trained model (its traced weights must equal the trace's ``W_T``).
        images: ``[n, ...]`` model inputs (one image: ``images[None]``), or a text
            model's batch mapping (``input_ids``, ``attention_mask``: padding tokens are
            excluded from every figure).
        config: top-k, histogram bins, batch size.

    Returns:
        A :class:`TraceExplanation` over all traced layers.

    Examples:
        >>> exp = explain(result, model, splits.test.images[:1])       # doctest: +SKIP
        >>> exp.proponent_index[0, -1]                                  # doctest: +SKIP
    """
    return Explainer(result, model, config)(images)


class Explainer:
    """Explains inputs with one trace; per-layer tensors are prepared once.

    Args:
        result: the finished trace.
        model: the trained model (its traced weights must equal the trace's ``W_T``).
        config: top-k, histogram bins, batch size.

    Examples:
        >>> explainer = Explainer(result, model)                        # doctest: +SKIP
        >>> explainer(test_images[:1]).class_share                      # doctest: +SKIP
    """

    def __init__(
        self, result: TraceResult, model: nn.Module, config: ExplainConfig = ExplainConfig()
    ) -> None:
        self.result = result
        self.model = model
        self.config = config
        self.modules = dict(model.named_modules())
        for layer in result.layers:
            weight = self.modules[layer.name].weight.detach().to("cpu", layer.wt.dtype)
            if not torch.allclose(weight, layer.wt, rtol=1e-6, atol=1e-7):
                raise ValueError(f"layer {layer.name!r} of the model differs from the trace's W_T")
        self.prepared = [_prepare(layer) for layer in result.layers]
        self.train_labels = torch.as_tensor(result.train_labels)

    def __call__(self, images: ModelInputs) -> TraceExplanation:
        """Explain ``images`` ``[n, ...]`` (or a text batch mapping) over every traced layer,
        in chunks of ``batch_size``."""
        images = check_inputs(images)
        chunks = [
            self._chunk(slice_inputs(images, start, start + self.config.batch_size))
            for start in range(0, count_inputs(images), self.config.batch_size)
        ]
        if len(chunks) == 1:
            return chunks[0]
        first = chunks[0]
        merged = {
            f.name: np.concatenate([getattr(chunk, f.name) for chunk in chunks])
            for f in dataclasses.fields(TraceExplanation)
            if isinstance(getattr(first, f.name), np.ndarray) and f.name != "ridge_edges"
        }
        return dataclasses.replace(first, **merged)

    def _chunk(self, images: ModelInputs) -> TraceExplanation:
        result, config = self.result, self.config
        names = tuple(layer.name for layer in result.layers)
        inputs, logits = capture_inputs(self.model, names, images, config.batch_size)
        parts = [
            _layer_scores(
                layer,
                prep,
                self.modules[layer.name],
                inputs[layer.name],
                self.train_labels,
                result.num_classes,
                config,
            )
            for layer, prep in zip(result.layers, self.prepared, strict=True)
        ]
        return _assemble(names, parts, logits)


def _assemble(
    names: tuple[str, ...], parts: list[dict[str, Any]], logits: torch.Tensor
) -> TraceExplanation:
    def stack(key: str, dtype: type) -> np.ndarray:
        return np.stack([p[key].cpu().numpy() for p in parts], axis=1).astype(dtype)

    return TraceExplanation(
        layers=names,
        per_example=tuple(p["per_example"] for p in parts),
        ridge_unit=tuple(p["ridge_unit"] for p in parts),
        predictions=logits.argmax(dim=1).cpu().numpy().astype(np.int64),
        norms=stack("norms", np.float32),
        class_share=stack("class_share", np.float32),
        epoch_share=stack("epoch_share", np.float32),
        epoch_cosine=stack("epoch_cosine", np.float32),
        ridge_hist=stack("ridge_hist", np.float32),
        ridge_edges=parts[0]["edges"].cpu().numpy().astype(np.float32),
        proponent_index=stack("proponent_index", np.int64),
        proponent_score=stack("proponent_score", np.float32),
        opponent_index=stack("opponent_index", np.int64),
        opponent_score=stack("opponent_score", np.float32),
        sum_error=stack("sum_error", np.float64),
    )


def example_scores(
    result: TraceResult, model: nn.Module, images: ModelInputs, layer: str
) -> np.ndarray:
    """Every training example's score ``π_i = ⟨A_i ⋆ a(x), r⟩ / ‖r‖`` at one layer.

    Exact where the layer keeps per-example updates, else the sketch estimate.

    Returns:
        ``float64[n, N]``.
    """
    trace = result.layer(layer)
    module = dict(model.named_modules())[layer]
    inputs, _ = capture_inputs(model, (layer,), images)
    dtype = trace.w0.dtype
    o = trace.w0.shape[0]
    cols = input_patches(module, inputs[layer].to(dtype))
    r = torch.einsum("oi,nil->nol", (trace.wt - trace.w0).reshape(o, -1), cols)
    safe = r.flatten(1).norm(dim=1).clamp_min(torch.finfo(dtype).tiny)
    g = torch.einsum("nol,nil->noi", r, cols)
    if trace.example is not None:
        ex = trace.example.reshape(trace.example.shape[0], o, -1)
        scores = torch.einsum("xoi,noi->nx", ex, g)
    else:
        assert trace.example_proj is not None and trace.proj_out is not None
        assert trace.proj_in is not None
        pg = torch.einsum("ko,noi,ji->nkj", trace.proj_out, g, trace.proj_in)
        scores = torch.einsum("xkj,nkj->nx", trace.example_proj, pg)
    return (scores / safe[:, None]).cpu().numpy().astype(np.float64)


def exact_projections(
    result: TraceResult, model: nn.Module, images: ModelInputs, layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every component's ``π_m`` and ``‖r‖`` for one layer, at full precision (for checks).

    Returns:
        ``(π [n, E, C+1], ‖r‖ [n])`` in the trace's dtype.
    """
    trace = result.layer(layer)
    module = dict(model.named_modules())[layer]
    inputs, _ = capture_inputs(model, (layer,), images)
    dtype = trace.w0.dtype
    cols = input_patches(module, inputs[layer].to(dtype))
    o = trace.w0.shape[0]
    e, c = trace.class_epoch.shape[:2]
    comps = torch.cat(
        [trace.class_epoch.reshape(e, c, o, -1), trace.reg_epoch.reshape(e, 1, o, -1)], dim=1
    )
    contrib = torch.einsum("ecoi,nil->necol", comps, cols)
    r = torch.einsum("oi,nil->nol", (trace.wt - trace.w0).reshape(o, -1), cols)
    r_norm = r.flatten(1).norm(dim=1)
    pi = torch.einsum("necol,nol->nec", contrib, r) / r_norm[:, None, None]
    return pi, r_norm


# ---------------------------------------------------------------------------------------
# The atlas part (paths and the checked reader live in compute/atlas.py)
# ---------------------------------------------------------------------------------------


def write_trace_part(
    atlas_path: str | Path,
    explanations: TraceExplanation,
    *,
    image_index: np.ndarray,
    image_label: np.ndarray,
    train_label: np.ndarray,
    split: str = "test",
    info: dict[str, Any] | None = None,
    texts: Mapping[str, Mapping[int, str]] | None = None,
) -> Path:
    """Add the explanations of one split to an atlas as the ``"trace"`` part.

    Args:
        atlas_path: an existing atlas.
        explanations: from :func:`explain` for the split's images, in dataset order.
        image_index: ``int64[n]`` dataset index (in ``split``) of each explained image.
        image_label: ``int64[n]`` true label of each explained image.
        train_label: ``int64[N]`` label of each training example (proponents refer to it).
        split: the split the explained images come from.
        info: extra manifest facts (e.g. optimizer, epochs, reconstruction error).
        texts: a text model's inputs as text, ``{"test": {row: text}, "train": {index:
            text}}``, so the Training view shows them (:func:`trace_texts` picks them;
            checked before anything is written); ``None`` for images. Thumbnails go in
            after this call (:func:`compute.atlas.trace_thumbnail_path`): writing the part
            replaces the whole ``trace/`` folder.

    Returns:
        The atlas path.

    Examples:
        >>> write_trace_part("demo-atlas", exp, image_index=np.arange(360),  # doctest: +SKIP
        ...                  image_label=labels, train_label=result.train_labels)  # doctest: +SKIP
    """
    n = explanations.num_images
    atlas = Atlas.open(atlas_path)
    if atlas.modality == "text" and texts is None:
        raise ValueError(
            "a text atlas's trace needs the texts it shows: write_trace_part(..., "
            "texts=trace_texts(explanations, explained_texts, train_texts))"
        )
    mapped = atlas.manifest.get("dataset", {}).get("split")
    if mapped != split:
        log.warning(
            "the trace explains split %r but the atlas maps split %r: the Training and "
            "Instance views will not link the same inputs%s",
            split,
            mapped,
            f" (if the atlas maps those inputs, build it with --split {split})"
            if mapped is None
            else "",
        )
    image_index = np.asarray(image_index, dtype=np.int64)
    image_label = np.asarray(image_label, dtype=np.int64)
    if image_index.shape != (n,) or image_label.shape != (n,):
        raise ValueError(f"image_index and image_label must have shape ({n},)")
    arrays = {
        "image_index": image_index,
        "image_label": image_label,
        "prediction": explanations.predictions.astype(np.int64),
        "train_label": np.asarray(train_label, dtype=np.int64),
        "norms": explanations.norms.astype(np.float32),
        "class_share": explanations.class_share.astype(np.float32),
        "epoch_share": explanations.epoch_share.astype(np.float32),
        "epoch_cosine": explanations.epoch_cosine.astype(np.float32),
        "ridge_hist": explanations.ridge_hist.astype(np.float32),
        "ridge_edges": explanations.ridge_edges.astype(np.float32),
        "proponent_index": explanations.proponent_index.astype(np.int64),
        "proponent_score": explanations.proponent_score.astype(np.float32),
        "opponent_index": explanations.opponent_index.astype(np.int64),
        "opponent_score": explanations.opponent_score.astype(np.float32),
    }
    manifest = {
        "split": split,
        "num_images": n,
        "num_train": int(arrays["train_label"].shape[0]),
        "num_epochs": int(explanations.epoch_share.shape[2]),
        "top_k": int(explanations.proponent_index.shape[2]),
        "bins": int(explanations.ridge_hist.shape[3]),
        "layers": [
            {"name": name, "per_example": pe, "ridge_unit": ru}
            for name, pe, ru in zip(
                explanations.layers,
                explanations.per_example,
                explanations.ridge_unit,
                strict=True,
            )
        ],
        **(info or {}),
    }
    # A rewritten trace replaces the whole folder: no text or thumbnail of the previous
    # trace stays to be shown beside the new one's rows.
    stored = None if texts is None else _checked_texts(texts, explanations, arrays["train_label"])
    with update_atlas(atlas_path, add_parts=(PART_TRACE,), replace=("trace/",)) as sink:
        for name, array in arrays.items():
            sink.add_array(TRACE_PATHS[name], array)
        if stored is not None:
            sink.add_bytes(TRACE_TEXTS, json.dumps(stored, ensure_ascii=False).encode("utf-8"))
        sink.manifest_updates["trace"] = manifest  # type: ignore[attr-defined]
    return Path(atlas_path)


def named_examples(explanations: TraceExplanation) -> np.ndarray:
    """``int64`` sorted training indices named as a proponent or opponent anywhere."""
    named = np.union1d(explanations.proponent_index.ravel(), explanations.opponent_index.ravel())
    return named[named >= 0].astype(np.int64)


def _checked_texts(
    texts: Mapping[str, Mapping[int, str]],
    explanations: TraceExplanation,
    train_label: np.ndarray,
) -> dict[str, dict[str, str]]:
    """``texts`` as the trace part stores them, checked before anything is written: every
    explained row ``0..n-1`` and every named training example has a text, and nothing
    else is given (a text under another row's number would be shown for it)."""
    if not isinstance(texts, Mapping) or not all(
        isinstance(texts.get(kind, {}), Mapping) for kind in TRACE_KINDS
    ):
        raise ValueError("texts must map 'test' and 'train' to {number: text} (trace_texts)")
    n = explanations.num_images
    named = set(named_examples(explanations).tolist())
    given = {kind: {int(k): v for k, v in texts.get(kind, {}).items()} for kind in TRACE_KINDS}
    if set(given["test"]) != set(range(n)):
        raise ValueError(f"texts['test'] must hold the texts of rows 0..{n - 1}, in row order")
    missing = sorted(named - set(given["train"]))
    if missing or not set(given["train"]) <= set(range(len(train_label))):
        raise ValueError(
            "texts['train'] must hold the text of every named training example "
            f"(e.g. {missing[:3]} missing), by dataset index"
        )
    if not all(isinstance(v, str) for rows in given.values() for v in rows.values()):
        raise ValueError("every text must be a string")
    return {kind: {str(k): v for k, v in sorted(rows.items())} for kind, rows in given.items()}


def trace_texts(
    explanations: TraceExplanation,
    explained: Sequence[str],
    train: Sequence[str],
) -> dict[str, dict[int, str]]:
    """The texts a text atlas's trace part keeps: every explained input's, and those of the
    training examples named as a proponent or opponent (not the whole training set).

    Args:
        explanations: :func:`explain`'s result for ``explained``.
        explained: the explained inputs' texts, by row.
        train: every training example's text, by dataset index.

    Returns:
        ``{"test": {row: text}, "train": {index: text}}`` for :func:`write_trace_part`.
    """
    if len(explained) != explanations.num_images:
        raise ValueError(
            f"trace_texts needs the texts of the {explanations.num_images} explained inputs, "
            f"in their order (got {len(explained)})"
        )
    named = named_examples(explanations)
    return {
        "test": dict(enumerate(explained)),
        "train": {int(i): train[int(i)] for i in named.tolist()},
    }


def load_trace_part(atlas_path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read the ``"trace"`` part back: ``(manifest["trace"], {name: array})`` (checked).

    Raises:
        compute.atlas.AtlasError: if the part is missing or an array has the wrong shape.
    """
    return Atlas.open(atlas_path).trace()
