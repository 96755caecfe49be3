"""The defence test of Chapter 10 (qnnlib.defence, attacks.survives, experiments.defence_run).

Closed forms first: a linear classifier behind a mask has an exact minimal L∞ distance, which
the attack must find; an input the loss ignores has B_i = 1 exactly, so zero coupling. Then the
recorded experiment end to end on the tiny network of tests/test_fragility_runs.py: its units,
its resumption after a kill, its one-line errors, and the book's recorded file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from qnnlib import attacks, defence, experiments, results
from qnnlib.__main__ import main
from qnnlib.experiments import defence_run

from test_attacks import _linear
from test_fragility_runs import _bands, another_network, source  # noqa: F401  (source: the tiny recorded network fixture)

NAME = "defence-mnist-cnn3"
TINY = dict(n_calib=4, n_samples=32, ks=(8, 64), random_masks=1, n_test=40, steps=3, targets=1,
            finetune_images=200)


# --- masks ----------------------------------------------------------------------------------

def test_top_mask_takes_the_largest_scores_and_breaks_ties_by_index():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.0])
    assert defence.top_mask(scores, 2).tolist() == [False, True, False, True, False]
    assert defence.top_mask(scores, 3).nonzero().flatten().tolist() == [1, 2, 3]
    assert not defence.top_mask(scores, 0).any() and defence.top_mask(scores, 5).all()
    with pytest.raises(ValueError, match=r"k must be an integer in \{0, \.\.\., 5\}, got 6"):
        defence.top_mask(scores, 6)
    with pytest.raises(ValueError, match="finite 1-D"):
        defence.top_mask(np.array([1.0, np.nan]), 1)


def test_random_mask_has_k_components_and_repeats_with_its_seed():
    a = defence.random_mask(784, 50, torch.Generator().manual_seed(3))
    b = defence.random_mask(784, 50, torch.Generator().manual_seed(3))
    c = defence.random_mask(784, 50, torch.Generator().manual_seed(4))
    assert int(a.sum()) == 50 and torch.equal(a, b) and not torch.equal(a, c)


# --- the masked network ------------------------------------------------------------------------

def _conv():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_a_masked_network_ignores_the_masked_inputs_and_its_gradient_vanishes_there():
    model = _conv()
    mask = defence.random_mask(64, 20, torch.Generator().manual_seed(0))
    fill = torch.full((64,), 0.3)
    masked = defence.MaskedInput(model, mask, fill)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    moved = x.clone().flatten(1)
    moved[:, mask] = torch.rand(5, 20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(masked(x), masked(moved.reshape(x.shape)))
    filled = torch.where(mask.reshape(1, 1, 8, 8), torch.tensor(0.3), x)
    assert torch.equal(masked(x), model(filled))
    grad = attacks.input_gradient(masked, x, torch.tensor([0, 1, 2, 0, 1])).flatten(1)
    assert torch.all(grad[:, mask] == 0) and torch.all(grad[:, ~mask].abs().sum(1) > 0)
    empty = defence.MaskedInput(model, torch.zeros(64, dtype=torch.bool), 0.0)
    assert torch.equal(empty(x), model(x))
    with pytest.raises(TypeError, match="bool"):
        defence.MaskedInput(model, torch.zeros(64), 0.0)
    with pytest.raises(ValueError, match="fill must be a number or have the mask's 64 elements"):
        defence.MaskedInput(model, mask, torch.zeros(10))


def _masked_closed_form(weight, bias, x, y, mask, fill):
    """The exact minimal L∞ distance of a linear classifier behind a mask: the masked inputs are
    replaced by ``fill`` and cannot move, so min_j (z_y − z_j) / ‖(w_y − w_j) on the free inputs‖₁."""
    xf = torch.where(mask, fill, x)
    z = xf @ weight.T + bias
    out = []
    for n in range(x.shape[0]):
        out.append(min(float(z[n, y[n]] - z[n, j]) / float((weight[y[n]] - weight[j])[~mask].abs().sum())
                       for j in range(weight.shape[0]) if j != int(y[n])))
    return np.array(out)


def test_survives_finds_the_closed_form_of_a_masked_linear_classifier(one_thread):
    """The attack on a masked model is adaptive: it finds every image whose exact masked ε* is below ε."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 30, generator=g, dtype=torch.float64)
    x = 0.4 + 0.2 * torch.rand(200, 30, generator=g, dtype=torch.float64)
    mask = defence.top_mask(weight.abs().sum(0).numpy(), 10)
    fill = torch.full((30,), 0.5, dtype=torch.float64)
    bias = -(torch.where(mask, fill, x).mean(0) @ weight.T)
    model = _linear(weight, bias)
    y = defence.MaskedInput(model, mask, fill)(x).argmax(1)
    y[:10] = (y[:10] + 1) % 4  # ten misclassified images: never clean, never robust
    exact = _masked_closed_form(weight, bias, x, y, mask, fill)
    eps = float(np.median(exact[10:]))
    assert exact[10:].max() < 0.35  # the box [0, 1] does not bind
    found = attacks.survives(defence.MaskedInput(model, mask, fill), x, y, eps=eps, steps=20, targets=3,
                             generator=torch.Generator().manual_seed(0))
    assert not found["clean"][:10].any() and found["clean"][10:].all()
    clear = np.abs(exact - eps) > 1e-3  # right at the boundary PGD's last step may land either side
    assert np.array_equal(found["robust"][10:][clear[10:]], exact[10:][clear[10:]] > eps)
    assert not (found["robust"] & ~found["clean"]).any()
    # the unmasked network is weaker here: an attack may use the ten masked inputs too
    plain = attacks.survives(model, x, y, eps=eps, steps=20, targets=3, generator=torch.Generator().manual_seed(0))
    assert plain["robust"].sum() < found["robust"].sum()


@pytest.mark.parametrize("kw, match", [(dict(eps=0.0), "eps must be"), (dict(eps=0.1, steps=0), "steps must be"),
                                       (dict(eps=0.1, restarts=0, targets=0), "restarts \\+ targets")])
def test_survives_refuses_bad_settings(kw, match):
    model = _linear(torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=match):
        attacks.survives(model, torch.rand(2, 3, dtype=torch.float64), torch.tensor([0, 1]), **kw)


# --- scores ------------------------------------------------------------------------------------

def test_coupling_and_saliency_vanish_exactly_on_inputs_the_loss_ignores(one_thread):
    """∂_i l = 0 makes B_i = 1 exactly (the volume form), so |B_i − 1| = 0; where the weights are
    large the coupling and the saliency are not."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 12, generator=g, dtype=torch.float64) * 4
    weight[:, 6:] = 0  # the last six inputs are ignored
    model = _linear(weight, torch.zeros(3, dtype=torch.float64))
    x = 0.3 + 0.4 * torch.rand(6, 12, generator=g, dtype=torch.float64)
    y = model(x).argmax(1)
    scores = defence.coupling_scores(model, x, y, eps=0.2, n_samples=256, sampler="uniform", seed=1)
    assert np.all(scores["coupling"][6:] == 0) and np.all(scores["saliency"][6:] == 0)
    assert np.all(scores["coupling"][:6] > 0) and np.all(scores["saliency"][:6] > 0)
    assert 0 <= scores["reliable"] <= 6


def test_the_log_loss_gradient_is_the_gradient_over_the_loss_and_stays_finite_where_the_loss_underflows():
    model = _linear(torch.tensor([[3.0, -1.0], [-2.0, 4.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    x = torch.tensor([[0.2, 0.3], [0.6, 0.1]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    assert torch.allclose(defence.log_loss_gradient(model, x, y), attacks.input_gradient(model, x, y) / loss[:, None])
    # margin 800: CE = e^(−800) underflows even in float64; log CE ≈ −margin, its gradient −(w_y − w_j)
    far = _linear(torch.tensor([[400.0, 0.0], [-400.0, 0.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    point = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    assert torch.nn.functional.cross_entropy(far(point), torch.tensor([0])) == 0
    g = defence.log_loss_gradient(far, point, torch.tensor([0]))
    assert torch.allclose(g, torch.tensor([[-800.0, 0.0]], dtype=torch.float64))


def test_finetune_trains_a_copy_behind_the_mask_and_repeats_with_its_seed(one_thread):
    model = _conv()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    mask = defence.random_mask(64, 16, torch.Generator().manual_seed(2))
    a = defence.finetune(model, mask, 0.5, x, y, epochs=2, lr=1e-2, seed=3, batch_size=16)
    b = defence.finetune(model, mask, 0.5, x, y, epochs=2, lr=1e-2, seed=3, batch_size=16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.model.parameters(), model.parameters()))
    assert not a.training and torch.equal(a.mask, mask)


# --- the recorded experiment --------------------------------------------------------------------

@pytest.fixture
def data(monkeypatch):
    monkeypatch.setattr(defence_run, "load_dataset", lambda name, split: _bands(400 if split == "train" else 120,
                                                                                 3 if split == "train" else 4))


def _run(source, out, **overrides):  # noqa: F811
    return experiments.run_defence(NAME, out=out, source_dir=source, progress=False, overrides=dict(TINY, **overrides))


def _comparable(record):
    units = [{k: v for k, v in u.items() if k != "seconds"} for u in record["units"]]
    calibration = {k: v for k, v in record["calibration"].items() if k != "seconds"}
    return {**{k: v for k, v in record.items() if k not in ("provenance", "units", "calibration")},
            "units": units, "calibration": calibration}


def test_a_defence_test_records_every_unit_and_resumes_after_a_kill(source, data, tmp_path, monkeypatch,  # noqa: F811
                                                                     one_thread, capsys):
    path = _run(source, tmp_path / "clean")
    run = experiments.load_defence(path)
    config = experiments.configure_defence(NAME, overrides=TINY)
    assert [(u["kind"], u["k"], u["replicate"]) for u in run.table()] == config.units()
    assert len(config.units()) == 1 + 2 * 3 and run.finished
    assert run.arrays["robust"].shape == (7, 40) and run.arrays["masks"].shape == (7, 784)
    assert run.arrays["masks"].sum(1).tolist() == [0, 8, 8, 8, 64, 64, 64]
    assert np.all(run.arrays["robust"] <= run.arrays["clean"])
    assert np.all(run.arrays["robust_ft"] <= run.arrays["clean_ft"])
    for u, row in enumerate(run.table()):
        assert row["robust"] == pytest.approx(run.arrays["robust"][u].mean())
    assert main(["show", str(path)]) == 0 and "coupling" in capsys.readouterr().out
    calls = {"n": 0}
    real = attacks.survives

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # inside unit 2 (two attacks per unit)
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(attacks, "survives", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(source, tmp_path / "killed")
    partial = results.read_json(tmp_path / "killed" / f"{NAME}.json")
    assert len(partial["units"]) == 2 and partial["provenance"]["finished"] is None
    resumed = _run(source, tmp_path / "killed")
    again = experiments.load_defence(resumed)
    assert _comparable(again.record) == _comparable(run.record)
    assert all(np.array_equal(again.arrays[k], run.arrays[k]) for k in run.arrays)
    assert again.record["provenance"]["resumed"][0]["unit"] == 2
    with pytest.raises(results.ResultsError, match="another config"):
        _run(source, tmp_path / "killed", n_test=39)
    with pytest.raises(results.ResultsError, match="another mnist-cnn3 network"):
        _run(another_network(source, tmp_path / "other-source"), tmp_path / "killed")
    monkeypatch.setattr(defence_run, "load_dataset", lambda name, split: dataclasses.replace(
        _bands(400 if split == "train" else 120, 3 if split == "train" else 4), identity="MNIST (official)"))
    with pytest.raises(results.ResultsError, match="made from synthetic bands, but the data found now is MNIST"):
        _run(source, tmp_path / "killed")


def test_without_fine_tuning_a_defence_test_stores_none_and_no_fine_tuned_arrays(source, data, tmp_path,  # noqa: F811
                                                                                   one_thread, capsys):
    path = _run(source, tmp_path, finetune_epochs=0, random_masks=0)
    run = experiments.load_defence(path)
    assert run.finished and len(run.table()) == 1 + 2 * 2
    assert all(u["clean_ft"] is None and u["robust_ft"] is None for u in run.table())
    assert {"clean", "robust"} <= set(run.arrays) and not {"clean_ft", "robust_ft"} & set(run.arrays)
    assert main(["show", str(path)]) == 0 and "coupling" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--set", "ks=64,16"], "ks: \\(64, 16\\) is out of range"),
    (["--set", "n_test=0"], "n_test: 0 is out of range"),
    (["--set", "colour=red"], "colour: unknown override"),
    (["--epochs", "3"], "defence test: it has no epochs"),
])
def test_bad_settings_of_a_defence_test_are_one_line_errors(argv, match, capsys, tmp_path):
    assert main(["run", NAME, "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qnnlib: error: ")
    assert __import__("re").search(match, err), err
    assert not any(tmp_path.iterdir())


def test_the_recorded_defence_test_matches_its_config_and_its_network():
    path = experiments.RESULTS_DIR / f"{NAME}.json"
    if not path.exists():
        pytest.skip("no recorded defence test in book/results")
    run = experiments.recorded_defence(NAME)
    config = experiments.configure_defence(NAME)
    assert run.record["config"] == config.as_dict()
    assert [(u["kind"], u["k"], u["replicate"]) for u in run.table()] == config.units()
    weights = experiments.weights_path(experiments.RESULTS_DIR / f"{config.source}.json")
    assert run.record["source"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert json.loads(json.dumps(run.record))["calibration"]["n"] == config.n_calib


def test_recorded_defence_names_what_is_missing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown defence experiment"):
        experiments.recorded_defence("defence-nothing")
    recorded_module = __import__("importlib").import_module("qnnlib.experiments.recorded")
    monkeypatch.setattr(recorded_module, "_recorded_path", lambda name: tmp_path / f"{name}.json")
    monkeypatch.setattr(recorded_module, "in_checkout", lambda: True)
    with pytest.raises(FileNotFoundError, match=f"python -m qnnlib run {NAME}` --out book/results"):
        experiments.recorded_defence(NAME)
    monkeypatch.setattr(recorded_module, "in_checkout", lambda: False)
    with pytest.raises(experiments.RecordedRunUnavailable, match=f"the defence test {NAME} is not available"):
        experiments.recorded_defence(NAME)
