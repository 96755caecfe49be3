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
    # Wide blobs: many draws fall outside Ω before the clamp, none after it.
    wide, _ = make_toy_data(50, spread=0.5)
    assert float(wide.min()) == 0.0 and float(wide.max()) == 1.0


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


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: make_toy_data(0), ValueError, "n_per_class"),
        (lambda: make_toy_data(10.0), TypeError, "n_per_class"),
        (lambda: make_toy_data(n_classes=1), ValueError, "n_classes"),
        (lambda: make_toy_data(radius=0.5), ValueError, "radius"),
        (lambda: make_toy_data(radius=float("nan")), ValueError, "radius"),
        (lambda: make_toy_data(spread=float("inf")), ValueError, "spread"),
        (lambda: make_toy_data(spread=0), ValueError, "spread"),
        (lambda: toy_classifier(hidden=0), ValueError, "hidden"),
        (lambda: toy_classifier(n_classes=2.0), TypeError, "n_classes"),
    ],
)
def test_toy_constructors_reject_bad_arguments_naming_them(call, error, name):
    with pytest.raises(error, match=f"^{name} must"):
        call()


@pytest.mark.parametrize(
    "kwargs, make_x, make_y, error, message",
    [
        ({"lr": float("inf")}, None, None, ValueError, "^lr must"),
        ({"lr": 0.0}, None, None, ValueError, "^lr must"),
        ({"steps": 0}, None, None, ValueError, "^steps must"),
        ({}, lambda x: x.double().mul(255).to(torch.uint8), None, TypeError, "^x must be a floating-point"),
        ({}, lambda x: x[:, :1].squeeze(1), None, ValueError, "^x must have 2 dimensions"),
        ({}, None, lambda y: y + 3, ValueError, "^y must hold labels in 0..2"),
        ({}, None, lambda y: y[:-1], ValueError, "same batch size"),
    ],
)
def test_train_toy_rejects_bad_input_naming_it(kwargs, make_x, make_y, error, message):
    x, y = make_toy_data(5)
    model = toy_classifier()
    xs = make_x(x) if make_x else x
    ys = make_y(y) if make_y else y
    with pytest.raises(error, match=message):
        train_toy(model, xs, ys, **({"steps": 2} | kwargs))


def test_numpy_scalars_give_the_same_toy_problem():
    import numpy as np

    x, y = make_toy_data(np.int64(7), n_classes=np.int32(3), radius=np.float64(0.25), spread=np.float32(0.0625))
    x2, y2 = make_toy_data(7, n_classes=3, radius=0.25, spread=0.0625)
    assert torch.equal(x, x2) and torch.equal(y, y2)
