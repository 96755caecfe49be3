"""Write book/results/SHA256SUMS: the SHA-256 of every recorded file that git tracks there.

Run it after recording or re-recording a run (``python tools/results_manifest.py``), and commit
the manifest with the files; ``tests/test_manifest.py`` fails while they disagree. A pip-installed
qnnlib (Colab) uses a downloaded recorded file only if it matches this manifest (qnnlib.manifest).
Usage: ``python tools/results_manifest.py [--check]`` (``--check``: exit 1 if it is out of date).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from qnnlib import manifest  # noqa: E402

FOLDER = ROOT / "book" / "results"


def recorded_files() -> list[str]:
    """The files git tracks in book/results (staged ones included), less the manifest itself."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--", "book/results"], check=True,
                         capture_output=True, text=True).stdout
    names = [Path(line).name for line in out.splitlines() if line.strip()]
    return sorted(name for name in names if name != manifest.MANIFEST and (FOLDER / name).is_file())


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print("usage: python tools/results_manifest.py [--check]", file=sys.stderr)
        return 2
    names = recorded_files()
    expected = manifest.format_manifest({name: manifest.sha256(FOLDER / name) for name in names})
    path = FOLDER / manifest.MANIFEST
    if argv == ["--check"]:
        if not path.exists() or path.read_text() != expected:
            print(f"{path} is out of date: run python tools/results_manifest.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(expected)
    print(f"wrote {path} ({len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
