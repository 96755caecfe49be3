"""The neural wave function and its moments: Δx, Δp and the boundary terms (Chapters 3–5).

Fix a classifier ``f`` and a label Y. The loss ``l_Y(X) = CE(f(X), Y) ≥ 0`` on the input box
Ω = [low, high]^M, normalised, is the *neural wave function* (Chapter 3)::

    ψ_Y(X) = l_Y(X) / N_Y,      N_Y² = ∫_Ω l_Y(X)² dX.

Per input coordinate i (Chapter 4)::

    <x_i> = ∫ x_i ψ² dX                 Δx_i² = ∫ (x_i − <x_i>)² ψ² dX
    <p_i> = ∫ ψ ∂_iψ dX                 Δp_i² = ∫ (∂_iψ)² dX − <p_i>²
    B_i   = 1 + 2 ∫ (x_i − <x_i>) ψ ∂_iψ dX     (= the boundary integral ∮ (x_i − <x_i>) ψ² n_i dS)

and integration by parts plus Cauchy–Schwarz give ``Δx_i Δp_i ≥ |1 − B_i| / 2``; the textbook
1/2 needs B_i = 0, i.e. ψ vanishing on the faces of Ω normal to i, which a loss does not do.

Two estimators of these integrals share one set of formulas (Chapter 5). With w = l², g = ∇_X l
and positive weights q (q = 1 for Monte Carlo, quadrature weights for a grid)::

    <x> ≈ Σ q w x / Σ q w        Δx² ≈ Σ q w (x − <x>)² / Σ q w
    <p> ≈ Σ q l g / Σ q w        <p²> ≈ Σ q g² / Σ q w
    B   ≈ 1 + 2 Σ q l g (x − <x>) / Σ q w

The unknown N_Y cancels in every ratio, and so does the volume of Ω. These estimates satisfy
``Δx_i Δp_i ≥ |1 − B_i|/2`` *exactly* (up to rounding) for any positive weights, because the
proof is Cauchy–Schwarz for the weighted sum itself: an estimate that breaks the bound is a bug,
never noise.

The package is split by concept; everything is importable from ``qnnlib.uncertainty``:

* ``wave_function`` — amplitudes: :func:`neural_amplitude`, l and ∇l in one backward pass;
* ``estimator`` — the weighted sums (in the log domain), the ratios, their jackknife
  bias corrections and standard errors (:class:`Moments`, ``jackknife``);
* ``diagnostics`` — effective sample sizes, Pareto k̂ and ``UnreliableEstimateWarning``;
* ``monte_carlo`` — :func:`moments` (uniform or scrambled Sobol points) for any amplitude
  ``X ↦ l(X) ≥ 0``; :func:`neural_moments`, :func:`mean_neural_moments` for a model's cross-entropy;
* ``grid`` — :func:`grid_moments`, tensor-product Gauss–Legendre quadrature in 1 or 2
  dimensions, the reference the Monte Carlo estimator is tested against; :func:`wave_function_grid`;
* ``boundary`` — the boundary terms B_i from the faces of Ω: :func:`face_boundary_terms`
  (quadrature, 1–2 inputs) and ``face_boundary_mc`` (Monte Carlo, any number of inputs);
* ``local`` — local wave functions on the L∞ ball around a test image, ∩ the pixel cube
  (:func:`local_moments`, :func:`local_box`; Chapter 10), with the tilted importance sampler of
  ``tilted``.
"""

from .boundary import FaceBoundary, face_boundary_mc, face_boundary_terms
from .diagnostics import (
    ESS_MIN,
    KHAT_MAX,
    TAIL_MIN,
    UnreliableEstimateWarning,
    effective_sample_size,
    pareto_khat,
    tail_excess,
)
from .estimator import BOUND_RTOL, FORMS, Moments, combine_stderr, jackknife
from .grid import RULES, grid_moments, quadrature_nodes, wave_function_grid
from .local import LOCAL_SAMPLERS, LocalMoments, local_box, local_moments
from .monte_carlo import (
    SAMPLERS,
    SOBOL_MAX_DIM,
    ClassMean,
    default_batch_size,
    mean_aggregate,
    mean_neural_moments,
    moments,
    neural_moments,
)
from .wave_function import Amplitude, log_cross_entropy, neural_amplitude

__all__ = [
    "Amplitude", "BOUND_RTOL", "ClassMean", "ESS_MIN", "FORMS", "KHAT_MAX", "Moments", "RULES", "SAMPLERS",
    "SOBOL_MAX_DIM", "TAIL_MIN", "UnreliableEstimateWarning", "combine_stderr", "default_batch_size", "effective_sample_size",
    "FaceBoundary", "face_boundary_mc", "LOCAL_SAMPLERS", "LocalMoments", "local_box", "local_moments",
    "jackknife", "log_cross_entropy", "pareto_khat", "face_boundary_terms", "grid_moments", "mean_aggregate", "mean_neural_moments",
    "moments", "neural_amplitude", "neural_moments", "quadrature_nodes", "tail_excess", "wave_function_grid",
]
