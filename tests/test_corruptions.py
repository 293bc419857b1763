"""The corruption library: registry, determinism, shape/dtype, severity monotonicity, plain references."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.corruptions import (
    CAMERA,
    CORRUPTIONS,
    CORRUPTIONS_VERSION,
    IMAGENET_C,
    SEVERITIES,
    corrupt,
    markdown_table,
    resolve_names,
)
from agent.corruptions._common import clipped_zoom, motion_blur
from agent.errors import FrameError

U8 = npt.NDArray[np.uint8]

#: Corruptions that use no randomness (the same for every seed).
DETERMINISTIC = {
    "defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
    "underexposure", "haze", "jpeg_camera",
}
#: Steps (s -> s+1) that the reference parameters do not make clearly worse. Measured on
#: imagecorruptions 1.1.2 itself (6 test photos at 512x384): glass_blur 1->2 goes 23.9 -> 24.2 dB
#: and 3->4 goes 20.7 -> 21.1 dB (sigma 0.7 with 2 iterations vs 0.9 with 1; 1.0/3 vs 1.1/2);
#: fog 3->4 keeps the strength (2.5) and only roughens the fractal (decay 1.7 -> 1.5): 13.0 -> 12.8 dB.
KNOWN_MILDER_STEPS = {("glass_blur", 1), ("glass_blur", 3), ("fog", 3)}


def _photo(test_data: Path, name: str, size_wh: tuple[int, int] | None = None) -> U8:
    image = cv2.imread(str(test_data / "images" / "photos" / name))
    assert image is not None, name
    if size_wh is not None:
        image = cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA)
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def photos(test_data: Path) -> list[U8]:
    # Two real photos of different content, at a small odd size to keep the test fast.
    return [
        _photo(test_data, "opencv_leuvenA.jpg", (321, 241)),
        _photo(test_data, "ortex_goldfish.jpg", (321, 241)),
    ]


def _psnr(a: U8, b: U8) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * math.log10(255.0**2 / max(mse, 1e-12))


def _ssim(a: U8, b: U8) -> float:
    """Mean SSIM of the luma (Wang et al. 2004, Gaussian window sigma 1.5)."""
    x = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)

    def g(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(cv2.GaussianBlur(z, (11, 11), 1.5), dtype=np.float64)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = g(x), g(y)
    vx, vy, cxy = g(x * x) - mx * mx, g(y * y) - my * my, g(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())


# --- registry --------------------------------------------------------------------------------
def test_registry_has_the_15_imagenet_c_types_and_the_camera_set() -> None:
    assert IMAGENET_C == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    )
    # issue 8's list: noise, JPEG, brightness and contrast shifts, colour cast, defocus and motion
    # blur, fog/haze, glare, partial occlusion
    for name in ("gaussian_noise", "jpeg_camera", "brightness", "underexposure", "contrast", "color_cast",
                 "defocus_blur", "motion_blur", "fog", "haze", "glare", "occlusion"):
        assert name in CAMERA
    assert isinstance(CORRUPTIONS_VERSION, int)
    for c in CORRUPTIONS.values():
        assert len(c.levels) == len(SEVERITIES) == 5
        assert c.family in {"noise", "blur", "weather", "digital", "camera"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fog,haze", ("fog", "haze")),
        ("haze, fog ,haze", ("haze", "fog")),  # spaces ignored, repeats dropped, order kept
        ("camera", CAMERA),
        ("imagenet-c,glare", (*IMAGENET_C, "glare")),
        (["contrast"], ("contrast",)),
    ],
)
def test_resolve_names(spec: str | list[str], expected: tuple[str, ...]) -> None:
    assert resolve_names(spec) == expected


@pytest.mark.parametrize("spec", ["fgo", "", "fog,nope"])
def test_resolve_names_rejects_unknown(spec: str) -> None:
    with pytest.raises(ValueError, match="corruption"):
        resolve_names(spec)


# --- contract --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_shape_dtype_determinism(name: str, photos: list[U8]) -> None:
    image = photos[0]
    before = image.copy()
    a = corrupt(image, name, 3, seed=7)
    b = corrupt(image, name, 3, seed=7)
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b), "same (image, severity, seed) must give the same result"
    assert np.array_equal(image, before), "the input must not be modified"
    assert not np.array_equal(a, image), "severity 3 must change the image"
    other = corrupt(image, name, 3, seed=(7, 1))
    if name in DETERMINISTIC:
        assert np.array_equal(a, other)
    else:
        assert not np.array_equal(a, other), "another seed must give another draw"


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_tiny_image(name: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    for severity in SEVERITIES:
        out = corrupt(image, name, severity, seed=1)
        assert out.shape == image.shape and out.dtype == np.uint8


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True, "3", None])
def test_invalid_severity(severity: object) -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"severity must be an integer in 1\.\.5, but got"):
        corrupt(image, "fog", severity, seed=0)  # type: ignore[arg-type]


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="unknown corruption 'smog'"):
        corrupt(np.zeros((8, 8, 3), dtype=np.uint8), "smog", 1)
    with pytest.raises(FrameError, match="uint8"):
        corrupt(np.zeros((8, 8, 3), dtype=np.float32), "fog", 1)
    with pytest.raises(FrameError, match=r"\(H, W, 3\)"):
        corrupt(np.zeros((8, 8), dtype=np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="non-negative"):
        corrupt(np.zeros((8, 8, 3), dtype=np.uint8), "fog", 1, seed=-1)


# --- severity is monotone --------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_monotone_in_severity(name: str, photos: list[U8]) -> None:
    """Mean PSNR and SSIM against the clean photo fall with severity (a step passes if either falls)."""
    psnr = np.zeros((len(photos), 5))
    ssim = np.zeros((len(photos), 5))
    for i, image in enumerate(photos):
        for s in SEVERITIES:
            out = corrupt(image, name, s, seed=i)
            psnr[i, s - 1] = _psnr(image, out)
            ssim[i, s - 1] = _ssim(image, out)
    p, q = psnr.mean(axis=0), ssim.mean(axis=0)
    for s in (1, 2, 3, 4):
        if (name, s) in KNOWN_MILDER_STEPS:
            continue
        falls = p[s] <= p[s - 1] + 0.25 or q[s] <= q[s - 1] + 0.005
        assert falls, f"{name}: severity {s + 1} is milder than {s}: PSNR {p.round(2)}, SSIM {q.round(3)}"
    assert p[4] < p[0] - 1.0 or q[4] < q[0] - 0.02, f"{name}: severity 5 barely worse than 1: {p.round(2)}"


# --- against plain references ----------------------------------------------------------------
def _shift(image: npt.NDArray[np.float32], dx: int, dy: int) -> npt.NDArray[np.float32]:
    """The reference's edge-replicating shift (imagecorruptions ``shift``)."""
    h, w = image.shape[:2]
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return image[ys][:, xs]


@pytest.mark.parametrize(
    ("radius", "sigma", "angle"), [(3, 1.0, 0.0), (5, 2.0, 30.0), (4, 3.0, -44.0), (6, 4.0, -100.0)]
)
def test_motion_blur_equals_shifted_sum(radius: int, sigma: float, angle: float) -> None:
    rng = np.random.default_rng(3)
    x = rng.random((23, 31, 3), dtype=np.float32)
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k /= k.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    expected = np.zeros_like(x)
    for i in range(width):
        dy = -math.ceil(i * py / hyp - 0.5)
        dx = -math.ceil(i * px / hyp - 0.5)
        expected += k[i] * _shift(x, dx, dy)
    np.testing.assert_allclose(motion_blur(x, radius, sigma, angle), expected, atol=1e-5)


@pytest.mark.parametrize("zoom", [1.0, 1.07, 1.3, 2.5])
def test_clipped_zoom_matches_corner_aligned_bilinear(zoom: float) -> None:
    rng = np.random.default_rng(4)
    x = rng.random((17, 22, 3), dtype=np.float32)
    h, w = x.shape[:2]
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    oh, ow = round(ch * zoom), round(cw * zoom)
    sy = np.arange(oh)[:h] * ((ch - 1) / (oh - 1)) + top  # scipy.ndimage.zoom's grid
    sx = np.arange(ow)[:w] * ((cw - 1) / (ow - 1)) + left
    y0 = np.clip(np.floor(sy).astype(int), 0, h - 2)
    x0 = np.clip(np.floor(sx).astype(int), 0, w - 2)
    fy, fx = (sy - y0)[:, None, None], (sx - x0)[None, :, None]
    expected = (
        x[y0][:, x0] * (1 - fy) * (1 - fx) + x[y0 + 1][:, x0] * fy * (1 - fx)
        + x[y0][:, x0 + 1] * (1 - fy) * fx + x[y0 + 1][:, x0 + 1] * fy * fx
    )
    np.testing.assert_allclose(clipped_zoom(x, zoom), expected, atol=2e-3)


def test_brightness_equals_hsv_round_trip(photos: list[U8]) -> None:
    image = photos[1]
    x = image.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.3, 0.0, 1.0)
    expected = (np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), 0, 1) * 255).astype(np.uint8)
    got = corrupt(image, "brightness", 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_gaussian_noise_has_the_documented_sigma() -> None:
    image = np.full((200, 200, 3), 128, dtype=np.uint8)
    for severity, sigma in zip(SEVERITIES, (0.08, 0.12, 0.18, 0.26, 0.38), strict=True):
        out = corrupt(image, "gaussian_noise", severity).astype(np.float64)
        inside = out[(out > 0) & (out < 255)]
        # truncation to uint8 lowers the mean by ~0.5; clipping trims the tails at high sigma
        assert abs(out.mean() - 127.5) < 1.5
        if severity <= 3:
            assert abs(inside.std() / 255.0 - sigma) < 0.01 * (1 + severity)


def test_occlusion_covers_the_documented_share() -> None:
    image = np.full((240, 320, 3), 255, dtype=np.uint8)
    for severity, share in zip(SEVERITIES, (0.05, 0.10, 0.20, 0.30, 0.40), strict=True):
        out = corrupt(image, "occlusion", severity, seed=2)
        covered = float((out < 64).all(axis=2).mean())
        assert abs(covered - share) < 0.01, (severity, covered)


def test_docs_table_is_current(repo_root: Path) -> None:
    guide = (repo_root / "docs" / "field-guide.md").read_text(encoding="utf-8")
    assert markdown_table() in guide, "docs/field-guide.md: paste agent.corruptions.markdown_table() again"
    assert f"CORRUPTIONS_VERSION = {CORRUPTIONS_VERSION}" in guide
