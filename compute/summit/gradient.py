"""Gradient × activation channel attribution between two chosen layers (any architecture).

Where no single convolution joins two chosen layers (residual additions, depthwise-separable
blocks, several convolutions, concatenations), the influence of source channel ``j`` on
target channel ``i`` for image ``x`` is

    ``g_ij(x) = Σ_q Z_j(x)[q] · ∂Y_i(x)[p*] / ∂Z_j(x)[q]``

with ``Z`` the source layer's output, ``Y`` the target layer's output and ``p*`` the first
position of ``Y_i``'s spatial maximum (the activation statistic Summit counts), i.e. the
first-order share of ``max_p Y_i`` carried by channel ``j`` (the derivative of
``Y_i[p*]`` along scaling the whole channel ``Z_j``). It is computed only for the target
channels selected by the activation rule (at most :data:`MAX_CHANNELS` per image, largest
first), by batched vector-Jacobian products: slot ``t`` seeds, for every image at once, the
``t``-th selected channel of that image (images are independent in eval mode), so the cost
is at most ``MAX_CHANNELS`` backward passes of the block between the layers per batch, with
no per-image loop. Per (image, selected target channel) the top-k strictly positive
``g_ij`` (ties: lowest ``j``) are counted exactly like the convolution influences.

Examples:
    >>> z = torch.ones(1, 2, 2, 2, requires_grad=True)
    >>> y = torch.stack([z[:, 0] + 3 * z[:, 1], -z[:, 1]], dim=1)  # [1, 2, 2, 2]
    >>> channels = torch.tensor([[0]])                          # slot 0: channel 0 of image 0
    >>> gradient_attribution(z, y, channels, torch.zeros(1, 2, dtype=torch.int64))
    tensor([[[1., 3.]]])
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from compute.summit.influence import DEFAULT_BUDGET, topk_triples

logger = logging.getLogger(__name__)

#: Most target channels per image whose attribution is computed (the largest selected ones).
MAX_CHANNELS = 8


def gradient_seeds(values: Tensor, selected: Tensor, max_channels: int = MAX_CHANNELS) -> Tensor:
    """Which target channel each backward slot seeds, per image.

    Args:
        values: ``[B, C]`` spatial maxima of the target layer.
        selected: ``bool [B, C]`` channels chosen by the activation rule.
        max_channels: most slots (channels per image).

    Returns:
        ``int64 [m, B]``: slot ``t`` holds image ``b``'s ``t``-th selected channel by value
        (descending, ties: lowest index), ``-1`` where the image has fewer; ``m`` is the
        largest number of selected channels of any image, at most ``max_channels``.

    Examples:
        >>> gradient_seeds(torch.tensor([[1.0, 3.0, 3.0]]), torch.tensor([[True, True, True]]), 2)
        tensor([[1],
                [2]])
    """
    batch, _ = values.shape
    m = min(max_channels, int(selected.sum(dim=1).max())) if batch else 0
    if m <= 0:
        return torch.empty((0, batch), dtype=torch.int64, device=values.device)
    scores = torch.where(selected, values, torch.full_like(values, -torch.inf))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :m]  # [B, m]
    kept = selected.gather(1, order)
    return torch.where(kept, order, -1).t().contiguous()


def gradient_attribution(
    source: Tensor,
    target: Tensor,
    channels: Tensor,
    positions: Tensor,
    budget: int = DEFAULT_BUDGET,
    token_mask: Tensor | None = None,
) -> Tensor:
    """``g_ij`` for the seeded target channels of every image.

    Either layer may be a token layer ``[B, T, D]`` (a text model's or a ViT's): its units
    are the ``D`` hidden units, its positions the tokens, and the sum over the source's
    positions skips padding (``token_mask``).

    Args:
        source: ``[B, C_s, H, W]`` or ``[B, T, C_s]`` the source layer's output, requiring
            grad; ``target`` is computed from it (image ``b`` of ``target`` from image ``b``
            of ``source`` only).
        target: ``[B, C_t, H', W']`` or ``[B, T', C_t]`` the target layer's output.
        channels: ``int64 [m, B]`` from :func:`gradient_seeds` (``-1``: no channel).
        positions: ``int64 [B, C_t]`` flat position of each target channel's maximum (a
            token layer's: the token index).
        budget: bound on the elements of one batched gradient (slots are chunked to fit).
        token_mask: ``[B, T]``, nonzero at a token source's real tokens (``None``: all).

    Returns:
        ``[m, B, C_s]`` attributions (zero in empty slots). The graph of ``target`` is
        freed after the last chunk.
    """
    m, batch = channels.shape
    tokens = source.dim() == 3
    c_s = source.shape[2] if tokens else source.shape[1]
    out = torch.zeros((m, batch, c_s), dtype=source.dtype, device=source.device)
    if m == 0 or batch == 0:
        return out
    per_slot = batch * max(target[0].numel(), source[0].numel())
    step = max(1, min(m, budget // max(1, per_slot)))
    if target.dim() == 3:  # units first, as a map of one row: position t is token t
        target = target.transpose(1, 2).unsqueeze(2)
    flat_target = target.shape[1] * target.shape[2] * target.shape[3]
    spatial = target.shape[2] * target.shape[3]
    values = source.detach()
    if tokens and token_mask is not None:  # padding adds nothing to the sum over tokens
        values = values * token_mask.to(values.dtype).unsqueeze(-1)
    positions_of = (2,) if tokens else (3, 4)
    for t0 in range(0, m, step):
        part = channels[t0 : t0 + step]  # [n, B]
        n = part.shape[0]
        seeds = torch.zeros((n, batch, flat_target), dtype=target.dtype, device=target.device)
        slot, image = (part >= 0).nonzero(as_tuple=True)
        channel = part[slot, image]
        seeds[slot, image, channel * spatial + positions[image, channel]] = 1
        seeds = seeds.view(n, *target.shape)
        last = t0 + step >= m
        if n == 1:
            (grad,) = torch.autograd.grad(target, source, seeds[0], retain_graph=not last)
            grad = grad.unsqueeze(0)
        else:
            (grad,) = torch.autograd.grad(
                target, source, seeds, retain_graph=not last, is_grads_batched=True
            )
        out[t0 : t0 + n] = (grad * values).sum(dim=positions_of)
    return out


def attribution_topk(
    attribution: Tensor, channels: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per (image, seeded target channel), the ``k`` source channels of largest positive ``g_ij``.

    Args:
        attribution: ``[m, B, C_s]`` from :func:`gradient_attribution`.
        channels: ``int64 [m, B]`` the seeded target channels (``-1``: none).
        k: source channels kept per row; ties: lowest ``j``; only ``g_ij > 0`` counts.

    Returns:
        ``(b, i, j)``: ``int64 [T]`` each (image, target channel, source channel).

    Examples:
        >>> attribution_topk(torch.tensor([[[0.5, 2.0, -1.0]]]), torch.tensor([[4]]), 2)
        (tensor([0, 0]), tensor([4, 4]), tensor([0, 1]))
    """
    clean = torch.where((channels >= 0)[..., None], attribution, torch.zeros_like(attribution))
    slot, b, j = topk_triples(clean, k)
    return b, channels[slot, b], j
