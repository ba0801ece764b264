"""Tiny token models for tests, offline: a random BERT text classifier saved as a Hugging
Face directory (``hf:DIR``) and a small torchvision Vision Transformer.

The BERT directory is built from a fixed seed and a WordPiece vocabulary written here, so
every call builds the same model; nothing is downloaded. ``--model
tests.helpers.text_models:tiny_vit`` names the ViT on a command line.

Examples:
    >>> path = write_tiny_bert(tmp_path / "bert")                  # doctest: +SKIP
    >>> get_model(f"hf:{path}").classes                             # doctest: +SKIP
    ['animal', 'plant', 'food']
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer

#: The tiny BERT's classes (``config.id2label``), indexed by output.
CLASSES = ("animal", "plant", "food")

#: The tiny BERT's dimensions: hidden (residual) width, MLP width, layers.
HIDDEN = 32
INTERMEDIATE = 64
LAYERS = 2

#: WordPiece vocabulary: the special tokens first (``[PAD]`` is id 0), then words.
VOCAB = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "a", "cat", "dog", "fish", "bird", "tree", "rose", "grass", "oak",
    "bread", "soup", "apple", "rice", "eats", "grows", "is", "green", "small", "big",
    "red", "tall", "sweet", "hot", "in", "on", "garden", "kitchen", "sea", "##s", "##y",
)  # fmt: skip

#: Texts of each class in the tiny vocabulary (for data files in tests).
SENTENCES = {
    "animal": ("the cat eats fish", "a small dog", "the big bird in the tree"),
    "plant": ("a tall oak grows", "the red rose", "green grass in the garden"),
    "food": ("hot soup in the kitchen", "sweet apple", "rice and bread"),
}


def write_tiny_bert(path: Path, *, head: bool = True, seed: int = 0, max_length: int = 64) -> Path:
    """Write a random tiny BERT classifier (or bare encoder) and its tokenizer to ``path``.

    Args:
        path: the directory to write (created).
        head: ``True``: a ``BertForSequenceClassification`` with :data:`CLASSES`;
            ``False``: a bare ``BertModel`` (no classification head).
        seed: the weights' seed (a forked RNG: the caller's stream is untouched).
        max_length: the model's position embeddings and the tokenizer's limit.

    Returns:
        ``path``.
    """
    # Imported here, not at the top: ``tiny_vit`` (a torchvision model) needs no
    # transformers, and a command line naming it imports this module.
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary as ``vocab`` (a ``vocab_file`` keyword is ignored).
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), model_max_length=max_length)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=max_length,
        id2label=dict(enumerate(CLASSES)),
        label2id={name: i for i, name in enumerate(CLASSES)},
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = (BertForSequenceClassification if head else BertModel)(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_vit(num_classes: int = 3) -> nn.Module:
    """A small torchvision ``VisionTransformer`` (32 px, 8 px patches: 17 tokens, 32 wide,
    MLP 64, 2 layers), seeded (importable as ``tests.helpers.text_models:tiny_vit``)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return VisionTransformer(
            image_size=32,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=32,
            mlp_dim=64,
            num_classes=num_classes,
        )


def tiny_swin(num_classes: int = 3) -> nn.Module:
    """A small torchvision ``SwinTransformer`` (32 px, 4 px patches, 2 stages of one block,
    8 then 16 wide, 2x2 windows), seeded (``tests.helpers.text_models:tiny_swin``). Its
    stages output channels-last maps ``[N, 8, 8, 8]`` and ``[N, 4, 4, 16]``."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return SwinTransformer(
            patch_size=[4, 4],
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=[2, 2],
            num_classes=num_classes,
        )


#: The MLP units of the tiny BERT's two blocks (the natural Summit layers).
BERT_MLP_LAYERS = ("bert.encoder.layer.0.intermediate", "bert.encoder.layer.1.intermediate")


def write_texts_csv(path: Path) -> Path:
    """A CSV file of :data:`SENTENCES` (each also lengthened, so batches hold padding), with
    an extra ``id`` column the reader ignores."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        for name, sentences in SENTENCES.items():
            for k, sentence in enumerate(sentences):
                writer.writerow([k, sentence, name])
                writer.writerow([k, f"{sentence}, and also {sentences[0]}", name])
    return path


def build_text_atlas(folder: Path, *, max_length: int = 12) -> Path:
    """A user's folder with the tiny BERT (``my-bert``), ``texts.csv`` and the atlas built
    there by ``python -m compute build`` with relative paths; returns the atlas path."""
    import os

    from compute.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_bert(folder / "my-bert")
    write_texts_csv(folder / "texts.csv")
    before = os.getcwd()
    os.chdir(folder)
    try:
        code = main(
            [
                "build", "--model", "hf:my-bert", "--data", "texts.csv",
                "--layers", ",".join(BERT_MLP_LAYERS), "--out", "atlas",
                "--max-length", str(max_length), "--batch-size", "4", "--workers", "0",
                "--no-progress",
            ]
        )  # fmt: skip
    finally:
        os.chdir(before)
    if code != 0:
        raise RuntimeError(f"the text build failed ({code})")
    return folder / "atlas"
