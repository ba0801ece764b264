"""The optimisation loop: render feature visualizations, diversity images and inversions.

Many channels are optimised **together as one batch** (each image has its own Fourier
parameters and its own per-image score, so the images do not interact): one forward and
backward pass per step serves every channel of the batch, which is where the speed is.
The forward pass stops at the captured layer (a hook raises after capturing), so deeper
layers and the head are never computed, and the model's weights get no gradients.

Dead ReLUs: an image on which the channel (or a ReLU on its way) is off everywhere gets
no gradient at all. Every ReLU call of the model, module or functional, runs during the
render with a redirected gradient after Lucid's (:class:`RedirectedReLUs`,
:class:`_RedirectedReLU`); see ``docs/featurevis.md`` for the method and its figures.

A plain visualization that still leaves its channel at exactly 0 after the render is
re-optimised once (another seed, twice the steps) and the better image kept
(``RenderConfig.retry_dead``, :func:`render_channels`).

Determinism: the initial coefficients and every random transform come from a
:class:`torch.Generator` seeded from ``RenderConfig.seed``, the layer and the batch, so a
fixed seed gives the same bytes on CPU. (On CUDA, ``grid_sample``'s backward uses atomic
adds, so GPU renders are reproducible only up to float rounding.)

Examples:
    >>> from compute.demo import digits_cnn
    >>> space = ImageSpace(channels=1, height=32, width=32, grayscale=True)
    >>> images = render_channels(digits_cnn(), "features.relu2", [0, 1], space,
    ...                          RenderConfig(steps=4))
    >>> images.shape, images.dtype
    ((2, 32, 32, 1), dtype('uint8'))
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from compute.capture import HookSet
from compute.featurevis import objectives
from compute.featurevis.param import FourierImage, ImageSpace, from_uint8, to_uint8
from compute.featurevis.transforms import RandomAffine, TransformConfig

log = logging.getLogger(__name__)

#: Per-image score of a batch: activations ``float[N, C, h, w]`` -> ``float[N]`` (or any
#: shape; the loop maximises the sum).
Objective = Callable[[torch.Tensor], torch.Tensor]


class StepProgress(Protocol):
    """Told of optimisation steps as they happen (a progress bar over steps)."""

    def __call__(self, done: int, planned: int = 0) -> None:
        """``done`` steps were just taken; ``planned`` steps were added to the work (a
        dead-channel retry, which no caller can know in advance)."""


@dataclass(frozen=True)
class RenderConfig:
    """Settings of the optimisation.

    Attributes:
        steps: Adam steps per image (Lucid: 512 for the article's images; 128-256 is
            usually enough, and 32-px models converge in fewer).
        learning_rate: Adam learning rate (Lucid: 0.05; 0.1 converges in fewer steps: on the
            demo CNN at 128 steps it lifts the channels whose image beats the best
            training image's spatial max from 87% to 91%).
        batch_channels: channels optimised together in one batch (times the diversity
            images for diversity renders); bigger is faster until memory runs out.
        diversity_weight: weight of the diversity penalty *relative to the group's mean
            channel activation* (so it transfers across models whose activations differ
            in scale; Lucid's absolute 1e2 was tuned to InceptionV1).
        transforms: the random transforms, or ``None`` to optimise without them.
        transform_fraction: share of the steps that use the transforms. Lucid uses them
            throughout; a few final steps without them sharpen the image for the exact
            pixel grid it is shown at (demo CNN, 128 steps: spatial-max wins 77% -> 87%),
            while the transformed steps already made it robust and free of
            high-frequency noise.
        seed: seeds the initial images and the transforms.
        redirect_steps: steps during which every ReLU of the model has the redirected
            gradient (:class:`RedirectedReLUs`); ``None``: all steps, 0: never. Lucid
            redirects for the first 16 of 512 steps only; with the post-activation
            objective a channel that a transformed step switches off after those steps
            never comes back (shapes CNN, ``block3.relu``, 256 steps: 23% of the channels
            that fire on data rendered blank with 16 steps, none with all steps). The
            redirect changes a gradient only for an image that gets none at all through
            that ReLU, so keeping it on costs nothing where the true gradient exists.
        pre_activation: optimise the *input* of an activation-module layer (Lucid's
            ``*_pre_relu`` layers) instead of its output. Off by default: with the
            redirect the post-activation objective is never stuck at zero, and it is
            what the channel's top examples measure; the pre-activation mean rewards
            lifting negative regions that never show (shapes CNN, 128 steps: channels
            beating their top example's spatial max 58% -> 96% in ``block2.relu``).
        redirect_to_peak: at the ReLU that produces the captured layer's output (if
            one does), the redirected gradient of a dead channel raises its largest unit
            only (``True``) or, as Lucid's, every unit (``False``); see
            :class:`_RedirectedReLU`. Hidden ReLUs always use Lucid's form.
        retry_dead: in a plain feature visualization (:func:`render_channels` with
            ``diversity=0``), re-optimise once, from another seed and with twice the
            steps, every channel whose finished image does not activate it at all
            (spatial max of the layer's output <= 0), and keep whichever of the two
            images activates it more. Costs one extra forward pass per batch when no
            channel is dead. See :func:`render_channels`.
    """

    steps: int = 256
    learning_rate: float = 0.1
    batch_channels: int = 64
    diversity_weight: float = 1.0
    transforms: TransformConfig | None = field(default_factory=TransformConfig)
    seed: int = 0
    transform_fraction: float = 0.75
    redirect_steps: int | None = None
    pre_activation: bool = False
    redirect_to_peak: bool = True
    retry_dead: bool = True


class _StopForward(Exception):
    """Raised by the capture hook: the rest of the network is not needed."""


#: Element-wise, monotone activations: optimising their *input* is equivalent and keeps
#: a gradient where the output is flat (a ReLU that is off everywhere at the start).
PRE_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
)


class LayerCapture:
    """Run a model only up to a named module and return that module's output.

    Use as a context manager; the hook is removed on exit. The module's *first* output
    of a forward pass is captured (a module called twice, e.g. a shared ReLU, gives its
    first call).

    Args:
        model: the network.
        layer: the module name, as in ``model.named_modules()``.
        pre_activation: if the module is an element-wise activation
            (:data:`PRE_ACTIVATION_MODULES`), capture its *input* instead, as Lucid
            optimises ``*_pre_relu`` layers: the objective is then never stuck at a flat
            zero. Use ``False`` to read the layer's actual output (e.g. for evaluation).

    Raises:
        KeyError: for an unknown layer, listing a few names.
    """

    def __init__(self, model: nn.Module, layer: str, *, pre_activation: bool = False) -> None:
        modules = dict(model.named_modules())
        if layer not in modules:
            names = [name for name in modules if name][:12]
            raise KeyError(f"model has no layer {layer!r}; e.g. {', '.join(names)}")
        self.model = model
        self.module = modules[layer]
        self.layer = layer
        self.pre = pre_activation and isinstance(self.module, PRE_ACTIVATION_MODULES)
        self.output: torch.Tensor | None = None
        self._running = False
        self._hooks = HookSet()  # replaced on entering: hooks only while in use

    def _keep(self, tensor: torch.Tensor) -> None:
        if not self._running:  # another forward pass (e.g. a render inside this block)
            return
        self.output = tensor
        raise _StopForward

    def __enter__(self) -> LayerCapture:
        self._hooks = HookSet(self.model)  # channels-last maps read channels first
        if self.pre:
            self._hooks.on_input(self.module, self._keep)
        else:
            self._hooks.on_output(self.module, self._keep)
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.close()

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Args: ``inputs`` ``float[N, C, H, W]``. Returns: the layer's ``float[N, C', h, w]``."""
        self.output = None
        self._running = True
        try:
            with contextlib.suppress(_StopForward):
                self.model(inputs)
        finally:
            self._running = False
        if self.output is None:
            raise RuntimeError(f"layer {self.layer!r} was not reached in the forward pass")
        if self.output.ndim == 3:  # a token layer [N, T, D]: the patch tokens as a map
            return patch_map(self.model, self.output, (inputs.shape[-2], inputs.shape[-1]))
        return self.output


def patch_map(model: nn.Module, tokens: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """A Vision Transformer layer's output ``[N, T, D]`` as the map of its patch tokens
    ``[N, D, rows, cols]``, so every objective reads a unit's activation over the image's
    patches as it reads a channel's over positions ("center" is the middle patch).

    The grid comes from the model's square patches (torchvision's ``patch_size``) and the
    image size; otherwise from the largest square number of trailing tokens. The leading
    tokens (0 to 8: a class token, registers) pool the patches and are left out, as in
    :func:`compute.build.outputs.token_patch_field`. Without a grid the patches stay one
    row ``[N, D, 1, T]``.

    Examples:
        >>> patch_map(nn.Identity(), torch.zeros(2, 17, 3), (32, 32)).shape  # class + 4x4
        torch.Size([2, 3, 4, 4])
        >>> patch_map(nn.Identity(), torch.zeros(2, 5, 3), (32, 32)).shape   # 1 + 2x2
        torch.Size([2, 3, 2, 2])
    """
    n, t, d = tokens.shape
    patch = getattr(model, "patch_size", None)
    grid: tuple[int, int] | None = None
    if isinstance(patch, int) and patch > 0:
        rows, cols = image_size[0] // patch, image_size[1] // patch
        if 0 <= t - rows * cols <= 8 and rows * cols > 0:
            grid = (rows, cols)
    if grid is None:
        for prefix in range(0, min(8, t - 1) + 1):
            side = math.isqrt(t - prefix)
            if side * side == t - prefix and side > 1:
                grid = (side, side)
                break
    if grid is None:
        return tokens.transpose(1, 2).unsqueeze(2)
    prefix = t - grid[0] * grid[1]
    return tokens[:, prefix:, :].transpose(1, 2).reshape(n, d, grid[0], grid[1])


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward, for an image that would get no gradient at all through it,
    passes the gradient where it would *raise* the input (Lucid's
    ``redirected_relu_grad``): otherwise an image where the ReLU is off everywhere (a
    channel that is off on the flat grey start, or that jitter switched off) never moves.

    The forward is exactly ``relu`` (in place for ``inplace=True``, as the call it
    replaces). The backward reads which units were off from the *output* (``<= 0``), as
    torch's own ReLU backward does, so the in-place form needs no copy of its input.

    Lucid passes the redirected gradient at *every* off unit where it raises the input;
    so does this one at hidden ReLUs. At the ReLU whose output is the objective's layer
    (``ctx.to_peak``, set by :func:`_mark_objective_relu` after the forward), it goes,
    for each channel of a ``[N, C, ...]`` input, to the unit with the largest input only
    (the spatial argmax, saved in the forward): raising the whole map of a dead channel
    at once asks for a pattern that fires everywhere, often harder than firing at one
    place (shapes CNN, ``block4``, 256 steps: channels beating their top example 79% ->
    90%; see docs/featurevis.md). At a hidden ReLU the incoming gradient is already a
    spatial pattern, which a single unit per channel would mostly discard.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, inplace: bool, to_peak: bool = False) -> torch.Tensor:
        ctx.to_peak = to_peak  # set on the objective's own ReLU by _mark_objective_relu
        peak = x.detach().flatten(2).argmax(dim=2) if x.ndim > 2 else None
        if inplace:
            out = x.clamp_(min=0)
            ctx.mark_dirty(out)
        else:
            out = x.clamp(min=0)
        ctx.save_for_backward(out, peak)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        out, peak = ctx.saved_tensors
        off = out <= 0
        zero = torch.zeros_like(grad)
        relu_grad = torch.where(off, zero, grad)
        dead = relu_grad.flatten(1).abs().amax(dim=1) == 0  # [N]: no gradient at all
        if grad.device.type == "cpu" and not bool(dead.any()):  # (no device sync on GPUs)
            return relu_grad, None, None
        # grad > 0 on the loss lowers x: never push an off unit further down.
        redirected = torch.where(off & (grad > 0), zero, grad)
        if peak is not None and ctx.to_peak:
            keep = torch.zeros((*grad.shape[:2], grad[0, 0].numel()), dtype=torch.bool)
            keep = keep.to(grad.device).scatter_(2, peak.unsqueeze(2), True)
            redirected = torch.where(keep.view(grad.shape), redirected, zero)
        shape = (-1,) + (1,) * (out.ndim - 1)
        return torch.where(dead.view(shape), redirected, relu_grad), None, None


#: The ReLU entry points a model's forward may call (``nn.ReLU`` calls ``F.relu``).
_RELU_FUNCTIONS = {
    torch.relu: False,
    torch.relu_: True,
    F.relu: None,  # in place if its ``inplace`` argument says so
    F.relu_: True,
    torch.Tensor.relu: False,
    torch.Tensor.relu_: True,
}


class RedirectedReLUs(TorchFunctionMode):
    """Within the block, every ReLU of every model has Lucid's redirected gradient.

    While :attr:`active`, every call of ``torch.relu``, ``F.relu``, ``Tensor.relu`` and
    their in-place forms, which includes every ``nn.ReLU`` module (in place or not, and
    modules called twice such as the one of torchvision's ``BasicBlock``) and the
    functional ReLUs inside a ``forward`` (GoogLeNet's ``BasicConv2d``), runs as
    :class:`_RedirectedReLU`: same values, redirected gradient. A torch function mode
    rather than patched modules or hooks because it reaches functional calls too and
    touches no model: nothing is left behind when the block exits, also on an exception.

    Other activations (``ReLU6``, ``LeakyReLU``, ``GELU``...) are unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = True

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if self.active and func in _RELU_FUNCTIONS:
            x = args[0] if args else kwargs["input"]
            inplace = _RELU_FUNCTIONS[func]
            if inplace is None:
                inplace = bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
            if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 1:
                return _RedirectedReLU.apply(x, inplace)
        return func(*args, **kwargs)


def _mark_objective_relu(acts: torch.Tensor, to_peak: bool) -> None:
    """If ``acts`` (the captured layer's output) comes straight out of a redirected ReLU
    (an ``nn.ReLU`` layer, a ResNet block, a ``Sequential`` ending in a ReLU), let that
    ReLU's redirected gradient go to each dead channel's peak unit."""
    node = acts.grad_fn
    if to_peak and node is not None and type(node).__name__ == "_RedirectedReLUBackward":
        node.to_peak = True


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode, no weight gradients, fast BatchNorm; then restore.

    Weight gradients are never needed here. An eval-mode BatchNorm is ``x * scale + shift``
    per channel; running it as one ``addcmul`` gives the same values but a much cheaper
    backward than ``native_batch_norm_backward`` (about a fifth faster on the demo CNN).
    """
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    patched: list[nn.Module] = []
    try:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                module.forward = _affine_batchnorm(module)  # type: ignore[method-assign]
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def _affine_batchnorm(
    module: nn.modules.batchnorm._BatchNorm,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The eval-mode forward of ``module`` as ``x * scale + shift`` (any input rank >= 2)."""
    assert module.running_var is not None and module.running_mean is not None
    scale = torch.rsqrt(module.running_var + module.eps)
    if module.affine:
        scale = scale * module.weight
    shift = -module.running_mean * scale
    if module.affine:
        shift = shift + module.bias
    scale, shift = scale.detach(), shift.detach()

    def forward(x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return torch.addcmul(shift.view(shape), x, scale.view(shape))

    return forward


def batch_seed(seed: int, *key: object) -> int:
    """A stable seed for one batch (``hash`` of a str differs between processes; crc32 not)."""
    return zlib.crc32(":".join(str(k) for k in (seed, *key)).encode()) & 0x7FFFFFFF


def optimise(
    model: nn.Module,
    layer: str,
    objective: Objective,
    batch: int,
    space: ImageSpace,
    config: RenderConfig = RenderConfig(),
    *,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    progress: StepProgress | None = None,
) -> np.ndarray:
    """Optimise a batch of images to maximise ``objective`` at ``layer``.

    Args:
        model: the network (put in eval mode; its weights get no gradients). It must be
            on ``device`` already.
        layer: the module whose output ``objective`` scores.
        objective: activations ``float[batch, C, h, w]`` -> scores; their sum is maximised.
        batch: number of images ``N``.
        space: the model's input space.
        config: optimisation settings.
        seed: overrides ``config.seed`` for this batch.
        device: where to optimise.
        progress: told of each step (a progress bar: one step takes seconds on a CPU).

    Returns:
        ``uint8[N, H, W, image_channels]``: the images, untransformed, at the input size.
    """
    generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
    param = FourierImage(batch, space, generator=generator).to(device)
    transform = (
        RandomAffine(config.transforms, space.height, space.width)
        if config.transforms is not None
        else None
    )
    optimizer = torch.optim.Adam(param.parameters(), lr=config.learning_rate)
    with (
        torch.enable_grad(),  # also when called under no_grad (e.g. from evaluation code)
        _frozen(model),
        LayerCapture(model, layer, pre_activation=config.pre_activation) as capture,
        RedirectedReLUs() as redirect,
    ):
        for step in range(config.steps):
            redirect.active = config.redirect_steps is None or step < config.redirect_steps
            optimizer.zero_grad(set_to_none=True)
            pixels = param()
            if transform is not None and step < config.transform_fraction * config.steps:
                pixels = transform(pixels, generator)
            acts = capture(space.normalise(pixels))
            _mark_objective_relu(acts, config.redirect_to_peak)
            loss = -objective(acts).sum()
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(1)
    with torch.no_grad():
        return to_uint8(param())


def bar_progress(bar: Any) -> StepProgress:
    """A :class:`StepProgress` that moves a tqdm ``bar`` (planned steps raise its total)."""

    def step(done: int, planned: int = 0) -> None:
        if planned:
            bar.total += planned
            bar.refresh()
        bar.update(done)

    return step


def render_steps(channels: int, config: RenderConfig) -> int:
    """Optimisation steps :func:`render_channels` takes for ``channels`` channels, before
    any dead-channel retry (which announces its own)."""
    return math.ceil(channels / max(1, config.batch_channels)) * config.steps


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + max(1, size)])


def own_activation(
    model: nn.Module,
    layer: str,
    images: np.ndarray,
    channels: Sequence[int],
    space: ImageSpace,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """How much each image activates its own channel: the spatial max of the layer's output.

    The statistic of Summit's top examples (``compute.summit.activation.spatial_max``,
    post-activation) and of ``bench/bench_featurevis.py quality``, measured on the
    ``uint8`` images as they are stored. One forward pass, model in eval mode.

    Args:
        model: the network, on ``device``.
        layer: module name.
        images: ``uint8[N, H, W, C]``, e.g. :func:`render_channels`' output.
        channels: ``N`` channels, one per image.
        space: the model's input space.
        device: where to run the model.

    Returns:
        ``float[N]`` on CPU (``<= 0``: the image does not activate its channel at all).
    """
    pixels = from_uint8(images).to(device)
    with torch.no_grad(), _frozen(model), LayerCapture(model, layer) as capture:
        acts = capture(space.normalise(pixels))
    peaks = acts.flatten(2).amax(dim=2) if acts.ndim > 2 else acts
    index = torch.as_tensor(list(channels), dtype=torch.int64, device=peaks.device)
    return peaks.gather(1, index[:, None])[:, 0].float().cpu()


def _retry_dead(
    model: nn.Module,
    layer: str,
    chunk: list[int],
    images: np.ndarray,
    space: ImageSpace,
    config: RenderConfig,
    seed: int,
    device: str | torch.device,
    progress: StepProgress | None = None,
) -> np.ndarray:
    """Re-optimise the channels of a finished batch whose image leaves them at <= 0.

    One retry per dead channel, all of a batch's dead channels together, from the seed
    ``batch_seed(seed, "retry", 1)`` and with ``2 * config.steps`` steps; each keeps the
    image (first or retry) that activates it more (the first on a tie). Deterministic:
    the retry's seed and batch follow from the first batch's seed and result.
    """
    own = own_activation(model, layer, images, chunk, space, device).nan_to_num(nan=-np.inf)
    dead = [i for i in range(len(chunk)) if not own[i] > 0]
    if not dead:
        return images
    channels = [chunk[i] for i in dead]
    targets = torch.tensor(channels, dtype=torch.int64, device=device)

    def objective(acts: torch.Tensor) -> torch.Tensor:
        return objectives.channel(acts, targets)

    retry = dataclasses.replace(config, steps=2 * config.steps)
    if progress is not None:
        progress(0, retry.steps)
    again = optimise(
        model,
        layer,
        objective,
        len(dead),
        space,
        retry,
        seed=batch_seed(seed, "retry", 1),
        device=device,
        progress=progress,
    )
    own_again = own_activation(model, layer, again, channels, space, device)
    images = images.copy()
    rescued = 0
    for j, i in enumerate(dead):
        if own_again[j] > own[i]:
            images[i] = again[j]
            rescued += int(own_again[j] > 0)
    log.debug(
        "%s: %d dead channels re-optimised (%d steps), %d now fire",
        layer,
        len(dead),
        retry.steps,
        rescued,
    )
    return images


def render_channels(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    space: ImageSpace,
    config: RenderConfig = RenderConfig(),
    *,
    diversity: int = 0,
    device: str | torch.device = "cpu",
    progress: StepProgress | None = None,
) -> np.ndarray:
    """Feature visualization (``diversity=0``) or ``diversity`` diverse images per channel.

    The channel objective is the spatial mean of the channel's activation (the layer's
    output; its input for an activation module with ``config.pre_activation``); every
    ReLU of the model has the redirected gradient (:class:`RedirectedReLUs`), so a
    channel that is off on the start image still moves. A plain visualization
    (``diversity=0``, ``config.retry_dead``) that still leaves its channel at exactly 0
    when the batch is done (:func:`own_activation` ``<= 0``: the redirect gave it a
    gradient, but not enough steps) is optimised once more, with the batch's other dead
    channels, from the seed ``batch_seed(seed, "retry", 1)`` and with twice the steps;
    the image that activates the channel more is kept (shapes CNN, ``block4``, 256
    steps: no blank channel instead of 1 of 29; see docs/featurevis.md). A batch with
    no dead channel costs one extra forward pass. For diversity,
    each channel's ``K = diversity`` images form a group whose Gram-matrix similarity is
    penalised (Lucid's ``diversity``), weighted relative to the group's mean activation.

    Args:
        model: the network, on ``device``.
        layer: module name.
        channels: the channels to render.
        space: the model's input space.
        config: optimisation settings; ``config.batch_channels`` channels per batch.
        diversity: images per channel for the diversity objective (0: one plain image).
        device: where to optimise.
        progress: told of every optimisation step: ``config.steps`` per batch of
            ``config.batch_channels`` channels (see :func:`render_steps`), and a retry's
            steps announced as ``planned`` when it starts.

    Returns:
        ``uint8[len(channels), H, W, C]`` for ``diversity=0``, else
        ``uint8[len(channels), diversity, H, W, C]`` (``C`` = ``space.image_channels``).

    Examples:
        >>> from compute.demo import digits_cnn
        >>> space = ImageSpace(1, 32, 32, grayscale=True)
        >>> render_channels(digits_cnn(), "features.relu1", [3], space,
        ...                 RenderConfig(steps=2), diversity=4).shape
        (1, 4, 32, 32, 1)
    """
    k = max(1, diversity)
    results: list[np.ndarray] = []
    for chunk in _chunks(channels, config.batch_channels):
        targets = torch.tensor(chunk, dtype=torch.int64, device=device).repeat_interleave(k)

        def objective(acts: torch.Tensor, targets: torch.Tensor = targets) -> torch.Tensor:
            score = objectives.channel(acts, targets)
            if diversity <= 1:
                return score
            groups = score.view(-1, k)
            # Relative weight: the penalty scales with the activation the group reaches.
            scale = groups.detach().mean(dim=1).clamp(min=0.0)
            penalty = objectives.diversity(acts, k)
            return groups.sum(dim=1) - config.diversity_weight * scale * penalty

        seed = batch_seed(config.seed, layer, diversity, chunk[0], chunk[-1], len(chunk))
        images = optimise(
            model,
            layer,
            objective,
            len(chunk) * k,
            space,
            config,
            seed=seed,
            device=device,
            progress=progress,
        )
        if diversity == 0 and config.retry_dead:
            images = _retry_dead(model, layer, chunk, images, space, config, seed, device, progress)
        results.append(
            images if diversity == 0 else images.reshape(len(chunk), k, *images.shape[1:])
        )
    if not results:
        shape = (0, space.height, space.width, space.image_channels)
        return np.zeros(shape if diversity == 0 else (0, k, *shape[1:]), np.uint8)
    return np.concatenate(results)


def invert_activations(
    model: nn.Module,
    layer: str,
    vectors: torch.Tensor | np.ndarray,
    space: ImageSpace,
    config: RenderConfig = RenderConfig(),
    *,
    position: objectives.Position = "center",
    device: str | torch.device = "cpu",
    progress: StepProgress | None = None,
) -> np.ndarray:
    """Activation inversion: images whose activation at ``layer`` points along ``vectors``.

    Maximises Activation Atlas' ``dot(a, v) · max(0.1, cos(a, v))²`` (see
    :func:`objectives.direction_cossim` for ``position``). As for channels, ``a`` is the
    layer's output (the input of an activation module with ``config.pre_activation``),
    and the ReLUs' redirected gradient keeps the objective from being flat at zero.

    Args:
        model: the network, on ``device``.
        layer: module name.
        vectors: ``float[N, C]`` (or ``[C]``) target activation vectors at ``layer``.
        space: the model's input space.
        config: optimisation settings (``batch_channels`` vectors per batch).
        position: ``"center"`` (Activation Atlas) or ``"mean"`` (spatial mean).
        device: where to optimise.
        progress: told of every optimisation step (:func:`render_steps` of ``N`` in all).

    Returns:
        ``uint8[N, H, W, C]`` images.
    """
    v = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
    if v.ndim == 1:
        v = v[None]
    results = []
    for chunk in _chunks(range(v.shape[0]), config.batch_channels):
        target = v[chunk].to(device)

        def objective(acts: torch.Tensor, target: torch.Tensor = target) -> torch.Tensor:
            if acts.shape[1] != target.shape[1]:
                raise ValueError(
                    f"vector has {target.shape[1]} channels, layer {layer!r} has {acts.shape[1]}"
                )
            return objectives.direction_cossim(acts, target, position=position)

        seed = batch_seed(config.seed, layer, "invert", chunk[0], len(chunk))
        results.append(
            optimise(
                model,
                layer,
                objective,
                len(chunk),
                space,
                config,
                seed=seed,
                device=device,
                progress=progress,
            )
        )
    return np.concatenate(results)
