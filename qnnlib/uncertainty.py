"""The neural wave function and its moments: Δx, Δp and the boundary terms (Chapters 3–5).

Fix a classifier ``f`` and a label Y. The loss ``l_Y(X) = CE(f(X), Y) ≥ 0`` on the input box
Ω = [low, high]^M, normalised, is the *neural wave function* (SPEC §1; Chapter 3)::

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

* :func:`moments` — Monte Carlo (uniform or scrambled Sobol) for any amplitude ``X ↦ l(X) ≥ 0``;
* :func:`neural_moments`, :func:`mean_neural_moments` — the same for the cross-entropy of a model;
* :func:`grid_moments` — tensor-product Gauss–Legendre quadrature in 1 or 2 dimensions, the
  reference the Monte Carlo estimator is tested against;
* :class:`Moments` — the per-coordinate results, their standard errors and the §2 diagnostics.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

SAMPLERS = ("uniform", "sobol")
RULES = ("gauss", "midpoint")
FORMS = ("paper", "rss")
SOBOL_MAX_DIM = torch.quasirandom.SobolEngine.MAXDIM  # 21,201
# The estimators meet the bound exactly up to float64 rounding (see the module docstring); this
# relative slack only absorbs that rounding when :meth:`Moments.summary` counts coordinates.
BOUND_RTOL = 1e-9

Amplitude = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


def _jackknife_stderr(replicates: torch.Tensor) -> torch.Tensor:
    """Delete-one-group jackknife: sqrt((K−1)/K Σ_k (θ_(k) − mean θ)²) over axis 0."""
    k = replicates.shape[0]
    if k < 2:
        return torch.zeros(replicates.shape[1:], dtype=torch.float64)
    centred = replicates - replicates.mean(0)
    return ((k - 1) / k * (centred**2).sum(0)).sqrt()


def _aggregate(dx: torch.Tensor, dp: torch.Tensor, form: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Aggregates over the coordinates (the trailing dimensions after ``dims_kept`` leading ones)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "paper":
        return dx.sum(-1).sqrt(), dp.sum(-1).sqrt()
    return (dx**2).sum(-1).sqrt(), (dp**2).sum(-1).sqrt()


@dataclass(frozen=True, eq=False)
class Moments:
    """Per-coordinate moments of one neural wave function (SPEC §1–3; Chapters 4 and 5).

    Every tensor is float64 with the shape of one input (``input_shape``), except the
    ``*_replicates`` fields, which have a leading axis of K leave-one-group-out estimates
    (K = 0 for grid quadrature) used for standard errors of derived quantities.

    Attributes
    ----------
    mean_x, dx
        <x_i> and Δx_i
    mean_p, dp
        <p_i> and Δp_i
    boundary
        B_i = 1 + 2∫(x_i − <x_i>) ψ ∂_iψ dX
    dx_stderr, dp_stderr, boundary_stderr, product_stderr
        one standard error of Δx_i, Δp_i, B_i and Δx_iΔp_i (zeros for grid quadrature, whose
        error is not statistical)
    ess
        effective sample size (Σ q w)² / Σ (q w)² of the weights w = l² (q = quadrature weights)
    n_samples
        number of points the amplitude was evaluated at
    sampler
        "uniform", "sobol" or "grid"
    dx_replicates, dp_replicates
        ``(K, *input_shape)`` jackknife replicates of Δx and Δp
    """

    mean_x: torch.Tensor
    dx: torch.Tensor
    mean_p: torch.Tensor
    dp: torch.Tensor
    boundary: torch.Tensor
    dx_stderr: torch.Tensor
    dp_stderr: torch.Tensor
    boundary_stderr: torch.Tensor
    product_stderr: torch.Tensor
    ess: float
    n_samples: int
    sampler: str
    dx_replicates: torch.Tensor
    dp_replicates: torch.Tensor

    @property
    def product(self) -> torch.Tensor:
        """Δx_i · Δp_i per coordinate."""
        return self.dx * self.dp

    @property
    def lower_bound(self) -> torch.Tensor:
        """The bound ``|1 − B_i| / 2`` per coordinate, below which Δx_iΔp_i can never go (Chapter 4)."""
        return (1.0 - self.boundary).abs() / 2.0

    @property
    def meets_bound(self) -> torch.Tensor:
        """True for each coordinate with Δx_iΔp_i ≥ ``|1 − B_i|/2`` up to rounding (relative ``BOUND_RTOL``)."""
        return self.product >= self.lower_bound * (1.0 - BOUND_RTOL) - 1e-15

    def aggregate(self, form: str = "paper") -> tuple[float, float]:
        """(Δx, Δp) over all coordinates.

        ``form="paper"``: Δx = (Σ_i Δx_i)^{1/2}, as the paper typesets it; ``form="rss"``:
        Δx = (Σ_i Δx_i²)^{1/2}, the root-sum-square. Same for Δp.
        """
        dx, dp = _aggregate(self.dx.flatten(), self.dp.flatten(), form)
        return float(dx), float(dp)

    def aggregate_stderr(self, form: str = "paper") -> tuple[float, float]:
        """Jackknife standard errors of :meth:`aggregate` (zeros for grid quadrature)."""
        k = self.dx_replicates.shape[0]
        if k == 0:
            return 0.0, 0.0
        dx, dp = _aggregate(self.dx_replicates.reshape(k, -1), self.dp_replicates.reshape(k, -1), form)
        return float(_jackknife_stderr(dx)), float(_jackknife_stderr(dp))

    def summary(self) -> dict:
        """The SPEC §2 diagnostics and both aggregate forms, as plain Python numbers.

        Keys: ``frac_below_half`` (fraction of coordinates with Δx_iΔp_i < 1/2), ``min_product``,
        ``mean_boundary`` (mean of B_i), ``frac_meeting_bound`` (fraction with
        Δx_iΔp_i ≥ ``|1 − B_i|/2``), ``dx_paper``, ``dp_paper``, ``dx_rss``, ``dp_rss``, ``ess``,
        ``n_samples``.
        """
        product = self.product.flatten()
        dx_paper, dp_paper = self.aggregate("paper")
        dx_rss, dp_rss = self.aggregate("rss")
        return {
            "frac_below_half": float((product < 0.5).double().mean()),
            "min_product": float(product.min()),
            "mean_boundary": float(self.boundary.mean()),
            "frac_meeting_bound": float(self.meets_bound.double().mean()),
            "dx_paper": dx_paper,
            "dp_paper": dp_paper,
            "dx_rss": dx_rss,
            "dp_rss": dp_rss,
            "ess": self.ess,
            "n_samples": self.n_samples,
        }


# ---------------------------------------------------------------------------------------
# Accumulating weighted sums
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _one_thread():
    """Run small tensor operations on one thread (restoring the setting after).

    Sums over ≤ CHUNK × M elements, Sobol scrambling and draws are too small for an OpenMP team,
    whose barriers stall badly when the CPU is shared with other work (measured: 100× slower on
    a busy 2-core machine). The network's forward and backward passes keep every thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Sums:
    """Raw float64 sums per group k: Σqw, Σ(qw)², and per coordinate Σqwx, Σqwx², Σqlg, Σqg², Σqlgx.

    Coordinates are stored relative to the centre of the box, so the subtraction in
    Δx² = <x²> − <x>² loses no digits for boxes far from the origin. Rows are converted to
    float64 in chunks of at most ``CHUNK`` rows into buffers allocated once: the sums then cost
    a few matrix–vector products per chunk and no large temporaries.
    """

    CHUNK = 512

    def __init__(self, n_groups: int, n_dims: int, centre: float):
        self.w = torch.zeros(n_groups, dtype=torch.float64)
        self.ww = torch.zeros(n_groups, dtype=torch.float64)
        self.s = torch.zeros(n_groups, 5, n_dims, dtype=torch.float64)
        self.centre = centre
        self._x, self._g, self._t = torch.empty(3, self.CHUNK, n_dims, dtype=torch.float64)

    def add(self, counts, l: torch.Tensor, x: torch.Tensor, g: torch.Tensor, q: torch.Tensor | None = None):
        """Add one batch whose first counts[0] rows belong to group 0, the next counts[1] to group 1, ….

        ``q`` (optional, (b,)) are positive weights per row (quadrature weights); default 1.
        """
        with _one_thread():
            self._add(counts, l, x, g, q)

    def _add(self, counts, l, x, g, q):
        b = l.shape[0]
        l = l.detach().to(torch.float64)
        x = x.detach().reshape(b, -1)
        g = g.detach().reshape(b, -1)
        ql = l if q is None else q * l
        qw = ql * l
        start = 0
        for k, count in enumerate(counts):
            for first in range(start, start + int(count), self.CHUNK):
                r = slice(first, min(first + self.CHUNK, start + int(count)))
                c = r.stop - r.start
                xc, gc, tc = self._x[:c], self._g[:c], self._t[:c]
                xc.copy_(x[r]).sub_(self.centre)
                gc.copy_(g[r])
                self.w[k] += qw[r].sum()
                self.ww[k] += (qw[r] * qw[r]).sum()
                self.s[k, 0] += qw[r] @ xc
                self.s[k, 2] += ql[r] @ gc
                self.s[k, 1] += qw[r] @ torch.mul(xc, xc, out=tc)
                self.s[k, 4] += ql[r] @ torch.mul(gc, xc, out=tc)
                torch.mul(gc, gc, out=tc)
                self.s[k, 3] += tc.sum(0) if q is None else q[r].to(torch.float64) @ tc
            start += int(count)


def _estimates(w: torch.Tensor, s: torch.Tensor, centre: float):
    """The SPEC §3 ratios from raw sums; leading dimensions of ``w`` and ``s`` broadcast."""
    w = w.unsqueeze(-1)
    mean_xc = s[..., 0, :] / w
    dx = (s[..., 1, :] / w - mean_xc**2).clamp_min(0.0).sqrt()
    mean_p = s[..., 2, :] / w
    dp = (s[..., 3, :] / w - mean_p**2).clamp_min(0.0).sqrt()
    # Σ l g (x − <x>) = Σ l g x_c − <x_c> Σ l g: centring after the fact is exact.
    boundary = 1.0 + 2.0 * (s[..., 4, :] - mean_xc * s[..., 2, :]) / w
    return mean_xc + centre, dx, mean_p, dp, boundary


def _finish(sums: _Sums, input_shape: tuple, n_samples: int, sampler: str) -> Moments:
    with _one_thread():
        return _finish_sums(sums, input_shape, n_samples, sampler)


def _finish_sums(sums: _Sums, input_shape: tuple, n_samples: int, sampler: str) -> Moments:
    total_w, total_s = sums.w.sum(0), sums.s.sum(0)
    if not total_w > 0:
        raise ValueError("amplitude is zero at every sample: ψ cannot be normalised")
    mean_x, dx, mean_p, dp, boundary = _estimates(total_w, total_s, sums.centre)
    k = sums.w.shape[0]
    if k > 1:
        _, dx_k, _, dp_k, b_k = _estimates(total_w - sums.w, total_s - sums.s, sums.centre)
        stderr = [_jackknife_stderr(t) for t in (dx_k, dp_k, b_k, dx_k * dp_k)]
    else:
        empty = torch.zeros(0, dx.numel(), dtype=torch.float64)
        dx_k = dp_k = empty
        stderr = [torch.zeros_like(dx) for _ in range(4)]
    shape = tuple(input_shape)
    return Moments(
        mean_x=mean_x.reshape(shape),
        dx=dx.reshape(shape),
        mean_p=mean_p.reshape(shape),
        dp=dp.reshape(shape),
        boundary=boundary.reshape(shape),
        dx_stderr=stderr[0].reshape(shape),
        dp_stderr=stderr[1].reshape(shape),
        boundary_stderr=stderr[2].reshape(shape),
        product_stderr=stderr[3].reshape(shape),
        ess=float(total_w**2 / sums.ww.sum()),
        n_samples=int(n_samples),
        sampler=sampler,
        dx_replicates=dx_k.reshape((-1, *shape)),
        dp_replicates=dp_k.reshape((-1, *shape)),
    )


def _evaluate(amplitude: Amplitude, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """l = amplitude(x) (B,) and its per-sample input gradients (B, ...) from ONE backward pass.

    Summing l couples nothing as long as each l_n depends on x_n alone (batch norm in eval mode),
    so ∂(Σ_n l_n)/∂x_n = ∇ l_n for every n at the cost of a single backward pass.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        l = amplitude(x)
    if not isinstance(l, torch.Tensor) or not l.is_floating_point():
        raise ValueError("amplitude must return a real floating-point tensor")
    if l.shape != (x.shape[0],):
        raise ValueError(f"amplitude must map a batch {tuple(x.shape)} to shape ({x.shape[0]},), "
                         f"got {tuple(l.shape)}")
    if not bool(torch.isfinite(l).all()):
        raise ValueError("amplitude returned non-finite values (inf or nan)")
    if bool((l < 0).any()):
        raise ValueError(f"amplitude must be non-negative, got a minimum of {float(l.min()):.3g}")
    g = None
    if l.requires_grad:
        (g,) = torch.autograd.grad(l.sum(), x, allow_unused=True)
    if g is None:  # ψ does not depend on X at all: every derivative is 0
        g = torch.zeros_like(x)
    elif not bool(torch.isfinite(g).all()):
        raise ValueError("amplitude has non-finite gradients")
    return l.detach(), g


# ---------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------


def _check_shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(operator.index(s) for s in input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a tuple of positive ints, got {input_shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    return shape


def _check_box(low, high) -> tuple[float, float]:
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite, got low={low}, high={high}")
    if not low < high:
        raise ValueError(f"low must be < high, got low={low}, high={high}")
    return low, high


def _check_positive_int(name: str, value, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int ≥ {minimum}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {value}")
    return value


# ---------------------------------------------------------------------------------------
# Monte Carlo
# ---------------------------------------------------------------------------------------


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
    estimators of the module docstring with q = 1 (SPEC §3; Chapter 5). The box volume and the
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
        ``"uniform"`` (pseudo-random) or ``"sobol"`` (Owen-scrambled Sobol points,
        ``torch.quasirandom.SobolEngine``, M ≤ 21,201)
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

    Returns a :class:`Moments`. Raises ``ValueError`` for bad arguments and for an amplitude of
    the wrong shape, negative, non-finite, or zero at every sample.
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
    sums = _Sums(k, m, centre=(low + high) / 2)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        # How many of points start..start+b−1 fall in each group (n mod K), in group order.
        counts = torch.bincount(torch.arange(start, start + b) % k, minlength=k)
        with _one_thread():
            if sampler == "uniform":
                u = torch.rand(b, m, generator=generator, dtype=dtype)
            else:
                u = torch.cat([engines[j].draw(int(c), dtype=dtype) for j, c in enumerate(counts) if c > 0])
            x = u.mul_(high - low).add_(low).reshape(b, *shape)
            if x.ndim == 4:
                # Image batches: oneDNN's CPU convolutions are faster channels-last; the values
                # (and so the estimate) are the same in either memory layout.
                x = x.contiguous(memory_format=torch.channels_last)
        if device is not None:
            x = x.to(device)
        l, g = _evaluate(amplitude, x)
        sums.add(counts.tolist(), l.cpu(), x.cpu(), g.cpu())
    return _finish(sums, shape, n, sampler)


# ---------------------------------------------------------------------------------------
# Neural wave functions
# ---------------------------------------------------------------------------------------


def neural_amplitude(model: torch.nn.Module, label: int) -> Amplitude:
    """X ↦ l_Y(X) = CE(model(X), Y) per sample: the unnormalised neural wave function (SPEC §1).

    ψ_Y ∝ the loss itself — not exp(−l), not sqrt(l). The model must return logits (B, K);
    it is used as it is (put it in eval mode; :func:`neural_moments` does).
    """

    def amplitude(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        target = torch.full((x.shape[0],), label, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction="none")

    return amplitude


def _model_dtype_device(model):
    parameter = next(model.parameters(), None)
    if parameter is None:
        return torch.float32, torch.device("cpu")
    return parameter.dtype, parameter.device


def _num_classes(model, shape, dtype, device) -> int:
    with torch.no_grad():
        logits = model(torch.zeros((1, *shape), dtype=dtype, device=device))
    if logits.ndim != 2:
        raise ValueError(f"model must return logits of shape (B, K), got {tuple(logits.shape)}")
    return int(logits.shape[1])


def neural_moments(model: torch.nn.Module, label: int, input_shape, **kw) -> Moments:
    """:func:`moments` of ψ_Y ∝ CE(model(X), Y) for one fixed class ``label`` (SPEC §1, §3).

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
    was_training = model.training
    model.eval()
    try:
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
    finally:
        model.train(was_training)


@dataclass(frozen=True, eq=False)
class ClassMean:
    """Mean over classes of the class-wise aggregates Δx[Y], Δp[Y] (the paper's CIFAR-10 figures).

    ``dx = mean_Y Δx[Y]`` in the given ``form``; the standard errors combine the per-class
    jackknife errors as independent (each class uses its own points). ``per_class`` holds the
    :class:`Moments` of every class, in label order.
    """

    dx: float
    dp: float
    dx_stderr: float
    dp_stderr: float
    form: str
    per_class: tuple


def mean_aggregate(per_class, form: str = "paper") -> ClassMean:
    """Combine :class:`Moments` of several classes into a :class:`ClassMean` (equal weights)."""
    per_class = tuple(per_class)
    if not per_class:
        raise ValueError("per_class must hold at least one Moments")
    values = np.array([m.aggregate(form) for m in per_class])
    errors = np.array([m.aggregate_stderr(form) for m in per_class])
    n = len(per_class)
    mean = values.mean(0)
    stderr = np.sqrt((errors**2).sum(0)) / n
    return ClassMean(float(mean[0]), float(mean[1]), float(stderr[0]), float(stderr[1]), form, per_class)


def mean_neural_moments(model: torch.nn.Module, input_shape, *, form: str = "paper", **kw) -> ClassMean:
    """:func:`neural_moments` for every label 0..K−1, combined by :func:`mean_aggregate`.

    The CIFAR-10 figures of the paper use this mean over the ten classes (SPEC §1). Keywords go to
    :func:`moments`; a shared ``generator`` is consumed class after class.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    shape = _check_shape(input_shape)
    dtype, device = _model_dtype_device(model)
    was_training = model.training
    model.eval()
    try:
        n_classes = _num_classes(model, shape, kw.get("dtype", dtype), kw.get("device", device))
    finally:
        model.train(was_training)
    return mean_aggregate((neural_moments(model, y, shape, **kw) for y in range(n_classes)), form)


# ---------------------------------------------------------------------------------------
# Grid quadrature (1 or 2 dimensions)
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [−1, 1] by Newton's method on P_n (O(n²), no LAPACK).

    Starts from the classical estimate cos(π(k − ¼)/(n + ½)) and polishes with the three-term
    recurrence; converged to rounding after a handful of steps for any n.
    """
    k = np.arange(1, n + 1)
    t = np.cos(np.pi * (k - 0.25) / (n + 0.5))
    for _ in range(100):
        p_prev, p = np.ones_like(t), t.copy()
        for j in range(2, n + 1):
            p_prev, p = p, ((2 * j - 1) * t * p - (j - 1) * p_prev) / j
        derivative = n * (t * p - p_prev) / (t * t - 1)
        step = p / derivative
        t = t - step
        if np.max(np.abs(step)) < 1e-15:
            break
    # Recompute P_{n−1} and P_n' at the converged nodes for the weights 2 / ((1 − t²) P_n'²).
    p_prev, p = np.ones_like(t), t.copy()
    for j in range(2, n + 1):
        p_prev, p = p, ((2 * j - 1) * t * p - (j - 1) * p_prev) / j
    derivative = n * (t * p - p_prev) / (t * t - 1)
    return t[::-1].copy(), (2 / ((1 - t * t) * derivative**2))[::-1].copy()


def quadrature_nodes(points: int, low: float, high: float, rule: str = "gauss"):
    """Nodes and weights of a 1-D rule on [low, high]: Gauss–Legendre or midpoint (float64)."""
    if rule == "gauss":
        t, w = _gauss_legendre(points)
        nodes = low + (high - low) * (t + 1.0) / 2.0
        weights = w * (high - low) / 2.0
    elif rule == "midpoint":
        h = (high - low) / points
        nodes = low + h * (np.arange(points) + 0.5)
        weights = np.full(points, h)
    else:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def grid_moments(
    amplitude: Amplitude,
    input_shape,
    *,
    points_per_dim: int,
    low: float = 0.0,
    high: float = 1.0,
    rule: str = "gauss",
    batch_size: int = 65536,
    dtype: torch.dtype = torch.float64,
) -> Moments:
    """Deterministic quadrature of the same integrals as :func:`moments`, for M = 1 or 2 inputs.

    A tensor product of ``points_per_dim`` nodes per coordinate (Gauss–Legendre by default,
    ``rule="midpoint"`` for the midpoint rule), with derivatives by autograd at the nodes. The
    nodes are interior, so B_i comes from its volume form 1 + 2∫(x_i − <x_i>)ψ∂_iψ. For smooth ψ
    the Gauss rule converges exponentially; a ReLU network's kinks make it algebraic, still far
    below Monte Carlo noise at a few hundred points per dimension. Standard errors are zero:
    this is the reference that Chapter 5 and the tests compare Monte Carlo against.
    """
    shape = _check_shape(input_shape)
    m = math.prod(shape)
    if m > 2:
        raise ValueError(f"grid_moments handles 1 or 2 input dimensions; input_shape {shape} has {m}")
    points = _check_positive_int("points_per_dim", points_per_dim, 2)
    low, high = _check_box(low, high)
    batch_size = _check_positive_int("batch_size", batch_size, 1)
    nodes, weights = quadrature_nodes(points, low, high, rule)
    if m == 1:
        x, q = nodes.unsqueeze(1), weights
    else:
        a, b = torch.meshgrid(nodes, nodes, indexing="ij")
        x = torch.stack([a.flatten(), b.flatten()], 1)
        q = torch.outer(weights, weights).flatten()
    sums = _Sums(1, m, centre=(low + high) / 2)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        l, g = _evaluate(amplitude, xb.reshape(-1, *shape).to(dtype))
        sums.add([xb.shape[0]], l, xb, g, q[start:start + batch_size])
    return _finish(sums, shape, x.shape[0], "grid")


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


def wave_function_grid(amplitude: Amplitude, *, points_per_dim: int, low: float = 0.0, high: float = 1.0,
                       dtype: torch.dtype = torch.float32):
    """ψ and ∇ψ of a 2-D amplitude on a midpoint grid, normalised so that ∫ψ² ≈ 1 (Chapter 3).

    Returns ``(nodes, psi, grad)``: nodes (n,) float64 (the same in both coordinates), psi (n, n)
    with psi[i, j] = ψ(nodes[i], nodes[j]), grad (2, n, n) = (∂ψ/∂x₁, ∂ψ/∂x₂), all float64.
    The normalisation N² = ∫ l² uses the same midpoint grid.
    """
    points = _check_positive_int("points_per_dim", points_per_dim, 2)
    low, high = _check_box(low, high)
    nodes, weights = quadrature_nodes(points, low, high, "midpoint")
    a, b = torch.meshgrid(nodes, nodes, indexing="ij")
    x = torch.stack([a.flatten(), b.flatten()], 1)
    l, g = _evaluate(amplitude, x.to(dtype))
    l, g = l.double(), g.double()
    norm = torch.sqrt((l**2).sum() * weights[0] ** 2)
    if not norm > 0:
        raise ValueError("amplitude is zero at every grid point: ψ cannot be normalised")
    psi = (l / norm).reshape(points, points)
    grad = (g / norm).T.reshape(2, points, points)
    return nodes, psi, grad
