"""The ratio estimator of ψ's moments from weighted sums, and its error analysis (Chapter 5).

Every moment of SPEC §3 is a ratio Σ q w h / Σ q w of weighted sums over points (q = 1 for Monte
Carlo, quadrature weights for a grid). :class:`_Sums` accumulates these sums in float64, per
group of points; :func:`_finish` turns them into a :class:`Moments`, with delete-one-group
jackknife standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .wave_function import _one_thread

FORMS = ("paper", "rss")
# The estimators meet the bound exactly up to float64 rounding (see the package docstring); this
# relative slack only absorbs that rounding when :meth:`Moments.summary` counts coordinates.
BOUND_RTOL = 1e-9


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

