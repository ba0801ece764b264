"""Forward hooks on named modules: find modules by name and record what flows through them.

The Summit pass reduces every captured tensor inside the hook itself (so later in-place
operations such as ``ReLU(inplace=True)`` cannot alter what was seen, and nothing large is
kept). :class:`TensorRecorder` keeps full copies instead; tests and small tools use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Self

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


class HookSet(ClosingContext):
    """Forward hooks that call a function with a module's output or first input.

    Use as a context manager (or call :meth:`close`) so hooks never outlive their use.
    """

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def on_output(self, module: nn.Module, fn: Callable[[Tensor], None]) -> None:
        """Call ``fn(output)`` after every forward of ``module``."""

        def hook(_module: nn.Module, _inputs: tuple[object, ...], output: Tensor) -> None:
            fn(output)

        self._handles.append(module.register_forward_hook(hook))

    def on_input(self, module: nn.Module, fn: Callable[[Tensor], None]) -> None:
        """Call ``fn(first_input)`` before every forward of ``module`` (its actual input)."""

        def hook(_module: nn.Module, inputs: tuple[object, ...]) -> None:
            fn(inputs[0])  # type: ignore[arg-type]

        self._handles.append(module.register_forward_pre_hook(hook))

    def on_forward(self, module: nn.Module, hook: Callable[..., object]) -> None:
        """Register ``hook(module, inputs, output)`` after every forward of ``module``; what
        it returns (not ``None``) replaces the module's output, as in PyTorch."""
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
