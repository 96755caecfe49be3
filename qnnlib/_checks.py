"""Argument checks shared by the library's public functions (bad input, issue 17).

Each check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, meaningless
value) with a message that starts with the argument's name and states what is allowed, and
returns the value in the form the caller needs (a Python ``float``/``int``, the tensor itself).
Scalars may be Python or NumPy numbers (``0.1``, ``np.float32(0.1)``, ``np.int64(3)``) or 0-d
tensors; all give the same Python number.

Cost: every tensor check is one pass over the data (``torch.aminmax``) and one host
synchronisation, however large the tensor; dtype and shape checks cost nothing. None of these
belongs inside a per-step loop: check once, before it.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a tensor is checked: qnnlib.quantum needs NumPy only
    import torch

__all__ = ["real", "integer", "tensor", "float_batch", "box", "labels", "labels_below", "finite_loss"]


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_number(value, name: str, kind: str):
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {_describe(value)}")
    ndim = getattr(value, "ndim", None)  # NumPy scalars and 0-d arrays, 0-d tensors
    if ndim is not None and hasattr(value, "item"):
        if ndim != 0:
            raise TypeError(f"{name} must be {kind}, got an array of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {_describe(value)}")
    return value


def real(value, name: str, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite Python float inside [low, high] (ends open where asked).

    >>> real(0.1, "eps", low=0)
    0.1
    """
    interval = _interval(low, high, low_open, high_open)
    value = float(_as_number(value, name, f"a finite real number in {interval}"))
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number in {interval}, got {value!r}")
    if (low is not None and (value < low or low_open and value == low)
            or high is not None and (value > high or high_open and value == high)):
        raise ValueError(f"{name} must be a finite real number in {interval}, got {value!r}")
    return value


def integer(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a Python int inside [low, high]; floats (even 2.0) are a TypeError."""
    interval = _interval(low, high, False, False, integers=True)
    value = _as_number(value, name, f"an integer in {interval}")
    if not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer in {interval}, got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in {interval}, got {value}")
    return value


def _interval(low, high, low_open, high_open, *, integers=False) -> str:
    if integers:
        if low is not None and high is None:
            return f"{{{low}, {low + 1}, ...}}"
        return f"{{{low if low is not None else '...'}, ..., {high if high is not None else '...'}}}"
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"


def tensor(x, name: str) -> torch.Tensor:
    """``x`` must be a torch.Tensor (TypeError otherwise, naming NumPy's conversion)."""
    import torch

    if not torch.is_tensor(x):
        hint = " (convert with torch.as_tensor)" if hasattr(x, "__array__") else ""
        raise TypeError(f"{name} must be a torch.Tensor{hint}, got {type(x).__name__}")
    return x


def float_batch(x, name: str = "x", *, min_dim: int = 1, ndim: int | None = None,
                box: tuple[float, float] | None = None) -> torch.Tensor:
    """A non-empty floating-point tensor (N, ...) with N ≥ 1 and only finite values, inside ``box``.

    Integer images (e.g. uint8 in 0..255) are a TypeError that says to divide by 255: every
    function here assumes floating-point pixels in [0, 1]. ``box`` = (low, high), if given, bounds
    every value (pixels: (0, 1)). One pass over ``x``.
    """
    tensor(x, name)
    if not x.is_floating_point():
        hint = " (uint8 images: use x.float() / 255 for pixels in [0, 1])" if not x.is_complex() else ""
        raise TypeError(f"{name} must be a floating-point tensor{hint}, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s) (N, ...), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
    lo, hi = _range(x)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    if box is not None and (lo < box[0] or hi > box[1]):
        raise ValueError(f"{name} must lie inside the clamp box [{box[0]:g}, {box[1]:g}], "
                         f"got values in [{lo:.4g}, {hi:.4g}]")
    return x


def _range(x: torch.Tensor) -> tuple[float, float]:
    """min and max in one pass; NaN anywhere makes both NaN, inf shows in one of them."""
    import torch

    lo, hi = torch.aminmax(x.detach())
    pair = torch.stack((lo, hi)).tolist()  # one synchronisation for both
    return float(pair[0]), float(pair[1])


def box(clamp, name: str = "clamp") -> tuple[float, float] | None:
    """``None`` or a pair (low, high) of finite reals with low < high."""
    if clamp is None:
        return None
    try:
        low, high = clamp
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be None or a pair (low, high), got {_describe(clamp)}") from None
    low, high = real(low, f"{name}[0]"), real(high, f"{name}[1]")
    if not low < high:
        raise ValueError(f"{name} must be (low, high) with low < high, got {clamp}")
    return low, high


def labels(y, name: str = "y", *, n: int | None = None) -> tuple[int, int]:
    """An integer tensor of shape (n,); returns its (min, max) (one pass) for :func:`labels_below`."""
    import torch

    tensor(y, name)
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"{name} must be an integer tensor of class labels (torch.int64), got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"x and {name} must have the same batch size N, got x: {n}, {name}: {y.shape[0]}")
    if y.numel() == 0:
        raise ValueError(f"{name} must hold at least one label")
    lo, hi = _range(y)
    if lo < 0:
        raise ValueError(f"{name} must hold labels ≥ 0, got {int(lo)}")
    return int(lo), int(hi)


def labels_below(y_range: tuple[int, int], classes: int, name: str = "y") -> None:
    """Labels (min, max) must lie in 0..classes-1, the model's output size."""
    lo, hi = y_range
    if lo < 0 or hi >= classes:
        raise ValueError(f"{name} must hold labels in 0..{classes - 1} (the model's output size), "
                         f"got values in {lo}..{hi}")


def finite_loss(ok: torch.Tensor, what: str) -> None:
    """Raise when the flag ``ok`` (a bool tensor, kept on the device during a loop) is False."""
    if not bool(ok):
        raise ValueError(f"{what}: the model's output is not finite (NaN or inf logits); "
                         "the gradient, and so the attack, would be meaningless")
