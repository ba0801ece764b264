"""The demo's training loop with the tracer: same seed, batch order and optimizer.

:func:`train_demo_traced` runs :func:`compute.demo.train_digits_cnn` itself with the tracer as
its observer, so its final weights are bit-identical to the untraced demo (the tracer
touches no RNG and no gradient).

Examples:
    >>> from compute.demo import DemoConfig, load_digits_splits          # doctest: +SKIP
    >>> model, trace = train_demo_traced(load_digits_splits(), DemoConfig())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from compute.trace.tracer import TraceConfig, Tracer, TraceResult

if TYPE_CHECKING:  # compute.demo may import this module: import it lazily at run time
    from compute.demo import DemoConfig, DigitsSplits

log = logging.getLogger(__name__)

#: Every weight layer of the demo CNN, input to output.
DEMO_TRACE_LAYERS = (
    "features.conv1",
    "features.conv2",
    "features.conv3",
    "features.conv4",
    "head",
)


def train_demo_traced(
    splits: DigitsSplits,
    config: DemoConfig | None = None,
    *,
    layers: tuple[str, ...] = DEMO_TRACE_LAYERS,
    projection_dim: int = 64,
    checkpoint_dir: str | Path | None = None,
    example_momentum: str = "exact",
) -> tuple[nn.Module, TraceResult]:
    """Train the demo CNN exactly as ``compute.demo.train_digits_cnn`` does, traced.

    Args:
        splits: ``compute.demo.DigitsSplits``.
        config: ``compute.demo.DemoConfig`` (default settings if ``None``).
        layers: modules to trace.
        projection_dim: sketch size per example for layers above ``exact_max_weights``.
        checkpoint_dir: where to save epoch-end checkpoints (for TracIn), or ``None``.
        example_momentum: per-example momentum credit, ``"exact"`` or ``"decayed"``
            (see :class:`compute.trace.TraceConfig`).

    Returns:
        ``(model in eval mode, trace)``.
    """
    from compute.demo import CLASS_NAMES, DemoConfig, train_digits_cnn

    config = DemoConfig() if config is None else config
    tracers: list[Tracer] = []

    def make_tracer(model: nn.Module, optimizer: torch.optim.Optimizer) -> Tracer:
        tracer = Tracer(
            model,
            optimizer,
            TraceConfig(
                layers=layers,
                num_classes=len(CLASS_NAMES),
                projection_dim=projection_dim,
                seed=config.seed,
                checkpoint_dir=checkpoint_dir,
                example_momentum=example_momentum,
            ),
            num_examples=len(splits.train),
        )
        tracers.append(tracer)
        return tracer

    model = train_digits_cnn(splits, config, observe=make_tracer)
    return model, tracers[0].finish()
