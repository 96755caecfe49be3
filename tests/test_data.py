"""Tests for qnnlib.data: argument checks, offline errors, forged files that must not run, the
decode cache, then the real files (skipped only if absent) cross-checked with independent readers."""

import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from qnnlib import data, experiments, results
from qnnlib.data import DataIntegrityError, Dataset, load_dataset, subset

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QNNLIB_DATA", "")) if os.environ.get("QNNLIB_DATA") else None
needs_mnist = pytest.mark.skipif(
    SHARED is None or not (SHARED / "MNIST" / "raw").is_dir(),
    reason="real MNIST not found: set QNNLIB_DATA to a folder with MNIST/raw (CI has ../shared/data)",
)
needs_cifar_jpeg = pytest.mark.skipif(
    SHARED is None or not (SHARED / "cifar10-jpeg" / "test").is_dir(),
    reason="CIFAR-10 JPEG copy not found: set QNNLIB_DATA to a folder with cifar10-jpeg/",
)
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test decodes into its own cache folder, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class Payload:
    """Unpickling this creates ``marker``: the proof that a loader ran code from a data file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny(n=30, k=3):
    return Dataset(torch.rand(n, 1, 2, 2), torch.arange(n) % k, "mnist", "test", "toy", "/nowhere",
                   tuple(str(i) for i in range(k)))


def forged_cifar(root: Path, names=CIFAR_FILES) -> Path:
    """Write pickles with a payload where the official CIFAR-10 batches go; return the marker path."""
    marker = root.parent / "payload-ran"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0]}))
    return marker


def jpeg_bytes(gray: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (gray, gray, gray)).save(buffer, "JPEG", quality=75)
    return buffer.getvalue()


def small_jpeg_copy(root: Path) -> Path:
    """A CIFAR-10 ImageFolder test split with one uniform grey image (level 100) per class."""
    split = root / "cifar10-jpeg" / "test"
    for name in data.CIFAR10_CLASSES:
        (split / name).mkdir(parents=True)
        (split / name / "0000.jpg").write_bytes(jpeg_bytes(100))
    return split


# --- arguments and errors ----------------------------------------------------------------


@pytest.mark.parametrize("name, split, argument", [("imagenet", "test", "name"), ("mnist", "val", "split")])
def test_bad_name_or_split_raises_value_error_naming_it(name, split, argument, tmp_path):
    with pytest.raises(ValueError, match=argument):
        load_dataset(name, split, root=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_data_offline_gives_one_clear_error(name, tmp_path, monkeypatch):
    def offline(*args):  # how every download fails without internet, without touching the network
        raise OSError("no internet")

    monkeypatch.setattr(data, "_fetch", offline)
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, "test", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "QNNLIB_DATA" in message and "no internet" in message


def test_missing_torchvision_is_reported_as_an_import_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` raise ImportError
    with pytest.raises(ImportError, match="torchvision"):
        load_dataset("mnist", "test", root=tmp_path)


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("QNNLIB_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("QNNLIB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_root() == tmp_path / "cache" / "qnnlib" / "data"


def test_subset_is_stratified_and_deterministic():
    full = tiny()
    part = subset(full, 9, seed=4)
    assert len(part) == 9 and torch.bincount(part.y).tolist() == [3, 3, 3]
    again = subset(full, 9, seed=4)
    assert torch.equal(part.x, again.x) and torch.equal(part.y, again.y)
    assert part.identity == full.identity and part.source == full.source
    other = subset(full, 9, seed=5)
    assert not torch.equal(part.x, other.x)
    assert len(subset(full, 7, seed=0, stratified=False)) == 7
    with pytest.raises(ValueError, match="n must be"):
        subset(full, 0)
    with pytest.raises(ValueError, match="n must be"):
        subset(full, 31)



def test_subset_gives_the_remainder_to_the_first_classes_and_keeps_the_dataset_order():
    full = tiny()
    full.x[:, 0, 0, 0] = torch.arange(len(full), dtype=torch.float32)  # pixel 0 = position in the dataset
    for n, counts in ((8, [3, 3, 2]), (10, [4, 3, 3]), (29, [10, 10, 9])):
        part = subset(full, n, seed=1)
        assert len(part) == n and torch.bincount(part.y, minlength=3).tolist() == counts
        position = part.x[:, 0, 0, 0]
        # Sorted indices: the subset lists samples in the dataset's own order (not class by class).
        assert torch.all(position[1:] > position[:-1])
        assert torch.equal(part.y, full.y[position.long()])
    uniform = subset(full, 11, seed=2, stratified=False).x[:, 0, 0, 0]
    assert len(uniform) == 11 and torch.all(uniform[1:] > uniform[:-1])

# --- nothing in a data or results folder runs code -----------------------------------------


@pytest.mark.parametrize("names", [CIFAR_FILES, ["data_batch_1"]], ids=["all-files", "one-file"])
def test_forged_cifar_batches_are_refused_before_unpickling(names, tmp_path, monkeypatch):
    marker = forged_cifar(tmp_path / "root", names)
    monkeypatch.setattr(data, "_fetch", lambda *args: pytest.fail("a forged folder must not trigger a download"))
    with pytest.raises(DataIntegrityError, match="data_batch_1.*md5"):
        load_dataset("cifar10", "train", root=tmp_path / "root")
    assert not marker.exists()


def test_cli_refuses_forged_cifar_with_one_line_and_exit_2(tmp_path):
    marker = forged_cifar(tmp_path / "root")
    env = dict(os.environ, QNNLIB_DATA=str(tmp_path / "root"), PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, "-m", "qnnlib", "run", "cifar-cnn4", "--fast", "--device", "cpu", "--out", str(tmp_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "md5" in done.stderr, done.stderr
    assert not marker.exists()


def test_forged_checkpoint_is_refused_by_load_checkpoint(tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save({"model": Payload(marker), "epoch": 1}, tmp_path / "run.ckpt.pt")
    with pytest.raises(results.ResultsError, match="corrupt or not a qnnlib checkpoint"):
        results.load_checkpoint(tmp_path / "run.ckpt.pt")
    assert not marker.exists()


def test_forged_weights_are_refused_by_final_model(tmp_path):
    marker = tmp_path / "payload-ran"
    record = {"config": {"model": "MnistCNN3", "width": 0}}
    run = experiments.RecordedRun(record, {}, tmp_path / "mnist-cnn3.json")
    torch.save({"model": Payload(marker)}, experiments.weights_path(run.path))
    with pytest.raises((pickle.UnpicklingError, results.ResultsError)):
        experiments.final_model(run)
    assert not marker.exists()


def test_downloaded_archive_is_extracted_with_the_data_filter(tmp_path, monkeypatch):
    # An archive that passes the (here bypassed) md5 check but tries to write outside the root.
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / torchvision.datasets.CIFAR10.filename, "w:gz") as archive:
        payload = tmp_path / "payload"
        payload.write_text("x")
        archive.add(payload, arcname="../escaped")
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", lambda *args: None)
    with pytest.raises(FileNotFoundError, match="outside"):
        load_dataset("cifar10", "test", root=root)
    assert not (tmp_path / "escaped").exists()


# --- the JPEG decode cache ---------------------------------------------------------------


def test_decode_cache_follows_content_not_file_times(tmp_path, monkeypatch):
    split = small_jpeg_copy(tmp_path / "root")
    with pytest.warns(UserWarning, match="JPEG copy"):
        first = load_dataset("cifar10", "test", root=tmp_path / "root")
    assert abs(first.x[0].mean().item() * 255 - 100) < 1  # a uniform grey survives JPEG within a level
    # Rewrite one file in place: another grey of the same byte count, times restored.
    target = split / "airplane" / "0000.jpg"
    before = target.stat()
    replacement = jpeg_bytes(110)
    assert len(replacement) == before.st_size
    target.write_bytes(replacement)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.warns(UserWarning):
        second = load_dataset("cifar10", "test", root=tmp_path / "root")
    assert abs(second.x[0].mean().item() * 255 - 110) < 1
    assert torch.equal(second.x[1:], first.x[1:])
    # Unchanged files are served from the cache: decoding is not called again.
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded despite the cache"))
    with pytest.warns(UserWarning):
        third = load_dataset("cifar10", "test", root=tmp_path / "root")
    assert torch.equal(third.x, second.x)


def test_forged_decode_cache_is_not_unpickled(tmp_path):
    small_jpeg_copy(tmp_path / "root")
    with pytest.warns(UserWarning):
        first = load_dataset("cifar10", "test", root=tmp_path / "root")
    (cached,) = (tmp_path / "cache" / "qnnlib" / "decoded").glob("*.npy")
    marker = tmp_path / "payload-ran"
    np.save(cached, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning):
        again = load_dataset("cifar10", "test", root=tmp_path / "root")
    assert not marker.exists() and torch.equal(again.x, first.x)


# --- the real files, cross-checked with independent readers --------------------------------


def read_idx(path: Path) -> np.ndarray:
    """The idx format (LeCun et al.): a 4-byte magic whose last byte is ndim, ndim big-endian sizes, uint8 data."""
    raw = path.read_bytes()
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * len(shape)).reshape(shape)


@needs_mnist
def test_torchvision_reads_the_offline_mnist_as_is():
    mnist = torchvision.datasets.MNIST(root=str(SHARED), train=False)
    assert len(mnist) == 10000 and mnist.data.shape == (10000, 28, 28)
    # Class counts of the official test set (LeCun et al. 1998).
    assert torch.bincount(mnist.targets).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    first_image = read_idx(SHARED / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[0]
    assert mnist.targets[0] == 7 and mnist.data[0, 20, 14] == 254  # on the stroke of the first "7"
    assert torch.equal(mnist.data[0], torch.from_numpy(first_image.copy()))


@needs_mnist
def test_mnist_is_the_official_data_in_unit_range():
    test = load_dataset("mnist", "test")
    assert test.x.shape == (10000, 1, 28, 28) and test.x.dtype == torch.float32
    assert test.y.dtype == torch.int64 and test.identity == "MNIST (official)"
    assert test.source == str(SHARED / "MNIST" / "raw")
    # The first test labels of the official file (LeCun et al. 1998): 7 2 1 0 4 1 4 9 5 9.
    assert test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Every pixel is exactly byte/255 of the idx file, read here without torchvision.
    raw = SHARED / "MNIST" / "raw"
    expected = torch.from_numpy(read_idx(raw / "t10k-images-idx3-ubyte").copy()).unsqueeze(1).float().div_(255.0)
    assert torch.equal(test.x, expected)
    assert torch.equal(test.y, torch.from_numpy(read_idx(raw / "t10k-labels-idx1-ubyte").astype(np.int64)))


@needs_mnist
@pytest.mark.slow
def test_mnist_train_split_has_60000_images():
    train = load_dataset("mnist", "train")
    assert train.x.shape == (60000, 1, 28, 28) and train.split == "train"
    assert torch.bincount(train.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@needs_cifar_jpeg
def test_image_folder_lists_the_jpeg_copy_with_official_labels():
    listing = torchvision.datasets.ImageFolder(str(SHARED / "cifar10-jpeg" / "test"))
    assert tuple(listing.classes) == data.CIFAR10_CLASSES and len(listing) == 10000
    assert np.bincount(listing.targets).tolist() == [1000] * 10
    assert Path(listing.samples[0][0]).relative_to(SHARED / "cifar10-jpeg" / "test").as_posix() == "airplane/0000.jpg"


@needs_cifar_jpeg
@pytest.mark.slow
def test_cifar_jpeg_copy_is_used_with_a_warning_and_decodes_as_pil_does(tmp_path):
    # A root holding only the JPEG copy (the official batches are absent there).
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar10-jpeg").symlink_to(SHARED / "cifar10-jpeg")
    with pytest.warns(UserWarning, match="JPEG copy"):
        test = load_dataset("cifar10", "test", root=root)
    assert test.identity == "CIFAR-10 (JPEG copy)" and test.source == str(root / "cifar10-jpeg" / "test")
    assert test.x.shape == (10000, 3, 32, 32) and 0 <= test.x.min() and test.x.max() <= 1
    assert torch.bincount(test.y).tolist() == [1000] * 10
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"
    # PIL (an independent decoder) gives the same bytes; index i is file i of its sorted class folder.
    for index in (0, 4321, 9999):
        label, number = divmod(index, 1000)
        path = SHARED / "cifar10-jpeg" / "test" / data.CIFAR10_CLASSES[label] / f"{number:04d}.jpg"
        with Image.open(path) as image:
            pil = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float().div_(255.0)
        assert test.y[index] == label and torch.equal(test.x[index], pil)
