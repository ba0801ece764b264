"""Image data for a build: preprocessing, an indexed ImageFolder, and checks up front.

Everything a long build could trip on later (a missing directory, class folders the model
has no output for, an unreadable image) is checked here first and reported as one
:class:`~compute.errors.BuildError` line naming the folder or file.

``--normalize`` syntax (:meth:`Preprocessing.from_arg`):

- ``imagenet``: mean ``0.485,0.456,0.406``, std ``0.229,0.224,0.225``;
- ``mnist``: mean ``0.1307``, std ``0.3081``; ``cifar10``: the usual CIFAR-10 statistics;
- ``none``: pixels in ``[0, 1]`` as they come from ``ToTensor``;
- ``MEAN,STD``: one mean and one std for every channel, e.g. ``0.5,0.5``;
- ``M1,M2,M3/S1,S2,S3``: per-channel means, a slash, per-channel stds.

Examples:
    >>> pre = Preprocessing.from_arg("0.5,0.5", image_size=32)
    >>> pre.to_manifest()
    {'image_size': 32, 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5], 'grayscale': False}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import datasets, transforms
from tqdm import tqdm

from compute.errors import BuildError

log = logging.getLogger(__name__)

#: Named ``--normalize`` presets: (mean, std).
PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
    "none": ((0.0,), (1.0,)),
}

IMAGE_EXTENSIONS = datasets.folder.IMG_EXTENSIONS


def _floats(text: str, what: str, arg: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BuildError(f"bad --normalize {arg!r}: {what} must be numbers") from None
    if not values:
        raise BuildError(f"bad --normalize {arg!r}: no {what} given")
    return values


@dataclass(frozen=True)
class Preprocessing:
    """Exactly what is fed to the model: resize (no crop), to tensor, normalise.

    Attributes:
        image_size: images are resized to ``image_size × image_size`` (no crop, as Summit).
        mean: per-channel means (one value per channel of the model input).
        std: per-channel standard deviations.
        grayscale: convert images to one channel (for models with 1-channel input).
    """

    image_size: int = 224
    mean: tuple[float, ...] = PRESETS["imagenet"][0]
    std: tuple[float, ...] = PRESETS["imagenet"][1]
    grayscale: bool = False

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise BuildError(f"image size must be >= 1, not {self.image_size}")
        channels = self.channels
        # One value applies to every channel; store it expanded so the manifest is explicit.
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) == 1:
            mean = mean * channels
        if len(std) == 1:
            std = std * channels
        if len(mean) != channels or len(std) != channels:
            raise BuildError(
                f"normalisation has {len(mean)} means and {len(std)} stds, but the model "
                f"input has {channels} channel(s)"
            )
        if any(s <= 0 for s in std):
            raise BuildError("normalisation std must be > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        """Channels of the model input (1 if grayscale, else 3)."""
        return 1 if self.grayscale else 3

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one model input."""
        return (self.channels, self.image_size, self.image_size)

    @classmethod
    def from_arg(
        cls, normalize: str = "imagenet", *, image_size: int = 224, grayscale: bool = False
    ) -> Preprocessing:
        """Parse a ``--normalize`` value (see the module docstring for the syntax).

        Args:
            normalize: ``imagenet``, ``cifar10``, ``mnist``, ``none``, ``MEAN,STD`` or
                ``M1,M2,M3/S1,S2,S3``.
            image_size: side of the square model input.
            grayscale: one-channel input; a 3-value preset (e.g. ``imagenet``) is then
                averaged to one mean and one std.

        Returns:
            The preprocessing.

        Raises:
            BuildError: for malformed values.

        Examples:
            >>> Preprocessing.from_arg("none", image_size=28, grayscale=True).mean
            (0.0,)
            >>> Preprocessing.from_arg("0.4,0.5,0.6/0.2,0.2,0.2").std
            (0.2, 0.2, 0.2)
        """
        arg = normalize.strip()
        key = arg.lower()
        if key in PRESETS:
            mean, std = PRESETS[key]
            if grayscale and len(mean) == 3:
                mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        elif "/" in arg:
            left, _, right = arg.partition("/")
            mean, std = _floats(left, "means", arg), _floats(right, "stds", arg)
        else:
            values = _floats(arg, "mean and std", arg)
            if len(values) != 2:
                raise BuildError(
                    f"bad --normalize {arg!r}: use MEAN,STD, M1,M2,M3/S1,S2,S3 or one of "
                    f"{', '.join(sorted(PRESETS))}"
                )
            mean, std = (values[0],), (values[1],)
        return cls(image_size=image_size, mean=mean, std=std, grayscale=grayscale)

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The torchvision transform: (grayscale) → resize → tensor → normalise."""
        steps: list[Callable[..., Any]] = []
        if self.grayscale:
            steps.append(transforms.Grayscale(num_output_channels=1))
        steps += [
            transforms.Resize((self.image_size, self.image_size)),
            transforms.ToTensor(),
            transforms.Normalize(self.mean, self.std),
        ]
        return transforms.Compose(steps)

    def unnormalize(self, tensor: torch.Tensor) -> torch.Tensor:
        """Map a normalised ``[C, H, W]`` (or ``[N, C, H, W]``) tensor back to ``[0, 1]``."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(shape)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(shape)
        return (tensor * std + mean).clamp(0.0, 1.0)

    def to_manifest(self) -> dict[str, Any]:
        """The ``preprocessing`` entry of the atlas manifest."""
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "grayscale": self.grayscale,
        }


class ImageFolderWithIndex(datasets.ImageFolder):
    """A torchvision ``ImageFolder`` whose items are ``(image, label, index)``.

    The index lets the streaming pass record which dataset images are each channel's top
    examples, whatever the loader's order.

    Examples:
        >>> ds = ImageFolderWithIndex("data/train", transform=pre.transform())  # doctest: +SKIP
        >>> image, label, index = ds[0]                                        # doctest: +SKIP
    """

    def __getitem__(self, index: int) -> tuple[Any, int, int]:  # type: ignore[override]
        image, label = super().__getitem__(index)
        return image, label, index


def find_class_folders(root: str | Path) -> list[str]:
    """Sorted class folder names of an ImageFolder directory, checked.

    Raises:
        BuildError: if ``root`` is missing, not a directory or holds no class folders.
    """
    path = Path(root)
    if not path.exists():
        raise BuildError(f"data directory not found: {path}")
    if not path.is_dir():
        raise BuildError(f"data path {path} is not a directory")
    folders = sorted(entry.name for entry in path.iterdir() if entry.is_dir())
    if not folders:
        raise BuildError(
            f"data directory {path} is not an ImageFolder: expected one sub-folder of images "
            "per class (DIR/CLASS/IMAGE.jpg)"
        )
    return folders


def load_class_index(path: str | Path) -> dict[str, int]:
    """Read a ``--class-index`` JSON file ``{folder: model output index}``.

    Raises:
        BuildError: if the file is missing, not JSON, or not a mapping of names to ints.
    """
    file = Path(path)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"class index file not found: {file}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"class index file {file} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in raw.values()
    ):
        raise BuildError(f"class index file {file} must be a JSON object {{folder: output index}}")
    return {str(k): int(v) for k, v in raw.items()}


def _names(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def map_classes(
    folders: Sequence[str], num_outputs: int, class_index: Mapping[str, int] | None = None
) -> list[int] | None:
    """Map class folders to model outputs, or refuse with the offending folders named.

    Args:
        folders: class folder names in ImageFolder (sorted) order.
        num_outputs: number of model outputs.
        class_index: optional ``{folder: output index}``; without it folder ``i`` is output
            ``i`` and the counts must match.

    Returns:
        ``None`` for the identity mapping, else the output index of each folder.

    Raises:
        BuildError: naming folders missing from ``class_index``, indices out of range, or a
            folder count that differs from the number of outputs.

    Examples:
        >>> map_classes(["cat", "dog"], 2) is None
        True
        >>> map_classes(["cat", "dog"], 1000, {"cat": 281, "dog": 207})
        [281, 207]
    """
    if class_index is None:
        if len(folders) != num_outputs:
            raise BuildError(
                f"the data has {len(folders)} class folders ({_names(folders)}) but the model "
                f"has {num_outputs} outputs; pass --class-index FILE mapping folders to outputs "
                f"(or --num-classes {len(folders)} for a model built with a head of that size)"
            )
        return None
    missing = [f for f in folders if f not in class_index]
    if missing:
        raise BuildError(
            f"class folders not in the class index: {_names(missing)} "
            f"({len(missing)} of {len(folders)})"
        )
    bad = [f for f in folders if not 0 <= class_index[f] < num_outputs]
    if bad:
        raise BuildError(
            f"class index maps folders {_names(bad)} outside the model's {num_outputs} "
            "outputs (indices must be 0-based)"
        )
    mapping = [class_index[f] for f in folders]
    seen: dict[int, str] = {}
    for folder, output in zip(folders, mapping, strict=True):
        if output in seen:
            raise BuildError(
                f"class index maps folders {seen[output]!r} and {folder!r} to the same "
                f"output {output}"
            )
        seen[output] = folder
    return mapping


def _image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an image, or ``None`` if its header is fine."""
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        # SyntaxError: PIL's PNG/JPEG parsers raise it for some broken headers.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not reason or isinstance(exc, UnidentifiedImageError):
            reason = "not a readable image file"
        return reason
    return None


def _first_problem(paths: Sequence[str | Path]) -> tuple[str | Path, str] | None:
    for path in paths:
        reason = _image_problem(path)
        if reason is not None:
            return path, reason
    return None


def check_images(
    paths: Sequence[str | Path],
    *,
    progress: bool = True,
    desc: str = "checking images",
    threads: int | None = None,
) -> None:
    """Check that every image file opens, by reading its header (fast, no decoding).

    Large datasets are checked by a thread pool (the work is file I/O), in chunks whose
    results are taken in order, so the file reported is always the first bad one.

    Args:
        paths: image files.
        progress: show a tqdm bar (only when there are many files).
        desc: the bar's label.
        threads: worker threads (default: up to 8, one below 2,000 files).

    Raises:
        BuildError: naming the first unreadable file.

    Examples:
        >>> check_images([])
    """

    paths = list(paths)
    chunk = 256
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    if threads is None:
        threads = 1 if len(paths) < 2000 else min(8, 2 * (os.cpu_count() or 1))
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress or len(paths) < 5000)
    try:
        if threads <= 1:
            results: Iterator[tuple[str | Path, str] | None] = map(_first_problem, chunks)
        else:
            pool = ThreadPoolExecutor(max_workers=threads)
            results = pool.map(_first_problem, chunks)
        for part, problem in zip(chunks, results, strict=True):
            if problem is not None:
                path, reason = problem
                raise BuildError(f"unreadable image {path}: {reason}")
            bar.update(len(part))
    finally:
        bar.close()
        if threads > 1:
            pool.shutdown(wait=False, cancel_futures=True)


def open_image_folder(
    root: str | Path,
    preprocessing: Preprocessing,
    *,
    num_outputs: int | None = None,
    class_index: str | Path | Mapping[str, int] | None = None,
    check: bool = True,
    progress: bool = True,
    decode: str = "pil",
    encoded: bool = False,
) -> tuple[ImageFolderWithIndex, list[int] | None]:
    """Open and validate an ImageFolder for a build.

    Args:
        root: ``DIR/CLASS/IMAGE`` directory.
        preprocessing: how images are fed to the model.
        num_outputs: the model's output count (to check the class mapping); skipped if None.
        class_index: a ``--class-index`` JSON path or mapping ``{folder: output}``.
        check: open every image header before returning.
        progress: progress bar for the header check on large datasets.
        decode: ``"pil"`` (PIL and :meth:`Preprocessing.transform`) or ``"jpeg-device"``
            (JPEG files only, decoded by torchvision.io: an :class:`EncodedImageFolder`).
        encoded: with ``"jpeg-device"``, items are the files' bytes, to be decoded in
            batches on the device by :class:`JpegBatchDecoder` (else decoded per item on
            the CPU, in the loader's workers).

    Returns:
        ``(dataset, class_map)``: the indexed dataset, and the output index of each folder
        (``None`` for the identity mapping).

    Raises:
        BuildError: one line naming the missing directory, unmapped folders, empty class
            folder or unreadable image.

    Examples:
        >>> ds, class_map = open_image_folder("data/val", Preprocessing(64),  # doctest: +SKIP
        ...                                   num_outputs=10)
    """
    folders = find_class_folders(root)
    mapping = load_class_index(class_index) if isinstance(class_index, (str, Path)) else class_index
    class_map = None
    if num_outputs is not None:
        class_map = map_classes(folders, num_outputs, mapping)
    if decode not in DECODE_MODES:
        raise BuildError(f"unknown --decode {decode!r}: use one of {', '.join(DECODE_MODES)}")
    dataset: ImageFolderWithIndex
    if decode == "jpeg-device":
        dataset = open_jpeg_folder(root, preprocessing, encoded=encoded)
    else:
        try:
            dataset = ImageFolderWithIndex(str(root), transform=preprocessing.transform())
        except FileNotFoundError as exc:
            # ImageFolder refuses a class folder without images; say which.
            raise BuildError(f"data directory {root} is not a valid ImageFolder: {exc}") from None
    if dataset.classes != folders:
        empty = sorted(set(folders) - set(dataset.classes))
        raise BuildError(f"class folders without images: {_names(empty)} in {root}")
    if check:
        check_images([path for path, _ in dataset.samples], progress=progress)
    log.info("data %s: %d images in %d classes", root, len(dataset), len(folders))
    return dataset, class_map


# ---------------------------------------------------------------------------------------
# JPEG decoding with torchvision.io (``--decode jpeg-device``)
# ---------------------------------------------------------------------------------------

#: ``--decode`` choices: PIL in the loader's workers (default), or torchvision.io.
DECODE_MODES = ("pil", "jpeg-device")

JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")


def decode_jpeg_batch(
    encoded: Sequence[torch.Tensor], preprocessing: Preprocessing, device: torch.device
) -> torch.Tensor:
    """Decode JPEG files' bytes into a normalised model-input batch on ``device``.

    The same steps as :meth:`Preprocessing.transform` (resize to ``image_size`` squared, no
    crop; to ``[0, 1]``; normalise) with torchvision.io instead of PIL: one batched
    ``decode_jpeg`` call (nvJPEG on CUDA, libjpeg-turbo on the CPU), then, per image, an
    antialiased bilinear resize in float32 on ``device``. Pixels differ slightly from the PIL
    path (PIL resizes in 8-bit fixed point and rounds; nvJPEG's IDCT differs from
    libjpeg-turbo's): on the CPU, decoding is bit-identical to PIL's and the resized
    ``[0, 1]`` pixels agree within 1/255 (tests/unit/test_decode.py), so activation counts
    near a threshold can differ from a PIL build. The CUDA path is not measured yet.

    Args:
        encoded: each file's bytes as a 1-D ``uint8`` tensor (``torchvision.io.read_file``).
        preprocessing: size, normalisation and grayscale.
        device: where to decode and resize (``cuda``: on the GPU, batched).

    Returns:
        ``[N, C, image_size, image_size]`` float32 on ``device``.

    Raises:
        BuildError: when a file is not a decodable JPEG.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as tvf

    mode = ImageReadMode.GRAY if preprocessing.grayscale else ImageReadMode.RGB
    try:
        images = decode_jpeg(list(encoded), mode=mode, device=device)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "decode failed"
        raise BuildError(f"--decode jpeg-device could not decode a JPEG file: {detail}") from None
    size = [preprocessing.image_size, preprocessing.image_size]
    mean = torch.tensor(preprocessing.mean, device=device).view(-1, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(-1, 1, 1)
    out = torch.empty((len(images), *preprocessing.input_size), device=device)
    for i, image in enumerate(images):  # sizes differ: one resize per image
        pixels = image.to(torch.float32).div_(255.0)
        resized = tvf.resize(pixels, size, antialias=True).clamp_(0.0, 1.0)
        out[i] = (resized - mean) / std
    return out


class EncodedImageFolder(ImageFolderWithIndex):
    """ImageFolder for ``--decode jpeg-device``: items are the files' bytes, decoded later.

    ``dataset[i]`` is ``(bytes as a 1-D uint8 tensor, label, index)`` when ``encoded`` is
    true (batched with :func:`collate_encoded`, decoded on the device by
    :class:`JpegBatchDecoder`), else the decoded, preprocessed ``[C, H, W]`` tensor as the
    PIL path gives (through :func:`decode_jpeg_batch` on the CPU); :attr:`decoded` is that
    view (used to cut example crops).
    """

    def __init__(self, root: str, preprocessing: Preprocessing, *, encoded: bool) -> None:
        super().__init__(root, is_valid_file=_is_jpeg)
        self.preprocessing = preprocessing
        self.encoded = encoded

    @property
    def decoded(self) -> EncodedImageFolder:
        """The same files, items decoded on the CPU (shares the file list)."""
        if not self.encoded:
            return self
        view = object.__new__(EncodedImageFolder)
        view.__dict__.update(self.__dict__)
        view.encoded = False
        return view

    def __getitem__(self, index: int) -> tuple[Any, int, int]:  # type: ignore[override]
        from torchvision.io import read_file

        path, label = self.samples[index]
        data = read_file(path)
        if self.encoded:
            return data, label, index
        cpu = torch.device("cpu")
        return decode_jpeg_batch([data], self.preprocessing, cpu)[0], label, index


def _is_jpeg(path: str) -> bool:
    return path.lower().endswith(JPEG_EXTENSIONS)


def collate_encoded(
    items: Sequence[tuple[torch.Tensor, int, int]],
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Batch encoded items: a list of byte tensors (lengths differ), labels, indices."""
    data = [item[0] for item in items]
    labels = torch.tensor([int(item[1]) for item in items], dtype=torch.int64)
    indices = torch.tensor([int(item[2]) for item in items], dtype=torch.int64)
    return data, labels, indices


@dataclass(frozen=True)
class JpegBatchDecoder:
    """Turns a loader batch of encoded JPEG files into a batch of model inputs on the device.

    Given to :func:`compute.build.build_atlas` as ``decoder`` with a loader over an
    :class:`EncodedImageFolder` (``encoded=True``) and ``collate_fn=collate_encoded``.
    """

    preprocessing: Preprocessing
    device: str = "cuda"

    def __call__(self, batch: Any) -> Any:
        """``(list of byte tensors, labels, indices)`` → ``(images, labels, indices)``."""
        if not isinstance(batch, (tuple, list)) or not isinstance(batch[0], list):
            return batch  # already decoded
        images = decode_jpeg_batch(batch[0], self.preprocessing, torch.device(self.device))
        return (images, *batch[1:])


def open_jpeg_folder(
    root: str | Path, preprocessing: Preprocessing, *, encoded: bool
) -> EncodedImageFolder:
    """The :class:`EncodedImageFolder` of ``root``, refusing folders with non-JPEG files.

    Raises:
        BuildError: naming the first image that is not a JPEG file (by extension), or a
            class folder without JPEG files.
    """
    folders = find_class_folders(root)
    for folder in folders:
        for entry in sorted(Path(root, folder).rglob("*")):
            name = entry.name.lower()
            if name.endswith(IMAGE_EXTENSIONS) and not _is_jpeg(name) and entry.is_file():
                raise BuildError(
                    f"--decode jpeg-device reads only JPEG files, not {entry} (use --decode pil)"
                )
    try:
        dataset = EncodedImageFolder(str(root), preprocessing, encoded=encoded)
    except FileNotFoundError as exc:
        raise BuildError(f"data directory {root} is not a valid ImageFolder: {exc}") from None
    if dataset.classes != folders:
        empty = sorted(set(folders) - set(dataset.classes))
        raise BuildError(f"class folders without JPEG files: {_names(empty)} in {root}")
    return dataset
