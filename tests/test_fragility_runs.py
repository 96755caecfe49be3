"""Recorded fragility tables (qnnlib.experiments.fragility_runs, fragility_record; Chapter 10).

The source network is a tiny mnist-cnn3 run trained once per module on synthetic band images
(the label is the brightest of ten horizontal bands), so that every test reads a real finished
results file and its weights; the tables use a few images and points, and weak attacks.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from qnnlib import experiments, fragility, results
from qnnlib.data import Dataset
from qnnlib.__main__ import main
from qnnlib.experiments import fragility_runs, runner, store

# 10 images (one per class) in chunks of 4, 4 and 2; every setting small.
TINY = dict(n_images=10, chunk=4, n_samples=32, pilot=8, stages=1, n_groups=4, steps=2, restarts=1, targets=1,
            tol=0.02, n_boot=100, fab_images=0)
NAME = "fragility-mnist-cnn3"


def _bands(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    for i in range(n):
        x[i, 0, 2 + 2 * int(y[i]):4 + 2 * int(y[i])] += 0.6
    return Dataset(x, y, "synthetic", "test", "synthetic bands", "memory", tuple(str(c) for c in range(10)))


def another_network(source: Path, folder: Path) -> Path:
    """A copy of the recorded network folder ``source`` in ``folder``, one bias nudged: another network."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.lock"))
    weights = experiments.weights_path(folder / "mnist-cnn3.json")
    state = torch.load(weights, weights_only=True)
    state["model"]["fc.bias"] = state["model"]["fc.bias"] + 1e-3
    torch.save(state, weights)
    return folder


def _snapshot(model, test, config, epoch):
    features = experiments._features(model, test.x[:8])
    return {f"epoch{epoch}_embedding": features[:, :2].numpy(), f"epoch{epoch}_labels": test.y[:8].numpy()}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished recorded mnist-cnn3 (results file and weights) in its own folder."""
    folder = tmp_path_factory.mktemp("source")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(runner, "_datasets", lambda config: (_bands(800, 0), _bands(120, 1)))
        m.setattr(runner, "_snapshot", _snapshot)
        torch.set_num_threads(1)
        experiments.run("mnist-cnn3", out=folder, progress=False, epochs=2, mc_samples=16, snapshot_epochs=(1,),
                        snapshot_size=8, final_size=16, strong_steps=1, strong_restarts=1, sweep_eps=(0.0, 0.1),
                        pgd_steps=1)
    return folder


@pytest.fixture
def test_set(monkeypatch):
    monkeypatch.setattr(fragility_runs, "_test_set", lambda dataset: _bands(200, 7))


def _run(source, out, **overrides):
    return experiments.run_fragility(NAME, out=out, source_dir=source, progress=False, overrides=dict(TINY, **overrides))


def _comparable(record):
    """The record without what differs between runs of the same table: times and provenance."""
    chunks = [{k: v for k, v in c.items() if k != "seconds"} for c in record["chunks"]]
    return {**{k: v for k, v in record.items() if k not in ("provenance", "chunks")}, "chunks": chunks}


def _columns(path):
    with np.load(Path(path).with_suffix(".npz")) as data:
        return {k: data[k] for k in data.files}


def _same_columns(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def test_a_table_records_its_images_source_and_correlations(source, test_set, tmp_path, capsys, one_thread):
    path = _run(source, tmp_path)
    record = experiments.read_fragility(path)
    assert path.name == f"{NAME}.json" and record["experiment"] == NAME
    prov = record["provenance"]
    assert prov["finished"] is not None and prov["dataset"]["identity"] == "synthetic bands"
    assert prov["torch_version"] == torch.__version__ and prov["seed"] == 0
    weights = experiments.weights_path(source / "mnist-cnn3.json")
    assert record["source"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["config"] == experiments.configure_fragility(NAME, overrides=TINY).as_dict()
    # one correctly classified image of each class, and the npz in the record's order
    index = torch.tensor(record["images"]["index"])
    test = _bands(200, 7)
    model = experiments.final_model(experiments._recorded(source / "mnist-cnn3.json"))
    with torch.no_grad():
        assert bool((model(test.x[index]).argmax(1) == test.y[index]).all())
    assert sorted(test.y[index].tolist()) == list(range(10))
    columns = _columns(path)
    assert np.array_equal(columns["index"], index.numpy()) and np.array_equal(columns["label"], test.y[index].numpy())
    assert [c["n"] for c in record["chunks"]] == [4, 4, 2]
    assert record["summary"]["reliable"] == int(columns["reliable"].sum()) and record["summary"]["n_images"] == 10
    # the correlation block is correlation_table of the stored columns (JSON writes NaN as null)
    expected = fragility.correlation_table(columns, n_boot=TINY["n_boot"], seed=0)
    assert record["correlation"] == json.loads(json.dumps(results._clean(expected)))
    text = experiments.show_fragility(path)
    assert "Spearman" in text and "reliable local ψ" in text and text.count("\n") == 3 + len(fragility.PREDICTORS)
    assert main(["show", str(path)]) == 0 and capsys.readouterr().out == text + "\n"  # the CLI tells the kinds apart
    # one writer per table: a second is refused before any work
    with store.locked(store.RunFiles(tmp_path, NAME)):
        with pytest.raises(store.RunLocked):
            _run(source, tmp_path)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in qnnlib catches it."""


def _kills(monkeypatch, *, write_at=None, chunk_at=None) -> dict:
    """Count the table's writes and chunk computations; raise Killed at the write_at-th write (leaving
    a half-written temporary, as SIGKILL would) or inside the chunk_at-th chunk computation."""
    seen = {"writes": [], "chunks": 0}
    real_write, real_table = results._atomic_write, fragility.fragility_table

    def write(path, fn):
        if len(seen["writes"]) + 1 == write_at:
            (path.parent / f".{path.name}.killed.tmp").write_bytes(b"half")
            raise Killed(path.name)
        seen["writes"].append(Path(path).name)
        real_write(path, fn)

    def table(*args, **kwargs):
        seen["chunks"] += 1
        if seen["chunks"] == chunk_at:
            raise Killed("mid-chunk")
        return real_table(*args, **kwargs)
    monkeypatch.setattr(results, "_atomic_write", write)
    monkeypatch.setattr(fragility, "fragility_table", table)
    return seen


def test_a_kill_at_any_write_or_mid_chunk_resumes_to_the_identical_table(source, test_set, tmp_path, monkeypatch,
                                                                           one_thread):
    clean = _run(source, tmp_path / "clean")
    reference, reference_columns = results.read_json(clean), _columns(clean)
    with monkeypatch.context() as m:
        counted = _kills(m)
        _run(source, tmp_path / "count")
    writes = counted["writes"]
    assert writes == [f"{NAME}.ckpt.pt", f"{NAME}.npz", f"{NAME}.json"] * 3  # commit first, then the copies
    kills = [dict(write_at=k) for k in range(1, len(writes) + 1)] + [dict(chunk_at=c) for c in (1, 2, 3)]
    for kill in kills:
        folder = tmp_path / "-".join(f"{k}{v}" for k, v in kill.items())
        with monkeypatch.context() as m:
            done = _kills(m, **kill)
            with pytest.raises(Killed):
                _run(source, folder)
        committed = done["writes"].count(f"{NAME}.ckpt.pt")
        with monkeypatch.context() as m:
            again = _kills(m)
            resumed = _run(source, folder)
        assert _comparable(results.read_json(resumed)) == _comparable(reference), kill
        assert _same_columns(_columns(resumed), reference_columns), kill
        assert again["chunks"] == 3 - committed, kill  # none lost, none computed twice
        assert not list(folder.glob(".*.tmp")), kill  # the killed writer's temporary is cleaned up
        if 0 < committed < 3:  # a resumption that computed something is recorded
            assert results.read_json(resumed)["provenance"]["resumed"][0]["chunk"] == committed


def test_a_table_of_another_config_is_refused_and_not_overwritten(source, test_set, tmp_path, monkeypatch, one_thread):
    with monkeypatch.context() as m:
        _kills(m, chunk_at=2)  # chunk 0 committed, then killed
        with pytest.raises(Killed):
            _run(source, tmp_path)
    before = (tmp_path / f"{NAME}.ckpt.pt").read_bytes()
    with pytest.raises(results.ResultsError, match="another config"):
        _run(source, tmp_path, n_samples=64)
    with pytest.raises(results.ResultsError, match="another config"):
        _run(source, tmp_path, chunk=5)  # the same images in other chunks would be another table
    assert (tmp_path / f"{NAME}.ckpt.pt").read_bytes() == before
    state = results.load_checkpoint(tmp_path / f"{NAME}.ckpt.pt")
    state["config_hash"] = "0" * 64
    results.save_checkpoint(tmp_path / f"{NAME}.ckpt.pt", state)
    with pytest.raises(results.ResultsError, match="another config"):
        _run(source, tmp_path)
    fresh = experiments.run_fragility(NAME, out=tmp_path, source_dir=source, progress=False, resume=False,
                                      overrides=TINY)
    assert results.read_json(fresh)["provenance"]["finished"] is not None


def test_another_source_network_or_dataset_is_refused_on_resume(source, test_set, tmp_path, monkeypatch, one_thread):
    with monkeypatch.context() as m:
        _kills(m, chunk_at=2)
        with pytest.raises(Killed):
            _run(source, tmp_path / "table")
    with pytest.raises(results.ResultsError, match="another mnist-cnn3 network"):
        _run(another_network(source, tmp_path / "other-source"), tmp_path / "table")
    same = _bands(200, 7)
    monkeypatch.setattr(fragility_runs, "_test_set", lambda dataset: Dataset(
        same.x, same.y, "mnist", "test", "MNIST (official)", "memory", same.classes))
    with pytest.raises(results.ResultsError, match="made from synthetic bands, but the data found now is MNIST"):
        _run(source, tmp_path / "table")


def test_the_image_set_is_seeded_class_balanced_and_independent_of_the_chunks(source, test_set, tmp_path, one_thread):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (1000,), generator=g)
    correct = torch.rand(1000, generator=g) > 0.2
    one = fragility_runs.select_images(labels, correct, 25, seed=3, classes=10)
    assert torch.equal(one, fragility_runs.select_images(labels, correct, 25, seed=3, classes=10))
    assert not torch.equal(one, fragility_runs.select_images(labels, correct, 25, seed=4, classes=10))
    assert len(set(one.tolist())) == 25 and bool(correct[one].all())
    assert torch.bincount(labels[one], minlength=10).tolist() == [3] * 5 + [2] * 5
    # a prefix is a random sample (the order is shuffled, not class by class or sorted)
    assert len(set(labels[one[:10]].tolist())) > 3 and one.tolist() != sorted(one.tolist())
    with pytest.raises(ValueError, match="class 0"):
        fragility_runs.select_images(labels, correct & (labels != 0), 10, seed=0, classes=10)
    a = results.read_json(_run(source, tmp_path / "a", n_boot=100))
    b = results.read_json(_run(source, tmp_path / "b", chunk=3))
    assert a["images"]["index"] == b["images"]["index"]


def test_the_fast_table_of_the_recorded_network_runs_end_to_end(tmp_path, one_thread):
    recorded = experiments.RESULTS_DIR / "mnist-cnn3.json"
    if not recorded.exists() or not (Path(os.environ.get("QNNLIB_DATA", "/nonexistent")) / "MNIST" / "raw").exists():
        pytest.skip("needs book/results/mnist-cnn3 and real MNIST (QNNLIB_DATA)")
    run = experiments.load_fragility(experiments.run_fragility(NAME, fast=True, out=tmp_path, progress=False))
    assert run.finished and run.path.name == f"{NAME}-fast.json"
    assert run.record["images"]["test_accuracy"] > 0.98 and len(run.columns["min_eps"]) == 20
    assert run.record["summary"]["reliable_fraction"] >= 0.5  # tilted points at N = 256 (≈ 0.9 measured)


def test_fab_images_cross_checks_the_first_images_and_is_left_out_of_configs_without_it(source, test_set, tmp_path,
                                                                                        one_thread):
    path = experiments.run_fragility(NAME, out=tmp_path, progress=False, source_dir=source,
                                     overrides={**TINY, "fab_images": 3})
    record = experiments.read_fragility(path)
    check = record["cross_check"]
    assert check["n"] == 3 and check["eps_bisection"] == _columns(path)["min_eps"][:3].tolist()
    assert "FAB cross-check" in experiments.show_fragility(path)
    # a config without the cross-check hashes as before the setting existed (the recorded CIFAR tables)
    for name in ("fragility-cifar-cnn4", "fragility-cifar-resnet8"):
        assert "fab_images" not in experiments.configure_fragility(name).as_dict()
    assert experiments.configure_fragility(NAME, fast=True).fab_images == fragility_runs.FRAGILITY_FAST_FAB
    with pytest.raises(ValueError, match="fab_images"):
        experiments.configure_fragility(NAME, overrides={**TINY, "fab_images": 11})


def test_recorded_fragility_reads_the_book_tables_and_names_what_is_missing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown fragility experiment"):
        experiments.recorded_fragility("fragility-nothing")
    recorded = experiments.RESULTS_DIR / f"{NAME}.json"
    if recorded.exists():
        table = experiments.recorded_fragility(NAME)
        assert table.finished and len(table.columns["min_eps"]) == table.record["summary"]["n_images"]
    recorded_module = importlib.import_module("qnnlib.experiments.recorded")
    monkeypatch.setattr(recorded_module, "in_checkout", lambda: True)
    monkeypatch.setattr(recorded_module, "_recorded_path", lambda name: tmp_path / f"{name}.json")
    with pytest.raises(FileNotFoundError, match="python -m qnnlib run fragility-mnist-cnn3"):
        experiments.recorded_fragility(NAME)
    monkeypatch.setattr(recorded_module, "in_checkout", lambda: False)
    with pytest.raises(experiments.RecordedRunUnavailable, match="not available"):
        experiments.recorded_fragility(NAME)
    if recorded.exists():  # a table still being computed is refused, saying how far it got
        record = json.loads(recorded.read_text())
        record["provenance"]["finished"], record["correlation"] = None, None
        (tmp_path / f"{NAME}.json").write_text(json.dumps(record))
        (tmp_path / f"{NAME}.npz").write_bytes(recorded.with_suffix(".npz").read_bytes())
        with pytest.raises(results.ResultsError, match="unfinished \\(500 of 500 images\\)"):
            experiments.recorded_fragility(NAME)


def test_every_recorded_table_matches_its_config_and_the_weights_of_its_network():
    """A recorded table is regenerated by `run NAME` (same config hash) from the network now in book/results."""
    found = 0
    for name in experiments.FRAGILITY_CONFIGS:
        path = experiments.RESULTS_DIR / f"{name}.json"
        if not path.exists():
            continue
        record = experiments.read_fragility(path)
        if record["provenance"]["finished"] is None:  # still being computed (it resumes across sessions)
            continue
        found += 1
        assert record["config"] == experiments.configure_fragility(name).as_dict(), name
        weights = experiments.weights_path(experiments.RESULTS_DIR / f"{record['source']['name']}.json")
        assert record["source"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest(), name
        columns = experiments.load_fragility(path).columns
        assert len(columns["min_eps"]) == record["config"]["n_images"] == len(set(columns["index"].tolist())), name
    if not found:
        pytest.skip("no finished fragility table in book/results")
