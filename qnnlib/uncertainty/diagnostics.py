"""Diagnostics of the ratio estimator: effective sample sizes, Pareto k̂ and a warning (Chapter 5).

The Monte Carlo moments are ratios Σ w h / Σ w with weights w = l² (and, for <p_i²>, the
per-sample v = Σ_i g_i²). In hundreds of dimensions these weights are heavy-tailed: a few points
carry most of the sum, and then neither the estimate nor its error bar can be trusted. Two
numbers say when (Chapter 5):

* the effective sample size ``ESS = (Σ w)² / Σ w²`` (Kish), between 1 and N;
* the Pareto k̂ of the upper tail of the weights: the shape of a generalised Pareto
  distribution fitted to the largest ``min(0.2 N, 3 √N)`` weights, as in Pareto-smoothed
  importance sampling (PSIS). Weights with tail shape k have 1/k finite moments, so k ≥ ½
  means infinite variance of the weights, and k̂ > 0.7 means the estimate converges too slowly
  to be usable at any practical N.

The k̂ check is skipped when the tail it describes cannot move the estimate: bounded weights
whose largest values pile up just below a maximum (a plateau, as |∇ψ|² has where a softmax
output crosses ½) give exceedances that look heavy-tailed to the fit — k̂ of 1 to 9 with an ESS
close to N — although the whole tail exceeds its threshold by less than one average weight
(``tail_excess``; ``TAIL_MIN``). Truncating such a tail at its threshold, as truncated importance
sampling does (Ionides 2008), changes the estimate by less than one more sample would.

``UnreliableEstimateWarning`` is raised (a ``RuntimeWarning``; filter it with
``warnings.filterwarnings("ignore", category=UnreliableEstimateWarning)``) when an estimate
fails either check.

References: E. L. Ionides, "Truncated importance sampling", J. Comput. Graph. Stat. 17(2),
295–311 (2008); J. Zhang and M. A. Stephens, "A new and efficient estimation method for the
generalized Pareto distribution", Technometrics 51(3), 316–325 (2009); A. Vehtari, D. Simpson,
A. Gelman, Y. Yao and J. Gabry, "Pareto smoothed importance sampling", JMLR 25(72), 1–58 (2024),
arXiv:1507.02646.
"""

from __future__ import annotations

import math

import numpy as np
import torch

ESS_MIN = 100
"""Smallest effective sample size at which an estimate is called reliable.

Below ~100 effective points the delete-one-group jackknife (K = 32 groups of ≈ ESS/K effective
points each) no longer sees a Gaussian spread, the O(1/ESS) bias of a ratio estimator is
comparable to its standard error, and one new point can move the estimate by more than its
error bar. The value follows the PSIS practice of asking for ESS > 100 before trusting
Monte Carlo error estimates (Vehtari et al. 2024, §3)."""

KHAT_MAX = 0.7
"""Largest Pareto k̂ at which an estimate is called reliable.

Vehtari et al. (2024) show that the sample size needed for a useful estimate grows like
10^{1/(1−k)} (about 2,000 at k = 0.7, 10^10 at k = 0.9), so beyond 0.7 no practical N helps,
while the k̂ of the Zhang–Stephens fit remains a reliable diagnostic there; for k between ½ and
0.7 the variance of the weights is infinite but the estimate still converges, slowly. qnnlib adopts 0.7."""


TAIL_MIN = 1.0
"""Smallest tail excess (``tail_excess``, in average weights) at which a large Pareto k̂ counts.

Below it, the largest ``tail_length(N)`` weights exceed the next one by less than one average
weight in all: truncating them there (Ionides 2008) moves the ratio estimate less than adding or
removing one typical point, whatever shape a fit gives the tail. Genuinely heavy tails (k > ½)
carry a large share of the total weight in their largest values, far above this."""


class UnreliableEstimateWarning(RuntimeWarning):
    """A Monte Carlo estimate whose weights are too heavy-tailed to trust (ESS < ``ESS_MIN`` or
    Pareto k̂ > ``KHAT_MAX``). The numbers are still returned; draw more samples, or treat the
    estimate and its error bar as indicative only. Also available as ``qnnlib.UnreliableEstimateWarning``."""


def tail_length(n: int) -> int:
    """Number of largest weights the Pareto fit uses: ``ceil(min(0.2 n, 3 √n))`` (PSIS, r_eff = 1)."""
    return int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))


def _as_log_weights(weights, log: bool) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(weights) if not isinstance(weights, torch.Tensor) else weights)
    w = w.detach().to(torch.float64).flatten()
    if w.numel() == 0:
        raise ValueError("weights must hold at least one value")
    if log:
        if bool(torch.isnan(w).any() or (w == math.inf).any()):
            raise ValueError("log weights must be finite or −inf")
        return w
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must be finite and non-negative")
    return w.log()


def effective_sample_size(weights, *, log: bool = False) -> float:
    """Kish's effective sample size ``(Σ w)² / Σ w²`` of non-negative weights (1-D, any length).

    ``log=True`` takes log-weights (−inf for zero weights); the sums are taken relative to the
    largest weight, so weights of any magnitude (1e±300) give the same answer. Returns a float
    in [1, N]; nan if every weight is zero.
    """
    lw = _as_log_weights(weights, log)
    top = lw.max()
    if top == -math.inf:
        return math.nan
    a = (lw - top).exp()
    return float(a.sum() ** 2 / (a * a).sum())


def _gpd_shape(x: np.ndarray) -> float:
    """Shape k of a generalised Pareto distribution fitted to exceedances x (sorted ascending, > 0).

    The empirical-Bayes estimator of Zhang & Stephens (2009): a profile likelihood over a grid of
    m = 30 + √n values of θ = −k/σ, averaged with posterior weights, as used by PSIS, including
    PSIS's weakly informative prior that pulls k̂ towards ½ with the weight of 10 observations
    (Vehtari et al. 2024, appendix). Positive k: heavy (Pareto-like) tail with 1/k moments.
    """
    n = x.size
    m = 30 + int(math.sqrt(n))
    theta = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    theta = theta / (3.0 * x[int(n / 4 + 0.5) - 1]) + 1.0 / x[-1]  # all θ < 1/max(x): 1 − θx > 0
    k = np.log1p(-theta[:, None] * x).mean(axis=1)
    profile = n * (np.log(-theta / k) - k - 1.0)  # profile log-likelihood of each θ
    posterior = np.exp(profile - profile.max())
    theta_hat = float((theta * posterior).sum() / posterior.sum())
    k_hat = float(np.log1p(-theta_hat * x).mean())
    return (n * k_hat + 10 * 0.5) / (n + 10)


def _khat_from_top(top_log: torch.Tensor, n: int) -> float:
    """Pareto k̂ from the largest ``tail_length(n) + 1`` log-weights of n (any order)."""
    t = tail_length(n)
    top = top_log.to(torch.float64).sort(descending=True).values[: t + 1]
    if top.numel() < t + 1 or top[0] == -math.inf:
        return math.nan
    # Exceedances of the T largest over the (T+1)-th, relative to the largest (scale-free).
    x = ((top[:t] - top[0]).exp() - (top[t] - top[0]).exp()).numpy()[::-1]
    x = x[x > 0]
    if x.size < 5:  # too few distinct tail values for a fit (PSIS needs ≥ 5)
        return math.nan
    return _gpd_shape(np.ascontiguousarray(x))


def _tail_excess_from_top(top_log: torch.Tensor, n: int, log_total: float) -> float:
    """``tail_excess`` from the largest ``tail_length(n) + 1`` log-weights and log Σ w of all n."""
    t = tail_length(n)
    top = top_log.to(torch.float64).sort(descending=True).values[: t + 1]
    if top.numel() < t + 1 or top[0] == -math.inf or not math.isfinite(log_total):
        return math.nan
    excess = ((top[:t] - top[0]).exp() - (top[t] - top[0]).exp()).sum()
    return float(excess.log() + top[0] - log_total + math.log(n)) if excess > 0 else -math.inf


def tail_excess(weights, *, log: bool = False) -> float:
    """How far the tail that Pareto k̂ is fitted to reaches above its threshold, in average weights.

    ``log(Σ_{j<T} (w_(j) − w_(T)) / mean w)`` over the T = ``tail_length(N)`` largest weights
    w_(0) ≥ … ≥ w_(T−1) and the next one w_(T): the log of how many average weights truncating the
    tail at its threshold would remove (−inf if the tail is flat, nan with too few weights).
    Below log ``TAIL_MIN`` = 0 the k̂ check is not applied (``unreliable_reasons``): such a tail cannot
    move the estimate by as much as one sample. ``log=True`` takes log-weights.
    """
    lw = _as_log_weights(weights, log)
    n = lw.numel()
    top = lw.max()
    if top == -math.inf:
        return math.nan
    log_total = float(top + (lw - top).exp().sum().log())
    return _tail_excess_from_top(lw.topk(min(tail_length(n) + 1, n)).values, n, log_total)


def pareto_khat(weights, *, log: bool = False) -> float:
    """Pareto k̂ of the upper tail of N non-negative weights (PSIS diagnostic, Chapter 5).

    Fits a generalised Pareto distribution to the exceedances of the largest
    ``min(0.2 N, 3 √N)`` weights over the next one, by the Zhang & Stephens (2009) estimator with
    the prior of Vehtari et al. (2024). Scale-free; ``log=True`` takes log-weights. Returns a float:
    ≤ 0 for light (bounded or exponential) tails, about k for Pareto tails P(W > w) ∝ w^{−1/k};
    > ``KHAT_MAX`` = 0.7 flags weights whose variance is effectively infinite at this N. nan when
    the tail has fewer than 5 distinct values (N ≲ 25, or ties).
    """
    lw = _as_log_weights(weights, log)
    return _khat_from_top(lw.topk(min(tail_length(lw.numel()) + 1, lw.numel())).values, lw.numel())


def unreliable_reasons(ess_w: float, ess_p: float, khat_w: float, khat_p: float,
                       tail_w: float = math.nan, tail_p: float = math.nan) -> list[str]:
    """Which of the reliability checks (ESS, Pareto k̂) an estimate fails, as short phrases (empty when it passes).

    ``tail_w``, ``tail_p``: the ``tail_excess`` (log, in average weights) of the two weight sets; a
    k̂ above ``KHAT_MAX`` counts only when its tail's excess is at least ``TAIL_MIN`` (or unknown,
    nan). nan ESS or k̂ values (no tail to fit, or all-zero weights) fail no check.
    """
    reasons = []
    for name, ess in (("ESS of w = l²", ess_w), ("ESS of Σ_i g_i²", ess_p)):
        if ess < ESS_MIN:
            reasons.append(f"{name} = {ess:.3g} < {ESS_MIN}")
    for name, khat, tail in (("Pareto k̂ of w", khat_w, tail_w), ("Pareto k̂ of Σ_i g_i²", khat_p, tail_p)):
        if khat > KHAT_MAX and not tail < math.log(TAIL_MIN):
            reasons.append(f"{name} = {khat:.2f} > {KHAT_MAX}")
    return reasons
