"""The results file of a fragility table: its schema, how the book reads it, its summary (Chapter 10).

``NAME.json`` (``"kind": "fragility"``) holds ``experiment``, ``config`` (every setting),
``provenance`` (qnnlib version, git commit, torch version, device, dataset identity, seed,
start/end time, wall seconds, resumptions), ``source`` (the recorded network: its name,
experiment, config hash, git commit, dataset and the SHA-256 of its weights), ``images`` (the
test-set indices in the order they were computed, the test accuracy, how they were chosen),
``chunks`` (per chunk: images, seed, seconds, reliable estimates, unbroken images), ``summary``
(counts and medians over the finished images, ``reliable_fraction`` among them) and, once every
chunk is done, ``correlation``: Spearman ρ of each predictor with the minimal ε, with its bootstrap
95 % interval. ``NAME.npz`` beside it holds one array per column of
:func:`qnnlib.fragility.fragility_table` and ``index``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import results

KIND = "fragility"
SCHEMA = 1
_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}
_NULLABLE = {"type": ["number", "null"]}
_CORRELATION = {"type": "object", "required": ["rho", "low", "high", "n", "p"],
                "properties": {"rho": _NULLABLE, "low": _NULLABLE, "high": _NULLABLE, "n": _COUNT, "p": _NULLABLE}}
FRAGILITY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "qnnlib fragility table, schema 1",
    "type": "object",
    "required": ["kind", "schema", "experiment", "config", "provenance", "source", "images", "chunks", "summary",
                 "correlation"],
    "properties": {
        "kind": {"const": KIND}, "schema": {"const": SCHEMA}, "experiment": {"type": "string"},
        "config": {"type": "object", "required": ["name", "source", "eps", "n_images", "chunk", "seed", "n_samples"]},
        "provenance": results.SCHEMA_V2["properties"]["provenance"],
        "source": {"type": "object", "required": ["name", "experiment", "config_hash", "git_commit", "dataset",
                                                  "weights_sha256"],
                   "properties": {"weights_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
        "images": {"type": "object", "required": ["index", "n_test", "test_accuracy", "selection"],
                   "properties": {"index": {"type": "array", "minItems": 1, "items": _COUNT},
                                  "n_test": _COUNT, "test_accuracy": {"type": "number", "minimum": 0, "maximum": 1}}},
        "chunks": {"type": "array", "items": {
            "type": "object", "required": ["chunk", "first", "n", "seed", "seconds", "reliable", "unbroken"],
            "properties": {"chunk": _COUNT, "first": _COUNT, "n": {"type": "integer", "minimum": 1}, "seed": _COUNT,
                           "seconds": _NUMBER, "reliable": _COUNT, "unbroken": _COUNT}}},
        "summary": {"type": ["object", "null"], "required": ["n_images", "reliable", "reliable_fraction", "unbroken"]},
        "correlation": {"type": ["object", "null"], "additionalProperties": _CORRELATION},
        # optional: the FAB cross-check of the bisection (config fab_images > 0), when the table is finished
        "cross_check": {"type": "object", "required": ["n", "fooled", "eps_fab", "eps_bisection", "ratio_median",
                                                       "within_10pct", "bisection_smaller", "steps", "restarts"]},
    },
}


def validate_fragility(record, where: str = "fragility table") -> None:
    """Check a fragility record against its JSON Schema; :class:`qnnlib.results.ResultsError` names
    the first problem. Beyond the schema: chunks numbered 0, 1, … and contiguous, within the images."""
    results.check_object(FRAGILITY_SCHEMA, record, where)
    first = 0
    for n, chunk in enumerate(record["chunks"]):
        if chunk["chunk"] != n or chunk["first"] != first:
            raise results.ResultsError(f"{where}: chunk records out of order at position {n}")
        first += chunk["n"]
    if first > len(record["images"]["index"]):
        raise results.ResultsError(f"{where}: the chunks hold {first} images, "
                                   f"the index {len(record['images']['index'])}")


def is_fragility(path) -> bool:
    """True if ``path`` is a readable JSON object of kind ``"fragility"`` (the CLI's ``show`` dispatches on it)."""
    return results.is_kind(path, KIND)


def read_fragility(path) -> dict:
    """Read and validate a fragility results file; ``ResultsError`` in one line if it is not one."""
    record = results.read_json(path)
    validate_fragility(record, where=str(path))
    return record


@dataclass(frozen=True, eq=False)
class FragilityRun:
    """A fragility table as the book reads it: the record, its per-image columns, where it lives.

    ``columns``: ``{column: (n,) array}`` for the finished images (``index`` their test-set
    indices); ``finished``: every chunk done and the correlation table present.
    """

    record: dict
    columns: dict
    path: Path

    @property
    def finished(self) -> bool:
        return self.record["provenance"]["finished"] is not None and self.record["correlation"] is not None


def load_fragility(path) -> FragilityRun:
    """The fragility table at ``path`` (``NAME.json`` and ``NAME.npz`` beside it)."""
    path = Path(path)
    record = read_fragility(path)
    npz = path.with_suffix(".npz")
    if not npz.exists():
        raise results.ResultsError(f"{npz} not found: the per-image columns of {path.name} are missing")
    with np.load(npz) as data:
        columns = {k: data[k] for k in data.files}
    done = sum(c["n"] for c in record["chunks"])
    if any(len(v) != done for v in columns.values()):
        raise results.ResultsError(f"{npz} holds another number of images than the {done} of {path.name}")
    return FragilityRun(record, columns, path)


def show_fragility(path) -> str:
    """A summary of a fragility results file (``python -m qnnlib show FILE``): settings, progress,
    how many local ψ estimates are reliable, and the correlation table when it is complete."""
    record = read_fragility(path)
    c, prov, s = record["config"], record["provenance"], record["summary"] or {}
    done = s.get("n_images", 0)
    median = s.get("median_min_eps")
    lines = [
        f"{record['experiment']}: network {record['source']['name']} "
        f"(weights {record['source']['weights_sha256'][:12]}), {prov['dataset']['identity']}, seed {prov['seed']}, "
        f"device {prov['device']}, commit {prov['git_commit'][:12]}, {prov['wall_seconds'] / 60:.1f} min",
        f"local ψ: ε {c['eps']:.4g}, N {c['n_samples']} ({c['sampler']}); minimal ε: PGD-{c['steps']}, "
        f"{c['restarts']} restart(s) + {c['targets']} targeted, tolerance {c['tol']:g}, up to {c['eps_max']:g}",
        f"images: {done} of {len(record['images']['index'])} done in {len(record['chunks'])} chunks; "
        + (f"reliable local ψ {s['reliable']}/{done} ({100 * s['reliable_fraction']:.0f} %), "
           f"unbroken {s['unbroken']}, median ε* {'none' if median is None else format(median, '.4g')}"
           if done else "none yet"),
    ]
    if record["correlation"] is None:
        lines.append("correlation with ε*: when every chunk is done")
    else:
        lines.append(f"{'predictor':>14} {'Spearman ρ':>11}  95 % interval      n")
        for name, r in record["correlation"].items():
            def f(v):
                return "   nan" if v is None else f"{v:+.3f}"
            lines.append(f"{name:>14} {f(r['rho']):>11}  [{f(r['low'])}, {f(r['high'])}] {r['n']:6d}")
    check = record.get("cross_check")
    if check:
        ratio = ("no image broken by both" if check["ratio_median"] is None else
                 f"ratio bisection/FAB median {check['ratio_median']:.3f} (range {check['ratio_min']:.3f}–"
                 f"{check['ratio_max']:.3f}), within 10 % on {check['within_10pct']}, bisection smaller on "
                 f"{check['bisection_smaller']}")
        lines.append(f"FAB cross-check (torchattacks, {check['steps']} steps, {check['restarts']} restarts) of the "
                     f"first {check['n']} images: FAB broke {check['fooled']}; {ratio}")
    return "\n".join(lines)

