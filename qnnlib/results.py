"""Results files of recorded runs: provenance, atomic writes, schema checks (Chapters 6–8).

A run writes ``NAME.json`` after every finished epoch (atomically: a temporary file, then
``os.replace``), so a run killed at any moment leaves either the previous or the new file, never a
torn one. Large arrays (the Fig. 1 snapshots) go to a side ``NAME.npz`` written the same way.

The JSON holds ``experiment``, ``config`` (every setting), ``provenance`` (SPEC §6: qnnlib version,
git commit, torch version, device, dataset identity, seed, start/end time, wall seconds) and
``epochs``, one record per finished epoch (see ``EPOCH_KEYS``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__

SCHEMA_VERSION = 1
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
    """Read and validate a results file; :class:`ResultsError` says what is wrong."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"results file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"results file {path} is corrupt ({error})") from None
    validate(record, where=str(path))
    return record


def validate(record: dict, where: str = "results") -> None:
    """Check the schema of a results record; raise :class:`ResultsError` naming the first problem."""
    if not isinstance(record, dict):
        raise ResultsError(f"{where}: not a JSON object")
    for key in TOP_KEYS:
        if key not in record:
            raise ResultsError(f"{where}: missing field {key!r}")
    if record["schema"] != SCHEMA_VERSION:
        raise ResultsError(f"{where}: schema {record['schema']!r}, expected {SCHEMA_VERSION}")
    for key in PROVENANCE_KEYS:
        if key not in record["provenance"]:
            raise ResultsError(f"{where}: provenance lacks {key!r}")
    for key in DATASET_KEYS:
        if key not in record["provenance"]["dataset"]:
            raise ResultsError(f"{where}: provenance.dataset lacks {key!r}")
    for n, epoch in enumerate(record["epochs"], start=1):
        for key in EPOCH_KEYS:
            if key not in epoch:
                raise ResultsError(f"{where}: epoch {n} lacks {key!r}")
        if epoch["epoch"] != n:
            raise ResultsError(f"{where}: epoch records out of order at position {n}")
        for space in ("pixel", "feature"):
            for key in SPACE_KEYS:
                if key not in epoch[space]:
                    raise ResultsError(f"{where}: epoch {n} {space} lacks {key!r}")
