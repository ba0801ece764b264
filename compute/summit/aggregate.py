"""Summit's one streaming aggregation pass: activation counts, influence counts, class
statistics and top examples, for any number of chosen layers, in one forward per batch.

Hooks reduce each captured tensor immediately (per-channel maxima and their positions on
the chosen layers; top-k influences on the connecting convolutions' inputs), so memory
does not grow with the dataset and later in-place operations cannot alter what was seen.

How consecutive layers connect decides how influence is computed
(:func:`compute.connect.find_connections`): exactly through one convolution; per branch and
by widest path through the bottlenecks of an Inception block
(:mod:`compute.summit.inception`); otherwise by gradient × activation attribution
(:mod:`compute.summit.gradient`), for which the forward pass runs with autograd enabled
only between the two layers (the source's output becomes a fresh leaf, the target's output
is cut from the rest of the model) and the attributions follow from batched
vector-Jacobian products taken as soon as the target layer has run, so only one block's
graph is alive at a time.

Examples:
    >>> with SummitPass(model, ["features.4", "features.7"], 10, SummitConfig()) as summit:
    ...     for images, labels, indices in loader:              # doctest: +SKIP
    ...         summit.update(images, labels, indices)
    ...     aggregates = summit.result()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from compute.capture import ClosingContext, HookSet, resolve_modules
from compute.connect import (
    AnyConnection,
    Connection,
    GradientConnection,
    InceptionConnection,
    find_connections,
)
from compute.errors import BuildError
from compute.summit.activation import (
    STATISTICS_THREADS,
    intra_op_threads,
    select_mass,
    select_topk,
    spatial_max,
    spatial_max_above,
)
from compute.summit.config import SummitConfig
from compute.summit.examples import RunningTopExamples
from compute.summit.gradient import (
    attribution_topk,
    gradient_attribution,
    gradient_seeds,
    positionwise_attribution,
    positionwise_chain,
)
from compute.summit.inception import direct_limits, widest_path
from compute.summit.influence import DEFAULT_BUDGET, conv_geometry, influence_topk
from compute.summit.instances import InstanceArrays, InstanceConfig, InstanceRecorder
from compute.summit.subsets import (
    SUBSET_KINDS,
    SubsetCounts,
    class_of_pair,
    dense_counts,
    keys_matrix,
    pair_space,
    regroup,
    row_of_pair,
    select_pairs,
)
from compute.tokens import TOKEN_MAP_WIDTH, token_max

logger = logging.getLogger(__name__)


@dataclass
class SummitAggregates:
    """Everything the Summit pass accumulates (numpy / scipy, ready for the atlas writer).

    Attributes:
        layers: chosen layer names, input to output.
        layer_shapes: ``(channels, height, width)`` of each layer's output.
        activation_counts: ``int64 [classes, channels]`` per layer (**A**).
        influence_counts: per layer, ``csr_array (classes*C_out, C_in)`` int64 with row
            ``c*C_out + i`` (**I**), ``None`` for the first layer.
        num_images: ``int64 [classes]`` images per true class.
        num_correct: ``int64 [classes]`` of which top-1 correct.
        confidence_hist: ``int64 [classes, bins]`` histogram of the top softmax probability.
        confusion: ``int64 [classes, classes]`` images of true class ``c`` (row) predicted
            as class ``p`` (column); a prediction outside the classes (a model output the
            class map leaves out) is not counted.
        example_index: per layer ``int64 [channels, n]``, ``-1`` = empty.
        example_value: per layer ``float32 [channels, n]``.
        example_position: per layer ``int32 [channels, n, 2]`` (row, col).
        subsets: the correct / mistaken / confusion-pair counts (``None``: not counted,
            ``SummitConfig.subsets`` off).
        instances: the instance records (``None``: none asked for).
        top_tokens: per layer of a text model, ``(ids int64 [units, k], counts int64
            [units, k])``: the token ids most often at a selected unit's maximum over the
            dataset, most frequent first (ties: lowest id; ``-1``: none); ``None`` for a
            layer without token ids (an image model's), or for all without a text batch.
    """

    layers: list[str]
    layer_shapes: list[tuple[int, int, int]]
    activation_counts: list[np.ndarray]
    influence_counts: list[sp.csr_array | None]
    num_images: np.ndarray
    num_correct: np.ndarray
    confidence_hist: np.ndarray
    confusion: np.ndarray
    example_index: list[np.ndarray]
    example_value: list[np.ndarray]
    example_position: list[np.ndarray]
    subsets: SubsetCounts | None = None
    instances: InstanceArrays | None = None
    top_tokens: list[tuple[np.ndarray, np.ndarray] | None] | None = None


#: Counter names of the subset counts: ``SUBSET_PREFIX + name`` of each influence counter,
#: ``subset.layer.{i}`` (activation) and ``subset.images``, all keyed by confusion pair.
SUBSET_PREFIX = "subset."

_MIN_FLUSH = 1 << 18

#: On CPU, the inputs of the convolutions whose influence is counted are copied in their
#: hook, up to this many elements per batch in all (64 MB in float32), and reduced after
#: the forward pass with the other per-batch statistics: the forward keeps torch's threads
#: and the many small influence operations run in one thread-capped stretch (switching
#: the thread count inside the forward pass, per hook, stalled the next parallel operation
#: on a busy machine: ~7 ms each, ~25% of the demo pass). Larger inputs, and every input
#: on an accelerator, are reduced in the hook (no copy).
DEFER_LIMIT = 1 << 24

#: Worker threads for that deferred influence step (``None``: torch's intra-op thread
#: count when :meth:`SummitPass.update` is called; 1: inline). Each worker runs whole
#: blocks of images on one intra-op thread, meanwhile the calling thread aggregates the
#: activations: the cores are shared by coarse tasks that never wait for each other
#: (unlike 2-thread small operations, which on a busy machine each waited for the
#: slower thread), and on an idle machine the step uses every core.
INFLUENCE_WORKERS: int | None = None

#: ``(b, i, j)`` influence triples.
Triples = tuple[Tensor, Tensor, Tensor]
#: Key spaces up to this size are counted in a dense array (int64: 32 MiB).
DENSE_COUNTER_LIMIT = 1 << 22


class SparseCounter:
    """Counts of int64 keys, merged in batches (memory: the distinct keys seen).

    When the whole key space is small (:meth:`use_dense`), keys are counted straight into a
    dense array instead (no sort per merge); ``keys`` and ``counts`` are the same either way.

    Args:
        device: where keys and counts live.
        flush_at: pending keys that trigger a merge.
    """

    def __init__(self, device: torch.device, flush_at: int = 1 << 22) -> None:
        self.keys = torch.empty(0, dtype=torch.int64, device=device)
        self.counts = torch.empty(0, dtype=torch.int64, device=device)
        self._pending: list[Tensor] = []
        self._pending_size = 0
        self._flush_at = flush_at
        self._dense: Tensor | None = None
        self._dense_stale = False

    def use_dense(self, size: int) -> None:
        """Count into a dense ``int64 [size]`` array if ``size <= DENSE_COUNTER_LIMIT``.

        Keys must lie in ``[0, size)``; what was counted so far moves into the array.
        """
        if self._dense is not None or size > DENSE_COUNTER_LIMIT:
            return
        self.flush()
        self._dense = torch.zeros(size, dtype=torch.int64, device=self.keys.device)
        self._dense.index_add_(0, self.keys, self.counts)

    def add(self, keys: Tensor) -> None:
        """Count each key once (``int64 [T]``, duplicates count several times)."""
        if keys.numel() == 0:
            return
        if self._dense is not None:
            self._dense.index_add_(0, keys, torch.ones_like(keys))
            self._dense_stale = True
            return
        self._pending.append(keys)
        self._pending_size += keys.numel()
        # Merge early while few keys are held, so memory reaches its plateau on small
        # datasets too (amortised: at most twice the distinct keys wait), never later
        # than ``flush_at``.
        threshold = min(self._flush_at, max(_MIN_FLUSH, 2 * self.keys.numel()))
        if self._pending_size >= threshold:
            self.flush()

    def add_counts(self, keys: Tensor, counts: Tensor) -> None:
        """Add ``counts`` to ``keys`` (``int64 [T]`` each; e.g. another counter's state)."""
        if keys.numel() == 0:
            return
        if self._dense is not None:
            self._dense.index_add_(0, keys, counts)
            self._dense_stale = True
            return
        self.flush()
        unique, inverse = torch.unique(
            torch.cat([self.keys, keys]), sorted=True, return_inverse=True
        )
        merged = torch.zeros(unique.shape[0], dtype=torch.int64, device=unique.device)
        merged.index_add_(0, inverse, torch.cat([self.counts, counts]))
        self.keys, self.counts = unique, merged

    def flush(self) -> None:
        """Merge the pending keys into ``keys`` (sorted, unique) and ``counts``."""
        if self._dense is not None:
            if self._dense_stale:
                self.keys = torch.nonzero(self._dense).view(-1)
                self.counts = self._dense[self.keys]
                self._dense_stale = False
            return
        if not self._pending:
            return
        pending = torch.cat(self._pending)
        all_keys = torch.cat([self.keys, pending])
        weights = torch.cat([self.counts, torch.ones_like(pending)])
        unique, inverse = torch.unique(all_keys, sorted=True, return_inverse=True)
        counts = torch.zeros(unique.shape[0], dtype=torch.int64, device=unique.device)
        counts.index_add_(0, inverse, weights)
        self.keys, self.counts = unique, counts
        self._pending, self._pending_size = [], 0


@dataclass(frozen=True)
class _ConvCount:
    """Where the top-k influences through one convolution are counted.

    Keys are ``(class * rows + offset + i) * cols + j`` in counter ``counter``.
    """

    counter: str
    offset: int
    rows: int
    cols: int


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad (autograd then tracks only the chosen leaves)."""
    changed = [p for p in model.parameters() if p.requires_grad]
    for parameter in changed:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in changed:
            parameter.requires_grad_(True)


#: Token ids above this are not counted per unit (a key is ``unit * TOKEN_IDS + id``).
TOKEN_IDS = 1 << 24
#: Tokens kept per unit of a token layer (its most frequent tokens at its maximum).
TOP_TOKENS = 10

#: A batch of model input: a tensor, or a text model's mapping of ``[B, T]`` tensors.
ModelBatch = Tensor | Mapping[str, Tensor]


def _to_device(batch: ModelBatch, device: torch.device) -> ModelBatch:
    """The batch on ``device`` (each tensor of a mapping)."""
    if isinstance(batch, Mapping):
        return {key: value.to(device) for key, value in batch.items()}
    return batch.to(device)


def _batch_size(batch: ModelBatch) -> int:
    """Inputs in a batch (a mapping's ``input_ids`` rows, or its first tensor's)."""
    if isinstance(batch, Mapping):
        first = batch.get("input_ids", next(iter(batch.values()), None))
        if not isinstance(first, Tensor):
            raise BuildError("a text batch must map names to [B, T] tensors")
        return int(first.shape[0])
    return int(batch.shape[0])


@dataclass
class _LayerState:
    channels: int
    height: int
    width: int
    counts: Tensor  # int64 [classes, channels]
    examples: RunningTopExamples
    tokens: int = 0  # a token layer's longest input seen (0: an image map)


class SummitPass(ClosingContext):
    """Aggregate Summit's statistics over a dataset in one streaming pass.

    The model is put in eval mode and moved to ``device``. Layers and their connections
    are checked immediately (:class:`BuildError`, before any data is read).

    Args:
        model: a classifier whose forward returns logits ``[B, outputs]``.
        layers: chosen module names, input to output; each must depend on the previous
            one (see :func:`compute.connect.find_connections` for how they may connect).
        num_classes: number of classes.
        config: aggregation parameters.
        device: where the model runs and the statistics accumulate.
        class_map: optional model output index of each class (length ``num_classes``); a
            prediction outside the map counts as wrong and is not aggregated by prediction.
        budget: bound on the elements of any influence intermediate.
        instances: which inputs get an instance record (``compute.summit.instances``;
            ``None``: none).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        num_classes: int,
        config: SummitConfig,
        device: torch.device | str = "cpu",
        class_map: Sequence[int] | None = None,
        budget: int = DEFAULT_BUDGET,
        instances: InstanceConfig | None = None,
    ) -> None:
        if num_classes < 1:
            raise BuildError(f"num_classes must be >= 1, not {num_classes}")
        if not layers:
            raise BuildError("choose at least one layer")
        self.layers = list(layers)
        self.num_classes = num_classes
        self.config = config
        self.device = torch.device(device)
        self.budget = budget
        modules = resolve_modules(model, self.layers)
        self.connections: list[AnyConnection | None] = find_connections(model, self.layers)
        self.model = model.to(self.device).eval()
        self._class_map: Tensor | None = None
        if class_map is not None:
            self._class_map = self._check_class_map(class_map)
        # With the model, hooks see channels-last maps (Swin) as [N, C, H, W] views.
        self._hooks = HookSet(model)
        for index, module in enumerate(modules):
            self._hooks.on_output(module, partial(self._on_layer, index))
        named = dict(model.named_modules())
        self._counters: dict[str, SparseCounter] = {}
        hooked = {id(m) for m in modules}  # every module a hook of this pass sits on
        for index, connection in enumerate(self.connections):
            if connection is None:
                continue
            self._counters[f"influence.{index}"] = SparseCounter(self.device)
            for conv_name, where in self._conv_counts(index, connection):
                if where.counter not in self._counters:
                    self._counters[where.counter] = SparseCounter(self.device)
                conv = named[conv_name]
                assert isinstance(conv, nn.Conv2d)
                self._hooks.on_input(conv, partial(self._on_conv_input, conv, where))
                hooked.add(id(conv))
        if config.subsets:  # the same counts again for wrong images, by confusion pair
            for name in list(self._counters):
                self._counters[SUBSET_PREFIX + name] = SparseCounter(self.device)
            for index in range(len(self.layers)):
                self._counters[f"{SUBSET_PREFIX}layer.{index}"] = SparseCounter(self.device)
            self._counters[f"{SUBSET_PREFIX}images"] = SparseCounter(self.device)
            self._counters[f"{SUBSET_PREFIX}images"].use_dense(pair_space(num_classes))
        #: Per image of the batch: its confusion pair if it is wrong, else -1.
        self._batch_pairs: Tensor | None = None
        self._recorder = None if instances is None else InstanceRecorder(instances, len(layers))
        #: The batch's inputs that may get an instance record (``None``: none), and per
        #: layer their maxima's positions and every image's selected channels.
        self._batch_candidates: Tensor | None = None
        self._batch_positions: dict[int, Tensor] = {}
        self._batch_selected: dict[int, Tensor] = {}
        self._batch_predicted: Tensor | None = None
        self._batch_confidence: Tensor | None = None
        self._batch_margin: Tensor | None = None
        #: ``bool [B, T]`` real tokens of a text batch (``None``: every position counts).
        self._batch_mask: Tensor | None = None
        #: Per token layer, the batch's longest input in tokens.
        self._batch_tokens: dict[int, int] = {}
        #: A text batch's ``input_ids`` and, per token layer, the id at each unit's maximum.
        self._batch_ids: Tensor | None = None
        self._batch_token_ids: dict[int, Tensor] = {}
        self._gradient: dict[int, GradientConnection] = {
            index: c
            for index, c in enumerate(self.connections)
            if isinstance(c, GradientConnection)
        }
        # Registered after the layer hooks: these replace the layer's output.
        for index, module in enumerate(modules):
            if index in self._gradient:
                self._hooks.on_forward(module, partial(self._on_gradient_target, index))
            if index + 1 in self._gradient:
                self._hooks.on_forward(module, partial(self._on_gradient_source, index))
        self._grad_sources: dict[int, Tensor] = {}
        # Where the position-wise shortcut starts for each gradient target (token layers):
        # the input of the target module, or of the Sequential containers around it.
        self._target_chains: dict[int, list[nn.Module]] = {}
        for index in self._gradient:
            chain = positionwise_chain(model, modules[index], hooked)
            if chain is not None:
                start, self._target_chains[index] = chain
                self._hooks.on_input(start, partial(self._on_target_input, index))
        self._target_inputs: dict[int, Tensor] = {}
        #: Per gradient connection, whether its last batch took the position-wise shortcut.
        self.positionwise: dict[int, bool] = {}
        self._states: list[_LayerState | None] = [None] * len(self.layers)
        bins = config.confidence_bins
        self._num_images = torch.zeros(num_classes, dtype=torch.int64, device=self.device)
        self._num_correct = torch.zeros(num_classes, dtype=torch.int64, device=self.device)
        self._hist = torch.zeros(num_classes * bins, dtype=torch.int64, device=self.device)
        self._confusion = torch.zeros(num_classes**2, dtype=torch.int64, device=self.device)
        self._batch_layers: list[tuple[Tensor, Tensor, tuple[int, ...]] | None] = []
        self._batch_influence: list[tuple[_ConvCount, Tensor, Tensor, Tensor]] = []
        self._deferred: list[tuple[nn.Conv2d, _ConvCount, Tensor]] = []
        self._deferred_size = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._futures: list[Future[Triples]] = []
        self._images_seen = 0

    @staticmethod
    def _conv_counts(index: int, connection: AnyConnection) -> list[tuple[str, _ConvCount]]:
        """Each convolution whose exact influence a connection counts, and where."""
        main = f"influence.{index}"
        if isinstance(connection, Connection):
            where = _ConvCount(main, 0, connection.out_channels, connection.in_channels)
            return [(connection.conv, where)]
        if not isinstance(connection, InceptionConnection):
            return []
        found: list[tuple[str, _ConvCount]] = []
        c_in, c_out = connection.in_channels, connection.out_channels
        for k, branch in enumerate(connection.branches):
            if branch.bottleneck is None:
                found.append((branch.conv, _ConvCount(main, branch.offset, c_out, c_in)))
                continue
            width = branch.bottleneck_channels
            top = _ConvCount(f"{main}.branch{k}.top", 0, branch.channels, width)
            bottom = _ConvCount(f"{main}.branch{k}.bottom", 0, width, c_in)
            found += [(branch.conv, top), (branch.bottleneck, bottom)]
        return found

    def _check_class_map(self, class_map: Sequence[int]) -> Tensor:
        mapping = torch.as_tensor(list(class_map), dtype=torch.int64)
        if mapping.shape != (self.num_classes,):
            raise BuildError(
                f"class_map has {mapping.numel()} entries for {self.num_classes} classes"
            )
        if (mapping < 0).any() or mapping.unique().numel() != mapping.numel():
            raise BuildError("class_map must hold distinct non-negative model output indices")
        return mapping.to(self.device)

    # -- hooks -----------------------------------------------------------------------

    def _on_layer(self, index: int, output: object) -> None:
        if not isinstance(output, Tensor) or output.dim() not in (3, 4):
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise BuildError(
                f"layer {self.layers[index]!r} outputs {shape}, not a [B, C, H, W] map or a "
                "[B, T, D] token sequence"
            )
        if self._batch_layers[index] is not None:
            raise BuildError(f"layer {self.layers[index]!r} runs more than once per forward pass")
        if output.dim() == 3:
            self._on_token_layer(index, output.detach())
            return
        state = self._states[index]
        if state is None or index in self._gradient or output.shape[1] != state.channels:
            values, positions = spatial_max(output.detach())
        else:  # positions only for maps that may enter the top examples
            values, positions = spatial_max_above(output.detach(), state.examples.floor())
        self._batch_layers[index] = (values, positions, tuple(output.shape[1:]))
        if self._batch_candidates is not None:  # where each candidate's maxima are
            _, flat = spatial_max(output.detach()[self._batch_candidates])
            width = output.shape[3]
            self._batch_positions[index] = torch.stack([flat // width, flat % width], dim=2)

    def _token_mask(self, output: Tensor) -> Tensor:
        """``bool [B, T]``: the batch's real tokens (all of them without an attention mask,
        e.g. a ViT's patches)."""
        mask = self._batch_mask
        if mask is None:
            return torch.ones(output.shape[:2], dtype=torch.bool, device=output.device)
        if tuple(mask.shape) != tuple(output.shape[:2]):
            raise BuildError(
                f"a token layer outputs {tuple(output.shape)}, but the batch's attention mask "
                f"is {tuple(mask.shape)}"
            )
        return mask

    def _on_token_layer(self, index: int, output: Tensor) -> None:
        """A token layer ``[B, T, D]``: each unit's maximum over the real tokens and its
        token, as a map of one row (:data:`compute.tokens.TOKEN_MAP_WIDTH`)."""
        mask = self._token_mask(output)
        values, positions = token_max(output, mask)
        self._batch_layers[index] = (values, positions, (output.shape[2], 1, TOKEN_MAP_WIDTH))
        self._batch_tokens[index] = int(mask.sum(dim=1).max())
        ids = self._batch_ids
        if ids is not None and tuple(ids.shape) == tuple(output.shape[:2]):
            self._batch_token_ids[index] = ids.gather(1, positions)
        if self._batch_candidates is not None:
            wanted = self._batch_candidates
            _, token = token_max(output[wanted], mask[wanted])
            self._batch_positions[index] = torch.stack([torch.zeros_like(token), token], dim=2)

    def _on_conv_input(self, conv: nn.Conv2d, where: _ConvCount, x: Tensor) -> None:
        if self.device.type == "cpu" and self._deferred_size + x.numel() <= DEFER_LIMIT:
            # A copy (later in-place operations must not alter what was seen), reduced
            # after the forward pass together with the other small statistics.
            self._deferred.append((conv, where, x.detach().clone()))
            self._deferred_size += x.numel()
            return
        self._batch_influence.append((where, *self._influence(conv, x)))

    def _influence(self, conv: nn.Conv2d, x: Tensor) -> Triples:
        """Top-k ``(b, i, j)`` influence triples of one convolution's input ``x``."""
        stride, padding, dilation = conv_geometry(conv)
        return influence_topk(
            x.detach(),
            conv.weight.detach(),
            stride,
            padding,
            dilation,
            self.config.influence_top_k,
            self.budget,
        )

    def _on_gradient_source(
        self, index: int, _module: nn.Module, _inputs: object, output: object
    ) -> Tensor | None:
        """Layer ``index`` feeds a gradient connection: its output continues as a new leaf."""
        tensor = self._hooks.layer_tensor(output)
        if not isinstance(tensor, Tensor) or not torch.is_grad_enabled():
            return None
        leaf = tensor.detach().clone().requires_grad_(True)
        self._grad_sources[index] = leaf
        # in-place operations downstream must not touch the leaf
        return self._hooks.replace_layer_tensor(output, leaf.clone())

    def _on_target_input(self, index: int, tensor: object) -> None:
        """A gradient target's module input, kept for :func:`positionwise_attribution`
        (token layers only: maps always take the full backward)."""
        if isinstance(tensor, Tensor) and tensor.dim() == 3 and tensor.requires_grad:
            self._target_inputs[index] = tensor

    def _on_gradient_target(
        self, index: int, _module: nn.Module, _inputs: object, output: object
    ) -> Tensor | None:
        """Layer ``index`` ends a gradient connection: attribute now, cut the rest off.

        The vector-Jacobian products run here, inside the forward pass, so the graph between
        the two layers is freed before the next stage builds its own.
        """
        tensor = self._hooks.layer_tensor(output)
        if not isinstance(tensor, Tensor) or not torch.is_grad_enabled():
            return None
        self._gradient_influence(index, tensor)
        # in-place operations downstream must not touch it
        return self._hooks.replace_layer_tensor(output, tensor.detach().clone())

    # -- public ----------------------------------------------------------------------

    def update(self, images: ModelBatch, labels: Tensor, indices: Tensor) -> Tensor:
        """Run the model on one batch and add it to every statistic.

        Args:
            images: ``[B, ...]`` model input, or a text model's batch: a mapping of
                ``[B, T]`` tensors (``input_ids``, ``attention_mask``, ...); its
                ``attention_mask`` keeps padding out of every token layer's statistics.
            labels: ``int64 [B]`` true class of each image, in ``[0, num_classes)``.
            indices: ``int64 [B]`` dataset index of each image (unique over the dataset).

        Returns:
            ``[B, outputs]`` logits without autograd (an inference tensor unless a gradient
            connection made the forward pass run with autograd between two layers).

        Raises:
            BuildError: bad labels, logits of the wrong shape, a layer that did not run.
        """
        images = _to_device(images, self.device)
        labels = torch.as_tensor(labels).to(self.device, torch.int64)
        indices = torch.as_tensor(indices).to(self.device, torch.int64)
        batch = _batch_size(images)
        mask = images.get("attention_mask") if isinstance(images, Mapping) else None
        self._batch_mask = None if mask is None else mask.to(torch.bool)
        self._batch_ids = images.get("input_ids") if isinstance(images, Mapping) else None
        if labels.shape != (batch,) or indices.shape != (batch,):
            raise BuildError(
                f"batch of {batch} images with {tuple(labels.shape)} labels "
                f"and {tuple(indices.shape)} indices"
            )
        if batch == 0:
            return torch.empty((0, self.num_classes), device=self.device)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise BuildError(f"labels must be in [0, {self.num_classes}), got {labels.tolist()}")
        self._batch_layers = [None] * len(self.layers)
        self._batch_influence = []
        if self._recorder is not None:
            wanted = self._recorder.candidates(indices.cpu().numpy())
            if wanted.any():
                self._batch_candidates = torch.from_numpy(wanted).to(self.device)
        try:
            if self._gradient:
                with torch.enable_grad(), _frozen_parameters(self.model):
                    logits = self.model(images).detach()
            else:
                with torch.inference_mode():
                    logits = self.model(images)
            missing = [self.layers[k] for k, got in enumerate(self._batch_layers) if got is None]
            if missing:
                raise BuildError(f"layers {missing} did not run in the model's forward pass")
            workers = self._workers()
            cap = STATISTICS_THREADS if self.device.type == "cpu" else None
            with torch.inference_mode(), intra_op_threads(cap):  # small ops: one thread
                pending = self._start_deferred(workers)
                classes, other = self._class_statistics(logits, labels)
                valid = classes >= 0
                self._batch_pairs = self._pairs(classes, other, valid)
                for index in range(len(self.layers)):
                    self._aggregate_layer(index, classes, valid, indices)
                for where, b0, found in pending:
                    b, i, j = found.result() if isinstance(found, Future) else found
                    self._batch_influence.append((where, b + b0, i, j))
                for where, b, i, j in self._batch_influence:
                    self._aggregate_influence(where, b, i, j, classes, valid)
                if self._batch_candidates is not None:
                    self._record_instances(indices, labels)
        finally:
            if self._futures:  # after an error: no task may outlive this batch
                wait(self._futures)
                self._futures = []
            self._batch_layers = []
            self._batch_influence = []
            self._deferred, self._deferred_size = [], 0
            self._grad_sources = {}
            self._batch_pairs = None
            self._batch_candidates, self._batch_predicted = None, None
            self._batch_confidence, self._batch_margin = None, None
            self._batch_positions, self._batch_selected = {}, {}
            self._batch_mask = None
            self._batch_tokens = {}
            self._batch_ids, self._batch_token_ids = None, {}
        self._images_seen += batch
        return logits

    def _workers(self) -> int:
        """Threads for the deferred influence step (see :data:`INFLUENCE_WORKERS`)."""
        if not self._deferred:
            return 1
        limit = INFLUENCE_WORKERS if INFLUENCE_WORKERS is not None else torch.get_num_threads()
        return max(1, min(limit, 8))

    def _start_deferred(
        self, workers: int
    ) -> list[tuple[_ConvCount, int, Future[Triples] | Triples]]:
        """Start the influence of the convolution inputs copied during the forward pass.

        With several workers each input is split into ``workers`` blocks of images, one
        task each (the selection is per image, so blocks are independent); results are
        collected in a fixed order, so counts do not depend on scheduling.

        Returns:
            ``(where, first image, triples or their future)`` per block.
        """
        deferred, self._deferred, self._deferred_size = self._deferred, [], 0
        pending: list[tuple[_ConvCount, int, Future[Triples] | Triples]] = []
        if workers <= 1:
            for conv, where, x in deferred:
                pending.append((where, 0, self._influence(conv, x)))
            return pending
        if self._pool is None or self._pool_size != workers:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="summit-influence")
            self._pool_size = workers
        # Autocast state is per thread: the tasks run under the caller's (CPU) setting.
        autocast = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
        for conv, where, x in deferred:
            step = -(-x.shape[0] // workers)
            for b0 in range(0, x.shape[0], step):
                task = self._pool.submit(self._influence_task, conv, x[b0 : b0 + step], autocast)
                self._futures.append(task)
                pending.append((where, b0, task))
        return pending

    def _influence_task(
        self, conv: nn.Conv2d, x: Tensor, autocast: tuple[bool, torch.dtype]
    ) -> Triples:
        """:meth:`_influence` in a worker thread: one intra-op thread, no autograd."""
        enabled, dtype = autocast
        with (
            torch.inference_mode(),
            intra_op_threads(1),
            torch.autocast("cpu", dtype=dtype, enabled=enabled),
        ):
            return self._influence(conv, x)

    def _record_instances(self, indices: Tensor, labels: Tensor) -> None:
        """Hand the batch's candidates to the instance recorder: their selected channels,
        maxima and positions per layer, and their influence triples through each
        connection's main counter (convolutions, gradient connections, Inception direct
        branches: the same triples the class counts add up)."""
        assert self._recorder is not None and self._batch_candidates is not None
        assert self._batch_predicted is not None
        assert self._batch_confidence is not None and self._batch_margin is not None
        wanted = self._batch_candidates
        row_of = torch.cumsum(wanted.to(torch.int64), 0) - 1
        layers = []
        for index in range(len(self.layers)):
            captured = self._batch_layers[index]
            assert captured is not None
            values = captured[0][wanted]
            layers.append(
                (self._batch_selected[index][wanted], values, self._batch_positions[index])
            )
        edges: list[tuple[Tensor, Tensor, Tensor] | None] = [None] * len(self.layers)
        found: dict[int, list[tuple[Tensor, Tensor, Tensor]]] = {}
        for where, b, i, j in self._batch_influence:
            name = where.counter.split(".")
            if len(name) != 2:  # an Inception bottleneck branch: not recorded per input
                continue
            mine = wanted[b]
            found.setdefault(int(name[1]), []).append(
                (row_of[b[mine]], where.offset + i[mine], j[mine])
            )
        for index, parts in found.items():
            rows, targets, sources = (torch.cat([p[k] for p in parts]) for k in range(3))
            edges[index] = (rows, targets, sources)
        self._recorder.add(
            indices[wanted],
            labels[wanted],
            self._batch_predicted[wanted],
            (self._batch_confidence[wanted], self._batch_margin[wanted]),
            layers,
            edges,
        )

    def _select(self, values: Tensor) -> Tensor:
        """``bool [B, C]`` channels chosen by the activation rule."""
        if self.config.selection == "mass":
            return select_mass(values, self.config.tau)
        return select_topk(values, self.config.top_k)

    def _gradient_influence(self, index: int, target: Tensor) -> None:
        """Top-k gradient × activation attributions of connection ``index`` for this batch."""
        source = self._grad_sources.pop(index - 1, None)
        captured = self._batch_layers[index]
        assert captured is not None  # the layer's statistics hook runs first
        connection = self._gradient[index]
        if source is None or not target.requires_grad:
            raise BuildError(
                f"layer {connection.target!r} is not differentiable with respect to "
                f"{connection.source!r}; choose other layers"
            )
        values, positions, _ = captured
        channels = gradient_seeds(values, self._select(values))
        mask = self._token_mask(source) if source.dim() == 3 else None
        module_input = self._target_inputs.pop(index, None)
        attribution = None
        if module_input is not None:
            attribution = positionwise_attribution(
                source, self._target_chains[index], module_input, target, channels,
                positions, token_mask=mask,
            )  # fmt: skip
        self.positionwise[index] = attribution is not None
        if attribution is None:
            attribution = gradient_attribution(
                source, target, channels, positions, self.budget, token_mask=mask
            )
        b, i, j = attribution_topk(attribution, channels, self.config.influence_top_k)
        units = [t.shape[2] if t.dim() == 3 else t.shape[1] for t in (target, source)]
        where = _ConvCount(f"influence.{index}", 0, units[0], units[1])
        self._batch_influence.append((where, b, i, j))

    def _pairs(self, classes: Tensor, other: Tensor, valid: Tensor) -> Tensor | None:
        """Each image's confusion pair ``c * (C + 1) + d`` if it is wrong, else -1 (and
        the wrong images counted per pair); ``None`` when subsets are not counted."""
        if not self.config.subsets:
            return None
        n = self.num_classes
        wrong = valid & (other != classes)
        pair = classes * (n + 1) + torch.where(other < 0, n, other)
        pairs = torch.where(wrong, pair, torch.full_like(classes, -1))
        self._counters[f"{SUBSET_PREFIX}images"].add(pairs[wrong])
        return pairs

    def _class_statistics(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Update per-class statistics; returns the class each image is aggregated under
        and its other class (the prediction when aggregated by label, -1 outside the
        classes; the label when aggregated by prediction)."""
        batch = labels.shape[0]
        if logits.dim() != 2 or logits.shape[0] != batch:
            raise BuildError(f"model output {tuple(logits.shape)} is not logits [B, classes]")
        outputs = logits.shape[1]
        if self._class_map is None and outputs != self.num_classes:
            raise BuildError(
                f"model outputs {outputs} classes, not {self.num_classes}; give a class_map"
            )
        if self._class_map is not None and int(self._class_map.max()) >= outputs:
            largest = int(self._class_map.max())
            raise BuildError(f"class_map refers to output {largest} of only {outputs}")
        probabilities = torch.softmax(logits.double(), dim=1)
        top = probabilities.topk(min(2, outputs), dim=1).values
        confidence = top[:, 0]
        # The lead over the runner-up: the instance records' "uncertain" measure.
        self._batch_margin = (confidence - top[:, 1]) if outputs > 1 else confidence
        self._batch_confidence = confidence
        predicted = torch.argmax(logits, dim=1)
        if self._class_map is not None:
            inverse = torch.full((outputs,), -1, dtype=torch.int64, device=self.device)
            inverse[self._class_map] = torch.arange(self.num_classes, device=self.device)
            predicted = inverse[predicted]
        correct = (predicted == labels).to(torch.int64)
        self._batch_predicted = predicted
        bins = self.config.confidence_bins
        which = torch.clamp((confidence * bins).floor().to(torch.int64), 0, bins - 1)
        self._num_images.index_add_(0, labels, torch.ones_like(labels))
        self._num_correct.index_add_(0, labels, correct)
        self._hist.index_add_(0, labels * bins + which, torch.ones_like(labels))
        known = predicted >= 0
        self._confusion.index_add_(
            0, labels[known] * self.num_classes + predicted[known], torch.ones_like(labels[known])
        )
        if self.config.aggregate_by == "label":
            return labels, predicted
        return predicted, labels

    def _aggregate_layer(self, index: int, classes: Tensor, valid: Tensor, indices: Tensor) -> None:
        captured = self._batch_layers[index]
        assert captured is not None
        values, positions, (channels, height, width) = captured
        state = self._states[index]
        if state is None:
            state = _LayerState(
                channels,
                height,
                width,
                torch.zeros((self.num_classes, channels), dtype=torch.int64, device=self.device),
                RunningTopExamples(
                    channels, self.config.examples_per_channel, self.device, values.dtype
                ),
            )
            self._states[index] = state
            self._check_channels(index)
        elif (channels, height, width) != (state.channels, state.height, state.width):
            raise BuildError(
                f"layer {self.layers[index]!r} changed shape from "
                f"{(state.channels, state.height, state.width)} to {(channels, height, width)}"
            )
        if index in self._batch_tokens:
            state.tokens = max(state.tokens, self._batch_tokens[index])
        selected = self._select(values)
        if index in self._batch_token_ids:  # which token each selected unit fires on
            b, unit = torch.nonzero(selected & valid[:, None], as_tuple=True)
            ids = self._batch_token_ids[index][b, unit].clamp(0, TOKEN_IDS - 1)
            self._token_counter(index).add(unit * TOKEN_IDS + ids)
        if self._batch_candidates is not None:
            self._batch_selected[index] = selected
        state.counts.index_add_(0, classes[valid], selected[valid].to(torch.int64))
        state.examples.update(values, positions, indices)
        pairs = self._batch_pairs
        if pairs is not None:
            b, channel = torch.nonzero(selected & (pairs >= 0)[:, None], as_tuple=True)
            counter = self._counters[f"{SUBSET_PREFIX}layer.{index}"]
            counter.use_dense(pair_space(self.num_classes) * channels)
            counter.add(pairs[b] * channels + channel)

    def _token_counter(self, index: int) -> SparseCounter:
        """The (unit, token id) counter of token layer ``index`` (made on first use)."""
        name = f"tokens.{index}"
        if name not in self._counters:
            self._counters[name] = SparseCounter(self.device)
        return self._counters[name]

    def _top_tokens(self) -> list[tuple[np.ndarray, np.ndarray] | None] | None:
        """Per layer, its units' most frequent token ids and counts (``None``: no text)."""
        found = [f"tokens.{i}" in self._counters for i in range(len(self.layers))]
        if not any(found):
            return None
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for index, state in enumerate(self._states):
            if not found[index] or state is None:
                out.append(None)
                continue
            keys, counts = self._counter_entries(f"tokens.{index}")
            unit, token = np.divmod(keys, TOKEN_IDS)
            order = np.lexsort((token, -counts, unit))  # per unit: most frequent, lowest id
            unit, token, counts = unit[order], token[order], counts[order]
            first = np.searchsorted(unit, unit, side="left")
            rank = np.arange(unit.shape[0]) - first
            keep = rank < TOP_TOKENS
            ids = np.full((state.channels, TOP_TOKENS), -1, dtype=np.int64)
            number = np.zeros((state.channels, TOP_TOKENS), dtype=np.int64)
            ids[unit[keep], rank[keep]] = token[keep]
            number[unit[keep], rank[keep]] = counts[keep]
            out.append((ids, number))
        return out

    def _check_channels(self, index: int) -> None:
        """The connecting conv must map the previous layer's channels onto this layer's."""
        connection = self.connections[index]
        state = self._states[index]
        previous = self._states[index - 1] if index > 0 else None
        if connection is None or state is None or previous is None:
            return
        if isinstance(connection, GradientConnection):
            return
        if isinstance(connection, InceptionConnection):
            if (connection.out_channels, connection.in_channels) != (
                state.channels,
                previous.channels,
            ):
                raise BuildError(
                    f"layers {connection.source!r} ({previous.channels} channels) -> "
                    f"{connection.target!r} ({state.channels} channels) do not match the "
                    f"Inception block ({connection.in_channels} -> {connection.out_channels})"
                )
            return
        if (connection.out_channels, connection.in_channels) != (state.channels, previous.channels):
            raise BuildError(
                f"layers {connection.source!r} ({previous.channels} channels) -> "
                f"{connection.target!r} ({state.channels} channels) do not match convolution "
                f"{connection.conv!r} ({connection.in_channels} -> {connection.out_channels})"
            )

    def _aggregate_influence(
        self,
        where: _ConvCount,
        b: Tensor,
        i: Tensor,
        j: Tensor,
        classes: Tensor,
        valid: Tensor,
    ) -> None:
        if not bool(valid.all()):  # only predictions outside a class map are invalid
            keep = valid[b]
            b, i, j = b[keep], i[keep], j[keep]
        keys = (classes[b] * where.rows + where.offset + i) * where.cols + j
        counter = self._counters[where.counter]
        counter.use_dense(self.num_classes * where.rows * where.cols)
        counter.add(keys)
        pairs = self._batch_pairs
        if pairs is not None:
            pair = pairs[b]
            wrong = pair >= 0
            keys = (pair[wrong] * where.rows + where.offset + i[wrong]) * where.cols + j[wrong]
            counter = self._counters[SUBSET_PREFIX + where.counter]
            counter.use_dense(pair_space(self.num_classes) * where.rows * where.cols)
            counter.add(keys)

    # -- state: checkpoints and merging shards ------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Everything accumulated so far, as CPU tensors (for checkpoints and shards).

        Keys: ``images_seen``, ``num_images``, ``num_correct``, ``confidence_hist``,
        ``confusion``; per
        layer ``i`` that has run, ``layer.{i}.shape`` (C, H, W), ``layer.{i}.counts`` and
        ``layer.{i}.examples.{values,index,position}``; per connection ``influence.{i}.keys``
        and ``influence.{i}.counts`` (sorted unique keys, see :class:`SparseCounter`), and per
        bottleneck branch ``k`` of an Inception block also ``influence.{i}.branch{k}.top`` and
        ``influence.{i}.branch{k}.bottom`` (``.keys``, ``.counts``).
        """
        state: dict[str, Tensor] = {
            "images_seen": torch.tensor(self._images_seen, dtype=torch.int64),
            "num_images": self._num_images.cpu().clone(),
            "num_correct": self._num_correct.cpu().clone(),
            "confidence_hist": self._hist.cpu().clone(),
            "confusion": self._confusion.cpu().clone(),
        }
        for i, layer in enumerate(self._states):
            if layer is None:
                continue
            state[f"layer.{i}.shape"] = torch.tensor(
                [layer.channels, layer.height, layer.width], dtype=torch.int64
            )
            if layer.tokens:
                state[f"layer.{i}.tokens"] = torch.tensor(layer.tokens, dtype=torch.int64)
            state[f"layer.{i}.counts"] = layer.counts.cpu().clone()
            state[f"layer.{i}.examples.values"] = layer.examples.values.cpu().clone()
            state[f"layer.{i}.examples.index"] = layer.examples.index.cpu().clone()
            state[f"layer.{i}.examples.position"] = layer.examples.position.cpu().clone()
        for name, counter in self._counters.items():
            counter.flush()
            state[f"{name}.keys"] = counter.keys.cpu().clone()
            state[f"{name}.counts"] = counter.counts.cpu().clone()
        if self._recorder is not None:
            state.update(self._recorder.state_dict())
        return state

    def merge_state_dict(self, state: dict[str, Tensor]) -> None:
        """Add a state from :meth:`state_dict` of a pass over a disjoint set of images.

        Merging into a fresh pass restores a checkpoint; merging every shard's state gives
        exactly the aggregates of one pass over all images (counts add, top examples merge
        by their total order).

        Raises:
            BuildError: the state has another number of classes, layers or shapes.
        """
        if state["num_images"].shape != self._num_images.shape:
            raise BuildError(
                f"state has {state['num_images'].numel()} classes, not {self.num_classes}"
            )
        if state["confidence_hist"].shape != self._hist.shape:
            raise BuildError("state has another number of confidence bins")
        if "confusion" not in state:
            raise BuildError(
                "state has no confusion counts (a checkpoint of an older version): "
                "remove the checkpoint to start over"
            )
        self._images_seen += int(state["images_seen"])
        self._num_images += state["num_images"].to(self.device)
        self._num_correct += state["num_correct"].to(self.device)
        self._hist += state["confidence_hist"].to(self.device)
        self._confusion += state["confusion"].to(self.device)
        for i in range(len(self.layers)):
            if f"layer.{i}.shape" not in state:
                continue
            channels, height, width = (int(v) for v in state[f"layer.{i}.shape"])
            examples = state[f"layer.{i}.examples.values"]
            layer = self._states[i]
            if layer is None:
                layer = _LayerState(
                    channels,
                    height,
                    width,
                    torch.zeros(
                        (self.num_classes, channels), dtype=torch.int64, device=self.device
                    ),
                    RunningTopExamples(
                        channels, self.config.examples_per_channel, self.device, examples.dtype
                    ),
                )
                self._states[i] = layer
            elif (channels, height, width) != (layer.channels, layer.height, layer.width):
                raise BuildError(
                    f"state of layer {self.layers[i]!r} has shape {(channels, height, width)}, "
                    f"not {(layer.channels, layer.height, layer.width)}"
                )
            if examples.shape[1] != self.config.examples_per_channel:
                raise BuildError(
                    f"state keeps {examples.shape[1]} examples per channel, "
                    f"not {self.config.examples_per_channel}"
                )
            layer.counts += state[f"layer.{i}.counts"].to(self.device)
            if f"layer.{i}.tokens" in state:
                layer.tokens = max(layer.tokens, int(state[f"layer.{i}.tokens"]))
            other = RunningTopExamples(channels, examples.shape[1], self.device, examples.dtype)
            other.values = examples.to(self.device)
            other.index = state[f"layer.{i}.examples.index"].to(self.device)
            other.position = state[f"layer.{i}.examples.position"].to(self.device)
            layer.examples.merge(other)
        for name in state:  # the token counters of a text pass (made on first use)
            if name.startswith("tokens.") and name.endswith(".keys"):
                self._token_counter(int(name.split(".")[1]))
        for name, counter in self._counters.items():
            if f"{name}.keys" not in state:
                if name.startswith(SUBSET_PREFIX):
                    raise BuildError(
                        "state has no subset counts (a checkpoint of an older version, or "
                        "of a build with subsets off): remove the checkpoint to start over"
                    )
                continue
            counter.add_counts(
                state[f"{name}.keys"].to(self.device), state[f"{name}.counts"].to(self.device)
            )
        if self._recorder is not None:
            self._recorder.merge_state_dict(state)

    def result(self) -> SummitAggregates:
        """The aggregates so far (can be called again after more updates).

        Raises:
            BuildError: no image was aggregated.
        """
        if self._images_seen == 0:
            raise BuildError("no images were aggregated (empty dataset?)")
        states = [s for s in self._states if s is not None]
        assert len(states) == len(self.layers)
        influence = self._influence_matrices(self.num_classes, self._counter_matrix)
        tables = [s.examples.result(s.width) for s in states]
        bins = self.config.confidence_bins
        classes = self.num_classes
        return SummitAggregates(
            layers=list(self.layers),
            # a token layer: one row, as many columns as the longest input's tokens
            layer_shapes=[(s.channels, s.height, s.tokens or s.width) for s in states],
            activation_counts=[s.counts.cpu().numpy().astype(np.int64) for s in states],
            influence_counts=influence,
            num_images=self._num_images.cpu().numpy().astype(np.int64),
            num_correct=self._num_correct.cpu().numpy().astype(np.int64),
            confidence_hist=self._hist.view(classes, bins).cpu().numpy().astype(np.int64),
            confusion=self._confusion.view(classes, classes).cpu().numpy().astype(np.int64),
            example_index=[t[0] for t in tables],
            example_value=[t[1] for t in tables],
            example_position=[t[2] for t in tables],
            subsets=self._subset_result(influence) if self.config.subsets else None,
            instances=None if self._recorder is None else self._recorder.result(),
            top_tokens=self._top_tokens(),
        )

    def _counter_entries(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        counter = self._counters[name]
        counter.flush()
        return counter.keys.cpu().numpy(), counter.counts.cpu().numpy().astype(np.int64)

    def _counter_matrix(self, name: str, rows: int, cols: int) -> sp.csr_array:
        """Counter ``name`` as a ``(classes * rows, cols)`` int64 CSR array."""
        return keys_matrix(*self._counter_entries(name), self.num_classes, rows, cols)

    def _influence_matrices(
        self, groups: int, matrix: Callable[[str, int, int], sp.csr_array]
    ) -> list[sp.csr_array | None]:
        """Per layer, the influence counts of ``groups`` groups (classes or subsets) from the
        raw counters ``matrix(name, rows, cols)`` gives (Inception blocks: widest paths)."""
        states = [s for s in self._states if s is not None]
        influence: list[sp.csr_array | None] = []
        for index, connection in enumerate(self.connections):
            if connection is None:
                influence.append(None)
                continue
            c_out, c_in = states[index].channels, states[index - 1].channels
            direct = matrix(f"influence.{index}", c_out, c_in)
            if isinstance(connection, InceptionConnection):
                direct = self._inception_matrix(index, connection, direct, groups, matrix)
            influence.append(direct)
        return influence

    def _counter_shapes(self) -> dict[str, tuple[int, int]]:
        """``rows, cols`` of each influence counter's block."""
        states = [s for s in self._states if s is not None]
        shapes: dict[str, tuple[int, int]] = {}
        for index, connection in enumerate(self.connections):
            if connection is None:
                continue
            shapes[f"influence.{index}"] = (states[index].channels, states[index - 1].channels)
            for _, where in self._conv_counts(index, connection):
                shapes.setdefault(where.counter, (where.rows, where.cols))
        return shapes

    def _subset_result(self, class_influence: list[sp.csr_array | None]) -> SubsetCounts:
        """The mistaken, correct and confusion-pair counts (``compute.summit.subsets``)."""
        n = self.num_classes
        images_keys, images_counts = self._counter_entries(f"{SUBSET_PREFIX}images")
        images = np.zeros(pair_space(n), dtype=np.int64)
        np.add.at(images, images_keys, images_counts)
        kept = select_pairs(images, n, self.config.confusion_min, self.config.confusion_pairs)
        group_of = {"mistaken": (class_of_pair(n), n), "pairs": (row_of_pair(n, kept), len(kept))}
        shapes = self._counter_shapes()
        activation: dict[str, list[np.ndarray]] = {kind: [] for kind in group_of}
        for index, state in enumerate(self._states):
            assert state is not None
            keys, counts = self._counter_entries(f"{SUBSET_PREFIX}layer.{index}")
            for kind, (groups_of, groups) in group_of.items():
                moved = regroup(keys, counts, state.channels, groups_of, groups)
                activation[kind].append(dense_counts(*moved, groups, state.channels))

        def raw(kind: str) -> Callable[[str, int, int], sp.csr_array]:
            groups_of, groups = group_of[kind]

            def matrix(name: str, rows: int, cols: int) -> sp.csr_array:
                assert shapes[name] == (rows, cols)
                keys, counts = self._counter_entries(SUBSET_PREFIX + name)
                moved = regroup(keys, counts, rows * cols, groups_of, groups)
                return keys_matrix(*moved, groups, rows, cols)

            return matrix

        def correct(name: str, rows: int, cols: int) -> sp.csr_array:
            difference = self._counter_matrix(name, rows, cols) - raw("mistaken")(name, rows, cols)
            difference.eliminate_zeros()
            return sp.csr_array(difference)

        influence = {
            "correct": self._influence_matrices(n, correct),
            "mistaken": self._influence_matrices(n, raw("mistaken")),
            "pairs": self._influence_matrices(len(kept), raw("pairs")),
        }
        assert set(SUBSET_KINDS) <= set(influence)
        return SubsetCounts(
            mistaken_images=np.bincount(class_of_pair(n), weights=images, minlength=n).astype(
                np.int64
            ),
            pairs=np.stack(np.divmod(kept, n + 1), axis=1).astype(np.int64).reshape(-1, 2),
            pair_images=images[kept],
            activation=activation,
            influence=influence,
        )

    def _inception_matrix(
        self,
        index: int,
        connection: InceptionConnection,
        direct: sp.csr_array,
        groups: int,
        matrix: Callable[[str, int, int], sp.csr_array],
    ) -> sp.csr_array:
        """Direct-branch counts plus the widest-path counts of each bottleneck branch."""
        c_out, c_in = connection.out_channels, connection.in_channels
        if groups == 0:  # e.g. no confusion pair stored
            return direct
        direct_rows = np.array(
            [
                row
                for b in connection.branches
                if b.bottleneck is None
                for row in range(b.offset, b.offset + b.channels)
            ],
            dtype=np.int64,
        )
        limits = direct_limits(direct, groups, direct_rows)
        parts = [direct.tocoo()]
        rows: list[np.ndarray] = [parts[0].row.astype(np.int64)]
        for k, branch in enumerate(connection.branches):
            if branch.bottleneck is None:
                continue
            name = f"influence.{index}.branch{k}"
            top = matrix(f"{name}.top", branch.channels, branch.bottleneck_channels)
            bottom = matrix(f"{name}.bottom", branch.bottleneck_channels, c_in)
            paths = widest_path(top, bottom, groups, limits, self.device, self.budget).tocoo()
            parts.append(paths)
            c, i = np.divmod(paths.row.astype(np.int64), branch.channels)
            rows.append(c * c_out + branch.offset + i)
        combined = sp.coo_array(
            (
                np.concatenate([p.data for p in parts]).astype(np.int64),
                (np.concatenate(rows), np.concatenate([p.col for p in parts])),
            ),
            shape=(groups * c_out, c_in),
        ).tocsr()
        combined.eliminate_zeros()
        combined.sort_indices()
        return combined

    def close(self) -> None:
        """Remove the hooks (the model is usable again as before), stop the workers."""
        self._hooks.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
