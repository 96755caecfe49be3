"""Monte Carlo estimates of ψ's moments: uniform or scrambled Sobol points in a box (Chapter 5).

:func:`moments` draws points uniformly in Ω = [low, high]^M, evaluates the amplitude and its
gradient in batches and feeds the weighted sums of :mod:`.estimator`; :func:`neural_moments` and
:func:`mean_neural_moments` do it for the cross-entropy of a classifier, one class or all.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..models import evaluation
from .diagnostics import UnreliableEstimateWarning
from .estimator import FORMS, Moments, _finish, _Sums, combine_stderr
from .wave_function import (
    Amplitude,
    _check_box,
    _check_positive_int,
    _check_shape,
    _evaluate_log,
    _model_dtype_device,
    _num_classes,
    _one_thread,
    neural_amplitude,
)

SAMPLERS = ("uniform", "sobol", "antithetic", "lhs")
SOBOL_MAX_DIM = torch.quasirandom.SobolEngine.MAXDIM  # 21,201


def default_batch_size(m: int, device=None) -> int:
    """Points per batch for :func:`moments` with M = ``m`` coordinates.

    On a CPU, batches of about 2¹⁸ input values (the power of two nearest 2¹⁸ / M, between 64
    and 4,096): the activations of larger batches fall out of cache. Measured on two cores:
    MnistCNN3 (M = 784, batches of 256) runs 1.8× faster than in batches of 4,096, CifarCNN4
    (M = 3,072, batches of 64) 3.5× faster; ``benchmarks/bench_uncertainty.py`` reports the rate.
    On a GPU, 4,096.
    """
    if device is not None and torch.device(device).type != "cpu":
        return 4096
    return int(min(4096, max(64, 2 ** round(math.log2(2**18 / max(m, 1))))))


def _stratified(sampler: str, c: int, m: int, generator, dtype) -> torch.Tensor:
    """``c`` points of [0, 1]^m, each uniform, for one group: antithetic pairs or a Latin hypercube."""
    if sampler == "antithetic":
        v = torch.rand((c + 1) // 2, m, generator=generator, dtype=dtype)
        return torch.cat([v, 1 - v])[:c]
    # Latin hypercube: coordinate d of the c points takes one point in each bin [k/c, (k+1)/c).
    bins = torch.rand(c, m, generator=generator).argsort(dim=0).to(dtype)
    return (bins + torch.rand(c, m, generator=generator, dtype=dtype)) / c


def moments(
    amplitude: Amplitude,
    input_shape,
    *,
    n_samples: int,
    low: float = 0.0,
    high: float = 1.0,
    sampler: str = "uniform",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    n_groups: int = 32,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Moments:
    """Monte Carlo estimate of <x_i>, Δx_i, <p_i>, Δp_i and B_i for ψ ∝ ``amplitude`` on a box.

    Draws X_1..X_N from the uniform distribution on Ω = [low, high]^M and applies the ratio
    estimators of the module docstring with q = 1 (Chapter 5). The box volume and the
    normalisation N² = ∫ l² cancel in the ratios.

    Parameters
    ----------
    amplitude
        callable mapping X of shape ``(B, *input_shape)`` to a (B,) tensor of unnormalised,
        real, non-negative ψ values, differentiable in X; each output must depend on its own
        input only (put batch norm in eval mode). Gradients come from one backward pass of the
        summed output per batch.
    input_shape
        shape of one input, e.g. (1, 28, 28); M = its number of elements
    n_samples
        N ≥ 2 points in all
    low, high
        the box [low, high] in every coordinate (low < high)
    sampler
        ``"uniform"`` (pseudo-random), ``"sobol"`` (Owen-scrambled Sobol points,
        ``torch.quasirandom.SobolEngine``, M ≤ 21,201), ``"antithetic"`` (pairs U, 1 − U) or
        ``"lhs"`` (Latin hypercube: each coordinate stratified into as many equal bins as a
        group has points in the batch, one point per bin). In all four every point is uniform on
        Ω and the groups are independent, so the sums stay unbiased for ψ's integrals and the
        jackknife error bars stay honest; pairs and strata never straddle two groups.
    batch_size
        points per forward/backward pass; memory is O(batch_size · M) for any N. Default
        (None): :func:`default_batch_size` — about 2¹⁸ input values per batch on a CPU, 4,096
        points on a GPU
    generator
        torch.Generator for the uniform points and the Sobol scrambling seeds
    n_groups
        K groups for the standard errors (default 32, at most N)
    dtype, device
        of the points handed to ``amplitude`` (sums are always float64 on the CPU)

    Standard errors: the N points are dealt into K groups (point n to group n mod K); every
    quantity is recomputed from the pooled sums with one group left out, and the spread of these
    K estimates gives the delete-one-group jackknife error — the batch-means method made
    consistent for ratio estimators. For ``"sobol"`` each group is its own independently
    scrambled Sobol sequence (randomised QMC with K replicates), so its error bars are honest
    too; Sobol sequences are most even when N/K is a power of two.

    Weights: log w = 2 log l is accumulated relative to its running maximum (see
    :mod:`.estimator`), so the ratios do not depend on the scale of l; an amplitude with a ``log``
    attribute (X ↦ log l, as :func:`neural_amplitude` has) is evaluated through it, which keeps
    losses far below the dtype's resolution exact.

    Diagnostics (Chapter 5): ``ess``, ``ess_p``, ``khat_w``, ``khat_p`` of the result; when one
    fails (ESS < ``ESS_MIN`` = 100 or k̂ > ``KHAT_MAX`` = 0.7) an ``UnreliableEstimateWarning``
    is issued and the estimate is still returned.

    Returns a :class:`Moments`. Raises ``ValueError`` for bad arguments and for an amplitude of
    the wrong shape, negative, non-finite, zero at every sample, or underflowing in its dtype so
    far that the lost values could matter.
    """
    shape = _check_shape(input_shape)
    n = _check_positive_int("n_samples", n_samples, 2)
    low, high = _check_box(low, high)
    if batch_size is None:
        batch_size = default_batch_size(math.prod(shape), device)
    batch_size = _check_positive_int("batch_size", batch_size, 1)
    n_groups = _check_positive_int("n_groups", n_groups, 2)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    m = math.prod(shape)
    if sampler == "sobol" and m > SOBOL_MAX_DIM:
        raise ValueError(f"sampler 'sobol' supports at most {SOBOL_MAX_DIM} dimensions; input_shape "
                         f"{shape} has {m}")
    k = min(n_groups, n)
    if sampler == "sobol":
        seeds = torch.randint(0, 2**62, (k,), generator=generator).tolist()
        with _one_thread():
            engines = [torch.quasirandom.SobolEngine(m, scramble=True, seed=s) for s in seeds]
    sums = _Sums(k, m, centre=(low + high) / 2, n_total=n)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        # How many of points start..start+b−1 fall in each group (n mod K), in group order.
        counts = torch.bincount(torch.arange(start, start + b) % k, minlength=k)
        with _one_thread():
            if sampler == "uniform":
                u = torch.rand(b, m, generator=generator, dtype=dtype)
            elif sampler == "sobol":
                u = torch.cat([engines[j].draw(int(c), dtype=dtype) for j, c in enumerate(counts) if c > 0])
            else:
                u = torch.cat([_stratified(sampler, int(c), m, generator, dtype) for c in counts if c > 0])
            x = u.mul_(high - low).add_(low).reshape(b, *shape)
            if x.ndim == 4:
                # Image batches: oneDNN's CPU convolutions are faster channels-last; the values
                # (and so the estimate) are the same in either memory layout.
                x = x.contiguous(memory_format=torch.channels_last)
        if device is not None:
            x = x.to(device)
        log_l, g, scale, n_tiny, tiny = _evaluate_log(amplitude, x)
        sums.add(counts.tolist(), log_l.cpu(), x.cpu(), g.cpu(), scale.cpu(), n_tiny=n_tiny, tiny=tiny)
    result = _finish(sums, shape, n, sampler, (low, high))
    reasons = result.unreliable
    if reasons:
        warnings.warn(f"unreliable estimate from {n} points: {'; '.join(reasons)}; draw more "
                      "samples or read the estimate and its error bar as indicative only",
                      UnreliableEstimateWarning, stacklevel=2)
    return result


def neural_moments(model: torch.nn.Module, label: int, input_shape, **kw) -> Moments:
    """:func:`moments` of ψ_Y ∝ CE(model(X), Y) for one fixed class ``label`` (Chapters 3 and 5).

    ``model`` maps ``(B, *input_shape)`` in the box to logits (B, K) and is put in eval mode for the
    estimate (its mode is restored; no weight gradients are accumulated). ``label`` is an int in
    0..K−1. Keywords go to :func:`moments` (``n_samples`` is required); points are drawn in the
    model's dtype and moved to its device. Example, MNIST class 8 in pixel space (Chapter 5)::

        m = neural_moments(model, 8, (1, 28, 28), n_samples=20_000, generator=torch.Generator().manual_seed(0))
        m.summary()["frac_below_half"], m.aggregate("paper")
    """
    shape = _check_shape(input_shape)
    dtype, device = _model_dtype_device(model)
    kw.setdefault("dtype", dtype)
    kw.setdefault("device", device)
    with evaluation(model):
        n_classes = _num_classes(model, shape, kw["dtype"], kw["device"])
        if isinstance(label, bool):
            raise ValueError(f"label must be an int in 0..{n_classes - 1}, got {label!r}")
        try:
            label = operator.index(label)
        except TypeError:
            raise ValueError(f"label must be an int in 0..{n_classes - 1}, got {label!r}") from None
        if not 0 <= label < n_classes:
            raise ValueError(f"label must be in 0..{n_classes - 1}, got {label}")
        return moments(neural_amplitude(model, label), shape, **kw)


@dataclass(frozen=True, eq=False)
class ClassMean:
    """Mean over classes of the class-wise aggregates Δx[Y], Δp[Y] (the paper's CIFAR-10 figures).

    ``dx = mean_Y Δx[Y]`` in the given ``form`` (plain ratios); ``dx_jk = mean_Y Δx_J[Y]`` of
    the jackknife-corrected aggregates (:meth:`Moments.aggregate_jk`). The standard errors, of
    both, combine the per-class jackknife errors as independent (each class uses its own points):
    sqrt(Σ_Y se_Y²) / n_classes (``combine_stderr``). ``per_class``
    holds the :class:`Moments` of every class, in label order.
    """

    dx: float
    dp: float
    dx_stderr: float
    dp_stderr: float
    form: str
    per_class: tuple
    dx_jk: float = math.nan
    dp_jk: float = math.nan


def mean_aggregate(per_class, form: str = "paper") -> ClassMean:
    """Combine :class:`Moments` of several classes into a :class:`ClassMean` (equal weights)."""
    per_class = tuple(per_class)
    if not per_class:
        raise ValueError("per_class must hold at least one Moments")
    values = np.array([m.aggregate(form) for m in per_class])
    corrected = np.array([m.aggregate_jk(form) for m in per_class])
    errors = np.array([m.aggregate_stderr(form) for m in per_class])
    mean, mean_jk = values.mean(0), corrected.mean(0)
    return ClassMean(float(mean[0]), float(mean[1]), combine_stderr(errors[:, 0]), combine_stderr(errors[:, 1]),
                     form, per_class, float(mean_jk[0]), float(mean_jk[1]))


def mean_neural_moments(model: torch.nn.Module, input_shape, *, form: str = "paper", **kw) -> ClassMean:
    """:func:`neural_moments` for every label 0..K−1, combined by :func:`mean_aggregate`.

    The CIFAR-10 figures of the paper use this mean over the ten classes (Chapter 3). Keywords go to
    :func:`moments`; a shared ``generator`` is consumed class after class.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    shape = _check_shape(input_shape)
    dtype, device = _model_dtype_device(model)
    with evaluation(model):
        n_classes = _num_classes(model, shape, kw.get("dtype", dtype), kw.get("device", device))
    return mean_aggregate((neural_moments(model, y, shape, **kw) for y in range(n_classes)), form)
