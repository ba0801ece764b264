"""Forward hooks on named modules: find modules by name and record what flows through them.

The Summit pass reduces every captured tensor inside the hook itself (so later in-place
operations such as ``ReLU(inplace=True)`` cannot alter what was seen, and nothing large is
kept). :class:`TensorRecorder` keeps full copies instead; tests and small tools use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self

import torch
from torch import Tensor, nn

from compute.errors import BuildError

logger = logging.getLogger(__name__)

#: How many module names an "unknown layer" message lists before it abbreviates.
_MAX_LISTED = 40


def list_layers(model: nn.Module) -> list[tuple[str, str]]:
    """Every named submodule of ``model`` with its type name, in definition order.

    Args:
        model: any ``nn.Module``.

    Returns:
        ``[(name, type_name), ...]`` without the root module (whose name is ``""``).
    """
    return [(name, type(m).__name__) for name, m in model.named_modules() if name]


def _available(model: nn.Module) -> str:
    names = [name for name, _ in list_layers(model)]
    if len(names) <= _MAX_LISTED:
        return ", ".join(names)
    head = ", ".join(names[: _MAX_LISTED // 2])
    tail = ", ".join(names[-_MAX_LISTED // 4 :])
    return f"{head}, ... ({len(names)} modules in all) ..., {tail}"


def resolve_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The submodules called ``names``, checked.

    Args:
        model: the model.
        names: module names as in ``model.named_modules()`` (e.g. ``"features.3"``).

    Returns:
        The modules, in the order of ``names``.

    Raises:
        BuildError: a name is unknown, empty or repeated (one line, listing what exists).
    """
    modules = dict(model.named_modules())
    seen: set[str] = set()
    out: list[nn.Module] = []
    for name in names:
        if name in seen:
            raise BuildError(f"layer {name!r} is chosen twice")
        seen.add(name)
        if not name or name not in modules:
            raise BuildError(f"unknown layer {name!r}; available modules: {_available(model)}")
        out.append(modules[name])
    return out


class ClosingContext:
    """Base of objects used as ``with obj:`` whose exit (error or not) calls :meth:`close`."""

    def close(self) -> None:
        """Release what the object holds (subclasses; idempotent)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: ``torchvision.ops.misc.Permute`` dims that move channels last, and back.
TO_CHANNELS_LAST = (0, 2, 3, 1)
TO_CHANNELS_FIRST = (0, 3, 1, 2)
_LAYOUT_DIMS = (TO_CHANNELS_LAST, TO_CHANNELS_FIRST)


def first_tensor(output: object) -> object:
    """A module's output as a layer's: the first element of a tuple (Hugging Face blocks
    return ``(hidden_states, ...)``), else the output itself."""
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    return output


def replace_first(output: object, tensor: Tensor) -> object:
    """``output`` with its layer tensor (:func:`first_tensor`) replaced by ``tensor``."""
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (tensor, *output[1:])
    if isinstance(output, list) and output and isinstance(output[0], Tensor):
        return [tensor, *output[1:]]
    return tensor


def permute_dims(module: nn.Module) -> tuple[int, ...] | None:
    """The dims of a ``torchvision.ops.misc.Permute`` module, else ``None``."""
    if type(module).__name__ != "Permute":
        return None
    return tuple(getattr(module, "dims", ()))


class ChannelsLast:
    """Which outputs of a model's forward are channels-last maps ``[N, H, W, C]``.

    torchvision's Swin (and the inside of a ConvNeXt block) move channels last with a
    ``Permute`` module and back with another; hooks fire in execution order, a container
    after its children, so at the moment a module's forward hook fires this says its
    output's layout. Hooks on the ``Permute`` modules are prepended, so they run before
    any hook registered on the same module. A ``.permute`` call inside some forward is not
    seen: such a model's layers look channels first.

    Args:
        model: the model whose forward is followed.
        hooks: the hook set that owns the tracking hooks (removed with it).
    """

    def __init__(self, model: nn.Module, hooks: HookSet) -> None:
        self.active = False
        permutes = [m for m in model.modules() if permute_dims(m) in _LAYOUT_DIMS]
        for module in permutes:
            hooks.adopt(module.register_forward_hook(self._toggle, prepend=True))
        if permutes:  # a forward that failed halfway must not leave the flag set
            hooks.adopt(model.register_forward_pre_hook(self._reset, prepend=True))

    def _toggle(self, module: nn.Module, _inputs: object, _output: object) -> None:
        self.active = permute_dims(module) == TO_CHANNELS_LAST

    def _reset(self, _module: nn.Module, _inputs: object) -> None:
        self.active = False

    def is_last(self, tensor: object) -> bool:
        """Whether ``tensor``, seen now, is a channels-last map ``[N, H, W, C]``."""
        return self.active and isinstance(tensor, Tensor) and tensor.dim() == 4


class HookSet(ClosingContext):
    """Forward hooks that call a function with a module's output or first input.

    Use as a context manager (or call :meth:`close`) so hooks never outlive their use.

    Args:
        model: with a model, hooks see every layer in Network Atlas's layout: the layer
            tensor of a tuple output (:func:`first_tensor`) and channels-last maps as
            ``[N, C, H, W]`` views (:class:`ChannelsLast`), and a replacement returned by
            an :meth:`on_forward` hook goes back in the module's own layout. Without one,
            hooks see outputs as they are.
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._layout = None if model is None else ChannelsLast(model, self)

    def channels_last(self, output: object) -> bool:
        """Whether ``output``'s layer tensor is a channels-last map ``[N, H, W, C]`` (with
        a model; inside a hook of this set, where the layout is the forward's now)."""
        return self._layout is not None and self._layout.is_last(first_tensor(output))

    def layer_tensor(self, output: object) -> object:
        """``output`` as its layer's tensor: :func:`first_tensor`, channels first (a
        channels-last map as a ``[N, C, H, W]`` view; inside a hook of this set)."""
        tensor = first_tensor(output)
        if self.channels_last(tensor):
            assert isinstance(tensor, Tensor)
            return tensor.permute(TO_CHANNELS_FIRST)
        return tensor

    def replace_layer_tensor(self, output: object, tensor: Tensor) -> object:
        """``output`` with its layer tensor replaced by ``tensor`` (given channels first,
        as :meth:`layer_tensor` gave it; returned in the module's own layout)."""
        if self.channels_last(output):
            tensor = tensor.permute(TO_CHANNELS_LAST).contiguous()
        return replace_first(output, tensor)

    def on_output(self, module: nn.Module, fn: Callable[[Tensor], None]) -> None:
        """Call ``fn(output)`` after every forward of ``module`` (with a model: the layer
        tensor, channels first)."""

        def hook(_module: nn.Module, _inputs: tuple[object, ...], output: Tensor) -> None:
            fn(output if self._layout is None else self.layer_tensor(output))  # type: ignore[arg-type]

        self._handles.append(module.register_forward_hook(hook))

    def on_input(self, module: nn.Module, fn: Callable[[Tensor], None]) -> None:
        """Call ``fn(first_input)`` before every forward of ``module`` (its actual input;
        with a model, channels first); a call with keyword arguments only is skipped."""

        def hook(_module: nn.Module, inputs: tuple[object, ...]) -> None:
            if not inputs:  # called with keyword arguments only: no first input to see
                return
            first = inputs[0]
            fn(first if self._layout is None else self.layer_tensor(first))  # type: ignore[arg-type]

        self._handles.append(module.register_forward_pre_hook(hook))

    def on_forward(self, module: nn.Module, hook: Callable[..., object]) -> None:
        """Register ``hook(module, inputs, output)`` after every forward of ``module``; what
        it returns (not ``None``) replaces the module's output, as in PyTorch. The hook
        reads and replaces the layer tensor with :meth:`layer_tensor` and
        :meth:`replace_layer_tensor`."""
        self._handles.append(module.register_forward_hook(hook))

    def adopt(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        """Remove ``handle`` (any removable hook: an optimizer's step hook, a tensor's
        gradient hook) with the others."""
        self._handles.append(handle)

    def close(self) -> None:
        """Remove every hook (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class BatchRider(Protocol):
    """A pass that rides on the one forward of each batch of a build.

    The build's stream runs the model once per batch (Summit's pass drives it); a rider
    sees the batch's labels and dataset indices first (:meth:`begin_batch`), then what its
    hooks capture during that forward. Its state is a dict of tensors that merges
    exactly: a resumed checkpoint and the other ranks' shares are merged into it. The
    TopoAct sample (:class:`compute.topology.sample.ActivationSampler`) is one; per-image
    records are the next.

    Attributes:
        name: the rider's key in checkpoints and merged states (unique per build).
    """

    name: str

    def attach(self, hooks: HookSet, modules: Mapping[str, nn.Module]) -> None:
        """Register the rider's hooks on the chosen layers' ``modules`` (by name)."""
        ...

    def begin_batch(
        self, labels: Tensor, indices: Tensor, token_mask: Tensor | None = None
    ) -> None:
        """The next forward's labels ``int[B]`` and dataset indices ``int[B]`` (and a text
        batch's ``attention_mask`` ``[B, T]``: its real tokens)."""
        ...

    def state_dict(self) -> dict[str, Tensor]:
        """Everything the rider holds, as tensors (checkpoints, rank merges)."""
        ...

    def merge_state_dict(self, state: Mapping[str, Tensor]) -> object:
        """Merge a state of the same kind (a checkpoint's or another rank's) into this one."""
        ...

    def empty_copy(self) -> BatchRider:
        """A rider with the same settings and nothing aggregated (to merge ranks into)."""
        ...


def rider_states(riders: Sequence[BatchRider]) -> dict[str, Tensor] | None:
    """The riders' states as one dict, each key prefixed by its rider's name (``None``
    without riders).

    Examples:
        >>> class Count:
        ...     name = "count"
        ...     def state_dict(self): return {"n": torch.tensor(3)}
        >>> rider_states([Count()])
        {'count/n': tensor(3)}
    """
    if not riders:
        return None
    return {f"{r.name}/{key}": value for r in riders for key, value in r.state_dict().items()}


def merge_rider_states(riders: Sequence[BatchRider], state: Mapping[str, Tensor]) -> None:
    """Merge a :func:`rider_states` dict into ``riders``, each its own keys.

    Raises:
        BuildError: the state holds a rider this build does not have (a checkpoint of
            another build would be refused by its fingerprint first).
    """
    by_name = {r.name: r for r in riders}
    parts: dict[str, dict[str, Tensor]] = {name: {} for name in by_name}
    for key, value in state.items():
        name, _, inner = key.partition("/")
        if name not in parts:
            raise BuildError(f"a saved state holds rider {name!r}, which this build does not run")
        parts[name][inner] = value
    for name, part in parts.items():
        if part:
            by_name[name].merge_state_dict(part)


class TensorRecorder(HookSet):
    """Keep copies of the outputs of some modules and the inputs of others.

    Args:
        model: the model.
        outputs: module names whose forward outputs are recorded.
        inputs: module names whose first forward inputs are recorded.

    Attributes:
        outputs: ``{name: [tensor per forward call]}`` (detached clones).
        inputs: ``{name: [tensor per forward call]}`` (detached clones).
    """

    def __init__(
        self, model: nn.Module, outputs: Iterable[str] = (), inputs: Iterable[str] = ()
    ) -> None:
        super().__init__()
        output_names, input_names = list(outputs), list(inputs)
        self.outputs: dict[str, list[Tensor]] = {name: [] for name in output_names}
        self.inputs: dict[str, list[Tensor]] = {name: [] for name in input_names}
        for name, module in zip(output_names, resolve_modules(model, output_names), strict=True):
            self.on_output(module, _cloner(self.outputs[name]))
        for name, module in zip(input_names, resolve_modules(model, input_names), strict=True):
            self.on_input(module, _cloner(self.inputs[name]))


def _cloner(store: list[Tensor]) -> Callable[[Tensor], None]:
    def keep(tensor: Tensor) -> None:
        # Clone: a later in-place op (ReLU(inplace=True)) would otherwise change the record.
        store.append(tensor.detach().clone())

    return keep
