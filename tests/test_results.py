"""qnnlib.results: what a results file holds on disk."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from qnnlib import results


def test_non_finite_numbers_are_written_as_null_in_strict_json(tmp_path):
    # A diagnostic can be NaN (an ESS without gradients, k̂ without a tail); JSON has no NaN, so the
    # file must hold null there and stay readable by any strict JSON parser.
    record = {"a": float("nan"), "b": [1.0, float("inf"), np.float32("-inf")],
              "c": {"d": np.float64("nan"), "e": torch.tensor([0.5, float("nan")])}, "f": 2}
    path = tmp_path / "r.json"
    results.write_json(path, record)

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant} written")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"a": None, "b": [1.0, None, None], "c": {"d": None, "e": [0.5, None]}, "f": 2}
    assert math.isfinite(data["b"][0])
