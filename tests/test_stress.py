"""``edge-guard stress``: sweep metrics, probes, slices, the PNG, and the command on the real test data."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers import write_squeezenet_config

from agent import exitcodes
from agent.cli import main
from agent.fieldtools.plots import robustness_png
from agent.fieldtools.probes import PROBES, confidence_slices, probe_variants
from agent.fieldtools.robustness import (
    Observed,
    changed,
    detection_agreement,
    find_cliffs,
    fit_to_size,
    robustness_curves,
)
from agent.fieldtools.stressreport import format_report
from agent.model.types import ModelOutput
from agent.stats.cpu import CpuStats

U8 = npt.NDArray[np.uint8]


def _det(*rows: tuple[float, float, float, float, float, float]) -> npt.NDArray[np.float32]:
    return np.array(rows, dtype=np.float32).reshape(-1, 6)


# --- pieces ----------------------------------------------------------------------------------
def test_fit_to_size_crops_the_centre_without_distortion() -> None:
    image = np.zeros((100, 300, 3), dtype=np.uint8)
    image[:, 100:200] = 255  # the central third is white
    out = fit_to_size(image, (50, 50))
    assert out.shape == (50, 50, 3)
    assert out.min() == 255, "a square crop of the centre of a 3:1 image is the white third"
    assert fit_to_size(image, (300, 100)) is image


@pytest.mark.parametrize(
    ("a", "b", "f1"),
    [
        (_det(), _det(), 1.0),  # both empty: agree
        (_det((0, 0, 10, 10, 0.9, 1)), _det(), 0.0),
        (_det((0, 0, 10, 10, 0.9, 1)), _det((1, 1, 10, 10, 0.5, 1)), 1.0),  # IoU 0.81, same class
        (_det((0, 0, 10, 10, 0.9, 1)), _det((1, 1, 10, 10, 0.5, 2)), 0.0),  # other class
        (_det((0, 0, 10, 10, 0.9, 1)), _det((5, 5, 15, 15, 0.9, 1)), 0.0),  # IoU 0.14
        (_det((0, 0, 10, 10, 0.9, 1), (20, 20, 30, 30, 0.8, 1)), _det((0, 0, 10, 10, 0.9, 1)), 2 / 3),
    ],
)
def test_detection_agreement(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], f1: float) -> None:
    assert detection_agreement(a, b) == pytest.approx(f1)


def test_changed_for_classifiers_and_detectors() -> None:
    assert changed(ModelOutput(top1=3, confidence=0.9), ModelOutput(top1=4, confidence=0.9))
    assert not changed(ModelOutput(top1=3, confidence=0.9), ModelOutput(top1=3, confidence=0.2))
    one = _det((0, 0, 10, 10, 0.9, 1))
    assert not changed(ModelOutput(1, 0.9, detections=one), ModelOutput(1, 0.5, detections=one))
    assert changed(ModelOutput(1, 0.9, detections=one), ModelOutput(-1, 0.0, detections=_det()))


def _cells() -> list[dict[str, Any]]:
    flips = {"fog": [0.0, 0.05, 0.5, 0.6, 0.9], "glare": [0.1, 0.1, 0.1, 0.1, 0.1]}
    return [
        {"corruption": name, "severity": s + 1, "flip_rate": f, "accuracy": None, "mean_confidence": 0.5,
         "guard_detect_rate": 0.2 * (s + 1)}
        for name, fl in flips.items() for s, f in enumerate(fl)
    ]


def test_curves_and_cliffs() -> None:
    clean = {"mean_confidence": 0.7, "accuracy": None, "guard_false_alarm_rate": 0.0}
    curves = robustness_curves(_cells(), clean, use_accuracy=False)
    assert list(curves) == ["fog", "glare"]
    assert curves["fog"]["severity"] == [0, 1, 2, 3, 4, 5]
    assert curves["fog"]["performance"] == [1.0, 1.0, 0.95, 0.5, 0.4, 0.1]
    assert curves["fog"]["guard_detect"][0] == 0.0
    cliffs = find_cliffs(curves, 0.2)
    assert [(c["corruption"], c["from_severity"], c["to_severity"]) for c in cliffs] == [("fog", 2, 3), ("fog", 4, 5)]
    assert cliffs[0]["drop"] == pytest.approx(0.45)
    assert find_cliffs(curves, 0.5) == []


def test_confidence_slices_mark_the_weak_bucket() -> None:
    rng = np.random.default_rng(0)
    rows: list[tuple[float, float, float, float, bool | None]] = []
    for _ in range(500):
        brightness = float(rng.uniform(0, 255))
        dark = brightness < 50  # the model is poor on dark frames
        conf = 0.2 if dark else 0.8
        rows.append((brightness, float(rng.uniform(0, 500)), float(rng.uniform(0, 100)), conf, dark))
    out = confidence_slices(rows)
    buckets = out["proxies"]["brightness"]
    assert len(buckets) == 5 and sum(b["n"] for b in buckets) == 500
    assert buckets[0]["weak"] and not any(b["weak"] for b in buckets[1:])
    assert not any(b["weak"] for b in out["proxies"]["saturation"])
    assert confidence_slices(rows[:3])["proxies"] == {}


def test_probe_variants_touch_only_their_region() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(120, 200, 3), dtype=np.uint8)
    stats = CpuStats((4, 4)).compute(image)
    variants = probe_variants(image, Observed(stats, ModelOutput(top1=1, confidence=0.5), None))
    assert set(variants) == set(PROBES)
    diff = np.any(variants["corner_tl"] != image, axis=2)
    ys, xs = np.nonzero(diff)
    assert ys.max() < 15 and xs.max() < 50  # 12% of the height, 25% of the width
    inside = (slice(30, 90), slice(45, 155))  # the classifier's central region of interest
    assert np.array_equal(variants["background_blur"][inside], image[inside])
    assert not np.array_equal(variants["background_blur"], image)
    # a detector without detections: background probes do not apply
    det = probe_variants(image, Observed(stats, ModelOutput(-1, 0.0, detections=_det()), None))
    assert "background_blur" not in det and "corner_tl" in det


def test_robustness_png_is_a_valid_image(tmp_path: Path) -> None:
    clean = {"mean_confidence": 0.7, "accuracy": None, "guard_false_alarm_rate": 0.0}
    curves = robustness_curves(_cells(), clean, use_accuracy=False)
    path = robustness_png(curves, find_cliffs(curves, 0.2), tmp_path / "r.png", title="test", subtitle="sub")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] == 2 * 300 and img.shape[0] > 200
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10, "the plot must draw something"


# --- the command on the real test data ----------------------------------------------------------
def _config(test_data: Path, tmp_path: Path, extra: str = "") -> Path:
    return write_squeezenet_config(test_data, tmp_path, "stresstest", "calibration: {frames: 60}\n" + extra)


def _photo_folder(test_data: Path, tmp_path: Path) -> Path:
    """24 photos, the four with known classes first (symlinks, no copies)."""
    photos = test_data / "images" / "photos"
    known = ["ortex_goldfish.jpg", "opencv_squirrel_cls.jpg", "ortex_wolves.jpg", "opencv_butterfly.jpg"]
    others = [p.name for p in sorted(photos.iterdir()) if p.name not in known][:20]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate([*known, *others]):
        (folder / f"{i:02d}_{name}").symlink_to(photos / name)
    (folder / "labels.csv").write_text(
        "00_ortex_goldfish.jpg,goldfish\n01_opencv_squirrel_cls.jpg, fox squirrel\n"
        "02_ortex_wolves.jpg\twhite wolf\n03_opencv_butterfly.jpg,323\n", encoding="utf-8")
    return folder


@pytest.mark.slow
def test_stress_on_photos_with_labels_and_gates(test_data: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = _photo_folder(test_data, tmp_path)
    gates = tmp_path / "gates.yaml"
    gates.write_text(
        "gates:\n"
        "  - {metric: flip_rate, corruption: gaussian_noise, severity: 1, op: '<=', value: 1.0}\n"
        "  - {metric: clean_accuracy, op: '>=', value: 0.75}\n"
        "  - {metric: flip_rate, corruption: fog, severity: 5, op: '<', value: 0.0, name: impossible}\n",
        encoding="utf-8")
    out = tmp_path / "out"
    code = main(["stress", "--config", str(_config(test_data, tmp_path)), "--images", str(folder),
                 "--max-images", "4", "--corruptions", "gaussian_noise,fog", "--severities", "1,5",
                 "--labels", str(folder / "labels.csv"), "--gates", str(gates), "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == exitcodes.REGRESSION, text
    report = json.loads((out / "stress.json").read_text(encoding="utf-8"))
    assert report["inputs"]["n"] == 4 and report["inputs"]["labelled"] == 4
    assert report["profile"]["origin"].startswith("calibrated on 24 clean images")
    # goldfish, fox squirrel and white wolf are right; the butterfly cropped to 4:3 reads as a
    # ringlet (0.32) rather than a monarch (0.28)
    assert report["clean"]["accuracy"] == 0.75
    assert report["performance_metric"] == "accuracy"
    cells = {(c["corruption"], c["severity"]): c for c in report["cells"]}
    assert set(cells) == {("gaussian_noise", 1), ("gaussian_noise", 5), ("fog", 1), ("fog", 5)}
    for c in cells.values():
        assert c["n"] == 4 and 0.0 <= c["flip_rate"] <= 1.0 and c["accuracy"] is not None
        assert 0.0 <= c["guard_detect_rate"] <= 1.0
    # severity 5 noise destroys SqueezeNet's predictions
    assert cells[("gaussian_noise", 5)]["flip_rate"] >= 0.75
    assert [g["passed"] for g in report["gates"]] == [True, True, False]
    assert "FAIL  impossible" in text and "over by" in text
    assert set(report["probes"]) == set(PROBES)
    png = cv2.imread(str(out / "robustness.png"))
    assert png is not None and png.size > 0 and (out / "robustness.png").stat().st_size > 5000
    assert (out / "stress.txt").read_text(encoding="utf-8").startswith("edge-guard stress")
    assert format_report(report).splitlines()[0] == text.splitlines()[0]


@pytest.mark.slow
def test_stress_on_video_holds_out_the_swept_frames(test_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["stress", "--config", str(_config(test_data, tmp_path)),
                 "--source", str(test_data / "videos" / "opencv_vtest.avi"), "--max-images", "3", "--every", "30",
                 "--corruptions", "underexposure,glare", "--severities", "5", "--no-probes", "--out", str(out),
                 "--no-progress"])
    assert code == exitcodes.OK
    report = json.loads((out / "stress.json").read_text(encoding="utf-8"))
    assert report["inputs"]["names"] == ["frame 60", "frame 90", "frame 120"]
    assert report["inputs"]["context_frames"] == 2  # the guard sees frames 58, 59, 60 (all corrupted alike)
    assert "swept frames are held out" in report["profile"]["origin"]
    assert report["probes"] is None
    # a fixed camera's profile makes strong underexposure obvious to the guard
    cell = next(c for c in report["cells"] if c["corruption"] == "underexposure")
    assert cell["guard_detect_rate"] == 1.0
    assert report["clean"]["guard_false_alarm_rate"] is not None
    assert "underexposure" in capsys.readouterr().out


def test_stress_needs_enough_images_to_calibrate(test_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((64, 64, 3), 40 * i, dtype=np.uint8))
    code = main(["stress", "--config", str(_config(test_data, tmp_path)), "--images", str(folder),
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == exitcodes.CONFIG
    assert "at least 20 clean images to calibrate on (got 3)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corruptions", "smog"], "unknown corruption 'smog'"),
        (["--severities", "0,7"], "expected severities from 1..5"),
        (["--size", "640"], "--size must be WIDTHxHEIGHT"),
    ],
)
def test_stress_argument_errors(test_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                args: list[str], message: str) -> None:
    argv = ["stress", "--config", str(_config(test_data, tmp_path)), "--images", str(tmp_path), *args]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse type errors exit 2
        code = int(exc.code or 0)
    assert code in (exitcodes.USAGE, exitcodes.CONFIG)
    assert message in capsys.readouterr().err


def test_report_text_has_no_nan() -> None:
    report: dict[str, Any] = {
        "inputs": {"n": 1, "kind": "images", "path": "x", "size_wh": [8, 8]},
        "clean": {"mean_confidence": None, "accuracy": None, "guard_false_alarm_rate": 0.0},
        "model": None, "profile": {"profile_id": "p", "origin": "o"}, "guard": {"note": ""},
        "corruptions_version": 1, "seed": 0, "severities": [1], "corruptions": ["fog"],
        "cells": [{"corruption": "fog", "severity": 1, "flip_rate": None, "guard_detect_rate": 1.0,
                   "silent_flip_rate": None}],
        "cliff_threshold": 0.2, "cliffs": [], "probes": None, "slices": {"proxies": {}}, "gates": None,
    }
    text = format_report(report)
    assert "nan" not in text.lower() and "n/a / 100%" in text


def test_flags_that_do_not_apply_are_reported_as_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "cam.yaml"
    cfg.write_text("camera_id: cam1\nsource:\n  uri: synthetic://clean\n")
    # (a missing gates file then stops the run: only the warning matters here)
    with caplog.at_level(logging.WARNING, logger="agent.fieldtools.stress"):
        code = main(["stress", "--config", str(cfg), "--images", str(tmp_path), "--every", "3",
                     "--gates", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == exitcodes.CONFIG
    assert "--every 3 is ignored: it picks frames of a --source video" in caplog.text
