"""Training trace (Pfahler & Morik 2021): record how training refined each layer, explain inputs.

``Tracer`` wraps any training loop and ``torch.optim`` optimizer; ``explain`` turns the trace
into per-input arrays (class shares, ridge histograms, proponents); ``write_trace_part`` puts
them into an atlas. See ``docs/trace.md``.
"""

from compute.trace.explain import (
    PART_TRACE,
    TRACE_PATHS,
    ExplainConfig,
    Explainer,
    TraceExplanation,
    capture_inputs,
    exact_projections,
    example_scores,
    explain,
    load_trace_part,
    trace_texts,
    write_trace_part,
)
from compute.trace.tracer import LayerTrace, TraceConfig, TraceError, Tracer, TraceResult

__all__ = [
    "PART_TRACE",
    "TRACE_PATHS",
    "ExplainConfig",
    "Explainer",
    "LayerTrace",
    "TraceConfig",
    "TraceError",
    "TraceExplanation",
    "TraceResult",
    "Tracer",
    "capture_inputs",
    "exact_projections",
    "example_scores",
    "explain",
    "load_trace_part",
    "trace_texts",
    "write_trace_part",
]
