"""The neural wave function ψ_Y ∝ l_Y = CE(f(X), Y): amplitudes and their evaluation (Chapter 3).

An *amplitude* is any callable mapping a batch X of shape ``(B, *input_shape)`` to the (B,)
tensor of unnormalised, non-negative values l(X); ψ = l / N with N² = ∫_Ω l² (Chapter 3). This
module builds the amplitude of a classifier (:func:`neural_amplitude`), evaluates l and its
input gradient ∇_X l in one backward pass (shared by every estimator), and holds the argument
checks the estimators share.
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Callable

import torch
import torch.nn.functional as F

Amplitude = Callable[[torch.Tensor], torch.Tensor]


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



def _evaluate_log(amplitude: Amplitude, x: torch.Tensor):
    """log l (B,) float64, a gradient ``grad`` (B, ...) and ``scale`` (B,) float64 with
    ∇ log l = scale · grad, plus the number of underflowed rows and the dtype's ``tiny``.

    If ``amplitude`` has a callable attribute ``log`` (a *log form*, X ↦ log l(X), as
    :func:`neural_amplitude` provides), log l and ∇ log l come from it directly (scale = 1):
    values far below the dtype's range (a confident network's loss e^{−100} in float32) stay
    exact. Otherwise l and g = ∇l come from :func:`_evaluate` and log l = log l, scale = 1/l
    (0 where l = 0: such points carry no weight).
    """
    log_form = getattr(amplitude, "log", None)
    if not callable(log_form):
        l, g = _evaluate(amplitude, x)
        tiny = torch.finfo(l.dtype).tiny
        l64 = l.to(torch.float64)
        scale = torch.where(l64 > 0, 1.0 / l64, torch.zeros_like(l64))
        return l64.log(), g, scale, int((l < tiny).sum()), tiny
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        log_l = log_form(x)
    if not isinstance(log_l, torch.Tensor) or not log_l.is_floating_point():
        raise ValueError("amplitude.log must return a real floating-point tensor")
    if log_l.shape != (x.shape[0],):
        raise ValueError(f"amplitude.log must map a batch {tuple(x.shape)} to shape ({x.shape[0]},), "
                         f"got {tuple(log_l.shape)}")
    if bool(torch.isnan(log_l).any() or (log_l == math.inf).any()):
        raise ValueError("amplitude.log returned nan or +inf (−inf, for l = 0, is allowed)")
    finite = torch.isfinite(log_l)
    g = None
    if log_l.requires_grad:
        (g,) = torch.autograd.grad(torch.where(finite, log_l, 0.0).sum(), x, allow_unused=True)
    if g is None:
        g = torch.zeros_like(x)
    else:
        g = torch.where(finite.reshape(-1, *[1] * (x.ndim - 1)), g, 0.0)
        if not bool(torch.isfinite(g).all()):
            raise ValueError("amplitude.log has non-finite gradients")
    return log_l.detach().to(torch.float64), g, torch.ones(x.shape[0], dtype=torch.float64), 0, 0.0


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



def log_cross_entropy(logits: torch.Tensor, label: int) -> torch.Tensor:
    """log CE(logits, Y) per row, exact even where the loss is far below the dtype's resolution.

    CE = log(1 + Σ_{k≠Y} e^{z_k − z_Y}) = softplus(a), a = logsumexp_{k≠Y}(z_k − z_Y); computed as
    logits − logsumexp it rounds to 0 once CE < ε·|z| (ε the dtype's epsilon: CE < 1e-5 for
    float32 logits of size 100), whereas log softplus(a) = a + O(e^a) for a < log ε keeps every
    digit. ``logits`` (B, K) → (B,), same dtype; −inf only for K = 1.
    """
    z = logits - logits[:, label:label + 1]
    others = torch.ones_like(z, dtype=torch.bool)
    others[:, label] = False
    a = z.masked_fill(~others, -math.inf).logsumexp(1)
    cut = math.log(torch.finfo(logits.dtype).eps)
    # Both branches are evaluated: the clamp keeps the unused one finite, so its zero gradient
    # cannot turn into 0·∞ = nan. logaddexp(a, 0) = log(1 + e^a) exactly (F.softplus turns
    # linear above a = 20, a relative error of e^{−20}).
    a_cut = a.clamp_min(cut)
    return torch.where(a < cut, a, torch.logaddexp(a_cut, torch.zeros_like(a_cut)).log())


def neural_amplitude(model: torch.nn.Module, label: int) -> Amplitude:
    """X ↦ l_Y(X) = CE(model(X), Y) per sample: the unnormalised neural wave function (Chapter 3).

    ψ_Y ∝ the loss itself — not exp(−l), not sqrt(l). The model must return logits (B, K);
    it is used as it is (put it in eval mode; :func:`neural_moments` does). The returned callable
    also has an attribute ``log``, X ↦ log l_Y(X) by ``log_cross_entropy``, which the
    estimators use: it stays exact where the network is so confident that l underflows.
    """

    def amplitude(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        target = torch.full((x.shape[0],), label, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction="none")

    def log_amplitude(x: torch.Tensor) -> torch.Tensor:
        return log_cross_entropy(model(x), label)

    amplitude.log = log_amplitude
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

