"""``--decode jpeg-device``: torchvision.io JPEG decoding against the PIL path, on the CPU.

Tolerance: decoding is bit-identical on the CPU (PIL and torchvision both use
libjpeg-turbo); the resize differs only in rounding (PIL resizes in 8-bit fixed point and
rounds to whole levels, the tensor path stays in float32), so ``[0, 1]`` pixels agree
within 1/255 (measured at most 0.98/255 on these images) and on average within 0.5/255.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from compute.data import (
    EncodedImageFolder,
    JpegBatchDecoder,
    Preprocessing,
    collate_encoded,
    decode_jpeg_batch,
    open_image_folder,
)
from compute.errors import BuildError

SIZES = [(300, 200), (50, 40), (64, 64), (31, 97), (500, 375)]


def structured_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A JPEG with smooth waves, edges and noise (content that stresses the resize)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [127 + 100 * np.sin(x / 7.0), 127 + 100 * np.cos(y / 11.0), (x + y) % 256], axis=-1
    )
    pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def pil_input(data: bytes, pre: Preprocessing) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        return pre.transform()(image.convert("RGB"))


def test_decoded_batch_matches_pil_within_one_level() -> None:
    pre = Preprocessing.from_arg("none", image_size=64)
    files = [structured_jpeg(w, h, seed) for seed, (w, h) in enumerate(SIZES)]
    batch = decode_jpeg_batch([as_tensor(f) for f in files], pre, torch.device("cpu"))
    assert batch.shape == (len(SIZES), 3, 64, 64) and batch.dtype == torch.float32
    reference = torch.stack([pil_input(f, pre) for f in files])
    difference = (batch - reference).abs()
    assert float(difference.max()) <= 1 / 255 + 1e-6
    assert float(difference.mean()) <= 0.5 / 255
    # an image already at the model size is not resampled: exactly PIL's pixels
    same = SIZES.index((64, 64))
    assert torch.equal(batch[same], reference[same])


def test_normalisation_matches_pil_in_normalised_units() -> None:
    pre = Preprocessing.from_arg("imagenet", image_size=32)
    data = structured_jpeg(120, 90, seed=7)
    got = decode_jpeg_batch([as_tensor(data)], pre, torch.device("cpu"))[0]
    reference = pil_input(data, pre)
    bound = (1 / 255) / min(pre.std) + 1e-5  # one level, divided by the smallest std
    assert float((got - reference).abs().max()) <= bound
    assert float((got - reference).abs().max()) > 0  # not trivially the same function


def test_grayscale_decoding_shape_and_closeness() -> None:
    pre = Preprocessing.from_arg("none", image_size=16, grayscale=True)
    data = structured_jpeg(40, 30, seed=3)
    got = decode_jpeg_batch([as_tensor(data)], pre, torch.device("cpu"))
    assert got.shape == (1, 1, 16, 16)
    # libjpeg's gray output is the JPEG's own luma, PIL converts decoded RGB: a few levels
    assert float((got[0] - pil_input(data, pre)).abs().max()) <= 4 / 255


def test_bad_jpeg_bytes_are_one_line() -> None:
    pre = Preprocessing(8)
    with pytest.raises(BuildError, match="could not decode a JPEG file") as info:
        decode_jpeg_batch([as_tensor(b"\xff\xd8 not really a jpeg")], pre, torch.device("cpu"))
    assert "\n" not in str(info.value)


def jpeg_folder(root: Path, per_class: int = 3) -> Path:
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            data = structured_jpeg(40 + 13 * i, 30 + 7 * c, seed=10 * c + i)
            (root / name / f"{i}.jpg").write_bytes(data)
    return root


def test_encoded_folder_items_and_decoder(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "data")
    pre = Preprocessing.from_arg("none", image_size=24)
    encoded, class_map = open_image_folder(
        root, pre, num_outputs=2, decode="jpeg-device", encoded=True
    )
    assert isinstance(encoded, EncodedImageFolder) and class_map is None
    data, label, index = encoded[4]
    assert data.dtype == torch.uint8 and data.dim() == 1 and (label, index) == (1, 4)
    decoded_item = encoded.decoded[4][0]
    assert decoded_item.shape == (3, 24, 24)
    loader = DataLoader(encoded, batch_size=4, collate_fn=collate_encoded)
    decoder = JpegBatchDecoder(pre, "cpu")
    batches = [decoder(batch) for batch in loader]
    assert [b[0].shape for b in batches] == [(4, 3, 24, 24), (2, 3, 24, 24)]
    assert batches[1][1].tolist() == [1, 1] and batches[1][2].tolist() == [4, 5]
    # batched decoding = per-item decoding (the worker path on the CPU)
    assert torch.equal(batches[1][0][0], decoded_item)


def test_jpeg_device_refuses_other_files_and_modes(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "data")
    Image.new("RGB", (8, 8)).save(root / "b" / "x.png")
    with pytest.raises(BuildError, match=r"reads only JPEG files, not .*x\.png"):
        open_image_folder(root, Preprocessing(8), decode="jpeg-device")
    with pytest.raises(BuildError, match="unknown --decode 'nvjpeg'"):
        open_image_folder(root, Preprocessing(8), decode="nvjpeg")
