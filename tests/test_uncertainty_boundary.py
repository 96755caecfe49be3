"""Tests of the face form of the boundary terms (qnnlib.uncertainty.boundary.face_boundary_mc):
the closed forms of SPEC §2 on [0, 1], a separable case in ten dimensions whose B_i is known by
exact quadrature, and a two-input network against the exact volume form (integration by parts).
"""

import math
import warnings

import pytest
import torch
from torch import nn

from qnnlib.uncertainty import (
    UnreliableEstimateWarning,
    face_boundary_mc,
    grid_moments,
    moments,
    neural_amplitude,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def volume(amplitude, shape, n=4000, seed=0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableEstimateWarning)
        return moments(amplitude, shape, n_samples=n, generator=seeded(seed), dtype=torch.float64, **kw)


def test_face_form_closed_forms_on_the_unit_interval():
    # In one dimension a face is a point, so the face form is exact given N² and <x>:
    # √2 sin(πx) vanishes at 0 and 1 (B = 0); ψ = 1 gives B = (1 − <x>) + <x> = 1 for any <x>;
    # a Gaussian of σ = 0.05 at ½ gives B = e^{−1/(8σ²)}/(σ√(2π)) ≈ 1.5e-21, i.e. 0.
    sine = volume(lambda x: math.sqrt(2.0) * torch.sin(math.pi * x[:, 0]), (1,))
    b = face_boundary_mc(lambda x: math.sqrt(2.0) * torch.sin(math.pi * x[:, 0]), sine, n_face=4,
                         generator=seeded(1), dtype=torch.float64)
    assert abs(float(b.boundary)) < 1e-30
    constant = volume(lambda x: torch.ones(x.shape[0], dtype=x.dtype), (1,))
    b = face_boundary_mc(lambda x: torch.ones(x.shape[0], dtype=x.dtype), constant, n_face=4, dtype=torch.float64)
    assert float(b.boundary) == pytest.approx(1.0, abs=1e-12) and float(b.mean_p) == 0.0

    def gaussian(x):
        return torch.exp(-((x[:, 0] - 0.5) ** 2) / (4 * 0.05**2))

    b = face_boundary_mc(gaussian, volume(gaussian, (1,)), n_face=4, dtype=torch.float64)
    expected = math.exp(-1 / (8 * 0.05**2)) / (0.05 * math.sqrt(2 * math.pi))
    # N² from 4000 points: ESS ≈ 700, so N² is known to ≈ 4%; allow 20%.
    assert float(b.boundary) == pytest.approx(expected, rel=0.2)


def test_face_form_matches_the_exact_boundary_terms_of_a_separable_psi_in_ten_dimensions():
    # ψ = Π_i (1 + x_i/2): every coordinate has the B of the 1-D factor (exact by quadrature).
    exact = grid_moments(lambda x: 1 + 0.5 * x[:, 0], (1,), points_per_dim=20)
    vol = volume(lambda x: (1 + 0.5 * x).prod(1), (10,), n=20_000)
    faces = face_boundary_mc(lambda x: (1 + 0.5 * x).prod(1), vol, n_face=512, generator=seeded(1),
                             dtype=torch.float64)
    assert faces.boundary.shape == (10,) and faces.coordinates.tolist() == list(range(10))
    # 4 standard errors per coordinate (10 coordinates: a correct estimator fails w.p. ≈ 6e-4).
    assert bool(((faces.boundary - exact.boundary).abs() < 4 * faces.boundary_stderr).all())
    assert bool(((faces.mean_p - exact.mean_p).abs() < 4 * faces.mean_p_stderr).all())
    # The error bars are not vacuous: below 5% of B.
    assert bool((faces.boundary_stderr < 0.05 * exact.boundary).all())


@pytest.mark.parametrize("seed", [0, 1])
def test_face_form_equals_the_volume_form_for_a_two_input_network(seed):
    # Integration by parts: the face form, with N² and <x> from exact quadrature, must reproduce
    # the exact volume form 1 + 2∫(x − <x>)ψ∂ψ; and with Monte Carlo normalisation, the Monte
    # Carlo volume form within the combined error. The box [−½, 3/2] (side 2) checks that the face
    # area (b − a)^{M−1} and the volume |Ω| enter the normalisation.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)).double()
        for p in net.parameters():
            p.data.mul_(3.0)
    amplitude = neural_amplitude(net.eval(), seed)
    exact = grid_moments(amplitude, (2,), points_per_dim=80, low=-0.5, high=1.5)
    faces = face_boundary_mc(amplitude, exact, n_face=4000, generator=seeded(seed), dtype=torch.float64)
    assert bool(((faces.boundary - exact.boundary).abs() < 4 * faces.boundary_stderr).all())
    assert torch.equal(faces.volume_boundary, exact.boundary.flatten())
    vol = volume(amplitude, (2,), n=20_000, seed=seed, low=-0.5, high=1.5)
    faces = face_boundary_mc(amplitude, vol, n_face=4000, generator=seeded(seed + 10), dtype=torch.float64)
    both = (faces.boundary_stderr**2 + faces.volume_boundary_stderr**2).sqrt()
    assert bool(((faces.boundary - faces.volume_boundary).abs() < 4 * both).all())


def test_face_form_of_a_subset_of_coordinates_and_bad_input():
    def amplitude(x):
        return (1 + 0.5 * x).flatten(1).prod(1)

    vol = volume(amplitude, (2, 3), n=2000)
    faces = face_boundary_mc(amplitude, vol, coordinates=[4, 1], n_face=64, generator=seeded(0), dtype=torch.float64)
    assert faces.coordinates.tolist() == [4, 1]
    assert torch.equal(faces.volume_boundary, vol.boundary.flatten()[[4, 1]])
    with pytest.raises(ValueError, match="coordinates"):
        face_boundary_mc(amplitude, vol, coordinates=[6], n_face=8)
    with pytest.raises(ValueError, match="n_face"):
        face_boundary_mc(amplitude, vol, n_face=1)
    with pytest.raises(ValueError, match="volume"):
        face_boundary_mc(amplitude, None, n_face=8)
