"""An exponentially tilted proposal on a box: importance sampling of a local ψ² (Chapter 10).

Around a test image that the network classifies with confidence, the loss on a small box Ω is
roughly l(X) ≈ e^{−margin(X)}, and the margin changes by several units across Ω. Then
ψ² ∝ l² = e^{2 log l} varies over many orders of magnitude, and uniform points put almost all
of them where ψ² is negligible: for a log-linear loss log l = c + d·X on a box of widths h_i,
the effective sample size of uniform points is

    ESS / N = Π_i tanh(t_i) / t_i,   t_i = d_i h_i,

which is below 10⁻⁸ on the recorded MNIST CNN3 around a confident digit at ε = 0.1. The proposal
here follows the slope instead: a product of truncated exponentials, one per coordinate,

    q(X) = Π_i r_i e^{r_i (x_i − lo_i)} / (e^{r_i h_i} − 1),   X ∈ Π_i [lo_i, lo_i + h_i],

exact for a log-linear ψ² with rates r = 2d (every importance weight ψ²/q is then the same).
Rates r = 0 give the uniform distribution. The estimates stay those of the same integrals: every
point carries the importance weight 1/q(X) (the ratio estimators of :mod:`.estimator` take it
as a quadrature weight), so only their variance changes.

The rates of a network are adapted, per image, from pilot points that are then discarded:
``stages`` rounds, the first uniform, each later one drawn from the rates the previous round
gave. A round sets r = 2 Σ_n ω_n ∇ log l(X_n), the mean slope of log l under the pilot's
importance weights ω ∝ (ψ²/q)^β, tempered (β = 1, ½, ¼, … until their ESS reaches a quarter of
the pilot) so that a few heavy points do not make the slope noisy. The final points are drawn
independently of the pilot, so the pilot's choices cannot bias the estimate.
"""

from __future__ import annotations

import math

import torch

from .diagnostics import effective_sample_size

# Below this |t| = |r h| a coordinate is drawn uniformly (the tilt changes z by less than |t|/2).
FLAT = 1e-9


def log_expm1_abs(t: torch.Tensor) -> torch.Tensor:
    """log |e^t − 1| for any real t without overflow (t = 0 gives −inf)."""
    pos = t.clamp_min(1e-300)
    neg = t.clamp_max(-1e-300)
    return torch.where(t > 0, pos + torch.log(-torch.expm1(-pos)), torch.log(-torch.expm1(neg)))


def tilted_sample(u: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map uniform ``u`` (..., M) in [0,1) to z with density ∝ e^{t_i z_i} on [0,1]^M, and log q(z).

    ``t`` (M,) or broadcastable, float64: the tilts t_i = r_i h_i of the unit cube. The inverse
    CDF z = log(1 + u(e^t − 1))/t, evaluated as 1 + log(u + (1 − u)e^{−t})/t for t > 0 so that
    it never overflows; |t| < ``FLAT`` gives z = u. Returns (z, log q) with log q (...,) the log
    density on the unit cube: Σ_i log(t_i / (e^{t_i} − 1)) + t_i z_i.
    """
    u = u.to(torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64)
    flat = t.abs() < FLAT
    ts = torch.where(flat, torch.ones_like(t), t)
    up = 1.0 + torch.log(u + (1.0 - u) * torch.exp(-ts.clamp_min(0.0))) / ts
    down = torch.log1p(u * torch.expm1(ts.clamp_max(0.0))) / ts
    z = torch.where(flat, u, torch.where(ts > 0, up, down)).clamp(0.0, 1.0)
    log_norm = torch.where(flat, torch.zeros_like(t), torch.log(ts.abs()) - log_expm1_abs(ts))
    log_q = (log_norm + torch.where(flat, torch.zeros_like(t), ts) * z).sum(-1)
    return z, log_q


def tempered_slope(log_w: torch.Tensor, grad: torch.Tensor, *, min_fraction: float = 0.25) -> torch.Tensor:
    """Σ_n ω_n grad_n with ω ∝ w^β, β the largest of 1, ½, ¼, … (down to 2⁻¹⁰) whose ESS ≥ min_fraction · n.

    ``log_w`` (n,) log importance weights ψ²/q of the pilot points, ``grad`` (n, M) their ∇ log l.
    Returns (M,) float64.
    """
    n = log_w.numel()
    beta = 1.0
    while beta > 2.0**-10 and effective_sample_size(beta * log_w, log=True) < min_fraction * n:
        beta /= 2
    weights = torch.softmax(beta * log_w.to(torch.float64), 0)
    return weights @ grad.to(torch.float64)


def adapt_rates(evaluate, lo: torch.Tensor, width: torch.Tensor, *, pilot: int, stages: int,
                generator: torch.Generator | None, batch: int) -> tuple[torch.Tensor, list]:
    """Rates r (k, M) of the tilted proposal for k boxes, adapted from ``stages`` pilot rounds.

    ``evaluate(x, image)`` maps points x (c, M) float64 of box ``image`` to (log l (c,), ∇ log l
    (c, M)) float64; ``lo``, ``width`` (k, M) float64 describe the boxes; ``pilot`` points per
    image and round, drawn in batches of ``batch`` from ``generator``. Returns the rates and, per
    round, the (k,) effective sample sizes of the pilot's importance weights (a record of how
    well each round's proposal fitted).
    """
    k, m = lo.shape
    rates = torch.zeros(k, m, dtype=torch.float64)
    history = []
    log_width = width.log().sum(1)
    for _ in range(stages):
        ess = torch.empty(k, dtype=torch.float64)
        new = torch.empty_like(rates)
        for j in range(k):
            t = rates[j] * width[j]
            log_w, grads = [], []
            for start in range(0, pilot, batch):
                c = min(batch, pilot - start)
                z, log_q = tilted_sample(torch.rand(c, m, generator=generator, dtype=torch.float64), t)
                log_l, g = evaluate(lo[j] + width[j] * z, j)
                log_w.append(2.0 * log_l - (log_q - log_width[j]))
                grads.append(g)
            log_w, grads = torch.cat(log_w), torch.cat(grads)
            ess[j] = effective_sample_size(log_w, log=True) if bool(torch.isfinite(log_w).any()) else math.nan
            new[j] = 2.0 * tempered_slope(torch.where(torch.isfinite(log_w), log_w, -math.inf), grads)
        rates = new
        history.append(ess)
    return rates, history
