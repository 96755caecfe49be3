"""Fixtures shared by several test files."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch


@pytest.fixture
def served(tmp_path):
    """A folder served over a loopback http.server: (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture
def one_thread():
    """Run the test on one torch thread: its tensors are tiny, and on a shared 2-core machine an
    OpenMP team only adds stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
