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

On a CPU, and between token layers anywhere, each slot is its own backward instead
(:func:`_slot_products` says why), and a token target that acts on each token alone
(BERT's MLP units, a ViT MLP's GELU) starts the backward at its input with one-token seeds
(:func:`positionwise_attribution`, checked per batch).

Examples:
    >>> z = torch.ones(1, 2, 2, 2, requires_grad=True)
    >>> y = torch.stack([z[:, 0] + 3 * z[:, 1], -z[:, 1]], dim=1)  # [1, 2, 2, 2]
    >>> channels = torch.tensor([[0]])                          # slot 0: channel 0 of image 0
    >>> gradient_attribution(z, y, channels, torch.zeros(1, 2, dtype=torch.int64))
    tensor([[[1., 3.]]])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

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
    batch = channels.shape[1]
    # see _slot_products; on a CPU one backward per slot is as fast or faster
    batched = source.is_cuda and source.dim() == 4 and target.dim() == 4
    if target.dim() == 3:  # units first, as a map of one row: position t is token t
        target = target.transpose(1, 2).unsqueeze(2)
    spatial = target.shape[2] * target.shape[3]
    flat_target = target.shape[1] * spatial

    def seeds(part: Tensor) -> Tensor:
        """``[n, *target.shape]``: one at each seeded channel's maximum."""
        n = part.shape[0]
        out = torch.zeros((n, batch, flat_target), dtype=target.dtype, device=target.device)
        slot, image = (part >= 0).nonzero(as_tuple=True)
        channel = part[slot, image]
        out[slot, image, channel * spatial + positions[image, channel]] = 1
        return out.view(n, *target.shape)

    return _slot_products(source, target, channels, seeds, token_mask, budget if batched else None)


def _slot_products(
    source: Tensor,
    output: Tensor,
    slots: Tensor,
    seeds: Callable[[Tensor], Tensor],
    token_mask: Tensor | None,
    budget: int | None,
) -> Tensor:
    """``[m, B, C_s]``: per slot ``t``, ``Σ_q source[q] · (seed_t · ∂output/∂source)[q]``.

    ``seeds(slots[a:b])`` gives the cotangents ``[b - a, *output.shape]`` of those slots
    (``slots``: one row per slot, ``m`` rows). With a ``budget``, the slots are chunked so
    that one batched gradient (``is_grads_batched``) stays within ``budget`` elements;
    with ``None``, each slot is its own backward. Between token layers that is faster: attention's
    fused backward has no batching rule, so a batched gradient loops over the slots there
    anyway and then concatenates (MiniLM: 2.31x a bare forward against 2.69x; ViT-B/16:
    9.7 s against 11.3 s; 2-core CPU). On a CPU it is as fast or faster for maps too
    (ResNet-50, batch 32, 112 px: 3.30 s against 4.28 s; ConvNeXt-T 0.93 s against 1.08 s;
    Swin-T 4.40 s against 4.47 s), so only maps on a GPU, not measured, keep the batched
    gradient. The graph is freed after the last slot.
    """
    m, batch = slots.shape[0], source.shape[0]
    tokens = source.dim() == 3
    c_s = source.shape[2] if tokens else source.shape[1]
    out = torch.zeros((m, batch, c_s), dtype=source.dtype, device=source.device)
    if m == 0 or batch == 0:
        return out
    per_slot = batch * max(output[0].numel(), source[0].numel())
    step = 1 if budget is None else max(1, min(m, budget // max(1, per_slot)))
    values = source.detach()
    if tokens and token_mask is not None:  # padding adds nothing to the sum over tokens
        values = values * token_mask.to(values.dtype).unsqueeze(-1)
    positions_of = (2,) if tokens else (3, 4)
    for t0 in range(0, m, step):
        cotangents = seeds(slots[t0 : t0 + step])
        n = cotangents.shape[0]
        last = t0 + step >= m
        if n == 1:
            (grad,) = torch.autograd.grad(output, source, cotangents[0], retain_graph=not last)
            grad = grad.unsqueeze(0)
        else:
            (grad,) = torch.autograd.grad(
                output, source, cotangents, retain_graph=not last, is_grads_batched=True
            )
        out[t0 : t0 + n] = (grad * values).sum(dim=positions_of)
    return out


def positionwise_chain(
    model: nn.Module, target: nn.Module, hooked: set[int]
) -> tuple[nn.Module, list[nn.Module]] | None:
    """Where :func:`positionwise_attribution` may start for ``target``: the module whose
    input it reads, and the modules it reruns on that input, in order.

    The target module alone, or, where it is a child of ``nn.Sequential`` containers (a
    ViT's ``MLPBlock``: Linear, GELU, ...), the containers' children up to it: the
    outermost container's input then stands before the MLP's first Linear, whose backward
    the shortcut skips too. ``None`` where a module in the chain holds a hook of the pass
    (``hooked``: module ids; the target's own hooks do not count, since ``forward`` is
    called without them) or a ``Permute`` (the channels-last tracking must see every one).

    Examples:
        >>> mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))
        >>> block = nn.Sequential(nn.LayerNorm(4), mlp)
        >>> start, rerun = positionwise_chain(block, mlp[1], set())
        >>> start is block, [type(m).__name__ for m in rerun]
        (True, ['LayerNorm', 'Linear', 'GELU'])
    """

    def clear(modules: Sequence[nn.Module]) -> bool:
        every = [m for module in modules for m in module.modules()]
        return not any(
            (m is not target and id(m) in hooked)
            or type(m).__name__ == "Permute"
            # An in-place module would have overwritten the captured input with its output.
            or getattr(m, "inplace", False)
            for m in every
        )

    if not clear([target]):
        return None
    parents = {id(child): module for module in model.modules() for child in module.children()}
    start, rerun = target, [target]
    # Climb while the container's earlier children are clear too (a sibling that is the
    # source layer, say, ends the climb there).
    while (
        isinstance(parent := parents.get(id(start)), nn.Sequential)
        and type(parent).forward is nn.Sequential.forward  # runs its children in order
    ):
        children = list(parent)  # with repeats, as the forward runs them
        before = children[: next(k for k, c in enumerate(children) if c is start)]
        if not clear(before):
            break
        start, rerun = parent, before + rerun
    return start, rerun


def positionwise_attribution(
    source: Tensor,
    rerun: Sequence[nn.Module],
    module_input: Tensor,
    target: Tensor,
    channels: Tensor,
    positions: Tensor,
    token_mask: Tensor | None = None,
) -> Tensor | None:
    """:func:`gradient_attribution` of a token target whose module acts on each token alone.

    When the target module (with the modules before it in its ``nn.Sequential``
    containers: :func:`positionwise_chain`) maps each token's input vector to that token's
    output (a Linear, an activation, a Hugging Face ``BertIntermediate``, a ViT MLP's
    Linear and GELU), the gradient of a target unit at one token passes through them at
    that token only. They are run again on just the seeded tokens' inputs ``[n, 1, D_in]``
    to get each seed's cotangent on the chain's input, so the long backward starts there
    with a one-token seed instead of at the target with a seed as wide as the output (for
    BERT's MLP units, four times the residual width), and skips the chain's backward at
    every other token. The result is the same ``g_ij`` (the chain rule at one token).

    Whether the module is position-wise is checked, not assumed: the recomputed units must
    equal the target's values at the seeded tokens (relative 1e-5); where they do not (the
    module mixes tokens, or cannot run on one token) this returns ``None`` and the caller
    takes the full backward. What the check cannot tell apart is a token mixing weaker than
    that tolerance; its share of ``g_ij`` is then of the same order. In reduced precision
    (bf16, fp16) the rerun rarely matches that closely: the full backward answers there.
    The rerun calls each module's ``forward`` directly: their own hooks do not fire, hooks
    of their submodules do (the pass never has one there: :func:`positionwise_chain`).

    Args:
        source: ``[B, T, C_s]`` the source layer's output, requiring grad.
        rerun: the modules from the chain's input to the target (``forward`` is called,
            without hooks); no hook of the pass may sit inside them.
        module_input: ``[B, T, D_in]`` the chain's input in this forward (computed from
            ``source``).
        target: ``[B, T, C_t]`` its output.
        channels: ``int64 [m, B]`` from :func:`gradient_seeds`.
        positions: ``int64 [B, C_t]`` each unit's token of maximum.
        token_mask: as :func:`gradient_attribution`.

    Returns:
        ``[m, B, C_s]`` attributions (one backward per slot), or ``None`` where the chain
        is not position-wise or nothing is seeded (the full path then answers).
    """
    m, batch = channels.shape
    if (
        not bool((channels >= 0).any())  # nothing seeded: the full path returns zeros
        or source.dim() != 3
        or target.dim() != 3
        or module_input.dim() != 3
        or tuple(module_input.shape[:2]) != tuple(target.shape[:2])
        or not module_input.requires_grad
    ):
        return None
    slot, image = (channels >= 0).nonzero(as_tuple=True)
    unit = channels[slot, image]
    token = positions[image, unit]
    rows = module_input.detach()[image, token].unsqueeze(1).requires_grad_(True)  # [n, 1, D]
    try:
        with torch.enable_grad():
            recomputed = rows
            for module in rerun:
                recomputed = module.forward(recomputed)
    except Exception as exc:  # not runnable on one token: take the full backward
        logger.debug("position-wise shortcut unavailable (%s)", exc)
        return None
    if not isinstance(recomputed, Tensor) or recomputed.shape != (len(unit), 1, target.shape[2]):
        return None
    picked = recomputed[:, 0].gather(1, unit[:, None])[:, 0]
    want = target.detach()[image, token, unit]
    if not torch.allclose(picked.detach(), want, rtol=1e-5, atol=1e-6 * float(want.abs().max())):
        logger.debug("position-wise shortcut refused: the module mixes tokens")
        return None
    (local,) = torch.autograd.grad(picked.sum(), rows)  # [n, 1, D]: each seed's cotangent
    cotangent = local.new_zeros((m, batch, module_input.shape[2]))
    cotangent[slot, image] = local[:, 0]
    where = torch.full((m, batch), -1, dtype=torch.int64, device=channels.device)
    where[slot, image] = token

    def seeds(part: Tensor) -> Tensor:
        """``[n, B, T, D_in]``: each slot's cotangent at its token (``part``: slot numbers)."""
        shape = (part.shape[0], *module_input.shape)
        out = torch.zeros(shape, dtype=module_input.dtype, device=module_input.device)
        at = where[part]
        s, b = (at >= 0).nonzero(as_tuple=True)
        out[s, b, at[s, b]] = cotangent[part][s, b]
        return out

    slots = torch.arange(m, device=channels.device)
    return _slot_products(source, module_input, slots, seeds, token_mask, None)


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
