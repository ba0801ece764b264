"""Load the classifier to build an atlas of: a small registry plus offline spec parsing.

A model *spec* is one of:

- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None)``. Weights are
  never downloaded (builds run offline); pass a state dict with ``weights=``.
- ``package.module:callable`` (or ``path/to/file.py:callable``): import the module and call
  the callable with no arguments (or ``num_classes=`` when given); it must return an
  ``nn.Module``.
- ``hf:DIR``: a local Hugging Face text classifier directory (model and tokenizer saved
  with ``save_pretrained``), loaded by :func:`compute.hf.load_hf_classifier` and called
  with a batch dict (needs ``transformers``: ``pip install ".[compute,text]"``).
- a name registered with :func:`register_model` (see :func:`list_models`).

Examples:
    >>> from compute.models import get_model, describe_layers
    >>> model = get_model("torchvision:resnet18", num_classes=10)
    >>> [row.name for row in describe_layers(model, (3, 64, 64))][:2]
    ['conv1', 'bn1']
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import torch
from torch import Tensor, nn

from compute.capture import HookSet
from compute.errors import BuildError
from compute.hf import HFClassifier, load_hf_classifier

log = logging.getLogger(__name__)

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str | None = None) -> Callable[[F], F]:
    """Register a model factory under ``name`` (default: the function's name).

    Args:
        name: the spec users pass to ``--model``.

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Raises:
        ValueError: if the name is already registered (a programming error).

    Examples:
        >>> @register_model("my_net")                      # doctest: +SKIP
        ... def my_net(num_classes: int = 10) -> nn.Module: ...
    """

    def wrapper(factory: F) -> F:
        key = name or factory.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = factory
        return factory

    return wrapper


def list_models() -> list[str]:
    """Names of the registered models, sorted.

    Examples:
        >>> "simple_cnn" in list_models()
        True
    """
    return sorted(_REGISTRY)


@register_model("simple_cnn")
def simple_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    """A small three-block CNN (conv-ReLU-pool), handy for MNIST/CIFAR-sized data.

    Layers worth mapping: ``features.1``, ``features.4``, ``features.7`` (the ReLUs).

    Args:
        num_classes: outputs of the classifier.
        in_channels: 1 for grayscale input, 3 for RGB.
        width: channels of the first block (doubled per block).

    Returns:
        The untrained model.
    """
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1),
        nn.ReLU(),
    )
    # Named children so layer names read ``features.1`` rather than ``0.1``.
    return nn.Sequential(
        OrderedDict(
            features=features,
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * width, num_classes),
        )
    )


def _with_num_classes(factory: ModelFactory, num_classes: int | None, what: str) -> nn.Module:
    if num_classes is None:
        return factory()
    try:
        parameters = inspect.signature(factory).parameters
        accepts = "num_classes" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )
    except (TypeError, ValueError):
        accepts = True  # builtins/C callables: just try
    if not accepts:
        raise BuildError(f"{what} takes no num_classes argument")
    return factory(num_classes=num_classes)


def _import_callable(spec: str) -> tuple[ModelFactory, str]:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise BuildError(f"bad model spec {spec!r}: expected package.module:callable")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise BuildError(f"model file not found: {path}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules.setdefault(path.stem, module)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except BuildError:
        raise
    except ImportError as exc:
        raise BuildError(
            f"cannot import module {module_name!r} of model spec {spec!r}: {exc}"
        ) from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise BuildError(f"module {module_name!r} has no attribute {attr!r} (model spec)")
        factory = getattr(factory, part)
    if not callable(factory):
        raise BuildError(f"{spec!r} is not callable")
    return factory, attr.split(".")[-1]  # type: ignore[return-value]


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a model spec into its kind and target.

    Args:
        spec: ``torchvision:NAME``, ``hf:DIR``, ``package.module:callable`` or a registered
            name.

    Returns:
        ``(kind, target)`` with kind ``"torchvision"``, ``"hf"`` (target: the directory),
        ``"callable"`` or ``"registered"``.

    Raises:
        BuildError: for an empty or unrecognised spec.

    Examples:
        >>> parse_spec("torchvision:resnet18")
        ('torchvision', 'resnet18')
        >>> parse_spec("hf:models/my-bert")
        ('hf', 'models/my-bert')
        >>> parse_spec("mypkg.nets:make")
        ('callable', 'mypkg.nets:make')
    """
    spec = spec.strip()
    if not spec:
        raise BuildError("empty model spec")
    for kind, example in (("torchvision", "torchvision:resnet18"), ("hf", "hf:models/my-bert")):
        if spec.startswith(f"{kind}:"):
            target = spec.split(":", 1)[1]
            if not target:
                raise BuildError(f"bad model spec '{kind}:': name a model, e.g. {example}")
            return kind, target
    if ":" in spec:
        return "callable", spec
    if spec in _REGISTRY:
        return "registered", spec
    known = ", ".join(list_models())
    raise BuildError(
        f"unknown model spec {spec!r}: use torchvision:NAME, hf:DIR, package.module:callable, "
        f"or a registered model ({known})"
    )


def model_name(spec: str) -> str:
    """A short display name for a spec (``torchvision:resnet18`` -> ``resnet18``,
    ``hf:models/my-bert`` -> ``my-bert``)."""
    kind, target = parse_spec(spec)
    if kind == "registered":
        return target
    if kind == "hf":
        return Path(target).resolve().name
    return target.rpartition(":")[2].split(".")[-1] if kind == "callable" else target


def get_model(
    spec: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build a model from a spec, optionally loading a state dict, in eval mode on CPU.

    Args:
        spec: ``torchvision:NAME``, ``hf:DIR``, ``package.module:callable`` or a registered
            name.
        weights: a file saved with ``torch.save(model.state_dict())`` (or a dict holding
            it under ``"state_dict"`` or ``"model"``); loaded strictly.
        num_classes: passed to the factory as ``num_classes=`` when given. When omitted
            and the weights differ from the default model only in the shape of the
            classifier head (a checkpoint fine-tuned to other classes), the model is
            rebuilt with the checkpoint's number of outputs.
        seed: build the architecture's random initialisation from this seed (a forked RNG:
            the caller's stream is untouched), so a model without weights is the same in
            every run and process (``build --seed``, and feature visualization rebuilding it).
            An ``hf:DIR`` model's weights always come from its directory.

    Returns:
        The model, in eval mode.

    Raises:
        BuildError: one line naming what is wrong (unknown spec, import failure, weights
            that do not fit).

    Examples:
        >>> model = get_model("simple_cnn", num_classes=4)
        >>> model.training
        False
    """
    kind, target = parse_spec(spec)
    if seed is None:
        model = _construct(spec, kind, target, num_classes)
    else:  # the same random initialisation in every run and process; the caller's RNG untouched
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = _construct(spec, kind, target, num_classes)
    if weights is None:
        return model.eval()
    state = read_state_dict(weights)
    missing, unexpected, mismatched = _fit(model, state)
    head = _head_keys(model)
    if (
        num_classes is None
        and mismatched
        and not missing
        and not unexpected
        and set(mismatched) <= head
    ):
        # A checkpoint fine-tuned to another number of classes differs only in the head:
        # rebuild the architecture with the checkpoint's number of outputs.
        outputs = int(state[sorted(head & set(mismatched))[-1]].shape[0])
        try:
            rebuilt = _construct(spec, kind, target, outputs)
        except BuildError:
            rebuilt = None
        if rebuilt is not None and not any(_fit(rebuilt, state)):
            log.info("weights %s have %d outputs: built %s with num_classes=%d",
                     weights, outputs, spec, outputs)  # fmt: skip
            model = rebuilt
    load_weights(model, weights, state=state)
    return model.eval()


def _construct(spec: str, kind: str, target: str, num_classes: int | None) -> nn.Module:
    """The model of a parsed spec, untrained (``hf:DIR``: as saved in the directory)."""
    if kind == "hf":
        return load_hf_classifier(target, num_classes)
    if kind == "torchvision":
        import torchvision

        available = torchvision.models.list_models()
        if target not in available:
            close = difflib.get_close_matches(target, available, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise BuildError(f"torchvision has no model {target!r}{hint}")
        kwargs: dict[str, Any] = {"weights": None}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        # googlenet/inception_v3 want scipy-based init and aux heads only for training.
        if target in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=True)
        model = torchvision.models.get_model(target, **kwargs)
    elif kind == "registered":
        model = _with_num_classes(_REGISTRY[target], num_classes, f"model {target!r}")
    else:
        factory, _ = _import_callable(target)
        try:
            model = _with_num_classes(factory, num_classes, f"model {target!r}")
        except BuildError:
            raise
        except Exception as exc:
            raise BuildError(f"calling {target!r} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise BuildError(f"model spec {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the last module holding parameters (the classifier head)."""
    keys = [name for name, _ in model.named_parameters()]
    if not keys:
        return set()
    prefix = keys[-1].rpartition(".")[0]
    return {k for k in model.state_dict() if k.rpartition(".")[0] == prefix}


def _fit(
    model: nn.Module, state: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape-mismatched) keys of ``state`` against ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, mismatched


def _unwrap_state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = dict(obj)
            # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
            if state and all(k.startswith("module.") for k in state):
                state = {k[len("module.") :]: v for k, v in state.items()}
            return state
    raise BuildError(f"weights file {path} does not hold a state dict of tensors")


def read_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict file (``weights_only``; unwraps ``state_dict``/``model``/DDP).

    Raises:
        BuildError: naming the file when it is missing, unreadable or not a state dict.
    """
    path = Path(weights)
    if not path.is_file():
        raise BuildError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"cannot load weights file {path}: {first}") from None
    return dict(_unwrap_state_dict(obj, path))


def load_weights(
    model: nn.Module,
    weights: str | Path,
    *,
    state: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Load a state dict strictly into ``model``.

    Args:
        model: the model to fill.
        weights: path of a ``torch.save``-d state dict (or a dict wrapping it under
            ``"state_dict"`` or ``"model"``). Loaded with ``weights_only=True``.
        state: the already-read state dict of ``weights`` (skips reading it again).

    Raises:
        BuildError: naming the file, and the first missing, unexpected or
            shape-mismatched key.

    Examples:
        >>> load_weights(model, "runs/best.pt")             # doctest: +SKIP
    """
    path = Path(weights)
    if state is None:
        state = read_state_dict(path)
    missing, unexpected, mismatched = _fit(model, state)
    expected = model.state_dict()
    problems: list[str] = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), first {missing[0]!r}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
    if mismatched:
        k = mismatched[0]
        problems.append(
            f"{len(mismatched)} shape mismatch(es), first {k!r}: file "
            f"{tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        )
    if problems:
        raise BuildError(f"weights file {path} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    log.info("loaded weights from %s (%d tensors)", path, len(state))


class LayerDescription(NamedTuple):
    """One module of a model and the shape of its output for a given input.

    The output read is :func:`output_tensor`'s (a tuple's first element). ``channels``,
    ``height`` and ``width`` are ``None`` when it is not a tensor; ``height`` and ``width``
    are ``None`` for non-spatial outputs. A 3-d output is read as a token sequence
    ``[N, T, D]`` (the layout of transformers and torchvision's ViT): ``tokens`` is ``T``
    and ``channels`` is ``D``, the hidden units; ``tokens`` is ``None`` otherwise. A 4-d
    output computed after a ``torchvision.ops.Permute`` to channels last (and before one
    back) is ``[N, H, W, C]`` (``channels_last``, torchvision's Swin): its ``channels``,
    ``height`` and ``width`` are read in that order, and every pass reads it as the
    ``[N, C, H, W]`` map it stands for (:class:`compute.capture.ChannelsLast`).
    """

    name: str
    type: str
    channels: int | None
    height: int | None
    width: int | None
    tokens: int | None = None
    channels_last: bool = False
    calls: int = 1  # forward calls in one pass (a reused module, e.g. ResNet's relu: 2)

    @property
    def spatial(self) -> bool:
        """Whether the output is a map of channels (what Summit layers need): ``[N, C, H,
        W]``, or ``[N, H, W, C]`` when ``channels_last`` (read channels first)."""
        return self.height is not None and self.width is not None

    @property
    def token(self) -> bool:
        """Whether the output is a token sequence ``[N, T, D]``."""
        return self.tokens is not None


class ModelInput(Protocol):
    """One dummy input a model runs on: the probe of layer listings and output checks.

    :class:`ImageInput` for image classifiers, :class:`compute.hf.TextInput` for
    ``hf:DIR`` text classifiers; :func:`model_input` picks the model's.

    Attributes:
        maps: whether a 4-d output is an image map ``[N, C, H, W]`` (a text model's 4-d
            outputs, attention weights, are not).
        tokens: the probe's sequence length: a token layer of another length cannot be
            masked like the input (``None``: no padding to mask, any length will do).
    """

    @property
    def maps(self) -> bool: ...

    @property
    def tokens(self) -> int | None: ...

    def example(self, device: torch.device) -> Any:
        """A batch of one input on ``device``, as the model's ``forward`` takes it."""
        ...

    def describe(self) -> str:
        """How a listing's header names the input, e.g. ``input 3x224x224``."""
        ...


class ImageInput(NamedTuple):
    """An all-zero image of ``channels × height × width`` (a :class:`ModelInput`).

    Examples:
        >>> ImageInput(3, 32, 32).describe()
        'input 3x32x32'
    """

    channels: int
    height: int
    width: int

    @property
    def maps(self) -> bool:
        """Image models' 4-d outputs are maps."""
        return True

    @property
    def tokens(self) -> int | None:
        """An image has no padding: token layers (ViT) of any length are usable."""
        return None

    def example(self, device: torch.device) -> Tensor:
        """One zero image ``[1, C, H, W]`` on ``device``."""
        return torch.zeros(1, self.channels, self.height, self.width, device=device)

    def describe(self) -> str:
        """``input CxHxW``."""
        return f"input {self.channels}x{self.height}x{self.width}"


def _as_input(probe: ModelInput | tuple[int, int, int]) -> ModelInput:
    """A ``(channels, height, width)`` tuple as an :class:`ImageInput`; inputs unchanged."""
    if isinstance(probe, ImageInput):
        return probe
    if isinstance(probe, tuple):
        return ImageInput(*probe)
    return probe


def model_input(model: nn.Module, *, image_size: int = 224, tokens: int = 8) -> ModelInput:
    """The probe input of ``model``: text for an ``hf:DIR`` model, else an image.

    Args:
        model: the model.
        image_size: height and width of an image probe (its channels: the model's first
            convolution's, :func:`infer_in_channels`).
        tokens: the sequence length of a text probe.

    Examples:
        >>> model_input(get_model("simple_cnn"), image_size=32)
        ImageInput(channels=3, height=32, width=32)
    """
    if isinstance(model, HFClassifier):
        return model.text_input(tokens)
    return ImageInput(infer_in_channels(model), image_size, image_size)


def output_tensor(output: Any) -> Tensor | None:
    """The tensor a layer's output stands for: itself, the first element of a tuple or
    list (Hugging Face blocks, ``nn.MultiheadAttention``), or the first value of a mapping
    (Hugging Face ``ModelOutput``); ``None`` when there is none.

    Examples:
        >>> output_tensor((torch.zeros(2, 3), None)).shape
        torch.Size([2, 3])
        >>> output_tensor("text") is None
        True
    """
    if isinstance(output, Mapping):
        output = next(iter(output.values()), None)
    elif isinstance(output, (tuple, list)):
        output = output[0] if output else None
    return output if isinstance(output, torch.Tensor) else None


def infer_in_channels(model: nn.Module, default: int = 3) -> int:
    """Input channels of the model's first convolution (``default`` if it has none)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return int(module.in_channels)
    return default


def _probe(model: nn.Module, input_size: ModelInput | tuple[int, int, int]) -> Any:
    """The model's output for one dummy input (an all-zero image of ``input_size``, or a
    :class:`ModelInput`'s example) in eval mode, without grad, on the model's device; the
    model's training mode is restored afterwards.

    Raises:
        BuildError: if the model cannot run on that input (naming the first line of the error).
    """
    probe = _as_input(input_size)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            return model(probe.example(device))
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(probe, ImageInput):
            what = f"input of size {tuple(probe)}"
        else:
            what = f"its probe ({probe.describe()})"
        raise BuildError(f"the model cannot run on {what}: {message}") from None
    finally:
        model.train(was_training)


def _shape(output: Any) -> tuple[int | None, int | None, int | None, int | None]:
    """``(channels, height, width, tokens)`` of a layer's output (see LayerDescription)."""
    tensor = output_tensor(output)
    if tensor is None or tensor.dim() < 2:
        return None, None, None, None
    if tensor.dim() == 4:
        return int(tensor.shape[1]), int(tensor.shape[2]), int(tensor.shape[3]), None
    if tensor.dim() == 3:  # [N, T, D]: a token sequence of D-wide vectors
        return int(tensor.shape[2]), None, None, int(tensor.shape[1])
    return int(tensor.shape[1]), None, None, None


def describe_layers(
    model: nn.Module, input_size: ModelInput | tuple[int, int, int]
) -> list[LayerDescription]:
    """Output shape of every named submodule, from one dummy forward pass.

    Args:
        model: the model (its train/eval mode is restored afterwards).
        input_size: ``(channels, height, width)`` of one input image, or any
            :class:`ModelInput` (:func:`model_input`: text for ``hf:DIR`` models).

    Returns:
        One :class:`LayerDescription` per named submodule that ran, in the order their
        (first) forward calls began (a container before its children, although a
        container's output comes after theirs; a Swin ``PatchMerging``'s ``norm`` before
        its ``reduction``, which is registered first), with the shape of its (last) output
        for a batch of one dummy input and how many times it ran.

    Raises:
        BuildError: if the forward pass fails (e.g. an input size the model cannot take).

    Examples:
        >>> rows = describe_layers(get_model("simple_cnn"), (3, 32, 32))
        >>> row = rows[2]
        >>> row.name, row.type, row.channels, (row.height, row.width), row.tokens
        ('features.1', 'ReLU', 16, (32, 32), None)
    """
    shapes: dict[str, tuple[int | None, int | None, int | None, int | None]] = {}
    last: dict[str, bool] = {}
    started: dict[str, int] = {}  # name -> rank of its first forward call
    calls: dict[str, int] = {}
    names = [(name, module) for name, module in model.named_modules() if name]
    with HookSet(model) as hooks:  # with the model: it follows channels-last regions

        def make_start(name: str) -> Callable[..., None]:
            def start(_module: nn.Module, _args: Any, _kwargs: Any) -> None:
                started.setdefault(name, len(started))
                calls[name] = calls.get(name, 0) + 1

            return start

        def make_hook(name: str) -> Callable[..., None]:
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                shape = _shape(output)
                nhwc = hooks.channels_last(output)
                if nhwc:  # [N, H, W, C]
                    shape = (shape[2], shape[0], shape[1], None)
                shapes[name] = shape
                last[name] = nhwc

            return hook

        for name, module in names:
            hooks.on_forward(module, make_hook(name))
            hooks.adopt(module.register_forward_pre_hook(make_start(name), with_kwargs=True))
        _probe(model, input_size)
    ran = sorted((started[name], name, module) for name, module in names if name in shapes)
    return [
        LayerDescription(name, type(module).__name__, *shapes[name], last[name], calls[name])
        for _, name, module in ran
    ]


def count_outputs(model: nn.Module, input_size: ModelInput | tuple[int, int, int]) -> int:
    """Number of model outputs (logits) for one input of ``input_size`` (or a
    :class:`ModelInput`'s example).

    Raises:
        BuildError: if the model does not return ``[N, outputs]`` logits.
    """
    out = _probe(model, input_size)
    if hasattr(out, "logits"):  # torchvision named-tuple outputs
        out = out.logits
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise BuildError("the model must return logits of shape [batch, classes]")
    return int(out.shape[1])


def num_parameters(model: nn.Module) -> int:
    """Total number of parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))
