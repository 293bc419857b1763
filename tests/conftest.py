"""Shared fixtures: where the repository and the real test data are; a real Mosquitto broker;
a late HTTP video server."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mosquitto import Mosquitto, free_port, mosquitto_available

from agent.datafiles import shared_test_data

_REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml)."""
    return _REPO_ROOT


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Real test material: $EDGE_GUARD_TEST_DATA, default <repo root>/../shared/data; skips if missing."""
    path = shared_test_data()
    if not path.is_dir():
        pytest.skip(f"test data not found at {path} (set EDGE_GUARD_TEST_DATA to the shared data folder)")
    return path.resolve()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def late_http_server(test_data: Path) -> Iterator[tuple[int, Callable[[], None]]]:
    """A port where nothing listens yet, and a function that starts a real HTTP server on it.

    It serves ``<test data>/videos``: OpenCV streams ``http://127.0.0.1:<port>/opencv_tree.avi``
    as a live camera that ends (goes down) after each pass of the 68-frame video.
    """
    videos = test_data / "videos"
    if not (videos / "opencv_tree.avi").is_file():
        pytest.skip(f"videos not found in {videos}")
    port = free_port()  # closed again: connections are refused until start()
    servers: list[ThreadingHTTPServer] = []

    def start() -> None:
        server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_QuietHandler, directory=str(videos)))
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    yield port, start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real, anonymous Mosquitto on a free loopback port, with persistence (a collector's
    session survives restarts); skips when mosquitto is not installed."""
    if not mosquitto_available():
        pytest.skip("mosquitto / mosquitto_passwd not installed")
    with Mosquitto(tmp_path / "broker") as b:
        yield b
