"""qnnlib.fragility: per-image predictors of the minimal ε and their rank correlations (SPEC §8, Chapter 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from qnnlib import fragility


def test_spearman_of_a_bivariate_normal_matches_its_closed_form():
    """For a bivariate normal with correlation r, Spearman's ρ = (6/π) arcsin(r/2)."""
    rng = np.random.default_rng(0)
    r = 0.6
    z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=3000)
    out = fragility.spearman_bootstrap(z[:, 0], z[:, 1], n_boot=500, seed=1)
    exact = 6 / math.pi * math.asin(r / 2)
    assert out["low"] < exact < out["high"]
    assert out["rho"] == pytest.approx(stats.spearmanr(z[:, 0], z[:, 1]).statistic, abs=1e-12)
    assert 0 < out["high"] - out["low"] < 0.1 and out["n"] == 3000


def test_bootstrap_interval_covers_zero_for_independent_samples_and_is_seeded():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=300), rng.normal(size=300)
    one = fragility.spearman_bootstrap(a, b, n_boot=500, seed=3)
    assert one["low"] < 0 < one["high"]
    assert one == fragility.spearman_bootstrap(a, b, n_boot=500, seed=3)
    # a monotone transform leaves ranks, and so ρ and its interval, unchanged
    assert fragility.spearman_bootstrap(np.exp(a), b ** 3, n_boot=500, seed=3) == pytest.approx(one)


def test_spearman_drops_nan_pairs_and_ranks_inf_last():
    a = np.array([1.0, 2.0, 3.0, np.nan, 5.0, 6.0])
    b = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.inf])
    out = fragility.spearman_bootstrap(a, b, n_boot=100)
    assert out["n"] == 5 and out["rho"] == pytest.approx(1.0) and out["low"] == pytest.approx(1.0)


@pytest.mark.parametrize("kw, error, match", [
    (dict(n_boot=10), ValueError, "n_boot"), (dict(level=1.0), ValueError, "level"),
    (dict(n_boot=500.0), TypeError, "n_boot"),
])
def test_spearman_refuses_bad_settings(kw, error, match):
    with pytest.raises(error, match=match):
        fragility.spearman_bootstrap(np.arange(5.0), np.arange(5.0), **kw)


def _binary_linear(n=24, dim=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(2, dim, generator=g)
    x = 0.4 + 0.2 * torch.rand(n, dim, generator=g)
    b = -(x.mean(0) @ w.T)
    model = nn.Linear(dim, 2)
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.copy_(b)
    y = model(x).argmax(1)
    return model, w, x, y


def test_logit_margin_is_the_logit_difference():
    model, w, x, y = _binary_linear()
    z = model(x).detach().double()
    assert np.allclose(fragility.logit_margin(model, x, y), (z.gather(1, y[:, None]) - z.gather(1, 1 - y[:, None])).squeeze(1).numpy())
    assert np.all(fragility.logit_margin(model, x, y) > 0) and np.all(fragility.logit_margin(model, x, 1 - y) < 0)


def test_fragility_table_of_a_binary_linear_classifier_has_the_closed_form_orderings(one_thread):
    """Binary linear model: ε* = margin/‖w₁ − w₀‖₁ (the same norm for every image), so margin ranks ε*
    exactly (ρ = 1); ‖∇CE‖₁ = σ(−margin)‖w₁ − w₀‖₁ decreases with the margin (ρ = −1)."""
    model, w, x, y = _binary_linear()
    table = fragility.fragility_table(model, x, y, eps=0.05, n_samples=256, seed=0, eps_max=0.5, tol=1e-4)
    n = x.shape[0]
    assert all(np.asarray(v).shape == (n,) for v in table.values())
    assert set(fragility.PREDICTORS) <= set(table)
    exact = table["margin"] / float((w[1] - w[0]).abs().sum())
    assert np.all(table["min_eps"] >= exact - 1e-6) and np.all(table["min_eps"] <= exact + 1e-4 + 1e-6)
    assert np.allclose(table["grad_l1"], torch.sigmoid(-torch.tensor(table["margin"])).numpy() * float((w[1] - w[0]).abs().sum()),
                       rtol=1e-4)
    corr = fragility.correlation_table(table, n_boot=200)
    # exact orderings up to the bisection tolerance (two images closer than tol may swap)
    assert corr["margin"]["rho"] > 0.99 and corr["grad_l1"]["rho"] < -0.99
    assert set(corr) == set(fragility.PREDICTORS)
    assert np.all(table["lipschitz"] > 0) and np.all(table["dx"] > 0) and np.all(table["dp"] > 0)


def test_correlation_table_drops_misclassified_images_and_names_missing_columns():
    table = {"min_eps": np.array([0.0, 0.1, 0.2, 0.3, 0.4]), "margin": np.array([9.0, 1.0, 2.0, 3.0, 4.0]),
             "clean_wrong": np.array([True, False, False, False, False])}
    corr = fragility.correlation_table(table, predictors=("margin",), n_boot=100)
    assert corr["margin"]["n"] == 4 and corr["margin"]["rho"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dp"):
        fragility.correlation_table(table, predictors=("dp",))
    with pytest.raises(ValueError, match="target"):
        fragility.correlation_table(table, target="nothing", predictors=("margin",))


def test_fab_cross_check_agrees_with_the_bisection_and_the_closed_form_on_a_linear_classifier(one_thread):
    """On a binary linear model both attacks reach the exact ε* = margin/‖w₁ − w₀‖₁: ratios ≈ 1."""
    model, w, x, y = _binary_linear()
    exact = fragility.logit_margin(model, x, y) / float((w[1] - w[0]).abs().sum())
    state = torch.get_rng_state()
    check = fragility.fab_cross_check(model, x, y, exact, eps_max=0.5, steps=20, restarts=1, seed=3)
    assert torch.equal(torch.get_rng_state(), state)              # torch's global stream untouched
    assert check["fooled"] == check["n"] == len(y)
    assert np.allclose(check["eps_fab"], exact, rtol=0.02, atol=1e-3)
    assert 0.98 < check["ratio_median"] < 1.02 and check["within_10pct"] == len(y)
    with pytest.raises(ValueError, match="eps_star has 2 values"):
        fragility.fab_cross_check(model, x, y, exact[:2], eps_max=0.5)


def test_partial_spearman_removes_a_common_cause_and_keeps_a_direct_link():
    """a = z₁ + c, b = z₂ + c with independent z: ρ(a, b) ≈ 1/2, but ≈ 0 with c held fixed; with
    b = −a + c the link survives conditioning and is negative (a plain correlation that hides it)."""
    rng = np.random.default_rng(0)
    z1, z2, c = rng.normal(size=(3, 4000))
    a, b = z1 + c, z2 + c
    assert fragility.spearman_bootstrap(a, b, n_boot=200)["rho"] > 0.4
    r = fragility.partial_spearman_bootstrap(a, b, c, n_boot=200)
    assert abs(r["rho"]) < 0.05 and r["low"] < 0 < r["high"]
    b = -0.7 * z1 + 2 * c                       # plain ρ(a, b) > 0, but at fixed c b falls with a
    assert fragility.spearman_bootstrap(a, b, n_boot=200)["rho"] > 0.3
    r = fragility.partial_spearman_bootstrap(a, b, c, n_boot=200)
    assert r["rho"] < -0.5 and r["high"] < -0.4
    with pytest.raises(ValueError, match="at least 4"):
        fragility.partial_spearman_bootstrap([1.0, 2.0, np.nan], [1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
