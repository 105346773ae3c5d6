"""Datasets as deterministic loaders: the built-ins by `dataset=NAME`, any other by `dataset._target_`.

A builder takes `settings` (LoaderSettings: batch sizes, seed, device, rank) and its own options and returns
Data(train, val, test, ...) with its own fast loaders; any other callable returns torch Datasets, which
dst_cli.data.user wraps. A Loader yields (x, y) on the device; `batches(epoch, start)` is a pure function of
(seed, epoch, batch index), so resuming at batch b and sharding over ranks are exact.
"""

from dst_cli.data.base import Data, Loader, LoaderSettings

__all__ = ["DATASETS", "Data", "Loader", "LoaderSettings"]

# name -> (builder, the options it is configured with besides its signature's defaults)
DATASETS = {
    "digits": ("dst_cli.data.digits.build_digits", {}),
    "planted": ("dst_cli.data.planted.build_planted", {}),
    "synthetic": ("dst_cli.data.synthetic.build_synthetic", {}),
    "cifar10": ("dst_cli.data.cifar.build_cifar10", {"root": "${oc.env:DST_DATA_DIR,data}"}),
    "cifar100": ("dst_cli.data.cifar.build_cifar100", {"root": "${oc.env:DST_DATA_DIR,data}"}),
    "imagenet": ("dst_cli.data.imagenet.build_imagenet", {"root": "???"}),
}
