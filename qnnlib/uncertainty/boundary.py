"""The boundary terms B_i of the uncertainty relation on a box, from the faces of Ω (Chapter 4).

The volume form B_i = 1 + 2∫(x_i − <x_i>) ψ ∂_iψ dX comes with every estimate of the moments
(:class:`~qnnlib.uncertainty.Moments`); integration by parts turns it into the face form
∮ (x_i − <x_i>) ψ² n_i dS, evaluated here from values of ψ on the faces alone: by quadrature in
one or two dimensions (:func:`face_boundary_terms`) and by Monte Carlo on the faces in any
dimension (``face_boundary_mc``), the comparison that tests integration by parts (Chapter 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .estimator import Moments
from .grid import grid_moments, quadrature_nodes
from .wave_function import Amplitude, _check_box, _check_positive_int, _check_shape


def face_boundary_terms(amplitude: Amplitude, input_shape, *, points_per_dim: int, low: float = 0.0,
                        high: float = 1.0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """B_i and <p_i> from their *surface* forms, for M = 1 or 2 inputs (Chapter 4).

    Integration by parts turns two volume integrals into integrals over the faces of Ω::

        B_i   = ∮ (x_i − <x_i>) ψ² n_i dS = ∫ [(high − <x_i>) ψ²|_{x_i=high} + (<x_i> − low) ψ²|_{x_i=low}] dS
        <p_i> = ½ ∮ ψ² n_i dS          = ½ ∫ [ψ²|_{x_i=high} − ψ²|_{x_i=low}] dS

    This evaluates them from values of ψ on the faces alone — no derivatives — with the
    normalisation and <x_i> taken from :func:`grid_moments`; it is the independent check of the
    volume forms that the Monte Carlo estimator uses. Returns ``(boundary, mean_p)``, float64
    tensors of ``input_shape``.
    """
    shape = _check_shape(input_shape)
    m = math.prod(shape)
    if m > 2:
        raise ValueError(f"face_boundary_terms handles 1 or 2 input dimensions; input_shape {shape} has {m}")
    points = _check_positive_int("points_per_dim", points_per_dim, 2)
    low, high = _check_box(low, high)
    volume = grid_moments(amplitude, shape, points_per_dim=points, low=low, high=high, dtype=dtype)
    nodes, weights = quadrature_nodes(points, low, high)
    # N² = ∫ l² dX on the same Gauss grid (grid_moments only keeps ratios).
    if m == 1:
        grid, q = nodes.unsqueeze(1), weights
    else:
        a, b = torch.meshgrid(nodes, nodes, indexing="ij")
        grid, q = torch.stack([a.flatten(), b.flatten()], 1), torch.outer(weights, weights).flatten()

    def values(x):
        with torch.no_grad():
            return amplitude(x.reshape(-1, *shape).to(dtype)).double()

    norm2 = (q * values(grid) ** 2).sum()
    mean_x = volume.mean_x.flatten()
    boundary = torch.empty(m, dtype=torch.float64)
    mean_p = torch.empty(m, dtype=torch.float64)
    for i in range(m):
        faces = []
        for edge in (low, high):
            if m == 1:
                face, face_q = torch.tensor([[edge]], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
            else:
                face = torch.empty(points, 2, dtype=torch.float64)
                face[:, i], face[:, 1 - i] = edge, nodes
                face_q = weights
            faces.append((face_q * values(face) ** 2).sum() / norm2)  # ∫_face ψ² dS
        at_low, at_high = faces
        boundary[i] = (high - mean_x[i]) * at_high + (mean_x[i] - low) * at_low
        mean_p[i] = (at_high - at_low) / 2
    return boundary.reshape(shape), mean_p.reshape(shape)


@dataclass(frozen=True, eq=False)
class FaceBoundary:
    """Face-form estimates of B_i and <p_i> for a set of coordinates (Chapter 5).

    Attributes: ``coordinates`` (c,) int64 flat indices into the input; ``boundary``,
    ``boundary_stderr``, ``mean_p``, ``mean_p_stderr`` (c,) float64; ``volume_boundary`` and
    ``volume_boundary_stderr`` (c,): the volume form of the same coordinates, from the
    :class:`~qnnlib.uncertainty.Moments` used for the normalisation, for comparison;
    ``n_face`` points per face.
    """

    coordinates: torch.Tensor
    boundary: torch.Tensor
    boundary_stderr: torch.Tensor
    mean_p: torch.Tensor
    mean_p_stderr: torch.Tensor
    volume_boundary: torch.Tensor
    volume_boundary_stderr: torch.Tensor
    n_face: int


def _log_values(amplitude: Amplitude, x: torch.Tensor) -> torch.Tensor:
    """log l at x (float64), through the amplitude's log form when it has one; no gradients."""
    with torch.no_grad():
        log_form = getattr(amplitude, "log", None)
        values = log_form(x) if callable(log_form) else amplitude(x).log()
    values = values.to(torch.float64).cpu()
    if values.shape != (x.shape[0],) or bool(torch.isnan(values).any() or (values == math.inf).any()):
        raise ValueError("amplitude must map a batch to finite, non-negative values of shape (B,)")
    return values


def face_boundary_mc(amplitude: Amplitude, volume: Moments, *, coordinates=None, n_face: int = 512,
                     batch_size: int | None = None, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device=None) -> FaceBoundary:
    """B_i and <p_i> from the faces of Ω by Monte Carlo, for any number of inputs (Chapter 5).

    The face forms (integration by parts of the volume forms; Chapter 4), on Ω = [a, b]^M::

        B_i   = ∫_{faces ⊥ i} (x_i − <x_i>) ψ² n_i dS = ((b − <x_i>) F_i(b) + (<x_i> − a) F_i(a)) / N²
        <p_i> = ½ ∫_{faces ⊥ i} ψ² n_i dS          = (F_i(b) − F_i(a)) / (2 N²)

    with F_i(t) = ∫ l² dS over the face x_i = t = (b − a)^{M−1} · E[l²(X)], X uniform on that
    face (the other coordinates uniform in [a, b]). ``n_face`` points per coordinate are drawn
    once and used on both faces (common random numbers). N² and <x_i> are not re-estimated:
    they come from ``volume``, the Monte Carlo (or grid) estimate of the same amplitude on the
    same box, whose N² = |Ω|·mean(l²) (``volume.log_norm2``) normalises F consistently: both are
    integrals of the same l², over a face and over the box.

    Error bar: the standard error of the face average (the spread of the per-point face
    integrand over √n_face), the relative error of N², sqrt(1/ESS − 1/N) from ``volume``, and
    the error of <x_i> through ∂B_i/∂<x_i> = −2<p_i>, combined as independent (they come from
    independent points; the covariance of N² and <x_i> within ``volume`` is neglected). Compare
    with the volume form B_i of ``volume``: the two agree within their errors if integration by
    parts holds, i.e. if the estimator (and autograd's ∇ψ) is right; a ReLU network is fine.

    Parameters: ``amplitude`` as for :func:`~qnnlib.uncertainty.moments` (a ``log`` form is
    used when present; no gradients are taken); ``volume`` a :class:`Moments` of it;
    ``coordinates`` flat indices (default all M); ``batch_size`` points per forward pass
    (default :func:`~qnnlib.uncertainty.default_batch_size`); ``dtype``, ``device`` of the points.
    Returns a :class:`FaceBoundary`. Cost: 2 · n_face forward passes per coordinate, no backward.
    """
    from .monte_carlo import default_batch_size  # monte_carlo imports nothing from here

    if not isinstance(volume, Moments) or volume.box is None or not math.isfinite(volume.log_norm2):
        raise ValueError("volume must be a Moments from moments()/neural_moments()/grid_moments() of this amplitude")
    shape = tuple(volume.dx.shape)
    m = math.prod(shape)
    low, high = volume.box
    if coordinates is None:
        coordinates = torch.arange(m)
    coordinates = torch.as_tensor(coordinates, dtype=torch.long).flatten()
    if coordinates.numel() == 0 or bool((coordinates < 0).any() or (coordinates >= m).any()):
        raise ValueError(f"coordinates must be flat indices in 0..{m - 1}")
    n = _check_positive_int("n_face", n_face, 2)
    batch_size = _check_positive_int("batch_size", batch_size or default_batch_size(m, device), 1)
    mean_x = volume.mean_x.flatten()[coordinates]
    per_chunk = max(1, batch_size // (2 * n))
    log_faces = []  # (c, 2, n): log l on the faces x_i = low and x_i = high
    for chunk in coordinates.split(per_chunk):
        u = torch.rand(chunk.numel(), n, m, generator=generator, dtype=torch.float64).mul_(high - low).add_(low)
        x = u.unsqueeze(1).repeat(1, 2, 1, 1)  # (cc, 2, n, m)
        rows = torch.arange(chunk.numel())
        x[rows, 0, :, chunk] = low
        x[rows, 1, :, chunk] = high
        x = x.reshape(-1, *shape).to(dtype)
        values = torch.cat([_log_values(amplitude, x[s:s + batch_size].to(device))
                            for s in range(0, x.shape[0], batch_size)])
        log_faces.append(values.reshape(chunk.numel(), 2, n))
    log_l2 = 2.0 * torch.cat(log_faces)
    top = log_l2.amax(dim=(1, 2), keepdim=True).clamp_min(-1e300)  # all-zero faces: shift 0
    f = (log_l2 - top).exp()  # l² on the faces, relative to the largest per coordinate
    # F_i(t) / N² = (b − a)^{M−1} E[l²] / N², in logs so that no factor over- or underflows.
    scale = (top.squeeze(2).squeeze(1) + (m - 1) * math.log(high - low) - volume.log_norm2).exp()
    lo, hi = f[:, 0], f[:, 1]
    t = (high - mean_x).unsqueeze(1) * hi + (mean_x - low).unsqueeze(1) * lo  # B integrand per point
    s = (hi - lo) / 2
    boundary, mean_p = scale * t.mean(1), scale * s.mean(1)
    face_se_b, face_se_p = scale * t.std(1) / math.sqrt(n), scale * s.std(1) / math.sqrt(n)
    ess, n_vol = volume.ess, volume.n_samples
    rel_norm = math.sqrt(max(1.0 / ess - 1.0 / n_vol, 0.0)) if volume.sampler != "grid" else 0.0
    x_se = volume.mean_x_stderr.flatten()[coordinates]
    boundary_se = (face_se_b**2 + (boundary * rel_norm) ** 2 + (2 * mean_p * x_se) ** 2).sqrt()
    mean_p_se = (face_se_p**2 + (mean_p * rel_norm) ** 2).sqrt()
    return FaceBoundary(coordinates, boundary, boundary_se, mean_p, mean_p_se,
                        volume.boundary.flatten()[coordinates], volume.boundary_stderr.flatten()[coordinates], n)
