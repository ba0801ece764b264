"""Parameters of the Summit aggregation pass and of the derived structures."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from compute.errors import BuildError

SelectionMode = Literal["mass", "topk"]
AggregateBy = Literal["label", "prediction"]


@dataclass(frozen=True)
class SummitConfig:
    """How the one streaming pass aggregates activations and influence.

    Attributes:
        selection: ``"mass"``: per image keep the smallest prefix of channels (sorted by
            normalised spatial max, descending) whose share reaches ``tau``; ``"topk"``:
            keep the ``top_k`` channels with the largest spatial max.
        tau: probability-mass threshold for ``selection="mass"`` (the original used 0.01
            on 256-1024-channel layers; small layers need a larger value).
        top_k: channels per image for ``selection="topk"``.
        influence_top_k: input channels counted per (image, output channel).
        examples_per_channel: top dataset examples kept per channel.
        aggregate_by: count an image under its true ``label`` or its ``prediction``.
        confidence_bins: bins of the per-class top-softmax confidence histogram.
        subsets: also count each class's wrongly classified images apart, keyed by their
            confusion pair (``compute.summit.subsets``): the correct, mistaken and
            confusion-pair graphs.
        confusion_min: fewest images of a confusion pair ``(c, d)`` that gets its own
            counts and graph.
        confusion_pairs: most confusion pairs stored per class (the most frequent).
    """

    selection: SelectionMode = "mass"
    tau: float = 0.01
    top_k: int = 5
    influence_top_k: int = 5
    examples_per_channel: int = 10
    aggregate_by: AggregateBy = "label"
    confidence_bins: int = 20
    subsets: bool = True
    confusion_min: int = 3
    confusion_pairs: int = 3

    def __post_init__(self) -> None:
        if self.selection not in ("mass", "topk"):
            raise BuildError(f"selection must be 'mass' or 'topk', not {self.selection!r}")
        if not 0.0 < self.tau <= 1.0:
            raise BuildError(f"tau must be in (0, 1], not {self.tau}")
        if self.top_k < 1 or self.influence_top_k < 1 or self.examples_per_channel < 1:
            raise BuildError("top_k, influence_top_k and examples_per_channel must be >= 1")
        if self.aggregate_by not in ("label", "prediction"):
            raise BuildError(
                f"aggregate_by must be 'label' or 'prediction', not {self.aggregate_by!r}"
            )
        if self.confidence_bins < 1:
            raise BuildError("confidence_bins must be >= 1")
        if self.confusion_min < 1 or self.confusion_pairs < 0:
            raise BuildError("confusion_min must be >= 1 and confusion_pairs >= 0")

    def to_manifest(self) -> dict[str, Any]:
        """The ``parameters`` entries of the atlas manifest for this pass."""
        values = asdict(self)
        selection = (
            {"mode": "mass", "tau": self.tau}
            if self.selection == "mass"
            else {"mode": "topk", "k": self.top_k}
        )
        return {
            "selection": selection,
            "influence_top_k": values["influence_top_k"],
            "examples_per_channel": values["examples_per_channel"],
            "aggregate_by": values["aggregate_by"],
            "confidence_bins": values["confidence_bins"],
            **(
                {
                    "subsets": {
                        "confusion_min": self.confusion_min,
                        "confusion_pairs": self.confusion_pairs,
                    }
                }
                if self.subsets
                else {}
            ),
        }


@dataclass(frozen=True)
class GraphConfig:
    """Attribution-graph parameters (personalised PageRank and node selection).

    Attributes:
        alpha: PageRank damping factor (probability of following an edge).
        mass: share of a layer's PageRank mass whose top nodes are kept.
        relax_step: how much ``mass`` grows for a layer (and the one below) when the layer
            has no kept node connected to a kept node below it.
        max_iterations: power-iteration cap.
        tolerance: power-iteration stopping tolerance (L1 change per class).
    """

    alpha: float = 0.85
    mass: float = 0.10
    relax_step: float = 0.005
    max_iterations: int = 200
    tolerance: float = 1e-10

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise BuildError(f"pagerank alpha must be in (0, 1), not {self.alpha}")
        if not 0.0 < self.mass <= 1.0:
            raise BuildError(f"pagerank mass must be in (0, 1], not {self.mass}")
        if not 0.0 < self.relax_step <= 1.0:
            raise BuildError(f"relax_step must be in (0, 1], not {self.relax_step}")

    def to_manifest(self) -> dict[str, Any]:
        return {"pagerank": {"alpha": self.alpha, "mass": self.mass, "relax_step": self.relax_step}}


@dataclass(frozen=True)
class EmbeddingConfig:
    """Class embedding (UMAP per layer on rows of A, cosine, chained initialisation)."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 6510

    def __post_init__(self) -> None:
        if self.n_neighbors < 2:
            raise BuildError("embedding n_neighbors must be >= 2")

    def to_manifest(self) -> dict[str, Any]:
        return {"embedding": {"method": "umap", "metric": "cosine", **asdict(self)}}
