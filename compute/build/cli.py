"""The ``build`` and ``layers`` commands of ``python -m compute``: arguments → options.

Everything a command line can get wrong (the data folders, every image header, the
model spec and weights, the precision on this device) is refused here in one line before
the long pass; :func:`compute.build.pipeline.build_atlas` then runs the build.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from compute.atlas import PRECISIONS
from compute.build.checks import check_layers, check_output_path, check_precision, resolve_device
from compute.build.options import MAPPER_MODES, BuildOptions
from compute.build.pipeline import build_atlas
from compute.connect import connection_kinds
from compute.data import (
    DECODE_MODES,
    EncodedImageFolder,
    JpegBatchDecoder,
    Preprocessing,
    check_images,
    collate_encoded,
    open_image_folder,
)
from compute.distributed import Rank, init_from_env, shard_range, shutdown
from compute.errors import BuildError
from compute.featurevis.cli import run_featurevis
from compute.hf import HFClassifier
from compute.models import (
    LayerDescription,
    count_outputs,
    describe_layers,
    get_model,
    infer_in_channels,
    model_input,
    model_name,
    parse_spec,
)
from compute.summit.config import GraphConfig, SummitConfig
from compute.summit.instances import InstanceConfig
from compute.text_data import is_text_data, read_text_rows, text_loader
from compute.tokens import ROLE_MLP, ROLE_MLP_PRE, TokenLayer, token_layers

_BUILD_EPILOG = """\
examples:
  # list the layers of a model (names to paste into --layers)
  python -m compute layers --model torchvision:vgg11 --image-size 224

  # a torchvision model with your trained weights, on an ImageFolder (DIR/CLASS/IMAGE)
  python -m compute build --model torchvision:vgg11 --weights vgg11.pth --device cuda \\
      --data imagenet/val --layers features.11,features.13,features.16,features.18 \\
      --out vgg11-atlas

  # your own model class, 28x28 grayscale, 10 folders = 10 outputs
  python -m compute build --model mypkg.nets:make_cnn --weights cnn.pt --data mnist/train \\
      --image-size 28 --normalize 0.1307,0.3081 --layers features.1,features.4 \\
      --top-k 5 --out mnist-atlas

  # a subset of ImageNet classes: map folders to the model's 1000 outputs
  python -m compute build --model torchvision:vgg16 --weights vgg16.pt --data subset \\
      --class-index folders.json --layers features.25,features.27,features.29 --out vgg-atlas

  # 8 GPUs on one machine (or M machines: run the same command on each, adding
  # --nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id JOB);
  # rank 0 writes the atlas
  torchrun --nproc-per-node 8 -m compute build --model torchvision:vgg11 \\
      --weights vgg11.pth --data imagenet/train --layers features.13,features.16 \\
      --out vgg11-atlas --device cuda

  # resumable: checkpoint every 500 batches; after a crash run the same command again
  python -m compute build ... --checkpoint-every 500

--normalize: imagenet | cifar10 | mnist | none | MEAN,STD (one value for every channel)
             | M1,M2,M3/S1,S2,S3 (per channel). Images are resized to --image-size
             squared, without cropping. A model whose first convolution takes 1 channel
             gets grayscale input.
--class-index: JSON {"folder name": output index, ...}; without it the sorted class
             folders must be exactly the model's outputs, in order.
--layers:    each layer must depend on the previous one. One convolution between them
             (through channel-wise ops: ReLU, BatchNorm, pooling) gives exact influence;
             an Inception block gives exact per-branch influence and the widest path
             through its bottlenecks; anything else (residual blocks, depthwise-separable
             blocks, several convolutions) uses gradient x activation attribution
             (docs/summit.md). `python -m compute layers` shows which each pair gets.
Weights are never downloaded: --weights FILE is a torch.save()d state dict (or a dict
holding it under "state_dict" or "model"), loaded strictly.
"""


_SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def _int_at_least(text: str, minimum: int) -> int:
    """Parse a command-line integer that must be ``>= minimum`` (argparse errors otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _share(text: str) -> float:
    """A share in ``(0, 1]`` (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def _layer_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _run_build(args: argparse.Namespace) -> int:
    rank, device_name = init_from_env(args.device)
    try:
        return _build_command(args, rank, device_name)
    finally:
        shutdown()


def read_indices(path: str) -> tuple[int, ...]:
    """Input indices from a text file: integers separated by spaces, commas or newlines
    (``#`` starts a comment).

    Raises:
        BuildError: the file cannot be read, or a line holds something else (named).
    """
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"--instances-from {path}: cannot read it ({exc})") from None
    found: list[int] = []
    for number, line in enumerate(lines, start=1):
        for word in line.split("#", 1)[0].replace(",", " ").split():
            if not word.isdigit():
                raise BuildError(
                    f"--instances-from {path}, line {number}: {word!r} is not an input index"
                )
            found.append(int(word))
    if not found:
        raise BuildError(f"--instances-from {path}: no input index in the file")
    return tuple(found)


def instance_config(args: argparse.Namespace, dataset_size: int) -> InstanceConfig | None:
    """Which inputs get an instance record (``None``: none), checked against the data."""
    if args.instances_from is not None:
        indices = read_indices(args.instances_from)
        beyond = [i for i in indices if i >= dataset_size]
        if beyond:
            raise BuildError(
                f"--instances-from {args.instances_from}: index {beyond[0]} is beyond the "
                f"data's {dataset_size} inputs"
            )
        return InstanceConfig(seed=args.seed, indices=indices)
    if args.instances == 0 and args.instance_mistakes == 0:
        return None
    return InstanceConfig(sample=args.instances, mistakes=args.instance_mistakes, seed=args.seed)


def check_text_inputs(model_spec: str, data: str) -> bool:
    """Whether this is a text build (an ``hf:DIR`` model with text data); a text model with
    image data, or text data with an image model, is refused in one line.

    Raises:
        BuildError: naming the mismatch.

    Examples:
        >>> check_text_inputs("torchvision:vgg11", "imagenet/val")
        False
    """
    text_model, text_data = parse_spec(model_spec)[0] == "hf", is_text_data(data)
    if text_model and not text_data:
        raise BuildError(
            f"--data {data}: an hf: text model needs a .csv or .jsonl file (text and label "
            "columns) or a datasets folder, not an image folder"
        )
    if text_data and not text_model:
        raise BuildError(
            f"--data {data} is text: give a text classifier with --model hf:DIR (a local "
            "Hugging Face directory)"
        )
    return text_model


def _shared_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``BuildOptions`` fields an image and a text build take alike from the command
    line (the output, the Mapper sample, checkpoints)."""
    return {
        "title": args.title,
        "seed": args.seed,
        "overwrite": args.overwrite,
        "progress": not args.no_progress,
        "save_weights": args.save_weights,
        "mapper": args.mapper,
        "mapper_capacity": args.mapper_capacity,
        "mapper_mode": args.mapper_mode,
        "checkpoint_every": args.checkpoint_every,
        "checkpoint_dir": args.checkpoint_dir,
        "restart": args.restart,
        "graph_config": GraphConfig(mass=args.graph_mass),
    }


def _summit_config(args: argparse.Namespace) -> SummitConfig:
    return SummitConfig(
        selection="topk" if args.top_k is not None else "mass",
        tau=args.tau if args.tau is not None else SummitConfig.tau,
        top_k=args.top_k if args.top_k is not None else SummitConfig.top_k,
        influence_top_k=args.influence_top_k,
        examples_per_channel=args.examples,
        aggregate_by=args.aggregate_by,
        subsets=args.subsets,
        confusion_min=args.confusion_min,
        confusion_pairs=args.confusion_pairs,
    )


#: Tokens kept per input when ``--max-length`` is not given (at most the model's limit).
DEFAULT_MAX_LENGTH = 128


def text_length(asked: int | None, model: Any) -> int:
    """Tokens kept per input: ``--max-length`` (refused beyond the model's position
    embeddings), or the default capped at them.

    Raises:
        BuildError: a length the model cannot take.
    """
    limit = getattr(model, "max_tokens", None)
    if asked is None:
        return min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH
    if limit is not None and asked > limit:
        raise BuildError(f"--max-length {asked} is beyond the model's {limit} position embeddings")
    return asked


#: Options that only mean something for an image model: ``dest`` -> (the option, its
#: default). The parser leaves them ``None`` unless given, so a text build can refuse one
#: that was given instead of ignoring it; an image build fills in the defaults.
IMAGE_ONLY_OPTIONS: dict[str, tuple[str, Any]] = {
    "image_size": ("--image-size", 224),
    "normalize": ("--normalize", "imagenet"),
    "class_index": ("--class-index", None),
    "decode": ("--decode", "pil"),
    "channels_last": ("--channels-last", False),
    "crops": ("--crops", 3),
    "mapper_crops": ("--mapper-crops", 2_000),
    "no_check_images": ("--no-check-images", False),
}


def check_option_kinds(args: argparse.Namespace, text: bool) -> None:
    """Refuse, in one line, an option of the other kind of model: an image option for a
    text model (``--image-size`` with ``hf:DIR``) or ``--max-length`` for an image model;
    a silently ignored option would build another atlas than the one asked for. For an
    image model, the image options not given take their defaults."""
    if text:
        if args.featurevis:
            raise BuildError("--featurevis: a text model has no images to optimise")
        for dest, (option, _) in IMAGE_ONLY_OPTIONS.items():
            if getattr(args, dest, None) is not None:
                raise BuildError(
                    f"{option} is an option of image models; {args.model} is a text model "
                    "(docs/text.md lists its options)"
                )
        return
    if args.max_length is not None:
        raise BuildError(
            f"--max-length is an option of text models (hf:DIR); {args.model} takes images"
        )
    for dest, (_, default) in IMAGE_ONLY_OPTIONS.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, default)


def _build_text_command(args: argparse.Namespace, rank: Rank, device: torch.device) -> int:
    """``build`` of an ``hf:DIR`` text classifier over a text file (docs/text.md): every
    row checked before the model runs; examples and Mapper members kept as text, no
    crops or feature visualization."""
    model = get_model(args.model, weights=args.weights, num_classes=args.num_classes)
    classes = list(model.classes)  # type: ignore[attr-defined]
    rows = read_text_rows(args.data, classes)
    loader = text_loader(
        model.tokenizer,  # type: ignore[attr-defined]
        rows,
        text_length(args.max_length, model),
        args.batch_size,
        num_workers=args.workers,
    )
    dataset = loader.dataset
    data_path = Path(args.data)
    options = BuildOptions(
        layers=args.layers,
        classes=classes,
        out=Path(args.out),
        config=_summit_config(args),
        device=str(device),
        crops_per_channel=0,
        model_info={"name": model_name(args.model), "spec": args.model},
        dataset_info={
            "name": data_path.stem,
            # A file's name says nothing reliable of its split: --split names it, so a
            # training trace of the same split links the Training and Instance views.
            "split": args.split,
            "description": f"texts {args.data} ({rows.label_kind} labels)",
        },
        **_shared_options(args),
        mapper_crops=0,
        precision=args.precision,
        decode="tokenizer",
        instances=instance_config(args, len(dataset)),
    )
    path = build_atlas(model, loader, options)
    if rank.is_main:
        print(f"atlas written to {path}")
    return 0


def _build_command(args: argparse.Namespace, rank: Rank, device_name: str) -> int:
    text = check_text_inputs(args.model, args.data)
    check_option_kinds(args, text)
    out = Path(args.out)
    check_output_path(out, args.overwrite)
    if args.instances_from is not None:
        read_indices(args.instances_from)  # a bad list is refused before any long work
    device = resolve_device(device_name)
    check_precision(args.precision, device)  # before loading the model or reading data
    if text:
        return _build_text_command(args, rank, device)
    config = _summit_config(args)
    # Seeded: a model built from random weights (no --weights) is the same in every run,
    # and on every torchrun rank (each rank builds its own copy).
    model = get_model(
        args.model, weights=args.weights, num_classes=args.num_classes, seed=args.seed
    )
    grayscale = infer_in_channels(model) == 1
    preprocessing = Preprocessing.from_arg(
        args.normalize, image_size=args.image_size, grayscale=grayscale
    )
    num_outputs = count_outputs(model, preprocessing.input_size)
    check_layers(model, args.layers, preprocessing.input_size)
    # JPEG bytes decoded on the GPU in batches (the loader then carries encoded files).
    encoded = args.decode == "jpeg-device" and device.type == "cuda"
    dataset, class_map = open_image_folder(
        args.data,
        preprocessing,
        num_outputs=num_outputs,
        class_index=args.class_index,
        check=not args.no_check_images and not rank.distributed,
        progress=not args.no_progress,
        decode=args.decode,
        encoded=encoded,
    )
    if rank.distributed and not args.no_check_images:  # each process checks its own shard
        shard = shard_range(len(dataset), rank.rank, rank.world_size)
        check_images([dataset.samples[i][0] for i in shard], progress=False)
    loader, decoder = make_loader(
        dataset, preprocessing, device, batch_size=args.batch_size, workers=args.workers
    )
    data_path = Path(args.data).resolve()
    # DIR/imagenet/val -> name "imagenet", split "val"; otherwise the folder's own name.
    is_split = data_path.name.lower() in _SPLIT_NAMES
    dataset_name = data_path.parent.name if is_split and data_path.parent.name else data_path.name
    instances = instance_config(args, len(dataset))
    options = BuildOptions(
        layers=args.layers,
        classes=dataset.classes,
        out=out,
        config=config,
        class_map=class_map,
        device=str(device),
        preprocessing=preprocessing,
        crops_per_channel=args.crops,
        model_info={
            "name": model_name(args.model),
            "spec": args.model,
            # rebuilding the architecture (feature visualization) needs the head's size
            **({"num_classes": args.num_classes} if args.num_classes is not None else {}),
            # a torchvision architecture without --weights is its random initialisation:
            # whoever opens the atlas must be told (a factory may load its own weights)
            **(
                {"random_weights": True}
                if args.weights is None and args.model.startswith("torchvision:")
                else {}
            ),
        },
        dataset_info={
            "name": dataset_name,
            "split": args.split or (data_path.name if is_split else None),
            "description": f"ImageFolder {args.data}",
        },
        **_shared_options(args),
        mapper_crops=args.mapper_crops,
        channels_last=args.channels_last,
        decoder=decoder,
        precision=args.precision,
        decode=args.decode,
        instances=instances,
    )
    path = build_atlas(model, loader, options)
    if not rank.is_main:
        return 0
    if args.featurevis:
        run_featurevis(path, model=model, device=str(device), progress=not args.no_progress)
    print(f"atlas written to {path}")
    return 0


def make_loader(
    dataset: Any,
    preprocessing: Preprocessing,
    device: torch.device,
    *,
    batch_size: int,
    workers: int,
) -> tuple[DataLoader, Callable[[Any], Any] | None]:
    """The build's loader over an opened image folder, and the batch decoder it needs.

    A dataset of encoded JPEG files (``--decode jpeg-device`` on CUDA) is collated as
    bytes and decoded in batches on the device; any other is decoded by the workers.
    ``bench/`` builds its loaders here too, so its figures are the command's.
    """
    encoded = isinstance(dataset, EncodedImageFolder) and dataset.encoded
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_encoded if encoded else None,
        # Pinned host memory: the pass copies batches with non_blocking=True. Not
        # persistent_workers: the loader is iterated once, and on resume the first
        # loader's workers are meant to stop (they would stay up idle for the whole pass).
        pin_memory=device.type == "cuda",
    )
    return loader, JpegBatchDecoder(preprocessing, str(device)) if encoded else None


def _run_layers(args: argparse.Namespace) -> int:
    model = get_model(args.model, weights=args.weights, num_classes=args.num_classes)
    probe = model_input(model, image_size=args.image_size, tokens=args.tokens)
    rows = describe_layers(model, probe)
    head = f"# {args.model}"
    if isinstance(model, HFClassifier):
        head += f" ({model.architecture}, {len(model.classes)} classes)"
    print(f"{head}, {probe.describe()}")
    if probe.maps:
        _print_map_layers(model, rows, every=args.all)
    found = token_layers(rows, probe.tokens)
    if found:
        if probe.maps:
            print("# token layers")
        _print_token_layers(found, tokens=probe.tokens)
    elif not probe.maps:
        print("# no layer outputs a token sequence [N, T, D]")
    if args.all and not probe.maps:  # the map table lists every module of an image model
        others = [row for row in rows if not row.token]
        print(f"# other modules: {', '.join(f'{row.name} ({row.type})' for row in others)}")
    return 0


def _print_map_layers(model: torch.nn.Module, rows: list[LayerDescription], every: bool) -> None:
    """The image layers' table: ``[N, C, H, W]`` maps (every module with ``every``) and
    how each would connect to the one above."""
    last = sum(row.channels_last for row in rows)
    if not every:
        rows = [row for row in rows if row.spatial]
    kinds = connection_kinds(model, [row.name for row in rows if row.spatial])
    kind_of = dict(zip([row.name for row in rows if row.spatial], kinds, strict=True))
    width = max([len("name"), *(len(row.name) for row in rows)])
    type_width = max([len("type"), *(len(row.type) for row in rows)])
    print(f"{'name':<{width}}  {'type':<{type_width}}  {'channels':>8}  {'map':>7}  from previous")
    for row in rows:
        size = f"{row.height}x{row.width}" if row.spatial else "-"
        channels = "-" if row.channels is None else str(row.channels)
        kind = kind_of.get(row.name) or "-"
        if row.channels_last:
            kind += " (channels last)"
        print(f"{row.name:<{width}}  {row.type:<{type_width}}  {channels:>8}  {size:>7}  {kind}")
    if not every:
        print(
            "# only layers with [N, C, H, W] outputs (usable in --layers); --all for every module"
        )
    if last:
        print(
            f"# (channels last): {last} module(s) output [N, H, W, C] maps (Swin, ConvNeXt "
            "blocks); every pass reads them as [N, C, H, W]"
        )
    print(
        "# 'from previous': how influence from the layer listed above would be computed if both"
        " were chosen: conv (exact, one convolution), inception (exact per branch + widest"
        " path), gradient (gradient x activation), none (cannot be chosen together)"
    )


#: How the token table names each ``TokenLayer.role``.
_ROLE_NOTES = {
    ROLE_MLP: "MLP units: the natural Summit layer",
    ROLE_MLP_PRE: "MLP units before the activation",
    "": "",
}


def _print_token_layers(found: list[TokenLayer], tokens: int | None) -> None:
    """The token layers' table: ``T x D`` at the probe, usable or not, MLP units marked."""
    width = max([len("name"), *(len(layer.name) for layer in found)])
    type_width = max([len("type"), *(len(layer.type) for layer in found)])
    print(f"{'name':<{width}}  {'type':<{type_width}}  {'T x D':>9}  usable  note")
    mlp = {layer.name for layer in found if layer.role == ROLE_MLP}
    for layer in found:
        size = f"{layer.tokens}x{layer.units}"
        usable = "yes" if layer.usable else "no"
        note = _ROLE_NOTES[layer.role]
        parent = layer.name.rpartition(".")[0]
        if layer.role == ROLE_MLP and parent in mlp:
            # BERT's ``intermediate`` returns its ``intermediate_act_fn``'s output: one
            # set of units under two names; the table says so rather than offer two.
            note = f"the same units as {parent}"
        line = f"{layer.name:<{width}}  {layer.type:<{type_width}}  {size:>9}  {usable:<6}  {note}"
        print(line.rstrip())
    usable = (
        f"T is the input's {tokens} tokens, so padding can be masked"
        if tokens is not None
        else "an image has no padding: every token layer"
    )
    print(
        "# token layers: outputs [N, T, D] (a tuple's first element), D hidden units each; "
        f"usable (the per-input maximum over real tokens can be read): {usable}"
    )
    data = "a .csv/.jsonl of texts" if tokens is not None else "an image folder"
    print(
        "# MLP units: layers wider than the residual stream, the natural Summit neurons; "
        f"pass them to `build --layers`, input to output, with {data} as --data "
        "(docs/text.md)"
    )


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` and ``layers`` subcommands to ``python -m compute``."""
    formatter = argparse.RawDescriptionHelpFormatter
    build = subparsers.add_parser(
        "build",
        help="build an atlas of a classifier: an image model over an ImageFolder, or an hf:DIR "
        "text model over a .csv or .jsonl file",
        description=(
            "Build an atlas: one streaming pass of the model over the data aggregates "
            "Summit's activation and influence counts for every chosen layer at once, then "
            "the attribution graphs, the class embedding and the receptive-field crops of "
            "each channel's top examples are derived and written atomically to --out. "
            "Bad input (unknown layer, class folders that do not map to the model's "
            "outputs, an unreadable image, weights that do not fit) is reported in one "
            "line before the pass starts."
        ),
        epilog=_BUILD_EPILOG,
        formatter_class=formatter,
    )
    required = build.add_argument_group("required")
    required.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="torchvision:NAME, package.module:callable, file.py:callable, a registered "
        "name (simple_cnn), or hf:DIR, a local Hugging Face text classifier (docs/text.md)",
    )
    required.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="ImageFolder directory: DIR/CLASS/IMAGE; for an hf: text model a .csv or .jsonl "
        "file with text and label columns, or a datasets folder (docs/text.md)",
    )
    required.add_argument(
        "--layers",
        required=True,
        type=_layer_list,
        metavar="L1,L2,...",
        help="module names to map, input to output, each depending on the previous one "
        "(see `python -m compute layers` and below)",
    )
    required.add_argument("--out", required=True, metavar="DIR", help="atlas directory to write")
    model_group = build.add_argument_group("model and data")
    model_group.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict to load (strict; a checkpoint whose classifier head has another "
        "number of outputs rebuilds the model with that many)",
    )
    model_group.add_argument(
        "--num-classes",
        type=_positive_int,
        metavar="N",
        help="pass num_classes=N to the model factory (default: the factory's own, or the "
        "checkpoint's head)",
    )
    model_group.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="resize images to N x N, no crop (default 224)",
    )
    model_group.add_argument(
        "--normalize",
        default=None,
        metavar="MEAN,STD|imagenet|none",
        help="input normalisation (default imagenet; syntax below)",
    )
    model_group.add_argument(
        "--class-index", metavar="FILE", help='JSON {"folder": model output index}'
    )
    model_group.add_argument(
        "--max-length",
        type=lambda text: _int_at_least(text, 2),
        default=None,
        metavar="T",
        help="text models: tokens kept per input, special tokens included (default 128, "
        "at most the model's position embeddings)",
    )
    model_group.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="B", help="default 64"
    )
    model_group.add_argument(
        "--workers",
        type=_non_negative_int,
        default=_default_workers(),
        metavar="N",
        help=f"data-loading worker processes (default {_default_workers()})",
    )
    model_group.add_argument(
        "--device", default="cpu", metavar="cpu|cuda", help="where the model runs (default cpu)"
    )
    model_group.add_argument(
        "--decode",
        choices=DECODE_MODES,
        default=None,
        help="pil (default): PIL in the loader's workers; jpeg-device: JPEG files only, "
        "decoded by torchvision.io, in batches on the GPU with --device cuda (in the "
        "workers on the CPU); resized pixels differ from PIL's by at most 1/255",
    )
    model_group.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="model and batches in channels-last memory format (faster on GPUs; same results)",
    )
    model_group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default): exact counts. bf16, fp16 (fp16 on CUDA only): APPROXIMATE mode, the "
        "pass runs under torch.autocast; counts near a threshold may differ from fp32's, "
        "and the atlas records that it is approximate",
    )
    summit = build.add_argument_group("Summit aggregation")
    selection = summit.add_mutually_exclusive_group()
    selection.add_argument(
        "--tau",
        type=float,
        metavar="T",
        help=f"per image, keep the channels holding this share of the layer's max-activation "
        f"mass (default {SummitConfig.tau}; small layers need larger values)",
    )
    selection.add_argument(
        "--top-k", type=_positive_int, metavar="K", help="per image, keep the K strongest channels"
    )
    summit.add_argument(
        "--graph-mass",
        type=_share,
        default=GraphConfig.mass,
        metavar="M",
        help=f"per class graph and layer, keep the top units holding this share of the "
        f"layer's PageRank mass (default {GraphConfig.mass}; larger: bigger graphs; a model "
        f"that fires a few units very strongly, as fine-tuned BERTs do, may need 0.3 with "
        f"--tau 0.05)",
    )
    summit.add_argument(
        "--influence-top-k",
        type=_positive_int,
        default=SummitConfig.influence_top_k,
        metavar="K",
        help=f"input channels counted per output channel and image "
        f"(default {SummitConfig.influence_top_k})",
    )
    summit.add_argument(
        "--examples",
        type=_positive_int,
        default=SummitConfig.examples_per_channel,
        metavar="N",
        help=f"top dataset examples kept per channel (default {SummitConfig.examples_per_channel})",
    )
    summit.add_argument(
        "--crops",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="receptive-field crops saved per channel (default 3; 0: none)",
    )
    summit.add_argument(
        "--aggregate-by",
        choices=("label", "prediction"),
        default="label",
        help="count each image under its true label or the model's prediction (default label)",
    )
    summit.add_argument(
        "--no-subsets",
        dest="subsets",
        action="store_false",
        help="do not count each class's wrong images apart (no correct / mistaken / "
        "confusion-pair graphs: the subsets part)",
    )
    summit.add_argument(
        "--confusion-min",
        type=_positive_int,
        default=SummitConfig.confusion_min,
        metavar="N",
        help="fewest images of a confusion pair (class c mistaken for d) that gets its own "
        f"graph (default {SummitConfig.confusion_min})",
    )
    summit.add_argument(
        "--confusion-pairs",
        type=_non_negative_int,
        default=SummitConfig.confusion_pairs,
        metavar="N",
        help="most confusion-pair graphs per class, the most frequent "
        f"(default {SummitConfig.confusion_pairs})",
    )
    records = build.add_argument_group("instance records (kept in the same pass)")
    records.add_argument(
        "--instances",
        type=_non_negative_int,
        default=InstanceConfig.sample,
        metavar="N",
        help="inputs whose own channels and edges are recorded, a sample by hash of "
        f"(seed, index) (default {InstanceConfig.sample}; 0 and --instance-mistakes 0: none)",
    )
    records.add_argument(
        "--instance-mistakes",
        type=_non_negative_int,
        default=InstanceConfig.mistakes,
        metavar="N",
        help="misclassified inputs recorded besides the sample, by the same hash "
        f"(default {InstanceConfig.mistakes})",
    )
    records.add_argument(
        "--instances-from",
        metavar="FILE",
        help="record exactly these inputs: a text file of input indices (spaces, commas "
        "or newlines); replaces --instances and --instance-mistakes",
    )
    build.add_argument(
        "--featurevis",
        action="store_true",
        help="also render every channel's feature visualization and diversity images "
        "(slow on CPU; same as running `python -m compute featurevis --atlas OUT` afterwards)",
    )
    topology = build.add_argument_group("TopoAct Mapper (collected in the same pass)")
    topology.add_argument(
        "--no-mapper",
        dest="mapper",
        action="store_false",
        help="do not sample activation vectors nor store the mapper part",
    )
    topology.add_argument(
        "--mapper-capacity",
        type=_positive_int,
        default=100_000,
        metavar="N",
        help="images sampled at most, the same for every layer (default 100000)",
    )
    topology.add_argument(
        "--mapper-mode",
        choices=MAPPER_MODES,
        default="position",
        help="vector per image: the channels at one hashed spatial position (TopoAct, "
        "default) or their spatial mean",
    )
    topology.add_argument(
        "--mapper-crops",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="sample points cropped per layer, plus 12 per node of the default graph "
        "(default 2000; 0: none)",
    )
    output = build.add_argument_group("output")
    output.add_argument("--title", help="title shown in the dashboard")
    output.add_argument(
        "--split",
        default=None,
        metavar="NAME",
        help="the data's split (e.g. test), recorded in the atlas; a training trace of the "
        "same split (write_trace_part(split=NAME)) then links its Training and Instance "
        "views (default: an image folder named train/val/test/..., else none)",
    )
    output.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds a model built without --weights (its random initialisation) and the "
        "Mapper sample; recorded in the atlas (default 0)",
    )
    output.add_argument(
        "--save-weights",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store the state dict in the atlas (model/weights.pt) for later steps such as "
        "feature visualization (default: only when at most 64 MB)",
    )
    output.add_argument("--overwrite", action="store_true", help="replace an existing atlas")
    output.add_argument(
        "--no-check-images",
        action="store_true",
        default=None,
        help="skip opening every image header before the pass (a bad image then stops the "
        "pass when it is reached)",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    resume = build.add_argument_group("resumable builds")
    resume.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="checkpoint the partial aggregates every N batches (atomically); rerunning the "
        "same command after a crash resumes and writes exactly the same atlas",
    )
    resume.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="where checkpoints go (default: OUT.checkpoint beside --out; removed when the "
        "atlas is written)",
    )
    resume.add_argument(
        "--restart",
        action="store_true",
        help="discard an existing checkpoint instead of resuming (a checkpoint of another "
        "model, data or parameters is otherwise refused)",
    )
    build.set_defaults(run=_run_build)

    layers = subparsers.add_parser(
        "layers",
        help="list a model's layers (names, types, channels, map sizes) for --layers",
        description=(
            "Run one dummy image through the model and list every module whose output is a "
            "[N, C, H, W] map, with its channel count and map size at --image-size. Paste "
            "the names, comma-separated and input to output, into `build --layers`. "
            "Token layers ([N, T, D]: a Vision Transformer's, or an hf:DIR text "
            "classifier's, probed with --tokens tokens) are listed with T x D, marked "
            "usable or not, the MLP units marked as the natural Summit layers."
        ),
        epilog=(
            "examples:\n  python -m compute layers --model torchvision:vgg11 --image-size 224"
            "\n  python -m compute layers --model hf:models/my-bert --tokens 16"
        ),
        formatter_class=formatter,
    )
    layers.add_argument("--model", required=True, metavar="SPEC", help="as for build")
    layers.add_argument("--weights", metavar="FILE", help="state dict to load (checks it fits)")
    layers.add_argument(
        "--num-classes", type=_positive_int, metavar="N", help="num_classes=N for the factory"
    )
    layers.add_argument(
        "--image-size", type=_positive_int, default=224, metavar="N", help="default 224"
    )
    layers.add_argument(
        "--tokens",
        type=lambda text: _int_at_least(text, 2),
        default=8,
        metavar="N",
        help="length of the dummy text input of an hf:DIR model (default 8)",
    )
    layers.add_argument("--all", action="store_true", help="also list non-spatial modules")
    layers.set_defaults(run=_run_layers)
