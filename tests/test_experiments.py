"""The experiment runner: results schema, resume after SIGKILL, config checks, the CLI.

Most tests run a tiny config on a synthetic digit-like dataset (so they need no data files and
take seconds); one end-to-end test runs the real fast config on MNIST when it is present.
"""

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from qnnlib import experiments, results
from qnnlib.data import Dataset
from qnnlib.experiments import runner

recorded_module = importlib.import_module("qnnlib.experiments.recorded")  # experiments.recorded is the function

ROOT = Path(__file__).resolve().parents[1]

# A tiny but complete config: every phase of an epoch runs, on a few hundred images.
TINY = dict(epochs=3, train_size=0, test_size=0, mc_samples=64, snapshot_epochs=(1,), snapshot_size=40,
            final_size=40, strong_steps=2, strong_restarts=1, sweep_eps=(0.0, 0.1))

SYNTHETIC = '''
import torch
from qnnlib import experiments
from qnnlib.data import Dataset


def synthetic(n, seed):
    """Images whose label is the brightest of ten horizontal bands: learnable in one epoch."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    for i in range(n):
        row = 2 + 2 * int(y[i])
        x[i, 0, row:row + 2] += 0.6
    return Dataset(x, y, "synthetic", "train", "synthetic bands", "memory", tuple(str(c) for c in range(10)))


def datasets(config):
    return synthetic(400, config.seed), synthetic(120, config.seed + 1)
'''
namespace = {}
exec(SYNTHETIC, namespace)


@pytest.fixture
def synthetic(monkeypatch):
    monkeypatch.setattr(runner, "_datasets", namespace["datasets"])


def _comparable(record):
    """The record without what legitimately differs between runs: times and provenance."""
    epochs = [{k: v for k, v in e.items() if k != "seconds"} for e in record["epochs"]]
    final = {k: v for k, v in record["final"].items() if k != "seconds"}
    return record["config"], epochs, final


def test_tiny_run_writes_a_complete_results_file(synthetic, tmp_path):
    path = experiments.run("mnist-cnn3", out=tmp_path, progress=False, **TINY)
    record = results.read_results(path)  # validates the schema
    assert path.name == "mnist-cnn3.json" and len(record["epochs"]) == 3
    prov = record["provenance"]
    assert prov["dataset"]["identity"] == "synthetic bands" and prov["finished"] is not None
    assert prov["wall_seconds"] > 0 and prov["torch_version"] == torch.__version__
    assert record["config"] == experiments.make_config("mnist-cnn3", **TINY).as_dict()
    last = record["epochs"][-1]
    assert last["test_acc"] > 0.5  # the bands are learnable: far above chance (0.1)
    assert 0 <= last["robust_acc"] <= 1 and 0 <= last["robust_acc_feature"] <= 1
    for space, dims in (("pixel", 784), ("feature", None)):
        block = last[space]
        assert block["dx"] > 0 and block["dp"] >= 0 and block["dx_stderr"] > 0 and block["aggregate_form"] == "paper"
        assert 0 <= block["frac_below_half"] <= 1 and block["labels"] == [8]
        if dims:
            assert block["dims"] == dims
    # Δx_i of any ψ on [0, 1] is at most 1/2, so the paper's aggregate √(Σ Δx_i) is at most √(M/2).
    assert last["pixel"]["dx"] <= (784 / 2) ** 0.5
    sweep = record["final"]["sweep"]
    assert sweep["pixel"][0] == pytest.approx(last["test_acc"], abs=0.2)  # 40 of the test images
    assert sweep["pixel"][1] <= sweep["pixel"][0] and sweep["feature"][1] <= sweep["feature"][0]
    snapshots = experiments.load_snapshots(path)
    assert set(snapshots) >= {"epoch1_embedding", "epoch3_embedding", "epoch1_labels"}
    assert snapshots["epoch1_embedding"].shape == (80, 2)  # 40 clean + 40 attacked, embedded together


def test_schema_check_names_the_missing_field(synthetic, tmp_path):
    record = results.read_results(experiments.run("mnist-cnn3", out=tmp_path, progress=False, **dict(TINY, epochs=1)))
    for damage, message in (
        (lambda r: r.pop("provenance"), "provenance"),
        (lambda r: r["provenance"]["dataset"].pop("identity"), "identity"),
        (lambda r: r["epochs"][0].pop("robust_acc_feature"), "robust_acc_feature"),
        (lambda r: r["epochs"][0]["pixel"].pop("dp_stderr"), "dp_stderr"),
        (lambda r: r.update(schema=99), "schema"),
    ):
        broken = json.loads(json.dumps(record))
        damage(broken)
        with pytest.raises(results.ResultsError, match=message):
            results.validate(broken)


def test_results_of_another_config_are_never_reused(synthetic, tmp_path):
    experiments.run("mnist-cnn3", out=tmp_path, progress=False, **dict(TINY, epochs=1))
    with pytest.raises(results.ResultsError, match="another config"):
        experiments.run("mnist-cnn3", out=tmp_path, progress=False, **dict(TINY, epochs=1, lr=0.01))


def test_corrupt_files_are_reported_not_loaded(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1, "experi')
    with pytest.raises(results.ResultsError, match="corrupt"):
        results.read_results(bad)
    ckpt = tmp_path / "bad.ckpt.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(results.ResultsError, match="corrupt"):
        results.load_checkpoint(ckpt)


def test_run_killed_mid_epoch_resumes_to_identical_results(synthetic, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    script = SYNTHETIC + textwrap.dedent(f"""
        experiments.runner._datasets = datasets
        torch.set_num_threads(1)
        experiments.run("mnist-cnn3", out={str(killed)!r}, progress=False, **{TINY!r})
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    path = killed / "mnist-cnn3.json"
    deadline = time.monotonic() + 120
    try:
        # Kill as soon as the first epoch is on disk: the process is then inside epoch 2.
        while not (path.exists() and len(json.loads(path.read_text())["epochs"]) >= 1):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run did not finish an epoch in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    done = len(results.read_results(path)["epochs"])
    assert done < 3  # it really was interrupted
    torch.set_num_threads(1)  # the same arithmetic as the killed process
    try:
        resumed = results.read_results(experiments.run("mnist-cnn3", out=killed, progress=False, **TINY))
        uninterrupted = results.read_results(experiments.run("mnist-cnn3", out=clean, progress=False, **TINY))
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    assert _comparable(resumed) == _comparable(uninterrupted)
    # The provenance says where the run was resumed; an uninterrupted run has no such entry.
    (resumption,) = resumed["provenance"]["resumed"]
    # From the checkpoint: the epoch after the last one on disk (or that one, if the kill fell
    # between writing the JSON and the checkpoint).
    assert resumption["epoch"] in (done, done + 1)
    assert resumption["git_commit"] == resumed["provenance"]["git_commit"] and "resumed" not in uninterrupted["provenance"]
    assert experiments.load_snapshots(killed / "mnist-cnn3.json").keys() == experiments.load_snapshots(
        clean / "mnist-cnn3.json").keys()


def test_make_config_rejects_unknown_names_and_bad_overrides():
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.make_config("mnist-mlp")
    with pytest.raises(ValueError, match="unknown override 'learning_rate'"):
        experiments.make_config("mnist-cnn3", learning_rate=0.1)
    with pytest.raises(ValueError, match="not a valid int"):
        experiments.make_config("mnist-cnn3", epochs="many")
    with pytest.raises(ValueError, match="epochs must be a int"):
        experiments.make_config("mnist-cnn3", epochs=2.5)
    with pytest.raises(ValueError, match="epochs must be ≥ 1"):
        experiments.make_config("mnist-cnn3", epochs=0)
    with pytest.raises(ValueError, match="labels"):
        experiments.make_config("mnist-cnn3", labels="8,12")
    assert experiments.make_config("mnist-cnn3", labels="3,8").labels == (3, 8)
    assert experiments.make_config("mnist-cnn3", sweep_eps="0,0.1").sweep_eps == (0.0, 0.1)


def test_named_configs_follow_the_spec():
    assert set(experiments.CONFIGS) == {"mnist-cnn3", "cifar-cnn4", "cifar-resnet8"}
    for config in experiments.CONFIGS.values():
        assert (config.epochs, config.batch_size, config.lr) == (50, 128, 1e-3)
        assert config.pgd_steps == 4 and config.pgd_eps == pytest.approx(8 / 255)
        assert experiments.build_model(config)(torch.zeros(2, *((1, 28, 28) if config.dataset == "mnist" else (3, 32, 32)))).shape == (2, 10)
    assert experiments.CONFIGS["mnist-cnn3"].labels == (8,)
    assert experiments.CONFIGS["cifar-cnn4"].labels == tuple(range(10))
    assert experiments.CONFIGS["mnist-cnn3"].snapshot_eps == 0.1 and experiments.CONFIGS["mnist-cnn3"].snapshot_steps == 4


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "qnnlib", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})), timeout=120)


@pytest.mark.parametrize("args, message", [
    (("run", "mnist-mlp"), "unknown experiment"),
    (("run", "mnist-cnn3", "--set", "learning_rate=1"), "unknown override"),
    (("run", "mnist-cnn3", "--set", "epochs"), "KEY=VALUE"),
    (("run", "mnist-cnn3", "--epochs", "x"), "invalid int"),
    (("show", "no-such-file.json"), "does not exist"),
    (("dance",), "invalid choice"),
])
def test_cli_errors_are_one_line_and_exit_2(args, message):
    done = _cli(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_cli_reports_missing_data_in_one_line(tmp_path):
    done = _cli("run", "mnist-cnn3", "--fast", "--out", str(tmp_path), env={"QNNLIB_DATA": str(tmp_path / "empty")})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "QNNLIB_DATA" in done.stderr, done.stderr


def test_cli_lists_and_shows(synthetic, tmp_path):
    listed = _cli("list")
    assert listed.returncode == 0 and all(name in listed.stdout for name in experiments.CONFIGS)
    path = experiments.run("mnist-cnn3", out=tmp_path, progress=False, **dict(TINY, epochs=1))
    shown = _cli("show", str(path))
    assert shown.returncode == 0 and "synthetic bands" in shown.stdout and "\n    1 " in shown.stdout
    path.write_text("{}")
    broken = _cli("show", str(path))
    assert broken.returncode == 2 and "missing field" in broken.stderr


def test_fast_mode_runs_the_real_pipeline_end_to_end(tmp_path):
    if not (Path(os.environ.get("QNNLIB_DATA", "/nonexistent")) / "MNIST" / "raw").exists():
        pytest.skip("real MNIST not found: set QNNLIB_DATA to a folder with MNIST/raw (CI has ../shared/data)")
    recorded = experiments.load_or_run("mnist-cnn3", fast=True, progress=False)
    assert recorded.record["provenance"]["dataset"]["identity"] == "MNIST (official)"
    assert list(recorded.epochs) == [1, 2] and recorded.series("test_acc")[-1] > 0.6
    assert recorded.series("dp", "pixel").shape == (2,) and "epoch1_embedding" in recorded.snapshots


def test_final_weights_reproduce_the_recorded_final_accuracy(synthetic, tmp_path):
    path = experiments.run("mnist-cnn3", out=tmp_path, progress=False, **TINY)
    weights = experiments.weights_path(path)
    assert weights.exists() and weights.name == "mnist-cnn3.weights.pt"
    recorded = experiments._recorded(path)
    (tmp_path / "mnist-cnn3.ckpt.pt").unlink()  # the weights file alone must be enough
    model = experiments.final_model(recorded)
    assert not model.training
    _, test = namespace["datasets"](experiments.make_config("mnist-cnn3", **TINY))
    from qnnlib.train import accuracy
    assert accuracy(model, test.x, test.y) == pytest.approx(recorded.series("test_acc")[-1], abs=1e-12)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="mnist-cnn3.weights.pt"):
        experiments.final_model(recorded)


@pytest.mark.parametrize("name", sorted(experiments.CONFIGS))
def test_recorded_results_match_their_config_and_weights(name):
    path = experiments.RESULTS_DIR / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path.name} is not recorded yet")
    record = results.read_results(path)
    if "final" not in record:
        pytest.skip(f"{path.name} is still being recorded")
    assert record["config"] == experiments.make_config(name).as_dict()
    assert len(record["epochs"]) == record["config"]["epochs"] and record["provenance"]["finished"]
    model = experiments.final_model(experiments._recorded(path))
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", sorted(experiments.CONFIGS))
def test_recorded_runs_in_progress_can_be_resumed(name):
    # A run recorded over several sessions must carry its checkpoint in git: without it, `run NAME
    # --out book/results` would start again from epoch 1 and the recorded epochs would be lost.
    path = experiments.RESULTS_DIR / f"{name}.json"
    if not path.exists() or "final" in results.read_results(path):
        pytest.skip(f"{path.name} is not in progress")
    record = results.read_results(path)
    assert record["config"] == experiments.make_config(name).as_dict()
    state = results.load_checkpoint(path.with_name(f"{name}.ckpt.pt"))
    assert int(state["epoch"]) == len(record["epochs"]) < record["config"]["epochs"]
    model = experiments.build_model(experiments.make_config(name))
    model.load_state_dict(state["model"])  # the checkpoint fits the configured network


def test_recorded_runs_are_fetched_from_the_results_url_when_not_in_a_checkout(tmp_path, monkeypatch):
    # What Colab sees: no book/results/ beside the installed package, QNNLIB_RESULTS_URL set by the
    # chapters' install cell. A file:// URL stands in for the repository's raw files.
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    for suffix in experiments.RECORDED_SUFFIXES + ("SHA256SUMS",):
        source = experiments.RESULTS_DIR / (f"mnist-cnn3{suffix}" if suffix.startswith(".") else suffix)
        if not source.exists():
            pytest.skip(f"{source.name} is not recorded")
        (upstream / source.name).write_bytes(source.read_bytes())
    monkeypatch.setattr(recorded_module, "RESULTS_DIR", tmp_path / "site-packages" / "book" / "results")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(experiments.RESULTS_URL_ENV, upstream.as_uri())
    run = experiments.recorded("mnist-cnn3")
    assert run.path.parent.parent == tmp_path / "cache" / "qnnlib" / "results" and run.path.name == "mnist-cnn3.json"
    assert run.record == results.read_results(upstream / "mnist-cnn3.json") and run.snapshots
    assert isinstance(experiments.final_model(run), torch.nn.Module)
    assert experiments.load_or_run("mnist-cnn3", fast=False).path == run.path  # no training
    # Nothing upstream: a warning, then one line saying what to run (tests/test_recorded.py has more).
    monkeypatch.setenv(experiments.RESULTS_URL_ENV, (tmp_path / "nowhere").as_uri())
    with pytest.warns(UserWarning, match="no usable SHA256SUMS"), \
            pytest.raises(experiments.RecordedRunUnavailable, match="python -m qnnlib run cifar-cnn4"):
        experiments.recorded("cifar-cnn4")


def test_final_evaluation_uses_a_seeded_subset_of_all_classes(synthetic, tmp_path):
    config = experiments.make_config("cifar-cnn4")
    index = experiments.evaluation_subset(10_000, 2_000, config)
    assert torch.equal(index, experiments.evaluation_subset(10_000, 2_000, config))  # repeatable
    assert len(torch.unique(index)) == 2_000 and int(index.max()) > 9_000
    # A class-sorted test set (the CIFAR-10 JPEG copy): every class is represented, about equally.
    labels = torch.arange(10).repeat_interleave(1_000)
    counts = torch.bincount(labels[index], minlength=10)
    assert counts.min() > 150 and counts.max() < 250, counts


def test_redo_final_recomputes_only_the_final_evaluation(synthetic, tmp_path):
    path = experiments.run("mnist-cnn3", out=tmp_path, progress=False, **TINY)
    before = results.read_results(path)
    record = results.read_results(experiments.redo_final(path))
    assert record["epochs"] == before["epochs"] and record["config"] == before["config"]
    assert record["final"]["sweep"] == before["final"]["sweep"]  # same weights, same subset, same seeds
    assert record["provenance"]["final_redone"]["git_commit"] == before["provenance"]["git_commit"]
    unfinished = experiments.run("mnist-cnn3", out=tmp_path / "short", progress=False, **dict(TINY, epochs=1))
    record = results.read_results(unfinished)
    record["config"]["epochs"] = 5
    results.write_json(unfinished, record)
    with pytest.raises(results.ResultsError, match="unfinished"):
        experiments.redo_final(unfinished)


def test_book_runs_read_finished_records_and_never_train_one_in_progress(synthetic, tmp_path, monkeypatch):
    # A book build reads recorded runs; an unfinished one (a CPU run recorded over several sessions)
    # must not be resumed inside the build: the chapter falls back to the fast runs and says so.
    monkeypatch.setattr(recorded_module, "RESULTS_DIR", tmp_path)
    monkeypatch.delenv(experiments.RESULTS_URL_ENV, raising=False)
    tiny = experiments.make_config("mnist-cnn3", **TINY)
    for module in (recorded_module, runner):
        monkeypatch.setattr(module, "make_config", lambda name, fast=False, epochs=None, **kw:
                            dataclasses.replace(tiny, **({"epochs": epochs} if epochs else {}), **kw))
    path = experiments.run("mnist-cnn3", out=tmp_path, progress=False)
    finished = results.read_results(path)
    # The record as it stands after 1 of 3 epochs: no final evaluation yet.
    results.write_json(path, {**{k: v for k, v in finished.items() if k != "final"}, "epochs": finished["epochs"][:1]})
    calls = []

    def fake_load_or_run(name, fast, **kwargs):
        calls.append((name, fast))
        return name

    monkeypatch.setattr(recorded_module, "load_or_run", fake_load_or_run)
    runs, in_progress = experiments.book_runs({"a": "mnist-cnn3", "b": "cifar-cnn4"}, fast=False)
    assert calls == [("mnist-cnn3", True), ("cifar-cnn4", True)] and runs == {"a": "mnist-cnn3", "b": "cifar-cnn4"}
    assert list(in_progress) == ["a"] and len(in_progress["a"].epochs) == 1
    calls.clear()
    # Fast mode with a run in progress: the fast runs, and nothing to report as in progress.
    assert experiments.book_runs({"a": "mnist-cnn3"}, fast=True) == ({"a": "mnist-cnn3"}, {})
    assert calls == [("mnist-cnn3", True)]
    calls.clear()
    results.write_json(path, finished)
    # Every run finished: both modes read the records and train nothing.
    for fast in (False, True):
        runs, in_progress = experiments.book_runs({"a": "mnist-cnn3"}, fast=fast)
        assert calls == [] and in_progress == {}
        assert runs["a"].record == finished and not runs["a"].is_fast
        assert experiments.book_runs_note(runs, in_progress).startswith("This page reads the recorded runs")
    # One of the chapter's runs absent: fast mode falls back to the fast runs of all of them.
    assert experiments.book_runs({"a": "mnist-cnn3", "b": "cifar-cnn4"}, fast=True)[0] == {
        "a": "mnist-cnn3", "b": "cifar-cnn4"}
    assert calls == [("mnist-cnn3", True), ("cifar-cnn4", True)]
