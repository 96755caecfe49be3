"""MNIST and CIFAR-10 as in-memory tensors: images NCHW float in [0, 1], labels int64.

The book trains small networks many times, so a dataset is decoded once into two tensors and
kept in memory (no per-item PIL transforms in the training loop). Every :class:`Dataset` carries
its *identity* ("MNIST (official)", "CIFAR-10 (official)" or "CIFAR-10 (JPEG copy)") and the
folder it came from, so that every result made from it can say what it was made from.

Where the files are looked for (the one place the data root is read):

1. the ``root`` argument of :func:`load_dataset`;
2. else the environment variable ``QNNLIB_DATA``;
3. else the user cache folder ``~/.cache/qnnlib/data`` (``$XDG_CACHE_HOME/qnnlib/data``).

The layout under the root is torchvision's: ``MNIST/raw/*-ubyte`` and ``cifar-10-batches-py/``.
When those files are absent, :func:`load_dataset` asks torchvision to download them (which works
where there is internet, e.g. Colab); offline it raises one error saying where to put the files.
If the official CIFAR-10 is absent but ``cifar10-jpeg/{train,test}/<class>/*.jpg`` is present (an
ImageFolder layout), that JPEG re-encoding is used with a warning: JPEG changes pixels by a few
levels out of 255, the size of the perturbations this book studies. Its decoded tensor is cached
in ``~/.cache/qnnlib/decoded`` so later loads take about a second.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
NAMES = ("mnist", "cifar10")
SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels in memory, with where they came from.

    Attributes
    ----------
    x
        float32 tensor (N, C, H, W) in [0, 1]
    y
        int64 tensor (N,) with values in 0..len(classes)-1
    name
        "mnist" or "cifar10"
    split
        "train" or "test"
    identity
        human-readable provenance, e.g. "MNIST (official)", "CIFAR-10 (JPEG copy)"
    source
        the folder the files were read from
    classes
        class names in label order
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    identity: str
    source: str
    classes: tuple

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.x.shape)
        return f"Dataset({self.identity}, {self.split}, {shape}, source={self.source!r})"


def cache_dir() -> Path:
    """The user cache folder of qnnlib: ``$XDG_CACHE_HOME/qnnlib``, else ``~/.cache/qnnlib``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qnnlib"


def data_root(root=None) -> Path:
    """Resolve the data root: the argument, else ``QNNLIB_DATA``, else ``cache_dir()/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("QNNLIB_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return cache_dir() / "data"


def load_dataset(name: str, split: str, root=None) -> Dataset:
    """Load ``"mnist"`` or ``"cifar10"``, split ``"train"`` or ``"test"``, as in-memory tensors.

    Parameters
    ----------
    name
        "mnist" (60,000/10,000 images 1×28×28) or "cifar10" (50,000/10,000 images 3×32×32)
    split
        "train" or "test"
    root
        folder holding torchvision's layout; default ``QNNLIB_DATA``, else ``~/.cache/qnnlib/data``

    Returns
    -------
    Dataset
        ``x`` float32 (N, C, H, W) in [0, 1] and ``y`` int64 (N,).

    Raises
    ------
    ValueError
        for an unknown ``name`` or ``split``
    FileNotFoundError
        when the files are absent and cannot be downloaded (the message says where to put them)

    Example
    -------
    >>> test = load_dataset("mnist", "test")          # doctest: +SKIP
    >>> test.x.shape, test.identity                   # doctest: +SKIP
    (torch.Size([10000, 1, 28, 28]), 'MNIST (official)')
    """
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    base = data_root(root)
    if name == "mnist":
        return _load_mnist(base, split)
    return _load_cifar10(base, split)


def subset(dataset: Dataset, n: int, seed: int = 0, *, stratified: bool = True) -> Dataset:
    """A deterministic subset of ``n`` samples (fast mode), same identity and source.

    With ``stratified=True`` every class gets ``n // K`` samples (the remainder goes to the first
    classes), so a small subset still covers all K classes; otherwise a uniform random draw.
    The chosen indices depend only on ``seed`` and the labels, and are returned in sorted order.
    """
    total = len(dataset)
    if not 1 <= n <= total:
        raise ValueError(f"n must be in 1..{total} (the dataset size), got {n}")
    generator = torch.Generator().manual_seed(seed)
    if stratified:
        k = len(dataset.classes)
        picks = []
        for c in range(k):
            members = torch.nonzero(dataset.y == c).flatten()
            want = n // k + (1 if c < n % k else 0)
            if want > len(members):
                raise ValueError(f"n={n} asks for {want} samples of class {c}, which has {len(members)}")
            picks.append(members[torch.randperm(len(members), generator=generator)[:want]])
        index = torch.cat(picks).sort().values
    else:
        index = torch.randperm(total, generator=generator)[:n].sort().values
    return Dataset(
        x=dataset.x[index], y=dataset.y[index], name=dataset.name, split=dataset.split,
        identity=dataset.identity, source=dataset.source, classes=dataset.classes,
    )


# ---------------------------------------------------------------------------------------
# MNIST: the four idx files in root/MNIST/raw (torchvision's layout), plain or gzipped.
# ---------------------------------------------------------------------------------------


def _mnist_files(raw: Path, split: str):
    prefix = "train" if split == "train" else "t10k"
    found = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        plain, zipped = raw / stem, raw / f"{stem}.gz"
        found.append(plain if plain.exists() else zipped if zipped.exists() else None)
    return found


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_mnist(base: Path, split: str) -> Dataset:
    raw = base / "MNIST" / "raw"
    files = _mnist_files(raw, split)
    if None in files:
        _download("MNIST", base, split)
        files = _mnist_files(raw, split)
    images, labels = (_read_idx(p) for p in files)
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(x, y, "mnist", split, "MNIST (official)", str(raw), MNIST_CLASSES)


# ---------------------------------------------------------------------------------------
# CIFAR-10: official python batches in root/cifar-10-batches-py, else the JPEG copy.
# ---------------------------------------------------------------------------------------


def _cifar_batches(split: str):
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _load_cifar10(base: Path, split: str) -> Dataset:
    official = base / "cifar-10-batches-py"
    jpeg = base / "cifar10-jpeg" / split
    have_official = all((official / b).exists() for b in _cifar_batches(split))
    if not have_official and jpeg.is_dir():
        warnings.warn(
            f"official CIFAR-10 not found under {base}; using the JPEG copy in {jpeg.parent}. "
            "JPEG changes pixels by a few levels out of 255: label results 'CIFAR-10 (JPEG copy)'.",
            stacklevel=3,
        )
        images, labels = _decode_jpeg_folder(jpeg)
        return _cifar_dataset(images, labels, split, "CIFAR-10 (JPEG copy)", jpeg)
    if not have_official:
        _download("CIFAR10", base, split)
    arrays, labels = [], []
    for batch in _cifar_batches(split):
        with open(official / batch, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        arrays.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"])
    images = torch.from_numpy(np.concatenate(arrays))
    return _cifar_dataset(images, torch.tensor(labels, dtype=torch.int64), split, "CIFAR-10 (official)", official)


def _cifar_dataset(images, labels, split, identity, source) -> Dataset:
    x = images.float().div_(255.0)
    return Dataset(x, labels, "cifar10", split, identity, str(source), CIFAR10_CLASSES)


def _decode_jpeg_folder(folder: Path):
    """Decode an ImageFolder tree of 32×32 JPEGs to uint8 (N, 3, 32, 32), cached on disk.

    Class folders sorted alphabetically give the labels (for CIFAR-10 this is the official order);
    files are sorted within a class. The cache key is the resolved folder, the file count and the
    folders' modification times, so an edited copy is decoded again.
    """
    folder = folder.resolve()
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if tuple(classes) != CIFAR10_CLASSES:
        raise ValueError(f"{folder} must hold the ten CIFAR-10 class folders, found {classes}")
    files = [sorted((folder / c).glob("*.jpg")) for c in classes]
    stamp = "|".join(f"{c}:{len(f)}:{(folder / c).stat().st_mtime_ns}" for c, f in zip(classes, files))
    key = hashlib.sha1(f"{folder}|{stamp}".encode()).hexdigest()[:16]
    cached = cache_dir() / "decoded" / f"cifar10-jpeg-{folder.name}-{key}.pt"
    if cached.exists():
        blob = torch.load(cached, weights_only=True)
        return blob["images"], blob["labels"]

    from PIL import Image  # torchvision's own decoder is optional; PIL ships with it anyway

    count = sum(len(f) for f in files)
    images = np.empty((count, 32, 32, 3), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    i = 0
    for label, paths in enumerate(files):
        for path in paths:
            with Image.open(path) as im:
                images[i] = np.asarray(im.convert("RGB"))
            labels[i] = label
            i += 1
    images_t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels_t = torch.from_numpy(labels)
    # Write to a temporary name and rename, so concurrent readers never see a half-written file.
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"images": images_t, "labels": labels_t}, partial)
    os.replace(partial, cached)
    return images_t, labels_t


# ---------------------------------------------------------------------------------------
# Download (torchvision, where there is internet) or one clear error.
# ---------------------------------------------------------------------------------------

_WHERE = {
    "MNIST": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    "CIFAR10": "cifar-10-batches-py/ (the official python version), or an ImageFolder copy in cifar10-jpeg/{train,test}/<class>/",
}


def _download(kind: str, base: Path, split: str) -> None:
    try:
        import torchvision.datasets as tvd

        getattr(tvd, kind)(root=str(base), train=(split == "train"), download=True)
    except Exception as error:  # no internet, no torchvision, a broken mirror: one message for all
        raise FileNotFoundError(
            f"{kind} ({split}) is not under {base} and could not be downloaded "
            f"({type(error).__name__}: {error}). Put the files at {base}/{_WHERE[kind]}, "
            "or point the environment variable QNNLIB_DATA (or the root argument) at a folder "
            "that holds them."
        ) from None
