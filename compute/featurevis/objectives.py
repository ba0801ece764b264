"""Objectives: what the optimiser maximises, per image of the batch.

Every objective maps a layer's activations ``float[N, C, h, w]`` (one row per image being
optimised) to per-image scores ``float[N]`` (or per-group scores for diversity); the
render loop maximises their sum. Scores are per image because the images are independent
(their own parameters), so one batch optimises many channels at once.

- :func:`channel`: mean of one channel's activation map (Lucid's ``channel``; the
  objective behind Summit's channel images).
- :func:`diversity`: Lucid's ``diversity``: summed cosine similarity between the style
  (Gram) matrices of the images of a group, to be *subtracted*, so a group of images
  of the same channel shows different facets of it.
- :func:`direction_cossim`: the Activation Atlas inversion objective
  ``dot(act, v) · max(0.1, cos(act, v))²``.

Examples:
    >>> import torch
    >>> acts = torch.rand(4, 8, 5, 5)
    >>> channel(acts, torch.tensor([0, 1, 2, 3])).shape
    torch.Size([4])
    >>> diversity(acts, group_size=2).shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Position = Literal["center", "mean"]


def channel(acts: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Mean activation of each image's own channel.

    Args:
        acts: ``float[N, C, h, w]`` activations.
        channels: ``int64[N]``, the channel each image optimises.

    Returns:
        ``float[N]``: spatial mean of ``acts[i, channels[i]]``.
    """
    rows = torch.arange(acts.shape[0], device=acts.device)
    return acts[rows, channels.to(acts.device)].mean(dim=(1, 2))


def gram_matrices(acts: torch.Tensor) -> torch.Tensor:
    """Unit-norm Gram (style) matrices.

    Args:
        acts: ``float[N, C, h, w]``.

    Returns:
        ``float[N, C*C]``: each image's ``A Aᵀ`` over positions, flattened and L2-normalised
        (so the dot of two rows is their cosine similarity, as Lucid's ``diversity``).
    """
    flat = acts.flatten(2)  # [N, C, h*w]
    grams = torch.bmm(flat, flat.transpose(1, 2)).flatten(1)  # [N, C*C]
    return F.normalize(grams, dim=1, eps=1e-10)


def diversity(acts: torch.Tensor, group_size: int) -> torch.Tensor:
    """Similarity of the images within each group (lower = more diverse).

    Images ``g*group_size .. (g+1)*group_size - 1`` form group ``g`` (all images of one
    channel). As Lucid: ``sum_{i != j} cos(gram_i, gram_j) / group_size`` per group.

    Args:
        acts: ``float[G*K, C, h, w]`` with ``K = group_size``.
        group_size: images per group ``K`` (>= 1).

    Returns:
        ``float[G]``: the penalty of each group (subtract it, times a weight, from the
        objective).
    """
    grams = gram_matrices(acts).view(-1, group_size, acts.shape[1] ** 2)  # [G, K, C*C]
    sims = torch.bmm(grams, grams.transpose(1, 2))  # [G, K, K]
    off_diagonal = sims.sum(dim=(1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(dim=1)
    return off_diagonal / group_size


def direction_cossim(
    acts: torch.Tensor,
    vectors: torch.Tensor,
    *,
    position: Position = "center",
    cossim_pow: float = 2.0,
) -> torch.Tensor:
    """Activation Atlas' inversion objective ``dot(a, v) · max(0.1, cos(a, v))^cossim_pow``.

    Args:
        acts: ``float[N, C, h, w]``.
        vectors: ``float[N, C]`` target activation vector of each image (or ``[C]`` for all).
        position: which activation ``a`` is compared with ``v``: ``"center"`` (default,
            as Activation Atlas, whose vectors are activations at single positions) takes
            the activation at the map's centre position; ``"mean"`` takes the spatial mean
            of the map (for vectors that are spatial means, e.g. a channel profile).
        cossim_pow: power of the cosine term (Activation Atlas: 2). The cosine rewards the
            *direction*, the dot alone would reward mere magnitude.

    Returns:
        ``float[N]``: the objective of each image. ``dot`` is the mean over channels of
        ``a * v`` (Lucid's scaling).
    """
    if position == "center":
        a = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2]
    elif position == "mean":
        a = acts.mean(dim=(2, 3))
    else:
        raise ValueError(f"position must be 'center' or 'mean', not {position!r}")
    v = vectors.to(a).expand_as(a)
    dot = (a * v).mean(dim=1)
    cos = F.cosine_similarity(a, v, dim=1, eps=1e-4)
    return dot * cos.clamp(min=0.1) ** cossim_pow
