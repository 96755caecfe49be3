"""Tests of the estimator's honesty (qnnlib.uncertainty.estimator and .diagnostics; SPEC §7):
weights in the log domain, the jackknife bias correction, effective sample sizes, Pareto k̂ and
the UnreliableEstimateWarning. Closed forms and hand cases first, then independent
implementations (scipy's generalised Pareto fit, exact quadrature), then end to end.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

import qnnlib
from qnnlib.uncertainty import (
    ESS_MIN,
    KHAT_MAX,
    TAIL_MIN,
    UnreliableEstimateWarning,
    combine_stderr,
    effective_sample_size,
    grid_moments,
    jackknife,
    log_cross_entropy,
    mean_aggregate,
    moments,
    neural_amplitude,
    neural_moments,
    pareto_khat,
    tail_excess,
)
from qnnlib.uncertainty.diagnostics import tail_length, unreliable_reasons


pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def sine(x):
    return math.sqrt(2.0) * torch.sin(math.pi * x[:, 0])


def quiet(fn, *args, **kw):
    """Call fn with UnreliableEstimateWarning silenced (small-N cases that are meant to be small)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableEstimateWarning)
        return fn(*args, **kw)


class Logistic(nn.Module):
    """Two classes with logits (0, scale·(offset + slope·x)): a 1-D network whose class 1 is right everywhere."""

    def __init__(self, scale, offset=0.16, slope=0.03):
        super().__init__()
        self.scale, self.offset, self.slope = scale, offset, slope
        self.bias = nn.Parameter(torch.zeros(()))  # gives the module a dtype

    def forward(self, x):
        z = self.scale * (self.offset + self.slope * x[:, 0]) + self.bias
        return torch.stack([torch.zeros_like(z), z], 1)


# ---------------------------------------------------------------------------------------
# Weights in the log domain
# ---------------------------------------------------------------------------------------


def test_log_cross_entropy_equals_the_cross_entropy_where_both_are_representable():
    logits = torch.randn(500, 10, generator=seeded(0), dtype=torch.float64) * 5
    for label in (0, 7):
        expected = F.cross_entropy(logits, torch.full((500,), label), reduction="none")
        # logsumexp − z_Y carries an absolute rounding error ≈ 1e-16·|z| ≤ 1e-14 here.
        assert torch.allclose(log_cross_entropy(logits, label).exp(), expected, rtol=1e-12, atol=1e-13)


def test_log_cross_entropy_keeps_losses_far_below_float32_resolution():
    # Logits (0, z): CE = softplus(−z) = e^{−z} (1 + O(e^{−z})), so log CE = −z to ~1e-30.
    z = torch.tensor([20.0, 50.0, 100.0, 500.0])
    logits = torch.stack([torch.zeros(4), z], 1)
    assert torch.allclose(log_cross_entropy(logits, 1), -z, rtol=1e-6)
    assert bool((F.cross_entropy(logits, torch.ones(4, dtype=torch.long), reduction="none") == 0).all())


def test_float32_at_logit_scale_100_gives_the_float64_answer():
    # ψ ∝ CE of logits 100·(0, 0.16 + 0.03x): l ≈ e^{−16−3x} ≈ 1e-7 is below float32's resolution of
    # logsumexp − z (≈ 1e-7), so the plain float32 loss is quantised to a few values.
    reference = grid_moments(neural_amplitude(Logistic(100.0).double(), 1), (1,), points_per_dim=200)
    got = neural_moments(Logistic(100.0).float(), 1, (1,), n_samples=20_000, generator=seeded(0))
    assert abs(float(got.dx - reference.dx)) < 4 * float(got.dx_stderr)
    assert abs(float(got.mean_x - reference.mean_x)) < 4 * float(got.mean_x_stderr)
    # The case bites: the plain float32 loss (no log form) is off by far more than its error bar
    # (measured: Δx 0.062 ± 0.0003 against 0.159) — and no diagnostic could tell.
    net = Logistic(100.0).float()
    plain = moments(lambda x: F.cross_entropy(net(x), torch.ones(x.shape[0], dtype=torch.long), reduction="none"),
                    (1,), n_samples=20_000, generator=seeded(0))
    assert abs(float(plain.dx - reference.dx)) > 20 * float(plain.dx_stderr)


@pytest.mark.parametrize("scale", [1e-200, 1e-150, 1e150, 1e200, 1e300])
def test_float64_amplitudes_of_any_magnitude_give_the_same_estimate(scale):
    # ψ = l/N is invariant under l → c·l. Before the log domain, l² overflowed to inf (NaN moments)
    # for c ≥ 1e154 and ESS = (Σw)²/Σw² was NaN at 1e±150 (w² out of range).
    unit = moments(sine, (1,), n_samples=2000, generator=seeded(1), dtype=torch.float64)
    scaled = moments(lambda x: scale * sine(x), (1,), n_samples=2000, generator=seeded(1), dtype=torch.float64)
    for name in ("mean_x", "dx", "mean_p", "dp", "boundary", "dx_stderr", "dp_jk"):
        assert torch.allclose(getattr(scaled, name), getattr(unit, name), rtol=1e-10, atol=1e-12), name
    for name in ("ess", "ess_p", "khat_w", "khat_p"):
        assert getattr(scaled, name) == pytest.approx(getattr(unit, name), rel=1e-9), name


def test_an_amplitude_that_underflows_its_dtype_is_refused():
    # Every value is subnormal in float32 (< 1.2e-38): its digits are gone, so no estimate is given.
    with pytest.raises(ValueError, match="underflows"):
        moments(lambda x: 1e-40 * sine(x), (1,), n_samples=500, generator=seeded(0))
    # Exact zeros on part of the box are a legitimate ψ, not an underflow.
    m = moments(lambda x: torch.relu(x[:, 0] - 0.5), (1,), n_samples=2000, generator=seeded(0))
    assert float(m.mean_x) > 0.5


# ---------------------------------------------------------------------------------------
# Jackknife
# ---------------------------------------------------------------------------------------


def test_jackknife_formulas_on_a_hand_case():
    # θ̂ = 2, replicates 1, 2, 3 (K = 3): θ̄ = 2, θ_J = 3·2 − 2·2 = 2, SE = sqrt(2/3 · 2).
    theta, se = jackknife(torch.tensor(2.0), torch.tensor([1.0, 2.0, 3.0]))
    assert float(theta) == pytest.approx(2.0) and float(se) == pytest.approx(math.sqrt(4 / 3))
    theta, _ = jackknife(torch.tensor(5.0), torch.tensor([4.0, 4.0]))  # θ_J = 2·5 − 1·4
    assert float(theta) == pytest.approx(6.0)


def test_jackknife_removes_the_bias_of_the_aggregates_at_small_n():
    # ψ = Π_i (1 + x_i/2) on [0, 1]^16 is separable, so every coordinate has the 1-D moments of
    # 1 + x/2 (exact by Gauss quadrature) and the aggregates follow. At N = 64 the plain ratio is
    # biased by ≈ −1% in each Δx_i, Δp_i, which adds up over 16 coordinates; measured over 100
    # independent runs: plain −6.5 to −9.6 standard errors of the mean, jackknife within ±1.2.
    one = grid_moments(lambda x: 1 + 0.5 * x[:, 0], (1,), points_per_dim=20)
    runs = [quiet(moments, lambda x: (1 + 0.5 * x).prod(1), (16,), n_samples=64, generator=seeded(r),
                  dtype=torch.float64) for r in range(100)]
    dx1, dp1 = float(one.dx), float(one.dp)
    exact = {"paper": (math.sqrt(16 * dx1), math.sqrt(16 * dp1)), "rss": (4 * dx1, 4 * dp1)}
    for form in ("paper", "rss"):
        for j in (0, 1):
            plain = torch.tensor([m.aggregate(form)[j] for m in runs])
            corrected = torch.tensor([m.aggregate_jk(form)[j] for m in runs])
            truth = exact[form][j]
            assert float(plain.mean() - truth) < -3 * float(plain.std() / 10), (form, j)
            assert abs(float(corrected.mean() - truth)) < 2 * float(corrected.std() / 10), (form, j)


def test_jackknife_correction_is_negligible_at_large_n():
    m = moments(lambda x: (1 + 0.5 * x).prod(1), (16,), n_samples=20_000, generator=seeded(0), dtype=torch.float64)
    for form in ("paper", "rss"):
        for plain, corrected, se in zip(m.aggregate(form), m.aggregate_jk(form), m.aggregate_stderr(form)):
            assert abs(corrected - plain) < se
    assert bool(((m.dx_jk - m.dx).abs() < m.dx_stderr).all() and ((m.dp_jk - m.dp).abs() < m.dp_stderr).all())


def test_grid_quadrature_has_no_jackknife_correction_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableEstimateWarning)
        m = grid_moments(sine, (1,), points_per_dim=32)
    assert torch.equal(m.dx_jk, m.dx) and torch.equal(m.boundary_jk, m.boundary)
    assert m.aggregate_jk() == m.aggregate() and m.unreliable == []
    assert math.isnan(m.khat_w)


def test_class_mean_standard_error_matches_the_spread_of_runs():
    # The mean of n independent class estimates has SE sqrt(Σ se_k²)/n (not /√n, not /1).
    # Checked against the spread of 40 independent repetitions of the 3-class mean; 40 runs
    # estimate a standard deviation to ≈ 11%, so ±30% is ≈ 2.5 of those, while the /√n bug is
    # off by √3 = 1.73 and the missing-1/n bug by 3.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    for p in net.parameters():
        p.data.mul_(3.0)
    from qnnlib.uncertainty import mean_neural_moments

    runs = [quiet(mean_neural_moments, net, (2,), n_samples=400, generator=seeded(300 + r), form="rss")
            for r in range(40)]
    for field in ("dx", "dp"):
        spread = float(torch.tensor([getattr(r, field) for r in runs]).std())
        reported = float(np.mean([getattr(r, f"{field}_stderr") for r in runs]))
        assert 1 / 1.3 < spread / reported < 1.3, (field, spread / reported)
    # The helper itself, on a hand case: three errors of 0.3 average to 0.3/√3.
    assert combine_stderr([0.3, 0.3, 0.3]) == pytest.approx(0.3 / math.sqrt(3))
    combined = mean_aggregate(runs[0].per_class, "rss")
    assert combined.dx_jk == pytest.approx(np.mean([m.aggregate_jk("rss")[0] for m in runs[0].per_class]))


# ---------------------------------------------------------------------------------------
# Effective sample sizes
# ---------------------------------------------------------------------------------------


def test_effective_sample_size_on_hand_cases():
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert effective_sample_size([0, 0, 5, 0]) == pytest.approx(1)
    assert effective_sample_size([1, 1, 2, 2]) == pytest.approx(36 / 10)
    # Scale-free through log weights: (1, 1, 2, 2) · 1e300 would overflow w² in float64.
    assert effective_sample_size(np.log([1, 1, 2, 2]) + 700, log=True) == pytest.approx(3.6)
    with pytest.raises(ValueError, match="non-negative"):
        effective_sample_size([1.0, -1.0])


def test_moments_report_both_effective_sample_sizes():
    nodes = (np.arange(200) + 0.5) / 200
    # Midpoint grid: equal q, so ESS = (Σw)²/Σw² over the nodes. l = x² gives w = x⁴ and, for
    # <p²>, v = g² = 4x² (one coordinate).
    m = grid_moments(lambda x: x[:, 0] ** 2, (1,), points_per_dim=200, rule="midpoint")
    assert m.ess == pytest.approx((nodes**4).sum() ** 2 / (nodes**8).sum(), rel=1e-12)
    assert m.ess_p == pytest.approx((nodes**2).sum() ** 2 / (nodes**4).sum(), rel=1e-12)
    # A step amplitude (1 on the left half, 2 on the right) has no gradient: ESS_p is undefined.
    step = grid_moments(lambda x: 1.0 + (x[:, 0] > 0.5).double(), (1,), points_per_dim=200, rule="midpoint")
    assert step.ess == pytest.approx((100 * 1 + 100 * 4) ** 2 / (100 * 1 + 100 * 16))
    assert math.isnan(step.ess_p)


# ---------------------------------------------------------------------------------------
# Pareto k̂
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0.3, 0.5, 0.9])
def test_pareto_khat_recovers_the_tail_index_of_generalised_pareto_draws(k):
    # The exceedances of a GP(k) sample over a high threshold are GP(k) again. Over 425 tail
    # points k̂ has a spread of 0.04–0.07 (measured); the mean of 10 samples is within ±0.02
    # (3σ ≈ 0.06), and PSIS's prior pulls it by 5/(425 + 10)·(½ − k) ≤ 0.005.
    estimates = []
    for seed in range(10):
        u = np.random.default_rng(seed).random(20_000)
        x = ((1 - u) ** (-k) - 1) / k
        estimates.append(pareto_khat(x))
        if seed == 0:
            # An independent fit (scipy's maximum likelihood) of the same tail agrees (measured ≤ 0.015).
            t = tail_length(x.size)
            top = np.sort(x)[::-1][: t + 1]
            assert abs(estimates[-1] - stats.genpareto.fit(top[:t] - top[t], floc=0)[0]) < 0.05
    assert abs(np.mean(estimates) - k) < 0.06


def test_pareto_khat_is_at_most_about_zero_for_light_tails():
    rng = np.random.default_rng(0)
    # Exponential tail: k = 0; a half-normal: k → 0 from below; uniform: bounded, k = −1.
    assert abs(pareto_khat(rng.exponential(size=20_000))) < 0.15
    assert pareto_khat(np.abs(rng.normal(size=20_000))) < 0.1
    assert pareto_khat(rng.random(20_000)) < -0.5


def test_pareto_khat_is_scale_free_and_nan_without_a_tail():
    w = np.random.default_rng(1).pareto(2.0, size=5000)  # Lomax: tail index ½
    assert pareto_khat(np.log(w) + 690, log=True) == pytest.approx(pareto_khat(w), rel=1e-9)
    assert math.isnan(pareto_khat(np.ones(1000)))  # no distinct tail values
    assert math.isnan(pareto_khat(np.arange(10.0)))  # tail of 2 points: too short to fit


def test_tail_excess_counts_average_weights_above_the_threshold():
    # N − T ones and T = tail_length(N) weights 1 + δ: the excess is Tδ over a mean of 1 + Tδ/N.
    n, delta = 10_000, 0.01
    t = tail_length(n)
    w = np.ones(n)
    w[:t] += delta
    assert tail_excess(w) == pytest.approx(math.log(t * delta / (1 + t * delta / n)), rel=1e-9)
    assert tail_excess(np.log(w) - 700, log=True) == pytest.approx(tail_excess(w), rel=1e-9)
    assert tail_excess(np.ones(n)) == -math.inf  # a flat tail reaches nowhere


def _plateau_weights(k: float, reach: float, n: int = 65_536, seed: int = 0) -> np.ndarray:
    """Bounded weights in [½, 1] whose 2T largest sit on a plateau 1e-7 wide at 1, the T largest of them
    above it by GPD(k) spacings reaching ``reach`` (T = ``tail_length(n)``)."""
    rng = np.random.default_rng(seed)
    w = 0.5 + 0.5 * rng.random(n)
    t = tail_length(n)
    plateau = np.argsort(w)[-2 * t:]
    w[plateau] = 1.0 - 1e-7 * rng.random(2 * t)
    x = stats.genpareto(c=k).rvs(size=t, random_state=rng)
    w[plateau[-t:]] = 1.0 + x * (reach / x.max())
    return w


def test_a_large_khat_counts_only_when_its_tail_can_move_the_estimate():
    # The feature-space failure of the recorded MNIST runs: Σ_i g_i² bounded, its largest values
    # on a plateau a few 1e-7 wide plus a few points ~1 % above it. The fit calls that tail
    # heavy (k̂ ≫ 0.7) although all of it is worth a few hundredths of one average weight.
    w = _plateau_weights(k=3.0, reach=0.015)
    khat, tail = pareto_khat(w), tail_excess(w)
    assert khat > 2 and tail < math.log(TAIL_MIN) - 2
    ess = effective_sample_size(w)
    assert ess > 0.8 * w.size  # every other check passes
    assert any("Pareto" in r for r in unreliable_reasons(ess, ess, khat, khat))  # k̂ alone: flagged
    assert unreliable_reasons(ess, ess, khat, khat, tail, tail) == []
    # The same tail shape reaching 1000 average weights above the plateau is flagged.
    heavy = _plateau_weights(k=3.0, reach=1000 * 0.75 * 65_536 / 100)
    assert tail_excess(heavy) > math.log(TAIL_MIN) and pareto_khat(heavy) > 2
    assert any("Pareto" in r for r in unreliable_reasons(1e9, 1e9, pareto_khat(heavy), 0.0, tail_excess(heavy)))


# ---------------------------------------------------------------------------------------
# The warning
# ---------------------------------------------------------------------------------------


def test_unreliable_estimate_warning_is_a_filterable_runtime_warning():
    assert issubclass(UnreliableEstimateWarning, RuntimeWarning)
    assert qnnlib.UnreliableEstimateWarning is UnreliableEstimateWarning
    assert ESS_MIN == 100 and KHAT_MAX == 0.7


def test_warning_fires_on_heavy_tailed_weights():
    # l = x^{−0.4} on (0, 1]: w = x^{−0.8} has P(W > t) = t^{−1.25}, a Pareto tail with k = 0.8 > 0.7.
    with pytest.warns(UnreliableEstimateWarning, match="Pareto"):
        m = moments(lambda x: x[:, 0] ** -0.4, (1,), n_samples=20_000, generator=seeded(0), dtype=torch.float64)
    assert m.khat_w > KHAT_MAX and m.summary()["reliable"] is False
    assert m.tail_w > math.log(TAIL_MIN) + 5  # a genuine heavy tail: e^5 average weights and more
    # l = e^{20x}: ESS = N (∫e^{40x})² / ∫e^{80x} ≈ N/20 = 50 at N = 1000.
    with pytest.warns(UnreliableEstimateWarning, match="ESS"):
        m = moments(lambda x: torch.exp(20 * x[:, 0]), (1,), n_samples=1000, generator=seeded(0), dtype=torch.float64)
    assert m.ess == pytest.approx(50, rel=0.3)


def test_no_warning_on_a_benign_case():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableEstimateWarning)
        m = moments(sine, (1,), n_samples=4000, generator=seeded(0), dtype=torch.float64)
    # w = 2 sin²: ESS = N/(∫4 sin⁴) = N/1.5; bounded weights have k̂ < 0.
    assert m.ess == pytest.approx(4000 / 1.5, rel=0.05)
    assert m.khat_w < 0 and m.unreliable == [] and m.summary()["reliable"] is True
