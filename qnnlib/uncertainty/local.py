"""Local wave functions: ψ restricted to an L∞ ball around a test image (Chapter 10).

The paper's ψ lives on the whole pixel cube, where almost all volume is noise. The *local* wave
function of a test image x₀ (label Y) is the neural wave function of Chapter 3 on the box

    Ω = B_ε(x₀) ∩ [0,1]^M = Π_i [lo_i, hi_i],   lo_i = max(0, x₀_i − ε),  hi_i = min(1, x₀_i + ε),

    ψ(X) = l_Y(X) / N,   N² = ∫_Ω l_Y², X ∈ Ω,

a product of intervals of per-coordinate widths h_i = hi_i − lo_i ∈ [min(ε, 1), 2ε]. Every moment
of Chapter 4 (⟨x_i⟩, Δx_i, ⟨p_i⟩, Δp_i, B_i) is estimated exactly as on the cube (Chapter 5):
points uniform on Ω, the ratio estimators with w = l², delete-one-group jackknife bias corrections
and standard errors, ESS and Pareto k̂ diagnostics. Only the box differs, so this module feeds the
shared sums of :mod:`.estimator` with points X = lo + h ⊙ U, U uniform on [0,1]^M, and gradients
taken in X itself (no rescaling of the results is needed; the weights behind ⟨p_i²⟩ are the
Σ_i (∂_i l)² of X-space).

The theorem holds on Ω with its own boundary terms: B_i = 1 + 2∫(x_i − ⟨x_i⟩)ψ∂_iψ equals the face
integral over the two faces x_i = lo_i, hi_i — faces of the ball, or of the cube where it clips.

Two equivalent ways to view the box, and a check of the algebra: with U = (X − lo)/h the moments
on the unit cube of ψ_U(U) ∝ l(lo + h ⊙ U) give ⟨x_i⟩ = lo_i + h_i⟨u_i⟩, Δx_i = h_iΔu_i,
⟨p_i⟩ = ⟨p_u,i⟩/h_i, Δp_i = Δp_u,i/h_i and B_i = B_u,i (the Jacobian Π h_i cancels in the
normalisation; tests/test_local.py checks both views agree).

For ε ≥ 1 the box is the whole cube and :func:`local_moments` returns the same numbers as
:func:`qnnlib.uncertainty.neural_moments` with the same generator and batch size.

Uniform points fail around an image the network classifies with confidence: there l ≈ e^{−margin}
changes by orders of magnitude across Ω, and on the recorded networks at the attack radius a few
of thousands of points carry all the weight (effective sample sizes of 1–50 at N = 4,096 on
MNIST CNN3 and CIFAR-10 CNN4, Pareto k̂ above 1, whatever N). ``sampler="tilted"`` draws the
points from a product of truncated exponentials that follows the slope of log l instead
(:mod:`.tilted`), with importance weights, so that the same integrals keep effective sample sizes
of a tenth to most of N.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import _checks
from ..models import evaluation
from .diagnostics import UnreliableEstimateWarning
from .estimator import Moments, _finish, _Sums
from .monte_carlo import default_batch_size
from .tilted import adapt_rates, tilted_sample
from .wave_function import _check_positive_int, _evaluate_log, _model_dtype_device, _one_thread


LOCAL_SAMPLERS = ("uniform", "tilted")


def local_box(x0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) of Ω = B_ε(x₀) ∩ [0,1]^M, each shaped like ``x0``: lo = max(0, x₀ − ε), hi = min(1, x₀ + ε).

    ``x0`` any float tensor with values in [0, 1]; ``eps`` > 0 (finite). For ε ≥ 1 the box is the cube.
    """
    eps = _checks.real(eps, "eps", low=0, low_open=True)
    _checks.float_batch(x0, "x0", box=(0.0, 1.0))
    return (x0 - eps).clamp(0.0, 1.0), (x0 + eps).clamp(0.0, 1.0)


def _log_ce_rows(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log CE(logits_n, y_n) per row, exact for tiny losses: ``log_cross_entropy`` with per-row labels.

    The same operations in the same order as :func:`.wave_function.log_cross_entropy`, so a batch
    of one label gives bit-identical values.
    """
    z = logits - logits.gather(1, labels[:, None])
    others = torch.ones_like(z, dtype=torch.bool)
    others.scatter_(1, labels[:, None], False)
    a = z.masked_fill(~others, -math.inf).logsumexp(1)
    cut = math.log(torch.finfo(logits.dtype).eps)
    a_cut = a.clamp_min(cut)
    return torch.where(a < cut, a, torch.logaddexp(a_cut, torch.zeros_like(a_cut)).log())


@dataclass(frozen=True, eq=False)
class LocalMoments:
    """Local ψ of n images (Chapter 10): one :class:`Moments` each, and what the same points give for free.

    Attributes
    ----------
    moments
        tuple of n :class:`Moments`; ``box`` of each is (lo, hi) as float64 tensors shaped like one
        image (not floats: the box is a product of unequal intervals), ``log_norm2`` = ``log(|Ω| · mean w)``
    grad_l1_max
        (n,) float64: max over the ball samples (the final points, uniform or tilted; tilted points
        crowd where the loss is largest) of ‖∇_X log l(X)‖₁, the dual norm of L∞ — a
        CLEVER-style sampled local Lipschitz constant (Weng et al., 2018). For a confident network
        log CE ≈ max_{j≠Y}(z_j − z_Y) = −margin, so this estimates the Lipschitz constant of the margin.
    eps
        the radius ε
    """

    moments: tuple
    grad_l1_max: np.ndarray
    eps: float

    def __len__(self) -> int:
        return len(self.moments)

    def table(self, form: str = "paper") -> dict:
        """Per image, as (n,) float64 arrays: ``dx``, ``dp`` (jackknife-corrected aggregates in ``form``),
        ``dx_stderr``, ``dp_stderr``, ``product`` = dx·dp, ``mean_boundary`` (mean of B_i),
        ``ess``, ``ess_p``, ``khat_w``, ``khat_p``, ``reliable`` (bool array), ``grad_l1_max``."""
        rows = [(*m.aggregate_jk(form), *m.aggregate_stderr(form), float(m.boundary.mean()),
                 m.ess, m.ess_p, m.khat_w, m.khat_p, not m.unreliable) for m in self.moments]
        cols = np.array(rows, dtype=np.float64).reshape(len(rows), 10).T
        out = dict(zip(("dx", "dp", "dx_stderr", "dp_stderr", "mean_boundary", "ess", "ess_p", "khat_w",
                        "khat_p"), cols[:9]))
        out["product"] = out["dx"] * out["dp"]
        out["reliable"] = cols[9].astype(bool)
        out["grad_l1_max"] = np.asarray(self.grad_l1_max, dtype=np.float64)
        return out


def _as_images(x: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Rows as a batch of inputs of ``shape``; channels-last for images (faster convolutions)."""
    x = x.reshape(x.shape[0], *shape)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def _log_loss(model, x: torch.Tensor, labels: torch.Tensor, device):
    """log CE(model(x_n), y_n) and its input gradient for a batch: ``_evaluate_log``'s tuple, on the CPU."""
    rows = labels.to(device)

    def log_amplitude(t):
        logits = model(t)
        if logits.ndim != 2:
            raise ValueError(f"model must return logits (B, K), got {tuple(logits.shape)}")
        return _log_ce_rows(logits, rows)

    log_amplitude.log = log_amplitude
    log_l, g, scale, n_tiny, tiny = _evaluate_log(log_amplitude, x.to(device))
    return log_l.cpu(), g.detach().cpu(), scale, n_tiny, tiny


def local_moments(model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor, *, eps: float,
                  n_samples: int, generator: torch.Generator | None = None, n_groups: int = 32,
                  batch_size: int | None = None, warn: bool = True, sampler: str = "uniform",
                  pilot: int = 256, stages: int = 2) -> LocalMoments:
    """Moments of the local wave functions ψ_{x₀,Y} ∝ CE(model(X), Y), X uniform on B_ε(x₀) ∩ [0,1]^M.

    Parameters
    ----------
    model
        returns logits (B, K); put in eval mode for the estimate (mode restored, no weight gradients)
    x0
        ``(n, *input_shape)`` float images in [0, 1] (the centres; e.g. (n, 1, 28, 28))
    labels
        (n,) int64 labels Y in 0..K−1 (usually the true labels)
    eps
        L∞ radius ε > 0; ε ≥ 1 gives the whole cube [0,1]^M
    n_samples
        N ≥ 2 uniform points per image
    generator
        torch.Generator for the points; images are drawn in order, each image's N points in
        consecutive batches, so one image with ε ≥ 1 reproduces ``neural_moments`` exactly
    n_groups
        K ≥ 2 jackknife groups per image (point n to group n mod K)
    batch_size
        rows per forward/backward pass (images × points); default :func:`default_batch_size` (M).
        Several images share a pass when N is smaller than a batch (batched over images and samples)
    warn
        issue one ``UnreliableEstimateWarning`` naming how many images fail the reliability checks
        (ESS < 100 or Pareto k̂ > 0.7)
    sampler
        ``"uniform"``: points uniform on Ω; ``"tilted"``: importance sampling from the product of
        truncated exponentials of ``qnnlib.uncertainty.tilted``, its rates adapted per image from ``stages``
        rounds of ``pilot`` points (drawn from ``generator`` first, then discarded). The same
        integrals either way; near a confident image, where uniform points have an ESS of a few
        out of thousands, the tilted ones keep most of theirs (Chapter 10)
    pilot, stages
        pilot points per image and round (≥ 2) and the number of rounds (≥ 1); tilted only

    Returns a :class:`LocalMoments`. Memory: O(batch_size · M) plus O(K · M) per image of a pass
    (tilted: also O(pilot · M) per image of a pass).
    """
    _checks.tensor(x0, "x0")
    if x0.dim() < 2:
        raise ValueError(f"x0 must have shape (n, *input_shape), got {tuple(x0.shape)}")
    lo_all, hi_all = local_box(x0, eps)
    eps = float(eps)
    y_range = _checks.labels(labels, "labels", n=x0.shape[0])
    n = _check_positive_int("n_samples", n_samples, 2)
    n_groups = _check_positive_int("n_groups", n_groups, 2)
    if sampler not in LOCAL_SAMPLERS:
        raise ValueError(f"sampler must be one of {LOCAL_SAMPLERS}, got {sampler!r}")
    pilot = _check_positive_int("pilot", pilot, 2)
    stages = _check_positive_int("stages", stages, 1)
    shape = tuple(x0.shape[1:])
    m = math.prod(shape)
    dtype, device = _model_dtype_device(model)
    if batch_size is None:
        batch_size = default_batch_size(m, device)
    batch_size = _check_positive_int("batch_size", batch_size, 1)
    b = min(batch_size, n)  # points per image per pass
    per_pass = max(1, batch_size // b)  # images per pass
    k = min(n_groups, n)
    results, lipschitz = [], []
    with evaluation(model):
        for first in range(0, x0.shape[0], per_pass):
            idx = range(first, min(first + per_pass, x0.shape[0]))
            lo = lo_all[first:idx.stop].reshape(len(idx), 1, m).to(torch.float64)
            width = hi_all[first:idx.stop].reshape(len(idx), 1, m).to(torch.float64) - lo
            y = labels[first:idx.stop].to(torch.long)
            if first == 0:
                with torch.no_grad():
                    _checks.labels_below(y_range, model(x0[:1].to(device=device, dtype=dtype)).shape[-1], "labels")
            sums = [_Sums(k, m, centre=(lo[j, 0] + width[j, 0] / 2), n_total=n) for j in range(len(idx))]
            gmax = torch.zeros(len(idx), dtype=torch.float64)
            tilts = None
            if sampler == "tilted":
                def pilot_point(x, j, y=y):
                    rows = y[j:j + 1].repeat(x.shape[0])
                    log_l, g, scale, _, _ = _log_loss(model, _as_images(x.to(dtype), shape), rows, device)
                    return log_l, (g.reshape(x.shape[0], m).to(torch.float64) * scale[:, None])
                rates, _ = adapt_rates(pilot_point, lo[:, 0], width[:, 0], pilot=pilot, stages=stages,
                                       generator=generator, batch=b)
                tilts = rates * width[:, 0]
                log_width = width[:, 0].log().sum(1)
            for start in range(0, n, b):
                c = min(b, n - start)
                counts = torch.bincount(torch.arange(start, start + c) % k, minlength=k).tolist()
                log_q = None
                with _one_thread():
                    if tilts is None:
                        # One draw per image in order: for one image the stream equals moments()'s.
                        u = torch.stack([torch.rand(c, m, generator=generator, dtype=dtype) for _ in idx])
                        x = (u * width.to(dtype) + lo.to(dtype)).reshape(len(idx) * c, *shape)
                    else:
                        drawn = [tilted_sample(torch.rand(c, m, generator=generator, dtype=torch.float64), tilts[j])
                                 for j in range(len(idx))]
                        z = torch.stack([d[0] for d in drawn])
                        # log of the importance weight 1/q(X), q the density in X of the tilted proposal
                        log_q = torch.cat([log_width[j] - d[1] for j, d in enumerate(drawn)])
                        x = (z * width + lo).to(dtype).reshape(len(idx) * c, *shape)
                    x = _as_images(x, shape)
                log_l, g, scale, n_tiny, tiny = _log_loss(model, x, y.repeat_interleave(c), device)
                g_l1 = g.reshape(len(idx), c, m).abs().sum(-1).to(torch.float64).amax(1)
                gmax = torch.maximum(gmax, g_l1)
                x = x.cpu()
                for j in range(len(idx)):
                    r = slice(j * c, (j + 1) * c)
                    sums[j].add(counts, log_l[r], x[r], g[r], scale[r], n_tiny=n_tiny, tiny=tiny,
                                log_q=None if log_q is None else log_q[r])
            for j, s in enumerate(sums):
                # box (0, 1): _finish adds M·log(high − low) = 0 to log N²; the true Σ log h_i is added
                # here for uniform points (importance weights 1/q already carry the volume).
                result = _finish(s, shape, n, sampler, (0.0, 1.0))
                log_volume = float(width[j].log().sum()) if tilts is None else 0.0
                results.append(replace(result, log_norm2=result.log_norm2 + log_volume,
                                       box=(lo[j, 0].reshape(shape), (lo[j, 0] + width[j, 0]).reshape(shape))))
            lipschitz.append(gmax)
    bad = sum(1 for r in results if r.unreliable)
    if warn and bad:
        warnings.warn(f"{bad} of {len(results)} local estimates fail the reliability checks (ESS < 100 or "
                      f"k̂ > 0.7) at N = {n}; read them as indicative or draw more points",
                      UnreliableEstimateWarning, stacklevel=2)
    return LocalMoments(tuple(results), torch.cat(lipschitz).numpy(), eps)


def box_moments(amplitude, lo: torch.Tensor, hi: torch.Tensor, *, n_samples: int,
                generator: torch.Generator | None = None, n_groups: int = 32, batch_size: int = 4096,
                dtype: torch.dtype = torch.float64) -> Moments:
    """:func:`qnnlib.uncertainty.moments` on a product box Π_i [lo_i, hi_i] for any amplitude (Chapter 10).

    ``lo``, ``hi``: tensors of one input's shape with lo < hi everywhere (finite); ``amplitude`` maps
    (B, *shape) to (B,) non-negative values (or has a ``log`` form, see ``moments``). Points
    X = lo + (hi − lo) ⊙ U, U uniform on [0,1]^M from ``generator``; the returned Moments' ``box``
    is (lo, hi) as float64 tensors. The toy-model reference of the tests and of Chapter 10's figures.
    """
    _checks.tensor(lo, "lo")
    _checks.tensor(hi, "hi")
    if lo.shape != hi.shape or lo.numel() == 0:
        raise ValueError(f"lo and hi must have the same non-empty shape, got {tuple(lo.shape)} and {tuple(hi.shape)}")
    lo64, hi64 = lo.detach().to(torch.float64), hi.detach().to(torch.float64)
    if not bool(torch.isfinite(lo64).all() & torch.isfinite(hi64).all()) or not bool((lo64 < hi64).all()):
        raise ValueError("lo and hi must be finite with lo < hi in every coordinate")
    n = _check_positive_int("n_samples", n_samples, 2)
    n_groups = _check_positive_int("n_groups", n_groups, 2)
    batch_size = _check_positive_int("batch_size", batch_size, 1)
    shape, m = tuple(lo.shape), lo.numel()
    lo_f, w_f = lo64.flatten(), (hi64 - lo64).flatten()
    k = min(n_groups, n)
    sums = _Sums(k, m, centre=lo_f + w_f / 2, n_total=n)
    for start in range(0, n, batch_size):
        c = min(batch_size, n - start)
        counts = torch.bincount(torch.arange(start, start + c) % k, minlength=k).tolist()
        u = torch.rand(c, m, generator=generator, dtype=dtype)
        x = (u * w_f.to(dtype) + lo_f.to(dtype)).reshape(c, *shape)
        log_l, g, scale, n_tiny, tiny = _evaluate_log(amplitude, x)
        sums.add(counts, log_l, x, g, scale, n_tiny=n_tiny, tiny=tiny)
    result = _finish(sums, shape, n, "uniform", (0.0, 1.0))
    return replace(result, log_norm2=result.log_norm2 + float(w_f.log().sum()), box=(lo64, hi64))
