"""The boundary terms B_i of the uncertainty relation on a box, from the faces of Ω (Chapter 4).

The volume form B_i = 1 + 2∫(x_i − <x_i>) ψ ∂_iψ dX comes with every estimate of the moments
(:class:`~qnnlib.uncertainty.Moments`); integration by parts turns it into the face form
∮ (x_i − <x_i>) ψ² n_i dS, evaluated here from values of ψ on the faces alone.
"""

from __future__ import annotations

import math

import torch

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
