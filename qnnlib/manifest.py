"""Recorded runs fetched by URL, used only if they match the checksum manifest committed beside them.

``book/results/SHA256SUMS`` lists the SHA-256 of every recorded file (``sha256sum`` format:
``HEX  NAME`` per line; ``sha256sum -c SHA256SUMS`` checks a folder). A pip-installed qnnlib
(Colab) downloads the recorded runs of Chapters 6–9 from the repository at its own commit
(:func:`qnnlib.source.results_url`); :func:`fetch` first downloads that commit's manifest, then
each file, and keeps a file only if its digest is the manifest's. A mismatch — a truncated
download, a proxy's error page, a file of another commit — is one line of warning, and the file
is not used. After re-recording a run, regenerate the manifest with
``python tools/results_manifest.py`` (``tests/test_manifest.py`` fails until you do).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import warnings
from pathlib import Path

MANIFEST = "SHA256SUMS"


class ChecksumError(ValueError):
    """A recorded file whose SHA-256 is not the one in its manifest (or that the manifest lacks)."""


def sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def format_manifest(digests: dict[str, str]) -> str:
    """``sha256sum`` lines, sorted by name."""
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))


def parse_manifest(text: str) -> dict[str, str]:
    """``{name: hex digest}`` from ``sha256sum`` lines; raises ``ChecksumError`` on a malformed line."""
    digests = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        name = name.lstrip("*")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            raise ChecksumError(f"{MANIFEST} line {number} is not 'SHA256  NAME': {line!r}")
        digests[name] = digest
    return digests


def write_manifest(folder: Path | str, names: list[str]) -> Path:
    """Write ``folder/SHA256SUMS`` for the files ``names`` of ``folder``; return its path."""
    folder = Path(folder)
    path = folder / MANIFEST
    path.write_text(format_manifest({name: sha256(folder / name) for name in names}))
    return path


def verify(data: bytes, name: str, digests: dict[str, str]) -> None:
    """Raise ``ChecksumError`` unless ``data`` is the file ``name`` of the manifest ``digests``."""
    if name not in digests:
        raise ChecksumError(f"{name} is not listed in {MANIFEST}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != digests[name]:
        raise ChecksumError(f"{name} has SHA-256 {actual[:12]}…, {MANIFEST} says {digests[name][:12]}…")


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _store(path: Path, data: bytes) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(base_url: str, names: list[str], folder: Path | str, *, timeout: float = 60) -> dict[str, Path]:
    """Download ``names`` from ``base_url`` into ``folder``, keeping only files that match the manifest.

    The manifest ``base_url/SHA256SUMS`` is downloaded first (into ``folder``), then each file; a
    file already in ``folder`` is reused if it still matches. Returns ``{name: path}`` of the
    verified files; a file that cannot be downloaded is left out silently (the caller decides
    whether it was needed), and one that does not match is left out with a one-line warning.
    Without a manifest nothing is used (one warning).
    """
    folder = Path(folder)
    base = base_url.rstrip("/")
    try:
        text = _download(f"{base}/{MANIFEST}", timeout).decode()
        digests = parse_manifest(text)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        warnings.warn(f"qnnlib: no usable {MANIFEST} at {base} ({error}): the recorded runs there are not used",
                      stacklevel=2)
        return {}
    _store(folder / MANIFEST, text.encode())
    verified = {}
    for name in names:
        target = folder / name
        if target.exists():
            try:
                verify(target.read_bytes(), name, digests)
                verified[name] = target
                continue
            except ChecksumError:
                target.unlink()  # a stale copy (another commit's file): download it again
        try:
            data = _download(f"{base}/{name}", timeout)
        except (OSError, ValueError):
            continue
        try:
            verify(data, name, digests)
        except ChecksumError as error:
            warnings.warn(f"qnnlib: refused {base}/{name}: {error}", stacklevel=2)
            continue
        _store(target, data)
        verified[name] = target
    return verified
