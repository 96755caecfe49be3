"""Official-layout CIFAR-10 written from other images: the offline stand-in for the official files.

The project's machines cannot download the official CIFAR-10; they have only a JPEG re-encoding
(``../shared/data/SOURCES.md``). What a Colab reader gets — ``cifar-10-batches-py/`` from
torchvision's download, images that differ from the ones the recorded runs used — is simulated
for the Colab check (``tools/colab_check.py``) and the tests like this:

* :func:`write_batches` writes images in the official layout (five ``data_batch_N`` pickles of
  10,000 images, ``test_batch`` and ``batches.meta``, as torchvision reads them) and returns
  their md5s; :func:`from_jpeg_copy` does it for the decoded JPEG copy, each split in another
  (seeded) order, so that "the run's own images" are not what a chapter gets;
* torchvision checks every batch against the *official* md5 before unpickling (and
  ``qnnlib.data`` relies on that). These files have other md5s, so only inside the test
  environment torchvision is told theirs: :func:`patch_torchvision` (in process) or
  :func:`sitecustomize_source` (a ``sitecustomize.py`` put on a test kernel's ``PYTHONPATH``).
  Nothing in ``qnnlib`` can switch the check off.

Usage (a data folder for a manual check)::

    python tools/official_layout.py OUT [--data ../shared/data] [--seed 0]

writes ``OUT/data/`` (``cifar-10-batches-py/`` and a link to ``MNIST``) and ``OUT/site/sitecustomize.py``;
run with ``QNNLIB_DATA=OUT/data PYTHONPATH=OUT/site``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "cifar-10-batches-py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = 5


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dump(path: Path, entry: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def write_batches(train_x, train_y, test_x, test_y, root: Path) -> dict[str, str]:
    """Write uint8 images (N, 3, 32, 32) and labels (N,) as ``root/cifar-10-batches-py``; md5 per file.

    The layout is the official one: ``data`` (N, 3072) uint8 rows, channel-major (R, G, B planes
    of 32×32), ``labels`` a list of ints, ``batch_label`` and ``filenames``; the training split in
    five equal batches.
    """
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    train_x, test_x = np.asarray(train_x, dtype=np.uint8), np.asarray(test_x, dtype=np.uint8)
    if train_x.ndim != 4 or train_x.shape[1:] != (3, 32, 32) or len(train_x) % TRAIN_BATCHES:
        raise ValueError(f"train_x must be (5k, 3, 32, 32) uint8, got {train_x.shape}")
    if test_x.ndim != 4 or test_x.shape[1:] != (3, 32, 32):
        raise ValueError(f"test_x must be (N, 3, 32, 32) uint8, got {test_x.shape}")
    files = {}
    size = len(train_x) // TRAIN_BATCHES
    parts = [(f"data_batch_{k + 1}", train_x[k * size:(k + 1) * size], train_y[k * size:(k + 1) * size])
             for k in range(TRAIN_BATCHES)] + [("test_batch", test_x, test_y)]
    for name, x, y in parts:
        _dump(folder / name, {"batch_label": f"{name} (written by tools/official_layout.py)",
                              "labels": [int(v) for v in y], "data": x.reshape(len(x), -1),
                              "filenames": [f"{name}_{i}.png" for i in range(len(x))]})
        files[name] = _md5(folder / name)
    _dump(folder / "batches.meta", {"label_names": list(CLASSES), "num_cases_per_batch": size, "num_vis": 3072})
    files["batches.meta"] = _md5(folder / "batches.meta")
    return files


def patch_torchvision(md5s: dict[str, str]) -> None:
    """Make ``torchvision.datasets.CIFAR10`` expect the md5s of :func:`write_batches`' files (tests only)."""
    from torchvision.datasets import CIFAR10

    CIFAR10.train_list = [[f"data_batch_{k + 1}", md5s[f"data_batch_{k + 1}"]] for k in range(TRAIN_BATCHES)]
    CIFAR10.test_list = [["test_batch", md5s["test_batch"]]]
    CIFAR10.meta = {**CIFAR10.meta, "md5": md5s["batches.meta"]}


def sitecustomize_source(md5s: dict[str, str]) -> str:
    """A ``sitecustomize.py`` that applies :func:`patch_torchvision` in every process started with it."""
    return ("# Written by tools/official_layout.py for a test kernel only: torchvision accepts the md5s of the\n"
            "# official-layout CIFAR-10 batches that it wrote from the JPEG copy (the official files are not\n"
            "# available offline). Never installed anywhere else.\n"
            f"MD5S = {json.dumps(md5s, indent=1)}\n"
            "try:\n"
            "    from torchvision.datasets import CIFAR10\n"
            "except ImportError:\n"
            "    pass\n"
            "else:\n"
            f"    CIFAR10.train_list = [[f'data_batch_{{k}}', MD5S[f'data_batch_{{k}}']] for k in range(1, {TRAIN_BATCHES + 1})]\n"
            "    CIFAR10.test_list = [['test_batch', MD5S['test_batch']]]\n"
            "    CIFAR10.meta = {**CIFAR10.meta, 'md5': MD5S['batches.meta']}\n")


def from_jpeg_copy(data: Path, out: Path, seed: int = 0) -> tuple[Path, Path]:
    """The JPEG copy of ``data`` in the official layout, each split reordered: (data folder, site folder).

    The data folder also links ``data/MNIST`` (the chapters read MNIST beside CIFAR-10); the site
    folder holds the ``sitecustomize.py`` to put on the kernel's ``PYTHONPATH``.
    """
    sys.path.insert(0, str(ROOT))
    from qnnlib.data import _decode_jpeg_folder   # the decoding (and cache) qnnlib itself uses

    data, out = Path(data), Path(out)
    rng = np.random.default_rng(seed)
    splits = {}
    for split in ("train", "test"):
        images, labels = _decode_jpeg_folder(data / "cifar10-jpeg" / split)
        order = rng.permutation(len(labels))   # not the order of the copy (nor of the recorded runs)
        splits[split] = (images.numpy()[order], labels.numpy()[order])
    md5s = write_batches(*splits["train"], *splits["test"], out / "data")
    if (data / "MNIST").exists() and not (out / "data" / "MNIST").exists():
        os.symlink((data / "MNIST").resolve(), out / "data" / "MNIST")
    (out / "site").mkdir(parents=True, exist_ok=True)
    (out / "site" / "sitecustomize.py").write_text(sitecustomize_source(md5s))
    return out / "data", out / "site"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("QNNLIB_DATA") or ROOT.parent / "shared" / "data"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.data / "cifar10-jpeg" / "train").is_dir():
        print(f"official_layout: --data {args.data} has no cifar10-jpeg/train folder", file=sys.stderr)
        return 2
    folder, site = from_jpeg_copy(args.data, args.out, args.seed)
    print(f"QNNLIB_DATA={folder} PYTHONPATH={site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
