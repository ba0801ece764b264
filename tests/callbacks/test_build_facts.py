"""How an atlas was built, as the dashboard shows it: the header's "approximate" badge for
a mixed-precision build, and how each layer pair's influence was computed (exact through
one convolution, Inception widest path, gradient × activation, unknown) in the graph view's
note and on the neuron page's influence cards.

The atlases are the conftest's test atlases with the manifest's ``build`` and per-layer
``connection`` entries written as ``compute`` writes them (``BuildSettings.to_manifest``,
``manifest_layers``); an unpatched one is an "older atlas" that records neither.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dash
import pytest
from plotly.utils import PlotlyJSONEncoder

from compute.atlas import MANIFEST, BuildSettings, manifest_layers
from dashboard import data as atlas_data
from dashboard import ids
from dashboard.config import Settings
from dashboard.factory import create_app
from dashboard.state import ViewState
from dashboard.views import shell
from dashboard.views.common import ViewContext
from dashboard.views.summit import graph, neuron_page
from dashboard.views.summit import ids as summit_ids

LAYERS = ("layer0", "layer1", "layer2", "layer3")


def record_build(
    atlas: Path, connections: Sequence[str | None] | None, precision: str | None
) -> Path:
    """Write ``connections`` (one per layer, ``None`` first) and a build of ``precision``
    into the atlas's manifest, as a build does (``None``: leave that fact unrecorded)."""
    manifest = json.loads((atlas / MANIFEST).read_text())
    if connections is not None:
        layers = manifest["layers"]
        shapes = [(la["channels"], la["height"], la["width"]) for la in layers]
        manifest["layers"] = manifest_layers([la["name"] for la in layers], shapes, connections)
    if precision is not None:
        build = BuildSettings(
            device="cuda", device_name="NVIDIA H100", world_size=1, decode="pil",
            channels_last=True, precision=precision, torch="2.9.0",
        )  # fmt: skip
        manifest["build"] = build.to_manifest()
    (atlas / MANIFEST).write_text(json.dumps(manifest))
    return atlas


@pytest.fixture(scope="module")
def atlases_dir(tmp_path_factory: pytest.TempPathFactory, make_atlas: Any) -> Path:
    """``bf16`` (approximate, conv then gradient then inception), ``fp32`` (exact, all
    conv) and ``older`` (records neither), four layers each."""
    root = tmp_path_factory.mktemp("built")
    channels = (8, 12, 10, 6)
    record_build(
        make_atlas(root / "bf16", layer_channels=channels, seed=3),
        [None, "conv", "gradient", "inception"],
        "bf16",
    )
    record_build(
        make_atlas(root / "fp32", layer_channels=channels, seed=4),
        [None, "conv", "conv", "conv"],
        "fp32",
    )
    make_atlas(root / "older", layer_channels=channels, seed=5)
    return root


def context_of(atlases_dir: Path, name: str) -> ViewContext:
    data = atlas_data.load(str(atlases_dir / name), None)
    return ViewContext(data=data, file_prefix="/atlas-file/", page_prefix="/")


def find(component: Any, component_id: str) -> Any:
    """The component with ``component_id`` in a layout tree, or ``None``."""
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    if isinstance(children, (list, tuple)):
        for child in children:
            found = find(child, component_id)
            if found is not None:
                return found
    elif children is not None and not isinstance(children, str):
        return find(children, component_id)
    return None


def text(component: Any) -> str:
    """All the text of a layout tree, as rendered (JSON of the components)."""
    return json.dumps(component, cls=PlotlyJSONEncoder, ensure_ascii=False)


def lines(component: Any) -> list[str]:
    """The text of each item of an influence-kinds list."""
    out = []
    for item in component.children:
        out.append("".join(c if isinstance(c, str) else str(c.children) for c in item.children))
    return out


# -- the approximate badge ---------------------------------------------------------------------


def test_an_approximate_build_has_a_badge(atlases_dir: Path) -> None:
    header = shell.header(context_of(atlases_dir, "bf16"))
    badge = find(header, ids.APPROXIMATE_BADGE)
    assert badge is not None and badge.children == "approximate: bf16"
    assert "mixed-precision" in badge.title and "may differ" in badge.title


@pytest.mark.parametrize("name", ["fp32", "older"])
def test_exact_or_unknown_builds_have_no_badge(atlases_dir: Path, name: str) -> None:
    header = shell.header(context_of(atlases_dir, name))
    assert find(header, ids.APPROXIMATE_BADGE) is None
    assert "approximate" not in text(header)


def test_the_served_page_shows_the_badge(atlases_dir: Path, tmp_path: Path) -> None:
    """Through the app: the framed explorer page of a deployment of these atlases."""
    create_app(Settings(atlas_dir=atlases_dir, cache_dir=tmp_path / "cache"))
    explorer = dash.page_registry["explorer"]["layout"]
    assert "approximate: bf16" in text(explorer(atlas="bf16@1"))
    assert "approximate: " not in text(explorer(atlas="fp32@1"))
    assert "approximate: " not in text(explorer(atlas="older@1"))


# -- how influence was computed: the graph view ----------------------------------------------


def test_graph_note_names_each_kind_once(atlases_dir: Path) -> None:
    layout = graph.layout(context_of(atlases_dir, "bf16"), ViewState())
    kinds = find(layout, summit_ids.GRAPH_INFLUENCE_KINDS)
    assert kinds is not None
    assert lines(kinds) == [
        "exact, through one convolution: layer0 → layer1",
        "gradient × activation (approximate attribution through a residual or other "
        "block): layer1 → layer2",
        "exact per branch, Inception widest path: layer2 → layer3",
    ]


def test_graph_note_groups_pairs_of_one_kind(atlases_dir: Path) -> None:
    kinds = find(
        graph.layout(context_of(atlases_dir, "fp32"), ViewState()), summit_ids.GRAPH_INFLUENCE_KINDS
    )
    assert lines(kinds) == [
        "exact, through one convolution: layer0 → layer1, layer1 → layer2, layer2 → layer3"
    ]


def test_graph_note_of_an_older_atlas_says_unknown(atlases_dir: Path) -> None:
    kinds = find(
        graph.layout(context_of(atlases_dir, "older"), ViewState()),
        summit_ids.GRAPH_INFLUENCE_KINDS,
    )
    assert lines(kinds) == [
        "unknown (the atlas does not record it): layer0 → layer1, layer1 → layer2, layer2 → layer3"
    ]


def test_one_layer_atlas_has_no_influence_note(make_atlas: Any, tmp_path: Path) -> None:
    atlas = make_atlas(tmp_path / "one", layer_channels=(5,))
    context = ViewContext(data=atlas_data.load(str(atlas), None), file_prefix="/f/")
    assert find(graph.layout(context, ViewState()), summit_ids.GRAPH_INFLUENCE_KINDS) is None


# -- how influence was computed: the neuron page ---------------------------------------------


def test_neuron_page_cards_say_how_their_pairs_were_computed(atlases_dir: Path) -> None:
    context = context_of(atlases_dir, "bf16")
    page = neuron_page.page(context, layer="layer1", channel="2")
    incoming = find(page, summit_ids.NEURON_PAGE_INCOMING_KINDS)
    outgoing = find(page, summit_ids.NEURON_PAGE_OUTGOING_KINDS)
    assert lines(incoming) == ["exact, through one convolution: layer0 → layer1"]
    assert lines(outgoing) == [
        "gradient × activation (approximate attribution through a residual or other "
        "block): layer1 → layer2"
    ]
    # The first layer has nothing incoming, the last nothing outgoing.
    first = neuron_page.page(context, layer="layer0", channel="0")
    assert find(first, summit_ids.NEURON_PAGE_INCOMING_KINDS) is None
    assert lines(find(first, summit_ids.NEURON_PAGE_OUTGOING_KINDS))[0].startswith("exact, through")
    last = neuron_page.page(context, layer="layer3", channel="0")
    assert lines(find(last, summit_ids.NEURON_PAGE_INCOMING_KINDS))[0].startswith(
        "exact per branch"
    )
    assert find(last, summit_ids.NEURON_PAGE_OUTGOING_KINDS) is None


def test_neuron_page_of_an_older_atlas_says_unknown(atlases_dir: Path) -> None:
    page = neuron_page.page(context_of(atlases_dir, "older"), layer="layer2", channel="1")
    for component_id in (
        summit_ids.NEURON_PAGE_INCOMING_KINDS,
        summit_ids.NEURON_PAGE_OUTGOING_KINDS,
    ):
        assert lines(find(page, component_id))[0].startswith("unknown")


def test_a_kind_from_a_newer_build_is_named_not_hidden() -> None:
    assert atlas_data.connection_label("attention") == "attention (recorded by a newer build)"
    assert atlas_data.connection_label(None).startswith("unknown")
