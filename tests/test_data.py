"""Tests for qnnlib.data: argument checks, the offline error, then the real files (skipped only if absent)."""

import os
from pathlib import Path

import pytest
import torch

from qnnlib import data
from qnnlib.data import Dataset, load_dataset, subset

SHARED = Path(os.environ.get("QNNLIB_DATA", "")) if os.environ.get("QNNLIB_DATA") else None
needs_mnist = pytest.mark.skipif(
    SHARED is None or not (SHARED / "MNIST" / "raw").is_dir(),
    reason="real MNIST not found: set QNNLIB_DATA to a folder with MNIST/raw (CI has ../shared/data)",
)
needs_cifar_jpeg = pytest.mark.skipif(
    SHARED is None or not (SHARED / "cifar10-jpeg" / "test").is_dir(),
    reason="CIFAR-10 JPEG copy not found: set QNNLIB_DATA to a folder with cifar10-jpeg/",
)


def tiny(n=30, k=3):
    return Dataset(torch.rand(n, 1, 2, 2), torch.arange(n) % k, "mnist", "test", "toy", "/nowhere",
                   tuple(str(i) for i in range(k)))


@pytest.mark.parametrize("name, split, argument", [("imagenet", "test", "name"), ("mnist", "val", "split")])
def test_bad_name_or_split_raises_value_error_naming_it(name, split, argument, tmp_path):
    with pytest.raises(ValueError, match=argument):
        load_dataset(name, split, root=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_data_offline_gives_one_clear_error(name, tmp_path, monkeypatch):
    # Make any download attempt fail the way it does offline, without touching the network.
    def offline(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr(data, "_download", _failing_download(offline))
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, "test", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "QNNLIB_DATA" in message


def _failing_download(fail):
    original = data._download

    def download(kind, base, split):
        import sys
        import types

        fake = types.ModuleType("torchvision.datasets")
        setattr(fake, kind, fail)
        saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.datasets")}
        sys.modules["torchvision.datasets"] = fake
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision"].datasets = fake
        try:
            original(kind, base, split)
        finally:
            for key, module in saved.items():
                if module is None:
                    sys.modules.pop(key, None)
                else:
                    sys.modules[key] = module

    return download


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


@needs_mnist
def test_mnist_is_the_official_data_in_unit_range():
    test = load_dataset("mnist", "test")
    assert test.x.shape == (10000, 1, 28, 28) and test.x.dtype == torch.float32
    assert test.y.dtype == torch.int64 and torch.bincount(test.y).sum() == 10000
    assert test.x.min() == 0 and test.x.max() == 1
    assert test.identity == "MNIST (official)"
    # The first test labels of the official file (LeCun et al. 1998): 7 2 1 0 4 1 4 9 5 9.
    assert test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Pixels are k/255 for integer k (uint8 source).
    assert torch.allclose(test.x[:50] * 255, (test.x[:50] * 255).round(), atol=1e-4)


@needs_mnist
@pytest.mark.slow
def test_mnist_train_split_has_60000_images():
    train = load_dataset("mnist", "train")
    assert train.x.shape == (60000, 1, 28, 28) and train.split == "train"


@needs_cifar_jpeg
@pytest.mark.slow
def test_cifar_jpeg_copy_is_used_with_a_warning_and_its_identity(tmp_path, monkeypatch):
    # A root holding only the JPEG copy (the official batches are absent there).
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar10-jpeg").symlink_to(SHARED / "cifar10-jpeg")
    with pytest.warns(UserWarning, match="JPEG copy"):
        test = load_dataset("cifar10", "test", root=root)
    assert test.identity == "CIFAR-10 (JPEG copy)"
    assert test.x.shape == (10000, 3, 32, 32) and 0 <= test.x.min() and test.x.max() <= 1
    assert torch.bincount(test.y).tolist() == [1000] * 10
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"
