"""tools/official_layout.py: official-layout CIFAR-10 batches from other images, accepted only where patched.

The stand-in for the official CIFAR-10 that the Colab check gives Chapter 8 (tools/colab_check.py):
torchvision must read the batches as the official ones when told their md5s, qnnlib must still
refuse them when it is not (the md5 check of issue 17 stays on), and the data-identity check of
the recorded runs must then say that the images differ.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torchvision

from qnnlib import data, experiments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import official_layout  # noqa: E402


@pytest.fixture
def batches(tmp_path):
    rng = np.random.default_rng(3)
    train_x = rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8)
    test_x = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    train_y, test_y = np.arange(50) % 10, (np.arange(20) * 3) % 10
    md5s = official_layout.write_batches(train_x, train_y, test_x, test_y, tmp_path)
    return tmp_path, md5s, (train_x, train_y, test_x, test_y)


@pytest.fixture
def patched(monkeypatch):
    """Restore torchvision's official md5 lists after the test, whatever it patched."""
    cifar = torchvision.datasets.CIFAR10
    for name in ("train_list", "test_list", "meta"):
        monkeypatch.setattr(cifar, name, getattr(cifar, name))
    return cifar


def test_batches_are_refused_without_the_patch(batches, patched):
    root, _, _ = batches
    with pytest.raises(data.DataIntegrityError, match="not the official CIFAR-10"):
        data.load_dataset("cifar10", "test", root)


def test_with_their_md5s_torchvision_reads_them_as_the_official_layout(batches, patched):
    root, md5s, (train_x, train_y, test_x, test_y) = batches
    official_layout.patch_torchvision(md5s)
    train, test = data.load_dataset("cifar10", "train", root), data.load_dataset("cifar10", "test", root)
    assert train.identity == test.identity == "CIFAR-10 (official)"
    # Every pixel where it was written (channel-major rows, batches in order), labels likewise.
    assert np.array_equal((train.x * 255).round().byte().numpy(), train_x)
    assert np.array_equal((test.x * 255).round().byte().numpy(), test_x)
    assert train.y.tolist() == train_y.tolist() and test.y.tolist() == test_y.tolist()


def test_the_recorded_runs_data_check_then_says_the_images_differ(batches, patched):
    root, md5s, _ = batches
    official_layout.patch_torchvision(md5s)
    run = experiments._recorded(ROOT / "book" / "results" / "cifar-cnn4.json")
    same, sentence = experiments.data_check(run, data.load_dataset("cifar10", "test", root))
    assert not same
    assert "was made on CIFAR-10 (JPEG copy), but the images here are CIFAR-10 (official)" in sentence


def test_the_sitecustomize_patches_torchvision_in_a_new_process(batches, tmp_path):
    root, md5s, _ = batches
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(official_layout.sitecustomize_source(md5s))
    code = ("import qnnlib.data as d, warnings; warnings.simplefilter('error'); "
            f"print(d.load_dataset('cifar10', 'test', {str(root)!r}).identity)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "CIFAR-10 (official)", result.stderr[-800:]
    # Without it the batches are refused (test_batches_are_refused_without_the_patch, in process).


def test_write_batches_refuses_images_of_the_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="train_x"):
        official_layout.write_batches(np.zeros((7, 3, 32, 32)), np.zeros(7), np.zeros((2, 3, 32, 32)), np.zeros(2), tmp_path)
