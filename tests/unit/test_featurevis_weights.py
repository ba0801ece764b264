"""Feature visualization renders the atlas's own model, or refuses in one line.

An atlas whose weights were not saved (the default above 64 MB) used to be rendered with the
spec's random weights and only a log warning: pictures of another model than the one the
atlas explains.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from compute.atlas import Atlas, AtlasError
from compute.build import build_atlas
from compute.checkpoint import model_fingerprint
from compute.featurevis.cli import load_model, run_featurevis
from compute.featurevis.render import RenderConfig
from compute.summit.config import SummitConfig
from tests.helpers.atlas_models import LAYERS, tiny_cnn

SPEC = "tests.helpers.atlas_models:tiny_cnn"


def _images() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 8, 8, generator=generator)
    labels = torch.arange(12) % 3
    return [(images[i : i + 4], labels[i : i + 4], torch.arange(i, i + 4)) for i in (0, 4, 8)]


def _build(out: Path, model: torch.nn.Module, spec: str | None = SPEC) -> Path:
    return build_atlas(
        model,
        DataLoader(_images(), batch_size=None),
        layers=list(LAYERS),
        classes=["a", "b", "c"],
        out=out,
        config=SummitConfig(selection="topk", top_k=2, examples_per_channel=2),
        crops_per_channel=0,
        mapper=False,
        progress=False,
        save_weights=False,
        model_info={"spec": spec} if spec else None,
    )


def _trained() -> torch.nn.Module:
    """The seeded model after "training": not what its spec builds."""
    model = tiny_cnn()
    with torch.no_grad():
        model.head.bias.add_(0.5)
        model.features[0].weight.mul_(1.5)
    return model


def test_unsaved_trained_weights_are_refused_or_checked(tmp_path: Path) -> None:
    model = _trained()
    atlas = Atlas.open(_build(tmp_path / "atlas", model))
    assert atlas.manifest["model"]["state_sha256"] == model_fingerprint(model)
    with pytest.raises(AtlasError, match="does not store its model's weights") as info:
        load_model(atlas, "cpu")
    assert "--weights FILE" in str(info.value) and "\n" not in str(info.value)

    right = tmp_path / "trained.pt"
    torch.save(model.state_dict(), right)
    loaded = load_model(atlas, "cpu", weights=right)
    assert model_fingerprint(loaded) == model_fingerprint(model)

    wrong = tmp_path / "other.pt"
    torch.save(tiny_cnn().state_dict(), wrong)
    with pytest.raises(AtlasError, match="are not the weights atlas"):
        load_model(atlas, "cpu", weights=wrong)

    untrained = load_model(atlas, "cpu", random_weights=True)  # on purpose: allowed
    assert model_fingerprint(untrained) == model_fingerprint(tiny_cnn())


def test_a_build_from_seeded_random_weights_is_rebuilt_exactly(tmp_path: Path) -> None:
    """A spec's own (seeded) initialisation reproduces the digest: that is the atlas's model."""
    atlas = Atlas.open(_build(tmp_path / "atlas", tiny_cnn()))
    assert model_fingerprint(load_model(atlas, "cpu")) == atlas.manifest["model"]["state_sha256"]


def test_an_atlas_built_from_python_takes_its_model(tmp_path: Path) -> None:
    """Without ``model.spec`` the way is ``run_featurevis(atlas, model=model)``, checked."""
    model = _trained()
    path = _build(tmp_path / "atlas", model, spec=None)
    with pytest.raises(AtlasError, match=r"run_featurevis\(atlas, model=model\)"):
        load_model(Atlas.open(path), "cpu")
    with pytest.raises(AtlasError, match="are not the weights atlas"):
        run_featurevis(path, model=tiny_cnn(), config=RenderConfig(steps=2), progress=False)
    written = run_featurevis(
        path, model=model, layers=[LAYERS[0]], config=RenderConfig(steps=2), progress=False
    )
    assert written > 0
    assert Atlas.open(path).parts >= {"featurevis"}
