"""The build's options: one frozen, validated object instead of thirty arguments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compute.atlas import PRECISIONS
from compute.data import Preprocessing
from compute.errors import BuildError
from compute.summit.config import EmbeddingConfig, GraphConfig, SummitConfig
from compute.summit.instances import InstanceConfig

#: TopoAct sample modes: one hashed spatial position per image and layer, or the mean.
MAPPER_MODES = ("position", "mean")


@dataclass(frozen=True)
class BuildOptions:
    """What to build and how; checked when made (a :class:`BuildError` names a bad value).

    Attributes:
        layers: module names to map, input to output (``python -m compute layers``).
        classes: class names; the loader's labels index them.
        out: where to write the atlas directory.
        config: Summit aggregation settings.
        graph_config: attribution-graph (PageRank) settings.
        embedding_config: class-embedding (UMAP) settings.
        class_map: model output index of each class (``None``: class ``i`` is output ``i``).
        device: ``cpu`` or ``cuda`` (``cuda:N``).
        preprocessing: how images were fed to the model (recorded in the manifest, and
            undone to show crops; ``None``: crops are min-max stretched).
        crops_per_channel: receptive-field crops saved per channel (ranks 0..n-1); 0:
            none; at most ``config.examples_per_channel``. Needs ``loader.dataset[index]``
            to return the model input tensor first.
        model_info: manifest ``model`` entries overriding the defaults (name, spec, ...).
        dataset_info: manifest ``dataset`` entries (name, split, description).
        metrics: manifest ``metrics``, e.g. ``{"accuracy": {"test": 0.97}}``.
        title: dashboard title (default: model name on dataset name).
        seed: recorded in ``parameters``; keys the TopoAct sample (the pass itself is
            deterministic; the embedding has its own seed in ``embedding_config``).
        overwrite: replace an existing atlas at ``out``.
        progress: show tqdm progress bars.
        save_weights: store the state dict as ``model/weights.pt`` so later steps can
            rebuild the model from ``model.spec``; ``None``: only when it is at most 64 MB.
        mapper: also collect, in the same pass, the TopoAct sample and store the
            ``mapper`` part (docs/topology.md).
        mapper_capacity: images sampled at most (a bottom-K hash sketch: the same images
            whatever the batch size, order or process count).
        mapper_mode: ``"position"`` (one hashed spatial position per image and layer, as
            TopoAct) or ``"mean"`` (spatial mean).
        mapper_crops: sample rows cropped per layer in hash order (plus up to 12 members of
            each node of the default graph); 0: no sample crops.
        checkpoint_every: checkpoint the partial aggregates every this many batches, and
            resume from one made by the same inputs; ``None``: no checkpoints.
        checkpoint_dir: where checkpoints go (default ``OUT.checkpoint`` beside ``out``).
        restart: discard an existing checkpoint instead of resuming from it.
        channels_last: run the model and batches in ``torch.channels_last`` format.
        decoder: applied to every loader batch before it is read (e.g.
            :class:`compute.data.JpegBatchDecoder`).
        precision: ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"`` (approximate: autocast).
        decode: how images were decoded, for the manifest; ``None``: ``"jpeg-device"``
            with a ``decoder``, else ``"loader"``.
        instances: which inputs get an instance record (the ``instances`` part;
            ``None``: none).
    """

    layers: Sequence[str]
    classes: Sequence[str]
    out: str | Path
    config: SummitConfig = SummitConfig()
    graph_config: GraphConfig = GraphConfig()
    embedding_config: EmbeddingConfig = EmbeddingConfig()
    class_map: Sequence[int] | None = None
    device: str = "cpu"
    preprocessing: Preprocessing | None = None
    crops_per_channel: int = 3
    model_info: dict[str, Any] | None = field(default=None, hash=False)
    dataset_info: dict[str, Any] | None = field(default=None, hash=False)
    metrics: dict[str, Any] | None = field(default=None, hash=False)
    title: str | None = None
    seed: int = 0
    overwrite: bool = False
    progress: bool = True
    save_weights: bool | None = None
    mapper: bool = True
    mapper_capacity: int = 100_000
    mapper_mode: str = "position"
    mapper_crops: int = 2_000
    checkpoint_every: int | None = None
    checkpoint_dir: str | Path | None = None
    restart: bool = False
    channels_last: bool = False
    decoder: Callable[[Any], Any] | None = None
    precision: str = "fp32"
    decode: str | None = None
    instances: InstanceConfig | None = InstanceConfig()

    def __post_init__(self) -> None:
        for name in ("layers", "classes"):
            if isinstance(getattr(self, name), str):
                raise BuildError(
                    f"{name} must be a list of names, not the string {getattr(self, name)!r}"
                )
        if self.precision not in PRECISIONS:
            raise BuildError(
                f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"
            )
        if self.crops_per_channel < 0:
            raise BuildError(f"crops_per_channel must be >= 0, not {self.crops_per_channel}")
        if self.mapper and self.mapper_capacity < 2:
            raise BuildError(f"mapper_capacity must be >= 2, not {self.mapper_capacity}")
        if self.mapper_mode not in MAPPER_MODES:
            raise BuildError(f"mapper_mode must be 'position' or 'mean', not {self.mapper_mode!r}")
        if self.mapper_crops < 0:
            raise BuildError(f"mapper_crops must be >= 0, not {self.mapper_crops}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise BuildError(f"checkpoint_every must be >= 1, not {self.checkpoint_every}")
        # Normalised once: every later stage reads the same types.
        normalised = {
            "out": Path(self.out),
            "layers": tuple(self.layers),
            "classes": tuple(str(c) for c in self.classes),
            "class_map": tuple(int(i) for i in self.class_map)
            if self.class_map is not None
            else None,
            "crops_per_channel": min(self.crops_per_channel, self.config.examples_per_channel),
            "decode": self.decode or ("jpeg-device" if self.decoder is not None else "loader"),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @property
    def path(self) -> Path:
        """``out`` as a path."""
        return Path(self.out)
