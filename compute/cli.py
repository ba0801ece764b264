"""``python -m compute``: build, inspect and verify atlases.

Each subcommand lives beside the code it drives; a module listed in ``_COMMAND_MODULES``
exposes ``register_cli(subparsers)``, which adds its subcommand(s) and sets ``run``
(a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from compute.atlas import PART_FEATUREVIS, Atlas, AtlasError
from compute.errors import BuildError

log = logging.getLogger("compute")

_COMMAND_MODULES = (
    "compute.build",  # build, layers
    "compute.demo",  # demo
    "compute.synthetic",  # synthetic
    "compute.featurevis.cli",  # featurevis, invert
    "compute.export",  # export
)


#: How ``verify`` names each influence method for people.
_METHOD_WORDS = {
    "exact": "exact",
    "exact-widest-path": "exact per branch, widest path",
    "gradient-x-activation": "gradient x activation attribution",
}


def _verify(args: argparse.Namespace) -> int:
    """Check every file, then say how the atlas was built and how its layers connect."""
    atlas = Atlas.open(args.atlas, verify_hashes=True)
    print(
        f"ok: {atlas.path} (format v{atlas.version}, {len(atlas.files)} files, "
        f"parts: {', '.join(sorted(atlas.parts))})"
    )
    print(f"build: {atlas.build.describe()}")
    if PART_FEATUREVIS in atlas.parts:
        have = atlas.featurevis_channels()
        missing = [
            layer.name for layer, n in zip(atlas.layers, have, strict=True) if n < layer.channels
        ]
        coverage = ", ".join(
            f"{layer.name} {n}/{layer.channels}"
            for layer, n in zip(atlas.layers, have, strict=True)
        )
        print(
            f"featurevis: {'complete' if not missing else 'PARTIAL'} ({coverage} channels)"
            + (
                f"; add the rest: python -m compute featurevis --atlas {args.atlas} "
                f"--layers {' '.join(missing)}"
                if missing
                else ""
            )
        )
    for layer in atlas.layers:
        if layer.influence_from is None:
            continue
        method = _METHOD_WORDS.get(str(layer.influence_method), str(layer.influence_method))
        print(f"influence {layer.influence_from} -> {layer.name}: {layer.connection} ({method})")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m compute",
        description="Build Network Atlas atlases from an image or text classifier and its data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verify = subparsers.add_parser(
        "verify", help="check every file of an atlas against its manifest (sizes and sha256)"
    )
    verify.add_argument("atlas", help="atlas directory")
    verify.set_defaults(run=_verify)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except (AtlasError, BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
