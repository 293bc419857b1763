"""A live camera that goes down and comes back: the first frame after the gap is not compared
with the last frame before it (the statistics backend's previous frame is reset)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers import read_jsonl, wait_until

from agent.config import load_config
from agent.daemon import Daemon
from agent.frame import Frame
from agent.sdnotify import Notifier
from agent.sinks.base import NullSink
from agent.verdict import Verdict
from agent.workers import Item, Workers

pytestmark = pytest.mark.integration

FRAMES = 150  # the 68-frame video twice and a bit: two reconnections


class FirstFrameSink(NullSink):
    """A real sink that keeps each verdict's diff_prev and whether its frame is the video's first."""

    def __init__(self, first: npt.NDArray[np.uint8]) -> None:
        self.first = first
        self.rows: list[tuple[int, float, bool]] = []  # seq, diff_prev, frame == video frame 0
        self._lock = threading.Lock()

    def publish_verdict(self, verdict: Verdict, frame: Frame) -> None:
        with self._lock:
            self.rows.append((verdict.seq, verdict.stats.diff_prev, bool(np.array_equal(frame.image, self.first))))


@pytest.mark.parametrize("batch_size", [1, 16], ids=["one-by-one", "gap-inside-a-batch"])
def test_first_frame_after_a_reconnect_has_no_previous_frame(
    late_http_server: tuple[int, Callable[[], None]], test_data: Path, tmp_path: Path, batch_size: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With batch_size 16 the worker is held until the camera has delivered every frame, so the
    queue holds both reconnections and the batches it takes ([64, 80) and [128, 144)) each
    contain one: the worker must split them there."""
    batches: list[list[int]] = []  # the connection epoch of each frame of each batch the worker took
    process = Workers._process

    def held_process(self: Workers, items: list[Item]) -> None:
        if not batches:
            wait_until(lambda: self.source.frames_read >= FRAMES, 30, "the camera to deliver every frame")
        batches.append([epoch for _, _, epoch in items])
        process(self, items)

    monkeypatch.setattr(Workers, "_process", held_process)
    port, start = late_http_server
    start()
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_tree.avi"))
    ok, first = cap.read()
    cap.release()
    assert ok
    sink = FirstFrameSink(np.asarray(first, dtype=np.uint8))
    cfg = load_config(None, {
        "camera_id": "gap",
        "node": "test",
        "source": {
            "uri": f"http://127.0.0.1:{port}/opencv_tree.avi",
            "max_frames": FRAMES,
            "timeout_s": 2.0,
            "reconnect": {"initial_s": 0.01, "max_s": 0.04},
        },
        "model": {"enabled": False, "batch_size": batch_size},
        "calibration": {"frames": 20},
        "pipeline": {"queue_size": 256},  # nothing dropped: every frame gets a verdict after calibration
        "file_sink": {"dir": str(tmp_path / "out")},
    })
    daemon = Daemon(cfg, notifier=Notifier(None), extra_sinks=[sink])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run(install_signals=False)))
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and result == [0]
    assert daemon.source is not None and daemon.source.reconnects >= 2

    rows = sorted(sink.rows)
    assert [seq for seq, _, _ in rows] == list(range(20, FRAMES))
    restarts = [seq for seq, _, first_frame in rows if first_frame]
    assert restarts == [68, 136]  # the stream ended after each pass and the camera reconnected
    no_prev = [seq for seq, diff, _ in rows if math.isnan(diff)]
    assert no_prev == restarts  # reset exactly there: every other frame is compared with its predecessor
    mixed = [b for b in batches if len(set(b)) > 1]
    assert len(mixed) == (2 if batch_size > 1 else 0), batches  # the reconnections fell inside batches



def test_a_camera_that_is_down_is_reported_degraded_at_once(
    late_http_server: tuple[int, Callable[[], None]], tmp_path: Path
) -> None:
    """Dead at start (nothing listens yet): status 'degraded, source down' within seconds, not after
    pipeline.stall_after_s (60 s here) of silence; 'online' once it comes up and frames flow."""
    port, start = late_http_server
    cfg = load_config(None, {
        "camera_id": "dead", "node": "test",
        "source": {"uri": f"http://127.0.0.1:{port}/opencv_tree.avi", "max_frames": 60, "timeout_s": 2.0,
                   "reconnect": {"initial_s": 0.05, "max_s": 0.2}},
        "model": {"enabled": False}, "calibration": {"frames": 20},
        "pipeline": {"stall_after_s": 60.0},
        "file_sink": {"dir": str(tmp_path / "out")},
    })
    daemon = Daemon(cfg, notifier=Notifier(None))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run(install_signals=False)))
    thread.start()
    status = tmp_path / "out" / "status.jsonl"

    def states() -> list[tuple[str, str]]:
        return [(r["state"], r["reason"]) for r in read_jsonl(status)] if status.exists() else []

    try:
        wait_until(lambda: any(s == "degraded" and r.startswith("source ") for s, r in states()), 20,
                   "a degraded status while the camera is down")
        start()  # the camera comes up
        thread.join(60)
    finally:
        if thread.is_alive():
            daemon.stop()
            thread.join(30)
    assert result == [0]
    seen = states()
    degraded = next(i for i, (s, r) in enumerate(seen) if s == "degraded")
    assert ("online", "calibrating") in seen[degraded:] or ("online", "guarding") in seen[degraded:], seen
