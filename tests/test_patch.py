"""The patch test: static, localized deviations with the tile in Reason.detail; moving or global ones ignored."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers import synthetic_frames

from agent.frame import Frame
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.scoring.observation import TileMotion, observe, thumbnail_bgr
from agent.scoring.patch import PATCH_FRAMES, REST_MARGIN, STILL_MIN_MOTION, Patch, TileModel, localized
from agent.scoring.policy import Guard
from agent.stats.cpu import CpuStats
from agent.verdict import Decision, Verdict

Image = npt.NDArray[np.uint8]
CAL = 200
W, H = 256, 144


@pytest.fixture(scope="module")
def images() -> list[Image]:
    return synthetic_frames(f"synthetic://clean?size={W}x{H}&seed=6&frames=260")


@pytest.fixture(scope="module")
def guard(images: list[Image]) -> Guard:
    backend = CpuStats((4, 4))
    cal = Calibrator(CalibrationConfig(frames=CAL), (4, 4))
    for image in images[:CAL]:
        cal.update(backend.compute(image), image=image)
    return Guard(cal.build(), PolicyConfig())


def sticker(image: Image, x: int, y: int) -> Image:
    """A saturated, high-contrast printed square (an adversarial-patch-like sticker) at (x, y)."""
    out = image.copy()
    s = 28
    block = np.indices((s, s)).sum(axis=0) // 4 % 2  # checkerboard of 4-px squares
    out[y : y + s, x : x + s] = np.where(block[:, :, None] == 1, (0, 0, 255), (255, 255, 0)).astype(np.uint8)
    return out


def glare_spot(image: Image, x: int, y: int) -> Image:
    out = image.copy()
    cv2.circle(out, (x, y), 14, (255, 255, 255), -1)
    return out


def run(guard: Guard, frames: list[Image]) -> list[Verdict]:
    guard.reset()
    backend = CpuStats((4, 4))
    return [guard.update(Frame(im, "cam", i, float(i), float(i)), backend.compute(im), None)
            for i, im in enumerate(frames)]


@pytest.mark.parametrize(
    ("name", "inject", "tile"),
    [
        ("sticker", lambda im: sticker(im, 200, 10), (0, 3)),  # top-right tile
        ("glare spot", lambda im: glare_spot(im, 40, 120), (3, 0)),  # bottom-left tile
    ],
)
def test_static_patch_is_found_with_its_tile(
    guard: Guard, images: list[Image], name: str, inject: Callable[[Image], Image], tile: tuple[int, int]
) -> None:
    held = images[CAL : CAL + 30]
    verdicts = run(guard, [inject(im) for im in held])
    hits = [v for v in verdicts if "patch" in v.reason_codes]
    # from the PATCH_FRAMES-th frame on (persistence), every frame
    assert len(hits) >= len(held) - PATCH_FRAMES, (name, len(hits))
    for v in hits:
        reason = next(r for r in v.reasons if r.code == "patch")
        assert (reason.detail["tile_row"], reason.detail["tile_col"]) == tile, reason.detail


def test_clean_and_global_changes_are_not_patches(guard: Guard, images: list[Image]) -> None:
    held = images[CAL:]
    assert not any("patch" in v.reason_codes for v in run(guard, held))
    darker = [(im * 0.6).astype(np.uint8) for im in held[:20]]
    assert not any("patch" in v.reason_codes for v in run(guard, darker))  # dark, not patch


def test_a_moving_object_is_not_a_patch(guard: Guard, images: list[Image]) -> None:
    """The same sticker sweeping across the view is content, not a patch (tiles are not still)."""
    held = images[CAL : CAL + 30]
    moving = [sticker(im, 8 * i % (W - 30), 60) for i, im in enumerate(held)]
    assert not any("patch" in v.reason_codes for v in run(guard, moving))


def isoluminant_square(image: Image, x: int, y: int, s: int = 40) -> Image:
    """A flat purple square with the luma of what it covers: it moves the luma difference hardly at all."""
    out = image.copy()
    region = out[y : y + s, x : x + s]
    luma = float(cv2.cvtColor(region, cv2.COLOR_BGR2GRAY).mean())
    purple = np.array([150.0, 60.0, 140.0])  # B, G, R
    purple *= luma / float(purple @ (0.114, 0.587, 0.299))
    region[:] = np.clip(np.round(purple), 0, 255).astype(np.uint8)
    return out


def test_a_slow_isoluminant_mover_is_not_a_patch(guard: Guard, images: list[Image]) -> None:
    """A flat object of the background's luma but another hue, 1.5 px per frame: diff_prev stays
    within a still tile's bound, the colour thumbnail's change over MOTION_LAG frames does not."""
    held = images[CAL : CAL + 40]
    moving = [isoluminant_square(im, 70 + 3 * i // 2, 100) for i, im in enumerate(held)]
    assert not any("patch" in v.reason_codes for v in run(guard, moving))
    patch = next(t for t in guard.tests if isinstance(t, Patch))
    gate, patch.still_motion = patch.still_motion, None
    try:  # what the luma difference alone makes of it
        assert sum("patch" in v.reason_codes for v in run(guard, moving)) >= 10
    finally:
        patch.still_motion = gate
    # the same square standing still is a patch (an occluder)
    standing = run(guard, [isoluminant_square(im, 100, 100) for im in held])
    assert sum("patch" in v.reason_codes for v in standing) >= len(held) - PATCH_FRAMES


def test_tile_motion_lag_and_restarts() -> None:
    tm = TileMotion((2, 2), lag=2)
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[:4, 4:] = (100, 100, 130)  # top-right tile: another hue
    assert tm.update(a) is None and tm.update(a) is None  # fewer than lag earlier frames
    assert tm.update(b).tolist() == [0.0, 30.0, 0.0, 0.0]  # type: ignore[union-attr]
    assert tm.update(b).tolist() == [0.0, 30.0, 0.0, 0.0]  # type: ignore[union-attr]  # vs 2 frames back
    assert tm.update(b).tolist() == [0.0] * 4  # type: ignore[union-attr]
    assert tm.update(np.zeros((16, 8, 3), np.uint8)) is None  # another size: the history restarts
    assert tm.update(None) is None
    with pytest.raises(ValueError, match="lag"):
        TileMotion((2, 2), lag=0)


def test_localized_removes_the_frame_wide_shift() -> None:
    d = np.zeros((16, 5))
    d[:, 2] = 0.5  # every tile more saturated: global
    d[9, 0] = 0.4  # one tile brighter
    scale = np.full((16, 5), 0.05)
    scale[3] = 0.2  # a busy tile: the shared shift must not depend on its spread
    c = localized(d, scale)
    assert c[:, 2].max() == 0.0 and c[9, 0] == pytest.approx(8.0)


def test_tile_model_round_trip_and_errors(images: list[Image]) -> None:
    backend = CpuStats((4, 4))
    obs = [observe(backend.compute(im), None) for im in images[:40]]
    test = Patch()
    test.fit(obs)
    again = Patch()
    again.load_params(test.params())
    assert np.allclose(again.tiles.median, test.tiles.median) and np.allclose(again.still, test.still)  # type: ignore[union-attr,arg-type]
    with pytest.raises(ValueError, match="tiles"):
        TileModel.from_params({"median": [[0.0]], "scale": [[1.0]]})
    with pytest.raises(ValueError, match="still"):
        again.load_params({**test.params(), "still": [1.0]})
    assert again.rest_bound == test.rest_bound and test.rest_bound is not None and test.rest_bound > REST_MARGIN
    for bad in (None, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="rest_bound"):
            again.load_params({**test.params(), "rest_bound": bad})
    assert test.still_motion is None  # observations without images: no motion bound, diff_prev alone

    tm = TileMotion((4, 4))
    moving_obs = []
    for im in images[:40]:
        small = thumbnail_bgr(im)
        moving_obs.append(observe(backend.compute(im), None, image=im, small=small, motion=tm.update(small)))
    with_motion = Patch()
    with_motion.fit(moving_obs)
    assert with_motion.still_motion is not None and (with_motion.still_motion >= STILL_MIN_MOTION).all()
    again.load_params(with_motion.params())
    assert np.allclose(again.still_motion, with_motion.still_motion)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="still_motion"):
        again.load_params({**with_motion.params(), "still_motion": [1.0, 2.0]})


def _cast(image: Image) -> Image:
    out: Image = np.clip(image.astype(np.float32) * np.array([0.6, 0.95, 1.45], np.float32), 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("colour cast", _cast),
        ("15 % exposure", lambda im: (im * 0.15).astype(np.uint8)),
        ("defocus", lambda im: cv2.GaussianBlur(im, (0, 0), 3.0)),
    ],
)
def test_a_global_change_names_no_tile(
    guard: Guard, images: list[Image], name: str, change: Callable[[Image], Image]
) -> None:
    """A change of the whole view moves some tiles more than others (a cast lifts a grey tile's saturation
    most): flagged for what it is, but ``patch`` does not apply while the median tile is off its profile."""
    verdicts = run(guard, [change(im) for im in images[CAL : CAL + 20]])
    assert all(v.decision != Decision.PASS for v in verdicts), name
    assert not any("patch" in v.reason_codes for v in verdicts), (name, [v.reason_codes for v in verdicts])
    assert all("patch" not in v.scores for v in verdicts)  # not applicable, rather than a low score
