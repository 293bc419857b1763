"""Real footage: calibrate on the first part of opencv_vtest.avi, guard its held-out rest.

Clean held-out frames must be flagged at no more than about alpha (the calibration clip is
40 s of a fixed camera, the rest shows other people), and plain corruptions of held-out
frames must be caught. Darkening must not read as blur (sharpness is normalised by contrast).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.corruptions import corrupt
from agent.frame import Frame
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.scoring.policy import Guard
from agent.stats.cpu import CpuStats
from agent.stats.types import FrameStats
from agent.verdict import Decision, Verdict

Image = npt.NDArray[np.uint8]
CAL = 400
ALPHA = 0.01


@pytest.fixture(scope="module")
def vtest(test_data: Path) -> list[tuple[Image, FrameStats]]:
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    backend = CpuStats((4, 4))
    out = []
    try:
        while True:
            ok, raw = cap.read()
            if not ok:
                break
            image = np.asarray(raw, dtype=np.uint8)
            out.append((image, backend.compute(image)))
    finally:
        cap.release()
    assert len(out) > CAL + 300
    return out


@pytest.fixture(scope="module")
def guard(vtest: list[tuple[Image, FrameStats]]) -> Guard:
    cal = Calibrator(CalibrationConfig(frames=CAL), (4, 4))
    for _, stats in vtest[:CAL]:
        cal.update(stats)
    return Guard(cal.build(), PolicyConfig(alpha_flag=ALPHA, alpha_block=0.001))


@pytest.fixture(scope="module")
def image_guard(vtest: list[tuple[Image, FrameStats]]) -> Guard:
    """Calibrated with the frames' pixels too: the tests that read them (adversarial_hf, moved)."""
    cal = Calibrator(CalibrationConfig(frames=CAL), (4, 4))
    for image, stats in vtest[:CAL]:
        cal.update(stats, image=image)
    return Guard(cal.build(), PolicyConfig(alpha_flag=ALPHA, alpha_block=0.001))


def _verdict(guard: Guard, seq: int, image: Image, stats: FrameStats) -> Verdict:
    return guard.update(Frame(image, "vtest", seq, 0.0, 0.0, live=False), stats, None)


def test_clean_held_out_rate(guard: Guard, vtest: list[tuple[Image, FrameStats]]) -> None:
    verdicts = [_verdict(guard, i, im, st) for i, (im, st) in enumerate(vtest[CAL:], start=CAL)]
    rate = sum(v.decision >= Decision.FLAG for v in verdicts) / len(verdicts)
    assert rate <= 1.5 * ALPHA, [(v.seq, v.reason_codes) for v in verdicts if v.reasons][:10]


def _noise(image: Image) -> Image:
    rng = np.random.default_rng(0)
    return np.clip(image + rng.normal(0.0, 10.0, image.shape), 0, 255).astype(np.uint8)


CORRUPTIONS: dict[str, tuple[Callable[[Image], Image], str]] = {
    "blur": (lambda im: np.asarray(cv2.GaussianBlur(im, (0, 0), 2.0), np.uint8), "blur"),
    "dark": (lambda im: (im * 0.5).astype(np.uint8), "dark"),
    "noise": (_noise, "noise"),
    "cast": (lambda im: np.clip(im * np.array([0.8, 1.0, 1.2]), 0, 255).astype(np.uint8), "color_cast"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_are_caught(guard: Guard, vtest: list[tuple[Image, FrameStats]], name: str) -> None:
    corrupt, reason = CORRUPTIONS[name]
    backend = CpuStats((4, 4))
    verdicts = []
    for i, (image, _) in enumerate(vtest[CAL::16]):
        bad = np.ascontiguousarray(corrupt(image))
        verdicts.append(_verdict(guard, i, bad, backend.compute(bad)))
    assert all(v.decision >= Decision.FLAG for v in verdicts)
    assert sum(reason in v.reason_codes for v in verdicts) >= 0.9 * len(verdicts)
    if name == "dark":
        assert not any("blur" in v.reason_codes for v in verdicts)


def _hand(image: Image) -> Image:
    """A hand over the lens: the view smeared to a dim, skin-tinted shade, with sensor noise."""
    rng = np.random.default_rng(1)
    smear = cv2.GaussianBlur(image, (0, 0), 40.0) * 0.25 + np.array([20.0, 40.0, 70.0])
    return np.asarray(np.clip(smear + rng.normal(0.0, 2.0, image.shape), 0, 255), dtype=np.uint8)


def _imagenet_c(name: str, severity: int) -> Callable[[Image], Image]:
    return lambda im: corrupt(im, name, severity)


BLURS: dict[str, Callable[[Image], Image]] = {
    **{f"defocus_blur s{s}": _imagenet_c("defocus_blur", s) for s in (1, 3, 5)},
    "motion_blur s5": _imagenet_c("motion_blur", 5),
    "gaussian sigma 4": lambda im: np.asarray(cv2.GaussianBlur(im, (0, 0), 4.0), np.uint8),
}


@pytest.mark.parametrize("name", sorted(BLURS))
def test_a_blurred_lens_is_not_a_covered_one(guard: Guard, vtest: list[tuple[Image, FrameStats]], name: str) -> None:
    """Blur takes the tiles' edges, not their contrast: flagged as blur, never as covered."""
    backend = CpuStats((4, 4))
    verdicts = []
    for i, (image, _) in enumerate(vtest[CAL::20]):
        bad = np.ascontiguousarray(BLURS[name](image))
        verdicts.append(_verdict(guard, i, bad, backend.compute(bad)))
    assert all({"blur", "defocused"} <= set(v.reason_codes) for v in verdicts), [v.reason_codes for v in verdicts]
    wrong = [v.reason_codes for v in verdicts if {"covered", "low_contrast"} & set(v.reason_codes)]
    assert not wrong, wrong


@pytest.mark.parametrize("name", ["haze", "contrast", "frost"])
def test_a_veil_is_low_contrast(guard: Guard, vtest: list[tuple[Image, FrameStats]], name: str) -> None:
    """Severity 2 of each veil (contrast lost for the exposure) gets its own reason. (ImageNet-C
    fog is left out: its plasma fractal, rescaled by the frame's maximum, darkens as often as it
    veils; at severity 2, 12 of these 20 frames get the reason.)"""
    backend = CpuStats((4, 4))
    verdicts = []
    for i, (image, _) in enumerate(vtest[CAL::20]):
        bad = corrupt(image, name, 2, seed=i)
        verdicts.append(_verdict(guard, i, bad, backend.compute(bad)))
    hits = sum("low_contrast" in v.reason_codes for v in verdicts)
    assert hits >= 0.75 * len(verdicts), [v.reason_codes for v in verdicts]


VEILS_AND_GAINS: dict[str, Callable[[Image], Image]] = {
    **{f"contrast s{s}": _imagenet_c("contrast", s) for s in (1, 2, 3)},
    "60 % darker": lambda im: (im * 0.4).astype(np.uint8),
}


@pytest.mark.parametrize("name", sorted(VEILS_AND_GAINS))
def test_a_veil_or_a_dimmer_exposure_is_not_defocused(
    guard: Guard, vtest: list[tuple[Image, FrameStats]], name: str
) -> None:
    """Tile sharpness is Laplacian energy over variance: scaling the contrast leaves it, so a veil
    or a gain raises no `defocused` tamper alarm (a blur does: test_a_blurred_lens_is_not_a_covered_one)."""
    backend = CpuStats((4, 4))
    verdicts = []
    for i, (image, _) in enumerate(vtest[CAL::20]):
        bad = np.ascontiguousarray(VEILS_AND_GAINS[name](image))
        verdicts.append(_verdict(guard, i, bad, backend.compute(bad)))
    assert all(v.decision >= Decision.FLAG for v in verdicts)
    wrong = [v.reason_codes for v in verdicts if "defocused" in v.reason_codes]
    assert not wrong, wrong


def test_a_darker_exposure_is_dark_not_low_contrast(guard: Guard, vtest: list[tuple[Image, FrameStats]]) -> None:
    backend = CpuStats((4, 4))
    for i, (image, _) in enumerate(vtest[CAL::20]):
        bad = (image * 0.6).astype(np.uint8)
        v = _verdict(guard, i, bad, backend.compute(bad))
        assert "dark" in v.reason_codes and "low_contrast" not in v.reason_codes, v.reason_codes


def test_a_hand_over_the_lens_is_covered(guard: Guard, vtest: list[tuple[Image, FrameStats]]) -> None:
    backend = CpuStats((4, 4))
    verdicts = []
    for i, (image, _) in enumerate(vtest[CAL::20]):
        bad = _hand(image)
        verdicts.append(_verdict(guard, i, bad, backend.compute(bad)))
    assert all("covered" in v.reason_codes for v in verdicts), [v.reason_codes for v in verdicts]


def _signs(image: Image, eps: int) -> Image:
    """An L-inf perturbation of ``eps`` code values with its own random sign per pixel and channel."""
    signs = np.random.default_rng(2).choice(np.array([-eps, eps]), size=image.shape)
    return np.asarray(np.clip(image.astype(np.int16) + signs, 0, 255), dtype=np.uint8)


PROCESSED: dict[str, Callable[[Image], Image]] = {
    **{f"{name} s2": _imagenet_c(name, 2) for name in ("defocus_blur", "contrast", "fog", "frost", "brightness")},
    "gaussian sigma 2 (uint8)": lambda im: np.asarray(cv2.GaussianBlur(im, (0, 0), 2.0), np.uint8),
    "YUV 4:2:0 round trip": lambda im: np.asarray(
        cv2.cvtColor(cv2.cvtColor(im, cv2.COLOR_BGR2YUV_I420), cv2.COLOR_YUV2BGR_I420), np.uint8),
}


@pytest.mark.parametrize("name", sorted(PROCESSED))
def test_processing_in_8_bits_is_not_adversarial(
    image_guard: Guard, vtest: list[tuple[Image, FrameStats]], name: str
) -> None:
    """Re-rounding each channel after a float operation raises this codec-smoothed video's chroma
    noise floor from ~0.5 to ~2.4, still below what any L-inf perturbation gives: no `adversarial`."""
    backend = CpuStats((4, 4))
    verdicts = []
    for i, (image, _) in enumerate(vtest[CAL::20]):
        bad = np.ascontiguousarray(PROCESSED[name](image))
        verdicts.append(_verdict(image_guard, i, bad, backend.compute(bad)))
    wrong = [v.reason_codes for v in verdicts if "adversarial" in v.reason_codes]
    assert not wrong, wrong


@pytest.mark.parametrize("eps", [1, 2, 4])
def test_sign_perturbations_are_adversarial(
    image_guard: Guard, vtest: list[tuple[Image, FrameStats]], eps: int
) -> None:
    backend = CpuStats((4, 4))
    for i, (image, _) in enumerate(vtest[CAL::20]):
        bad = _signs(image, eps)
        v = _verdict(image_guard, i, bad, backend.compute(bad))
        assert "adversarial" in v.reason_codes, (i, v.reason_codes)


def test_a_grey_camera_through_mjpeg(vtest: list[tuple[Image, FrameStats]], tmp_path: Path) -> None:
    """A monochrome camera's stream: vtest in grey at 320x180, written and read back as MJPEG.
    Its "saturation" is the codec's colour-conversion noise (about 6 of 255), which moves with
    the scene's content. Calibrated on its first 400 frames, the held-out rest is flagged at
    about alpha (with log(1 + saturation) as the feature, 11 % were, all ``ood_stats``), and
    ``low_saturation`` is left out of the profile: there is no colour to lose."""
    path = tmp_path / "grey.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 180))
    for image, _ in vtest:
        grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (320, 180), interpolation=cv2.INTER_AREA)
        writer.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    writer.release()
    backend = CpuStats((4, 4))
    cap = cv2.VideoCapture(str(path))
    stream = []
    while (read := cap.read())[0]:
        stream.append((np.asarray(read[1], np.uint8), backend.compute(np.asarray(read[1], np.uint8))))
    cap.release()
    assert len(stream) == len(vtest)
    assert 1.0 < float(np.median([s.saturation for _, s in stream])) < 12.0  # codec noise, not colour
    cal = Calibrator(CalibrationConfig(frames=CAL), (4, 4))
    for _, stats in stream[:CAL]:
        cal.update(stats)
    profile = cal.build()
    assert "low_saturation" not in profile.test_names() and "ood_stats" in profile.test_names()
    guard = Guard(profile, PolicyConfig(alpha_flag=ALPHA, alpha_block=0.001))
    verdicts = [_verdict(guard, i, im, st) for i, (im, st) in enumerate(stream[CAL:], start=CAL)]
    rate = sum(v.decision >= Decision.FLAG for v in verdicts) / len(verdicts)
    assert rate <= 1.5 * ALPHA, [(v.seq, v.reason_codes) for v in verdicts if v.reasons][:10]
    blurred = [np.asarray(cv2.GaussianBlur(im, (0, 0), 2.0), np.uint8) for im, _ in stream[CAL::20]]
    assert all(_verdict(guard, i, im, backend.compute(im)).decision >= Decision.FLAG for i, im in enumerate(blurred))
