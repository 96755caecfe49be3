"""Tests of qnnlib.uncertainty: closed forms on [0, 1] first, then Monte Carlo against grid
quadrature and against itself (error bars), then the theorem as a property, then bad input.

Closed forms used below (derived in Chapter 4), for ψ on [0, 1]:

* ψ = √2 sin(πx): <x> = 1/2, Δx² = 1/12 − 1/(2π²); ψ' = √2 π cos(πx), so <p> = [ψ²/2]₀¹ = 0 and
  <p²> = 2π² ∫cos²(πx) = π², Δp = π; ψ(0) = ψ(1) = 0 gives B = 0. Product π·sqrt(1/12 − 1/(2π²)) ≈ 0.5679.
* ψ = 1: Δx² = 1/12, ψ' = 0 so Δp = 0; B = (1 − ½)·1 − (0 − ½)·1 = 1, bound |1 − B|/2 = 0.
* ψ ∝ exp(−(x − ½)²/(4σ²)): ψ' = −(x − ½)ψ/(2σ²) is proportional to (x − <x>)ψ, the equality case
  of Cauchy–Schwarz, so Δx·Δp = |1 − B|/2 exactly on any interval, and B = O(e^{−1/(8σ²)}).
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from qnnlib.uncertainty import (
    SAMPLERS,
    SOBOL_MAX_DIM,
    face_boundary_terms,
    grid_moments,
    mean_aggregate,
    mean_neural_moments,
    moments,
    neural_amplitude,
    neural_moments,
    wave_function_grid,
)

SINE_PRODUCT = math.pi * math.sqrt(1 / 12 - 1 / (2 * math.pi**2))


pytestmark = pytest.mark.usefixtures("one_thread")


def sine(x):
    return math.sqrt(2.0) * torch.sin(math.pi * x[:, 0])


def constant(x):
    return torch.ones(x.shape[0], dtype=x.dtype)


def gaussian(center, sigma):
    return lambda x: torch.exp(-((x[:, 0] - center) ** 2) / (4 * sigma**2))


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def random_network(seed, *, inputs=2, hidden=16, classes=3, activation=nn.ReLU):
    """A small float64 MLP with random weights (large enough that ψ has visible structure)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(inputs, hidden), activation(), nn.Linear(hidden, classes)).double()
        for p in net.parameters():
            p.data.mul_(3.0)
    return net.eval()


# ---------------------------------------------------------------------------------------
# Closed forms (grid quadrature: Gauss–Legendre integrates these smooth functions to ~1e-15)
# ---------------------------------------------------------------------------------------


def test_sine_product_matches_closed_form_with_zero_boundary_term():
    m = grid_moments(sine, (1,), points_per_dim=64)
    assert SINE_PRODUCT == pytest.approx(0.5679, abs=1e-4)
    # 64 Gauss nodes integrate trigonometric polynomials of this degree to rounding (~1e-15).
    assert float(m.product) == pytest.approx(SINE_PRODUCT, abs=1e-12)
    assert float(m.dp) == pytest.approx(math.pi, abs=1e-12)
    assert float(m.dx) == pytest.approx(math.sqrt(1 / 12 - 1 / (2 * math.pi**2)), abs=1e-12)
    assert float(m.mean_x) == pytest.approx(0.5, abs=1e-12)
    assert float(m.mean_p) == pytest.approx(0.0, abs=1e-12)
    assert float(m.boundary) == pytest.approx(0.0, abs=1e-12)


def test_constant_psi_has_no_momentum_spread_and_unit_boundary_term():
    m = grid_moments(constant, (1,), points_per_dim=8)
    assert float(m.dx) == pytest.approx(1 / math.sqrt(12), abs=1e-14)
    assert float(m.dp) == 0.0
    assert float(m.boundary) == pytest.approx(1.0, abs=1e-14)
    assert float(m.lower_bound) == pytest.approx(0.0, abs=1e-14)
    # Monte Carlo: ψ' = 0 exactly at every sample, so Δp and B are exact too; Δx is random.
    mc = moments(constant, (1,), n_samples=4000, generator=seeded(0), dtype=torch.float64)
    assert float(mc.dp) == 0.0 and float(mc.boundary) == 1.0
    assert abs(float(mc.dx) - 1 / math.sqrt(12)) < 4 * float(mc.dx_stderr)
    assert mc.ess == pytest.approx(4000)  # equal weights: every sample counts fully


@pytest.mark.parametrize("sigma", [0.03, 0.05, 0.08])
def test_narrow_centred_gaussian_reaches_one_half(sigma):
    m = grid_moments(gaussian(0.5, sigma), (1,), points_per_dim=400)
    # ψ² is a normal density of std σ (truncation changes its mass by < 1e-8), so
    # B = (½)ψ²(1) + (½)ψ²(0) = e^{−1/(8σ²)} / (σ√(2π)) ≤ 2e-8, and equality in Cauchy–Schwarz
    # makes the product (1 − B)/2. The Gauss rule (≥ 24 nodes per σ) is exact to rounding.
    expected_b = math.exp(-1 / (8 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    # B = 1 + 2·(≈ −½) cancels to a few ulps of 1 (≈ 1e-15) where the exact B is tinier still.
    assert float(m.boundary) == pytest.approx(expected_b, rel=1e-6, abs=1e-14)
    assert float(m.product) == pytest.approx((1 - expected_b) / 2, abs=1e-12)
    assert float(m.product) == pytest.approx(0.5, abs=1e-7)
    assert float(m.dx) == pytest.approx(sigma, rel=1e-6)


@pytest.mark.parametrize("center, sigma", [(0.4, 0.3), (0.7, 0.5), (0.5, 1.0)])
def test_truncated_gaussian_meets_its_boundary_bound_with_equality(center, sigma):
    m = grid_moments(gaussian(center, sigma), (1,), points_per_dim=200)
    # Wide Gaussians do not vanish at 0 and 1: B is far from 0, the product far below 1/2, yet
    # Cauchy–Schwarz is an equality, so the product equals |1 − B|/2 to quadrature accuracy.
    assert float(m.boundary) > 0.1
    assert float(m.product) < 0.45
    assert float(m.product) == pytest.approx(float(m.lower_bound), abs=1e-12)


@pytest.mark.parametrize("a, c", [(5.0, 0.5), (10.0, 0.2), (20.0, 0.8)])
def test_logistic_loss_breaks_one_half_but_meets_the_boundary_bound(a, c):
    # ψ ∝ log(1 + e^{−a(x − c)}): the cross-entropy of a one-dimensional logistic classifier.
    m = grid_moments(lambda x: nn.functional.softplus(-a * (x[:, 0] - c)), (1,), points_per_dim=400)
    assert float(m.product) < 0.5
    assert bool(m.meets_bound.all())
    assert 0.0 < float(m.boundary) < 1.0


def test_separable_psi_gives_each_coordinate_its_one_dimensional_moments():
    def product(x):
        return sine(x[:, :1]) * gaussian(0.3, 0.2)(x[:, 1:])

    two = grid_moments(product, (2,), points_per_dim=120)
    first = grid_moments(sine, (1,), points_per_dim=120)
    second = grid_moments(gaussian(0.3, 0.2), (1,), points_per_dim=120)
    # ∫∫ f(x)² h(y)² factorises, so each coordinate sees only its own factor (rounding only).
    for name in ("mean_x", "dx", "mean_p", "dp", "boundary"):
        expected = torch.cat([getattr(first, name), getattr(second, name)])
        assert torch.allclose(getattr(two, name), expected, atol=1e-12), name


def test_midpoint_rule_converges_to_the_gauss_reference():
    reference = grid_moments(sine, (1,), points_per_dim=64)
    errors = [abs(float(grid_moments(sine, (1,), points_per_dim=n, rule="midpoint").product - reference.product))
              for n in (50, 100)]
    # Second-order rule: halving h divides the error by ≈ 4; ask for > 3.
    assert errors[0] / errors[1] > 3


# ---------------------------------------------------------------------------------------
# Monte Carlo: against closed forms, against the grid, and its error bars
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_monte_carlo_sine_matches_closed_form_within_four_standard_errors(sampler):
    m = moments(sine, (1,), n_samples=20_000, sampler=sampler, generator=seeded(1), dtype=torch.float64)
    # 4 standard errors: a correct estimator fails this with probability ≈ 6e-5 per quantity.
    assert abs(float(m.product) - SINE_PRODUCT) < 4 * float(m.product_stderr)
    assert abs(float(m.dp) - math.pi) < 4 * float(m.dp_stderr)
    assert abs(float(m.boundary)) < 4 * float(m.boundary_stderr)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_monte_carlo_agrees_with_grid_for_a_small_network(seed):
    net = random_network(seed)
    amplitude = neural_amplitude(net, seed % 3)
    # ReLU makes ∇ψ jump across kink lines, so any rule converges only like 1/n there; at 400
    # nodes per axis the grid moves by ~1e-3 relative (checked against 300 nodes, below a tenth
    # of the Monte Carlo error bars), so the grid is the reference.
    grid = grid_moments(amplitude, (2,), points_per_dim=400)
    coarser = grid_moments(amplitude, (2,), points_per_dim=300)
    mc = moments(amplitude, (2,), n_samples=20_000, generator=seeded(10 + seed), dtype=torch.float64)
    assert bool(((grid.product - coarser.product).abs() < 0.1 * mc.product_stderr).all())
    for name in ("dx", "dp", "boundary"):
        error = (getattr(mc, name) - getattr(grid, name)).abs()
        stderr = getattr(mc, f"{name}_stderr")
        assert bool((error < 4 * stderr).all()), (name, error / stderr)
    assert bool((mc.product - grid.product).abs().lt(4 * mc.product_stderr).all())


def test_standard_errors_shrink_like_one_over_sqrt_n():
    amplitude = neural_amplitude(random_network(3), 1)
    small = moments(amplitude, (2,), n_samples=2_000, generator=seeded(0), dtype=torch.float64)
    large = moments(amplitude, (2,), n_samples=32_000, generator=seeded(1), dtype=torch.float64)
    ratios = torch.cat([small.dx_stderr / large.dx_stderr, small.dp_stderr / large.dp_stderr])
    # Expected ratio sqrt(16) = 4. A 32-group jackknife error is itself uncertain by ≈ 13%, so the
    # geometric mean of these 4 ratios is uncertain by ≈ 9%; ±35% is about 4 of those.
    geometric_mean = float(ratios.log().mean().exp())
    assert 4 / 1.35 < geometric_mean < 4 * 1.35


@pytest.mark.parametrize("sampler", ["uniform", "antithetic", "lhs"])
def test_standard_errors_match_the_spread_of_independent_runs(sampler):
    amplitude = neural_amplitude(random_network(4), 2)
    runs = [moments(amplitude, (2,), n_samples=1_000, sampler=sampler, generator=seeded(100 + r),
                    dtype=torch.float64) for r in range(40)]
    spread = torch.stack([r.dp for r in runs]).std(0)
    reported = torch.stack([r.dp_stderr for r in runs]).mean(0)
    # 40 runs estimate a standard deviation to ≈ 1/sqrt(78) ≈ 11%; accept a factor 1.5 either way.
    assert bool(((spread / reported) > 1 / 1.5).all() and ((spread / reported) < 1.5).all()), spread / reported


def _rms_errors_on_a_smooth_integrand(samplers, seeds=5) -> dict:
    """RMS error of Δx_iΔp_i over ``seeds`` runs of 4,096 points, per sampler, against a 64² grid,
    for ψ ∝ sin(πx)(1 + y)² on the unit square."""
    def smooth(x):
        return torch.sin(math.pi * x[:, 0]) * (1 + x[:, 1]) ** 2

    reference = grid_moments(smooth, (2,), points_per_dim=64)
    errors = {}
    for sampler in samplers:
        squared = [((moments(smooth, (2,), n_samples=4096, sampler=sampler, generator=seeded(s),
                             dtype=torch.float64).product - reference.product) ** 2).mean()
                   for s in range(seeds)]
        errors[sampler] = float(torch.stack(squared).mean().sqrt())
    return errors


def test_sobol_beats_uniform_on_a_smooth_integrand():
    errors = _rms_errors_on_a_smooth_integrand(("uniform", "sobol"))
    # Randomised QMC errs like N^{-1} up to logs vs N^{-1/2}: about 10× smaller at N = 4096 here
    # (measured); a factor 3 leaves room for the luck of 5 seeds.
    assert errors["sobol"] < errors["uniform"] / 3, errors


def test_sobol_estimate_does_not_depend_on_the_batch_size():
    amplitude = neural_amplitude(random_network(5), 0)
    a = moments(amplitude, (2,), n_samples=3000, sampler="sobol", batch_size=7, generator=seeded(2),
                dtype=torch.float64)
    b = moments(amplitude, (2,), n_samples=3000, sampler="sobol", batch_size=4096, generator=seeded(2),
                dtype=torch.float64)
    # Same points, summed in a different order: equal to rounding.
    for name in ("dx", "dp", "boundary", "dx_stderr", "product_stderr"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-13), name


def test_batch_size_does_not_change_the_uniform_estimate_beyond_its_error():
    amplitude = neural_amplitude(random_network(6), 1)
    a = moments(amplitude, (2,), n_samples=5000, batch_size=64, generator=seeded(3), dtype=torch.float64)
    b = moments(amplitude, (2,), n_samples=5000, batch_size=5000, generator=seeded(4), dtype=torch.float64)
    # Independent points: the difference of two estimates has error sqrt(2)·stderr; 4 of those.
    assert bool(((a.dp - b.dp).abs() < 4 * math.sqrt(2) * a.dp_stderr).all())


def test_effective_sample_size_drops_for_a_peaked_psi():
    flat = moments(constant, (1,), n_samples=2000, generator=seeded(0), dtype=torch.float64)
    peaked = moments(gaussian(0.5, 0.02), (1,), n_samples=2000, generator=seeded(0), dtype=torch.float64)
    # Kish ESS = N (∫ψ²)² / ∫ψ⁴ for uniform points: ψ² a Gaussian of std σ = 0.02 gives
    # N·2σ√π ≈ 0.071 N; allow 20% for sampling noise in ∫ψ⁴.
    assert flat.ess == pytest.approx(2000)
    assert peaked.ess == pytest.approx(2000 * 2 * 0.02 * math.sqrt(math.pi), rel=0.2)


def test_box_shift_changes_only_the_mean_position():
    shifted = grid_moments(lambda x: sine(x - 3.0), (1,), points_per_dim=64, low=3.0, high=4.0)
    assert float(shifted.mean_x) == pytest.approx(3.5, abs=1e-12)
    assert float(shifted.product) == pytest.approx(SINE_PRODUCT, abs=1e-12)
    mc = moments(lambda x: sine(x - 3.0), (1,), n_samples=5000, low=3.0, high=4.0, generator=seeded(0),
                 dtype=torch.float64)
    assert abs(float(mc.mean_x) - 3.5) < 0.02  # Δx/sqrt(ESS) ≈ 0.18/60 = 0.003: 6 stderr


# ---------------------------------------------------------------------------------------
# The theorem, as a property of the estimators
# ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    label=st.integers(0, 2),
    inputs=st.sampled_from([1, 2]),
    activation=st.sampled_from([nn.ReLU, nn.Tanh, nn.Softplus]),
    low=st.floats(-2.0, 1.0),
    width=st.floats(0.1, 3.0),
)
def test_every_coordinate_meets_the_boundary_bound(seed, label, inputs, activation, low, width):
    net = random_network(seed, inputs=inputs, activation=activation)
    amplitude = neural_amplitude(net, label)
    box = dict(low=low, high=low + width)
    grid = grid_moments(amplitude, (inputs,), points_per_dim=60 if inputs == 2 else 400, **box)
    mc = moments(amplitude, (inputs,), n_samples=512, generator=seeded(seed), dtype=torch.float64, **box)
    # The estimates are Cauchy–Schwarz for a weighted sum, so the bound holds to rounding (a
    # relative 1e-9), not merely within statistical error — for the grid and for Monte Carlo.
    for m in (grid, mc):
        assert bool(m.meets_bound.all()), (m.product, m.lower_bound)
        assert m.summary()["frac_meeting_bound"] == 1.0


# ---------------------------------------------------------------------------------------
# Neural wave functions
# ---------------------------------------------------------------------------------------


def test_neural_moments_are_moments_of_the_cross_entropy():
    net = random_network(7)
    expected = moments(lambda x: nn.functional.cross_entropy(net(x), torch.full((x.shape[0],), 2), reduction="none"),
                       (2,), n_samples=3000, sampler="sobol", generator=seeded(5), dtype=torch.float64)
    got = neural_moments(net, 2, (2,), n_samples=3000, sampler="sobol", generator=seeded(5))
    assert torch.allclose(got.dp, expected.dp, rtol=1e-12) and torch.allclose(got.boundary, expected.boundary)


def test_neural_moments_restore_the_mode_and_leave_weights_without_gradients():
    net = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    net.train()
    a = neural_moments(net, 0, (2,), n_samples=400, sampler="sobol", generator=seeded(0))
    b = neural_moments(net, 0, (2,), n_samples=400, sampler="sobol", generator=seeded(0))
    assert net.training  # restored
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(a.dx, b.dx)  # eval mode: dropout off, so the estimate is deterministic


def test_mean_neural_moments_average_the_class_aggregates():
    net = random_network(8)
    result = mean_neural_moments(net, (2,), n_samples=2000, generator=seeded(0))
    assert len(result.per_class) == 3
    for form in ("paper", "rss"):
        combined = mean_aggregate(result.per_class, form)
        assert combined.dx == pytest.approx(sum(m.aggregate(form)[0] for m in result.per_class) / 3)
        assert combined.dp == pytest.approx(sum(m.aggregate(form)[1] for m in result.per_class) / 3)
    assert result.dx_stderr > 0 and result.dp_stderr > 0


def test_aggregate_forms_and_summary():
    m = grid_moments(lambda x: sine(x[:, :1]) * sine(x[:, 1:]), (2,), points_per_dim=64)
    dx1 = math.sqrt(1 / 12 - 1 / (2 * math.pi**2))
    # paper form sqrt(Σ Δx_i); root-sum-square sqrt(Σ Δx_i²).
    assert m.aggregate("paper") == pytest.approx((math.sqrt(2 * dx1), math.sqrt(2 * math.pi)))
    assert m.aggregate("rss") == pytest.approx((math.sqrt(2) * dx1, math.sqrt(2) * math.pi))
    s = m.summary()
    assert s["frac_below_half"] == 0.0 and s["frac_meeting_bound"] == 1.0
    assert s["min_product"] == pytest.approx(SINE_PRODUCT)
    assert s["mean_boundary"] == pytest.approx(0.0, abs=1e-12)
    assert m.aggregate_stderr() == (0.0, 0.0)  # quadrature has no statistical error


def test_aggregate_stderr_matches_the_spread_of_runs():
    amplitude = neural_amplitude(random_network(9), 0)
    runs = [moments(amplitude, (2,), n_samples=1000, generator=seeded(200 + r), dtype=torch.float64)
            for r in range(30)]
    spread = torch.tensor([r.aggregate("paper")[1] for r in runs]).std()
    reported = sum(r.aggregate_stderr("paper")[1] for r in runs) / len(runs)
    # 30 runs estimate a standard deviation to ≈ 13%; a factor 1.6 either way is about 4 of those.
    assert 1 / 1.6 < float(spread) / reported < 1.6


def test_mnist_sized_input_runs_in_batches_with_bounded_memory():
    # 784 coordinates, N not a multiple of the batch or of the groups.
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    m = neural_moments(net, 8, (1, 28, 28), n_samples=1001, batch_size=100, generator=seeded(0))
    assert m.dx.shape == (1, 28, 28) and m.dx_replicates.shape == (32, 1, 28, 28)
    assert m.n_samples == 1001
    # A linear model's loss varies smoothly: every coordinate has a finite, positive spread.
    assert bool((m.dx > 0).all() and (m.dp > 0).all() and m.meets_bound.all())


def test_wave_function_grid_is_normalised():
    nodes, psi, grad = wave_function_grid(neural_amplitude(random_network(1), 0), points_per_dim=100,
                                          dtype=torch.float64)
    h = float(nodes[1] - nodes[0])
    assert float((psi**2).sum() * h * h) == pytest.approx(1.0, abs=1e-12)
    assert psi.shape == (100, 100) and grad.shape == (2, 100, 100)
    assert bool((psi >= 0).all())


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amplitude, kwargs, match",
    [
        (sine, dict(n_samples=1), "n_samples"),
        (sine, dict(n_samples=10, low=1.0, high=1.0), "low"),
        (sine, dict(n_samples=10, low=0.0, high=float("inf")), "finite"),
        (sine, dict(n_samples=10, sampler="halton"), "sampler"),
        (sine, dict(n_samples=10, batch_size=0), "batch_size"),
        (lambda x: torch.ones(x.shape[0], 2), dict(n_samples=10), "amplitude"),
        (lambda x: -torch.ones(x.shape[0]), dict(n_samples=10), "non-negative"),
        (lambda x: torch.full((x.shape[0],), float("nan")), dict(n_samples=10), "non-finite"),
        (lambda x: torch.zeros(x.shape[0]), dict(n_samples=10), "zero at every"),
        (lambda x: x[:, 0].sqrt(), dict(n_samples=10, low=0.0), None),  # allowed: ∞ gradient only at 0
    ],
)
def test_bad_input_raises_value_error_naming_it(amplitude, kwargs, match):
    if match is None:
        moments(amplitude, (1,), generator=seeded(0), **kwargs)  # sqrt is finite at interior points
        return
    with pytest.raises(ValueError, match=match):
        moments(amplitude, (1,), generator=seeded(0), **kwargs)


def test_non_finite_gradient_raises():
    with pytest.raises(ValueError, match="gradients"):
        grid_moments(lambda x: (x[:, 0] - 0.5).abs().sqrt(), (1,), points_per_dim=3)  # node at ½


def test_bad_grid_and_sobol_arguments_raise():
    with pytest.raises(ValueError, match="input_shape"):
        grid_moments(sine, (3,), points_per_dim=10)
    with pytest.raises(ValueError, match="points_per_dim"):
        grid_moments(sine, (1,), points_per_dim=1)
    with pytest.raises(ValueError, match="rule"):
        grid_moments(sine, (1,), points_per_dim=10, rule="simpson")
    with pytest.raises(ValueError, match="sobol"):
        moments(sine, (SOBOL_MAX_DIM + 1,), n_samples=2, sampler="sobol")
    with pytest.raises(ValueError, match="input_shape"):
        moments(sine, (), n_samples=2)


@pytest.mark.parametrize("label", [-1, 3, 1.0, True])
def test_label_out_of_range_raises(label):
    with pytest.raises(ValueError, match="label"):
        neural_moments(random_network(0), label, (2,), n_samples=10)


def test_bad_form_raises():
    m = grid_moments(sine, (1,), points_per_dim=8)
    with pytest.raises(ValueError, match="form"):
        m.aggregate("mean")


@pytest.mark.parametrize("seed, activation", [(0, nn.Tanh), (1, nn.Softplus), (2, nn.Tanh)])
def test_boundary_terms_from_the_faces_equal_the_volume_forms(seed, activation):
    amplitude = neural_amplitude(random_network(seed, activation=activation), seed % 3)
    volume = grid_moments(amplitude, (2,), points_per_dim=80, low=-0.5, high=1.5)
    boundary, mean_p = face_boundary_terms(amplitude, (2,), points_per_dim=80, low=-0.5, high=1.5)
    # Integration by parts is exact; smooth ψ and 80 Gauss nodes make both sides exact to ~1e-10.
    assert torch.allclose(boundary, volume.boundary, atol=1e-9)
    assert torch.allclose(mean_p, volume.mean_p, atol=1e-9)


def test_boundary_term_is_non_negative_on_an_interval():
    # B = (b − <x>)ψ(b)² + (<x> − a)ψ(a)² ≥ 0 since a ≤ <x> ≤ b.
    for amplitude in (sine, constant, gaussian(0.2, 0.3), lambda x: torch.cosh(8 * (x[:, 0] - 0.5))):
        assert float(grid_moments(amplitude, (1,), points_per_dim=100).boundary) > -1e-12


# ---------------------------------------------------------------------------------------
# Bugs a weaker suite let through (each test below fails on the bug named, planted by hand)
# ---------------------------------------------------------------------------------------


def test_wave_function_grid_gradient_has_the_right_axes_on_a_non_square_grid():
    # l = e^{x₁}(1 + 3x₂²) is not symmetric in x₁ ↔ x₂ and the grid is 30 × 45, so a gradient
    # reshaped without the transpose (or with its two axes swapped) cannot match.
    def amplitude(x):
        return torch.exp(x[:, 0]) * (1 + 3 * x[:, 1] ** 2)

    (n1, n2), psi, grad = wave_function_grid(amplitude, points_per_dim=(30, 45), dtype=torch.float64)
    a, b = torch.meshgrid(n1, n2, indexing="ij")
    l = torch.exp(a) * (1 + 3 * b**2)
    norm = float(l[0, 0] / psi[0, 0])
    assert psi.shape == (30, 45) and grad.shape == (2, 30, 45)
    assert torch.allclose(psi * norm, l, rtol=1e-12)
    assert torch.allclose(grad[0] * norm, l, rtol=1e-12)  # ∂₁l = l
    assert torch.allclose(grad[1] * norm, torch.exp(a) * 6 * b, rtol=1e-12)  # ∂₂l = 6x₂e^{x₁}
    nodes, psi, square = wave_function_grid(amplitude, points_per_dim=30, dtype=torch.float64)
    a, b = torch.meshgrid(nodes, nodes, indexing="ij")
    norm = float(torch.exp(a[0, 0]) * (1 + 3 * b[0, 0] ** 2) / psi[0, 0])
    assert nodes.shape == (30,) and square.shape == (2, 30, 30)
    assert torch.allclose(square[1] * norm, torch.exp(a) * 6 * b, rtol=1e-12)


def test_lower_bound_is_the_absolute_value_when_b_exceeds_one():
    # ψ ∝ cosh(a(x − ½)) piles up at both faces: ∫cosh² = ½ + sinh(a)/(2a) on [0, 1], so
    # B = ½ψ²(1) + ½ψ²(0) = cosh²(a/2) / (½ + sinh(a)/(2a)) ≈ 7.97 for a = 8: the bound is (B − 1)/2.
    a = 8.0
    m = grid_moments(lambda x: torch.cosh(a * (x[:, 0] - 0.5)), (1,), points_per_dim=100)
    b = math.cosh(a / 2) ** 2 / (0.5 + math.sinh(a) / (2 * a))
    assert float(m.boundary) == pytest.approx(b, rel=1e-10)
    assert float(m.lower_bound) == pytest.approx((b - 1) / 2, rel=1e-10)
    assert bool(m.meets_bound.all()) and float(m.product) >= (b - 1) / 2


def test_stratified_samplers_are_uniform_and_latin_hypercube_beats_uniform_on_a_smooth_integrand():
    from qnnlib.uncertainty.monte_carlo import _stratified
    u = _stratified("lhs", 8, 3, seeded(0), torch.float64)
    # One point in each of the 8 bins of every coordinate.
    assert sorted((u[:, 1] * 8).floor().tolist()) == list(range(8)) and bool(((u >= 0) & (u < 1)).all())
    v = _stratified("antithetic", 5, 2, seeded(0), torch.float64)
    torch.testing.assert_close(v[:2], 1 - v[3:5])  # 3 draws, then the pairs of the first 2

    errors = _rms_errors_on_a_smooth_integrand(("uniform", "lhs"))
    # Measured: 1.8× smaller RMS error (the product sin·(1+y)² is not additive, where LHS gains most);
    # 1.3 leaves room for the luck of 5 seeds.
    assert errors["lhs"] < errors["uniform"] / 1.3, errors
