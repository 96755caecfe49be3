"""A classifier with two inputs: a neural wave function small enough to look at (Chapters 3–4).

Three (by default) Gaussian blobs of points in the unit square Ω = [0, 1]², one per class, and a
small tanh network trained on them with full-batch Adam. With two inputs, ψ_Y(x₁, x₂) and its
attack field ∇ψ_Y can be drawn as pictures, and every integral of :mod:`qnnlib.uncertainty` can
be computed exactly by :func:`~qnnlib.uncertainty.grid_moments`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks


def make_toy_data(n_per_class: int = 100, *, n_classes: int = 3, radius: float = 0.28, spread: float = 0.08,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs in [0, 1]²: class k is centred at angle 2πk/K on a circle around (½, ½).

    Returns ``x`` float32 (K·n_per_class, 2) clamped to [0, 1] and ``y`` int64 with values 0..K−1
    (each class ``n_per_class`` times). ``spread`` is the standard deviation of each blob.
    """
    n_per_class = _checks.integer(n_per_class, "n_per_class", low=1)
    n_classes = _checks.integer(n_classes, "n_classes", low=2)
    # (0, 0.5): the centres lie inside the square.
    radius = _checks.real(radius, "radius", low=0, high=0.5, low_open=True, high_open=True)
    spread = _checks.real(spread, "spread", low=0, low_open=True)
    seed = _checks.integer(seed, "seed")
    generator = torch.Generator().manual_seed(seed)
    angles = 2 * math.pi * torch.arange(n_classes) / n_classes
    centres = 0.5 + radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), 2, generator=generator)
    return x.clamp(0.0, 1.0).float(), y


def toy_classifier(n_classes: int = 3, *, hidden: int = 32, seed: int = 0) -> nn.Sequential:
    """2 → hidden → hidden → n_classes logits with tanh activations, initialised from ``seed``.

    Tanh (not ReLU) keeps ψ smooth, so that grid quadrature converges fast and the pictures of
    Chapter 3 have no creases; the global random state is left untouched.
    """
    n_classes = _checks.integer(n_classes, "n_classes", low=2)
    hidden = _checks.integer(hidden, "hidden", low=1)
    seed = _checks.integer(seed, "seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(2, hidden), nn.Tanh(),
            nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, n_classes),
        )


def train_toy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 400, lr: float = 0.02) -> list[float]:
    """Full-batch Adam on the mean cross-entropy for ``steps`` steps; returns the loss per step.

    The model is trained in place and left in eval mode. It runs on one thread: the tensors are
    tiny, and an OpenMP team only adds barrier stalls (30× slower on a busy 2-core machine).
    x: finite float (N, 2); y: int labels (N,) in 0..K−1 for the model's K outputs. Raises
    ``FloatingPointError`` if the final loss is NaN or inf (``lr`` too large).
    """
    steps = _checks.integer(steps, "steps", low=1)
    lr = _checks.real(lr, "lr", low=0, low_open=True)
    _checks.float_batch(x, "x", ndim=2)
    y_range = _checks.labels(y, "y", n=x.shape[0])
    with torch.no_grad():
        _checks.labels_below(y_range, model(x[:1]).shape[-1], "y")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"training diverged: final loss {losses[-1]}; lower lr")
    finally:
        torch.set_num_threads(threads)
        model.eval()
    return losses
