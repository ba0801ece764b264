"""``python -m compute featurevis`` and ``python -m compute invert``.

``featurevis`` renders, for every channel of the chosen layers of an atlas, one feature
visualization and 4 diversity images, and adds them to the atlas as PNGs (part
``featurevis``, paths from :func:`compute.atlas.featurevis_path`). The model is rebuilt
from the manifest's ``model.spec`` and the state dict at ``model.weights`` inside the atlas.

With the ``mapper`` part it also inverts the mean activation vector of every node of each
layer's default Mapper graph (``--mapper-only`` for just those, ``--no-mapper`` to skip them;
:mod:`compute.featurevis.mapper_nodes`).

``invert`` renders the image whose activation at a layer points along a given vector
(Activation Atlas' objective) and writes it as a PNG.

Examples:
    python -m compute featurevis --atlas demo-atlas --steps 128
    python -m compute invert --atlas demo-atlas --layer features.relu3 \\
        --vector v.npy --out v.png
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from compute.atlas import (
    DIVERSITY_IMAGES,
    PART_FEATUREVIS,
    PART_MAPPER,
    Atlas,
    AtlasError,
    LayerInfo,
    featurevis_path,
    update_atlas,
)
from compute.checkpoint import model_fingerprint
from compute.featurevis.mapper_nodes import INVERSION_STEPS, render_mapper_inversions
from compute.featurevis.param import ImageSpace
from compute.featurevis.render import (
    RenderConfig,
    StepProgress,
    bar_progress,
    invert_activations,
    render_channels,
    render_steps,
)
from compute.models import get_model
from compute.png import png_bytes

log = logging.getLogger(__name__)


#: Adam steps per image when ``--steps`` is not given, whatever the input size.
DEFAULT_STEPS = 256


def default_steps(space: ImageSpace) -> int:
    """Steps when ``--steps`` is not given: :data:`DEFAULT_STEPS` for every input size.

    Small inputs once had 128 (the demo's 32 px images reach their activation in about 100
    steps), but on the second model (``tests/helpers/shapes.py``, 32 px) 128 steps leave
    ``block4`` below the quality target: 90% of its firing channels beat the median
    dataset image, against 97% at 256 (``bench/bench_featurevis.py quality``,
    ``docs/featurevis.md``). ``space`` is kept for a size-dependent rule.
    """
    del space
    return DEFAULT_STEPS


def load_model(
    atlas: Atlas,
    device: str,
    *,
    weights: str | Path | None = None,
    random_weights: bool = False,
) -> nn.Module:
    """Rebuild the atlas's model from ``model.spec``, with the weights it was built with.

    Feature visualizations of other weights than the atlas's would silently explain another
    model, so the weights are the atlas's own (``model.weights``), or a file checked against
    the build's recorded digest (``model.state_sha256``), or the spec's own initialisation
    seeded with the build's seed when that reproduces the digest (a build from random
    weights). Anything else is refused in one line, unless ``random_weights`` asks for an
    untrained model on purpose.

    Args:
        atlas: the opened atlas.
        device: where to put the model.
        weights: a state-dict file to use when the atlas does not store its weights.
        random_weights: render the spec's untrained model even if it is not the atlas's.

    Returns:
        The model on ``device``, in eval mode.

    Raises:
        AtlasError: one line naming what is missing and the fix.
    """
    info: dict[str, Any] = dict(atlas.manifest.get("model") or {})
    spec = info.get("spec")
    if not spec:
        raise AtlasError(
            f"atlas {atlas.path} has no model.spec (built from Python): call "
            "compute.featurevis.run_featurevis(atlas, model=model) with the model it was built from"
        )
    stored = info.get("weights")
    if stored is not None and weights is None:
        if stored not in atlas.files:
            raise AtlasError(f"model weights {stored} are not listed in the atlas {atlas.path}")
        model = get_model(spec, weights=atlas.path / stored, num_classes=info.get("num_classes"))
        return model.to(device).eval()
    if weights is not None:
        model = get_model(spec, weights=weights, num_classes=info.get("num_classes"))
        check_model(atlas, model, f"weights {weights}")
        return model.to(device).eval()
    seed = int((atlas.manifest.get("parameters") or {}).get("seed", 0))
    model = get_model(spec, num_classes=info.get("num_classes"), seed=seed)  # as the build
    recorded = info.get("state_sha256")
    if recorded is not None and model_fingerprint(model) == recorded:
        log.info(
            "atlas %s was built from %s's seeded initialisation: rebuilt it", atlas.path.name, spec
        )
    elif random_weights:
        log.warning("rendering %s with untrained weights (--random-weights)", spec)
    else:
        raise AtlasError(
            f"atlas {atlas.path} does not store its model's weights: pass --weights FILE "
            "(checked against the build's digest), or --random-weights to render an untrained "
            "model on purpose"
        )
    return model.to(device).eval()


def check_model(atlas: Atlas, model: nn.Module, what: str = "the model") -> None:
    """Refuse a model whose state differs from the one the atlas was built with.

    Atlases from before the digest was recorded (no ``model.state_sha256``) cannot be
    checked: a warning says so.

    Raises:
        AtlasError: ``what`` is not the atlas's model.
    """
    recorded = (atlas.manifest.get("model") or {}).get("state_sha256")
    if recorded is None:
        log.warning(
            "atlas %s records no weights digest: %s cannot be checked", atlas.path.name, what
        )
        return
    if model_fingerprint(model) != recorded:
        raise AtlasError(
            f"{what} are not the weights atlas {atlas.path} was built with (their sha256 "
            "differs from model.state_sha256)"
        )


def _layer_indices(atlas: Atlas, layers: Sequence[str] | None) -> list[int]:
    """The atlas indices of ``layers`` (names, or indices written as strings, as the
    command line gives them); every layer for ``None`` or none listed."""
    if not layers:
        return list(range(len(atlas.layers)))
    return [atlas.layer_index(int(n) if n.isdigit() else n) for n in layers]


def _channel_pictures(
    model: nn.Module,
    index: int,
    layer: LayerInfo,
    space: ImageSpace,
    config: RenderConfig,
    device: str,
    progress: StepProgress | None = None,
) -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """Render the visualization and diversity images of every channel of one layer.

    Batch by batch (``config.batch_channels`` channels), so that a caller writing each
    batch before asking for the next keeps one batch of images in memory.

    Args:
        model: the model.
        index: the layer's index in the atlas (the pictures' paths).
        layer: the layer.
        space: the input image space.
        config: render settings.
        device: where to render.
        progress: told of every optimisation step (:func:`render_channels`).

    Yields:
        ``(channels in the batch, [(atlas path, PNG bytes)])``, per channel its
        visualization then its ``DIVERSITY_IMAGES`` diversity images.
    """
    for start in range(0, layer.channels, config.batch_channels):
        chunk = list(range(start, min(start + config.batch_channels, layer.channels)))
        vis = render_channels(
            model, layer.name, chunk, space, config, device=device, progress=progress
        )
        div = render_channels(
            model,
            layer.name,
            chunk,
            space,
            config,
            diversity=DIVERSITY_IMAGES,
            device=device,
            progress=progress,
        )
        pictures: list[tuple[str, bytes]] = []
        for row, channel in enumerate(chunk):
            pictures.append((featurevis_path(index, channel, "vis"), png_bytes(vis[row])))
            pictures.extend(
                (featurevis_path(index, channel, f"div-{k}"), png_bytes(div[row, k]))
                for k in range(DIVERSITY_IMAGES)
            )
        yield len(chunk), pictures


def _featurevis_parameters(config: RenderConfig, layers: list[str]) -> dict[str, Any]:
    """The manifest's ``parameters["featurevis"]``: how the pictures were rendered.

    Args:
        config: the render settings.
        layers: names of the layers rendered.

    Returns:
        The entry (docs/atlas.md).
    """
    return {
        "objective": (
            "channel mean (pre-activation for activation layers)"
            if config.pre_activation
            else "channel mean of the layer's output"
        ),
        "redirected_relu": {
            "steps": "all" if config.redirect_steps is None else config.redirect_steps,
            "to_peak": config.redirect_to_peak,
        },
        "retry_dead": config.retry_dead,
        "diversity_images": DIVERSITY_IMAGES,
        "diversity_weight": config.diversity_weight,
        "steps": config.steps,
        "learning_rate": config.learning_rate,
        "transform_fraction": config.transform_fraction if config.transforms else 0.0,
        "seed": config.seed,
        "layers": layers,
    }


def run_featurevis(
    atlas_path: str | Path,
    *,
    layers: Sequence[str] | None = None,
    config: RenderConfig | None = None,
    device: str = "cpu",
    model: nn.Module | None = None,
    progress: bool = True,
    channels: bool = True,
    mapper: bool = True,
    inversion_steps: int | None = None,
    weights: str | Path | None = None,
    random_weights: bool = False,
) -> int:
    """Render and add the visualization and 4 diversity images of every channel.

    With the atlas's ``mapper`` part, also the activation-inversion image of every node of
    each layer's default Mapper graph (:mod:`compute.featurevis.mapper_nodes`).

    Args:
        atlas_path: the atlas directory.
        layers: layer names or indices (as strings) to render; ``None``: every layer.
        config: render settings (steps, seed, batch size...); default :class:`RenderConfig`
            with :func:`default_steps` steps.
        device: ``"cpu"`` or ``"cuda"``.
        model: the model the atlas was built from, instead of rebuilding it from the
            manifest (the way for an atlas built from Python without ``model.spec``);
            checked against the build's weights digest.
        progress: show a tqdm progress bar.
        channels: render the channel images (``False``: only the Mapper node inversions).
        mapper: render the Mapper node inversions when the atlas has the ``mapper`` part.
        inversion_steps: Adam steps per node inversion (default ``INVERSION_STEPS``).
        weights: a state-dict file, for an atlas that does not store its weights
            (:func:`load_model`).
        random_weights: render an untrained model on purpose (:func:`load_model`).

    Returns:
        The number of PNG files written.
    """

    atlas = Atlas.open(atlas_path)
    space = ImageSpace.from_manifest(atlas.manifest)
    config = config or RenderConfig(steps=default_steps(space))
    indices = _layer_indices(atlas, layers)
    if model is None:
        model = load_model(atlas, device, weights=weights, random_weights=random_weights)
    else:
        check_model(atlas, model)
    written = 0
    if mapper and PART_MAPPER in atlas.parts:
        written += render_mapper_inversions(
            atlas.path,
            model=model,
            steps=inversion_steps or INVERSION_STEPS,
            device=device,
            seed=config.seed,
            layers=indices,
            progress=progress,
        )
        atlas = Atlas.open(atlas_path)
    if not channels:
        return written
    # The bar counts optimisation steps (each takes seconds on a CPU; a batch of channels,
    # minutes): a plain and a diversity render per batch, plus the retries as they start.
    total = sum(2 * render_steps(atlas.layers[i].channels, config) for i in indices)
    with (
        update_atlas(atlas.path, add_parts=(PART_FEATUREVIS,)) as sink,
        tqdm(total=total, unit="step", disable=not progress, desc="featurevis") as bar,
    ):
        step = bar_progress(bar)
        for index in indices:
            layer = atlas.layers[index]
            finished = 0
            bar.set_postfix_str(f"{layer.name}: 0/{layer.channels} channels")
            for batch, pictures in _channel_pictures(
                model, index, layer, space, config, device, step
            ):
                for relpath, png in pictures:
                    sink.add_bytes(relpath, png)
                written += len(pictures)
                finished += batch
                bar.set_postfix_str(f"{layer.name}: {finished}/{layer.channels} channels")
        parameters = dict(atlas.parameters)
        parameters["featurevis"] = _featurevis_parameters(
            config, [atlas.layers[i].name for i in indices]
        )
        sink.manifest_updates["parameters"] = parameters  # type: ignore[attr-defined]
    log.info("wrote %d feature visualization images to %s", written, atlas.path)
    return written


def _config(args: argparse.Namespace, space: ImageSpace) -> RenderConfig:
    return RenderConfig(
        steps=args.steps or default_steps(space),
        batch_channels=args.batch_channels,
        seed=args.seed,
    )


def _run_featurevis(args: argparse.Namespace) -> int:
    space = ImageSpace.from_manifest(Atlas.open(args.atlas).manifest)
    run_featurevis(
        args.atlas,
        layers=args.layers,
        config=_config(args, space),
        device=args.device,
        channels=not args.mapper_only,
        mapper=not args.no_mapper,
        inversion_steps=args.inversion_steps,
        weights=args.weights,
        random_weights=args.random_weights,
    )
    return 0


def _run_invert(args: argparse.Namespace) -> int:
    atlas = Atlas.open(args.atlas)
    space = ImageSpace.from_manifest(atlas.manifest)
    layer = atlas.layers[atlas.layer_index(int(args.layer) if args.layer.isdigit() else args.layer)]
    vectors = np.load(args.vector, allow_pickle=False).astype(np.float32)
    if vectors.ndim not in (1, 2) or vectors.shape[-1] != layer.channels:
        raise AtlasError(
            f"{args.vector}: expected a vector [{layer.channels}] or vectors "
            f"[N, {layer.channels}] for layer {layer.name!r}, got shape {list(vectors.shape)}"
        )
    model = load_model(atlas, args.device, weights=args.weights, random_weights=args.random_weights)
    images = invert_activations(
        model,
        layer.name,
        vectors,
        space,
        _config(args, space),
        position=args.position,
        device=args.device,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = (
        [out]
        if len(images) == 1
        else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(len(images))]
    )
    for path, image in zip(paths, images, strict=True):
        path.write_bytes(png_bytes(image))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--atlas", required=True, help="atlas directory (with model weights)")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"Adam steps per image (default {DEFAULT_STEPS})"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    parser.add_argument(
        "--weights",
        default=None,
        help="state-dict file, for an atlas that does not store its weights (checked "
        "against the build's recorded digest)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="render the spec's untrained model on purpose (otherwise refused when the "
        "atlas's own weights cannot be had)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0): same bytes")
    parser.add_argument(
        "--batch-channels",
        type=int,
        default=RenderConfig.batch_channels,
        help=f"channels optimised together (default {RenderConfig.batch_channels})",
    )


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``featurevis`` and ``invert`` subcommands."""
    parser = subparsers.add_parser(
        "featurevis",
        help="render feature visualizations and diversity images of every channel",
        description=(
            "For every channel of the chosen layers, render one feature visualization and "
            f"{DIVERSITY_IMAGES} diversity images (Fourier-parameterised, transformation-"
            "robust, Lucid-style) and add them to the atlas (part 'featurevis'). The model "
            "is rebuilt from the manifest's model.spec and model.weights."
        ),
    )
    _common(parser)
    parser.add_argument(
        "--layers", nargs="+", default=None, help="layer names or indices (default: all)"
    )
    mapper = parser.add_mutually_exclusive_group()
    mapper.add_argument(
        "--mapper-only",
        action="store_true",
        help="only the activation-inversion images of the Mapper nodes (default graph)",
    )
    mapper.add_argument(
        "--no-mapper",
        action="store_true",
        help="skip the Mapper node inversions (rendered by default with the 'mapper' part)",
    )
    parser.add_argument(
        "--inversion-steps",
        type=int,
        default=None,
        help="Adam steps per Mapper node inversion (default 64)",
    )
    parser.set_defaults(run=_run_featurevis)

    invert = subparsers.add_parser(
        "invert",
        help="render the image whose activation at a layer points along a vector",
        description=(
            "Activation inversion (Activation Atlas): maximise dot(a, v) * max(0.1, cos(a, v))^2 "
            "for the activation a at the layer and the vector v read from a .npy file "
            "([C], or [N, C] for N images written as OUT-i.png)."
        ),
    )
    _common(invert)
    invert.add_argument("--layer", required=True, help="layer name or index")
    invert.add_argument("--vector", required=True, help=".npy file: float [C] or [N, C]")
    invert.add_argument("--out", required=True, help="PNG file to write")
    invert.add_argument(
        "--position",
        choices=("center", "mean"),
        default="center",
        help="compare v with the activation at the centre position (default, as Activation "
        "Atlas) or with the spatial mean",
    )
    invert.set_defaults(run=_run_invert)


__all__ = [
    "check_model",
    "default_steps",
    "load_model",
    "register_cli",
    "run_featurevis",
]
