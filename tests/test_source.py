"""qnnlib.source: the repository URL and the installed commit, from which the results URL follows."""

import json
from pathlib import Path

import pytest
import yaml

from qnnlib import source

ROOT = Path(__file__).resolve().parents[1]


class _Dist:
    def __init__(self, direct_url):
        self.direct_url = direct_url

    def read_text(self, name):
        assert name == "direct_url.json"
        return None if self.direct_url is None else json.dumps(self.direct_url)


def _installed(monkeypatch, direct_url):
    monkeypatch.setattr(source.metadata, "distribution", lambda name: _Dist(direct_url))


def test_repository_url_is_the_one_in_config_yml():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert source.REPOSITORY_URL == config["repository"]["url"].rstrip("/")


def test_clone_command_names_the_repository_and_its_folder():
    assert source.clone_command() == f"git clone {source.REPOSITORY_URL}\ncd qnnlib-book"


def test_a_git_install_gives_the_raw_results_url_at_its_commit(monkeypatch):
    monkeypatch.delenv(source.RESULTS_URL_ENV, raising=False)
    _installed(monkeypatch, {"url": "https://github.com/someone/the-book.git",
                             "vcs_info": {"vcs": "git", "commit_id": "0123abc", "requested_revision": "main"}})
    assert source.install_origin() == {"url": "https://github.com/someone/the-book.git", "commit": "0123abc"}
    assert source.results_url() == "https://raw.githubusercontent.com/someone/the-book/0123abc/book/results"


def test_an_explicit_results_url_wins_over_the_installed_commit(monkeypatch):
    _installed(monkeypatch, {"url": "https://github.com/a/b", "vcs_info": {"vcs": "git", "commit_id": "c0ffee"}})
    monkeypatch.setenv(source.RESULTS_URL_ENV, "http://127.0.0.1:8000/results")
    assert source.results_url() == "http://127.0.0.1:8000/results"


@pytest.mark.parametrize("direct_url", [
    None,                                                          # installed from an index: no direct_url.json
    {"url": "file:///work/repo", "dir_info": {"editable": True}},  # a checkout
    {"url": "file:///tmp/clone", "vcs_info": {"vcs": "git", "commit_id": "abc"}},  # a local clone: not GitHub
])
def test_no_results_url_without_a_github_commit(monkeypatch, direct_url):
    monkeypatch.delenv(source.RESULTS_URL_ENV, raising=False)
    _installed(monkeypatch, direct_url)
    assert source.results_url() is None


def test_raw_results_url_rejects_a_url_that_is_not_github():
    with pytest.raises(ValueError, match="repository"):
        source.raw_results_url("https://gitlab.com/a/b", "main")


def test_the_package_list_of_a_pip_install_has_every_subpackage():
    # A pip install from git (Colab) ships only the packages pyproject.toml lists; a subpackage
    # left out makes `from qnnlib import experiments` fail there although it works in a checkout.
    import fnmatch
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config.get("packages", {}).get("find", {}).get("include") if isinstance(config.get("packages"), dict) \
        else config.get("packages")
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qnnlib").rglob("__init__.py")}
    assert packages >= {"qnnlib", "qnnlib.experiments"}
    for package in packages:
        assert any(fnmatch.fnmatchcase(package, pattern) for pattern in patterns), f"{package} is not packaged"
