"""Training view data and figures (no Dash): the atlas's ``trace`` part (docs/trace.md).

:class:`TraceData` wraps ``Atlas.trace()`` once per worker: grid filtering, the picked
image's proponents and opponents, and pure figure builders (class shares, cosine ridges,
cumulative shares over epochs, refinement norms per layer) that take plain arrays, so every
one is testable with small hand-made inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from compute.atlas import PART_INSTANCES, PART_TRACE
from dashboard.data import UNCERTAIN_QUANTILE, AtlasData, uncertain_by_lead
from dashboard.theme import ACCENT, FONT

# An image is "uncertain" (dashboard.data.uncertain_by_lead) when its predicted class's
# share lead over the runner-up (at the last traced layer) is among the lowest of the
# explained images. The trace stores no softmax, so this lead stands in for the confidence.
#: At most this many thumbnails in the grid.
GRID_LIMIT = 120
#: Classes drawn one by one in the share, ridge and epoch figures; the rest are summed into
#: one "other classes" entry (a 1,000-class atlas would otherwise draw 1,000 bars and 2,000
#: traces per figure: a second of server time and a frozen browser tab).
MAX_SHOWN_CLASSES = 12

TRUE = "#2563eb"  # the true class when it differs
OTHER = "#cbd5e1"
REG = "#64748b"  # regularisation (weight decay)
# 10 distinct colours for the stacked area chart (tab10), cycled beyond 10 classes.
_PALETTE = (
    "#1f77b4",
    "#65a30d",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass(frozen=True)
class Example:
    """One proponent or opponent: training index, its label and score ``π_i``; its
    thumbnail (an image atlas) or its text (a text atlas), where the trace part keeps one."""

    index: int
    label: int
    score: float
    thumbnail: str | None
    text: str | None = None


class TraceData:
    """The trace part of an atlas, read once (``Atlas.trace()``, shape-checked).

    Args:
        data: the opened atlas (must have the ``trace`` part).
    """

    def __init__(self, data: AtlasData) -> None:
        self.data = data
        self.meta, self.arrays = data.atlas.trace()
        a = self.arrays
        self.num_images = int(a["image_index"].shape[0])
        self.layer_names: tuple[str, ...] = tuple(
            str(layer.get("name", f"layer {i}")) for i, layer in enumerate(self.meta["layers"])
        )
        self.num_layers = len(self.layer_names)
        self.label = np.asarray(a["image_label"], dtype=np.int64)
        self.prediction = np.asarray(a["prediction"], dtype=np.int64)
        self.train_label = np.asarray(a["train_label"], dtype=np.int64)
        self.uncertain = uncertain_rows(np.asarray(a["class_share"][:, -1, :-1]), self.prediction)

    @cached_property
    def _linked(self) -> dict[int, int]:
        """``{trace row: instance record row}`` of the explained images that have an
        instance record (see :meth:`record_row`)."""
        data = self.data
        dataset = data.atlas.manifest.get("dataset") or {}
        split = self.meta.get("split")
        if not data.has(PART_INSTANCES) or not split or split != dataset.get("split"):
            return {}
        records = data.atlas.instances()
        linked: dict[int, int] = {}
        for row, index in enumerate(np.asarray(self.arrays["image_index"]).tolist()):
            record = data.atlas.instance_row(int(index))
            if (
                record is not None
                and int(records.label[record]) == int(self.label[row])
                and int(records.prediction[record]) == int(self.prediction[row])
            ):
                linked[row] = record
        return linked

    def record_row(self, row: int) -> int | None:
        """The instance record of explained image ``row`` (the same input), ``None`` if it
        has none. The trace and the Summit pass must name the same split in the manifest,
        and the record must agree with the trace on the input's label and prediction (an
        index of another numbering, or another model's trace, links nothing)."""
        return self._linked.get(row)

    @cached_property
    def _traced(self) -> dict[int, int]:
        """``{instance record row: trace row}`` (the first trace row of a record)."""
        traced: dict[int, int] = {}
        for row, record in self._linked.items():
            traced.setdefault(record, row)
        return traced

    def row_of_record(self, record: int) -> int | None:
        """The explained image that instance record ``record`` is (``None``: not traced)."""
        return self._traced.get(record)

    @property
    def default_layer(self) -> int:
        """The last traced layer (the one closest to the output)."""
        return self.num_layers - 1

    def layer(self, value: int | None) -> int:
        """``value`` if it is a traced layer, else the default."""
        return value if value is not None and 0 <= value < self.num_layers else self.default_layer

    def rows(self, mode: str, cls: int | None) -> np.ndarray:
        """Rows shown in the grid (see :func:`filter_rows`)."""
        return filter_rows(self.label, self.prediction, self.uncertain, mode, cls)

    def thumbnail(self, kind: str, number: int) -> str | None:
        """Relpath of a thumbnail, or ``None`` (not stored, or an older atlas reader)."""
        getter = getattr(self.data.atlas, "trace_thumbnail", None)
        if getter is None:
            return None
        try:
            return getter(kind, int(number))
        except Exception:  # a missing or malformed thumbnail is never an error
            return None

    def text(self, kind: str, number: int) -> str | None:
        """A text atlas's explained input (``kind="test"``, its row) or training example
        (``"train"``, its index) as text, ``None`` where the trace part keeps none."""
        try:
            return self.data.atlas.trace_text(kind, int(number))
        except Exception:  # a missing or malformed text shows the index instead
            return None

    def examples(self, row: int, layer: int, which: str) -> list[Example]:
        """Top proponents (``which="proponent"``) or opponents of image ``row`` at ``layer``."""
        index = np.asarray(self.arrays[f"{which}_index"][row, layer])
        score = np.asarray(self.arrays[f"{which}_score"][row, layer])
        out = []
        for i, s in zip(index.tolist(), score.tolist(), strict=True):
            if i < 0 or i >= len(self.train_label):
                continue
            out.append(
                Example(
                    int(i),
                    int(self.train_label[i]),
                    float(s),
                    self.thumbnail("train", i),
                    self.text("train", i),
                )
            )
        return out

    def image(self, row: int, layer: int) -> dict[str, np.ndarray]:
        """The arrays of one image at one layer (and ``norms`` over all layers)."""
        a = self.arrays
        return {
            "class_share": np.asarray(a["class_share"][row, layer], dtype=np.float64),
            "epoch_share": np.asarray(a["epoch_share"][row, layer], dtype=np.float64),
            "epoch_cosine": np.asarray(a["epoch_cosine"][row, layer], dtype=np.float64),
            "ridge_hist": np.asarray(a["ridge_hist"][row, layer], dtype=np.float64),
            "ridge_edges": np.asarray(a["ridge_edges"], dtype=np.float64),
            "norms": np.asarray(a["norms"][row], dtype=np.float64),
        }


def trace_data(data: AtlasData) -> TraceData | None:
    """The memoised trace of an atlas (``None`` without the part)."""
    if not data.has(PART_TRACE):
        return None
    cached = data.__dict__.get("_trace_data")
    if cached is None:
        cached = TraceData(data)
        data.__dict__["_trace_data"] = cached
    return cached


# -- pure helpers ----------------------------------------------------------------------------


def uncertain_rows(
    share: np.ndarray, prediction: np.ndarray, quantile: float = UNCERTAIN_QUANTILE
) -> np.ndarray:
    """Boolean ``[n]``: images whose predicted class's share lead over
    the best other class is in the lowest ``quantile`` (``share``: ``[n, C]``)."""
    share = np.asarray(share, dtype=np.float64)
    n = share.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    rows = np.arange(n)
    own = share[rows, prediction]
    others = share.copy()
    others[rows, prediction] = -np.inf
    return uncertain_by_lead(own - others.max(axis=1), quantile)


def filter_rows(
    label: np.ndarray, prediction: np.ndarray, uncertain: np.ndarray, mode: str, cls: int | None
) -> np.ndarray:
    """Rows of the grid, in row order.

    Args:
        label, prediction: true and predicted class per row.
        uncertain: the "uncertain" mask (:func:`uncertain_rows`).
        mode: ``all``, ``wrong`` (misclassified) or ``uncertain`` (misclassified or uncertain).
        cls: keep only images whose true or predicted class is ``cls`` (``None``: all).
    """
    keep = np.ones(len(label), dtype=bool)
    wrong = label != prediction
    if mode == "wrong":
        keep &= wrong
    elif mode == "uncertain":
        keep &= wrong | uncertain
    if cls is not None:
        keep &= (label == cls) | (prediction == cls)
    return np.flatnonzero(keep)


def share_order(share: np.ndarray) -> np.ndarray:
    """Class indices by class share, largest first (regularisation excluded; ties → lower
    index). ``share``: ``[C + 1]``."""
    classes = np.asarray(share, dtype=np.float64)[:-1]
    return np.lexsort((np.arange(len(classes)), -classes))


def shown_classes(
    share: np.ndarray, predicted: int, true: int | None = None, limit: int = MAX_SHOWN_CLASSES
) -> list[int]:
    """The classes drawn one by one: all of them when there are at most ``limit``, else the
    ``limit`` largest by absolute share (the predicted and true classes always among them),
    in :func:`share_order`. ``share``: ``[C + 1]`` (last: regularisation).

    Examples:
        >>> shown_classes(np.array([0.1, -0.5, 0.2, 0.0, 0.3]), predicted=3, limit=2)
        [3, 1]
    """
    share = np.asarray(share, dtype=np.float64)
    num = share.shape[0] - 1
    order = share_order(share)
    if num <= limit:
        return order.tolist()
    must = [c for c in dict.fromkeys((predicted, true)) if c is not None and 0 <= c < num]
    by_size = np.lexsort((np.arange(num), -np.abs(share[:num])))
    keep = set(must)
    for c in by_size.tolist():
        if len(keep) >= max(limit, len(must)):
            break
        keep.add(c)
    return [c for c in order.tolist() if c in keep]


def _other_label(count: int) -> str:
    return f"{count:,} other classes"


def _layout(title: str, height: int, **extra: Any) -> dict[str, Any]:
    layout = {
        "title": {"text": title, "font": {"size": 13}, "x": 0.01},
        "height": height,
        "margin": {"l": 90, "r": 12, "t": 32, "b": 36},
        "font": {"family": FONT, "size": 11},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "showlegend": False,
    }
    layout.update(extra)
    return layout


def share_figure(
    share: np.ndarray,
    names: Sequence[str],
    predicted: int,
    true: int,
    limit: int = MAX_SHOWN_CLASSES,
) -> dict[str, Any]:
    """Horizontal bars of the class shares (largest first) plus the regularisation share;
    the predicted class in orange, the true class (if different) in blue. Beyond ``limit``
    classes (:func:`shown_classes`) the others are one summed bar (``customdata`` -2), so
    the bars still add up to the whole refinement."""
    share = np.asarray(share, dtype=np.float64)
    order = shown_classes(share, predicted, true, limit)
    labels = [names[c] for c in order]
    values = [float(share[c]) for c in order]
    colours = [ACCENT if c == predicted else TRUE if c == true else OTHER for c in order]
    customdata = list(order)
    rest = share.shape[0] - 1 - len(order)
    if rest > 0:
        labels.append(_other_label(rest))
        values.append(float(share[:-1].sum() - share[order].sum()))
        colours.append(OTHER)
        customdata.append(-2)
    labels.append("regularisation")
    values.append(float(share[-1]))
    colours.append(REG)
    customdata.append(-1)
    trace = {
        "type": "bar",
        "orientation": "h",
        "x": values,
        "y": labels,
        "customdata": customdata,
        "marker": {"color": colours},
        "hovertemplate": "%{y}: %{x:.1%} of ‖r‖<extra></extra>",
    }
    return {
        "data": [trace],
        "layout": _layout(
            "Share of the refinement by class",
            max(220, 22 * len(labels) + 70),
            xaxis={"tickformat": ".0%", "zeroline": True, "zerolinecolor": "#94a3b8"},
            yaxis={"autorange": "reversed", "automargin": True},
        ),
    }


def ridge_figure(
    hist: np.ndarray,
    edges: np.ndarray,
    names: Sequence[str],
    predicted: int,
    unit: str,
    classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """One filled ridge per class (the paper's ridge plot): the norm-weighted histogram of
    contribution cosines, each scaled to its own peak; the predicted class in orange.

    ``classes``: which classes to draw, top to bottom (default: every class up to
    ``MAX_SHOWN_CLASSES``, else the heaviest histograms and the predicted class)."""
    hist = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    traces = []
    if classes is None:
        weight = np.append(hist.sum(axis=1), 0.0)
        classes = (
            list(range(hist.shape[0]))
            if hist.shape[0] <= MAX_SHOWN_CLASSES
            else sorted(shown_classes(weight, predicted))
        )
    drawn = [int(c) for c in classes if 0 <= int(c) < hist.shape[0]]
    num = len(drawn)
    for k, c in enumerate(drawn):
        row = hist[c]
        peak = float(row.max()) if row.size else 0.0
        scaled = (row / peak * 0.9) if peak > 0 else np.zeros_like(row)
        base = float(num - 1 - k)
        colour = ACCENT if c == predicted else "#64748b"
        traces.append(
            {
                "type": "scatter",
                "x": centres,
                "y": [base] * len(centres),
                "mode": "lines",
                "line": {"width": 0},
                "hoverinfo": "skip",
            }
        )
        traces.append(
            {
                "type": "scatter",
                "x": centres,
                "y": (scaled + base).tolist(),
                "mode": "lines",
                "fill": "tonexty",
                "line": {"color": colour, "width": 2 if c == predicted else 1},
                "fillcolor": "rgba(249,115,22,0.45)"
                if c == predicted
                else "rgba(100,116,139,0.22)",
                "name": names[c],
                "customdata": row.tolist(),
                "hovertemplate": f"{names[c]}: cos %{{x:.2f}}, weight %{{customdata:.3g}}"
                "<extra></extra>",
            }
        )
    return {
        "data": traces,
        "layout": _layout(
            f"Cosines of the contributions per class ({unit})",
            max(240, 26 * num + 70),
            xaxis={"range": [-1, 1], "title": {"text": "cosine with the refinement r"}},
            yaxis={
                "tickvals": [float(num - 1 - k) for k in range(num)],
                "ticktext": [names[c] for c in drawn],
                "range": [-0.3, num],
                "automargin": True,
            },
        ),
    }


def epoch_figure(
    epoch_share: np.ndarray,
    epoch_cosine: np.ndarray,
    names: Sequence[str],
    predicted: int,
    limit: int = MAX_SHOWN_CLASSES,
) -> dict[str, Any]:
    """Stacked areas of the cumulative class shares at the end of each epoch, diverging from
    0 (positive parts stacked up, negative parts down; the predicted class next to 0,
    outlined), and above them a strip with the cosine between the refinement so far and
    the final one. ``epoch_share``: ``[E, C + 1]`` (last: regularisation). Beyond ``limit``
    classes (:func:`shown_classes` of the final shares) the others are one summed area
    (positive and negative parts summed separately, so the stacks still add up)."""
    share = np.asarray(epoch_share, dtype=np.float64)
    epochs = list(range(1, share.shape[0] + 1))
    num = share.shape[1] - 1
    # Predicted class first (closest to 0), then by final share, the rest, regularisation.
    shown = shown_classes(share[-1], predicted, None, limit)
    order: list[int] = [predicted] + [c for c in shown if c != predicted]
    rest = np.setdiff1d(np.arange(num), order)
    other = -1
    if len(rest):
        order.append(other)
    order.append(num)
    traces: list[dict[str, Any]] = []
    for c in order:
        if c == other:
            name, colour = _other_label(len(rest)), OTHER
            values = share[:, rest]
            parts = (
                ("up", np.maximum(values, 0).sum(axis=1)),
                ("down", np.minimum(values, 0).sum(axis=1)),
            )
            customdata = values.sum(axis=1)
        else:
            name = "regularisation" if c == num else names[c]
            colour = REG if c == num else ACCENT if c == predicted else _PALETTE[c % len(_PALETTE)]
            parts = (("up", np.maximum(share[:, c], 0)), ("down", np.minimum(share[:, c], 0)))
            customdata = share[:, c]
        for group, part in parts:
            if not np.any(part):
                continue
            shown = not any(t["legendgroup"] == name for t in traces)
            traces.append(
                {
                    "type": "scatter",
                    "x": epochs,
                    "y": part.tolist(),
                    "stackgroup": group,
                    "mode": "lines",
                    "name": name,
                    "legendgroup": name,
                    "showlegend": shown,
                    "line": {"width": 2.5 if c == predicted else 0.5, "color": colour},
                    "customdata": customdata.tolist(),
                    "hovertemplate": f"{name}: %{{customdata:.1%}} after epoch %{{x}}"
                    "<extra></extra>",
                }
            )
    cosine = np.asarray(epoch_cosine, dtype=np.float64)
    traces.append(
        {
            "type": "scatter",
            "x": epochs,
            "y": cosine.tolist(),
            "yaxis": "y2",
            "mode": "lines+markers",
            "name": "cos(r so far, r)",
            "legendgroup": "cosine",
            "showlegend": False,
            "line": {"color": "#111827", "width": 1.5},
            "hovertemplate": "cosine with the final r: %{y:.2f} after epoch %{x}<extra></extra>",
        }
    )
    low = min(0.0, float(cosine.min()) - 0.05) if cosine.size else 0.0
    return {
        "data": traces,
        "layout": _layout(
            "Cumulative class shares over epochs",
            380,
            showlegend=True,
            legend={"font": {"size": 10}, "tracegroupgap": 0},
            margin={"l": 56, "r": 12, "t": 32, "b": 40},
            xaxis={"title": {"text": "epoch"}, "dtick": 1},
            yaxis={
                "domain": [0, 0.74],
                "tickformat": ".0%",
                "title": {"text": "share of ‖r‖"},
                "zeroline": True,
                "zerolinecolor": "#111827",
            },
            yaxis2={
                "domain": [0.8, 1],
                "anchor": "x",
                "range": [low, 1.05],
                "title": {"text": "cos"},
                "nticks": 3,
            },
        ),
    }


def norms_figure(norms: np.ndarray, layer_names: Sequence[str], picked: int) -> dict[str, Any]:
    """Per traced layer: ‖r‖ (what training added) against ‖W_0⋆a‖ (what the initial
    weights give) and ‖W_T⋆a‖; the picked layer marked."""
    norms = np.asarray(norms, dtype=np.float64)
    x = list(layer_names)
    series = (
        ("‖r‖ refinement", 0, ACCENT, "solid"),
        ("‖W₀⋆a‖ initial", 1, "#64748b", "dash"),
        ("‖W_T⋆a‖ final", 2, TRUE, "dot"),
    )
    traces = [
        {
            "type": "scatter",
            "x": x,
            "y": norms[:, column].tolist(),
            "mode": "lines+markers",
            "name": name,
            "line": {"color": colour, "dash": dash},
            "hovertemplate": f"{name}: %{{y:.3g}}<extra>%{{x}}</extra>",
        }
        for name, column, colour, dash in series
    ]
    ratio = norms[:, 0] / np.maximum(norms[:, 1], 1e-12)
    traces.append(
        {
            "type": "bar",
            "x": x,
            "y": ratio.tolist(),
            "yaxis": "y2",
            "name": "‖r‖ / ‖W₀⋆a‖",
            "marker": {
                "color": [
                    "rgba(249,115,22,0.35)" if i == picked else "rgba(148,163,184,0.25)"
                    for i in range(len(x))
                ]
            },
            "hovertemplate": "‖r‖ / ‖W₀⋆a‖ = %{y:.2f}<extra>%{x}</extra>",
        }
    )
    return {
        "data": traces,
        "layout": _layout(
            "Refinement across layers",
            380,
            showlegend=True,
            legend={"orientation": "h", "y": -0.25, "font": {"size": 10}},
            margin={"l": 50, "r": 40, "t": 32, "b": 60},
            yaxis={"title": {"text": "norm"}, "rangemode": "tozero"},
            yaxis2={
                "overlaying": "y",
                "side": "right",
                "showgrid": False,
                "rangemode": "tozero",
                "title": {"text": "ratio"},
            },
        ),
    }
