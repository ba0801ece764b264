"""How consecutive chosen layers connect, found by tracing the model with ``torch.fx``.

Summit's influence of input channel ``j`` on output channel ``i`` needs to know what lies
between two chosen layers. :func:`find_connections` traces the model and walks back from each
chosen layer's output to the previous chosen layer. Each pair gets one of three kinds:

- :class:`Connection` (``"conv"``): exactly one ungrouped ``nn.Conv2d`` through single-input
  channel-wise operations: Summit's exact per-pair influence.
- :class:`InceptionConnection` (``"inception"``): the later layer is a channel concatenation
  of branches that each reach the earlier layer through one convolution (1×1 and pool
  branches) or two (a bottleneck then a 3×3/5×5 convolution): the original's rule, exact
  influence per convolution and the widest path ``max_b min(I[i,b], I[b,j])`` through a
  bottleneck (:mod:`compute.summit.inception`).
- :class:`GradientConnection` (``"gradient"``): anything else through which the later layer
  depends on the earlier one (residual additions, depthwise-separable blocks, several
  convolutions, concatenations): gradient × activation attribution
  (:mod:`compute.summit.gradient`).

Untraceable models, unknown or repeated layers, layers called more than once, a later
layer that does not depend on the earlier one, and two layers with only channel-wise
operations between them (no convolution) are refused with a one-line
:class:`BuildError` before any long work starts.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
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

    @property
    def kind(self) -> str:
        """``"conv"``: exact per-pair influence through :attr:`conv`."""
        return "conv"


@dataclass(frozen=True)
class InceptionBranch:
    """One branch of an Inception block: one convolution, or a bottleneck then a convolution.

    Attributes:
        conv: the branch's last convolution; its output channels are target channels
            ``offset .. offset + channels - 1``.
        offset: the first target channel this branch writes.
        channels: the branch's output channels (``conv``'s ``out_channels``).
        bottleneck: the convolution reading the source in a two-convolution branch (whose
            output channels are ``conv``'s input channels), else ``None``.
        bottleneck_channels: that bottleneck's output channels (0 without one).
    """

    conv: str
    offset: int
    channels: int
    bottleneck: str | None = None
    bottleneck_channels: int = 0


@dataclass(frozen=True)
class InceptionConnection:
    """An Inception block: the target is a concatenation of branches from the source.

    Attributes:
        source: the earlier chosen layer.
        target: the later chosen layer (the concatenation, or channel-wise ops after it).
        branches: the branches in concatenation order.
        in_channels: the source's channels (every branch's first convolution reads them).
        out_channels: the target's channels (sum over the branches).
    """

    source: str
    target: str
    branches: tuple[InceptionBranch, ...]
    in_channels: int
    out_channels: int

    @property
    def kind(self) -> str:
        """``"inception"``: exact influence per branch, widest path through bottlenecks."""
        return "inception"


@dataclass(frozen=True)
class GradientConnection:
    """Any other dependence of the target on the source: gradient × activation attribution.

    Attributes:
        source: the earlier chosen layer.
        target: the later chosen layer.
        reason: why the pair is not a single convolution (for logs and ``layers`` listings).
    """

    source: str
    target: str
    reason: str

    @property
    def kind(self) -> str:
        """``"gradient"``: gradient × activation attribution from target to source."""
        return "gradient"


#: Any of the three kinds of connection.
AnyConnection = Connection | InceptionConnection | GradientConnection


class _NotSingleConv(Exception):
    """Internal: the walk found something other than one convolution (``found`` says what)."""

    def __init__(self, found: str) -> None:
        super().__init__(found)
        self.found = found


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


def _is_spatial_pad(node: fx.Node) -> bool:
    """``F.pad`` of the last two (spatial) dimensions only, in constant mode."""
    pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    return isinstance(pad, (tuple, list)) and len(pad) <= 4 and mode in ("constant", None)


def _is_channelwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_function" and node.target is F.pad:
        return _is_spatial_pad(node)
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), CHANNELWISE_MODULES)
    if node.op == "call_function":
        return node.target in CHANNELWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in CHANNELWISE_METHODS
    return False


def _chain(start: fx.Node, stop: fx.Node, modules: dict[str, nn.Module]) -> list[str]:
    """Convolutions (input to output order) on the single-input path from ``stop`` to ``start``.

    Raises:
        _NotSingleConv: the path holds something other than channel-wise operations and
            ungrouped zero-padded convolutions, or a node with several inputs.
    """
    names: list[str] = []
    node = start
    while node is not stop:
        if node.op == "placeholder":
            raise _NotSingleConv("the model input")
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise _NotSingleConv(_describe(node, modules))
            if module.padding_mode != "zeros":
                raise _NotSingleConv(
                    f"convolution {node.target!r} with padding_mode={module.padding_mode!r}"
                )
            if isinstance(module.padding, str):
                raise _NotSingleConv(f"convolution {node.target!r} with padding={module.padding!r}")
            names.append(str(node.target))
        elif not _is_channelwise(node, modules):
            raise _NotSingleConv(_describe(node, modules))
        previous = _single_input(node)
        if previous is None:
            raise _NotSingleConv(f"{_describe(node, modules)} with several inputs")
        node = previous
    return names[::-1]


def _walk(
    source: str,
    target: str,
    start: fx.Node,
    stop: fx.Node,
    modules: dict[str, nn.Module],
) -> Connection:
    """The single convolution from ``stop`` (source's output) to ``start`` (target's output).

    Raises:
        _NotSingleConv: anything else lies between them.
    """
    names = _chain(start, stop, modules)
    if not names:
        raise _NotSingleConv("no convolution")
    if len(names) > 1:
        listed = ", ".join(repr(name) for name in names)
        raise _NotSingleConv(f"{len(names)} convolutions: {listed}")
    conv = modules[names[0]]
    assert isinstance(conv, nn.Conv2d)
    return Connection(source, target, names[0], conv.in_channels, conv.out_channels)


def _is_channel_cat(node: fx.Node) -> bool:
    """``torch.cat(list_of_nodes, dim=1)`` (positional or keyword ``dim``)."""
    if node.op != "call_function" or node.target is not torch.cat or not node.args:
        return False
    parts = node.args[0]
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, fx.Node) for p in parts):
        return False
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return dim == 1


def _inception(
    source: str,
    target: str,
    start: fx.Node,
    stop: fx.Node,
    modules: dict[str, nn.Module],
) -> InceptionConnection | None:
    """The Inception block from ``stop`` to ``start``, or ``None`` if it is not one.

    The target must be a channel concatenation (possibly followed by channel-wise ops) of at
    least two branches, each reaching the source through channel-wise ops and one or two
    ungrouped convolutions that all read the same channels.
    """
    node = start
    while not _is_channel_cat(node):
        if node is stop or not _is_channelwise(node, modules):
            return None
        previous = _single_input(node)
        if previous is None:
            return None
        node = previous
    parts = node.args[0]
    assert isinstance(parts, (list, tuple))
    if len(parts) < 2:
        return None
    branches: list[InceptionBranch] = []
    offset = 0
    in_channels: set[int] = set()
    for part in parts:
        assert isinstance(part, fx.Node)
        try:
            names = _chain(part, stop, modules)
        except _NotSingleConv:
            return None
        if len(names) not in (1, 2):
            return None
        convs = [modules[name] for name in names]
        assert all(isinstance(c, nn.Conv2d) for c in convs)
        last, first = convs[-1], convs[0]
        assert isinstance(last, nn.Conv2d) and isinstance(first, nn.Conv2d)
        in_channels.add(first.in_channels)
        if len(names) == 2:
            if first.out_channels != last.in_channels:
                return None
            branch = InceptionBranch(
                names[1], offset, last.out_channels, names[0], first.out_channels
            )
        else:
            branch = InceptionBranch(names[0], offset, last.out_channels)
        branches.append(branch)
        offset += last.out_channels
    if len(in_channels) != 1:
        return None
    return InceptionConnection(source, target, tuple(branches), in_channels.pop(), offset)


def _depends_on(start: fx.Node, stop: fx.Node) -> bool:
    """Whether ``start`` is computed from ``stop`` (``stop`` is an ancestor or ``start``)."""
    seen: set[fx.Node] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        if node is stop:
            return True
        if node in seen:
            continue
        seen.add(node)
        todo.extend(node.all_input_nodes)
    return False


def classify(
    source: str,
    target: str,
    start: fx.Node,
    stop: fx.Node,
    modules: dict[str, nn.Module],
) -> AnyConnection:
    """The connection from ``stop`` (the source's output node) to ``start`` (the target's).

    Args:
        source: the earlier chosen layer's name.
        target: the later chosen layer's name.
        start: the target's output node in the traced graph.
        stop: the source's output node.
        modules: the model's named modules.

    Returns:
        A :class:`Connection` when one convolution joins them, else an
        :class:`InceptionConnection` when they form an Inception block, else a
        :class:`GradientConnection`.

    Raises:
        BuildError: the target does not depend on the source, or only channel-wise
            operations lie between them.
    """
    try:
        return _walk(source, target, start, stop, modules)
    except _NotSingleConv as exc:
        reason = exc.found
    if reason == "no convolution":
        raise BuildError(
            f"layers {source!r} -> {target!r} are not connected by a single convolution "
            "(found no convolution: only channel-wise operations lie between them, so each "
            "channel influences only itself; choose layers further apart)"
        )
    block = _inception(source, target, start, stop, modules)
    if block is not None:
        return block
    if not _depends_on(start, stop):
        raise BuildError(
            f"layers {source!r} -> {target!r} are not connected: {target!r} does not depend on "
            f"{source!r} (choose layers in input-to-output order along one path)"
        )
    return GradientConnection(source, target, reason)


_FORWARD_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
)


@contextlib.contextmanager
def _hooks_silenced(model: nn.Module) -> Iterator[None]:
    """Trace the model itself, not whoever is listening to it.

    torch.fx runs a non-leaf module's forward hooks with ``Proxy`` outputs, so a pass's own
    hooks (which expect tensors) broke the check when it ran while a pass was hooked (rank
    0 merging a torchrun build). The hooks are set aside for the trace and put back after.
    """
    saved: list[tuple[nn.Module, str, Any]] = []
    try:
        for module in model.modules():
            for attr in _FORWARD_HOOK_DICTS:
                hooks = getattr(module, attr, None)
                if hooks:
                    saved.append((module, attr, hooks))
                    setattr(module, attr, OrderedDict())
        yield
    finally:
        for module, attr, hooks in saved:
            setattr(module, attr, hooks)


def find_connections(model: nn.Module, layers: Sequence[str]) -> list[AnyConnection | None]:
    """How each chosen layer connects to the previous one.

    Args:
        model: the model (traced with ``torch.fx``; nothing is run).
        layers: chosen module names in input-to-output order. A layer may be a leaf module
            (conv, ReLU, BatchNorm, ...) or a container; a container's output is its last node.

    Returns:
        One entry per layer: ``None`` for the first, else the connection from the previous
        layer: a :class:`Connection` (one convolution), an :class:`InceptionConnection`
        or a :class:`GradientConnection` (see :func:`classify`).

    Raises:
        BuildError: unknown or repeated layer, untraceable model, a layer called more than
            once or not at all, a layer that does not depend on the previous one, or only
            channel-wise operations between two layers.

    Examples:
        >>> import torchvision                                   # doctest: +SKIP
        >>> model = torchvision.models.resnet18(weights=None)    # doctest: +SKIP
        >>> [c.kind for c in find_connections(model, ["layer1", "layer2"])[1:]]  # doctest: +SKIP
        ['gradient']
    """
    layers = list(layers)
    resolve_modules(model, layers)
    if len(layers) <= 1:
        return [None] * len(layers)
    if getattr(model, "gradient_connections_only", False):  # e.g. a Hugging Face model
        reason = f"{type(model).__name__}: not traced, attributed by gradient"
        pairs = itertools.pairwise(layers)
        return [None, *(GradientConnection(s, t, reason) for s, t in pairs)]
    tracer = _RecordingTracer(set(layers))
    try:
        with _hooks_silenced(model):
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
    result: list[AnyConnection | None] = [None]
    for source, target in itertools.pairwise(layers):
        connection = classify(source, target, outputs[target], outputs[source], modules)
        logger.debug("layers %r -> %r: %s", source, target, connection)
        result.append(connection)
    return result


def connection_kinds(model: nn.Module, layers: Sequence[str]) -> list[str | None]:
    """The kind of connection each layer would get from the one before it (for listings).

    Unlike :func:`find_connections` this never raises for a pair: a pair that would be
    refused is reported as ``"none"`` (e.g. nested containers, a layer called twice).

    Args:
        model: the model (traced once with ``torch.fx``; nothing is run).
        layers: module names in the order listed.

    Returns:
        ``None`` for the first layer, then ``"conv"``, ``"inception"``, ``"gradient"`` or
        ``"none"`` per layer; all ``"none"`` when the model cannot be traced.

    Examples:
        >>> connection_kinds(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1)),
        ...                  ["0", "1", "2"])
        [None, 'none', 'conv']
    """
    layers = list(layers)
    if len(layers) <= 1:
        return [None] * len(layers)
    tracer = _RecordingTracer(set(layers))
    try:
        tracer.trace(model)
    except Exception:  # untraceable: nothing can be said about any pair
        return [None] + ["none"] * (len(layers) - 1)
    modules = dict(model.named_modules())
    kinds: list[str | None] = [None]
    for source, target in itertools.pairwise(layers):
        found, before = tracer.outputs.get(target, []), tracer.outputs.get(source, [])
        if len(found) != 1 or len(before) != 1 or found[0] is None or before[0] is None:
            kinds.append("none")
            continue
        try:
            kinds.append(classify(source, target, found[0], before[0], modules).kind)
        except BuildError:
            kinds.append("none")
    return kinds
