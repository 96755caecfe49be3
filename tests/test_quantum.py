"""Tests of qnnlib.quantum: closed forms first, then an independent FFT cross-check, then errors."""

import numpy as np
import pytest

from qnnlib.quantum import (
    PACKETS,
    density_spread,
    gaussian_packet,
    half_sine_packet,
    make_packet,
    momentum_wavefunction,
    sech_packet,
    spreads,
    time_frequency_spreads,
    triangle_packet,
)

# Grid used by most tests: spacing h = 0.01, packets of width ≤ 2 are negligible at ±20
# (the Gaussian tail at 10σ is e^{-25} in ψ).
X = np.linspace(-20.0, 20.0, 4001)
H = X[1] - X[0]


@pytest.mark.parametrize("width", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("center", [-3.0, 0.0, 1.5])
def test_gaussian_reaches_one_half(width, center):
    result = spreads(X, gaussian_packet(X, center=center, width=width))
    # The fourth-order stencil errs by about (k h)^4 / 30 per mode; the Gaussian's momenta
    # are below 3/width ≤ 6, so the relative error is below (6 * 0.01)^4 / 30 ≈ 4e-7.
    assert result.product == pytest.approx(0.5, abs=1e-6)
    assert result.dx == pytest.approx(width, rel=1e-9)
    assert result.mean_x == pytest.approx(center, abs=1e-9)


def test_gaussian_error_shrinks_with_the_grid_spacing():
    errors = []
    for n in (101, 201, 401):
        x = np.linspace(-10, 10, n)
        errors.append(abs(spreads(x, gaussian_packet(x, width=0.7, k0=3.0)).product - 0.5))
    # Fourth order: halving h divides the error by about 16; ask for at least 8 to allow
    # the one-sided end stencils and round-off.
    assert errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8


@pytest.mark.parametrize("k0", [-4.0, 0.0, 2.5])
def test_modulated_gaussian_has_mean_momentum_k0_and_same_spread(k0):
    plain = spreads(X, gaussian_packet(X, width=1.0))
    moving = spreads(X, gaussian_packet(X, width=1.0, k0=k0))
    # Relative stencil error (k0 h)^4 / 30 ≤ 1e-8 for |k0| ≤ 4.
    assert moving.mean_p == pytest.approx(k0, abs=1e-6)
    assert moving.dp == pytest.approx(plain.dp, abs=1e-6)


def test_sine_on_unit_interval_matches_closed_form():
    x = np.linspace(0.0, 1.0, 2001)
    result = spreads(x, np.sqrt(2.0) * np.sin(np.pi * x))
    # Δx² = 1/12 − 1/(2π²), Δp = π: product π·sqrt(1/12 − 1/(2π²)) ≈ 0.5679.
    exact = np.pi * np.sqrt(1.0 / 12.0 - 1.0 / (2.0 * np.pi**2))
    assert exact == pytest.approx(0.5679, abs=1e-4)
    # Smooth inside, zero at the ends: only the one-sided end stencils are O(h²), h = 5e-4.
    assert result.product == pytest.approx(exact, abs=1e-6)
    assert result.dp == pytest.approx(np.pi, rel=1e-6)


def test_sech_matches_closed_form():
    assert spreads(X, sech_packet(X, width=1.0)).product == pytest.approx(np.pi / 6, abs=1e-6)


@pytest.mark.parametrize("shape", ["gaussian", "sech", "triangle", "half-sine"])
def test_each_packet_has_the_requested_position_spread(shape):
    # The product is scale-free, so it cannot see a wrong scale; Δx = width can.
    assert spreads(X, make_packet(shape, X, width=1.3)).dx == pytest.approx(1.3, rel=1e-3)


@pytest.mark.parametrize(
    "packet, exact",
    [(triangle_packet, np.sqrt(3.0 / 10.0)), (half_sine_packet, np.sqrt(np.pi**2 / 12 - 0.5))],
)
def test_kinked_packets_match_closed_forms(packet, exact):
    # A kink makes the derivative jump: the stencil is O(1) wrong on ~4 points out of the
    # packet's ~2a/h = 630 points, so ⟨p²⟩ is off by about 1% of that fraction; allow 1e-2·.
    result = spreads(X, packet(X, width=1.0))
    assert result.product == pytest.approx(exact, rel=1e-2)
    assert result.dx == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("shape", sorted(PACKETS))
def test_every_packet_respects_the_heisenberg_bound(shape):
    result = spreads(X, make_packet(shape, X, width=1.2, k0=1.0))
    assert result.product >= 0.5 - 1e-6
    if shape != "gaussian":
        # Only the Gaussian reaches the bound: the others are at least 2% above it.
        assert result.product > 0.51


def test_spreads_do_not_depend_on_normalisation_or_global_phase():
    psi = sech_packet(X, width=0.8, k0=1.0)
    a, b = spreads(X, psi), spreads(X, 3.7 * np.exp(0.3j) * psi)
    for name in ("mean_x", "dx", "mean_p", "dp"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12, abs=1e-12)


def test_momentum_wavefunction_agrees_with_derivative_spreads():
    psi = gaussian_packet(X, center=1.0, width=0.6, k0=2.0)
    p, phi = momentum_wavefunction(X, psi)
    density = np.abs(phi) ** 2
    # Parseval: ∫|φ|² dp = 1 (the FFT is exact for band-limited, decayed samples).
    assert np.trapezoid(density, p) == pytest.approx(1.0, abs=1e-9)
    mean_p, dp = density_spread(p, density)
    direct = spreads(X, psi)
    assert mean_p == pytest.approx(direct.mean_p, abs=1e-6)
    assert dp == pytest.approx(direct.dp, abs=1e-6)


def test_gaussian_transform_is_the_closed_form_gaussian():
    sigma = 0.8
    p, phi = momentum_wavefunction(X, gaussian_packet(X, width=sigma))
    # |φ(p)|² is a Gaussian of spread 1/(2σ): (2π s²)^{-1/2} exp(−p²/(2 s²)).
    s = 1 / (2 * sigma)
    exact = np.exp(-(p**2) / (2 * s**2)) / np.sqrt(2 * np.pi * s**2)
    assert np.max(np.abs(np.abs(phi) ** 2 - exact)) < 1e-9


def test_shifted_gaussian_transform_has_the_closed_form_phase():
    # ψ(x − c) ↦ e^{−ipc} φ₀(p), on a grid that does not start at a symmetric point, so a wrong
    # phase origin (x₀ instead of 0) shows; |φ|² alone cannot see it.
    x = np.linspace(-8.0, 12.0, 2001)
    sigma, c = 1.0, 1.5
    p, phi = momentum_wavefunction(x, gaussian_packet(x, center=c, width=sigma))
    exact = (2 * sigma**2 / np.pi) ** 0.25 * np.exp(-(sigma**2) * p**2) * np.exp(-1j * p * c)
    assert np.max(np.abs(phi - exact)) < 1e-8


def test_gaussian_pulse_reaches_the_time_frequency_bound():
    t = np.linspace(-40, 40, 8001)
    dt, dnu = time_frequency_spreads(t, np.exp(-(t**2) / 8 + 2j * np.pi * 0.7 * t))
    assert dt * dnu == pytest.approx(1 / (4 * np.pi), rel=1e-6)
    burst = np.where(np.abs(t) < 5, np.cos(np.pi * t / 10) ** 2, 0.0)
    dt_b, dnu_b = time_frequency_spreads(t, burst)
    assert dt_b * dnu_b > 1 / (4 * np.pi)


@pytest.mark.parametrize(
    "x, psi, match",
    [
        (np.array([0.0, 1.0, 3.0, 4.0, 5.0]), np.ones(5), "uniformly spaced"),
        (np.linspace(1, 0, 11), np.ones(11), "uniformly spaced"),
        (np.linspace(0, 1, 4), np.ones(4), "at least 5 points"),
        (np.zeros((3, 3)), np.ones((3, 3)), "1-D grid"),
        (np.linspace(0, 1, 11), np.ones(10), "psi must have the same shape"),
        (np.linspace(0, 1, 11), np.zeros(11), "psi is identically zero"),
        (np.linspace(0, 1, 11), np.r_[np.ones(10), np.nan], "psi must contain only finite"),
        (np.r_[np.linspace(0, 1, 10), np.inf], np.ones(11), "x must contain only finite"),
    ],
)
def test_bad_input_is_rejected_with_the_argument_named(x, psi, match):
    with pytest.raises(ValueError, match=match):
        spreads(x, psi)


def test_bad_packet_arguments_are_rejected():
    with pytest.raises(ValueError, match="shape must be one of"):
        make_packet("square", X)
    with pytest.raises(ValueError, match="width must be a finite real number in \\(0, inf\\)"):
        gaussian_packet(X, width=0.0)


@pytest.mark.parametrize("name", sorted(PACKETS))
@pytest.mark.parametrize(
    "kwargs, error, argument",
    [
        ({"width": float("nan")}, ValueError, "width"),
        ({"width": -1.0}, ValueError, "width"),
        ({"width": "1"}, TypeError, "width"),
        ({"center": float("inf")}, ValueError, "center"),
        ({"k0": float("nan")}, ValueError, "k0"),
        ({"k0": np.array([1.0, 2.0])}, TypeError, "k0"),
    ],
)
def test_every_packet_rejects_non_finite_or_non_scalar_parameters_naming_them(name, kwargs, error, argument):
    with pytest.raises(error, match=f"^{argument} must"):
        make_packet(name, X, **kwargs)


@pytest.mark.parametrize("make", [float, np.float32, np.float64, np.int64])
def test_numpy_scalar_parameters_give_the_same_packet(make):
    # 2 and 1 are exact in every type.
    assert np.array_equal(make_packet("sech", X, width=make(2), k0=make(1)), make_packet("sech", X, width=2.0, k0=1.0))


def test_packet_on_an_empty_or_non_finite_grid_is_rejected():
    with pytest.raises(ValueError, match="^x must"):
        gaussian_packet(np.array([]))
    with pytest.raises(ValueError, match="^x must"):
        gaussian_packet(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="shape must be one of"):
        make_packet(["gaussian"], X)
