"""The Instance view on the demo atlas (every training image recorded): the picker lists
the class's records, the graph is the input's on its class's graph, the header gives the
overlap and the mistake's links; an atlas without records says how to add them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from compute.atlas import Atlas
from compute.summit.instance_graph import instance_graph
from dashboard import data as atlas_data
from dashboard.config import DEMO_ATLAS_DIR
from dashboard.state import ViewState
from dashboard.views.common import ViewContext
from dashboard.views.instance.callbacks import instance_download, render
from dashboard.views.instance.data import PICKER_LIMIT
from tests.helpers.components import components


@pytest.fixture
def context(tmp_path: Path) -> ViewContext:
    return ViewContext(
        data=atlas_data.load(str(DEMO_ATLAS_DIR), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
    )


def text_of(component: object) -> str:
    return json.dumps(component, default=lambda c: c.to_plotly_json())


def hrefs(component: object) -> list[str]:
    return re.findall(r'"href": "([^"]+)"', text_of(component))


def chip_links(picker: object) -> list[str]:
    """The hrefs of the picker's input links (not its filter links), in order."""
    return [
        c["props"]["href"]
        for c in components(picker)
        if "instance-chip" in str(c["props"].get("className", "")).split()
    ]


def test_the_url_holds_the_input_and_the_filter() -> None:
    state = ViewState.from_query("?class=6&inst=401&ifl=wrong", num_classes=10)
    assert (state.inst_index, state.inst_filter) == (401, "wrong")
    assert ViewState.from_query(state.to_search(), num_classes=10) == state
    junk = ViewState.from_query("?inst=-3&ifl=odd", num_classes=10)
    assert (junk.inst_index, junk.inst_filter) == (None, "all")


def test_the_picker_lists_the_classs_records(demo: Atlas, context: ViewContext) -> None:
    records = demo.instances()
    wrong = records.prediction != records.label
    # "uncertain": the lowest tenth of the softmax margins of all recorded inputs.
    low = records.margin <= np.sort(records.margin)[int(np.ceil(0.1 * (len(records.margin) - 1)))]
    for cls, mode in ((6, "all"), (6, "wrong"), (6, "uncertain"), (1, "uncertain")):
        _, picker, _, _, _ = render(context, ViewState(cls=cls, inst_filter=mode).to_dict())
        links = chip_links(picker)
        keep = records.label == cls
        if mode == "wrong":
            keep &= wrong
        if mode == "uncertain":
            keep &= wrong | low
            assert keep.sum() > (wrong & (records.label == cls)).sum(), "none uncertain"
        want = records.image_index[keep][:PICKER_LIMIT].tolist()
        assert [int(re.search(r"inst=(\d+)", h).group(1)) for h in links] == want
        assert len(links) == min(keep.sum(), PICKER_LIMIT)
        # Each link shows the input's stored image.
        assert text_of(picker).count('"instance-thumb"') == len(links)


def test_the_graph_is_the_inputs_over_its_class_graph(demo: Atlas, context: ViewContext) -> None:
    records = demo.instances()
    row = int(np.flatnonzero((records.label == 6) & (records.prediction == 0))[0])
    index = int(records.image_index[row])
    state = ViewState(cls=6, inst_index=index)
    message, _, header, legend, elements = render(context, state.to_dict())
    assert message is None
    graph = instance_graph(demo, row)
    mine = {f"{a}-{b}" for a, b in zip(graph.layer, graph.channel, strict=True)}
    theirs = demo.graph(6)
    classes = {f"{a}-{b}" for a, b in zip(theirs.layer, theirs.channel, strict=True)}
    drawn = {
        e["data"]["id"]: e.get("classes", "")
        for e in elements
        if re.fullmatch(r"\d+-\d+", e["data"]["id"])
    }
    assert set(drawn) == mine | classes
    for node, kinds in drawn.items():
        want = "shared" if node in mine & classes else ("only-b" if node in mine else "only-a")
        assert kinds.split()[0] == want, node
    rare = {
        f"{a}-{b}" for a, b in zip(graph.layer[graph.rare], graph.channel[graph.rare], strict=True)
    }
    assert {n for n, k in drawn.items() if "rare" in k.split()} == rare
    words = text_of(header)
    assert f"input #{index}" in words and "predicted zero" in words
    assert f"({100 * float(records.confidence[row]):.1f}% sure)" in words
    assert f"/atlas-file/instances/inputs/{index}.png" in words
    # The input's own channels show its own crops; the class's other channels their picture.
    for element in elements:
        node = element["data"]["id"]
        if node in mine:
            assert element["data"]["img"] == f"/atlas-file/instances/crops/{index}/{node}.png"
        elif "img" in element["data"]:
            assert "/instances/" not in element["data"]["img"]
    assert f"{100 * graph.overlap:.1f}% on six" in words
    assert "/?v=1&class=6&compare=0&sub=mistaken&for=0&inst=" in " ".join(hrefs(header))
    legend_text = text_of(legend)
    assert f'"only this input", " ({(~graph.on_class_graph).sum()})"' in legend_text


def test_an_input_without_a_record_falls_back_and_says_so(
    demo: Atlas, context: ViewContext
) -> None:
    message, _, header, _, _ = render(context, ViewState(cls=6, inst_index=10**6).to_dict())
    assert "Input 1000000 has no instance record" in text_of(message)
    assert "input #" in text_of(header)
    # An input of another class (the state kept it while another class was selected):
    # the selected class's first input is shown, never the other class's beside its graph.
    records = demo.instances()
    six = int(records.image_index[np.flatnonzero(records.label == 6)[0]])
    first_one = int(records.image_index[np.flatnonzero(records.label == 1)[0]])
    message, _, header, _, _ = render(context, ViewState(cls=1, inst_index=six).to_dict())
    assert f"input #{first_one}" in text_of(header) and "label one" in text_of(header)
    # ... and the note says whose input it is, with a link that shows it.
    assert f"Input {six} is an input of six" in text_of(message)
    assert [h for h in hrefs(message) if "class=6" in h and f"inst={six}" in h]
    message, _, _, _, elements = render(context, ViewState(cls=0, inst_filter="wrong").to_dict())
    assert "classifies every recorded input of this class correctly" in text_of(message)
    assert not elements


def test_an_atlas_without_records_says_how_to_add_them(
    tmp_path: Path, demo_without: Callable[[str], Path]
) -> None:
    copy = demo_without("instances")
    context = ViewContext(
        data=atlas_data.load(str(copy), str(tmp_path / "cache")), file_prefix="/atlas-file/"
    )
    message, _, _, _, elements = render(context, ViewState(cls=6).to_dict())
    assert "no 'instances' part" in text_of(message) and not elements


def test_the_inputs_graph_downloads_as_export_writes_it(
    demo: Atlas, context: ViewContext, tmp_path: Path
) -> None:
    """The card's JSON and GraphML buttons give the files ``compute export --instances``
    writes; networkx reads back the input's nodes and edges."""
    import networkx as nx

    from compute.export import export_instances

    records = demo.instances()
    row = int(np.flatnonzero((records.label == 6) & (records.prediction == 8))[0])
    index = int(records.image_index[row])
    stored = ViewState(cls=6, inst_index=index).to_dict()
    written = export_instances(demo, tmp_path, [index])
    assert [p.name for p in written] == [
        f"digits-instance-{index:07d}-six.json",
        f"digits-instance-{index:07d}-six.graphml",
    ]
    for fmt, path in zip(("json", "graphml"), written, strict=True):
        download = instance_download(context, stored, fmt)
        assert download is not None and download["filename"] == path.name
        assert download["content"] == path.read_text()
    graph = nx.node_link_graph(json.loads(written[0].read_text()))
    want = instance_graph(demo, row)
    assert graph.graph["overlap"] == pytest.approx(want.overlap)
    assert graph.graph["prediction"] == "eight"
    # The nodes and edges the view draws (the input's over its class's graph), by group.
    _, _, _, _, elements = render(context, stored)
    drawn = {
        e["data"]["id"]: e["classes"].split()[0]
        for e in elements
        if "source" not in e["data"] and re.fullmatch(r"\d+-\d+", e["data"]["id"])
    }
    lines = {
        (e["data"]["source"], e["data"]["target"]): e["classes"].split()[0]
        for e in elements
        if "source" in e["data"]
    }
    assert {n: d["group"] for n, d in graph.nodes(data=True)} == drawn
    assert {(s, t): d["group"] for s, t, d in graph.edges(data=True)} == lines
    mine = {f"{a}-{b}" for a, b in zip(want.layer, want.channel, strict=True)}
    assert {n for n, d in graph.nodes(data=True) if d["group"] != "only-a"} == mine
    assert sum(d["group"] != "only-a" for _, _, d in graph.edges(data=True)) == want.source.shape[0]
    theirs = demo.to_networkx(6)
    for s, t, d in graph.edges(data=True):
        assert d["class_weight"] == (theirs.edges[s, t]["weight"] if theirs.has_edge(s, t) else 0)
    back = nx.read_graphml(written[1])
    assert set(back.nodes) == set(graph.nodes) and set(back.edges) == set(graph.edges)
    with pytest.raises(Exception, match="no instance record"):
        export_instances(demo, tmp_path, [10**6])


def test_export_flags_combine(
    demo: Atlas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--instances`` takes the indices as the view writes them (``#401``) and, like
    ``--compare``, replaces the default ``--what``, but ``--subsets`` keeps the graphs; a
    ``--what`` without graphs and ``--subsets`` is refused in one line."""
    from compute.cli import main

    out = tmp_path / "out"
    assert main(["export", str(DEMO_ATLAS_DIR), "--instances", "#401", "--subsets",
                 "--classes", "6", "--format", "json", "--out", str(out)]) == 0  # fmt: skip
    names = sorted(p.name for p in out.iterdir())
    assert "digits-instance-0000401-six.json" in names
    assert "digits-graph-0006-six-mistaken.json" in names
    assert "digits-classes.csv" not in names
    code = main(
        ["export", str(DEMO_ATLAS_DIR), "--what", "classes", "--subsets", "--out", str(out)]
    )
    assert code == 2 and "add graphs to --what" in capsys.readouterr().err


def test_an_inputs_crops_are_what_its_channels_saw(demo: Atlas, tmp_path: Path) -> None:
    """The file route's crop of an input's channel is the receptive-field box around the
    channel's recorded maximum, cut from the model's input (the digits, un-normalised); a
    channel the input does not use, an input without a record or a bad path is a 404."""
    from compute.demo import DemoConfig, load_digits_splits
    from compute.png import thumbnail_png
    from compute.receptive_field import ReceptiveField, crop_box
    from dashboard.config import Settings
    from dashboard.factory import create_app

    client = create_app(
        Settings(atlas_dir=DEMO_ATLAS_DIR, cache_dir=tmp_path / "cache")
    ).server.test_client()
    config = DemoConfig(seed=int(demo.parameters["seed"]))
    splits = load_digits_splits(config.seed, config.test_fraction)
    records = demo.instances()
    fields = demo.parameters["receptive_fields"]
    for row in (0, int(np.flatnonzero(records.prediction != records.label)[0])):
        index = int(records.image_index[row])
        image = (splits.train[index][0][0] * splits.std + splits.mean).clamp(0, 1).numpy()
        pixels = (image * 255.0 + 0.5).clip(0, 255)
        for layer, name in enumerate(demo.layer_names):
            channels, _, positions = records.channels(row, layer)
            field = ReceptiveField.from_manifest(fields[name])
            for channel, (r, c) in zip(channels.tolist(), positions.tolist(), strict=True):
                top, left, bottom, right = crop_box(field, r, c, pixels.shape)
                want = thumbnail_png(pixels[top:bottom, left:right].astype(np.uint8))
                response = client.get(f"/atlas-file/instances/crops/{index}/{layer}-{channel}.png")
                assert response.status_code == 200 and response.mimetype == "image/png"
                assert response.data == want, (index, layer, channel)
            unused = sorted(set(range(demo.layers[layer].channels)) - set(channels.tolist()))
            missing = f"/atlas-file/instances/crops/{index}/{layer}-{unused[0]}.png"
            assert client.get(missing).status_code == 404
    absent = sorted(set(range(1437)) - set(records.image_index.tolist()))
    for path in (
        "/atlas-file/instances/crops/999999/0-0.png",
        f"/atlas-file/instances/crops/{records.image_index[0]}/9-0.png",
        "/atlas-file/instances/crops/1/0-0.png/x",
        "/atlas-file/instances/crops/-1/0-0.png",
    ) + ((f"/atlas-file/instances/crops/{absent[0]}/0-0.png",) if absent else ()):
        assert client.get(path).status_code == 404, path


def test_the_training_and_instance_views_link_the_same_input(tmp_path: Path) -> None:
    """A trace of the split the Summit pass ran over links each explained image that has an
    instance record, both ways; a row whose label or prediction disagrees with the record
    (another numbering, another model) and the demo's trace of another split link nothing."""
    import shutil

    from compute.atlas import TRACE_PATHS, update_atlas
    from compute.trace.explain import load_trace_part
    from dashboard.views.instance.callbacks import header
    from dashboard.views.training.callbacks import render as render_training

    def views(path: Path) -> ViewContext:
        return ViewContext(
            data=atlas_data.load(str(path), str(tmp_path / "cache")),
            file_prefix="/atlas-file/",
        )

    # The shipped demo traces its test split and records its training split: no links.
    demo = views(DEMO_ATLAS_DIR)
    for row in range(5):
        state = ViewState(trace_row=row, trace_all=1)
        assert "inst=" not in " ".join(hrefs(render_training(demo, state.to_dict())[3]))

    copy = tmp_path / "atlas"
    shutil.copytree(DEMO_ATLAS_DIR, copy)
    records = Atlas.open(copy).instances()
    meta, stored = load_trace_part(copy)
    arrays = {name: np.array(stored[name]) for name in ("image_index", "image_label", "prediction")}
    wrong = np.flatnonzero(records.prediction != records.label)
    chosen = [0, 5, int(wrong[0]), int(wrong[1])]  # records the trace's rows 0-3 become
    for row, record in enumerate(chosen):
        arrays["image_index"][row] = records.image_index[record]
        arrays["image_label"][row] = records.label[record]
        arrays["prediction"][row] = records.prediction[record]
    arrays["image_index"][4] = records.image_index[7]  # row 4: the label disagrees
    arrays["image_label"][4] = (records.label[7] + 1) % 10
    arrays["prediction"][4] = records.prediction[7]
    arrays["image_index"][5:] = 10**6  # the rest: inputs without a record
    with update_atlas(copy) as sink:
        for name in ("image_index", "image_label", "prediction"):
            sink.add_array(TRACE_PATHS[name], arrays[name])
        sink.manifest_updates["trace"] = {**meta, "split": "train"}  # type: ignore[attr-defined]
    linked = views(copy)
    for row in range(8):
        training = render_training(linked, ViewState(trace_row=row, trace_all=1).to_dict())
        links = [h for h in hrefs(training[3]) if "inst=" in h]
        if row >= len(chosen):
            assert not links, row
            continue
        record = chosen[row]
        index, label = int(records.image_index[record]), int(records.label[record])
        assert len(links) == 1 and f"class={label}" in links[0]
        assert f"inst={index}" in links[0] and "trow=" in links[0]
        # ... and back: the Instance view of that input links to this trace row.
        state = ViewState.from_query(links[0].split("?", 1)[1], num_classes=10)
        graph = instance_graph(linked.data.atlas, record)
        back = [h for h in hrefs(header(linked, state, graph)) if "trow=" in h]
        back = [h for h in back if "compare=" not in h]  # the mistake's link keeps the row
        assert len(back) == 1 and f"trow={row}&" in back[0] + "&"
    unlinked = instance_graph(linked.data.atlas, 7)
    assert not [h for h in hrefs(header(linked, ViewState(), unlinked)) if "trow=" in h]
    assert "its training trace" not in text_of(header(linked, ViewState(), unlinked))


def test_filters_keep_a_listed_input_and_the_picker_follows_the_confusion(
    demo: Atlas, context: ViewContext
) -> None:
    """A filter link keeps the shown input when the filter lists it; with the graph on
    "mistaken for d" the picker lists exactly the class's inputs predicted as d."""
    records = demo.instances()
    wrong = np.flatnonzero((records.label == 6) & (records.prediction == 8))
    index = int(records.image_index[wrong[0]])
    _, picker, _, _, _ = render(context, ViewState(cls=6, inst_index=index).to_dict())
    filters = {h.split("ifl=")[1].split("&")[0]: h for h in hrefs(picker) if "ifl=" in h}
    assert f"inst={index}" in filters["wrong"] and f"inst={index}" in filters["uncertain"]
    correct = int(
        records.image_index[np.flatnonzero((records.label == 6) & (records.prediction == 6))[0]]
    )
    _, picker, _, _, _ = render(context, ViewState(cls=6, inst_index=correct).to_dict())
    filters = {h.split("ifl=")[1].split("&")[0]: h for h in hrefs(picker) if "ifl=" in h}
    assert "inst=" not in filters["wrong"]
    state = ViewState(cls=6, subset="mistaken", mistaken_for=8)
    _, picker, header, _, _ = render(context, state.to_dict())
    chips = [int(re.search(r"inst=(\d+)", h).group(1)) for h in chip_links(picker)]
    assert (
        chips
        == records.image_index[
            np.flatnonzero((records.label == 6) & (records.prediction == 8))
        ].tolist()
    )
    assert "mistaken for eight" in text_of(picker) and "predicted eight" in text_of(header)
    # Each chip is predicted eight: the pill says it once, the chips do not repeat it.
    arrow = json.dumps("→ eight")[1:-1]  # as text_of writes it
    assert arrow not in text_of(picker)
    _, everything, _, _, _ = render(context, ViewState(cls=6, inst_filter="wrong").to_dict())
    assert arrow in text_of(everything)  # without the confusion, each chip names it
