"""How consecutive chosen layers connect: exactly one ``nn.Conv2d`` and channel-wise ops.

Summit's influence of input channel ``j`` on output channel ``i`` is defined through the
one convolution between two chosen layers. :func:`find_connections` traces the model with
``torch.fx`` and walks back from each chosen layer's output to the previous chosen layer,
accepting only single-input channel-wise operations plus exactly one ungrouped
convolution. Anything else (residual additions, concatenations, two convolutions, grouped
convolutions, linear layers, flattening) is refused with a one-line :class:`BuildError`
before any long work starts.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from compute.capture import resolve_modules
from compute.errors import BuildError

logger = logging.getLogger(__name__)

#: Modules that act on each channel separately (or not at all) and keep channel identity.
CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)

#: Functional equivalents (``call_function`` nodes).
CHANNELWISE_FUNCTIONS: frozenset[Any] = frozenset(
    {
        F.relu,
        F.relu_,
        torch.relu,
        torch.relu_,
        F.relu6,
        F.leaky_relu,
        F.gelu,
        F.silu,
        F.elu,
        F.hardswish,
        torch.sigmoid,
        torch.tanh,
        F.max_pool2d,
        F.avg_pool2d,
        F.adaptive_avg_pool2d,
        F.adaptive_max_pool2d,
        F.dropout,
        F.dropout2d,
    }
)

#: Tensor methods (``call_method`` nodes) that are channel-wise.
CHANNELWISE_METHODS: frozenset[str] = frozenset(
    {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
)


@dataclass(frozen=True)
class Connection:
    """The single convolution between two consecutive chosen layers.

    Attributes:
        source: the earlier chosen layer (its channels are the conv's input channels).
        target: the later chosen layer (its channels are the conv's output channels).
        conv: module name of the ``nn.Conv2d``; its forward input is what influence uses.
        in_channels: the conv's input channels.
        out_channels: the conv's output channels.
    """

    source: str
    target: str
    conv: str
    in_channels: int
    out_channels: int


class _RecordingTracer(fx.Tracer):
    """An fx tracer that remembers the output node(s) of the chosen modules."""

    def __init__(self, wanted: set[str]) -> None:
        super().__init__()
        self.wanted = wanted
        self.outputs: dict[str, list[Any]] = {name: [] for name in wanted}

    def call_module(
        self,
        m: nn.Module,
        forward: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        try:
            name = self.path_of_module(m)
        except NameError:
            return out
        if name in self.wanted:
            self.outputs[name].append(out.node if isinstance(out, fx.Proxy) else None)
        return out


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """Short human description of an fx node for error messages."""
    if node.op == "call_module":
        module = modules.get(str(node.target))
        kind = type(module).__name__ if module is not None else "module"
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            return f"grouped convolution {node.target!r} (groups={module.groups})"
        return f"{kind} {node.target!r}"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "placeholder":
        return "the model input"
    return f"{node.op} {node.target}"


def _contains_node(value: Any) -> bool:
    found = False

    def visit(arg: Any) -> Any:
        nonlocal found
        found = True
        return arg

    fx.node.map_arg(value, visit)
    return found


def _single_input(node: fx.Node) -> fx.Node | None:
    """The node's only tensor input, or ``None`` if it reads several (or none)."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    if _contains_node(tuple(node.args[1:])) or _contains_node(dict(node.kwargs)):
        return None
    return node.args[0]


def _is_channelwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), CHANNELWISE_MODULES)
    if node.op == "call_function":
        return node.target in CHANNELWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in CHANNELWISE_METHODS
    return False


def _walk(
    source: str,
    target: str,
    start: fx.Node,
    stop: fx.Node,
    modules: dict[str, nn.Module],
) -> Connection:
    """Walk back from ``start`` (target's output) to ``stop`` (source's output)."""

    def fail(found: str) -> BuildError:
        return BuildError(
            f"layers {source!r} -> {target!r} are not connected by a single convolution "
            f"(found {found}); branching/residual architectures are not supported yet"
        )

    convs: list[nn.Conv2d] = []
    conv_names: list[str] = []
    node = start
    while node is not stop:
        if node.op == "placeholder":
            raise fail(f"the model input before reaching {source!r}")
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise fail(_describe(node, modules))
            if module.padding_mode != "zeros":
                raise fail(f"convolution {node.target!r} with padding_mode={module.padding_mode!r}")
            if isinstance(module.padding, str):
                raise fail(f"convolution {node.target!r} with padding={module.padding!r}")
            convs.append(module)
            conv_names.append(str(node.target))
        elif not _is_channelwise(node, modules):
            raise fail(_describe(node, modules))
        previous = _single_input(node)
        if previous is None:
            raise fail(f"{_describe(node, modules)} with several inputs")
        node = previous
    if not convs:
        raise fail("no convolution")
    if len(convs) > 1:
        names = ", ".join(repr(name) for name in reversed(conv_names))
        raise fail(f"{len(convs)} convolutions: {names}")
    conv = convs[0]
    return Connection(source, target, conv_names[0], conv.in_channels, conv.out_channels)


def find_connections(model: nn.Module, layers: Sequence[str]) -> list[Connection | None]:
    """The convolution connecting each chosen layer to the previous one.

    Args:
        model: the model (traced with ``torch.fx``; nothing is run).
        layers: chosen module names in input-to-output order. A layer may be a leaf module
            (conv, ReLU, BatchNorm, ...) or a container; a container's output is its last node.

    Returns:
        One entry per layer: ``None`` for the first, else the :class:`Connection` from the
        previous layer.

    Raises:
        BuildError: unknown or repeated layer, untraceable model, a layer called more than
            once, or a pair not connected by exactly one ungrouped ``nn.Conv2d`` through
            channel-wise operations.
    """
    layers = list(layers)
    resolve_modules(model, layers)
    if len(layers) <= 1:
        return [None] * len(layers)
    tracer = _RecordingTracer(set(layers))
    try:
        tracer.trace(model)
    except Exception as exc:  # fx raises many kinds; the user needs one line
        detail = " ".join(str(exc).split())[:200]
        raise BuildError(
            f"cannot trace the model with torch.fx to check how the chosen layers connect "
            f"({type(exc).__name__}: {detail})"
        ) from None
    modules = dict(model.named_modules())
    outputs: dict[str, fx.Node] = {}
    for name in layers:
        nodes = tracer.outputs[name]
        if not nodes:
            raise BuildError(f"layer {name!r} is never called in the model's forward pass")
        if len(nodes) > 1:
            raise BuildError(f"layer {name!r} is called {len(nodes)} times in the forward pass")
        if nodes[0] is None:
            raise BuildError(f"layer {name!r} does not output a single tensor")
        outputs[name] = nodes[0]
    result: list[Connection | None] = [None]
    for source, target in itertools.pairwise(layers):
        connection = _walk(source, target, outputs[target], outputs[source], modules)
        logger.debug("layers %r -> %r connected by %r", source, target, connection.conv)
        result.append(connection)
    return result
