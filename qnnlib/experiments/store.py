"""A run's folder: its files, its lock, and the order in which they are written (Chapters 6–8).

The files of a run ``STEM`` (``NAME``, or ``NAME-fast`` in fast mode) in its folder ``OUT``:

=================  ==========================================================================
``STEM.lock``      held (``fcntl.flock``, exclusive) by the one process writing the run
``STEM.ckpt.pt``   **the commit record**: ``epoch``, ``config_hash``, ``record`` (the results
                   record as JSON text), ``model`` and ``optimizer`` state after that epoch
``STEM.json``      the results record for readers: a copy of the checkpoint's record
``STEM.npz``       the Fig. 1 snapshots (arrays of the snapshot epochs)
``STEM.weights.pt`` the final network (``epoch``, ``config_hash``, ``model``), after the last epoch
=================  ==========================================================================

Invariants (what makes a kill at any moment harmless):

1. Every file is written atomically (a temporary ``.NAME.*.tmp`` beside it, fsync, ``os.replace``):
   a reader sees the old or the new file, never a torn one. A temporary left by a kill is removed
   by the next run of the same ``STEM`` (under its lock); ``*.tmp`` is git-ignored.
2. One writer per run: the lock is taken before anything is read or written and held to the end;
   a second writer of the same run is refused with one line. Different runs in one folder have
   different locks. The kernel releases the lock when its process dies, however it dies.
3. Per epoch ``e`` the order is: snapshots ``npz`` (if ``e`` is a snapshot epoch), then the
   checkpoint (the commit of epoch ``e``), then the JSON, then (last epoch) the weights. So the
   checkpoint is never behind the JSON: an epoch is finished exactly when its checkpoint is on
   disk, and the JSON is at most one commit behind it. Resuming takes the record from the
   checkpoint (rewriting a lagging JSON), never recomputes a committed epoch, and drops snapshot
   arrays of uncommitted epochs.
4. A checkpoint is used only if its ``config_hash`` is that of the run's experiment and config,
   and the record's dataset identity is that of the data loaded now; anything else is refused
   before training. A JSON without a checkpoint is used only if it is finished (nothing to do).
5. ``--no-resume`` deletes the old files first, checkpoint first (the commit): a kill part-way
   leaves at most a stale JSON without a checkpoint, which is never resumed (invariant 4).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import results


class RunLocked(ValueError):
    """Another process is writing the same run."""


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run's files (see the module docstring)."""

    folder: Path
    stem: str

    @classmethod
    def of(cls, results_json: Path | str) -> "RunFiles":
        path = Path(results_json)
        return cls(path.parent, path.name.removesuffix(".json"))

    def _path(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"

    json = property(lambda self: self._path(".json"))
    npz = property(lambda self: self._path(".npz"))
    ckpt = property(lambda self: self._path(".ckpt.pt"))
    weights = property(lambda self: self._path(".weights.pt"))
    lock_file = property(lambda self: self._path(".lock"))

    def written(self) -> tuple[Path, ...]:
        """The run's data files, in the order ``--no-resume`` deletes them (the commit first)."""
        return (self.ckpt, self.json, self.npz, self.weights)


def config_hash(experiment: str, config: dict) -> str:
    """SHA-256 of the experiment's name and its full config (canonical JSON)."""
    text = json.dumps({"experiment": experiment, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def prepare_folder(out: Path) -> Path:
    """Create the results folder ``out``; ``ValueError`` in one line if it cannot be one."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out {out} cannot be created ({error.strerror or error})") from None
    return out


@contextlib.contextmanager
def locked(files: RunFiles):
    """Hold the run's exclusive lock for the ``with`` block; :class:`RunLocked` if another process has it.

    Also the up-front check that the folder is writable (the lock file is created in it).
    """
    try:
        fd = os.open(files.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise ValueError(f"--out {files.folder} is not writable ({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RunLocked(f"{files.json} is being written by another process (pid {holder}); wait for it to "
                            "finish, or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield files
    finally:
        os.close(fd)  # releases the lock


def clean_temporary(files: RunFiles) -> list[Path]:
    """Remove temporaries (``.NAME.*.tmp``) a killed writer of this run left; call under its lock."""
    removed = []
    for path in files.written():
        for tmp in files.folder.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def resume_derived(files: RunFiles, digest: str, identity: dict, dataset_identity: str, *, validate,
                   arrays: str) -> tuple[dict | None, dict | None]:
    """Where a run computed from a recorded network (a fragility table, a defence test) continues.

    Returns ``(record, arrays)`` of its last commit, the checkpoint's ``arrays`` entry as numpy
    arrays; ``(record, None)`` for a finished JSON whose checkpoint is gone (nothing to do); or
    ``(None, None)`` to start afresh (nothing there, or a JSON without its checkpoint that never
    finished: a ``--no-resume`` killed midway, invariant 5). ``validate(record, where=...)``
    checks the record. Refused with :class:`qnnlib.results.ResultsError`, in one line, before any
    work: another config (``digest``), another source network (``identity["weights_sha256"]``),
    other data (``dataset_identity``), a corrupt checkpoint.
    """
    another = "was made with another config; use --no-resume to overwrite it or --out for a new folder"
    if files.ckpt.exists():
        where = files.ckpt
        state = results.load_checkpoint(where)
        if state.get("config_hash") != digest:
            raise results.ResultsError(f"{where} {another}")
        try:
            record = json.loads(state["record"])
            found = {key: value.numpy() for key, value in state[arrays].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise results.ResultsError(f"checkpoint {where} is corrupt (its record or {arrays} cannot be "
                                       "read)") from None
        validate(record, where=str(where))
    elif files.json.exists():
        where, found = files.json, None
        record = results.read_json(where)
        validate(record, where=str(where))
        if config_hash(record["experiment"], record["config"]) != digest:
            raise results.ResultsError(f"{where} {another}")
        if record["provenance"]["finished"] is None:
            return None, None
    else:
        return None, None
    if record["source"]["weights_sha256"] != identity["weights_sha256"]:
        raise results.ResultsError(f"{where} was computed from another {identity['name']} network (its weights have "
                                   "changed since); use --no-resume or another --out")
    if record["provenance"]["dataset"]["identity"] != dataset_identity:
        raise results.ResultsError(f"{where} was made from {record['provenance']['dataset']['identity']}, but the "
                                   f"data found now is {dataset_identity}; point QNNLIB_DATA at the original data, "
                                   "or use --no-resume or another --out")
    return record, found


def discard(files: RunFiles) -> None:
    """Delete the run's files, the checkpoint (the commit) first; call under its lock."""
    for path in files.written():
        path.unlink(missing_ok=True)
