"""Activation vectors for Mapper, collected in the one streaming pass (bounded, order-free).

Per chosen layer, one vector per sampled image: the channel vector at one spatial position
(TopoAct / Activation Atlas sampling) or the spatial mean. Which images are kept is a
**bottom-K sketch**: the ``capacity`` images with the smallest 64-bit hash of
``(seed, image index)``. The hash is a bijection of the index for a fixed seed, so there
are no ties, and the kept set depends only on the set of images seen: not on batch size,
arrival order or how the dataset was split across processes (:meth:`ActivationSampler.merge`).
The spatial position is another hash, of ``(seed, image index, layer name)``: never a
global RNG. Every layer keeps the same images, so Mapper nodes of different layers can be
linked through shared members.

Examples:
    >>> import torch
    >>> sampler = ActivationSampler(["a"], [(4, 3, 3)], capacity=5, seed=0)
    >>> sampler.update({"a": torch.rand(8, 4, 3, 3)}, torch.zeros(8, dtype=torch.long),
    ...                torch.arange(8))
    >>> sampler.result()["a"].vectors.shape
    (5, 4)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from compute.capture import HookSet
from compute.tokens import TOKEN_MAP_WIDTH

logger = logging.getLogger(__name__)

SampleMode = Literal["position", "mean"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays: a bijection with good avalanche."""
    z = np.asarray(z, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def _seed_key(seed: int) -> np.uint64:
    with np.errstate(over="ignore"):
        return _mix64(np.array([seed], dtype=np.uint64) + _GOLDEN)[0]


def _name_key(name: str) -> np.uint64:
    # hashlib, not hash(): Python's str hash is salted per process.
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def image_hash(seed: int, indices: np.ndarray) -> np.ndarray:
    """uint64 sampling key of each image (smaller = kept first).

    Args:
        seed: sampling seed.
        indices: int ``[n]`` dataset image indices (``>= 0``).

    Returns:
        uint64 ``[n]``; distinct indices give distinct keys (the map is a bijection).

    Examples:
        >>> bool(image_hash(0, np.arange(3))[0] == image_hash(0, np.array([0]))[0])
        True
    """
    idx = np.asarray(indices, dtype=np.int64)
    with np.errstate(over="ignore"):
        return _mix64(idx.astype(np.uint64) + _seed_key(seed))


def sample_positions(
    seed: int, indices: np.ndarray, layer: str, height: int, width: int
) -> np.ndarray:
    """The sampled spatial position of each image in ``layer``: hash of (seed, index, layer).

    Args:
        seed: sampling seed.
        indices: int ``[n]`` image indices.
        layer: layer name.
        height: map height.
        width: map width.

    Returns:
        int32 ``[n, 2]`` ``(row, col)``.

    Examples:
        >>> sample_positions(0, np.array([7]), "a", 1, 1).tolist()
        [[0, 0]]
    """
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = _mix64(_mix64(idx ^ _name_key(layer)) + _seed_key(seed) + _GOLDEN)
    flat = (z % np.uint64(height * width)).astype(np.int64)
    return np.stack([flat // width, flat % width], axis=1).astype(np.int32)


def sample_tokens(seed: int, indices: np.ndarray, layer: str, real: np.ndarray) -> np.ndarray:
    """The sampled token of each input in a token layer: the ``k``-th of its real tokens,
    ``k`` the hash of (seed, index, layer) (:func:`sample_positions`'s) modulo their number.

    Args:
        seed: sampling seed.
        indices: int ``[n]`` input indices.
        layer: layer name.
        real: bool ``[n, T]`` each input's real (non-padding) tokens; at least one each.

    Returns:
        int ``[n]`` token indices, each a real token of its input.

    Examples:
        >>> sample_tokens(0, np.array([7]), "a", np.array([[True, False]])).tolist()
        [0]
    """
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = _mix64(_mix64(idx ^ _name_key(layer)) + _seed_key(seed) + _GOLDEN)
    counts = real.sum(axis=1).astype(np.uint64)
    if len(counts) and counts.min() == 0:
        raise ValueError("an input without a real token")
    k = (z % np.maximum(counts, np.uint64(1))).astype(np.int64)
    order = np.cumsum(real, axis=1) - 1  # rank of each real token within its input
    return np.argmax(real & (order == k[:, None]), axis=1).astype(np.int64)


@dataclass(frozen=True)
class MapperSample:
    """Sampled activation vectors of one layer, sorted by image index.

    Attributes:
        vectors: float32 ``[n, C]``.
        image_index: int64 ``[n]`` dataset index of the image.
        label: int64 ``[n]`` its class.
        position: int32 ``[n, 2]`` sampled ``(row, col)``; ``(-1, -1)`` in ``mean`` mode.
    """

    vectors: np.ndarray
    image_index: np.ndarray
    label: np.ndarray
    position: np.ndarray


class ActivationSampler:
    """Bounded, order-independent sample of activation vectors for Mapper (bottom-K sketch).

    Memory: at most ``capacity`` rows per layer (``capacity × C × 4`` bytes plus 28 bytes
    per row), allocated as the sample grows. Per batch, only images whose key beats the
    current K-th smallest are gathered (on the outputs' device) and copied to the host.

    Args:
        layer_names: chosen layers.
        layer_shapes: ``(C, H, W)`` of each layer's output.
        capacity: maximum images kept (default 100,000).
        seed: sampling seed.
        mode: ``"position"`` (one hashed spatial position per image and layer, as TopoAct)
            or ``"mean"`` (spatial mean).
    """

    def __init__(
        self,
        layer_names: Sequence[str],
        layer_shapes: Sequence[tuple[int, int, int]],
        capacity: int = 100_000,
        seed: int = 0,
        mode: SampleMode = "position",
    ) -> None:
        if len(layer_names) != len(layer_shapes):
            raise ValueError("layer_names and layer_shapes must have the same length")
        if len(set(layer_names)) != len(layer_names):
            raise ValueError("layer_names must be distinct")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if mode not in ("position", "mean"):
            raise ValueError(f"mode must be 'position' or 'mean', got {mode!r}")
        self.layer_names = list(layer_names)
        self.layer_shapes = [tuple(int(v) for v in s) for s in layer_shapes]
        self.capacity = int(capacity)
        self.seed = int(seed)
        self.mode: SampleMode = mode
        self.count = 0
        self._keys = np.empty(0, dtype=np.uint64)
        self._index = np.empty(0, dtype=np.int64)
        self._label = np.empty(0, dtype=np.int64)
        self._vectors = {
            name: np.empty((0, shape[0]), dtype=np.float32)
            for name, shape in zip(self.layer_names, self.layer_shapes, strict=True)
        }
        self._position = {name: np.empty((0, 2), dtype=np.int32) for name in self.layer_names}
        self._batch: tuple[int, np.ndarray, np.ndarray, np.ndarray] = (
            0,
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
        )
        self._pending: set[str] = set()
        #: The current batch's sampled inputs' real tokens (``None``: not a text batch).
        self._real: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the sample's arrays."""
        total = self._keys.nbytes + self._index.nbytes + self._label.nbytes
        return (
            total
            + sum(v.nbytes for v in self._vectors.values())
            + sum(p.nbytes for p in self._position.values())
        )

    def _reserve(self, rows: int) -> None:
        """Grow the arrays (doubling, at most ``capacity``) to hold ``rows``."""
        have = len(self._keys)
        if rows <= have:
            return
        size = min(self.capacity, max(rows, 2 * have, 1024))

        def grow(a: np.ndarray) -> np.ndarray:
            out = np.empty((size, *a.shape[1:]), dtype=a.dtype)
            out[: self.count] = a[: self.count]
            return out

        self._keys, self._index, self._label = (
            grow(self._keys),
            grow(self._index),
            grow(self._label),
        )
        for name in self.layer_names:
            self._vectors[name] = grow(self._vectors[name])
            self._position[name] = grow(self._position[name])

    def _insert(
        self, keys: np.ndarray, index: np.ndarray, label: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Admit candidates into the bottom-K set; returns ``(accepted rows, their slots)``."""
        n, m = self.count, len(keys)
        if n + m <= self.capacity:
            accepted = np.arange(m)
            slots = np.arange(n, n + m)
        else:
            pool = np.concatenate([self._keys[:n], keys])
            keep = np.argpartition(pool, self.capacity - 1)[: self.capacity]
            accepted = np.sort(keep[keep >= n] - n)
            kept_old = np.zeros(n, dtype=bool)
            kept_old[keep[keep < n]] = True
            # Evicted slots, then never-filled ones: exactly one per accepted candidate.
            slots = np.concatenate([np.flatnonzero(~kept_old), np.arange(n, self.capacity)])
        self._reserve(n + len(accepted) if n + m <= self.capacity else self.capacity)
        self._keys[slots] = keys[accepted]
        self._index[slots] = index[accepted]
        self._label[slots] = label[accepted]
        self.count = min(self.capacity, n + m)
        return accepted, slots

    def _candidates(self, keys: np.ndarray) -> np.ndarray:
        """Rows whose key can enter the set (all while it is not full)."""
        if self.count < self.capacity:
            return np.arange(len(keys))
        return np.flatnonzero(keys < self._keys[: self.count].max())

    def update(self, outputs: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        """Add one batch (vectorised per layer): :meth:`begin_batch` + :meth:`add_layer` each.

        Args:
            outputs: per layer name, the layer output ``[B, C, H, W]`` (any device/dtype).
            labels: int ``[B]`` class of each image.
            indices: int ``[B]`` dataset index of each image; each image must be fed once.
        """
        batch = int(indices.shape[0])
        for name in self.layer_names:  # all shapes checked before anything is admitted
            self._check_shape(name, outputs[name], batch)
        self.begin_batch(labels, indices)
        for name in self.layer_names:
            self.add_layer(name, outputs[name])

    def _check_shape(self, name: str, output: Tensor, batch: int) -> None:
        shape = self.layer_shapes[self.layer_names.index(name)]
        if shape[2] == TOKEN_MAP_WIDTH:  # a token layer [B, T, D], T any
            if output.dim() != 3 or output.shape[0] != batch or output.shape[2] != shape[0]:
                raise ValueError(
                    f"layer {name!r}: output shape {tuple(output.shape)}, expected "
                    f"{(batch, 'T', shape[0])}"
                )
            return
        if tuple(output.shape) != (batch, *shape):
            raise ValueError(
                f"layer {name!r}: output shape {tuple(output.shape)}, expected {(batch, *shape)}"
            )

    def begin_batch(
        self, labels: Tensor, indices: Tensor, token_mask: Tensor | None = None
    ) -> None:
        """Decide which images of the batch enter the sample (before the forward).

        For the streaming pass, whose hooks must reduce each output at once (later in-place
        operations may change it): call this before the forward, then :meth:`add_layer` from
        each layer's hook, for every layer.

        Args:
            labels: int ``[B]`` class of each image.
            indices: int ``[B]`` dataset index of each image (``>= 0``, each image once).
            token_mask: a text batch's ``[B, T]`` attention mask (token layers sample and
                average only real tokens; ``None``: every token is real).
        """
        if self._pending:
            raise RuntimeError(f"add_layer was not called for {sorted(self._pending)}")
        idx = indices.detach().cpu().numpy().astype(np.int64).reshape(-1)
        lab = labels.detach().cpu().numpy().astype(np.int64).reshape(-1)
        if len(idx) != len(lab):
            raise ValueError(f"{len(idx)} indices but {len(lab)} labels")
        if len(idx) and idx.min() < 0:
            raise ValueError("image indices must be >= 0")
        keys = image_hash(self.seed, idx)
        cand = self._candidates(keys)
        rows = slots = np.empty(0, dtype=np.int64)
        if len(cand):
            accepted, slots = self._insert(keys[cand], idx[cand], lab[cand])
            rows = cand[accepted]
        self._batch = (len(idx), rows, slots, idx[rows])
        self._real = None
        if token_mask is not None:
            self._real = token_mask.detach().cpu().numpy().astype(bool)[rows]
        if len(rows):
            self._pending = set(self.layer_names)

    def add_layer(self, name: str, output: Tensor) -> None:
        """Store the current batch's sampled vectors of one layer (gathered on its device).

        Args:
            name: a chosen layer.
            output: its output ``[B, C, H, W]`` for the batch given to :meth:`begin_batch`.
        """
        batch, rows, slots, idx = self._batch
        self._check_shape(name, output, batch)
        if not len(rows):
            return
        _, height, width = self.layer_shapes[self.layer_names.index(name)]
        out = output.detach()
        picked = torch.from_numpy(rows).to(out.device)
        if width == TOKEN_MAP_WIDTH:
            vec, pos = self._token_vectors(name, out, picked, idx)
        elif self.mode == "position":
            pos = sample_positions(self.seed, idx, name, height, width)
            r = torch.from_numpy(pos[:, 0].astype(np.int64)).to(out.device)
            c = torch.from_numpy(pos[:, 1].astype(np.int64)).to(out.device)
            vec = out[picked, :, r, c]
        else:
            pos = np.full((len(rows), 2), -1, dtype=np.int32)
            vec = out[picked].float().mean(dim=(2, 3))
        self._vectors[name][slots] = vec.float().cpu().numpy()
        self._position[name][slots] = pos
        self._pending.discard(name)

    def _token_vectors(
        self, name: str, out: Tensor, picked: Tensor, idx: np.ndarray
    ) -> tuple[Tensor, np.ndarray]:
        """Vectors ``[n, D]`` and positions ``(0, t)`` of the picked inputs of a token layer
        ``[B, T, D]``: one sampled real token each, or the mean over the real tokens."""
        rows = out.shape[1]
        real = self._real if self._real is not None else np.ones((len(idx), rows), dtype=bool)
        if real.shape[1] != rows:
            raise ValueError(f"layer {name!r} has {rows} tokens, the mask {real.shape[1]}")
        if self.mode == "mean":
            weight = torch.from_numpy(real).to(out.device, torch.float32)
            total = (out[picked].float() * weight[..., None]).sum(dim=1)
            return total / weight.sum(dim=1, keepdim=True), np.full((len(idx), 2), -1, np.int32)
        token = sample_tokens(self.seed, idx, name, real)
        at = torch.from_numpy(token).to(out.device)
        pos = np.stack([np.zeros_like(token), token], axis=1).astype(np.int32)
        return out[picked, at], pos

    #: :class:`compute.capture.BatchRider` name (checkpoint and rank-merge key).
    name = "mapper"

    def attach(self, hooks: HookSet, modules: Mapping[str, nn.Module]) -> None:
        """Sample each chosen layer's output during the forward (``BatchRider``).

        Register after the Summit pass's hooks on the same modules: each layer's output is
        reduced inside the forward, before any later in-place operation.
        """
        for layer in self.layer_names:
            hooks.on_output(modules[layer], partial(self.add_layer, layer))

    def empty_copy(self) -> ActivationSampler:
        """A sampler with the same settings and nothing sampled (``BatchRider``)."""
        return ActivationSampler(
            self.layer_names, self.layer_shapes, self.capacity, self.seed, self.mode
        )

    def merge(self, other: ActivationSampler) -> ActivationSampler:
        """Fold another sampler (same layers, shapes, capacity, seed, mode) into this one.

        The result equals one sampler fed both streams (bottom-K of the union).

        Args:
            other: a sampler fed a disjoint set of images.

        Returns:
            ``self``.
        """
        if self._pending or other._pending:
            raise RuntimeError("a batch is incomplete: add_layer was not called for every layer")
        same = (
            other.layer_names == self.layer_names
            and other.layer_shapes == self.layer_shapes
            and other.capacity == self.capacity
            and other.seed == self.seed
            and other.mode == self.mode
        )
        if not same:
            raise ValueError("can only merge samplers with the same layers, capacity, seed, mode")
        m = other.count
        cand = self._candidates(other._keys[:m])
        if not len(cand):
            return self
        accepted, slots = self._insert(other._keys[cand], other._index[cand], other._label[cand])
        rows = cand[accepted]
        for name in self.layer_names:
            self._vectors[name][slots] = other._vectors[name][rows]
            self._position[name][slots] = other._position[name][rows]
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """The sample as CPU tensors, for checkpoints and for merging across processes.

        Keys: ``settings`` (capacity, seed, mode code, count), ``keys`` (the uint64 hashes
        viewed as int64), ``index``, ``label``, and per layer ``i`` ``vectors.{i}`` and
        ``position.{i}``; only the ``count`` filled rows.

        Returns:
            A dict of tensors (``torch.save`` with ``weights_only`` loads it).

        Examples:
            >>> s = ActivationSampler(["a"], [(2, 1, 1)], capacity=3)
            >>> sorted(s.state_dict())
            ['index', 'keys', 'label', 'position.0', 'settings', 'vectors.0']
        """
        if self._pending:
            raise RuntimeError(f"add_layer was not called for {sorted(self._pending)}")
        n = self.count
        state = {
            "settings": torch.tensor(
                [self.capacity, self.seed, ("position", "mean").index(self.mode), n],
                dtype=torch.int64,
            ),
            "keys": torch.from_numpy(self._keys[:n].view(np.int64).copy()),
            "index": torch.from_numpy(self._index[:n].copy()),
            "label": torch.from_numpy(self._label[:n].copy()),
        }
        for i, name in enumerate(self.layer_names):
            state[f"vectors.{i}"] = torch.from_numpy(self._vectors[name][:n].copy())
            state[f"position.{i}"] = torch.from_numpy(self._position[name][:n].copy())
        return state

    def merge_state_dict(self, state: Mapping[str, Tensor]) -> ActivationSampler:
        """Fold in a :meth:`state_dict` of a sampler fed a disjoint set of images.

        Merging into a fresh sampler restores a checkpoint; merging every process's state
        gives exactly the sample of one sampler fed all images (see :meth:`merge`).

        Args:
            state: from :meth:`state_dict` of a sampler with the same layers and settings.

        Returns:
            ``self``.

        Raises:
            ValueError: another capacity, seed, mode, layer count or shape.

        Examples:
            >>> a = ActivationSampler(["a"], [(2, 1, 1)], capacity=3)
            >>> a.update({"a": torch.ones(4, 2, 1, 1)}, torch.zeros(4, dtype=torch.long),
            ...          torch.arange(4))
            >>> b = ActivationSampler(["a"], [(2, 1, 1)], capacity=3)
            >>> b.merge_state_dict(a.state_dict()).result()["a"].image_index.tolist()
            [0, 2, 3]
            >>> a.result()["a"].image_index.tolist()
            [0, 2, 3]
        """
        capacity, seed, mode, n = (int(v) for v in state["settings"])
        if (capacity, seed, mode) != (
            self.capacity,
            self.seed,
            ("position", "mean").index(self.mode),
        ):
            raise ValueError("can only merge samplers with the same layers, capacity, seed, mode")
        other = ActivationSampler(
            self.layer_names, self.layer_shapes, self.capacity, self.seed, self.mode
        )
        if n == 0:
            return self
        other._keys = state["keys"].numpy().astype(np.int64).view(np.uint64)
        other._index = state["index"].numpy().astype(np.int64)
        other._label = state["label"].numpy().astype(np.int64)
        for i, name in enumerate(self.layer_names):
            vectors = state[f"vectors.{i}"].numpy().astype(np.float32)
            if vectors.shape != (n, self.layer_shapes[i][0]):
                raise ValueError(f"layer {name!r}: state vectors of shape {vectors.shape}")
            other._vectors[name] = vectors
            other._position[name] = state[f"position.{i}"].numpy().astype(np.int32)
        if not len(other._keys) == len(other._index) == n:
            raise ValueError("state rows do not match its count")
        other.count = n
        return self.merge(other)

    def result(self) -> dict[str, MapperSample]:
        """The sample of every layer, rows sorted by image index (copies)."""
        if self._pending:
            raise RuntimeError(f"add_layer was not called for {sorted(self._pending)}")
        order = np.argsort(self._index[: self.count], kind="stable")
        index = self._index[order]
        if len(index) > 1 and (np.diff(index) == 0).any():
            logger.warning("ActivationSampler: some image indices were fed more than once")
        return {
            name: MapperSample(
                vectors=self._vectors[name][order],
                image_index=index.copy(),
                label=self._label[order],
                position=self._position[name][order],
            )
            for name in self.layer_names
        }
