"""qnnlib.experiments.recorded: recorded runs read locally or by verified download, never trained unasked."""

import importlib
import json
import shutil
from pathlib import Path

import pytest

from qnnlib import experiments, manifest

rec = importlib.import_module("qnnlib.experiments.recorded")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results"


@pytest.fixture
def pip_installed(monkeypatch, tmp_path):
    """qnnlib as in Colab: no book/results beside it, a fresh cache, a working folder of its own."""
    monkeypatch.setattr(rec, "RESULTS_DIR", tmp_path / "site-packages" / "book" / "results")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(rec.RESULTS_URL_ENV, raising=False)
    monkeypatch.setattr(rec, "_unavailable", {})

    def no_training(name, **kwargs):
        raise AssertionError(f"trained {name} unasked")

    monkeypatch.setattr(rec, "run", no_training)



def _publish(folder, name):
    for suffix in rec.RECORDED_SUFFIXES + ("",):
        source = RESULTS / (name + suffix if suffix else manifest.MANIFEST)
        shutil.copy(source, folder / source.name)


def test_the_front_page_quotes_the_recorded_minutes():
    intro = (ROOT / "book" / "intro.md").read_text()
    for name, words in (("mnist-cnn3", "`mnist-cnn3` took {} minutes"), ("mnist-cnn3-seed1", "its second seed {}"),
                        ("mnist-cnn3-seed2", "its third {}"),
                        ("mnist-cnn3-at", "`mnist-cnn3-at` of Chapter 10 {} minutes")):
        assert words.format(rec.RECORDED_MINUTES[name]) in " ".join(intro.split()), name


def test_recorded_minutes_are_the_wall_times_of_the_recorded_runs():
    for name, minutes in rec.RECORDED_MINUTES.items():
        if not (RESULTS / f"{name}.json").exists():  # not recorded yet: said to take what its twin took
            assert minutes == rec.RECORDED_MINUTES[name.rsplit("-seed", 1)[0]], name
            continue
        record = json.loads((RESULTS / f"{name}.json").read_text())
        if "final" not in record:  # still being recorded (over several sessions): its time so far says nothing
            continue
        assert round(record["provenance"]["wall_seconds"] / 60) == minutes, name
    # Every finished recorded run, and every seed twin of one, says how long it takes; a
    # configuration not yet recorded to the end (mnist-cnn3-at, Chapter 10, is recorded over
    # several sessions) has no entry and is described as "50 epochs".
    finished = {name for name in experiments.CONFIGS if (RESULTS / f"{name}.json").exists()
                and "final" in json.loads((RESULTS / f"{name}.json").read_text())}
    assert finished <= set(rec.RECORDED_MINUTES) <= set(experiments.CONFIGS)


def test_a_pip_install_reads_the_verified_download(pip_installed, served, monkeypatch):
    folder, url = served
    _publish(folder, "mnist-cnn3")
    monkeypatch.setenv(rec.RESULTS_URL_ENV, url)
    run = experiments.recorded("mnist-cnn3")
    assert run.record == json.loads((RESULTS / "mnist-cnn3.json").read_text())
    assert experiments.load_or_run("mnist-cnn3", fast=False).record == run.record
    assert experiments.final_model(run) is not None


def test_a_tampered_download_is_not_used_and_nothing_trains(pip_installed, served, monkeypatch):
    folder, url = served
    _publish(folder, "mnist-cnn3")
    (folder / "mnist-cnn3.json").write_text((folder / "mnist-cnn3.json").read_text().replace("0.9", "0.8", 1))
    monkeypatch.setenv(rec.RESULTS_URL_ENV, url)
    with pytest.warns(UserWarning, match="refused"):
        with pytest.raises(rec.RecordedRunUnavailable) as caught:
            experiments.load_or_run("mnist-cnn3", fast=False)
    message = str(caught.value)
    assert "\n" not in message and "python -m qnnlib run mnist-cnn3" in message and f"{rec.RECORDED_MINUTES['mnist-cnn3']} min" in message


@pytest.mark.parametrize("reader", ["load_or_run", "recorded", "book_runs"])
def test_without_recorded_results_full_mode_says_what_to_run_instead_of_training(pip_installed, reader):
    with pytest.raises(rec.RecordedRunUnavailable, match=r"python -m qnnlib run cifar-cnn4`.*206 min") as caught:
        if reader == "load_or_run":
            experiments.load_or_run("cifar-cnn4", fast=False)
        elif reader == "recorded":
            experiments.recorded("cifar-cnn4")
        else:
            experiments.book_runs({"cnn4": "cifar-cnn4"}, fast=False)
    assert "no results URL" in str(caught.value)
    assert caught.value._render_traceback_() == [f"RecordedRunUnavailable: {caught.value}"]


def test_a_run_the_reader_made_in_runs_is_read(pip_installed, tmp_path):
    (tmp_path / "runs").mkdir()
    for suffix in rec.RECORDED_SUFFIXES:
        shutil.copy(RESULTS / f"mnist-cnn3{suffix}", tmp_path / "runs")
    assert experiments.load_or_run("mnist-cnn3", fast=False).path == Path("runs") / "mnist-cnn3.json"


def test_training_started_by_the_book_prints_the_marker_first(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(rec, "RESULTS_DIR", tmp_path)  # a checkout whose record is absent
    def fake_run(name, **kwargs):
        assert rec.TRAINING_MARKER in capsys.readouterr().err
        raise RuntimeError("stop here")
    monkeypatch.setattr(rec, "run", fake_run)
    with pytest.raises(RuntimeError, match="stop here"):
        experiments.load_or_run("mnist-cnn3", fast=False)


class _Data:
    def __init__(self, identity):
        self.identity = identity


def test_data_check_names_both_datasets_when_they_differ():
    run = experiments.recorded("cifar-cnn4")
    recorded_as = run.record["provenance"]["dataset"]["identity"]
    same, sentence = experiments.data_check(run, _Data(recorded_as))
    assert same and recorded_as in sentence
    other = "CIFAR-10 (official)" if recorded_as != "CIFAR-10 (official)" else "CIFAR-10 (JPEG copy)"
    same, sentence = experiments.data_check(run, _Data(other))
    assert not same and recorded_as in sentence and other in sentence and "skipped" in sentence
    assert sentence.count(". ") == 0 and "\n" not in sentence  # one sentence


def _with_epochs(run, spaces):
    """A copy of ``run`` whose epochs carry the given per-space records (one dict per epoch)."""
    record = dict(run.record, epochs=[{"epoch": i + 1, "pixel": s} for i, s in enumerate(spaces)])
    return rec.RecordedRun(record, {}, run.path)


def test_reliable_epochs_schema_1_flags_exactly_the_epochs_below_ess_min():
    from qnnlib.uncertainty.diagnostics import ESS_MIN

    run = experiments.recorded("cifar-cnn4")  # a schema-1 record: no verdict stored, the ESS decides
    assert run.record["schema"] == 1
    ess = run.series("ess", "pixel")
    assert list(experiments.reliable_epochs(run, "pixel")) == [e >= ESS_MIN for e in ess]
    made = _with_epochs(run, [{"ess": ESS_MIN - 1e-9}, {"ess": ESS_MIN}, {"ess": 1e6}])
    assert list(experiments.reliable_epochs(made, "pixel")) == [False, True, True]


def test_reliable_epochs_schema_2_uses_the_recorded_verdict_not_the_ess():
    run = experiments.recorded("mnist-cnn3")
    # A large ESS with a heavy tail (k̂ > 0.7) is unreliable; the record's verdict decides.
    made = _with_epochs(run, [{"ess": 1e6, "reliable": False}, {"ess": 5.0, "reliable": True}])
    assert list(experiments.reliable_epochs(made, "pixel")) == [False, True]
    with pytest.raises(ValueError, match="space"):
        experiments.reliable_epochs(run, "pixels")


@pytest.mark.parametrize("name", ["mnist-cnn3", "mnist-cnn3-seed1", "mnist-cnn3-seed2", "cifar-cnn4", "cifar-resnet8"])
def test_the_stored_feature_box_is_that_of_the_final_network(name):
    # Chapter 8 rebuilds each run's feature box from final["feature_scale"], the maximum of the
    # final network's features over the training set: the maximum over any 1,000 training images
    # stays below it, and reaches most of it (a box stored from another network fails the first).
    import torch
    from qnnlib.data import load_dataset, subset

    path = experiments.RESULTS_DIR / f"{name}.json"
    if not path.exists() or "final" not in experiments._recorded(path).record:
        pytest.skip(f"{name} is not recorded yet")
    run = experiments._recorded(path)
    dataset = run.record["config"]["dataset"]
    try:
        train = subset(load_dataset(dataset, "train"), 1000, seed=0)
    except (FileNotFoundError, RuntimeError) as error:
        pytest.skip(f"no {dataset} training images here ({error})")
    scale = torch.tensor(run.record["final"]["feature_scale"])
    top = experiments._features(experiments.final_model(run), train.x).max(0).values
    assert bool((top <= scale * (1 + 1e-5) + 1e-6).all())
    active = scale > 0
    assert float((top[active] / scale[active]).median()) > 0.5
