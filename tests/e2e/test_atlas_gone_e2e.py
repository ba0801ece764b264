"""End-to-end: how an atlas was built (the approximate badge, how influence was computed)
and a tab left open on an atlas that is then removed from the deployment's folder: it says
so in the page and keeps showing what it showed (never the default atlas's data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from compute.atlas import MANIFEST, BuildSettings, manifest_layers
from dashboard import atlases, ids
from dashboard.views.summit import ids as summit_ids
from tests.e2e.browser import save_full_page, serve_app, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="needs chromedriver"),
]


def built_in_bf16(atlas: Path) -> None:
    """Record a bf16 build whose layers are joined by a convolution, then a residual block."""
    manifest = json.loads((atlas / MANIFEST).read_text())
    layers = manifest["layers"]
    shapes = [(la["channels"], la["height"], la["width"]) for la in layers]
    kinds = [None, "conv", *["gradient"] * (len(layers) - 2)]
    manifest["layers"] = manifest_layers([la["name"] for la in layers], shapes, kinds)
    manifest["build"] = BuildSettings(precision="bf16").to_manifest()
    (atlas / MANIFEST).write_text(json.dumps(manifest))


def test_build_facts_and_a_removed_atlas(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, make_atlas: Any, tmp_path: Path
) -> None:
    root = tmp_path / "atlases"
    make_atlas(root / "alpha", num_classes=6, seed=1)
    built_in_bf16(make_atlas(root / "beta", num_classes=9, seed=2))
    monkeypatch.setattr(atlases, "RESCAN_SECONDS", 0.0)  # see the removal at once
    serve_app(dash_duo, monkeypatch, root, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?atlas=beta@1&class=8")
    dash_duo.wait_for_text_to_equal("#graph-header .class-name", "class 008", timeout=20)
    alert = dash_duo.find_element(f"#{ids.ATLAS_ALERT}")
    assert not alert.is_displayed()
    badge = dash_duo.find_element(f"#{ids.APPROXIMATE_BADGE}")
    assert badge.text == "approximate: bf16" and "mixed-precision" in badge.get_attribute("title")
    dash_duo.find_element(".card-graph details.help summary").click()
    dash_duo.wait_for_contains_text(f"#{summit_ids.GRAPH_INFLUENCE_KINDS}", "layer0 → layer1")
    assert (
        "gradient × activation"
        in dash_duo.find_element(f"#{summit_ids.GRAPH_INFLUENCE_KINDS}").text
    )

    shutil.rmtree(root / "beta")
    dash_duo.select_dcc_dropdown(f"#{summit_ids.LAYER}", index=0)  # any interaction
    dash_duo.wait_for_contains_text(
        f"#{ids.ATLAS_ALERT}", "The atlas beta@1 is no longer served here", timeout=15
    )
    assert dash_duo.find_element(f"#{ids.ATLAS_ALERT}").is_displayed()
    # Nothing was redrawn from another atlas: the class shown is still beta's class 8
    # (alpha has six classes), and the URL still names beta.
    assert dash_duo.find_element("#graph-header .class-name").text == "class 008"
    assert "atlas=beta@1" in dash_duo.driver.current_url
    save_full_page(dash_duo, "atlas-gone.png")
    # The alert's link opens the list of the atlases served here.
    dash_duo.find_element(f"#{ids.ATLAS_ALERT} a.alert-link").click()
    dash_duo.wait_for_contains_text("body", "Atlas not found", timeout=15)
    wait_until(lambda: "alpha" in dash_duo.find_element("body").text)
    assert dash_duo.get_logs() == []
