"""qnnlib.results: what a results file holds on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
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


def _schema2_record() -> dict:
    """A minimal valid schema-2 record: one epoch, one label, in both spaces."""
    label = {"dx": 15.0, "dp": 14.6, "dx_jk": 15.01, "dp_jk": 14.5, "dx_stderr": 0.005, "dp_stderr": 0.1,
             "dx_replicates": [15.0, 15.0], "dp_replicates": [14.6, 14.7], "ess": 700.0, "ess_p": 2000.0,
             "khat_w": 0.1, "khat_p": None, "reliable": True, "warnings": [], "n_samples": 16384, "resampled": []}
    space = {key: label[key] for key in ("dx", "dp", "dx_jk", "dp_jk", "dx_stderr", "dp_stderr", "ess", "ess_p",
                                          "khat_w", "khat_p", "reliable", "warnings")}
    space.update(dx_jk_stderr=0.005, dp_jk_stderr=0.1, aggregate_form="paper", frac_below_half=1.0,
                 min_product=0.002, mean_boundary=1.0, per_label=[label])
    epoch = {"epoch": 1, "train_loss": 0.1, "train_acc": 0.9, "test_acc": 0.9, "robust_acc": 0.8,
             "robust_acc_feature": 0.5, "logit_scale": 3.0, "pixel": space, "feature": json.loads(json.dumps(space)),
             "seconds": {"total": 1.0}}
    dataset = {"name": "mnist", "source": "x", "identity": "MNIST (official)"}
    provenance = {"qnnlib_version": "0", "git_commit": "x", "torch_version": "x", "device": "cpu", "dataset": dataset,
                  "seed": 0, "started": "t", "finished": None, "wall_seconds": 1.0}
    return {"schema": 2, "experiment": "mnist-cnn3", "config": {}, "provenance": provenance, "epochs": [epoch]}


def test_schema_2_requires_the_jackknife_values_and_diagnostics_in_every_space():
    record = _schema2_record()
    results.validate(record)
    del record["epochs"][0]["logit_scale"]
    with pytest.raises(results.ResultsError, match="logit_scale"):
        results.validate(record)
    record["epochs"][0]["logit_scale"] = 3.0
    for key in ("dx_jk", "reliable", "khat_p", "per_label"):
        broken = json.loads(json.dumps(record))
        del broken["epochs"][0]["feature"][key]
        with pytest.raises(results.ResultsError, match=f"epochs/0/feature.*'{key}'"):
            results.validate(broken)
    broken = json.loads(json.dumps(record))
    del broken["epochs"][0]["pixel"]["per_label"][0]["dx_replicates"]
    with pytest.raises(results.ResultsError, match="dx_replicates"):
        results.validate(broken)
    broken["epochs"][0]["pixel"]["per_label"][0]["dx_replicates"] = [1.0]
    broken["epochs"][0]["pixel"]["reliable"] = "yes"
    with pytest.raises(results.ResultsError, match="reliable"):
        results.validate(broken)


def test_older_schema_1_files_still_open_and_are_not_held_to_schema_2():
    path = Path(__file__).resolve().parents[1] / "book" / "results" / "cifar-cnn4.json"
    record = results.read_results(path)
    if record["schema"] != 1:
        pytest.skip("the CIFAR record has been re-recorded with schema 2")
    assert "dx_jk" not in record["epochs"][0]["pixel"]
    record["schema"] = 2  # the same content claimed as schema 2 is refused: the new fields are missing
    with pytest.raises(results.ResultsError, match="schema|required"):
        results.validate(record)
    assert results.SCHEMA_VERSION == max(results.SCHEMAS) == 2
