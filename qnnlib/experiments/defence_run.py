"""The recorded defence test: does masking the most strongly coupled inputs make a network robust? (Chapter 10)

A defence experiment ``defence-NET`` reads the finished recorded network ``NET`` and

1. scores every input component on ``n_calib`` seeded training images (:func:`qnnlib.defence.coupling_scores`:
   the mean ``|B_i − 1|`` of the local ψ at ε, and the mean ``|∂ log CE / ∂x_i|`` as the saliency
   control);
2. for each k of ``ks`` builds masks of k components — the k most coupled, the k most salient and
   ``random_masks`` random ones — plus the unmasked network (k = 0), each filling its masked
   components with the calibration images' mean;
3. per mask (a *unit*), on ``n_test`` seeded test images: clean accuracy and accuracy under the
   attack of :func:`qnnlib.attacks.survives` at ε on the masked network (the attack sees the mask),
   then the same after a natural fine-tune of the masked network (:func:`qnnlib.defence.finetune`,
   ``finetune_epochs`` over ``finetune_images`` training images at rate ``finetune_lr``; the
   unmasked unit gets the same fine-tune, the control for fine-tuning itself).

Files of a run ``STEM`` (``defence-NET``, or ``defence-NET-fast``), with the lock, atomic writes and
``--no-resume`` order of :mod:`.store`: ``STEM.ckpt.pt`` (the commit: ``config_hash``, the record as
JSON text, the arrays), ``STEM.npz`` (``coupling``, ``saliency``, ``fill`` (M,), ``masks`` (U, M),
``clean``, ``robust``, ``clean_ft``, ``robust_ft`` (U, n_test) bool, the last two only with
``finetune_epochs`` > 0, ``calib_index``, ``test_index``),
``STEM.json`` (the record: config, provenance, source network, units with their accuracies).
The calibration and every unit are committed in that order (checkpoint, npz, JSON): a kill loses
at most the unit in progress, and a rerun continues with the next one. Every random draw is seeded
by (seed, step), so a resumed run equals an uninterrupted one on the same machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import attacks, defence, results
from ..data import load_dataset
from . import store
from .configs import MAX_SEED, RESULTS_DIR, RUNS_DIR, _coerce, _type_ok
from .fragility_runs import _source
from .recorded import locate_recorded
from .runner import _device

KIND = "defence"
SCHEMA = 1


@dataclass(frozen=True)
class DefenceConfig:
    """Every setting of a defence test; stored in full in its results file (see the module docstring)."""

    name: str
    source: str
    eps: float = 0.1
    n_calib: int = 200
    n_samples: int = 1024
    ks: tuple = (16, 32, 64, 128)
    random_masks: int = 2
    n_test: int = 1000
    steps: int = 20
    restarts: int = 1
    targets: int = 3
    rel_alpha: float = 2.5
    finetune_epochs: int = 1
    finetune_images: int = 60000
    finetune_lr: float = 1e-4
    seed: int = 0

    def as_dict(self) -> dict:
        return results._clean(dataclasses.asdict(self))

    def units(self) -> list[tuple[str, int, int]]:
        """(kind, k, replicate) of every mask, in the order they are computed: the unmasked network first."""
        kinds = [("coupling", 0), ("saliency", 0)] + [("random", r) for r in range(self.random_masks)]
        return [("none", 0, 0)] + [(kind, k, r) for k in self.ks for kind, r in kinds]


DEFENCE_CONFIGS = {"defence-mnist-cnn3": DefenceConfig("defence-mnist-cnn3", "mnist-cnn3")}
DEFENCE_FAST = dict(n_calib=10, n_samples=128, ks=(16, 64), random_masks=1, n_test=100, steps=5, targets=1,
                    finetune_images=2000)


def _rules() -> dict:
    def ints(lo, hi):
        return lambda v, c: lo <= v <= hi

    def reals(lo, hi):
        return lambda v, c: math.isfinite(v) and lo < v <= hi

    return {
        "eps": ("(0, 1]", reals(0, 1)),
        "n_calib": ("1..10000", ints(1, 10_000)),
        "n_samples": ("2..1000000", ints(2, 1_000_000)),
        "ks": ("1 to 8 distinct sizes in 1..10000, increasing", lambda v, c: 1 <= len(v) <= 8 and all(
            1 <= k <= 10_000 for k in v) and list(v) == sorted(set(v))),
        "random_masks": ("0..10", ints(0, 10)),
        "n_test": ("1..10000", ints(1, 10_000)),
        "steps": ("1..10000", ints(1, 10_000)),
        "restarts": ("0..100 (restarts + targets ≥ 1)", lambda v, c: 0 <= v <= 100 and v + c.targets >= 1),
        "targets": ("0..9 (restarts + targets ≥ 1)", lambda v, c: 0 <= v <= 9 and v + c.restarts >= 1),
        "rel_alpha": ("(0, 100]", reals(0, 100)),
        "finetune_epochs": ("0..100", ints(0, 100)),
        "finetune_images": ("1..1000000", ints(1, 1_000_000)),
        "finetune_lr": ("(0, 1]", reals(0, 1)),
        "seed": (f"0..{MAX_SEED}", ints(0, MAX_SEED)),
    }


def allowed_defence() -> str:
    """The settable keys of a defence test and their ranges, on one line."""
    return "; ".join(f"{key}: {words}" for key, (words, _) in _rules().items())


def describe_defence() -> str:
    """One line per named defence test (``python -m qnnlib list``)."""
    return "\n".join(f"{name:24s} defence test of {c.source}: mask the k ∈ {list(c.ks)} most coupled inputs "
                     f"(controls: saliency, random), robust accuracy at ε = {c.eps:g} on {c.n_test} test images"
                     for name, c in DEFENCE_CONFIGS.items())


def configure_defence(name: str, /, *, fast: bool = False, overrides: dict | None = None) -> DefenceConfig:
    """The named defence config, shrunk in fast mode, with ``overrides`` applied; one ``ValueError``
    naming a bad key or value, before any work."""
    if not isinstance(name, str) or name not in DEFENCE_CONFIGS:
        raise ValueError(f"unknown defence experiment {name!r}; choose one of {sorted(DEFENCE_CONFIGS)}")
    base = DEFENCE_CONFIGS[name]
    rules = _rules()
    changes = dict(DEFENCE_FAST) if fast else {}
    for key, value in dict(overrides or {}).items():
        if key not in rules:
            raise ValueError(f"{key}: unknown override. Allowed for {name}: {allowed_defence()}")
        changes[key] = _coerce(key, value, getattr(base, key))
    config = dataclasses.replace(base, **changes)
    for key, (words, check) in rules.items():
        value = getattr(config, key)
        if not _type_ok(value, getattr(base, key)) or not check(value, config):
            raise ValueError(f"{key}: {value!r} is out of range ({words}). Allowed for {name}: {allowed_defence()}")
    return config


_ACC = {"type": "number", "minimum": 0, "maximum": 1}
_UNIT = {"type": "object", "required": ["unit", "kind", "k", "replicate", "clean", "robust", "clean_ft", "robust_ft",
                                        "seconds"],
         "properties": {"unit": {"type": "integer", "minimum": 0}, "kind": {"enum": ["none", *defence.MASK_KINDS]},
                        "k": {"type": "integer", "minimum": 0}, "replicate": {"type": "integer", "minimum": 0},
                        "clean": _ACC, "robust": _ACC, "clean_ft": {"type": ["number", "null"]},
                        "robust_ft": {"type": ["number", "null"]}, "seconds": {"type": "number"}}}
DEFENCE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "qnnlib defence test, schema 1",
    "type": "object",
    "required": ["kind", "schema", "experiment", "config", "provenance", "source", "calibration", "test", "units"],
    "properties": {
        "kind": {"const": KIND}, "schema": {"const": SCHEMA}, "experiment": {"type": "string"},
        "config": {"type": "object", "required": ["name", "source", "eps", "ks", "n_test", "seed"]},
        "provenance": results.SCHEMA_V2["properties"]["provenance"],
        "source": {"type": "object", "required": ["name", "weights_sha256"]},
        "calibration": {"type": ["object", "null"], "required": ["n", "reliable", "seconds"]},
        "test": {"type": "object", "required": ["n"]},
        "units": {"type": "array", "items": _UNIT},
    },
}


def validate_defence(record, where: str = "defence test") -> None:
    """Check a defence record against its JSON Schema (and its units numbered 0, 1, …); ``ResultsError``."""
    results.check_object(DEFENCE_SCHEMA, record, where)
    if [u["unit"] for u in record["units"]] != list(range(len(record["units"]))):
        raise results.ResultsError(f"{where}: unit records out of order")


def is_defence(path) -> bool:
    """True if ``path`` is a readable JSON object of kind ``"defence"``."""
    return results.is_kind(path, KIND)


@dataclass(frozen=True, eq=False)
class DefenceRun:
    """A defence test as the book reads it: ``record``, ``arrays`` (the npz), ``path``.

    ``finished``: every unit is done."""

    record: dict
    arrays: dict
    path: Path

    @property
    def finished(self) -> bool:
        return self.record["provenance"]["finished"] is not None

    def table(self) -> list[dict]:
        """The unit records (kind, k, replicate, clean, robust, clean_ft, robust_ft, …)."""
        return self.record["units"]


def load_defence(path) -> DefenceRun:
    """The defence test at ``path`` (``NAME.json`` and ``NAME.npz`` beside it)."""
    path = Path(path)
    record = results.read_json(path)
    validate_defence(record, where=str(path))
    npz = path.with_suffix(".npz")
    if not npz.exists():
        raise results.ResultsError(f"{npz} not found: the arrays of {path.name} are missing")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    if len(arrays.get("robust", ())) != len(record["units"]):
        raise results.ResultsError(f"{npz} holds another number of units than the {len(record['units'])} "
                                   f"of {path.name}")
    return DefenceRun(record, arrays, path)


def recorded_defence(name: str) -> DefenceRun:
    """The recorded defence test ``name`` (``book/results/NAME.json`` and ``.npz``; downloaded in
    Colab), never computing it; ``ResultsError`` if it is unfinished."""
    if name not in DEFENCE_CONFIGS:
        raise ValueError(f"unknown defence experiment {name!r}; choose one of {sorted(DEFENCE_CONFIGS)}")
    run = load_defence(locate_recorded(name, "defence test"))
    if not run.finished:
        raise results.ResultsError(f"{run.path} is unfinished ({len(run.record['units'])} of "
                                   f"{len(DefenceConfig(**_config_fields(run.record['config'])).units())} units)")
    return run


def _config_fields(config: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def show_defence(path) -> str:
    """A summary of a defence results file (``python -m qnnlib show FILE``): settings, progress, the table."""
    run = load_defence(path)
    record, c, prov = run.record, run.record["config"], run.record["provenance"]
    total = len(DefenceConfig(**_config_fields(c)).units())
    lines = [f"{record['experiment']}: network {record['source']['name']} (weights "
             f"{record['source']['weights_sha256'][:12]}), {prov['dataset']['identity']}, seed {prov['seed']}, "
             f"device {prov['device']}, commit {prov['git_commit'][:12]}, {prov['wall_seconds'] / 60:.1f} min",
             f"attack at ε {c['eps']:g}: PGD-{c['steps']}, {c['restarts']} restart(s) + {c['targets']} targeted; "
             f"{c['n_test']} test images; fine-tune {c['finetune_epochs']} epoch(s) at lr {c['finetune_lr']:g}",
             f"units: {len(record['units'])} of {total} done",
             f"{'mask':>9} {'k':>4} {'rep':>3} {'clean':>6} {'robust':>7} {'clean ft':>9} {'robust ft':>10}"]
    for u in record["units"]:
        def f(v, w):
            return f"{'—':>{w}}" if v is None else f"{v:{w}.3f}"
        lines.append(f"{u['kind']:>9} {u['k']:4d} {u['replicate']:3d} {f(u['clean'], 6)} {f(u['robust'], 7)} "
                     f"{f(u['clean_ft'], 9)} {f(u['robust_ft'], 10)}")
    return "\n".join(lines)


def _stream(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def run_defence(name: str, /, *, fast: bool = False, device=None, out=None, resume: bool = True,
                progress: bool = True, overrides: dict | None = None, source_dir=None) -> Path:
    """Compute (or resume) the defence test ``name``; return the path of its results JSON.

    Arguments as :func:`qnnlib.experiments.run_fragility`. Raises ``ValueError`` (bad config or
    device, ``store.RunLocked``), ``FileNotFoundError`` or ``results.ResultsError`` (the network
    absent or unfinished, a test there of another config or network) before any work.
    """
    config = configure_defence(name, fast=fast, overrides=overrides)
    device = _device(device or "cpu")
    if device.type != "cpu":
        raise ValueError(f"defence tests run on the CPU (their draws come from CPU generators), got device {device}")
    source = _source(Path(RESULTS_DIR if source_dir is None else source_dir) / f"{config.source}.json")
    files = store.RunFiles(store.prepare_folder(RUNS_DIR if out is None else out),
                           config.name + ("-fast" if fast else ""))
    with store.locked(files):
        store.clean_temporary(files)
        return _run(config, fast, device, files, resume, progress, source)


def _commit(files, digest, record, arrays, where) -> None:
    record = json.loads(json.dumps(results._clean(record), allow_nan=False))
    validate_defence(record, where=where)
    results.save_checkpoint(files.ckpt, {"config_hash": digest, "record": json.dumps(record),
                                         "arrays": {k: torch.from_numpy(np.ascontiguousarray(v))
                                                    for k, v in arrays.items()}})
    results.write_npz(files.npz, arrays)
    results.write_json(files.json, record)


def _run(config: DefenceConfig, fast, device, files, resume, progress, source) -> Path:
    source_record, model, identity = source
    dataset = source_record["config"]["dataset"]
    train_set, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    experiment = config.name + (" (fast)" if fast else "")
    digest = store.config_hash(experiment, config.as_dict())
    record, arrays = store.resume_derived(files, digest, identity, test.identity, validate=validate_defence,
                                          arrays="arrays") if resume else (None, None)
    if not resume:
        store.discard(files)
    if record is not None and arrays is None:
        return files.json  # finished, and its checkpoint was removed
    if record is not None and len(record["units"]) == len(config.units()):
        results.write_npz(files.npz, arrays)  # finished: bring the copies up to the checkpoint
        results.write_json(files.json, record)
        return files.json
    session = time.perf_counter()
    if record is None:
        pick = _stream(config.seed, 1)
        calib_index = torch.randperm(len(train_set), generator=pick)[:config.n_calib]
        test_index = torch.randperm(len(test), generator=pick)[:config.n_test]
        record = {"kind": KIND, "schema": SCHEMA, "experiment": experiment, "config": config.as_dict(),
                  "provenance": results.provenance(device=device, dataset=test, seed=config.seed,
                                                   started=results.now()),
                  "source": identity, "calibration": None, "test": {"n": len(test_index)}, "units": []}
        clock = time.perf_counter()
        xc, yc = train_set.x[calib_index], train_set.y[calib_index]
        scores = defence.coupling_scores(model, xc, yc, eps=config.eps, n_samples=config.n_samples,
                                         seed=config.seed * 1_000_003 + 2)
        record["calibration"] = {"n": len(calib_index), "reliable": scores["reliable"],
                                 "seconds": time.perf_counter() - clock,
                                 "images": "seeded random training images (not the test images)"}
        arrays = {"coupling": scores["coupling"], "saliency": scores["saliency"],
                  "fill": xc.double().mean(0).flatten().numpy(), "calib_index": calib_index.numpy(),
                  "test_index": test_index.numpy()}
        record["provenance"]["wall_seconds"] = time.perf_counter() - session
        _commit(files, digest, record, arrays, f"{config.name} calibration")
        if progress:
            print(f"{config.name}: calibration on {len(calib_index)} images, {scores['reliable']} reliable local ψ "
                  f"({record['calibration']['seconds']:.0f} s)", flush=True)
        session = time.perf_counter()
    elif record["units"]:
        here = results.provenance(device=device, dataset=test, seed=config.seed, started=results.now())
        record["provenance"].setdefault("resumed", []).append({
            "unit": len(record["units"]), "at": here["started"], "git_commit": here["git_commit"],
            "device": here["device"], "torch_version": here["torch_version"]})
    wall_before = float(record["provenance"]["wall_seconds"])
    units = config.units()
    test_index = torch.from_numpy(arrays["test_index"])
    xt, yt = test.x[test_index], test.y[test_index]
    fill = torch.from_numpy(arrays["fill"]).float()
    tune = torch.randperm(len(train_set), generator=_stream(config.seed, 3))[:config.finetune_images]
    attack = dict(eps=config.eps, steps=config.steps, restarts=config.restarts, targets=config.targets,
                  rel_alpha=config.rel_alpha)
    m = fill.numel()
    for u in range(len(record["units"]), len(units)):
        kind, k, rep = units[u]
        clock = time.perf_counter()
        if kind == "random":
            mask = defence.random_mask(m, k, _stream(config.seed, 1000 + 100 * k + rep))
        else:
            mask = defence.top_mask(arrays[kind], k) if kind != "none" else torch.zeros(m, dtype=torch.bool)
        masked = defence.MaskedInput(model, mask, fill).eval()
        row = {"unit": u, "kind": kind, "k": k, "replicate": rep}
        found = attacks.survives(masked, xt, yt, generator=_stream(config.seed, 10 * u + 100_000), **attack)
        outcome = {"clean": found["clean"], "robust": found["robust"]}
        if config.finetune_epochs:
            tuned = defence.finetune(model, mask, fill, train_set.x[tune], train_set.y[tune],
                                     epochs=config.finetune_epochs, lr=config.finetune_lr,
                                     seed=config.seed * 1_000_003 + 200_000 + u)
            found = attacks.survives(tuned, xt, yt, generator=_stream(config.seed, 10 * u + 100_001), **attack)
            outcome.update(clean_ft=found["clean"], robust_ft=found["robust"])
        for key in ("clean", "robust", "clean_ft", "robust_ft"):  # no fine-tuning: None, and no such arrays
            row[key] = float(outcome[key].mean()) if key in outcome else None
        row["seconds"] = time.perf_counter() - clock
        record["units"].append(row)
        for key, value in (("masks", mask.numpy()), *outcome.items()):
            arrays[key] = np.concatenate([arrays[key], value[None]]) if key in arrays else value[None]
        last = u == len(units) - 1
        record["provenance"]["wall_seconds"] = wall_before + time.perf_counter() - session
        record["provenance"]["finished"] = results.now() if last else None
        _commit(files, digest, record, arrays, f"{config.name} unit {u}")
        if progress:
            ft = "" if row["clean_ft"] is None else f"; fine-tuned {row['clean_ft']:.3f} / {row['robust_ft']:.3f}"
            print(f"{config.name} unit {u + 1}/{len(units)} ({kind}, k = {k}): clean {row['clean']:.3f}, robust "
                  f"{row['robust']:.3f}{ft} ({row['seconds']:.0f} s)", flush=True)
    return files.json
