"""MNIST and CIFAR-10 as in-memory tensors: images NCHW float in [0, 1], labels int64.

The book trains small networks many times, so a dataset is decoded once into two tensors and
kept in memory (no per-item PIL transforms in the training loop). Every :class:`Dataset` carries
its *identity* ("MNIST (official)", "CIFAR-10 (official)" or "CIFAR-10 (JPEG copy)") and the
folder it came from, so that every result made from it can say what it was made from.

Where the files are looked for (the one place the data root is read):

1. the ``root`` argument of :func:`load_dataset`;
2. else the environment variable ``QNNLIB_DATA``;
3. else the user cache folder ``~/.cache/qnnlib/data`` (``$XDG_CACHE_HOME/qnnlib/data``).

The files are read by torchvision, in its layout under the root: ``MNIST/raw/*-ubyte``
(``torchvision.datasets.MNIST``) and ``cifar-10-batches-py/``
(``torchvision.datasets.CIFAR10``, which checks the md5 of every official batch before it
unpickles anything; a file that fails raises ``DataIntegrityError`` and is never unpickled).
When the files are absent they are downloaded (which works where there is internet, e.g. Colab);
offline one error says where to put them. If the official CIFAR-10 is absent but
``cifar10-jpeg/{train,test}/<class>/*.jpg`` is present (read with
``torchvision.datasets.ImageFolder``), that JPEG re-encoding is used with a warning: JPEG
changes pixels by a few levels out of 255, the size of the perturbations this book studies. Its
decoded images are cached in ``~/.cache/qnnlib/decoded`` under a key computed from the files'
contents, so a changed file is decoded again. Chapter 6 (MNIST) and Chapter 8 (CIFAR-10) use them.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
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


class DataIntegrityError(ValueError):
    """A data file is not the official one (its checksum differs); it was not unpickled."""


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
    DataIntegrityError
        (a ``ValueError``) when an official CIFAR-10 file fails its md5 check
    ImportError
        when torchvision cannot be imported (it reads every dataset)

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
# Readers: torchvision's datasets, turned into one float tensor per split.
# ---------------------------------------------------------------------------------------


def _torchvision():
    """The torchvision module, or an ImportError that says it is one (never a download failure)."""
    try:
        import torchvision
    except ImportError as error:
        raise ImportError(f"qnnlib.data reads datasets with torchvision, which does not import: {error}") from error
    return torchvision


def _load_mnist(base: Path, split: str) -> Dataset:
    mnist_cls = _torchvision().datasets.MNIST
    raw = base / "MNIST" / "raw"
    # torchvision reads the four uncompressed idx files and needs all four, whatever the split.
    if not all((raw / Path(name).stem).is_file() for name, _ in mnist_cls.resources):
        _download("MNIST", base, split)
    mnist = mnist_cls(str(base), train=(split == "train"), download=False)
    x = mnist.data.unsqueeze(1).float().div_(255.0)
    return Dataset(x, mnist.targets.long(), "mnist", split, "MNIST (official)", str(raw), MNIST_CLASSES)


def _load_cifar10(base: Path, split: str) -> Dataset:
    cifar_cls = _torchvision().datasets.CIFAR10
    official = base / cifar_cls.base_folder
    expected = dict(cifar_cls.train_list + cifar_cls.test_list)
    expected[cifar_cls.meta["filename"]] = cifar_cls.meta["md5"]
    present = [name for name in expected if (official / name).exists()]
    jpeg = base / "cifar10-jpeg" / split
    if not present and jpeg.is_dir():
        warnings.warn(
            f"official CIFAR-10 not found under {base}; using the JPEG copy in {jpeg.parent}. "
            "JPEG changes pixels by a few levels out of 255: label results 'CIFAR-10 (JPEG copy)'.",
            stacklevel=3,
        )
        images, labels = _decode_jpeg_folder(jpeg)
        return _cifar_dataset(images, labels, split, "CIFAR-10 (JPEG copy)", jpeg)
    if len(present) < len(expected):
        _refuse_altered(official, {name: expected[name] for name in present})
        _download("CIFAR10", base, split)
    try:
        # CIFAR10 checks the md5 of all six batches and of batches.meta before unpickling any.
        cifar = cifar_cls(str(base), train=(split == "train"), download=False)
    except RuntimeError:
        _refuse_altered(official, expected)
        raise
    images = torch.from_numpy(np.ascontiguousarray(cifar.data.transpose(0, 3, 1, 2)))
    labels = torch.tensor(cifar.targets, dtype=torch.int64)
    return _cifar_dataset(images, labels, split, "CIFAR-10 (official)", official)


def _refuse_altered(folder: Path, md5s: dict) -> None:
    """Raise ``DataIntegrityError`` naming the files in ``folder`` whose md5 differs."""
    check = _torchvision().datasets.utils.check_integrity
    bad = [name for name, md5 in md5s.items() if not check(str(folder / name), md5)]
    if bad:
        raise DataIntegrityError(
            f"{', '.join(bad)} in {folder} {'is' if len(bad) == 1 else 'are'} not the official CIFAR-10 "
            "(md5 differs), so nothing was unpickled: delete the folder to download it again, or put "
            "the official cifar-10-batches-py there"
        )


def _cifar_dataset(images, labels, split, identity, source) -> Dataset:
    return Dataset(images.float().div_(255.0), labels, "cifar10", split, identity, str(source), CIFAR10_CLASSES)


def _decode_jpeg_folder(folder: Path):
    """Decode an ImageFolder tree of 32×32 JPEGs to uint8 (N, 3, 32, 32) and labels (N,), cached.

    The order is ImageFolder's: class folders sorted by name give the labels (for CIFAR-10 the
    official order), files sorted by name within a class. The cache key is a SHA-256 over every
    (relative path, SHA-256 of the file's bytes), so any change of content is decoded again;
    reading and hashing the files costs a fraction of decoding them.
    """
    tv = _torchvision()
    listing = tv.datasets.ImageFolder(str(folder), is_valid_file=lambda p: p.lower().endswith((".jpg", ".jpeg")))
    if tuple(listing.classes) != CIFAR10_CLASSES:
        raise ValueError(f"{folder} must hold the ten CIFAR-10 class folders, found {listing.classes}")
    prefix = os.path.join(listing.root, "")  # samples are prefix + "<class>/<file>"; plain strings are fast here
    key = hashlib.sha256(f"cifar10-jpeg|torchvision {tv.__version__}".encode())
    blobs = []
    for path, _ in listing.samples:
        with open(path, "rb") as handle:
            blobs.append(handle.read())
        key.update(path[len(prefix):].replace(os.sep, "/").encode() + b"\0" + hashlib.sha256(blobs[-1]).digest())
    labels = torch.tensor(listing.targets, dtype=torch.int64)
    cached = cache_dir() / "decoded" / f"cifar10-jpeg-{key.hexdigest()}.npy"
    images = _read_cache(cached, (len(blobs), 3, 32, 32))
    if images is None:
        # Decode as ImageFolder's default loader does (PIL, RGB), from the very bytes hashed above;
        # torchvision.io.decode_jpeg is faster but deprecated since torchvision 0.29.
        from PIL import Image

        array = np.empty((len(blobs), 32, 32, 3), dtype=np.uint8)
        for i, blob in enumerate(blobs):
            with Image.open(io.BytesIO(blob)) as image:
                array[i] = np.asarray(image.convert("RGB"))
        images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
        _write_cache(cached, images.numpy())
    return images, labels


def _read_cache(path: Path, shape: tuple):
    """The cached uint8 array as a tensor, or None when absent or not of ``shape`` (never unpickled)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return torch.from_numpy(array) if array.dtype == np.uint8 and array.shape == shape else None


def _write_cache(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as .npy under a temporary name, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(handle.name, path)


# ---------------------------------------------------------------------------------------
# Download (torchvision, where there is internet) or one clear error.
# ---------------------------------------------------------------------------------------

_WHERE = {
    "MNIST": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (all four, plain or the official .gz)",
    "CIFAR10": "cifar-10-batches-py/ (official python version), or a copy in cifar10-jpeg/{train,test}/<class>/*.jpg",
}


def _fetch(kind: str, base: Path, split: str) -> None:
    """Download (or unpack an already downloaded official archive) with md5 checks."""
    datasets = _torchvision().datasets
    if kind == "MNIST":
        # Four .gz files, each md5-checked, then gunzipped (no archive to unpack).
        datasets.MNIST(str(base), train=(split == "train"), download=True)
        return
    cifar = datasets.CIFAR10
    datasets.utils.download_url(cifar.url, str(base), cifar.filename, cifar.tgz_md5)
    # torchvision's own extraction passes no filter; "data" refuses links and paths outside base.
    with tarfile.open(base / cifar.filename, "r:gz") as archive:
        archive.extractall(base, filter="data")


def _download(kind: str, base: Path, split: str) -> None:
    _torchvision()  # an ImportError is raised as itself, not as a failed download
    try:
        _fetch(kind, base, split)
    except Exception as error:  # no internet, a broken mirror, a full disk: one message for all
        raise FileNotFoundError(
            f"{kind} ({split}) is not under {base} and could not be downloaded ({type(error).__name__}: "
            f"{error}). Put the files at {base}/{_WHERE[kind]}, or point the environment variable "
            "QNNLIB_DATA (or the root argument) at a folder that holds them."
        ) from None
