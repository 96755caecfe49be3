"""Results files of recorded runs: provenance, atomic writes, schema checks (Chapters 6–8).

A run writes ``NAME.json`` after every finished epoch (atomically: a temporary file, then
``os.replace``), so a run killed at any moment leaves either the previous or the new file, never a
torn one. Large arrays (the Fig. 1 snapshots) go to a side ``NAME.npz`` written the same way.

The JSON holds ``experiment``, ``config`` (every setting), ``provenance`` (qnnlib version,
git commit, torch version, device, dataset identity, seed, start/end time, wall seconds) and
``epochs``, one record per finished epoch (see ``EPOCH_KEYS``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np
import torch

from . import __version__

SCHEMA_VERSION = 2  # the version this qnnlib writes; every version in SCHEMAS is read
TOP_KEYS = ("schema", "experiment", "config", "provenance", "epochs")
PROVENANCE_KEYS = (
    "qnnlib_version", "git_commit", "torch_version", "device", "dataset", "seed",
    "started", "finished", "wall_seconds",
)
DATASET_KEYS = ("name", "source", "identity")
EPOCH_KEYS = (
    "epoch", "train_loss", "train_acc", "test_acc", "robust_acc", "robust_acc_feature",
    "pixel", "feature", "seconds",
)
SPACE_KEYS = (
    "dx", "dp", "dx_stderr", "dp_stderr", "aggregate_form", "frac_below_half", "min_product",
    "mean_boundary",
)

# JSON Schema (draft 2020-12) of a results record. The measured quantities a reader plots are
# required numbers; the diagnostics may be null (JSON has no NaN: a NaN is written as null).
_NUMBER = {"type": "number"}
_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_DIAGNOSTIC = {"type": ["number", "null"]}
_SPACE = {
    "type": "object",
    "required": list(SPACE_KEYS),
    "properties": {
        "dx": {"type": "number", "minimum": 0}, "dp": {"type": "number", "minimum": 0},
        "dx_stderr": _DIAGNOSTIC, "dp_stderr": _DIAGNOSTIC, "frac_below_half": _DIAGNOSTIC,
        "min_product": _DIAGNOSTIC, "mean_boundary": _DIAGNOSTIC, "frac_meeting_bound": _DIAGNOSTIC,
        "ess": _DIAGNOSTIC, "aggregate_form": {"enum": ["paper", "rss"]},
        "labels": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 9}},
        "dims": {"type": "integer", "minimum": 1}, "dropped": {"type": "integer", "minimum": 0},
    },
}
_EPOCH = {
    "type": "object",
    "required": list(EPOCH_KEYS),
    "properties": {
        "epoch": {"type": "integer", "minimum": 1}, "train_loss": _NUMBER, "train_acc": _FRACTION,
        "test_acc": _FRACTION, "robust_acc": _FRACTION, "robust_acc_feature": _FRACTION,
        "pixel": _SPACE, "feature": _SPACE,
        "seconds": {"type": "object", "required": ["total"], "additionalProperties": _NUMBER},
    },
}
_PROVENANCE = {
    "type": "object",
    "required": list(PROVENANCE_KEYS),
    "properties": {
        "qnnlib_version": {"type": "string"}, "git_commit": {"type": "string"},
        "torch_version": {"type": "string"}, "device": {"type": "string"},
        "dataset": {"type": "object", "required": list(DATASET_KEYS),
                    "properties": {key: {"type": "string"} for key in DATASET_KEYS}},
        "seed": {"type": "integer"}, "started": {"type": "string"}, "finished": {"type": ["string", "null"]},
        "wall_seconds": {"type": "number", "minimum": 0},
    },
}
_FINAL = {
    "type": "object",
    "required": ["n_test", "sweep"],
    "properties": {
        "n_test": {"type": "integer", "minimum": 1},
        "sweep": {"type": "object", "required": ["eps", "pixel", "feature"],
                  "properties": {key: {"type": "array", "items": _FRACTION} for key in ("eps", "pixel", "feature")}},
        # optional (runs recorded before it have it added by add_feature_scale): the final network's feature box
        "feature_scale": {"type": "array", "minItems": 1, "items": {"type": "number", "minimum": 0}},
    },
}
SCHEMA_V1 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "qnnlib results record, schema 1",
    "type": "object",
    "required": list(TOP_KEYS),
    "properties": {
        "schema": {"const": 1}, "experiment": {"type": "string"}, "config": {"type": "object"},
        "provenance": _PROVENANCE, "epochs": {"type": "array", "items": _EPOCH}, "final": _FINAL,
    },
}
# Schema 2 (the error bars and diagnostics of Chapter 5): every space of every epoch also holds
# the jackknife-corrected values, the diagnostics of the estimate and the replicates the
# jackknife is recomputed from, per label too.
SPACE_KEYS_V2 = SPACE_KEYS + (
    "dx_jk", "dp_jk", "dx_jk_stderr", "dp_jk_stderr", "ess", "ess_p", "khat_w", "khat_p", "reliable", "warnings",
    "per_label",
)
_WARNINGS = {"type": "array", "items": {"type": "string"}}
_LABEL_V2 = {
    "type": "object",
    "required": ["dx", "dp", "dx_jk", "dp_jk", "dx_stderr", "dp_stderr", "dx_replicates", "dp_replicates",
                 "ess", "ess_p", "khat_w", "khat_p", "reliable", "warnings", "n_samples", "resampled"],
    "properties": {
        "dx": {"type": "number", "minimum": 0}, "dp": {"type": "number", "minimum": 0},
        "dx_jk": _NUMBER, "dp_jk": _NUMBER, "dx_stderr": _DIAGNOSTIC, "dp_stderr": _DIAGNOSTIC,
        "dx_replicates": {"type": "array", "items": _NUMBER},
        "dp_replicates": {"type": "array", "items": _NUMBER},
        "ess": _DIAGNOSTIC, "ess_p": _DIAGNOSTIC, "khat_w": _DIAGNOSTIC, "khat_p": _DIAGNOSTIC,
        "tail_w": _DIAGNOSTIC, "tail_p": _DIAGNOSTIC,  # optional: runs recorded before TAIL_MIN lack them
        "reliable": {"type": "boolean"}, "warnings": _WARNINGS, "n_samples": {"type": "integer", "minimum": 2},
        "resampled": {"type": "array", "items": {
            "type": "object", "required": ["n_samples", "warnings"],
            "properties": {"n_samples": {"type": "integer", "minimum": 2}, "warnings": _WARNINGS}}},
    },
}
SCHEMA_V2 = copy.deepcopy(SCHEMA_V1)
SCHEMA_V2["title"] = "qnnlib results record, schema 2"
SCHEMA_V2["properties"]["schema"] = {"const": 2}
_SPACE_V2 = SCHEMA_V2["properties"]["epochs"]["items"]["properties"]["pixel"]
_SPACE_V2["required"] = list(SPACE_KEYS_V2)
_SPACE_V2["properties"].update({
    "dx_jk": _NUMBER, "dp_jk": _NUMBER, "dx_jk_stderr": _DIAGNOSTIC, "dp_jk_stderr": _DIAGNOSTIC,
    "ess_p": _DIAGNOSTIC, "khat_w": _DIAGNOSTIC, "khat_p": _DIAGNOSTIC, "reliable": {"type": "boolean"},
    "warnings": _WARNINGS, "per_label": {"type": "array", "minItems": 1, "items": _LABEL_V2},
})
SCHEMA_V2["properties"]["epochs"]["items"]["properties"]["feature"] = _SPACE_V2
_EPOCH_V2 = SCHEMA_V2["properties"]["epochs"]["items"]
_EPOCH_V2["required"].append("logit_scale")  # the temperature control's scale (experiments.logit_scale)
_EPOCH_V2["properties"]["logit_scale"] = {"type": "number", "minimum": 0}
# Optional: the local ψ of fixed test images (runs whose config sets local_images; measure.local_summary).
_EPOCH_V2["properties"]["local"] = {
    "type": "object",
    "required": ["n_images", "eps", "n_samples", "reliable_frac", "dx", "dp", "dx_stderr", "dp_stderr", "dx_sd",
                 "dp_sd", "product", "mean_boundary", "images"],
    "properties": {
        "n_images": {"type": "integer", "minimum": 1}, "eps": {"type": "number", "exclusiveMinimum": 0},
        "n_samples": {"type": "integer", "minimum": 2}, "reliable_frac": _FRACTION,
        "dx": {"type": "number", "minimum": 0}, "dp": {"type": "number", "minimum": 0},
        "dx_stderr": _DIAGNOSTIC, "dp_stderr": _DIAGNOSTIC, "dx_sd": _DIAGNOSTIC, "dp_sd": _DIAGNOSTIC,
        "product": _NUMBER, "mean_boundary": _DIAGNOSTIC,
        "images": {"type": "object", "required": ["index", "dx", "dp", "dx_stderr", "dp_stderr", "mean_boundary",
                                                   "reliable"]},
    },
}

# Every schema version this qnnlib reads. A later version (new fields) is added here as a copy of
# the previous one with its additions (``copy.deepcopy`` and edit), so older files still open.
SCHEMAS = {1: SCHEMA_V1, 2: SCHEMA_V2}


class ResultsError(ValueError):
    """A results file is missing a field, is corrupt, or was made with another config."""


def now() -> str:
    """The current UTC time as ISO 8601 (seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit(path: Path | None = None) -> str:
    """The commit of the checkout holding qnnlib (``+dirty`` if modified), or ``"unknown"``."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def device_description(device: torch.device | str) -> str:
    """Human-readable device: the GPU's name, or the CPU's architecture and thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} threads"


def provenance(*, device, dataset, seed: int, started: str) -> dict:
    """The provenance block of a results file (``finished``/``wall_seconds`` filled per epoch)."""
    return {
        "qnnlib_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "device": device_description(device),
        "dataset": {"name": dataset.name, "source": str(dataset.source), "identity": dataset.identity},
        "seed": int(seed),
        "started": started,
        "finished": None,
        "wall_seconds": 0.0,
    }


def _clean(value):
    """JSON-safe copy: tensors/arrays to lists, NaN/inf to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, record: dict) -> None:
    """Write ``record`` to ``path`` atomically, as indented JSON."""
    text = json.dumps(_clean(record), indent=1, allow_nan=False) + "\n"
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def write_npz(path: Path, arrays: dict) -> None:
    """Write arrays to a ``.npz`` atomically."""
    _atomic_write(Path(path), lambda handle: np.savez_compressed(handle, **arrays))


def save_checkpoint(path: Path, state: dict) -> None:
    """Save a checkpoint (tensors, numbers, strings only, so it loads with weights_only=True)."""
    _atomic_write(Path(path), lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ResultsError(f"checkpoint {path} is corrupt or not a qnnlib checkpoint ({error})") from error


def read_results(path: Path) -> dict:
    """Read and validate a results file; :class:`ResultsError` says what is wrong, in one line."""
    record = read_json(path)
    validate(record, where=str(path))
    return record


def read_json(path: Path):
    """The JSON value in ``path``; :class:`ResultsError` in one line if it is absent, a folder or corrupt."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"results file {path} does not exist") from None
    except IsADirectoryError:
        raise ResultsError(f"results file {path} is a folder, not a file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ResultsError(f"results file {path} is corrupt ({error})") from None
    except OSError as error:
        raise ResultsError(f"results file {path} cannot be read ({error})") from None
    return record


_VALIDATORS: dict[int, tuple] = {}


def _validator(schema: dict):
    """The jsonschema validator of ``schema`` (a module-level schema), checked and built once."""
    key = id(schema)
    if key not in _VALIDATORS:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _VALIDATORS[key] = (schema, cls(schema))  # the schema is kept: its id stays its own
    return _VALIDATORS[key][1]


def check_object(schema: dict, record, where: str) -> None:
    """:class:`ResultsError` in one line unless ``record`` is a JSON object that satisfies ``schema``
    (the first problem named as :func:`check_schema` does)."""
    if not isinstance(record, dict):
        raise ResultsError(f"{where}: not a JSON object")
    check_schema(_validator(schema), record, where)


def is_kind(path, kind: str) -> bool:
    """True if ``path`` is a readable JSON object whose ``"kind"`` is ``kind`` (what ``show`` dispatches on)."""
    try:
        record = read_json(path)
    except ResultsError:
        return False
    return isinstance(record, dict) and record.get("kind") == kind


def check_schema(validator, record, where: str) -> None:
    """:class:`ResultsError` naming the first problem ``validator`` (a jsonschema validator) finds in
    ``record``: the field's path and what is wrong, the message cut at 200 characters."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    if error is not None:
        at = "/".join(str(part) for part in error.absolute_path) or "top level"
        message = error.message if len(error.message) < 200 else error.message[:200] + "…"
        raise ResultsError(f"{where}: {at}: {message}")


def validate(record: dict, where: str = "results") -> None:
    """Check a results record against its JSON Schema (``SCHEMAS[record["schema"]]``).

    Raises :class:`ResultsError` naming the first problem (the field's path and what is wrong).
    Beyond the schema: epoch records are numbered 1, 2, … in order.
    """
    if not isinstance(record, dict):
        raise ResultsError(f"{where}: not a JSON object")
    version = record.get("schema")
    if "schema" not in record:
        raise ResultsError(f"{where}: missing field 'schema'")
    if isinstance(version, bool) or version not in SCHEMAS:
        raise ResultsError(f"{where}: schema {version!r}, expected one of {sorted(SCHEMAS)}")
    check_schema(_validator(SCHEMAS[version]), record, where)
    for n, epoch in enumerate(record["epochs"], start=1):
        if epoch["epoch"] != n:
            raise ResultsError(f"{where}: epoch records out of order at position {n}")
