"""The page of one neuron (channel): ``/neuron/<layer>/<channel>``, a stable, shareable URL.

It shows the channel's feature visualization and diversity images, its top dataset
examples (a CSV link downloads them), the classes that use it most (its column of A; each
bar links to that class's graph in the explorer) and its strongest incoming and outgoing
influences summed over all classes, each a link to that neuron's page, so the network can
be walked by clicking.

The page is static: everything is rendered by the Dash Pages layout function from the
path, with ``dcc.Link`` for navigation and the examples' CSV inside its link, so it needs
no callback. Unknown or malformed paths render a friendly not-found page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from dash import dcc, html

from compute.export import csv_text, example_columns, example_rows, examples_file_name
from dashboard.data import (
    PART_EXAMPLES,
    PART_FEATUREVIS,
    PART_SUMMIT,
    PART_TEXT,
    AtlasData,
    LayerPair,
    file_url,
)
from dashboard.links import class_href, explorer_href, neuron_href, parse_neuron_path
from dashboard.views.common import (
    ViewContext,
    how_to_read,
    influence_methods,
    note,
    percent,
    worded,
)
from dashboard.views.summit import ids
from dashboard.views.summit.graph import example_strip, featurevis_missing

#: Rows of the class bar chart and of each influence list.
TOP_CLASSES = 15
TOP_INFLUENCES = 10
#: Examples shown with their captions.
TOP_EXAMPLES = 12


def title(context: ViewContext, layer: Any = None, channel: Any = None, **_query: Any) -> str:
    """The browser tab title of a neuron page."""
    data = context.data
    parsed = parse_neuron_path(layer, channel, data.layer_names, data.channels)
    if parsed is None:
        return "Neuron not found · Network Atlas"
    return f"Channel {parsed[1]} of {data.layer_names[parsed[0]]} · Network Atlas"


def not_found(context: ViewContext, layer: Any, channel: Any) -> html.Div:
    """The friendly page for an unknown layer or channel."""
    data = context.data
    asked = f"{layer}/{channel}" if isinstance(layer, str) and isinstance(channel, str) else ""
    layers = ", ".join(
        f"{name} (0–{n - 1})" for name, n in zip(data.layer_names, data.channels, strict=True)
    )
    return html.Div(
        html.Section(
            [
                html.H2("Neuron not found"),
                html.P(
                    f"This atlas has no neuron {asked!r}." if asked else "No neuron was named.",
                    className="muted",
                ),
                html.P(f"{worded(data, 'Its layers and channels')}: {layers}.", className="muted"),
                dcc.Link(
                    "← back to the explorer",
                    href=explorer_href(context.page_prefix),
                    className="back",
                ),
            ],
            className="card",
        ),
        id=ids.NEURON_NOT_FOUND,
        className="page neuron-page",
    )


def page_not_found(context: ViewContext) -> html.Div:
    """The friendly page for any unknown path (e.g. ``/neuron/conv1`` without a channel)."""
    return html.Div(
        html.Section(
            [
                html.H2("Page not found"),
                html.P(
                    "Neuron pages are /neuron/<layer name or index>/<channel>.", className="muted"
                ),
                dcc.Link(
                    "← back to the explorer",
                    href=explorer_href(context.page_prefix),
                    className="back",
                ),
            ],
            className="card",
        ),
        id=ids.PAGE_NOT_FOUND,
        className="page neuron-page",
    )


def _bar(share: float) -> html.Span:
    return html.Span(
        html.Span(style={"width": f"{100 * max(0.0, min(1.0, share)):.1f}%"}), className="bar"
    )


def _thumb(context: ViewContext, layer: int, channel: int) -> html.Img | html.Span:
    if context.data.text:  # a text unit has no picture: its top token
        label = context.data.unit_label(layer, channel).partition(" ")[2]
        return html.Span(html.Mark(label) if label else None, className="thumb-token")
    url = file_url(context.file_prefix, context.data.thumbnail(layer, channel))
    if url is None:
        return html.Span(className="thumb thumb-empty")
    return html.Img(src=url, className="thumb", alt="")


def pictures_card(context: ViewContext, layer: int, channel: int) -> html.Section:
    """Feature visualization and diversity images (or how to compute them)."""
    data = context.data
    vis = data.featurevis(layer, channel)
    diversity = data.diversity(layer, channel)
    if vis is None and not diversity:
        text = (
            featurevis_missing(data)
            if not data.has(PART_FEATUREVIS)
            else "No feature visualization is stored for this channel's layer."
        )
        body: list[Any] = [note(text, kind="missing")]
    else:
        body = [
            html.Div(
                html.Img(
                    src=file_url(context.file_prefix, vis),
                    className="vis-large",
                    alt="feature visualization",
                )
                if vis
                else None,
                id=ids.NEURON_PAGE_VIS,
            ),
            html.H3("Diversity", className="subhead"),
            html.Div(
                [
                    html.Img(
                        src=file_url(context.file_prefix, path),
                        className="crop vis",
                        alt=f"diversity image {k}",
                    )
                    for k, path in enumerate(diversity)
                ],
                id=ids.NEURON_PAGE_DIVERSITY,
                className="crop-grid diversity-grid",
            ),
        ]
    return html.Section(
        [html.H2("Feature visualization"), *body],
        className="card",
    )


#: Tooltip of an example whose maximum is at a ViT's class token.
CLS_TITLE = "the maximum is at the class token, which attends to every patch: the whole image"


def examples_caption(data: AtlasData, layer: int) -> str:
    """What an example's crop and numbers are, for the layer's kind."""
    if data.text:
        return (
            "input index · activation (the unit's maximum over the input's tokens, the "
            "token marked)"
        )
    field = data.receptive_field(layer)
    if field is not None and field.token_columns:
        return (
            "dataset index · activation (the unit's maximum over the image's tokens); the "
            "crop is that token's patch, or the whole image where the maximum is at the "
            "class token, marked [CLS]"
        )
    return "dataset index · activation (the channel's spatial max)"


def examples_card(context: ViewContext, layer: int, channel: int) -> html.Section:
    """The top dataset examples with their crops, activation and dataset index."""
    data = context.data
    examples = [e for e in data.examples(layer, channel) if e["crop"]][:TOP_EXAMPLES]
    if data.text:  # snippets: the input's text, the token of the maximum marked
        examples = []
    if examples:
        body: Any = [
            html.Figure(
                [
                    html.Img(
                        src=file_url(context.file_prefix, e["crop"]),
                        className="crop",
                        alt=f"example {e['rank'] + 1}",
                    ),
                    html.Figcaption(
                        [
                            html.Span(f"#{e['image_index']}"),
                            html.Span(f"{e['activation']:.3g}"),
                            *(
                                [html.Span("[CLS]", className="cls-token", title=CLS_TITLE)]
                                if data.whole_image_token(layer, e["token"])
                                else []
                            ),
                        ]
                    ),
                ],
                className="example",
            )
            for e in examples
        ]
    else:
        body = example_strip(context, layer, channel)  # the "why none" note
    return html.Section(
        [
            html.Div(
                [html.H2("Top dataset examples"), examples_csv_link(context, layer, channel)],
                className="card-head",
            ),
            html.P(examples_caption(data, layer), className="muted"),
            html.Div(
                body,
                id=ids.NEURON_PAGE_EXAMPLES,
                className="snippet-list" if data.text else "example-grid",
            ),
        ],
        className="card",
    )


def top_tokens_card(context: ViewContext, layer: int, channel: int) -> html.Section | None:
    """A text atlas unit's tokens most often at its maximum over the dataset, with their
    counts (``None`` for an image atlas)."""
    data = context.data
    if not data.text or not data.has(PART_TEXT):
        return None
    counted = data.atlas.top_tokens(layer, channel)
    rows = [
        html.Tr([html.Td(html.Mark(token)), html.Td(f"{count:,}", className="num")])
        for token, count in counted
    ]
    return html.Section(
        [
            html.H2("Top tokens"),
            html.P(
                "the tokens at which this unit has its maximum, over the inputs that select "
                "it (the tokenizer's pieces: ## continues a word)",
                className="muted",
            ),
            html.Table(html.Tbody(rows), className="top-tokens")
            if rows
            else note("No input selects this unit."),
        ],
        className="card",
    )


def examples_csv_link(context: ViewContext, layer: int, channel: int) -> html.A | None:
    """A link that downloads the channel's top examples as CSV (``compute.export``'s
    :func:`~compute.export.example_rows` and file name); ``None`` without examples.

    The file travels in the link (a ``data:`` URL: a few hundred bytes), so the page stays
    static and the click needs no request.
    """
    data = context.data
    if not data.has(PART_EXAMPLES):
        return None
    rows = example_rows(data.atlas, layer, channel)
    if not rows:
        return None
    text = csv_text(example_columns(context.data.atlas), rows)
    return html.A(
        "CSV",
        id=ids.NEURON_PAGE_EXAMPLES_CSV,
        href="data:text/csv;charset=utf-8," + quote(text),
        download=examples_file_name(data.atlas.path.name, data.layer_names[layer], channel),
        className="png-export",
        title="Download these examples as CSV (rank, input index, activation, position), "
        "as python -m compute export --what examples writes them",
    )


def classes_card(context: ViewContext, layer: int, channel: int) -> html.Section:
    """The classes that use the channel most, as bars linking to their graphs."""
    data = context.data
    if not data.has(PART_SUMMIT):
        rows: Any = note(data.missing_note(PART_SUMMIT), kind="missing")
        used = ""
    else:
        top, counts = data.top_classes(layer, channel, TOP_CLASSES)
        column = data.counts(layer)[:, channel]
        used = f"used by {int((column > 0).sum()):,} of {data.num_classes:,} classes"
        largest = float(counts[0]) if counts.size else 0.0
        rows = [
            dcc.Link(
                [
                    html.Span(data.names[int(c)], className="bar-name"),
                    _bar(float(n) / largest if largest > 0 else 0.0),
                    html.Span(
                        f"{int(n):,} ({percent(n / data.num_images[int(c)])})"
                        if data.num_images[int(c)]
                        else f"{int(n):,}",
                        className="bar-value",
                    ),
                ],
                href=class_href(int(c), context.page_prefix, (layer, channel)),
                className="bar-row",
                title=f"open the attribution graph of {data.names[int(c)]}",
            )
            for c, n in zip(top.tolist(), counts.tolist(), strict=True)
            if n > 0
        ] or note(
            f"No class selects this {'unit' if data.text else 'channel'}. It can still stand "
            "on a class's attribution graph, faded and dotted, where what the class's inputs "
            "select draws on it."
        )
    return html.Section(
        [
            html.H2("Classes that use it most"),
            html.P(used, className="muted"),
            html.Div(rows, id=ids.NEURON_PAGE_CLASSES, className="bar-chart"),
        ],
        className="card",
    )


def influence_card(
    context: ViewContext,
    heading: str,
    component_id: str,
    links: list[tuple[int, int, int]],
    empty: str,
    explain: str,
    pairs: Sequence[LayerPair] = (),
    kinds_id: str | None = None,
) -> html.Section:
    """A list of influencing / influenced neurons, each a link to its page, with how the
    influences of ``pairs`` (the layer pairs listed) were computed."""
    data = context.data
    if not data.has(PART_SUMMIT):
        rows: Any = note(data.missing_note(PART_SUMMIT), kind="missing")
    elif not links:
        rows = note(empty)
    else:
        largest = max(n for _, _, n in links)
        rows = [
            dcc.Link(
                [
                    _thumb(context, li, ch),
                    html.Span(
                        f"{ch} · {data.layer_names[li]}",
                        className="bar-name",
                        title=f"{data.layer_names[li]} · {ch}",
                    ),
                    _bar(n / largest if largest else 0.0),
                    html.Span(f"{n:,}", className="bar-value"),
                ],
                href=neuron_href(data.layer_names[li], ch, context.page_prefix),
                className="bar-row neuron-link",
                title=f"open channel {ch} of {data.layer_names[li]}",
            )
            for li, ch, n in links
        ]
    # How these counts were made (exact, widest path, gradient × activation, unknown).
    method = (
        html.Div(
            ["How computed: ", influence_methods(data, pairs, kinds_id)],
            className="muted influence-computed",
        )
        if pairs
        else None
    )
    return html.Section(
        [
            html.H2(heading),
            html.P(explain, className="muted"),
            method,
            html.Div(rows, id=component_id, className="bar-chart"),
        ],
        className="card",
    )


def page(context: ViewContext, layer: Any = None, channel: Any = None, **_query: Any) -> html.Div:
    """The neuron page for the path variables (Dash Pages passes them as keywords)."""
    data = context.data
    parsed = parse_neuron_path(layer, channel, data.layer_names, data.channels)
    if parsed is None:
        return not_found(context, layer, channel)
    li, ch = parsed
    name = data.layer_names[li]
    unit = "unit" if data.text else "channel"
    inputs = data.inputs
    walk = []
    if ch > 0:
        walk.append(
            dcc.Link(
                f"← {unit} {ch - 1}",
                href=neuron_href(name, ch - 1, context.page_prefix),
                className="walk",
            )
        )
    if ch + 1 < data.channels[li]:
        walk.append(
            dcc.Link(
                f"{unit} {ch + 1} →",
                href=neuron_href(name, ch + 1, context.page_prefix),
                className="walk",
            )
        )
    previous = data.previous_layer(li)
    following = data.next_layers(li)
    pairs = data.layer_pairs()
    return html.Div(
        [
            html.Nav(
                [
                    dcc.Link(
                        "← Explorer", href=explorer_href(context.page_prefix), className="back"
                    ),
                    html.H2(
                        [html.Span("N", className="view-tag"), f"{unit.title()} {ch} of {name}"],
                        className="neuron-heading",
                    ),
                    html.Span(
                        f"layer {li + 1} of {data.num_layers} · {data.channels[li]:,} {unit}s",
                        className="pill",
                    ),
                    *walk,
                ],
                className="neuron-nav",
            ),
            html.Div(
                [
                    None if data.text else pictures_card(context, li, ch),
                    top_tokens_card(context, li, ch),
                    examples_card(context, li, ch),
                    classes_card(context, li, ch),
                    influence_card(
                        context,
                        "Strongest incoming influences"
                        + (f" (from {data.layer_names[previous]})" if previous is not None else ""),
                        ids.NEURON_PAGE_INCOMING,
                        data.incoming(li, ch, TOP_INFLUENCES),
                        (
                            "This is the first layer: nothing before it is recorded."
                            if previous is None
                            else f"No {unit} of {data.layer_names[previous]} was ever among "
                            f"the strongest influences on this one (in any {inputs[:-1]})."
                        ),
                        f"{inputs} (of every class) in which that {unit} was among the "
                        "strongest influences on this one",
                        [p for p in pairs if p.target == li],
                        ids.NEURON_PAGE_INCOMING_KINDS,
                    ),
                    influence_card(
                        context,
                        "Strongest outgoing influences"
                        + (
                            f" (to {', '.join(data.layer_names[t] for t in following)})"
                            if following
                            else ""
                        ),
                        ids.NEURON_PAGE_OUTGOING,
                        data.outgoing(li, ch, TOP_INFLUENCES),
                        f"No later layer records influences from this {unit}.",
                        f"{inputs} (of every class) in which this {unit} was among the "
                        "strongest influences on that one",
                        [p for p in pairs if p.source == li],
                        ids.NEURON_PAGE_OUTGOING_KINDS,
                    ),
                ],
                className="neuron-grid",
            ),
            how_to_read(
                "The top tokens are the tokens at which this unit fires most over the "
                "dataset; the examples are the texts it fires on most, the token of its "
                "maximum marked."
                if data.text
                else "The feature visualization is an image optimised to excite this channel; "
                "the diversity images are optimised together to excite it in different ways.",
                f"Influence counts are summed over every class: a count is the number of "
                f"{inputs} in which one {unit} was among the strongest influences on the "
                "other. Click a neuron to open its page, or a class to open its graph.",
            ),
        ],
        id=ids.NEURON_PAGE,
        className="page neuron-page",
    )
