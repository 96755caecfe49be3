"""Local wave functions on B_ε(x₀) ∩ [0,1]^M (qnnlib.uncertainty.local; SPEC §8, Chapter 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qnnlib.uncertainty import local as loc
from qnnlib.uncertainty import tilted as tilt
from qnnlib.uncertainty import moments, neural_moments


def _toy(seed=0):
    """A 2-input, 3-class linear classifier in float64 (smooth CE, several classes)."""
    torch.manual_seed(seed)
    model = nn.Linear(2, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, -2.0], [-1.5, 2.5], [0.5, 0.5]], dtype=torch.float64))
        model.bias.copy_(torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64))
    return model


def _exact(model, label, lo, hi, points=120):
    """Tensor-product Gauss–Legendre moments on [lo₁,hi₁]×[lo₂,hi₂], written out independently of the
    package's sums: ⟨x⟩, Δx, ⟨p⟩, Δp, B per coordinate with ψ ∝ CE(model(X), label)."""
    t, w = np.polynomial.legendre.leggauss(points)
    nodes = [lo[i] + (hi[i] - lo[i]) * (t + 1) / 2 for i in range(2)]
    weights = [w * (hi[i] - lo[i]) / 2 for i in range(2)]
    a, b = np.meshgrid(nodes[0], nodes[1], indexing="ij")
    x = torch.tensor(np.stack([a.ravel(), b.ravel()], 1), requires_grad=True)
    q = np.outer(weights[0], weights[1]).ravel()
    ce = nn.functional.cross_entropy(model(x), torch.full((x.shape[0],), label), reduction="none")
    (g,) = torch.autograd.grad(ce.sum(), x)
    l, g, xs = ce.detach().numpy(), g.numpy(), x.detach().numpy()
    norm2 = (q * l**2).sum()
    psi, dpsi = l / np.sqrt(norm2), g / np.sqrt(norm2)
    mean_x = (q[:, None] * psi[:, None] ** 2 * xs).sum(0)
    dx = np.sqrt((q[:, None] * psi[:, None] ** 2 * (xs - mean_x) ** 2).sum(0))
    mean_p = (q[:, None] * psi[:, None] * dpsi).sum(0)
    dp = np.sqrt((q[:, None] * dpsi**2).sum(0) - mean_p**2)
    boundary = 1 + 2 * (q[:, None] * (xs - mean_x) * psi[:, None] * dpsi).sum(0)
    return dict(mean_x=mean_x, dx=dx, mean_p=mean_p, dp=dp, boundary=boundary)


@pytest.mark.parametrize("sampler", loc.LOCAL_SAMPLERS)
@pytest.mark.parametrize("x0, eps", [((0.5, 0.4), 0.2),      # the ball inside the cube
                                     ((0.05, 0.97), 0.15)])  # clipped by the faces x₁ = 0 and x₂ = 1
def test_local_moments_match_exact_quadrature_on_a_2d_box(x0, eps, sampler, one_thread):
    model = _toy()
    x0 = torch.tensor([x0], dtype=torch.float64)
    label = 1
    lo, hi = (x0[0] - eps).clamp(0, 1).numpy(), (x0[0] + eps).clamp(0, 1).numpy()
    exact = _exact(model, label, lo, hi)
    result = loc.local_moments(model, x0, torch.tensor([label]), eps=eps, n_samples=40_000,
                               generator=torch.Generator().manual_seed(1), batch_size=8192, sampler=sampler)
    m = result.moments[0]
    assert torch.allclose(m.box[0], torch.tensor(lo)) and torch.allclose(m.box[1], torch.tensor(hi))
    for key, se in (("mean_x", m.mean_x_stderr), ("dx", m.dx_stderr), ("mean_p", m.mean_p_stderr),
                    ("dp", m.dp_stderr), ("boundary", m.boundary_stderr)):
        value = getattr(m, f"{key}_jk").numpy()
        se = se.numpy()
        assert np.all(se > 0), key
        assert np.all(np.abs(value - exact[key]) < 4 * se + 1e-9), (key, value, exact[key], se)
    # the volume-form bound holds sample by sample, and B ≠ 0 on a box where ψ does not vanish
    assert bool(m.meets_bound.all())
    assert np.all(np.abs(exact["boundary"]) > 0.05)
    # N² = ∫_Ω l²: importance weights 1/q carry the box volume that uniform points get from |Ω|
    t, w = np.polynomial.legendre.leggauss(120)
    a, b = np.meshgrid(*[lo[i] + (hi[i] - lo[i]) * (t + 1) / 2 for i in range(2)], indexing="ij")
    grid = torch.tensor(np.stack([a.ravel(), b.ravel()], 1))
    ce = nn.functional.cross_entropy(model(grid), torch.full((grid.shape[0],), label), reduction="none").detach()
    norm2 = float((torch.tensor(np.outer(w, w).ravel()) * ce**2).sum()) * np.prod(hi - lo) / 4
    assert m.log_norm2 == pytest.approx(np.log(norm2), abs=0.02)  # ≈ 4 SE of log mean w at ESS ≈ 30,000


def test_box_moments_agree_with_unit_cube_moments_after_rescaling(one_thread):
    """The docstring's algebra: X = lo + h U gives Δx = hΔu, ⟨x⟩ = lo + h⟨u⟩, ⟨p⟩ = ⟨p_u⟩/h, Δp = Δp_u/h, B = B_u."""
    model = _toy()
    lo = torch.tensor([0.1, 0.6], dtype=torch.float64)
    h = torch.tensor([0.3, 0.05], dtype=torch.float64)

    def amp_x(x):
        return nn.functional.cross_entropy(model(x), torch.zeros(x.shape[0], dtype=torch.long), reduction="none")

    def amp_u(u):
        return amp_x(lo + h * u)

    x_side = loc.box_moments(amp_x, lo, lo + h, n_samples=4096, generator=torch.Generator().manual_seed(3),
                             batch_size=1024)
    u_side = moments(amp_u, (2,), n_samples=4096, generator=torch.Generator().manual_seed(3),
                     batch_size=1024, dtype=torch.float64)
    assert torch.allclose(x_side.mean_x, lo + h * u_side.mean_x, rtol=1e-10)
    assert torch.allclose(x_side.dx, h * u_side.dx, rtol=1e-8)
    assert torch.allclose(x_side.mean_p, u_side.mean_p / h, rtol=1e-8)
    assert torch.allclose(x_side.dp, u_side.dp / h, rtol=1e-8)
    assert torch.allclose(x_side.boundary, u_side.boundary, rtol=1e-8)
    assert torch.allclose(x_side.dx_stderr, h * u_side.dx_stderr, rtol=1e-6)
    # N² = ∫_Ω l² dX = |Ω| ∫_cube l(lo + hU)² dU
    assert x_side.log_norm2 == pytest.approx(u_side.log_norm2 + float(h.log().sum()), rel=1e-12)


class _Tiny(nn.Module):
    """A small convolutional net on 1×6×6 images, float32 (the image code path: channels-last)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.body(x)


def test_eps_covering_the_cube_reproduces_the_global_estimator_exactly(one_thread):
    model = _Tiny().eval()
    x0 = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    local = loc.local_moments(model, x0, torch.tensor([3]), eps=1.0, n_samples=2048,
                              generator=torch.Generator().manual_seed(7), batch_size=256).moments[0]
    glob = neural_moments(model, 3, (1, 6, 6), n_samples=2048, generator=torch.Generator().manual_seed(7),
                          batch_size=256)
    for key in ("mean_x", "dx", "mean_p", "dp", "boundary", "dx_jk", "dp_jk", "dx_stderr", "dp_stderr"):
        assert torch.equal(getattr(local, key), getattr(glob, key)), key
    assert local.ess == glob.ess and local.khat_w == glob.khat_w
    assert local.log_norm2 == pytest.approx(glob.log_norm2, abs=1e-12)


def test_images_batched_in_one_pass_get_their_own_boxes_and_labels(one_thread):
    """Four images per forward pass give what one image per pass gives (same draws when N ≤ batch)."""
    model = _Tiny().eval()
    x0 = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 7, 3, 9])
    kw = dict(eps=0.1, n_samples=64, n_groups=8)
    together = loc.local_moments(model, x0, labels, batch_size=256, generator=torch.Generator().manual_seed(2), warn=False, **kw)
    apart = loc.local_moments(model, x0, labels, batch_size=64, generator=torch.Generator().manual_seed(2), warn=False, **kw)
    for a, b in zip(together.moments, apart.moments):
        assert torch.allclose(a.dx, b.dx, rtol=1e-5) and torch.allclose(a.dp, b.dp, rtol=1e-4, atol=1e-9)
    assert np.allclose(together.grad_l1_max, apart.grad_l1_max, rtol=1e-5)
    # each image's box is its own ε-ball: all of its sample means lie inside it
    for j, m in enumerate(together.moments):
        assert bool((m.mean_x >= m.box[0]).all() and (m.mean_x <= m.box[1]).all())
        assert torch.allclose(m.box[0].float(), (x0[j] - 0.1).clamp(0, 1))
    table = together.table()
    assert set(table) >= {"dx", "dp", "product", "mean_boundary", "grad_l1_max", "reliable"}
    assert table["dx"].shape == (5,) and np.all(table["dx"] > 0)
    # a flat ψ on a box of widths h has Δx_i = h_i/√12; a local ψ is near flat, so Δx is close to it
    h = (together.moments[0].box[1] - together.moments[0].box[0]).flatten()
    assert float((together.moments[0].dx.flatten() / (h / 12**0.5)).mean()) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("kw, match", [
    (dict(eps=0.0), "eps"), (dict(eps=-0.1), "eps"), (dict(eps=float("nan")), "eps"),
    (dict(n_samples=1), "n_samples"), (dict(n_groups=1), "n_groups"),
])
def test_bad_arguments_name_themselves(kw, match):
    model = _Tiny().eval()
    args = dict(eps=0.1, n_samples=16) | kw
    with pytest.raises(ValueError, match=match):
        loc.local_moments(model, torch.rand(2, 1, 6, 6), torch.tensor([0, 1]), **args)


def test_images_outside_the_cube_and_bad_labels_are_refused():
    model = _Tiny().eval()
    with pytest.raises(ValueError, match="x0"):
        loc.local_moments(model, torch.full((1, 1, 6, 6), 1.5), torch.tensor([0]), eps=0.1, n_samples=8)
    with pytest.raises(ValueError, match="labels"):
        loc.local_moments(model, torch.rand(2, 1, 6, 6), torch.tensor([0]), eps=0.1, n_samples=8)
    with pytest.raises(ValueError, match="labels"):
        loc.local_moments(model, torch.rand(1, 1, 6, 6), torch.tensor([10]), eps=0.1, n_samples=8)
    with pytest.raises(TypeError, match="x0"):
        loc.local_moments(model, np.zeros((1, 1, 6, 6)), torch.tensor([0]), eps=0.1, n_samples=8)
    with pytest.raises(ValueError, match="lo and hi"):
        loc.box_moments(lambda x: x.sum(1), torch.zeros(2), torch.tensor([1.0, 0.0]), n_samples=8)


# ---------------------------------------------------------------------------------------------
# The tilted proposal (qnnlib.uncertainty.tilted): importance sampling of a local ψ²
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [-700.0, -30.0, -1.0, 0.0, 1e-12, 0.5, 30.0, 700.0])
def test_tilted_draws_invert_the_truncated_exponential_cdf_and_their_density_is_its_derivative(t):
    """z = F⁻¹(u) for F(z) = (e^{tz} − 1)/(e^t − 1), and q = F' — checked against F written out
    independently in log form (no overflow at |t| = 700), and q against a finite difference of u(z)."""
    u = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    z, log_q = tilt.tilted_sample(u[:, None], torch.tensor([t], dtype=torch.float64))
    z = z[:, 0]
    assert bool(((z >= 0) & (z <= 1)).all()) and bool((z[1:] >= z[:-1]).all())

    def cdf(z):
        if abs(t) < 1e-9:
            return z
        # log|e^{tz} − 1| − log|e^t − 1|, both by log|expm1| (exact for either sign of t)
        return torch.exp(tilt.log_expm1_abs(t * z) - tilt.log_expm1_abs(torch.tensor(t, dtype=torch.float64)))
    inner = (u > 0.01) & (u < 0.99)
    assert torch.allclose(cdf(z)[inner], u[inner], rtol=1e-9, atol=1e-12)
    h = 1e-7
    zh, _ = tilt.tilted_sample((u + h)[:, None], torch.tensor([t], dtype=torch.float64))
    dz_du = (zh[:, 0] - z) / h
    ok = inner & (dz_du > 1e-6)  # where z moves at all in float64 (|t| = 700 pins most of it)
    assert torch.allclose(log_q[ok], -dz_du[ok].log(), atol=1e-3)


def test_a_log_linear_loss_is_sampled_exactly_by_the_tilt_and_uniform_points_lose_the_closed_form_ess(one_thread):
    """A binary linear classifier far from its boundary has CE = log(1 + e^{s}) ≈ e^{s}, s = (w₁ − w₀)·x + b,
    so log l is linear with slope d = w₁ − w₀ and ψ² ∝ e^{2d·x}: the tilted proposal's weights are all
    equal (ESS = N), while uniform points keep ESS/N = Π_i tanh(d_i h_i)/(d_i h_i) (module docstring)."""
    g = torch.Generator().manual_seed(0)
    dim = 40
    model = nn.Linear(dim, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.cat([torch.zeros(1, dim), 1.5 * torch.randn(1, dim, generator=g)]).double())
        model.bias.copy_(torch.tensor([0.0, -60.0], dtype=torch.float64))  # CE ≈ e^{s} ≤ e^{−30}
    x0 = 0.3 + 0.4 * torch.rand(3, dim, generator=g, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    kw = dict(eps=0.1, n_samples=4096, batch_size=4096, warn=False)
    tilted = loc.local_moments(model, x0, y, sampler="tilted", generator=torch.Generator().manual_seed(1), **kw)
    uniform = loc.local_moments(model, x0, y, sampler="uniform", generator=torch.Generator().manual_seed(1), **kw)
    th = (model.weight[1] - model.weight[0]).detach() * 0.2  # t_i = d_i h_i, h = 2ε inside the cube
    closed = float((torch.tanh(th) / th).prod())
    for a, b in zip(tilted.moments, uniform.moments):
        assert a.ess / 4096 > 0.999  # exact up to the e^{−30} curvature of log(1 + e^s)
        # Kish's ESS of N uniform points is a ratio of sample moments: 10 % covers its spread at this ESS
        assert b.ess / 4096 == pytest.approx(closed, rel=0.1)
        assert closed < 0.5  # uniform points lose most of theirs here (and all but a few at 3× the slope)
        se = (a.dx_stderr**2 + b.dx_stderr**2).sqrt()
        assert bool(((a.dx_jk - b.dx_jk).abs() < 4 * se + 1e-12).all())


def test_adapted_rates_follow_the_slope_of_log_l():
    """For log l = d·x (linear) every pilot round returns r = 2d whatever it starts from."""
    d = torch.tensor([[3.0, -2.0, 0.0, 40.0]], dtype=torch.float64)

    def evaluate(x, image):
        return x @ d[image], d[image].expand(x.shape[0], -1)
    lo, width = torch.zeros(1, 4, dtype=torch.float64), torch.full((1, 4), 0.2, dtype=torch.float64)
    rates, history = tilt.adapt_rates(evaluate, lo, width, pilot=64, stages=2,
                                      generator=torch.Generator().manual_seed(0), batch=16)
    assert torch.allclose(rates, 2 * d) and len(history) == 2
    assert float(history[1][0]) == pytest.approx(64)  # the second round already samples ψ² exactly


def test_tilted_sampler_settings_are_checked():
    model = _Tiny().eval()
    x0, y = torch.rand(1, 1, 6, 6), torch.tensor([0])
    for kw, match in ((dict(sampler="sobol"), "sampler"), (dict(sampler="tilted", pilot=1), "pilot"),
                      (dict(sampler="tilted", stages=0), "stages")):
        with pytest.raises(ValueError, match=match):
            loc.local_moments(model, x0, y, eps=0.1, n_samples=16, **kw)
