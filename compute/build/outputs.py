"""From the pass's aggregates to the atlas on disk: the derived parts (attribution graphs,
class embedding, Mapper index), the manifest, and the one commit that writes them with
the weights and the crops."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compute.atlas import (
    MAPPER_SAMPLE_PATHS,
    PART_EMBEDDING,
    PART_EXAMPLES,
    PART_GRAPHS,
    PART_INSTANCES,
    PART_MAPPER,
    PART_SUBSETS,
    PART_SUMMIT,
    PART_TEXT,
    AtlasWriter,
    BuildSettings,
    manifest_layers,
    mapper_crop_path,
    mapper_paths,
)
from compute.build.options import BuildOptions
from compute.build.stream import PassResult, Stream
from compute.crops import (
    ReceptiveField,
    receptive_fields,
    receptive_fields_manifest,
    save_example_crops,
    save_input_images,
    save_position_crops,
)
from compute.distributed import Rank
from compute.errors import BuildError
from compute.models import LayerDescription, num_parameters
from compute.summit.config import GraphConfig, SummitConfig
from compute.summit.embedding import class_embeddings
from compute.summit.graph import attribution_graphs
from compute.summit.instances import instances_manifest
from compute.summit.part import SubsetArrays, SummitArrays, write_summit_parts
from compute.summit.subsets import SubsetCounts, subset_graphs
from compute.text_part import text_part_files
from compute.topology.part import MapperPart, mapper_part
from compute.topology.sample import ActivationSampler

log = logging.getLogger(__name__)

#: Where a build stores the model's state dict inside the atlas (docs/atlas.md).
WEIGHTS_PATH = "model/weights.pt"
#: ``save_weights=None`` stores state dicts up to this size.
AUTO_WEIGHTS_LIMIT = 64 * 1024 * 1024
#: Members of each default-graph node cropped besides the sample rows in hash order.
CROPS_PER_NODE = 12


@dataclass
class Derived:
    """The parts derived from the aggregates."""

    graphs: dict[str, np.ndarray]
    embeddings: list[np.ndarray]
    mapper: MapperPart | None
    subset_graphs: dict[str, dict[str, np.ndarray]] | None = None


def derive(result: PassResult, options: BuildOptions, device: torch.device) -> Derived:
    """Attribution graphs and class embedding from the counts; the Mapper index from the
    sample (on the build's CUDA device if it has one)."""
    counts = [np.asarray(a) for a in result.aggregates.activation_counts]
    influence = list(result.aggregates.influence_counts)
    graphs = attribution_graphs(counts, influence, options.graph_config, progress=options.progress)
    warning = small_graph_warning(
        graphs.node_offsets, len(counts), options.config, options.graph_config
    )
    if warning is not None:
        log.warning(warning)
    subsets = result.aggregates.subsets
    subset_arrays = (
        {
            kind: graph.arrays()
            for kind, graph in subset_graphs(subsets, counts, options.graph_config).items()
        }
        if subsets is not None
        else None
    )
    embeddings = class_embeddings(counts, options.embedding_config)
    part = build_mapper_part(
        result.sampler, options, str(device) if device.type == "cuda" else None
    )
    return Derived(graphs.arrays(), list(embeddings), part, subset_arrays)


#: Fewer nodes per layer than this in the median class graph draws a warning: such a graph
#: reads as if one unit per layer explained a whole class.
SMALL_GRAPH_NODES_PER_LAYER = 2


def small_graph_warning(
    node_offsets: np.ndarray, layers: int, config: SummitConfig, graph_config: GraphConfig
) -> str | None:
    """What to tell a user whose class graphs are nearly empty (``None`` when they are not).

    Args:
        node_offsets: ``int64[classes + 1]`` (:class:`compute.summit.graph.GraphArrays`).
        layers: the atlas's layers.
        config: how units were selected per input (``--tau`` or ``--top-k``).
        graph_config: the PageRank mass the graphs kept (``--graph-mass``).

    Examples:
        >>> small_graph_warning(np.array([0, 3, 6]), 3, SummitConfig(), GraphConfig())[-76:]
        'rebuild with a larger --graph-mass (0.1: try 0.3) and --tau (0.01: try 0.05)'
        >>> small_graph_warning(np.array([0, 9, 15]), 3, SummitConfig(), GraphConfig()) is None
        True
    """
    sizes = np.diff(np.asarray(node_offsets))
    sizes = sizes[sizes > 0]  # classes without inputs have no graph
    if not len(sizes) or layers <= 0:
        return None
    median = float(np.median(sizes))
    if median >= SMALL_GRAPH_NODES_PER_LAYER * layers:
        return None
    options = []
    mass = graph_config.mass
    if mass < 1:
        options.append(f"--graph-mass ({mass:g}: try {min(1.0, max(0.3, 2 * mass)):g})")
    if config.selection == "topk":
        options.append(f"--top-k ({config.top_k}: try {2 * config.top_k})")
    elif config.tau < 1:
        options.append(f"--tau ({config.tau:g}: try {min(1.0, max(0.05, 2 * config.tau)):g})")
    advice = (
        "rebuild with a larger " + " and ".join(options)
        if options
        else "every unit is already kept: the model itself uses few units"
    )
    return (
        f"class graphs are small: a median of {median:g} nodes for {layers} layers, as if one "
        f"unit per layer explained a whole class. The model fires a few units very strongly, "
        f"so few are kept per input and per graph; {advice}"
    )


def build_mapper_part(
    sampler: ActivationSampler | None, options: BuildOptions, device: str | None = None
) -> MapperPart | None:
    """The ``mapper`` part from the pass's sample (``None`` without a sampler or points)."""
    if sampler is None:
        return None
    layers = list(options.layers)
    samples = sampler.result()
    first = samples[layers[0]]
    if len(first.image_index) < 2:
        log.warning("no mapper part: only %d input(s) sampled", len(first.image_index))
        return None
    return mapper_part(
        first.image_index,
        first.label,
        [samples[name].vectors for name in layers],
        [samples[name].position for name in layers],
        seed=options.seed,
        capacity=options.mapper_capacity,
        mode=options.mapper_mode,
        crop_points=options.mapper_crops,
        crops_per_node=CROPS_PER_NODE if options.mapper_crops else 0,
        device=device,
    )


def token_patch_field(
    model: nn.Module, tokens: int, input_size: tuple[int, int, int]
) -> ReceptiveField | None:
    """The patch field of an image model's token layer of ``tokens`` tokens, when the
    model names its square patches (torchvision's ``VisionTransformer.patch_size``) and
    they tile the input, after 0 or more class tokens; ``None`` otherwise."""
    patch = getattr(model, "patch_size", None)
    if not isinstance(patch, int) or patch <= 0:
        return None
    rows, columns = input_size[1] // patch, input_size[2] // patch
    prefix = tokens - rows * columns
    return ReceptiveField.patches(patch, columns, prefix) if 0 <= prefix <= 8 else None


def receptive_fields_or_whole_image(
    model: nn.Module,
    layers: Sequence[str],
    input_size: tuple[int, int, int],
    described: Sequence[LayerDescription] = (),
) -> dict[str, Any]:
    """Receptive fields of the layers (a ViT token layer's: its patches); whole-image crops
    where they cannot be measured."""
    whole = ReceptiveField((10 * input_size[1], 10 * input_size[2]), (1.0, 1.0), (0.0, 0.0))
    tokens = {d.name: d.tokens for d in described if d.tokens is not None}
    if tokens:
        maps = [name for name in layers if name not in tokens]
        fields = receptive_fields_or_whole_image(model, maps, input_size) if maps else {}
        for name, count in tokens.items():
            field = token_patch_field(model, count, input_size)
            if field is None:
                log.warning("no patch grid for token layer %s: its crops show whole images", name)
            fields[name] = field or whole
        return {name: fields[name] for name in layers}
    try:
        return receptive_fields(model, layers, input_size)
    except BuildError:
        raise
    except Exception as exc:  # e.g. a model that cannot be deep-copied or run in float64
        log.warning(
            "cannot measure receptive fields (%s: %s); example crops show whole images",
            type(exc).__name__,
            exc,
        )
        return dict.fromkeys(layers, whole)


def crop_dataset(loader: Any) -> Any | None:
    """The loader's dataset if crops can be cut from it, else ``None`` (with a warning).

    Crops need ``dataset[index]`` to return the model input, a ``[C, H, W]`` tensor, first;
    a dataset of encoded files offers that as its ``decoded`` view
    (:class:`compute.data.EncodedImageFolder`).
    """
    dataset = getattr(loader, "dataset", None)
    dataset = getattr(dataset, "decoded", dataset)
    try:
        item = dataset[0]  # type: ignore[index]
    except Exception as exc:  # not indexable (an iterable dataset, a plain list of batches)
        log.warning("no example crops: the loader's dataset cannot be indexed (%s)", exc)
        return None
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        log.warning("no example crops: dataset items do not start with a [C, H, W] tensor")
        return None
    return dataset


def state_dict_bytes(model: nn.Module, save: bool | None) -> bytes | None:
    """The model's state dict as ``torch.save`` bytes, if it is to be stored."""
    if save is False:
        return None
    # contiguous: a channels-last model stores the same bytes as a plain one
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    size = sum(value.numel() * value.element_size() for value in state.values())
    if save is None and size > AUTO_WEIGHTS_LIMIT:
        log.info("not storing the %.0f MB state dict in the atlas", size / 1e6)
        return None
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def atlas_manifest(
    model: nn.Module,
    stream: Stream,
    result: PassResult,
    derived: Derived,
    options: BuildOptions,
    device: torch.device,
    rank: Rank,
    fields: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest of the atlas (docs/atlas.md); ``model.weights`` is added by the writer."""
    aggregates = result.aggregates
    num_images = int(np.sum(aggregates.num_images))
    dataset = stream.dataset
    info_model = {
        "name": type(model).__name__,
        "spec": None,
        "num_parameters": num_parameters(model),
        "input_size": list(stream.input_size) if stream.input_size is not None else None,
        # what later steps (feature visualization) check a rebuilt model against
        "state_sha256": stream.weights_digest,
        **(options.model_info or {}),
    }
    info_dataset = {
        "name": type(dataset).__name__ if dataset is not None else "dataset",
        "split": None,
        "num_images": num_images,
        "description": "",
        **(options.dataset_info or {}),
    }
    info_dataset["num_images"] = num_images  # what was aggregated, whatever was claimed
    text = stream.input_size is None
    if text:  # how the texts were tokenised
        info_pre = {
            "tokenizer": type(getattr(dataset, "tokenizer", None)).__name__,
            "max_length": getattr(dataset, "max_length", None),
        }
    elif options.preprocessing is not None:
        info_pre = options.preprocessing.to_manifest()
    else:
        # The loader's own transform: unknown normalisation, recorded as such.
        info_pre = {
            "image_size": stream.input_size[1],
            "mean": None,
            "std": None,
            "grayscale": stream.input_size[0] == 1,
        }
    parameters: dict[str, Any] = {
        **options.config.to_manifest(),
        **options.graph_config.to_manifest(),
        **options.embedding_config.to_manifest(),
        "seed": options.seed,
        "crops_per_channel": options.crops_per_channel,
    }
    if options.class_map is not None:
        parameters["class_map"] = list(options.class_map)
    if aggregates.instances is not None:
        parameters["instances"] = instances_manifest(options.instances)
    if derived.mapper is not None:
        parameters["mapper"] = derived.mapper.parameters
    if fields is not None:
        parameters["receptive_fields"] = receptive_fields_manifest(fields)
    shapes = layer_shapes(result)
    return {
        "title": options.title or f"{info_model['name']} on {info_dataset['name']}",
        "model": info_model,
        "dataset": info_dataset,
        "preprocessing": info_pre,
        "classes": list(options.classes),
        "modality": "text" if text else "image",
        "layers": manifest_layers(
            list(options.layers),
            shapes,
            result.kinds,
            tokens=[d.tokens is not None for d in stream.described],
        ),
        "build": BuildSettings(
            device=device.type,
            device_name=(
                torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
            ),
            world_size=rank.world_size,
            decode=str(options.decode),
            channels_last=bool(options.channels_last),
            precision=options.precision,
            torch=torch.__version__,
        ).to_manifest(),
        "parameters": parameters,
        "metrics": options.metrics or {},
        "parts": [PART_SUMMIT, PART_EXAMPLES, PART_EMBEDDING, PART_GRAPHS]
        + ([PART_SUBSETS] if derived.subset_graphs is not None else [])
        + ([PART_INSTANCES] if aggregates.instances is not None else [])
        + ([PART_MAPPER] if derived.mapper is not None else [])
        + ([PART_TEXT] if text else []),
    }


def named_inputs(result: PassResult) -> list[int]:
    """Dataset indices of the inputs the atlas names: every layer's top examples, the
    instance records and the Mapper sample (what a text atlas keeps the texts of)."""
    aggregates = result.aggregates
    named = {int(i) for index in aggregates.example_index for i in np.unique(index) if i >= 0}
    if aggregates.instances is not None:
        named |= {int(i) for i in aggregates.instances.image_index}
    sampler = result.sampler
    if sampler is not None:  # the Mapper members
        for sample in sampler.result().values():
            named |= {int(i) for i in sample.image_index}
            break  # every layer samples the same inputs
    return sorted(named)


def layer_shapes(result: PassResult) -> list[tuple[int, ...]]:
    """``(channels, height, width)`` of each layer as the pass saw it."""
    return [tuple(int(v) for v in shape) for shape in result.aggregates.layer_shapes]


def summit_arrays(result: PassResult, derived: Derived) -> SummitArrays:
    """The Summit parts' arrays of a build."""
    aggregates = result.aggregates
    return SummitArrays(
        num_images=aggregates.num_images,
        num_correct=aggregates.num_correct,
        confidence_hist=aggregates.confidence_hist,
        confusion=aggregates.confusion,
        activation_counts=list(aggregates.activation_counts),
        influence=list(aggregates.influence_counts),
        examples=[
            {"image_index": index, "activation": value, "position": position}
            for index, value, position in zip(
                aggregates.example_index,
                aggregates.example_value,
                aggregates.example_position,
                strict=True,
            )
        ],
        embeddings=derived.embeddings,
        graphs=derived.graphs,
        subsets=subset_arrays(aggregates.subsets, derived.subset_graphs),
        instances=aggregates.instances,
    )


def subset_arrays(
    subsets: SubsetCounts | None, graphs: dict[str, dict[str, np.ndarray]] | None
) -> SubsetArrays | None:
    """The ``subsets`` part's arrays of a build (``None`` without subset counts)."""
    if subsets is None or graphs is None:
        return None
    return SubsetArrays(
        mistaken_images=subsets.mistaken_images,
        pairs=subsets.pairs,
        pair_images=subsets.pair_images,
        activation=subsets.activation,
        graphs=graphs,
    )


@dataclass
class CropPlan:
    """What the crops are cut from: the dataset and each layer's receptive field (either
    ``None``: no crops), and the loader's worker count to cut them with. A text build
    has no crops: its named inputs are stored as text (``text``: its dataset)."""

    dataset: Any | None
    fields: dict[str, Any] | None
    workers: int
    text: Any | None = None


def write_atlas(
    manifest: dict[str, Any],
    result: PassResult,
    derived: Derived,
    options: BuildOptions,
    weights: bytes | None,
    crops: CropPlan,
    stage_done: Callable[[str], None],
) -> tuple[Path, int]:
    """Write the atlas in one commit: weights, the Summit parts, the Mapper part, example
    and sample crops. Returns the atlas path and the number of crops."""
    if weights is not None:
        manifest["model"]["weights"] = WEIGHTS_PATH
    layers = list(options.layers)
    with AtlasWriter(options.path, manifest, overwrite=options.overwrite) as writer:
        if weights is not None:
            writer.add_bytes(WEIGHTS_PATH, weights)
        try:
            write_summit_parts(writer, summit_arrays(result, derived))
        except ValueError as exc:
            raise BuildError(f"the pass produced incomplete counts: {exc}") from None
        if derived.mapper is not None:
            for relpath, array in derived.mapper.files.items():
                writer.add_array(relpath, array)
        stage_done("write arrays")
        if crops.text is not None:
            tokens = result.aggregates.top_tokens or [None] * len(layers)
            files = text_part_files(crops.text, named_inputs(result), tokens)
            for relpath, content in files.items():
                if isinstance(content, bytes):
                    writer.add_bytes(relpath, content)
                else:
                    writer.add_array(relpath, content)
            stage_done("texts")
        num_crops = 0
        if crops.fields is not None and crops.dataset is not None:

            def add_crop(relpath: str, png: bytes) -> None:
                nonlocal num_crops
                writer.add_bytes(relpath, png)  # streamed: crops never pile up in memory
                num_crops += 1

            aggregates = result.aggregates
            save_example_crops(
                crops.dataset,
                [crops.fields[name] for name in layers],
                aggregates.example_index,
                aggregates.example_position,
                crops_per_channel=options.crops_per_channel,
                preprocessing=options.preprocessing,
                num_workers=crops.workers,
                progress=options.progress,
                sink=add_crop,
            )
            stage_done("example crops")
            if aggregates.instances is not None and aggregates.instances.num_instances:
                num_crops += save_input_images(
                    crops.dataset,
                    aggregates.instances.image_index.tolist(),
                    preprocessing=options.preprocessing,
                    num_workers=crops.workers,
                    progress=options.progress,
                    sink=writer.add_bytes,
                )
                stage_done("input images")
            if derived.mapper is not None:
                num_crops += save_mapper_crops(derived.mapper, crops, options, writer)
                stage_done("sample crops")
        return writer.commit(), num_crops


def save_mapper_crops(
    part: MapperPart, crops: CropPlan, options: BuildOptions, writer: AtlasWriter
) -> int:
    """Crops around the sampled positions of the part's chosen rows; returns how many."""
    if crops.fields is None or crops.dataset is None:
        return 0
    image_index = part.files[MAPPER_SAMPLE_PATHS["image_index"]]
    jobs: dict[int, list[tuple[int, int, int, str]]] = {}
    for i, rows in enumerate(part.crop_rows):
        position = part.files[mapper_paths(i)["position"]]
        for row in rows.tolist():
            r, c = (int(v) for v in position[row])
            jobs.setdefault(int(image_index[row]), []).append((i, r, c, mapper_crop_path(i, row)))
    return save_position_crops(
        crops.dataset,
        [crops.fields[name] for name in options.layers],
        jobs,
        preprocessing=options.preprocessing,
        num_workers=crops.workers,
        progress=options.progress,
        sink=writer.add_bytes,
    )
