"""Tests for qnnlib._checks: the shared argument checks (properties, with hypothesis)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qnnlib import _checks

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
# Every way a caller may spell a real number; float32-representable values make them all equal.
SCALAR_TYPES = [float, np.float32, np.float64, np.array, torch.tensor]


@given(value=finite, make=st.sampled_from(SCALAR_TYPES))
def test_real_accepts_every_scalar_type_with_the_identical_float(value, make):
    out = _checks.real(make(value), "eps")
    assert type(out) is float and out == value


@given(value=st.integers(-10**9, 10**9), make=st.sampled_from([int, np.int64, np.int32, np.array, torch.tensor]))
def test_integer_accepts_every_integer_type_with_the_identical_int(value, make):
    if make is np.int32 and abs(value) >= 2**31:
        return
    out = _checks.integer(make(value), "steps")
    assert type(out) is int and out == value


@given(value=non_finite, make=st.sampled_from(SCALAR_TYPES), name=st.sampled_from(["eps", "alpha", "lr"]))
def test_real_rejects_any_non_finite_value_naming_the_argument(value, make, name):
    with pytest.raises(ValueError, match=f"^{name} must be a finite real number"):
        _checks.real(make(value), name)


@given(value=finite, low=finite, open_=st.booleans())
def test_real_enforces_the_lower_end_and_names_the_interval(value, low, open_):
    inside = value > low or (value == low and not open_)
    if inside:
        assert _checks.real(value, "alpha", low=low, low_open=open_) == value
    else:
        with pytest.raises(ValueError, match=r"^alpha must be a finite real number in [\[(]"):
            _checks.real(value, "alpha", low=low, low_open=open_)


@given(value=st.one_of(st.booleans(), st.text(max_size=3), st.lists(finite, min_size=2, max_size=3),
                       st.none(), st.just(np.zeros(2)), st.just(torch.zeros(2))))
def test_real_and_integer_reject_non_numbers_with_type_error(value):
    with pytest.raises(TypeError, match="^eps must be"):
        _checks.real(value, "eps")
    with pytest.raises(TypeError, match="^steps must be"):
        _checks.integer(value, "steps")


@given(value=finite.filter(lambda v: v != int(v) if math.isfinite(v) else True))
def test_integer_rejects_non_integral_floats(value):
    with pytest.raises(TypeError, match="^steps must be an integer"):
        _checks.integer(value, "steps")


@settings(max_examples=50)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 5)), where=st.data(), value=non_finite)
def test_float_batch_finds_a_single_non_finite_value_anywhere(shape, where, value):
    x = torch.rand(shape)
    index = tuple(where.draw(st.integers(0, n - 1)) for n in shape)
    x[index] = value
    with pytest.raises(ValueError, match="^images must be finite"):
        _checks.float_batch(x, "images")


@settings(max_examples=50)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 5)), where=st.data(),
       value=st.one_of(st.floats(1, 1e6, exclude_min=True, width=32), st.floats(-1e6, 0, exclude_max=True, width=32)))
def test_float_batch_finds_a_single_value_outside_the_box(shape, where, value):
    x = torch.rand(shape)
    _checks.float_batch(x, "x", box=(0.0, 1.0))
    index = tuple(where.draw(st.integers(0, n - 1)) for n in shape)
    x[index] = value
    with pytest.raises(ValueError, match=r"^x must lie inside the clamp box \[0, 1\]"):
        _checks.float_batch(x, "x", box=(0.0, 1.0))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_float_batch_says_to_divide_integer_images_by_255(dtype):
    with pytest.raises(TypeError, match=r"^x must be a floating-point tensor \(uint8 images: use x.float\(\) / 255"):
        _checks.float_batch(torch.zeros(2, 3, dtype=dtype), "x")


def test_float_batch_rejects_empty_scalar_and_misshapen_input():
    with pytest.raises(ValueError, match="^x must hold at least one sample"):
        _checks.float_batch(torch.zeros(0, 3), "x")
    with pytest.raises(ValueError, match="^x must have at least 1 dimension"):
        _checks.float_batch(torch.tensor(0.5), "x")
    with pytest.raises(ValueError, match="^x must have 2 dimensions"):
        _checks.float_batch(torch.zeros(2, 2, 2), "x", ndim=2)
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor \(convert with torch.as_tensor\)"):
        _checks.float_batch(np.zeros((2, 2)), "x")


@given(labels=st.lists(st.integers(-5, 20), min_size=1, max_size=8), classes=st.integers(1, 15))
def test_labels_are_accepted_exactly_when_all_lie_in_0_to_classes_minus_1(labels, classes):
    y = torch.tensor(labels)
    ok = all(0 <= v < classes for v in labels)
    try:
        _checks.labels_below(_checks.labels(y, "y", n=len(labels)), classes, "y")
    except ValueError as error:
        assert not ok and str(error).startswith("y must hold labels")
    else:
        assert ok


def test_labels_reject_float_bool_and_misshapen_tensors():
    for y, error in ((torch.zeros(3), TypeError), (torch.zeros(3, dtype=torch.bool), TypeError),
                     (torch.zeros(3, 1, dtype=torch.long), ValueError), (torch.zeros(0, dtype=torch.long), ValueError)):
        with pytest.raises(error, match="^y must"):
            _checks.labels(y, "y")
    with pytest.raises(ValueError, match="same batch size"):
        _checks.labels(torch.zeros(3, dtype=torch.long), "y", n=4)


def test_box_is_none_or_an_ordered_finite_pair():
    assert _checks.box(None) is None
    assert _checks.box((np.float32(0), 1)) == (0.0, 1.0)
    for bad, error in (((1, 0), ValueError), ((0, math.inf), ValueError), (0.5, TypeError), ((0, 1, 2), TypeError)):
        with pytest.raises(error, match="^clamp"):
            _checks.box(bad)
