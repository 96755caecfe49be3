"""Which quantity predicts fragility? Per-image predictors and their rank correlation with the minimal ε (Chapter 10).

A quantity *predicts fragility* if its Spearman rank correlation ρ with the minimal
adversarial L∞ radius ε* over a fixed random set of correctly classified test images is clearly
non-zero, judged by a bootstrap 95 % interval. :func:`fragility_table` measures, per image x₀
with label y:

* ``min_eps``: ε* by bisection over PGD (:func:`qnnlib.attacks.minimal_eps`), witnessed from above;
* ``margin``: the clean logit margin z_y(x₀) − max_{j≠y} z_j(x₀) (a baseline);
* ``grad_l1``: ‖∇_x CE(f(x₀), y)‖₁, the input-gradient norm dual to L∞ (a baseline);
* ``lipschitz``: max over the local ψ's ball samples of ‖∇_x log CE‖₁, a CLEVER-style sampled local
  Lipschitz constant (Weng et al., 2018; for a confident network log CE ≈ −margin), and
  ``clever_eps`` = margin / lipschitz, the first-order distance to the boundary it implies;
* the local wave function on B_ε(x₀) ∩ [0,1]^M (:func:`qnnlib.uncertainty.local_moments`): ``dx``, ``dp``
  (jackknife-corrected aggregates), ``product`` = dx·dp, ``mean_boundary`` (mean B_i), their
  standard errors and the estimator's diagnostics (effective sample sizes, Pareto k̂, ``reliable``).

:func:`correlation_table` gives ρ with a percentile-bootstrap 95 % interval (resampling images
with a seeded generator) for each predictor.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy import stats

from . import _checks
from .attacks import input_gradient, minimal_eps
from .models import evaluation
from .uncertainty.local import local_moments

PREDICTORS = ("dx", "dp", "product", "mean_boundary", "lipschitz", "clever_eps", "grad_l1", "margin")


def logit_margin(model, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """z_y − max_{j≠y} z_j per image (N,) float64; > 0 exactly when x is classified as y. Eval mode, restored."""
    with evaluation(model), torch.no_grad():
        z = model(x).double()
    zy = z.gather(1, y.long()[:, None]).squeeze(1)
    others = z.scatter(1, y.long()[:, None], -float("inf"))
    return (zy - others.amax(1)).cpu().numpy()


def fragility_table(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, n_samples: int, seed: int = 0,
                    eps_max: float = 0.5, tol: float = 1e-3, steps: int = 20, restarts: int = 1,
                    targets: int = 3, rel_alpha: float = 2.5, form: str = "paper", batch_size: int | None = None,
                    sampler: str = "uniform", pilot: int = 256, stages: int = 2, n_groups: int = 32) -> dict:
    """Per-image predictors and the minimal ε of ``model`` on images ``x`` (N, ...) in [0,1], labels ``y`` (N,).

    ``eps`` > 0: radius of the local ψ (by default the chapter's attack radius, 0.1 for MNIST,
    8/255 for CIFAR-10); ``n_samples`` ≥ 2 points per image for it; ``seed`` seeds one generator for
    the points, then another (seed + 1) for the attacks' random starts; ``eps_max``, ``tol``,
    ``steps``, ``restarts``, ``targets``, ``rel_alpha`` go to :func:`qnnlib.attacks.minimal_eps`;
    ``form`` ("paper" or "rss") is the aggregate of Δx, Δp; ``batch_size`` the local ψ's rows per
    pass and ``n_groups`` its jackknife groups; ``sampler``, ``pilot``, ``stages`` choose its points
    (:func:`qnnlib.uncertainty.local_moments`: ``"tilted"`` keeps the estimates of confident
    images reliable at a few thousand points, where uniform points are not).

    Returns a dict of (N,) NumPy arrays: ``label``, ``clean_wrong``, ``min_eps`` (0 for misclassified
    images, inf when unbroken within eps_max), ``min_eps_lower``, ``unbroken``, ``margin``,
    ``grad_l1``, ``lipschitz``, ``clever_eps``, ``dx``, ``dp``, ``product``, ``mean_boundary``,
    ``dx_stderr``, ``dp_stderr``, ``ess``, ``ess_p``, ``khat_w``, ``khat_p``, ``reliable``.
    """
    seed = _checks.integer(seed, "seed", low=0)
    if form not in ("paper", "rss"):
        raise ValueError(f"form must be 'paper' or 'rss', got {form!r}")
    local = local_moments(model, x, y, eps=eps, n_samples=n_samples, batch_size=batch_size,
                          generator=torch.Generator().manual_seed(seed), warn=False, sampler=sampler,
                          pilot=pilot, stages=stages, n_groups=n_groups)
    attack = minimal_eps(model, x, y, eps_max=eps_max, tol=tol, steps=steps, restarts=restarts, targets=targets,
                         rel_alpha=rel_alpha, generator=torch.Generator().manual_seed(seed + 1))
    margin = logit_margin(model, x, y)
    grad = input_gradient(model, x, y).flatten(1).abs().sum(1).double().cpu().numpy()
    table = {"label": y.cpu().numpy().astype(np.int64), "clean_wrong": attack["clean_wrong"],
             "min_eps": attack["eps"], "min_eps_lower": attack["lower"], "unbroken": attack["unbroken"],
             "margin": margin, "grad_l1": grad}
    moments = local.table(form)
    table["lipschitz"] = moments.pop("grad_l1_max")
    with np.errstate(divide="ignore"):
        table["clever_eps"] = margin / table["lipschitz"]
    table.update(moments)
    return table


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman ρ along the last axis (ties get mean ranks): Pearson correlation of the ranks."""
    ra, rb = stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1)
    ra = ra - ra.mean(-1, keepdims=True)
    rb = rb - rb.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(-1) / np.sqrt((ra**2).sum(-1) * (rb**2).sum(-1))


def _paired_bootstrap(statistic, columns, *, minimum: int, what: str, n_boot, seed, level):
    """The columns (n,) float64 without the rows holding a NaN, and the percentile-bootstrap interval
    of ``statistic`` (vectorised along the last axis) over ``n_boot`` resamples of those rows.

    Shared by :func:`spearman_bootstrap` and :func:`partial_spearman_bootstrap`: the same checks,
    the same draws from ``numpy.random.default_rng(seed)``, the (1 ∓ level)/2 quantiles.
    """
    n_boot = _checks.integer(n_boot, "n_boot", low=100)
    level = _checks.real(level, "level", low=0, high=1, low_open=True, high_open=True)
    keep = ~np.any([np.isnan(c) for c in columns], axis=0)
    columns = [c[keep] for c in columns]
    n = columns[0].size
    if n < minimum:
        raise ValueError(f"need at least {minimum} {what} without NaN, got {n}")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = statistic(*(c[idx] for c in columns))
    boot = boot[np.isfinite(boot)]
    q = (1 - level) / 2
    low, high = np.quantile(boot, [q, 1 - q]) if boot.size else (np.nan, np.nan)
    return columns, float(low), float(high)


def spearman_bootstrap(a, b, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Spearman ρ of paired samples a, b (n,) with a percentile-bootstrap interval over pairs.

    ``n_boot`` ≥ 100 resamples of the n pairs with replacement from ``numpy.random.default_rng(seed)``;
    the interval is the (1 ∓ level)/2 quantiles of the resampled ρ (``level`` in (0, 1)). Pairs with
    a NaN are dropped first (inf is a valid, largest rank). Returns ``{"rho", "low", "high", "n",
    "p"}`` (p: scipy's two-sided p-value for ρ = 0); needs n ≥ 3.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.size} and {b.size}")
    (a, b), low, high = _paired_bootstrap(_spearman, [a, b], minimum=3, what="pairs", n_boot=n_boot, seed=seed,
                                          level=level)
    result = stats.spearmanr(a, b)
    return {"rho": float(result.statistic), "low": low, "high": high, "n": int(a.size), "p": float(result.pvalue)}


def _partial(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Partial Spearman correlation of a and b given c along the last axis: the Pearson correlation of
    the residuals of rank(a) and rank(b) after a least-squares line in rank(c)."""
    ranks = [stats.rankdata(v, axis=-1) for v in (a, b, c)]
    ra, rb, rc = (r - r.mean(-1, keepdims=True) for r in ranks)
    with np.errstate(invalid="ignore", divide="ignore"):
        cc = (rc * rc).sum(-1, keepdims=True)
        ea = ra - rc * (ra * rc).sum(-1, keepdims=True) / cc
        eb = rb - rc * (rb * rc).sum(-1, keepdims=True) / cc
        return (ea * eb).sum(-1) / np.sqrt((ea**2).sum(-1) * (eb**2).sum(-1))


def partial_spearman_bootstrap(a, b, given, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Partial Spearman ρ of a and b with ``given`` held fixed, with a percentile-bootstrap interval.

    The rank correlation of a and b after removing from the ranks of each the part linear in the
    ranks of ``given``: e.g. whether a predictor still ranks ε* among images of equal margin.
    Resampling, NaN handling and the returned ``{"rho", "low", "high", "n"}`` as in
    :func:`spearman_bootstrap` (no p-value); needs n ≥ 4 triples without NaN.
    """
    a, b, c = (np.asarray(v, dtype=np.float64).ravel() for v in (a, b, given))
    if not a.shape == b.shape == c.shape:
        raise ValueError(f"a, b and given must have the same length, got {a.size}, {b.size} and {c.size}")
    (a, b, c), low, high = _paired_bootstrap(_partial, [a, b, c], minimum=4, what="triples", n_boot=n_boot,
                                             seed=seed, level=level)
    return {"rho": float(_partial(a, b, c)), "low": low, "high": high, "n": int(a.size)}


def correlation_table(table: dict, *, predictors=PREDICTORS, target: str = "min_eps", n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """``{predictor: spearman_bootstrap(table[predictor], table[target])}`` over the correctly classified images.

    ``table``: the output of :func:`fragility_table` (or any dict of equal-length arrays with a
    ``clean_wrong`` column, which selects the images to drop: misclassified images have ε* = 0
    and are reported separately). Every predictor uses the same bootstrap resamples (same ``seed``).
    """
    if target not in table:
        raise ValueError(f"target {target!r} is not a column of the table ({sorted(table)})")
    missing = [p for p in predictors if p not in table]
    if missing:
        raise ValueError(f"predictors {missing} are not columns of the table ({sorted(table)})")
    keep = ~np.asarray(table.get("clean_wrong", np.zeros(len(table[target]), bool)), dtype=bool)
    return {p: spearman_bootstrap(np.asarray(table[p])[keep], np.asarray(table[target])[keep],
                                  n_boot=n_boot, seed=seed) for p in predictors}


def fab_cross_check(model, x: torch.Tensor, y: torch.Tensor, eps_star, *, eps_max: float, steps: int = 100,
                    restarts: int = 3, seed: int = 0) -> dict:
    """Compare the bisection's ε* with torchattacks' FAB (Croce & Hein, 2020), an independent attack.

    FAB (L∞, ``steps`` iterations, ``restarts`` random restarts, at most ``eps_max``) looks for the
    smallest perturbation that changes the prediction of each image of ``x`` (n, ...) with labels
    ``y``; ``eps_star`` (n,) are the bisection's radii of the same images. Both are upper bounds of
    the true minimal ε (each is witnessed by an adversarial example), so their ratio says how far
    apart two strong, unrelated attacks leave it. torchattacks draws FAB's restarts from torch's
    global generator: it is seeded with ``seed`` inside a forked state, so the caller's stream is
    untouched. Needs ``pip install torchattacks`` (a test dependency of qnnlib).

    Returns ``{"n", "fooled", "eps_fab", "eps_bisection", "ratio_median", "ratio_min", "ratio_max",
    "within_10pct", "bisection_smaller", "steps", "restarts", "seconds"}``; the ratio is bisection / FAB
    over the images both attacks broke.
    """
    try:
        import torchattacks
    except ImportError:
        raise ImportError("the FAB cross-check needs torchattacks: pip install torchattacks") from None

    eps_star = np.asarray(eps_star, dtype=np.float64).ravel()
    if len(eps_star) != len(y):
        raise ValueError(f"eps_star has {len(eps_star)} values for {len(y)} images")
    steps = _checks.integer(steps, "steps", low=1)
    restarts = _checks.integer(restarts, "restarts", low=1)
    eps_max = _checks.real(eps_max, "eps_max", low=0, low_open=True)
    clock = time.perf_counter()
    with evaluation(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classes = int(model(x[:1]).shape[1])
        attack = torchattacks.FAB(model, norm="Linf", eps=eps_max, steps=steps, n_restarts=restarts,
                                  n_classes=classes)
        adv = attack(x, y)
        with torch.no_grad():
            fooled = (model(adv).argmax(1) != y).cpu().numpy()
    seconds = time.perf_counter() - clock
    fab = np.where(fooled, (adv - x).flatten(1).abs().amax(1).double().cpu().numpy(), np.inf)
    both = fooled & np.isfinite(eps_star)
    ratio = eps_star[both] / fab[both]
    return {"n": int(len(y)), "fooled": int(fooled.sum()), "eps_fab": fab.tolist(), "eps_bisection": eps_star.tolist(),
            "ratio_median": float(np.median(ratio)) if ratio.size else None,
            "ratio_min": float(ratio.min()) if ratio.size else None,
            "ratio_max": float(ratio.max()) if ratio.size else None,
            "within_10pct": int((np.abs(ratio - 1) <= 0.1).sum()), "bisection_smaller": int((ratio < 1).sum()),
            "steps": steps, "restarts": restarts, "seconds": seconds}
