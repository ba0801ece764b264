"""Resumable builds: checkpoints of the streaming pass's partial aggregates.

Every ``N`` batches a build writes, per process (rank), the Summit state
(:meth:`SummitPass.state_dict`), the Mapper sample (:meth:`ActivationSampler.state_dict`)
and how many images and batches of its range are done, atomically (a temporary file, then
``os.replace``: a ``kill -9`` leaves the previous checkpoint or the new one, never half of
one). Re-running the same command restores them into fresh objects (exact merges) and
reads only the images not yet done, so the atlas equals that of an uninterrupted run.

Each checkpoint carries a fingerprint of what it was made from: the model's weights, the
data (file names and sizes, the first batch's pixels), the layers and every parameter that
changes the result, and the process layout. A checkpoint of anything else is refused in
one line naming what changed (``--restart`` discards it), never mixed in.

Examples:
    >>> default_checkpoint_dir("atlases/vgg11").as_posix()
    'atlases/vgg11.checkpoint'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from compute.errors import BuildError

log = logging.getLogger(__name__)

#: Bumped when the checkpoint layout changes (an older one is then refused).
CHECKPOINT_VERSION = 2  # 2: the riders' states (the Mapper sample's keys prefixed)


def default_checkpoint_dir(out: str | Path) -> Path:
    """Where checkpoints of the build writing ``out`` go by default: beside it.

    Examples:
        >>> default_checkpoint_dir("/tmp/atlas").name
        'atlas.checkpoint'
    """
    out = Path(out)
    return out.with_name(out.name + ".checkpoint")


def _tensor_bytes(tensor: Tensor) -> bytes:
    """The raw bytes of a contiguous CPU tensor of any rank (0-dim ones included, such as
    BatchNorm's ``num_batches_tracked``, which ``Tensor.view(dtype)`` refuses)."""
    return tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes and bytes, in order).

    Examples:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> model_fingerprint(a) == model_fingerprint(b)
        False
        >>> len(model_fingerprint(nn.BatchNorm2d(3)))  # a 0-dim buffer included
        64
    """
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def data_fingerprint(dataset: Any, first_images: Tensor) -> str:
    """sha256 of the data: file names and sizes when the dataset lists them, its length,
    and the pixels of the first batch (catches a changed transform).

    Args:
        dataset: the loader's dataset (an ImageFolder's ``samples`` are listed), or ``None``.
        first_images: the first batch this process read.

    Returns:
        Hex digest.

    Examples:
        >>> x = torch.zeros(2, 1, 2, 2)
        >>> data_fingerprint(None, x) == data_fingerprint(None, x + 1)
        False
    """
    digest = hashlib.sha256()
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list):
        root = str(getattr(dataset, "root", ""))
        for item in samples:
            path = str(item[0] if isinstance(item, (tuple, list)) else item)
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1
            digest.update(f"{os.path.relpath(path, root) if root else path}|{size}\n".encode())
    try:
        length = len(dataset) if dataset is not None else -1
    except TypeError:
        length = -1
    digest.update(f"len={length}|".encode())
    images = first_images.detach().cpu().contiguous()
    digest.update(f"{images.dtype}|{tuple(images.shape)}|".encode())
    digest.update(_tensor_bytes(images))
    return digest.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


@dataclass(frozen=True)
class Fingerprint:
    """What a checkpoint was made from.

    Attributes:
        model: :func:`model_fingerprint`.
        data: :func:`data_fingerprint`.
        parameters: layers, classes, settings and process layout (JSON-able).
    """

    model: str
    data: str
    parameters: Mapping[str, Any]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys)."""
        return _canonical({"model": self.model, "data": self.data, "parameters": self.parameters})

    def differences(self, stored: str) -> list[str]:
        """What differs from a stored :meth:`to_json` (empty when nothing does).

        Examples:
            >>> f = Fingerprint("m", "d", {"seed": 0, "layers": ["a"]})
            >>> f.differences(Fingerprint("m", "x", {"seed": 1, "layers": ["a"]}).to_json())
            ['data', 'parameter seed']
        """
        other = json.loads(stored)
        changed = []
        if other.get("model") != self.model:
            changed.append("model weights")
        if other.get("data") != self.data:
            changed.append("data")
        params = json.loads(_canonical(self.parameters))
        theirs = other.get("parameters", {})
        for key in sorted(set(params) | set(theirs)):
            if params.get(key) != theirs.get(key):
                changed.append(f"parameter {key}")
        return changed


@dataclass
class Resumed:
    """A checkpoint restored for this process.

    Attributes:
        summit: the Summit state (merge into a fresh pass).
        riders: the states of the passes riding on the forward (:class:`compute.capture.BatchRider`,
            keys prefixed by each rider's name), or ``None``.
        images_done: images of this process's range already aggregated.
        batches_done: batches already aggregated.
        complete: the pass over this range had finished.
    """

    summit: dict[str, Tensor]
    riders: dict[str, Tensor] | None
    images_done: int
    batches_done: int
    complete: bool


class CheckpointStore:
    """One process's checkpoint file inside the checkpoint directory.

    Args:
        directory: checkpoint directory (created when first written).
        rank: this process's rank.
        world_size: number of processes.
        fingerprint: what this build is made from.

    Examples:
        >>> import tempfile
        >>> store = CheckpointStore(tempfile.mkdtemp(), 0, 1, Fingerprint("m", "d", {}))
        >>> store.path.name
        'rank0-of-1.pt'
    """

    def __init__(
        self, directory: str | Path, rank: int, world_size: int, fingerprint: Fingerprint
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"rank{rank}-of-{world_size}.pt"
        self.fingerprint = fingerprint

    def load(self, restart: bool = False) -> Resumed | None:
        """The stored checkpoint, if there is one made from the same inputs.

        Args:
            restart: discard an existing checkpoint instead of resuming from it.

        Returns:
            The restored state, or ``None`` when there is nothing to resume.

        Raises:
            BuildError: the checkpoint is unreadable or was made from another model, data,
                parameters or process layout (one line; ``--restart`` discards it).
        """
        if not self.path.exists():
            others = sorted(self.directory.glob("rank*-of-*.pt")) if self.directory.is_dir() else []
            if others and not restart:
                raise BuildError(
                    f"checkpoint {self.directory} was made by another number of processes "
                    f"({others[0].name}); rerun with that layout or pass --restart"
                )
            return None
        if restart:
            log.info("--restart: discarding checkpoint %s", self.path)
            self.path.unlink()
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a damaged file
            raise BuildError(
                f"cannot read checkpoint {self.path} ({type(exc).__name__}); "
                "pass --restart to discard it"
            ) from None
        if int(payload.get("version", -1)) != CHECKPOINT_VERSION:
            raise BuildError(
                f"checkpoint {self.path} has another format version; pass --restart to discard it"
            )
        changed = self.fingerprint.differences(payload["fingerprint"])
        if changed:
            raise BuildError(
                f"checkpoint {self.directory} is of another build (changed: {', '.join(changed)}); "
                "rerun the same command or pass --restart to discard it"
            )
        resumed = Resumed(
            summit=payload["summit"],
            riders=payload.get("riders"),
            images_done=int(payload["images_done"]),
            batches_done=int(payload["batches_done"]),
            complete=bool(payload["complete"]),
        )
        log.info(
            "resuming from checkpoint %s: %d images (%d batches) done%s",
            self.path,
            resumed.images_done,
            resumed.batches_done,
            ", pass complete" if resumed.complete else "",
        )
        return resumed

    def save(
        self,
        summit: dict[str, Tensor],
        riders: dict[str, Tensor] | None,
        images_done: int,
        batches_done: int,
        complete: bool = False,
    ) -> None:
        """Write the checkpoint atomically (temporary file in the directory, then replace).

        Args:
            summit: :meth:`SummitPass.state_dict`.
            riders: the riders' states (:func:`compute.capture.rider_states`), or ``None``.
            images_done: images of this process's range aggregated so far.
            batches_done: batches aggregated so far.
            complete: whether the pass over the range has finished.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint.to_json(),
            "summit": summit,
            "images_done": images_done,
            "batches_done": batches_done,
            "complete": complete,
        }
        if riders is not None:
            payload["riders"] = riders
        handle, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(payload, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.debug("checkpoint %s: %d images done", self.path, images_done)

    def remove_directory(self) -> None:
        """Delete the checkpoint directory (after the atlas is written)."""
        shutil.rmtree(self.directory, ignore_errors=True)
