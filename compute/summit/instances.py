"""Instance records: one input's own selected channels and influence edges, kept for a
bounded, deterministic set of inputs during the Summit pass.

Which inputs: the ``sample`` inputs with the smallest hash of ``(seed, input index)``
(:func:`compute.topology.sample.image_hash`), plus the ``mistakes`` misclassified inputs
with the smallest hash, or exactly the inputs of a user's list. Both are bottom-K sets of a
fixed key, so the records do not depend on batch size, order, the number of processes or
a resume: an input once pushed out of both sets never returns.

What: per chosen layer, the input's selected channels (the same rule as the class counts)
with their spatial maximum and its position; per pair of consecutive layers, the input's
own top-k influence edges ``(target, source)`` among its selected channels: the per-input
terms the class influence counts add up (for convolutions and gradient connections, and an
Inception block's direct branches; edges through its bottleneck branches are not recorded
per input, because the class counts take a widest path over those).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from compute.atlas import InstanceArrays
from compute.errors import BuildError
from compute.topology.sample import image_hash

#: Why an input is recorded (bits of ``InstanceArrays.reason``).
REASON_SAMPLE, REASON_MISTAKE, REASON_LISTED = 1, 2, 4


@dataclass(frozen=True)
class InstanceConfig:
    """Which inputs get an instance record.

    Attributes:
        sample: inputs kept by hash of ``(seed, index)`` (a uniform sample).
        mistakes: misclassified inputs kept by the same hash, besides the sample.
        seed: the hash's seed.
        indices: a user's list of input indices: exactly those are recorded (``sample`` and
            ``mistakes`` are ignored).
    """

    sample: int = 2000
    mistakes: int = 2000
    seed: int = 0
    indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.sample < 0 or self.mistakes < 0:
            raise BuildError("instance sample and mistakes must be >= 0")
        if self.indices is not None and any(i < 0 for i in self.indices):
            raise BuildError("instance indices must be >= 0")


def instances_manifest(config: InstanceConfig | None) -> dict[str, Any] | None:
    """The manifest's ``parameters.instances`` (``None``: no records)."""
    if config is None:
        return None
    if config.indices is not None:
        return {"listed": len(set(config.indices)), "seed": config.seed}
    return {"sample": config.sample, "mistakes": config.mistakes, "seed": config.seed}


@dataclass
class _Record:
    label: int
    prediction: int
    key: np.uint64
    mistake: bool
    confidence: float
    margin: float
    channels: list[np.ndarray] = field(default_factory=list)  # per layer, int32 [s]
    values: list[np.ndarray] = field(default_factory=list)  # per layer, float32 [s]
    positions: list[np.ndarray] = field(default_factory=list)  # per layer, int32 [s, 2]
    edges: list[np.ndarray] = field(default_factory=list)  # per layer, int32 [e, 2]


class InstanceRecorder:
    """Keeps the instance records of one pass (used by ``SummitPass``).

    Args:
        config: which inputs.
        num_layers: the pass's chosen layers.
    """

    def __init__(self, config: InstanceConfig, num_layers: int) -> None:
        self.config = config
        self.num_layers = num_layers
        self._records: dict[int, _Record] = {}
        self._listed = None if config.indices is None else np.array(sorted(set(config.indices)))

    # -- which inputs ----------------------------------------------------------------------

    def _below(self, keys: np.ndarray, mistakes: bool) -> np.ndarray:
        """``bool``: keys that would enter the bottom-K set (of all inputs, or of the
        misclassified ones) as it stands."""
        size = self.config.mistakes if mistakes else self.config.sample
        if size == 0:
            return np.zeros(keys.shape[0], dtype=bool)
        held = np.sort(
            np.array(
                [r.key for r in self._records.values() if r.mistake or not mistakes],
                dtype=np.uint64,
            )
        )
        if held.shape[0] < size:
            return np.ones(keys.shape[0], dtype=bool)
        return keys < held[size - 1]

    def candidates(self, indices: np.ndarray) -> np.ndarray:
        """``bool [B]``: inputs of a batch that may be recorded (decided before their
        prediction is known: below either set's threshold)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._listed is not None:
            return np.isin(indices, self._listed)
        keys = image_hash(self.config.seed, indices)
        return self._below(keys, mistakes=False) | self._below(keys, mistakes=True)

    def _keep(self) -> None:
        """Drop the records that are in neither bottom-K set."""
        if self._listed is not None:
            return
        order = sorted(self._records.values(), key=lambda r: int(r.key))
        kept = {int(r.key) for r in order[: self.config.sample]}
        kept |= {int(r.key) for r in [r for r in order if r.mistake][: self.config.mistakes]}
        self._records = {i: r for i, r in self._records.items() if int(r.key) in kept}

    # -- adding --------------------------------------------------------------------------

    def add(
        self,
        indices: Tensor,
        labels: Tensor,
        predicted: Tensor,
        certainty: tuple[Tensor, Tensor],
        layers: list[tuple[Tensor, Tensor, Tensor]],
        edges: list[tuple[Tensor, Tensor, Tensor] | None],
    ) -> None:
        """Record a batch's candidates.

        Args:
            indices: ``int64 [R]`` the candidates' input indices.
            labels: ``int64 [R]`` their true classes.
            predicted: ``int64 [R]`` their predictions (``-1``: outside the classes).
            certainty: ``([R], [R])`` the top softmax probability and its lead over the
                runner-up.
            layers: per layer ``(selected bool [R, C], values [R, C], positions
                int [R, C, 2])`` of the candidates.
            edges: per layer ``(r, target, source)`` influence triples of the candidates
                (``r`` their row in this call; ``None``: the first layer).
        """
        index = indices.cpu().numpy()
        label = labels.cpu().numpy()
        prediction = predicted.cpu().numpy()
        confidence, margin = (t.float().cpu().numpy() for t in certainty)
        keys = image_hash(self.config.seed, index)
        selected = [s.cpu().numpy() for s, _, _ in layers]
        values = [v.float().cpu().numpy() for _, v, _ in layers]
        positions = [p.cpu().numpy().astype(np.int32) for _, _, p in layers]
        triples = [None if e is None else tuple(t.cpu().numpy() for t in e) for e in edges]
        for r in range(index.shape[0]):
            record = _Record(
                label=int(label[r]),
                prediction=int(prediction[r]),
                key=keys[r],
                mistake=bool(prediction[r] != label[r]),
                confidence=float(confidence[r]),
                margin=float(margin[r]),
            )
            for layer in range(self.num_layers):
                chosen = np.flatnonzero(selected[layer][r]).astype(np.int32)
                record.channels.append(chosen)
                record.values.append(values[layer][r, chosen].astype(np.float32))
                record.positions.append(positions[layer][r, chosen].reshape(-1, 2))
                found = triples[layer]
                if found is None or layer == 0:
                    record.edges.append(np.zeros((0, 2), dtype=np.int32))
                    continue
                rows, target, source = found
                mine = rows == r
                pairs = np.stack([target[mine], source[mine]], axis=1).astype(np.int32)
                # Among the input's own selected channels of both layers.
                keep = selected[layer][r, pairs[:, 0]] & selected[layer - 1][r, pairs[:, 1]]
                pairs = np.unique(pairs[keep], axis=0).reshape(-1, 2)
                record.edges.append(pairs)
            self._records[int(index[r])] = record
        self._keep()

    # -- state: checkpoints and shards ------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """The records as CPU tensors (``instances.*`` keys of the pass's state)."""
        arrays = self.result()
        state = {
            "instances.image_index": torch.from_numpy(arrays.image_index),
            "instances.label": torch.from_numpy(arrays.label),
            "instances.prediction": torch.from_numpy(arrays.prediction),
            "instances.confidence": torch.from_numpy(arrays.confidence),
            "instances.margin": torch.from_numpy(arrays.margin),
        }
        for layer in range(self.num_layers):
            for name in ("channel_indptr", "channel", "value", "position", "edge_indptr", "edge"):
                array = getattr(arrays, name)[layer]
                state[f"instances.{layer}.{name}"] = torch.from_numpy(np.ascontiguousarray(array))
        return state

    def merge_state_dict(self, state: dict[str, Tensor]) -> None:
        """Add the records of a pass over other inputs (a shard, or a checkpoint)."""
        if "instances.image_index" not in state or "instances.margin" not in state:
            raise BuildError(
                "state has no instance records (a checkpoint of an older version, or of a "
                "build without them): remove the checkpoint to start over"
            )
        index = state["instances.image_index"].numpy()
        label = state["instances.label"].numpy()
        prediction = state["instances.prediction"].numpy()
        confidence = state["instances.confidence"].numpy()
        margin = state["instances.margin"].numpy()
        keys = image_hash(self.config.seed, index)
        for r in range(index.shape[0]):
            record = _Record(
                int(label[r]),
                int(prediction[r]),
                keys[r],
                bool(prediction[r] != label[r]),
                float(confidence[r]),
                float(margin[r]),
            )
            for layer in range(self.num_layers):
                get = {
                    name: state[f"instances.{layer}.{name}"].numpy()
                    for name in ("channel_indptr", "channel", "value", "position")
                }
                a, b = int(get["channel_indptr"][r]), int(get["channel_indptr"][r + 1])
                record.channels.append(get["channel"][a:b].copy())
                record.values.append(get["value"][a:b].copy())
                record.positions.append(get["position"][a:b].copy())
                edge_indptr = state[f"instances.{layer}.edge_indptr"].numpy()
                e0, e1 = int(edge_indptr[r]), int(edge_indptr[r + 1])
                record.edges.append(state[f"instances.{layer}.edge"].numpy()[e0:e1].copy())
            self._records[int(index[r])] = record
        self._keep()

    def result(self) -> InstanceArrays:
        """The records, sorted by input index."""
        order = sorted(self._records)
        records = [self._records[i] for i in order]
        listed = self._listed
        reason = np.zeros(len(records), dtype=np.int64)
        if listed is not None:
            reason[:] = REASON_LISTED
        else:
            by_key = sorted(records, key=lambda r: int(r.key))
            sample = {int(r.key) for r in by_key[: self.config.sample]}
            wrong = {int(r.key) for r in [r for r in by_key if r.mistake][: self.config.mistakes]}
            for k, record in enumerate(records):
                reason[k] = (REASON_SAMPLE if int(record.key) in sample else 0) | (
                    REASON_MISTAKE if int(record.key) in wrong else 0
                )

        def ragged(parts: list[np.ndarray], dtype: type, width: int | None) -> tuple:
            sizes = np.array([p.shape[0] for p in parts], dtype=np.int64)
            indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            shape = (0,) if width is None else (0, width)
            data = np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)
            return indptr, data

        arrays: dict[str, list[np.ndarray]] = {
            name: [] for name in ("channel_indptr", "channel", "value", "position")
        }
        arrays["edge_indptr"], arrays["edge"] = [], []
        for layer in range(self.num_layers):
            indptr, channel = ragged([r.channels[layer] for r in records], np.int32, None)
            _, value = ragged([r.values[layer] for r in records], np.float32, None)
            _, position = ragged([r.positions[layer] for r in records], np.int32, 2)
            edge_indptr, edge = ragged([r.edges[layer] for r in records], np.int32, 2)
            for name, array in (
                ("channel_indptr", indptr),
                ("channel", channel),
                ("value", value),
                ("position", position),
                ("edge_indptr", edge_indptr),
                ("edge", edge),
            ):
                arrays[name].append(array)
        return InstanceArrays(
            image_index=np.array(order, dtype=np.int64),
            label=np.array([r.label for r in records], dtype=np.int64),
            prediction=np.array([r.prediction for r in records], dtype=np.int64),
            reason=reason,
            confidence=np.array([r.confidence for r in records], dtype=np.float32),
            margin=np.array([r.margin for r in records], dtype=np.float32),
            **arrays,
        )
