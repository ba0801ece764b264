"""Build an atlas: the Python API :func:`build_atlas` and the ``build`` / ``layers`` commands.

A build validates everything that can be checked cheaply first (layers, classes against
the model's outputs, the output path, and on the CLI the data folders and every image
header), then makes **one streaming pass** over the data (Summit's activation and
influence aggregation, each channel's top examples, the TopoAct sample), then derives the
attribution graphs, the class embedding, the Mapper index and the receptive-field crops,
and writes the atlas atomically.

One room per job:

- :mod:`~compute.build.options`: :class:`BuildOptions`, the frozen, validated options;
- :mod:`~compute.build.checks`: everything that can refuse a build, in one line;
- :mod:`~compute.build.stream`: the one pass (decode, resume, hooks, shard merge);
- :mod:`~compute.build.outputs`: derived parts, manifest and the one commit;
- :mod:`~compute.build.pipeline`: :func:`build_atlas`, validate → stream → derive → write;
- :mod:`~compute.build.cli`: the command line → :class:`BuildOptions`.

Examples:
    Python::

        from torch.utils.data import DataLoader
        from compute.build import build_atlas
        from compute.data import ImageFolderWithIndex, Preprocessing

        pre = Preprocessing.from_arg("imagenet", image_size=224)
        data = ImageFolderWithIndex("val", transform=pre.transform())
        build_atlas(model, DataLoader(data, batch_size=64),
                    layers=["features.13", "features.16", "features.18"],
                    classes=data.classes, out="vgg11-atlas", preprocessing=pre)

    Shell::

        python -m compute layers --model torchvision:vgg11
        python -m compute build --model torchvision:vgg11 --weights vgg11.pth \\
            --data val --layers features.13,features.16,features.18 --out vgg11-atlas
"""

from compute.build.checks import (
    autocast_context,
    check_classes,
    check_labels,
    check_layers,
    check_loader_order,
    check_precision,
    resolve_device,
)
from compute.build.cli import register_cli
from compute.build.options import BuildOptions
from compute.build.outputs import WEIGHTS_PATH, receptive_fields_or_whole_image
from compute.build.pipeline import build_atlas

__all__ = [
    "WEIGHTS_PATH",
    "BuildOptions",
    "autocast_context",
    "build_atlas",
    "check_classes",
    "check_labels",
    "check_layers",
    "check_loader_order",
    "check_precision",
    "receptive_fields_or_whole_image",
    "register_cli",
    "resolve_device",
]
