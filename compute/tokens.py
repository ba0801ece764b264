"""Token layers: layers whose output is a sequence ``[N, T, D]`` (text models, ViT).

Summit's unit on a token layer is one of its ``D`` hidden units, and its per-input
statistic is the maximum over the input's non-padding tokens (:func:`token_max`), the
analogue of a channel's spatial maximum on an image map. :func:`token_layers` tells which
token layers of a model that statistic can read, and marks the MLP's hidden units (the
layers wider than the model's residual stream), the natural choice of Summit neurons.

Examples:
    >>> z = torch.tensor([[[1.0, -3.0], [5.0, -1.0], [9.0, 9.0]]])   # [1, T=3, D=2]
    >>> mask = torch.tensor([[1, 1, 0]])                                # the last is padding
    >>> values, positions = token_max(z, mask)
    >>> values.tolist(), positions.tolist()
    ([[5.0, -1.0]], [[1, 1]])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from compute.models import LayerDescription

#: A token layer in the Summit pass's tables: a map of one row and this many columns, so a
#: flat position is a token index and ``(row, col)`` is ``(0, t)`` (the number of tokens
#: varies from batch to batch; the layer's shape does not).
TOKEN_MAP_WIDTH = 1 << 30

#: ``TokenLayer.role`` of a layer wider than the residual stream after its activation.
ROLE_MLP = "mlp"
#: ``TokenLayer.role`` of the MLP's first ``Linear`` (its units before the activation).
ROLE_MLP_PRE = "mlp-pre"


def token_max(outputs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per input and unit, the maximum over the non-padding tokens and where it is.

    Padding never wins: padded positions are excluded before the maximum, so even an input
    whose real values are all negative (or ``-inf``) gets its maximum from a real token.

    Args:
        outputs: ``[N, T, D]`` layer output.
        mask: ``[N, T]`` attention mask, nonzero (or ``True``) at real tokens; every input
            must have at least one.

    Returns:
        ``(values, positions)``: ``[N, D]`` maxima (dtype of ``outputs``) and ``int64
        [N, D]`` token index of the first maximum among the real tokens.

    Raises:
        ValueError: for shapes that do not match, or an input without a real token.

    Examples:
        >>> z = torch.full((1, 3, 1), -2.0)
        >>> token_max(z, torch.tensor([[0, 1, 1]]))[1].tolist()   # left padding
        [[1]]
    """
    if outputs.dim() != 3 or tuple(mask.shape) != tuple(outputs.shape[:2]):
        raise ValueError(
            f"token_max needs outputs [N, T, D] and mask [N, T], not "
            f"{tuple(outputs.shape)} and {tuple(mask.shape)}"
        )
    real = mask.to(device=outputs.device, dtype=torch.bool)
    has_real = real.any(dim=1)
    if not bool(has_real.all()):
        first = int((~has_real).nonzero()[0, 0])
        raise ValueError(f"input {first} of the batch has no real (non-padding) token")
    masked = outputs.masked_fill(~real.unsqueeze(-1), float("-inf"))
    values, positions = masked.max(dim=1)
    # Where every real value is -inf, -inf ties with padding: take the first real token.
    first_real = real.to(torch.int8).argmax(dim=1, keepdim=True).expand_as(positions)
    positions = torch.where(values == float("-inf"), first_real, positions)
    return values, positions


class TokenLayer(NamedTuple):
    """One token layer of a model, as ``python -m compute layers`` lists it.

    Attributes:
        name: the module's name (``named_modules()``).
        type: the module's class name.
        tokens: ``T`` at the probe input.
        units: ``D``, the hidden units (Summit's neurons on this layer).
        usable: whether :func:`token_max` can read it: its ``T`` is the input's, so the
            input's attention mask applies (always, for inputs without padding).
        role: :data:`ROLE_MLP`, :data:`ROLE_MLP_PRE` or ``""``.
    """

    name: str
    type: str
    tokens: int
    units: int
    usable: bool
    role: str


def residual_width(rows: Sequence[LayerDescription]) -> int | None:
    """The most common ``D`` of the token layers (ties: the smaller): the width of the
    residual stream, which embeddings, attention and block outputs all have.

    Examples:
        >>> rows = [LayerDescription(str(i), "X", d, None, None, 8) for i, d in
        ...         enumerate([32, 32, 64, 32, 64])]
        >>> residual_width(rows)
        32
    """
    counts = Counter(row.channels for row in rows if row.token and row.channels is not None)
    if not counts:
        return None
    return min(counts, key=lambda width: (-counts[width], width))


def token_layers(rows: Sequence[LayerDescription], tokens: int | None) -> list[TokenLayer]:
    """The token layers among a model's described layers, each marked usable or not and
    with its role.

    Args:
        rows: :func:`compute.models.describe_layers` of the model.
        tokens: the probe's sequence length (``ModelInput.tokens``): a layer of another
            length cannot be masked; ``None``: any length is usable (no padding).

    Returns:
        One :class:`TokenLayer` per ``[N, T, D]`` row, in ``rows``' order. A layer wider
        than :func:`residual_width` is the MLP's hidden layer: :data:`ROLE_MLP` after the
        activation (e.g. BERT's ``...intermediate`` and its ``intermediate_act_fn``,
        ViT's ``mlp.1``), :data:`ROLE_MLP_PRE` for a ``Linear`` (before it).

    Examples:
        >>> rows = [LayerDescription("emb", "Embedding", 4, None, None, 8),
        ...         LayerDescription("fc1", "Linear", 16, None, None, 8),
        ...         LayerDescription("act", "GELU", 16, None, None, 8),
        ...         LayerDescription("fc2", "Linear", 4, None, None, 8),
        ...         LayerDescription("pool", "Linear", 4, None, None, None)]
        >>> [(t.name, t.usable, t.role) for t in token_layers(rows, 8)]
        [('emb', True, ''), ('fc1', True, 'mlp-pre'), ('act', True, 'mlp'), ('fc2', True, '')]
    """
    width = residual_width(rows)
    found = []
    for row in rows:
        if not row.token or row.channels is None or row.tokens is None:
            continue
        role = ""
        if width is not None and row.channels > width:
            role = ROLE_MLP_PRE if row.type == "Linear" else ROLE_MLP
        usable = tokens is None or row.tokens == tokens
        found.append(TokenLayer(row.name, row.type, row.tokens, row.channels, usable, role))
    return found
