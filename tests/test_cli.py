"""The command line (``python -m qnnlib``): every bad input is one line on stderr and exit status 2.

The table below runs ``qnnlib.__main__.main(argv)`` in-process (fast); a few cases also run as a
real subprocess. None of the bad inputs may start training: they must be refused up front, so
every case here finishes in well under a second.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qnnlib import experiments, results
from qnnlib.__main__ import main
from qnnlib.experiments import fragility_runs, runner, store

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "book" / "results" / "mnist-cnn3.json"  # a finished schema-1 record to forge from


def _forged(damage):
    def make(tmp_path):
        record = json.loads(RECORDED.read_text())
        damage(record)
        path = tmp_path / "forged.json"
        path.write_text(json.dumps(record))
        return str(path)
    return make


def _text(content: bytes):
    def make(tmp_path):
        path = tmp_path / "bad.json"
        path.write_bytes(content)
        return str(path)
    return make


def _file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return str(path)


def _source(damage=None, weights=True):
    """A folder holding a copy of the recorded mnist-cnn3 (damaged by ``damage``), with or without its weights."""
    def make(tmp_path):
        folder = tmp_path / "source"
        folder.mkdir()
        record = json.loads(RECORDED.read_text())
        if damage:
            damage(record)
        (folder / "mnist-cnn3.json").write_text(json.dumps(record))
        if weights:
            (folder / "mnist-cnn3.weights.pt").write_bytes(RECORDED.with_name("mnist-cnn3.weights.pt").read_bytes())
        return str(folder)
    return make


def _unfinished(record):
    record.pop("final")
    record["epochs"] = record["epochs"][:3]


RUN = ["run", "mnist-cnn3", "--fast"]
FRAGILITY = ["run", "fragility-mnist-cnn3", "--fast"]
SET = [*RUN, "--set"]

# (category, argv, a word the message must contain). In argv, a callable is replaced by its value
# for the test's tmp_path (files made for the case).
CASES = [
    # argparse: usage errors
    ("argparse", [], "command"),
    ("argparse", ["dance"], "invalid choice"),
    ("argparse", ["run"], "name"),
    ("argparse", ["run", "mnist-cnn3", "--epochs", "x"], "invalid int"),
    ("argparse", ["run", "mnist-cnn3", "--epochs", "1.5"], "invalid int"),
    ("argparse", ["run", "mnist-cnn3", "--epochs"], "expected one argument"),
    ("argparse", ["run", "mnist-cnn3", "--set"], "expected one argument"),
    ("argparse", ["run", "mnist-cnn3", "--colour", "red"], "unrecognized"),
    ("argparse", ["show"], "file"),
    ("argparse", ["redo-final"], "file"),
    ("argparse", ["list", "extra"], "unrecognized"),
    ("argparse", ["run", "mnist-cnn3", "--device"], "expected one argument"),
    # unknown experiment
    ("experiment", ["run", "mnist-mlp"], "unknown experiment"),
    ("experiment", ["run", ""], "unknown experiment"),
    ("experiment", ["run", "MNIST-CNN3"], "unknown experiment"),
    ("experiment", ["run", "mnist-cnn3-fast"], "unknown experiment"),
    # --set syntax
    ("set syntax", [*SET, "epochs"], "KEY=VALUE"),
    ("set syntax", [*SET, "=3"], "KEY=VALUE"),
    ("set syntax", [*SET, "epochs=1", "--set", "epochs=2"], "twice"),
    ("set syntax", [*RUN, "--epochs", "2", "--set", "epochs=3"], "twice"),
    ("set syntax", [*SET, "name=other"], "name"),
    # --set keys that are not config fields
    ("set unknown key", [*SET, "learning_rate=0.1"], "unknown override"),
    ("set unknown key", [*SET, "device=cpu"], "unknown override"),
    ("set unknown key", [*SET, "out=/tmp"], "unknown override"),
    ("set unknown key", [*SET, "fast=1"], "unknown override"),
    ("set unknown key", [*SET, "resume=0"], "unknown override"),
    ("set unknown key", [*SET, "progress=0"], "unknown override"),
    ("set unknown key", [*SET, "overrides=1"], "unknown override"),
    ("set unknown key", [*SET, "Epochs=2"], "unknown override"),
    # --set values of the wrong type
    ("set type", [*SET, "epochs=many"], "not a valid int"),
    ("set type", [*SET, "epochs=2.5"], "not a valid int"),
    ("set type", [*SET, "epochs="], "not a valid int"),
    ("set type", [*SET, "lr=fast"], "not a valid float"),
    ("set type", [*SET, "augment=maybe"], "true/false"),
    ("set type", [*SET, "labels=a,b"], "comma-separated"),
    ("set type", [*SET, "labels=8.5"], "comma-separated"),
    ("set type", [*SET, "seed=1e3"], "not a valid int"),
    ("set type", [*SET, "sweep_eps=0,x"], "comma-separated"),
    ("set type", [*SET, "snapshot_epochs=1.5"], "comma-separated"),
    ("set type", [*SET, "pgd_steps=2.0"], "not a valid int"),
    # --set values out of range
    ("set range", [*SET, "epochs=0"], "epochs"),
    ("set range", [*SET, "epochs=-1"], "epochs"),
    ("set range", [*SET, "epochs=1000000"], "epochs"),
    ("set range", [*RUN, "--epochs", "0"], "epochs"),
    ("set range", [*SET, "batch_size=0"], "batch_size"),
    ("set range", [*SET, "lr=0"], "lr"),
    ("set range", [*SET, "lr=-0.001"], "lr"),
    ("set range", [*SET, "lr=nan"], "lr"),
    ("set range", [*SET, "lr=inf"], "lr"),
    ("set range", [*SET, "seed=-1"], "seed"),
    ("set range", [*SET, "train_size=-5"], "train_size"),
    ("set range", [*SET, "test_size=-1"], "test_size"),
    ("set range", [*SET, "snapshot_size=-1"], "snapshot_size"),
    ("set range", [*SET, "final_size=-1"], "final_size"),
    ("set range", [*SET, "pgd_eps=-0.1"], "pgd_eps"),
    ("set range", [*SET, "pgd_eps=1.5"], "pgd_eps"),
    ("set range", [*SET, "pgd_eps=nan"], "pgd_eps"),
    ("set range", [*SET, "pgd_alpha=0"], "pgd_alpha"),
    ("set range", [*SET, "pgd_steps=0"], "pgd_steps"),
    ("set range", [*SET, "labels=10"], "labels"),
    ("set range", [*SET, "labels=-1"], "labels"),
    ("set range", [*SET, "labels=8,8"], "labels"),
    ("set range", [*SET, "labels="], "labels"),
    ("set range", [*SET, "mc_samples=1"], "mc_samples"),
    ("set range", [*SET, "mc_samples=0"], "mc_samples"),
    ("set range", [*SET, "mc_sampler=gauss"], "mc_sampler"),
    ("set range", [*SET, "aggregate_form=l2"], "aggregate_form"),
    ("set range", [*SET, "snapshot_epochs=3"], "snapshot_epochs"),  # fast mode has 2 epochs
    ("set range", [*SET, "snapshot_epochs=0"], "snapshot_epochs"),
    ("set range", [*SET, "epochs=1", "--set", "snapshot_epochs=1,2"], "snapshot_epochs"),
    # adversarial training (mnist-cnn3-at; Chapter 10): off (all 0) or all three set
    ("set range", [*SET, "adv_eps=1.5"], "adv_eps"),
    ("set range", [*SET, "adv_eps=-0.1"], "adv_eps"),
    ("set range", [*SET, "adv_eps=0.1"], "adv_alpha"),
    ("set range", [*SET, "adv_alpha=0.01"], "adv_alpha"),
    ("set range", ["run", "mnist-cnn3-at", "--fast", "--set", "adv_steps=0"], "adv_steps"),
    ("set range", ["run", "mnist-cnn3-at", "--fast", "--set", "adv_alpha=0"], "adv_alpha"),
    ("set type", ["run", "mnist-cnn3-at", "--fast", "--set", "adv_steps=2.5"], "adv_steps"),
    ("set range", [*SET, "snapshot_eps=2"], "snapshot_eps"),
    ("set range", [*SET, "snapshot_alpha=0"], "snapshot_alpha"),
    ("set range", [*SET, "snapshot_steps=0"], "snapshot_steps"),
    ("set range", [*SET, "sweep_eps=0.1,2"], "sweep_eps"),
    ("set range", [*SET, "sweep_eps="], "sweep_eps"),
    ("set range", [*SET, "strong_steps=0"], "strong_steps"),
    ("set range", [*SET, "strong_restarts=0"], "strong_restarts"),
    ("set model", [*SET, "width=8"], "MnistCNN3 has fixed channels"),
    ("set model", ["run", "cifar-cnn4", "--fast", "--set", "width=-1"], "width"),
    ("set model", ["run", "cifar-resnet8", "--fast", "--set", "width=5000"], "width"),
    ("set model", [*SET, "model=LeNet"], "model"),
    ("set model", [*SET, "model=ResNet8"], "built for cifar10"),
    ("set model", [*SET, "dataset=cifar10"], "built for mnist"),
    ("set model", [*SET, "dataset=imagenet"], "dataset"),
    ("set model", ["run", "cifar-cnn4", "--fast", "--set", "model=MnistCNN3"], "built for mnist"),
    # --device
    ("device", [*RUN, "--device", "foo"], "device"),
    ("device", [*RUN, "--device", "cuda:x"], "device"),
    ("device", [*RUN, "--device", "meta"], "device"),
    ("device", [*RUN, "--device", "-1"], "device"),
    ("device", ["redo-final", str(RECORDED), "--device", "foo"], "device"),
    # --out
    ("out", [*RUN, "--out", _file], "existing file"),
    ("out", [*RUN, "--out", lambda tmp_path: _file(tmp_path) + "/below"], "cannot be created"),
    ("out", [*RUN, "--out", "/proc/qnnlib-results"], "--out"),
    # show: files that are not a results record
    ("show file", ["show", "no-such-file.json"], "does not exist"),
    ("show file", ["show", lambda tmp_path: str(tmp_path)], "folder"),
    ("show file", ["show", _text(b"")], "corrupt"),
    ("show file", ["show", _text(b'{"schema": 1, "experi')], "corrupt"),
    ("show file", ["show", _text(b"\xff\xfe\x00garbage")], "corrupt"),
    ("show file", ["show", _text(b"[1, 2, 3]")], "not a JSON object"),
    ("show file", ["show", _text(b"{}")], "schema"),
    ("show file", ["show", _text(b"null")], "not a JSON object"),
    ("show file", ["show", _text(b"[" * 100_000)], "corrupt"),
    # show: forged or damaged records
    ("show forged", ["show", _forged(lambda r: r.update(schema=99))], "schema"),
    ("show forged", ["show", _forged(lambda r: r.update(schema="1"))], "schema"),
    ("show forged", ["show", _forged(lambda r: r.pop("provenance"))], "provenance"),
    ("show forged", ["show", _forged(lambda r: r["provenance"]["dataset"].pop("identity"))], "identity"),
    ("show forged", ["show", _forged(lambda r: r["provenance"].update(git_commit=None))], "git_commit"),
    ("show forged", ["show", _forged(lambda r: r["provenance"].update(wall_seconds="long"))], "wall_seconds"),
    ("show forged", ["show", _forged(lambda r: r.update(epochs={}))], "epochs"),
    ("show forged", ["show", _forged(lambda r: r["epochs"][3].update(epoch=7))], "out of order"),
    ("show forged", ["show", _forged(lambda r: r["epochs"][0].update(epoch="1"))], "epoch"),
    ("show forged", ["show", _forged(lambda r: r["epochs"][0].update(test_acc=1.5))], "test_acc"),
    ("show forged", ["show", _forged(lambda r: r["epochs"][0].pop("seconds"))], "seconds"),
    ("show forged", ["show", _forged(lambda r: r["epochs"][0]["seconds"].pop("total"))], "total"),
    ("show forged", ["show", _forged(lambda r: r["epochs"][0]["pixel"].update(aggregate_form="l2"))], "aggregate_form"),
    ("show forged", ["show", _forged(lambda r: r["final"]["sweep"].update(pixel=[2.0]))], "sweep"),
    # show: null metrics (a NaN written as null) where a number is required
    ("show null metric", ["show", _forged(lambda r: r["epochs"][3].update(test_acc=None))], "test_acc"),
    ("show null metric", ["show", _forged(lambda r: r["epochs"][0].update(train_loss=None))], "train_loss"),
    ("show null metric", ["show", _forged(lambda r: r["epochs"][5]["pixel"].update(dx=None))], "dx"),
    ("show null metric", ["show", _forged(lambda r: r["epochs"][5]["feature"].update(dp=None))], "dp"),
    ("show null metric", ["show", _forged(lambda r: r["epochs"][1].update(robust_acc_feature=None))], "robust_acc"),
    # fragility tables (Chapter 10): their own settings, no epochs, a finished recorded network
    ("fragility", [*FRAGILITY, "--epochs", "2"], "no epochs"),
    ("fragility", [*FRAGILITY, "--set", "epochs=2"], "no epochs"),
    ("fragility", [*FRAGILITY, "--set", "n_images=0"], "n_images"),
    ("fragility", [*FRAGILITY, "--set", "n_images=2.5"], "not a valid int"),
    ("fragility", [*FRAGILITY, "--set", "eps=0"], "eps"),
    ("fragility", [*FRAGILITY, "--set", "tol=0.9"], "tol"),
    ("fragility", [*FRAGILITY, "--set", "sampler=sobol"], "sampler"),
    ("fragility", [*FRAGILITY, "--set", "restarts=0", "--set", "targets=0"], "restarts + targets"),
    ("fragility", [*FRAGILITY, "--set", "source=cifar-cnn4"], "source"),
    ("fragility", [*FRAGILITY, "--set", "mc_samples=8"], "unknown override"),
    ("fragility", [*FRAGILITY, "--device", "cuda"], "cuda"),
    ("fragility", [*FRAGILITY, "--source", lambda tmp_path: str(tmp_path)], "does not exist"),
    ("fragility", ["run", "fragility-mnist", "--fast"], "unknown experiment"),
    ("fragility", [*RUN, "--source", "book/results"], "--source is for fragility tables"),
    ("fragility source", [*FRAGILITY, "--source", _source(_unfinished)], "unfinished"),
    ("fragility source", [*FRAGILITY, "--source", _source(weights=False)], "no weights"),
    ("fragility source", [*FRAGILITY, "--source", _source(lambda r: r.update(schema=7))], "schema"),
    ("fragility source", [*FRAGILITY, "--out", _file], "existing file"),
    ("show file", ["show", _text(b'{"kind": "fragility", "schema": 1}')], "experiment"),
    # redo-final on bad files
    ("redo-final", ["redo-final", "no-such-file.json"], "does not exist"),
    ("redo-final", ["redo-final", lambda tmp_path: str(tmp_path)], "folder"),
    ("redo-final", ["redo-final", _text(b"{")], "corrupt"),
    ("redo-final", ["redo-final", _forged(lambda r: r.update(epochs=r["epochs"][:3]))], "unfinished"),
    ("redo-final", ["redo-final", _forged(lambda r: r["config"].update(model="LeNet"))], "model"),
    ("redo-final", ["redo-final", _forged(lambda r: r["config"].pop("model"))], "config"),
    ("redo-final", ["redo-final", _forged(lambda r: r["config"].update(labels=[12]))], "labels"),
    ("redo-final", ["redo-final", _forged(lambda r: None)], "no weights"),  # the JSON alone, no weights beside it
]


def _argv(argv, tmp_path):
    return [item(tmp_path) if callable(item) else item for item in argv]


def _no_training(monkeypatch):
    """Fail loudly if a bad input got as far as loading data or training."""
    def refuse(*args, **kwargs):
        raise AssertionError("a bad input reached the data or the training loop")
    monkeypatch.setattr(runner, "_datasets", refuse)
    monkeypatch.setattr(runner.train, "train_epoch", refuse)
    monkeypatch.setattr(fragility_runs, "_test_set", refuse)


def _status(argv) -> int:
    """main's exit status, whether it returns it or argparse raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("category, argv, word", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_on_stderr_and_exit_2(category, argv, word, tmp_path, monkeypatch, capsys):
    if category == "device" and "cuda" in argv and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if ("show" in category or "redo" in category or "source" in category) and not RECORDED.exists():
        pytest.skip("book/results/mnist-cnn3.json is not recorded")
    _no_training(monkeypatch)
    status = _status(_argv(argv, tmp_path))
    out, err = capsys.readouterr()
    assert status == 2, err
    assert out == "" and err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("qnnlib: error: ") and "Traceback" not in err, err
    assert word.lower() in err.lower(), err


def test_cuda_on_a_machine_without_cuda_is_refused_up_front(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _no_training(monkeypatch)
    for device in ("cuda", "cuda:0"):
        assert main([*RUN, "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "CUDA is not available" in err, err


def test_cuda_index_beyond_the_devices_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _no_training(monkeypatch)
    assert main([*RUN, "--device", "cuda:3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 CUDA device" in err, err


def test_a_second_writer_of_the_same_run_is_refused(tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    with store.locked(store.RunFiles(tmp_path, "mnist-cnn3-fast")):
        assert main([*RUN, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "being written by another process" in err and str(os.getpid()) in err, err


def test_unexpected_errors_are_one_line_too_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("a bug")
    monkeypatch.setattr(experiments, "describe", broken)
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "--debug" in err, err
    with pytest.raises(KeyError):
        main(["list", "--debug"])
    with pytest.raises(KeyError):
        main(["--debug", "list"])


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "qnnlib", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("args, word", [
    (("run", "mnist-cnn3", "--fast", "--set", "width=8"), "fixed channels"),
    (("run", "mnist-cnn3", "--device", "foo"), "device"),
    (("show", "no-such-file.json"), "does not exist"),
    (("dance",), "invalid choice"),
])
def test_the_real_command_line_exits_2_with_one_line(args, word):
    done = _cli(*args)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and word in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_debug_prints_the_traceback():
    done = _cli("show", "no-such-file.json", "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr and "does not exist" in done.stderr


def test_cli_reports_missing_data_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), QNNLIB_DATA=str(tmp_path / "empty"))
    done = subprocess.run([sys.executable, "-m", "qnnlib", "run", "mnist-cnn3", "--fast", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "QNNLIB_DATA" in done.stderr, done.stderr


def test_every_category_has_cases():
    counts = {}
    for category, *_ in CASES:
        counts[category] = counts.get(category, 0) + 1
    assert len(CASES) >= 80 and min(counts.values()) >= 1, counts


def test_list_and_show_print_to_stdout_and_exit_0(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in experiments.CONFIGS)
    if not RECORDED.exists():
        pytest.skip("book/results/mnist-cnn3.json is not recorded")
    assert main(["show", str(RECORDED)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "MNIST (official)" in out and "\n   50 " in out and len(out.splitlines()) == 53


def test_set_epochs_and_name_like_keys_work_or_are_refused_cleanly(tmp_path, monkeypatch, capsys):
    # `--set epochs=2` used to crash with "got multiple values for keyword argument".
    from qnnlib.data import Dataset
    g = torch.Generator().manual_seed(0)
    tiny = Dataset(torch.rand(40, 1, 28, 28, generator=g), torch.arange(40) % 10, "synthetic", "train",
                   "synthetic noise", "memory", tuple(str(c) for c in range(10)))
    monkeypatch.setattr(runner, "_datasets", lambda config: (tiny, tiny))
    monkeypatch.setattr(runner, "_snapshot", lambda model, test, config, epoch: {})
    small = ["--set", "mc_samples=8", "--set", "final_size=8", "--set", "strong_steps=1", "--set", "pgd_steps=1",
             "--set", "sweep_eps=0"]
    assert main([*RUN, "--out", str(tmp_path), "--set", "epochs=1", *small]) == 0
    out, err = capsys.readouterr()
    assert "error" not in err and out.splitlines()[-1] == f"results: {tmp_path / 'mnist-cnn3-fast.json'}"
    assert results.read_results(tmp_path / "mnist-cnn3-fast.json")["config"]["epochs"] == 1
    assert main([*RUN, "--out", str(tmp_path), "--epochs", "1", *small]) == 0  # the same run: finished, resumed
    assert main([*SET, "name=cifar-cnn4"]) == 2
    assert "name" in capsys.readouterr().err
