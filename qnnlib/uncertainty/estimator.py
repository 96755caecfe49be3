"""The ratio estimator of ψ's moments from weighted sums, and its error analysis (Chapter 5).

Every moment of Chapter 5 is a ratio Σ q w h / Σ q w of weighted sums over points (q = 1 for Monte
Carlo, quadrature weights for a grid), with w = l² and h built from x and d = ∇ log l
(l g = w d, g² = w d²). :class:`_Sums` accumulates these sums per group of points in the log
domain: it keeps log(q w), shifts every weight by the running maximum over all batches so far
(rescaling the stored sums when the maximum grows) and sums in float64, so amplitudes of any
magnitude (1e±300 in float64, or a log-amplitude in float32) give the same ratios.
:func:`_finish` turns the sums into a :class:`Moments` with the delete-one-group jackknife
(Chapter 5): for a quantity θ, with θ̂ from all K groups and θ_(k) from all but group k,

    θ_J = K θ̂ − (K − 1) θ̄,  θ̄ = mean_k θ_(k);     SE = sqrt((K − 1)/K Σ_k (θ_(k) − θ̄)²).

θ_J removes the O(1/N) bias of the ratio; SE is the standard error of θ̂ and of θ_J alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .diagnostics import _khat_from_top, _tail_excess_from_top, tail_length, unreliable_reasons
from .wave_function import _one_thread

FORMS = ("paper", "rss")
# The estimators meet the bound exactly up to float64 rounding (see the package docstring); this
# relative slack only absorbs that rounding when :meth:`Moments.summary` counts coordinates.
BOUND_RTOL = 1e-9
# Points whose amplitude underflowed (0 or subnormal in its dtype) may carry at most this
# fraction of Σw before the estimate is refused as unrepresentable.
UNDERFLOW_RTOL = 1e-6


def jackknife(estimate, replicates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Delete-one-group jackknife over axis 0 of ``replicates`` (K, ...): (θ_J, SE), see module docstring.

    ``estimate`` is θ̂ from all groups (broadcastable to ``replicates.shape[1:]``). With K < 2
    there is nothing to leave out: returns (θ̂, 0).
    """
    estimate = torch.as_tensor(estimate, dtype=torch.float64)
    k = replicates.shape[0]
    if k < 2:
        return estimate.clone(), torch.zeros_like(estimate)
    mean = replicates.mean(0)
    stderr = ((k - 1) / k * ((replicates - mean) ** 2).sum(0)).sqrt()
    return k * estimate - (k - 1) * mean, stderr


def combine_stderr(stderrs) -> float:
    """Standard error of the mean of n independent estimates with standard errors s_k: sqrt(Σ s_k²) / n.

    Var(mean) = Σ Var_k / n², so the error of a mean shrinks like 1/√n for equal s_k; this is
    the combination used for class means (each class has its own points).
    """
    s = torch.as_tensor(stderrs, dtype=torch.float64).flatten()
    if s.numel() == 0:
        raise ValueError("stderrs must hold at least one value")
    return float((s**2).sum().sqrt() / s.numel())


def _aggregate(dx: torch.Tensor, dp: torch.Tensor, form: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Aggregates over the last dimension: paper form sqrt(Σ_i Δx_i), rss form sqrt(Σ_i Δx_i²)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "paper":
        return dx.sum(-1).sqrt(), dp.sum(-1).sqrt()
    return (dx**2).sum(-1).sqrt(), (dp**2).sum(-1).sqrt()


@dataclass(frozen=True, eq=False)
class Moments:
    """Per-coordinate moments of one neural wave function (Chapters 3–5).

    Every tensor is float64 with the shape of one input (``input_shape``), except the
    ``*_replicates`` fields, which have a leading axis of K leave-one-group-out estimates
    (K = 0 for grid quadrature) used for standard errors of derived quantities.

    Attributes
    ----------
    mean_x, dx, mean_p, dp
        the plain ratio estimates of <x_i>, Δx_i, <p_i>, Δp_i
    boundary
        B_i = 1 + 2∫(x_i − <x_i>) ψ ∂_iψ dX (the volume form)
    dx_stderr, dp_stderr, boundary_stderr, product_stderr, mean_x_stderr, mean_p_stderr
        delete-one-group jackknife standard errors of Δx_i, Δp_i, B_i, Δx_iΔp_i, <x_i>, <p_i>
        (zeros for grid quadrature, whose error is not statistical); each is the error bar of
        the plain estimate and of its jackknife-corrected ``*_jk`` value alike
    mean_x_jk, dx_jk, mean_p_jk, dp_jk, boundary_jk, product_jk
        jackknife bias-corrected estimates θ_J = Kθ̂ − (K−1)θ̄ (equal to the plain ones for grids)
    ess
        effective sample size (Σ q w)² / Σ (q w)² of the weights w = l² (q = quadrature weights)
    ess_p
        the same for the weights behind <p_i²>, v = q Σ_i g_i² per point (nan if ψ is constant)
    khat_w, khat_p
        Pareto k̂ of the upper tails of w and v (``pareto_khat``; nan
        for grids and for fewer than 5 distinct tail values)
    tail_w, tail_p
        ``tail_excess`` of w and v: log of how many average weights their k̂ tails reach above
        the tail's threshold (a k̂ above 0.7 counts only from log ``TAIL_MIN`` = 0 on; nan for grids)
    n_samples
        number of points the amplitude was evaluated at
    sampler
        "uniform", "sobol" or "grid"
    dx_replicates, dp_replicates
        ``(K, *input_shape)`` jackknife replicates of Δx and Δp
    log_norm2
        log of the estimate of N_Y² = ∫_Ω l² dX (Monte Carlo: the volume of Ω times the mean of w), for the face
        form of B_i (``face_boundary_mc``)
    box
        (low, high), the box Ω = [low, high]^M of the estimate
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
    mean_x_stderr: torch.Tensor = None
    mean_p_stderr: torch.Tensor = None
    mean_x_jk: torch.Tensor = None
    dx_jk: torch.Tensor = None
    mean_p_jk: torch.Tensor = None
    dp_jk: torch.Tensor = None
    boundary_jk: torch.Tensor = None
    product_jk: torch.Tensor = None
    ess_p: float = math.nan
    khat_w: float = math.nan
    khat_p: float = math.nan
    tail_w: float = math.nan
    tail_p: float = math.nan
    log_norm2: float = math.nan
    box: tuple = None

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

    @property
    def unreliable(self) -> list[str]:
        """The reliability checks this estimate fails (ESS < 100, Pareto k̂ > 0.7), as phrases; [] if none.

        Grid quadrature is never flagged: its weights are deterministic.
        """
        if self.sampler == "grid":
            return []
        return unreliable_reasons(self.ess, self.ess_p, self.khat_w, self.khat_p, self.tail_w, self.tail_p)

    def aggregate(self, form: str = "paper") -> tuple[float, float]:
        """(Δx, Δp) over all coordinates, plain ratio estimates.

        ``form="paper"``: Δx = (Σ_i Δx_i)^{1/2}, as the paper typesets it; ``form="rss"``:
        Δx = (Σ_i Δx_i²)^{1/2}, the root-sum-square. Same for Δp.
        """
        dx, dp = _aggregate(self.dx.flatten(), self.dp.flatten(), form)
        return float(dx), float(dp)

    def aggregate_replicates(self, form: str = "paper") -> tuple[torch.Tensor, torch.Tensor]:
        """(Δx, Δp) of :meth:`aggregate` recomputed from each delete-one-group replicate: two (K,) tensors.

        Enough to recompute the jackknife later (``jackknife`` with ``aggregate``); empty
        for grid quadrature (K = 0).
        """
        k = self.dx_replicates.shape[0]
        return _aggregate(self.dx_replicates.reshape(k, -1), self.dp_replicates.reshape(k, -1), form)

    def _aggregate_jackknife(self, form: str):
        dx, dp = _aggregate(self.dx.flatten(), self.dp.flatten(), form)
        if self.dx_replicates.shape[0] == 0:  # grid quadrature: nothing to leave out
            return (dx, torch.zeros_like(dx)), (dp, torch.zeros_like(dp))
        rx, rp = self.aggregate_replicates(form)
        return jackknife(dx, rx), jackknife(dp, rp)

    def aggregate_stderr(self, form: str = "paper") -> tuple[float, float]:
        """Jackknife standard errors of :meth:`aggregate` (and of :meth:`aggregate_jk`); zeros for grids."""
        (_, dx_se), (_, dp_se) = self._aggregate_jackknife(form)
        return float(dx_se), float(dp_se)

    def aggregate_jk(self, form: str = "paper") -> tuple[float, float]:
        """(Δx, Δp) jackknife bias-corrected: θ_J = Kθ̂ − (K−1)θ̄ of the aggregate itself (Chapter 5).

        The aggregate is recomputed from each leave-one-group-out replicate, so the correction
        covers the bias of the square roots as well as that of the ratios. Equal to
        :meth:`aggregate` for grid quadrature. Error bar: :meth:`aggregate_stderr`.
        """
        (dx, _), (dp, _) = self._aggregate_jackknife(form)
        return float(dx), float(dp)

    def summary(self) -> dict:
        """Chapter 4's bound diagnostics, Chapter 5's reliability diagnostics and both aggregate
        forms, as plain Python numbers.

        Keys: ``frac_below_half`` (fraction of coordinates with Δx_iΔp_i < 1/2), ``min_product``,
        ``mean_boundary`` (mean of B_i), ``frac_meeting_bound`` (fraction with
        Δx_iΔp_i ≥ ``|1 − B_i|/2``), ``dx_paper``, ``dp_paper``, ``dx_rss``, ``dp_rss`` (plain),
        ``dx_paper_jk``, ``dp_paper_jk``, ``dx_rss_jk``, ``dp_rss_jk`` (jackknife-corrected),
        ``dx_paper_stderr``, ``dp_paper_stderr``, ``dx_rss_stderr``, ``dp_rss_stderr`` (jackknife
        standard errors of both), ``ess``, ``ess_p``, ``khat_w``, ``khat_p``, ``tail_w``, ``tail_p``, ``reliable``
        (no reliability check failed), ``n_samples``.
        """
        product = self.product.flatten()
        out = {
            "frac_below_half": float((product < 0.5).double().mean()),
            "min_product": float(product.min()),
            "mean_boundary": float(self.boundary.mean()),
            "frac_meeting_bound": float(self.meets_bound.double().mean()),
        }
        for form in FORMS:
            out[f"dx_{form}"], out[f"dp_{form}"] = self.aggregate(form)
        for form in FORMS:
            out[f"dx_{form}_jk"], out[f"dp_{form}_jk"] = self.aggregate_jk(form)
            out[f"dx_{form}_stderr"], out[f"dp_{form}_stderr"] = self.aggregate_stderr(form)
        out.update(ess=self.ess, ess_p=self.ess_p, khat_w=self.khat_w, khat_p=self.khat_p,
                   tail_w=self.tail_w, tail_p=self.tail_p, reliable=not self.unreliable, n_samples=self.n_samples)
        return out


class _Sums:
    """Per group k, shifted float64 sums: Σa, Σa², Σav, Σ(av)² and per coordinate Σa x_c, Σa x_c²,
    Σa d, Σa d², Σa d x_c, where a = q w e^{−c} (c the running maximum of log q w), d = ∇ log l
    and v = Σ_i d_i² (so a v = q Σ_i g_i² e^{−c}).

    Coordinates are stored relative to the centre of the box, so the subtraction in
    Δx² = <x²> − <x>² loses no digits for boxes far from the origin. Rows are converted to
    float64 in chunks of at most ``CHUNK`` rows into buffers allocated once: the sums then cost
    a few matrix–vector products per chunk and no large temporaries. With ``n_total`` given, the
    largest log-weights are kept for the Pareto k̂ of both weight sets.
    """

    CHUNK = 512

    def __init__(self, n_groups: int, n_dims: int, centre: float, n_total: int | None = None):
        self.shift = -math.inf
        self.w, self.ww, self.v, self.vv = torch.zeros(4, n_groups, dtype=torch.float64)
        self.s = torch.zeros(n_groups, 5, n_dims, dtype=torch.float64)
        self.centre = centre
        self.keep = tail_length(n_total) + 1 if n_total else 0
        self.top_w = self.top_v = torch.empty(0, dtype=torch.float64)
        self.n_tiny, self.log_tiny = 0, -math.inf
        self._x, self._g, self._t = torch.empty(3, self.CHUNK, n_dims, dtype=torch.float64)

    def add(self, counts, log_l, x, grad, scale, q=None, n_tiny: int = 0, tiny: float = 0.0, log_q=None):
        """Add one batch whose first counts[0] rows belong to group 0, the next counts[1] to group 1, ….

        ``log_l`` (b,) float64: log l per row (−inf where l = 0); ``grad`` (b, ...) any float
        dtype and ``scale`` (b,) float64 with ∇ log l = scale · grad; ``q`` (b,) positive
        weights per row (quadrature weights; default 1), or their logs ``log_q`` (importance
        weights 1/q(X) in hundreds of dimensions leave float64's range); ``n_tiny`` rows of this
        batch had an amplitude below ``tiny`` (underflowed in its dtype).
        """
        if n_tiny:
            self.n_tiny += n_tiny
            self.log_tiny = max(self.log_tiny, 2 * math.log(tiny))
        if q is not None:
            log_q = q.to(torch.float64).log() if log_q is None else log_q + q.to(torch.float64).log()
        with _one_thread():
            self._add(counts, log_l, x, grad, scale, log_q)

    def _rescale(self, new_shift: float):
        factor = math.exp(self.shift - new_shift) if self.shift > -math.inf else 0.0
        self.w *= factor
        self.v *= factor
        self.s *= factor
        self.ww *= factor * factor
        self.vv *= factor * factor
        self.shift = new_shift

    def _add(self, counts, log_l, x, grad, scale, log_q):
        b = log_l.shape[0]
        log_qw = 2.0 * log_l.to(torch.float64)
        if log_q is not None:
            log_qw = log_qw + log_q.to(torch.float64)
        top = float(log_qw.max())
        if top == -math.inf:  # every amplitude is 0 in this batch: nothing to add
            return
        if top > self.shift:
            self._rescale(top)
        a = (log_qw - self.shift).exp()
        scale = scale.to(torch.float64)
        x = x.detach().reshape(b, -1)
        grad = grad.detach().reshape(b, -1)
        log_v = torch.empty(b, dtype=torch.float64)
        start = 0
        for k, count in enumerate(counts):
            for first in range(start, start + int(count), self.CHUNK):
                r = slice(first, min(first + self.CHUNK, start + int(count)))
                c = r.stop - r.start
                xc, dc, tc = self._x[:c], self._g[:c], self._t[:c]
                xc.copy_(x[r]).sub_(self.centre)
                # d = ∇ log l row by row (scale·grad: 1/l for an amplitude, 1 for a log form);
                # scale² alone could leave float64's range for l = 1e±200.
                dc.copy_(grad[r]).mul_(scale[r].unsqueeze(1))
                ar = a[r]
                self.w[k] += ar.sum()
                self.ww[k] += (ar * ar).sum()
                self.s[k, 0] += ar @ xc
                self.s[k, 2] += ar @ dc
                self.s[k, 1] += ar @ torch.mul(xc, xc, out=tc)
                self.s[k, 4] += ar @ torch.mul(dc, xc, out=tc)
                torch.mul(dc, dc, out=tc)
                self.s[k, 3] += ar @ tc
                av = ar * tc.sum(1)  # q Σ_i g_i² e^{−c} per point
                self.v[k] += av.sum()
                self.vv[k] += (av * av).sum()
                log_v[r] = av.log() + self.shift
            start += int(count)
        if self.keep:
            self.top_w = torch.cat([self.top_w, log_qw]).topk(min(self.keep, self.top_w.numel() + b)).values
            self.top_v = torch.cat([self.top_v, log_v]).topk(min(self.keep, self.top_v.numel() + b)).values


def _estimates(w: torch.Tensor, s: torch.Tensor, centre: float):
    """The ratios of Chapter 5 from raw sums; leading dimensions of ``w`` and ``s`` broadcast."""
    w = w.unsqueeze(-1)
    mean_xc = s[..., 0, :] / w
    dx = (s[..., 1, :] / w - mean_xc**2).clamp_min(0.0).sqrt()
    mean_p = s[..., 2, :] / w
    dp = (s[..., 3, :] / w - mean_p**2).clamp_min(0.0).sqrt()
    # Σ l g (x − <x>) = Σ l g x_c − <x_c> Σ l g: centring after the fact is exact.
    boundary = 1.0 + 2.0 * (s[..., 4, :] - mean_xc * s[..., 2, :]) / w
    return mean_xc + centre, dx, mean_p, dp, boundary


def _finish(sums: _Sums, input_shape: tuple, n_samples: int, sampler: str, box: tuple) -> Moments:
    """The :class:`Moments` of the sums; Monte Carlo (``sampler`` ≠ "grid") scales N² by the box volume."""
    with _one_thread():
        return _finish_sums(sums, input_shape, n_samples, sampler, box)


def _finish_sums(sums: _Sums, input_shape: tuple, n_samples: int, sampler: str, box: tuple) -> Moments:
    total_w, total_s = sums.w.sum(0), sums.s.sum(0)
    if not total_w > 0:
        raise ValueError("amplitude is zero at every sample: ψ cannot be normalised")
    if sums.n_tiny and math.log(sums.n_tiny) + sums.log_tiny > math.log(UNDERFLOW_RTOL * total_w) + sums.shift:
        raise ValueError(
            f"amplitude underflows: {sums.n_tiny} of {n_samples} values are 0 or subnormal in their dtype "
            "and could carry a visible part of ∫ψ²; evaluate in float64, or give the amplitude a log form "
            "(an attribute `log` returning log l, as neural_amplitude does)")
    plain = _estimates(total_w, total_s, sums.centre)
    mean_x, dx, mean_p, dp, boundary = plain
    k = sums.w.shape[0]
    if k > 1:
        reps = _estimates(total_w - sums.w, total_s - sums.s, sums.centre)
        dx_k, dp_k = reps[1], reps[3]
    else:
        reps = tuple(t.unsqueeze(0) for t in plain)
        dx_k, dp_k = (torch.zeros(0, dx.numel(), dtype=torch.float64),) * 2
    jk = [jackknife(theta, rep if k > 1 else rep[:0]) for theta, rep in
          zip((*plain, dx * dp), (*reps, reps[1] * reps[3]))]
    shape = tuple(input_shape)

    def r(t):
        return t.reshape(shape)

    total_v = sums.v.sum()
    log_norm2 = sums.shift + math.log(total_w)
    log_norm_w = log_norm2  # log Σ q w and log Σ q v, on the scale of the kept top log-weights
    log_norm_v = sums.shift + math.log(total_v) if total_v > 0 else math.nan
    if sampler != "grid":  # N² = |Ω| · mean w; quadrature weights already carry the volume
        log_norm2 += math.prod(shape) * math.log(box[1] - box[0]) - math.log(n_samples)
    return Moments(
        mean_x=r(mean_x), dx=r(dx), mean_p=r(mean_p), dp=r(dp), boundary=r(boundary),
        dx_stderr=r(jk[1][1]), dp_stderr=r(jk[3][1]), boundary_stderr=r(jk[4][1]), product_stderr=r(jk[5][1]),
        ess=float(total_w**2 / sums.ww.sum()),
        n_samples=int(n_samples),
        sampler=sampler,
        dx_replicates=dx_k.reshape((-1, *shape)),
        dp_replicates=dp_k.reshape((-1, *shape)),
        mean_x_stderr=r(jk[0][1]), mean_p_stderr=r(jk[2][1]),
        mean_x_jk=r(jk[0][0]), dx_jk=r(jk[1][0]), mean_p_jk=r(jk[2][0]), dp_jk=r(jk[3][0]),
        boundary_jk=r(jk[4][0]), product_jk=r(jk[5][0]),
        ess_p=float(total_v**2 / sums.vv.sum()) if total_v > 0 else math.nan,
        khat_w=_khat_from_top(sums.top_w, n_samples) if sums.keep else math.nan,
        khat_p=_khat_from_top(sums.top_v, n_samples) if sums.keep else math.nan,
        tail_w=_tail_excess_from_top(sums.top_w, n_samples, log_norm_w) if sums.keep else math.nan,
        tail_p=_tail_excess_from_top(sums.top_v, n_samples, log_norm_v) if sums.keep else math.nan,
        log_norm2=log_norm2,
        box=(float(box[0]), float(box[1])),
    )
