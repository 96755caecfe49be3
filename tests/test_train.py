"""Tests for qnnlib.train: the loss falls, a seed repeats a run, callbacks, evaluation modes."""

import functools

import numpy as np

import pytest
import torch
from torch import nn

from qnnlib.attacks import pgd
from qnnlib.train import accuracy, robust_accuracy, train


def blobs(n=256, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.rand(3, dim, generator=generator)
    x = (centres[y] + 0.15 * torch.randn(n, dim, generator=generator)).clamp(0, 1)
    return x, y


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def test_training_reduces_the_loss_and_learns():
    x, y = blobs()
    model = mlp()
    before = nn.functional.cross_entropy(model(x), y).item()
    history = train(model, (x, y), epochs=10, batch_size=32, lr=1e-2, seed=0, progress=False)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert nn.functional.cross_entropy(model(x), y).item() < 0.5 * before
    assert accuracy(model, x, y) > 0.9


def test_training_is_deterministic_for_a_seed():
    x, y = blobs()
    runs = []
    for _ in range(2):
        model = mlp(seed=3)
        history = train(model, (x, y), epochs=2, batch_size=20, seed=11, progress=False)
        runs.append((history.train_loss, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    other = mlp(seed=3)
    train(other, (x, y), epochs=2, batch_size=20, seed=12, progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0][1], other.parameters()))


def test_on_epoch_callback_gets_each_epoch_and_history_records_settings():
    x, y = blobs(n=64)
    seen = []
    model = mlp()

    def record(epoch, stats):
        model.eval()  # a callback that evaluates must not leave training in eval mode
        seen.append((epoch, set(stats)))

    history = train(model, (x, y), epochs=3, batch_size=16, lr=2e-3, seed=0, on_epoch=record, progress=False)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert all({"train_loss", "train_acc"} <= keys for _, keys in seen)
    assert model.training
    assert (history.epochs, history.batch_size, history.lr, history.seed) == (3, 16, 2e-3, 0)
    assert len(history.train_loss) == len(history.train_acc) == 3
    assert history.dataset == "tensors"


def test_train_rejects_bad_settings():
    x, y = blobs(n=16)
    for kwargs, name in [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr")]:
        settings = {"epochs": 1, "seed": 0, "progress": False} | kwargs
        with pytest.raises(ValueError, match=name):
            train(mlp(), (x, y), **settings)
    with pytest.raises(ValueError, match="same batch size"):
        train(mlp(), (x, y[:5]), epochs=1, seed=0, progress=False)


def test_evaluation_uses_eval_mode_and_restores_it():
    x, y = blobs(n=64)
    model = nn.Sequential(mlp(), nn.Dropout(0.9)).train()
    # Dropout at p=0.9 would make repeated train-mode evaluations differ; eval mode makes them equal.
    assert accuracy(model, x, y) == accuracy(model, x, y)
    assert model.training
    attack = functools.partial(pgd, eps=0.05, alpha=0.02, steps=2, random_start=False)
    assert robust_accuracy(model, x, y, attack, batch_size=10) <= accuracy(model, x, y)
    assert model.training


def test_robust_accuracy_with_identity_attack_equals_accuracy():
    x, y = blobs(n=50)
    model = mlp()
    assert robust_accuracy(model, x, y, lambda m, xb, yb: xb, batch_size=7) == accuracy(model, x, y, batch_size=9)


def test_augment_batch_crops_and_flips_each_image_of_the_padded_batch():
    from qnnlib.train import augment_batch

    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    # Without padding the only change left is the flip: each image is itself or its mirror image.
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 64
    # With padding every output is an 8×8 window (maybe mirrored) of the reflection-padded image.
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for n in range(8):
        windows = [padded[n, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[n], w) or torch.equal(out[n], w.flip(-1)) for w in windows)
    # Seeded: the same generator state gives the same batch.
    again = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"lr": float("inf")}, ValueError, "lr"),  # regression: trained to NaN weights
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"lr": -1e-3}, ValueError, "lr"),
        ({"lr": "1e-3"}, TypeError, "lr"),
        ({"epochs": 1.0}, TypeError, "epochs"),
        ({"epochs": -1}, ValueError, "epochs"),
        ({"batch_size": 2.5}, TypeError, "batch_size"),
        ({"seed": 0.5}, TypeError, "seed"),
    ],
)
def test_train_rejects_bad_settings_naming_them(kwargs, error, name):
    x, y = blobs(n=16)
    settings = {"epochs": 1, "seed": 0, "progress": False} | kwargs
    with pytest.raises(error, match=f"^{name} must"):
        train(mlp(), (x, y), **settings)


@pytest.mark.parametrize(
    "make_x, make_y, error, message",
    [
        (lambda x: (x * 255).to(torch.uint8), lambda y: y, TypeError, "^x must be a floating-point.*255"),
        (lambda x: x.masked_fill(x > 0.95, float("nan")), lambda y: y, ValueError, "^x must be finite"),
        (lambda x: x[:0], lambda y: y[:0], ValueError, "^x must hold at least one sample"),
        (lambda x: x, lambda y: y + 97, ValueError, "^y must hold labels in 0..2"),
        (lambda x: x, lambda y: y - 3, ValueError, "^y must hold labels ≥ 0"),
        (lambda x: x, lambda y: y.float(), TypeError, "^y must be an integer tensor"),
        (lambda x: x.tolist(), lambda y: y, TypeError, "^x must be a torch.Tensor"),
    ],
)
def test_training_and_accuracy_reject_bad_data_naming_it(make_x, make_y, error, message):
    x, y = blobs(n=32)
    xs, ys = make_x(x), make_y(y)
    with pytest.raises(error, match=message):
        train(mlp(), (xs, ys), epochs=1, seed=0, progress=False)
    # Regression: accuracy with label 99 returned 0, an empty batch raised ZeroDivisionError.
    with pytest.raises(error, match=message):
        accuracy(mlp(), xs, ys)
    with pytest.raises(error, match=message):
        robust_accuracy(mlp(), xs, ys, lambda m, xb, yb: xb, batch_size=8)


def test_train_rejects_data_that_is_not_a_pair():
    with pytest.raises(TypeError, match="data must be"):
        train(mlp(), torch.rand(4, 8), epochs=1, seed=0, progress=False)


def test_a_diverging_run_stops_with_floating_point_error():
    x, y = blobs(n=32)
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="lr"):
        train(model, (x, y), epochs=2, seed=0, progress=False)


@pytest.mark.parametrize("make", [float, np.float32, np.float64])
def test_numpy_and_python_settings_train_identically(make):
    x, y = blobs(n=40)
    runs = []
    lr = 2.0**-9  # representable in float32, so every scalar type means the same number
    for lr, epochs, batch in ((lr, 2, 16), (make(lr), np.int64(2), np.int32(16))):
        model = mlp(seed=1)
        train(model, (x, y), epochs=epochs, batch_size=batch, lr=lr, seed=np.int64(4) if runs else 4, progress=False)
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_epoch_loss_is_the_mean_over_samples_with_the_short_last_batch_weighted_by_its_size():
    # lr tiny: the weights stay put, so the epoch's loss is the initial model's mean loss over all
    # 50 samples, although the batches are 7, 7, …, 1 (a mean over batches would over-weight the 1).
    x, y = blobs(n=50)
    model = mlp()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x), y).item()
    history = train(model, (x, y), epochs=1, batch_size=7, lr=1e-12, seed=0, progress=False)
    assert history.train_loss[0] == pytest.approx(expected, rel=1e-5)


# --- PGD adversarial training (Madry et al., 2018; SPEC §8, Chapter 10) ---

def _frozen_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    return model, torch.optim.SGD(model.parameters(), lr=0.0), x, y


def test_adversarial_epoch_trains_on_the_pgd_batches_it_reports():
    """With frozen weights (lr 0) the reported loss is that of the PGD batches: above the clean loss,
    and equal to the mean CE of pgd(x) drawn from the same generator stream in the same order."""
    from qnnlib.train import train_epoch

    model, opt, x, y = _frozen_setup()
    clean = train_epoch(model, opt, x, y, batch_size=40, generator=torch.Generator().manual_seed(2), progress=False)
    adv = train_epoch(model, opt, x, y, batch_size=40, generator=torch.Generator().manual_seed(2), progress=False,
                      adv_eps=0.1, adv_alpha=0.025, adv_steps=7)
    assert adv["train_loss"] > clean["train_loss"]
    g = torch.Generator().manual_seed(2)
    order = torch.randperm(40, generator=g)
    x_adv = pgd(model, x[order], y[order], eps=0.1, alpha=0.025, steps=7, generator=g)
    expected = nn.functional.cross_entropy(model(x_adv), y[order]).item()
    assert adv["train_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kw, error, match", [
    (dict(adv_eps=1.5, adv_alpha=0.1, adv_steps=1), ValueError, "adv_eps"),
    (dict(adv_eps=0.1, adv_alpha=0.0, adv_steps=1), ValueError, "adv_alpha"),
    (dict(adv_eps=0.1, adv_alpha=0.1, adv_steps=0), ValueError, "adv_steps"),
    (dict(adv_eps=0.1, adv_alpha=0.1, adv_steps=1.0), TypeError, "adv_steps"),
])
def test_adversarial_settings_out_of_range_are_refused(kw, error, match):
    from qnnlib.train import train_epoch

    model, opt, x, y = _frozen_setup()
    with pytest.raises(error, match=match):
        train_epoch(model, opt, x, y, batch_size=8, generator=torch.Generator(), progress=False, **kw)
