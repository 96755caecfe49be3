"""Tests of qnnlib.toy: the 2-D data and classifier of Chapters 3–4."""

import pytest
import torch

from qnnlib.toy import make_toy_data, toy_classifier, train_toy


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: one thread avoids OpenMP stalls on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_toy_data_lies_in_the_unit_square_with_balanced_classes():
    x, y = make_toy_data(50, n_classes=4)
    assert x.shape == (200, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(torch.bincount(y), torch.full((4,), 50))


def test_toy_data_is_reproducible_from_its_seed():
    assert torch.equal(make_toy_data(10, seed=3)[0], make_toy_data(10, seed=3)[0])
    assert not torch.equal(make_toy_data(10, seed=3)[0], make_toy_data(10, seed=4)[0])


def test_toy_classifier_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = toy_classifier(seed=1), toy_classifier(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_trained_toy_classifier_separates_the_blobs():
    x, y = make_toy_data(100)
    model = toy_classifier()
    losses = train_toy(model, x, y, steps=300)
    # Blobs 0.28·√3 ≈ 0.48 apart with spread 0.08: nearly separable, so training must reach
    # ≥ 98% accuracy and lower the loss by at least a factor 10.
    accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy >= 0.98
    assert losses[-1] < losses[0] / 10
    assert not model.training


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_per_class=0), "n_per_class"), (dict(n_classes=1), "n_classes"),
    (dict(radius=0.6), "radius"), (dict(spread=0.0), "spread"),
])
def test_bad_toy_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_toy_data(**kwargs)
