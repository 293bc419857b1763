"""The synthetic camera: determinism, labels, fault schedules, and that each fault really degrades the frame."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers import wait_until

from agent.errors import SourceError
from agent.frame import Frame
from agent.sources import Source, open_source
from agent.sources.config import SourceConfig
from agent.sources.synthetic import (
    FAULT_NAMES,
    SCENE_CLASSES,
    FaultSchedule,
    FaultWindow,
    SyntheticCamera,
    SyntheticScene,
    SyntheticSource,
    parse_synthetic_uri,
)

Image = npt.NDArray[np.uint8]
SMALL = (320, 180)
Stats = dict[str, float]


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene(seed=11, size_wh=SMALL)


# -- the scene ----------------------------------------------------------------------------------------------------


def test_same_seed_same_frames_other_seed_other_frames(scene: SyntheticScene) -> None:
    again = SyntheticScene(seed=11, size_wh=SMALL)
    other = SyntheticScene(seed=12, size_wh=SMALL)
    for index in (0, 1, 77, 401):
        a, label_a = scene.render(index)
        b, label_b = again.render(index)
        assert np.array_equal(a, b) and label_a == label_b
        assert not np.array_equal(a, other.render(index)[0])
    # Random access gives the same bytes as streaming from the start.
    fresh = SyntheticScene(seed=11, size_wh=SMALL)
    assert np.array_equal(fresh.render(300)[0], scene.render(300)[0])


def test_render_shape_and_dtype() -> None:
    image, label = SyntheticScene(seed=0, size_wh=(97, 61)).render(5)
    assert image.shape == (61, 97, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert label in SCENE_CLASSES
    image, _ = SyntheticScene(seed=0).render(0)
    assert image.shape == (360, 640, 3)


def test_every_class_shows_up_within_calibration_time(scene: SyntheticScene) -> None:
    # The demo calibrates on the first 400 frames: all classes must appear there, in comparable shares.
    counts = Counter(scene.label(i) for i in range(400))
    assert set(counts) == set(SCENE_CLASSES)
    assert min(counts.values()) >= 40
    assert SCENE_CLASSES == ("empty", "car", "person", "ball")


def test_classes_look_different(scene: SyntheticScene) -> None:
    # An object changes the pixels against the empty background; each class in its own way.
    empty_index = next(i for i in range(400) if scene.label(i) == "empty")
    background, _ = scene.draw(empty_index)
    changed: dict[str, float] = {}
    for label in SCENE_CLASSES[1:]:
        index = next(i for i in range(400) if scene.label(i) == label)
        drawn, got = scene.draw(index)
        assert got == label
        changed[label] = float(np.mean(np.any(drawn != background, axis=2)))
    assert all(0.005 < share < 0.5 for share in changed.values()), changed


def test_consecutive_clean_frames_differ_but_only_a_little(scene: SyntheticScene) -> None:
    frames = [scene.render(i)[0].astype(np.int16) for i in range(100, 110)]
    for a, b in itertools.pairwise(frames):
        diff = np.abs(a - b)
        assert diff.max() > 0  # sensor noise: never bit-identical
        assert diff.mean() < 6.0  # but a natural, small change


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size_wh": (16, 100)}, r"between 32x32 and 8192x8192, but got 16x100"),
        ({"seed": -1}, r"seed must be >= 0, but got -1"),
    ],
)
def test_scene_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticScene(int(kwargs.get("seed", 0)), kwargs.get("size_wh", (64, 64)))


# -- schedules and URIs -------------------------------------------------------------------------------------------


def test_default_scenario_schedule() -> None:
    spec = parse_synthetic_uri("synthetic://default")
    assert (spec.scenario, spec.seed, spec.size_wh, spec.fps, spec.style) == ("default", 0, (640, 360), 25.0, "street")
    sched = spec.schedule
    assert [w.fault for w in sched] == list(FAULT_NAMES)
    assert [(w.start, w.end) for w in sched] == [(400 + 100 * k, 450 + 100 * k) for k in range(len(FAULT_NAMES))]
    assert sched.total_frames == 1500  # 60 s at 25 fps
    assert sched.frames_by_fault() == dict.fromkeys(FAULT_NAMES, 50)
    assert (sched.fault_at(399), sched.fault_at(400), sched.fault_at(449), sched.fault_at(450)) == (
        None, "blur", "blur", None,
    )


def test_default_scenario_timing_follows_fps_and_query() -> None:
    spec = parse_synthetic_uri("synthetic://default?fps=10&clean_s=3&fault_s=1&gap_s=0.5")
    assert [(w.start, w.end) for w in spec.schedule][:2] == [(30, 40), (45, 55)]
    assert spec.schedule.total_frames == 30 + len(FAULT_NAMES) * 15
    assert parse_synthetic_uri("synthetic://clean", default_fps=12.5).fps == 12.5


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("synthetic://night", r"scenario must be one of clean, default, custom, but got 'night'"),
        ("synthetic://default?colour=red", r"unknown query key 'colour'; accepted keys: seed, size"),
        ("synthetic://default?seed=x", r"seed must be an integer, but got 'x'"),
        ("synthetic://default?size=640", r"size must look like WxH"),
        ("synthetic://default?size=8x8", r"size width must be between 32 and 8192, but got 8"),
        ("synthetic://default?fps=0", r"fps must be between 0.1 and 1000, but got 0"),
        ("synthetic://default?style=moon", r"style must be one of street, indoor, but got 'moon'"),
        ("synthetic://custom", r"custom scenario needs faults="),
        ("synthetic://custom?faults=blur:10", r"must look like fault:start:end"),
        ("synthetic://custom?faults=smoke:1:9", r"fault must be one of blur, .*but got 'smoke'"),
        ("synthetic://custom?faults=blur:9:9", r"0 <= start < end, but got start=9, end=9"),
        ("synthetic://custom?faults=blur:a:9", r"must be integers, but got 'blur:a:9'"),
        ("synthetic://custom?faults=blur:0:50,dark:40:60", r"must not overlap, but blur:0:50 overlaps dark:40:60"),
        ("synthetic://clean?clean_s=4", r"clean_s only apply to the default scenario"),
        ("synthetic://default?faults=blur:1:2", r"faults= needs the custom scenario"),
        ("synthetic://clean?seed=1&seed=2", r"query key 'seed' given twice"),
    ],
)
def test_bad_synthetic_uris(uri: str, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_synthetic_uri(uri)


def read_all(source: Source) -> list[Frame]:
    frames: list[Frame] = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_custom_schedule_labels_every_frame() -> None:
    uri = "synthetic://custom?faults=blur:5:10,frozen:12:20,dark:20:23&frames=30&size=96x64&seed=4"
    source = open_source(SourceConfig(uri=uri), "syn")
    assert isinstance(source, SyntheticSource)
    assert source.live and source.nominal_fps == 25.0 and source.state == "connecting"
    frames = read_all(source)
    expected = [None] * 5 + ["blur"] * 5 + [None] * 2 + ["frozen"] * 8 + ["dark"] * 3 + [None] * 7
    assert [f.fault for f in frames] == expected
    assert [f.seq for f in frames] == list(range(30))
    assert all(f.live and f.camera_id == "syn" and f.image.shape == (64, 96, 3) for f in frames)
    scene = SyntheticScene(seed=4, size_wh=(96, 64))
    assert all(f.extra["label"] == scene.label(f.seq) for f in frames if f.fault != "frozen")
    # A frozen camera repeats the last frame it delivered, bit for bit.
    for f in frames[12:20]:
        assert np.array_equal(f.image, frames[11].image) and f.extra["label"] == frames[11].extra["label"]
    assert not np.array_equal(frames[20].image, frames[11].image)
    assert str(source.state) == "ended" and source.frames_read == 30


def test_frozen_frames_are_identical_with_random_access_too() -> None:
    scene = SyntheticScene(seed=2, size_wh=SMALL)
    camera = SyntheticCamera(scene, FaultSchedule([FaultWindow("frozen", 40, 45)]))
    frozen = [camera.render(i)[0] for i in (44, 42, 40)]  # not in order: recomputed from frame 39
    before, _, fault = camera.render(39)
    assert fault is None
    assert all(np.array_equal(f, before) for f in frozen)


def test_clean_scenario_runs_until_max_frames_and_close() -> None:
    source = open_source(SourceConfig(uri="synthetic://clean?size=64x48", max_frames=40), "syn")
    frames = read_all(source)
    assert len(frames) == 40 and all(f.fault is None for f in frames)
    endless = open_source(SourceConfig(uri="synthetic://clean?size=64x48"), "syn")
    got: list[Frame] = []
    reader = threading.Thread(target=lambda: got.extend(iter(endless.read, None)), daemon=True)
    reader.start()
    # Wait for frames instead of sleeping a fixed time (a loaded machine may not render 10 in 50 ms).
    wait_until(lambda: len(got) > 10, 30, "the endless source to produce frames")
    endless.close()
    reader.join(5.0)
    assert not reader.is_alive() and len(got) > 10 and endless.state == "ended"


def test_realtime_paces_the_synthetic_camera() -> None:
    source = open_source(SourceConfig(uri="synthetic://clean?size=64x48&fps=100", realtime=True, max_frames=21), "s")
    t0 = time.monotonic()
    frames = read_all(source)
    assert len(frames) == 21
    assert 0.19 <= time.monotonic() - t0 < 2.0


# -- each fault degrades the frame in the expected direction ------------------------------------------------------


def _luma(image: Image) -> npt.NDArray[np.float32]:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)


def _stats(image: Image, prev: Image) -> Stats:
    y = _luma(image)
    k = cv2.filter2D(y, cv2.CV_32F, np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32))[1:-1, 1:-1]
    return {
        "brightness": float(y.mean()),
        "contrast": float(y.std()),
        "blur": float(cv2.Laplacian(y, cv2.CV_32F, ksize=1)[1:-1, 1:-1].var()),
        "noise": float(np.sqrt(np.pi / 2) * np.abs(k).mean() / 6),
        "clip_frac": float((y >= 250).mean()),
        "dark_frac": float((y <= 15).mean()),
        "r_over_b": float(image[:, :, 2].mean() / max(1.0, image[:, :, 0].mean())),
        "diff_prev": float(np.abs(y - _luma(prev)).mean()),
    }


@pytest.fixture(scope="module")
def fault_stats() -> dict[str, tuple[Stats, Stats]]:
    """Per fault: (median stats of its frames, median stats of the clean frames just before)."""
    windows = [FaultWindow(name, 30 + 40 * k, 50 + 40 * k) for k, name in enumerate(FAULT_NAMES)]
    camera = SyntheticCamera(SyntheticScene(seed=5, size_wh=(640, 360)), FaultSchedule(windows))
    frames = [camera.render(i) for i in range(30 + 40 * len(FAULT_NAMES))]

    def median(indices: range) -> Stats:
        rows = [_stats(frames[i][0], frames[i - 1][0]) for i in indices]
        return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}

    out = {}
    for w in windows:
        assert all(frames[i][2] == w.fault for i in range(w.start, w.end))
        assert all(frames[i][2] is None for i in range(w.start - 19, w.start))
        # The first frame of a window is skipped: its diff_prev mixes clean and faulty frames.
        out[w.fault] = (median(range(w.start + 1, w.end)), median(range(w.start - 19, w.start)))
    return out


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("blur", lambda f, c: f["blur"] < 0.1 * c["blur"]),
        ("dark", lambda f, c: f["brightness"] < 0.25 * c["brightness"] and f["dark_frac"] > 0.3),
        ("overexposed", lambda f, c: f["brightness"] > c["brightness"] + 60 and f["clip_frac"] > 0.2),
        ("glare", lambda f, c: f["clip_frac"] > 0.05 > 20 * c["clip_frac"] and f["brightness"] > c["brightness"] + 20),
        ("noise", lambda f, c: f["noise"] > 2 * c["noise"] and f["diff_prev"] > 4 * c["diff_prev"]),
        ("frozen", lambda f, c: f["diff_prev"] == 0.0 < c["diff_prev"]),
        ("covered", lambda f, c: f["contrast"] < 5 and f["brightness"] < 50 and f["blur"] < 0.05 * c["blur"]),
        # a veil: contrast down to 55 %, the mean pulled towards the light airlight
        ("fog", lambda f, c: 0.45 * c["contrast"] < f["contrast"] < 0.65 * c["contrast"]
         and f["brightness"] > c["brightness"] + 20),
        ("color_cast", lambda f, c: f["r_over_b"] > 1.8 * c["r_over_b"]),
        (
            "scene_change",
            lambda f, c: abs(f["brightness"] - c["brightness"]) > 15 or abs(f["r_over_b"] - c["r_over_b"]) > 0.3,
        ),
    ],
)
def test_fault_moves_statistics_the_expected_way(
    fault_stats: dict[str, tuple[Stats, Stats]], fault: str, check: Callable[[Stats, Stats], bool]
) -> None:
    faulty, clean = fault_stats[fault]
    assert check(faulty, clean), (fault, faulty, clean)


def test_clean_frames_stay_natural(fault_stats: dict[str, tuple[Stats, Stats]]) -> None:
    for _, clean in fault_stats.values():
        assert 80 < clean["brightness"] < 170 and 25 < clean["contrast"] < 70
        assert clean["clip_frac"] < 0.002 and clean["dark_frac"] < 0.02
        assert clean["blur"] > 500 and 0.5 < clean["diff_prev"] < 6


def test_scene_change_shows_another_place() -> None:
    scene = SyntheticScene(seed=5, size_wh=SMALL)
    camera = SyntheticCamera(scene, FaultSchedule([FaultWindow("scene_change", 10, 20)]))
    changed, _, fault = camera.render(15)
    normal, _ = scene.render(15)
    assert fault == "scene_change"
    hist = [cv2.calcHist([img], [0, 1, 2], None, [4, 4, 4], [0, 256] * 3).ravel() / img[:, :, 0].size
            for img in (changed, normal)]
    assert 0.5 * float(np.abs(hist[0] - hist[1]).sum()) > 0.5  # colour distributions mostly disjoint
