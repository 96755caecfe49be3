"""qnnlib.manifest: recorded files fetched by URL are used only when they match SHA256SUMS."""

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from qnnlib import manifest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results"



def _publish(folder, files):
    for name, data in files.items():
        (folder / name).write_bytes(data)
    manifest.write_manifest(folder, sorted(files))


def test_the_committed_manifest_lists_every_recorded_file_with_its_digest():
    listed = manifest.parse_manifest((RESULTS / manifest.MANIFEST).read_text())
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--", "book/results"], capture_output=True,
                             text=True).stdout.split()
    names = {Path(p).name for p in tracked} - {manifest.MANIFEST} if tracked else \
        {p.name for p in RESULTS.iterdir() if p.name != manifest.MANIFEST and not p.name.endswith(".ckpt.pt")}
    assert set(listed) == names, "run python tools/results_manifest.py"
    for name in names:
        assert manifest.sha256(RESULTS / name) == listed[name], f"{name} changed: run python tools/results_manifest.py"


def test_the_manifest_tool_agrees_with_the_committed_manifest():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "results_manifest.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_matching_downloads_are_kept(served, tmp_path):
    folder, url = served
    _publish(folder, {"run.json": b'{"a": 1}', "run.npz": b"arrays"})
    got = manifest.fetch(url, ["run.json", "run.npz"], tmp_path / "cache")
    assert {name: path.read_bytes() for name, path in got.items()} == {"run.json": b'{"a": 1}', "run.npz": b"arrays"}


def test_a_tampered_download_is_refused_with_one_line_and_not_stored(served, tmp_path):
    folder, url = served
    _publish(folder, {"run.json": b'{"a": 1}', "run.npz": b"arrays"})
    (folder / "run.json").write_bytes(b'{"a": 2}')  # changed after the manifest was written
    with pytest.warns(UserWarning, match=r"refused .*run\.json: run\.json has SHA-256") as caught:
        got = manifest.fetch(url, ["run.json", "run.npz"], tmp_path / "cache")
    assert list(got) == ["run.npz"] and not (tmp_path / "cache" / "run.json").exists()
    assert all("\n" not in str(w.message) for w in caught)


def test_a_file_missing_from_the_manifest_is_refused(served, tmp_path):
    folder, url = served
    _publish(folder, {"run.json": b"{}"})
    (folder / "extra.json").write_bytes(b"{}")
    with pytest.warns(UserWarning, match="not listed"):
        assert manifest.fetch(url, ["extra.json"], tmp_path / "cache") == {}


def test_without_a_manifest_nothing_is_used(served, tmp_path):
    folder, url = served
    (folder / "run.json").write_bytes(b"{}")
    with pytest.warns(UserWarning, match="no usable SHA256SUMS"):
        assert manifest.fetch(url, ["run.json"], tmp_path / "cache") == {}


def test_a_stale_cached_copy_is_replaced_by_the_verified_download(served, tmp_path):
    folder, url = served
    _publish(folder, {"run.json": b"new"})
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "run.json").write_bytes(b"old")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = manifest.fetch(url, ["run.json"], cache)
    assert got["run.json"].read_bytes() == b"new"


def test_an_absent_file_is_left_out_without_a_warning(served, tmp_path):
    folder, url = served
    _publish(folder, {"run.json": b"{}"})
    (folder / "run.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert manifest.fetch(url, ["run.json"], tmp_path / "cache") == {}


@pytest.mark.parametrize("line", ["abc  run.json", "z" * 64 + "  run.json", "0" * 64 + " run.json"])
def test_a_malformed_manifest_line_is_an_error(line):
    with pytest.raises(manifest.ChecksumError, match="line 1"):
        manifest.parse_manifest(line + "\n")


def test_manifest_format_is_sha256sum(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    path = manifest.write_manifest(tmp_path, ["a.bin"])
    assert path.read_text() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  a.bin\n"
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", "-c", "--quiet", manifest.MANIFEST], cwd=tmp_path).returncode == 0
