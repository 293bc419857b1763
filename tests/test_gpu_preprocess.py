"""The GPU preprocessing kernel (kernels/preprocess.cu) and its feature-squeezing slots.

Everywhere:
(a) nvcc compiles the kernel for sm_87 (Jetson Orin) and sm_90 (H100/H200) with no spills and
    no stack; NVRTC (cuda-python) compiles it with no GPU.
(b) The kernel's __host__ __device__ arithmetic (kernels/preprocess_math.h), compiled for the
    host with g++ and replayed block by block over descriptors filled by the production
    planner (agent.gpu.preprocess.fill_descs), matches the CPU preprocessing
    (agent.model.preprocess: cv2.resize + NumPy) on real photos of mixed sizes in one launch,
    for stretch and letterbox, NCHW and NHWC, float32, float16 and uint8. Documented tolerance:
    at most 1 level (0..255) before normalisation, >= 99.9% of values identical (on OpenCV 5.1
    x86-64 it is bit-exact).
(c) The squeezed slots equal the NumPy/OpenCV references applied to the plain slot: bit depth
    exactly, 3x3 median exactly cv2.medianBlur.
On a GPU (marked gpu): the kernel on the device equals the host replay and the CPU path.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers import find_nvcc

from agent.errors import BackendUnavailable, FrameError
from agent.gpu.preprocess import (
    DESC_DTYPE,
    KERNEL_FILE,
    THREADS,
    DeviceFrame,
    fill_descs,
    normalization,
    slot_bytes,
    unsupported_reason,
)
from agent.gpu.squeeze import (
    Squeeze,
    bit_depth,
    infer_with_squeezers,
    median3,
    parse_squeezers,
    slot_layout,
    split_by_variant,
    squeezed_canvases,
)
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.onnx_runner import OnnxRunner
from agent.model.preprocess import plan_resize, preprocess, resize_frame

U8 = npt.NDArray[np.uint8]
REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "kernels"
HARNESS_SRC = REPO / "tests" / "host_harness" / "preprocess_host.cpp"
PHOTOS = (
    "opencv_aero1.jpg",
    "opencv_baboon.jpg",
    "opencv_alphamat_plant.jpg",
    "ortex_goldfish.jpg",
    "opencv_squirrel_cls.jpg",
    "opencv_butterfly.jpg",
)
SQUEEZENET = PreprocessConfig(size=(224, 224), mean=(104.0, 117.0, 123.0))
YOLOX = PreprocessConfig(size=(416, 416), resize="letterbox", pad_value=114)
IMAGENET_RGB = PreprocessConfig(
    size=(160, 128),
    resize="letterbox",
    pad_position="center",
    pad_value=0,
    channel_order="rgb",
    scale=1 / 255,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


# --------------------------------------------------------------------------- (a) compilers
@pytest.mark.parametrize("arch", [87, 90])
def test_nvcc_compiles_preprocess_kernel(arch: int, tmp_path: Path) -> None:
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH or /usr/local/cuda-13.0/bin)")
    out = tmp_path / f"preprocess_sm{arch}.cubin"
    cmd = [nvcc, "-cubin", f"-arch=sm_{arch}", "-std=c++17", "-Xptxas", "-v", "--Werror", "all-warnings",
           "-I", str(KERNELS), str(KERNELS / KERNEL_FILE), "-o", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    report = proc.stdout + proc.stderr
    (tmp_path / f"ptxas_preprocess_sm{arch}.txt").write_text(report)
    print(f"ptxas report sm_{arch}:\n{report}")
    assert proc.returncode == 0, report
    assert f"Compiling entry function 'egp_preprocess' for 'sm_{arch}'" in report
    assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in report, report
    regs = re.search(r"Used (\d+) registers", report)
    assert regs is not None and int(regs.group(1)) <= 64, report
    assert out.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize(("arch", "kind"), [(87, "ptx"), (90, "cubin")])
def test_nvrtc_compiles_preprocess_kernel(arch: int, kind: str, tmp_path: Path) -> None:
    from agent.gpu.nvrtc import KernelSource, compile_kernel  # noqa: PLC0415

    source = KernelSource.from_file(KERNELS / KERNEL_FILE)
    assert [name for name, _ in source.headers] == ["preprocess_math.h"]
    try:
        first = compile_kernel(source, arch, kind="cubin" if kind == "cubin" else "ptx", cache=tmp_path)
    except BackendUnavailable as exc:
        pytest.skip(f"NVRTC not usable here: {exc}")
    again = compile_kernel(source, arch, kind="cubin" if kind == "cubin" else "ptx", cache=tmp_path)
    assert not first.from_cache and again.from_cache and again.image == first.image
    if kind == "ptx":
        assert b".entry egp_preprocess" in first.image
    else:
        assert first.image[:4] == b"\x7fELF"


# --------------------------------------------------------------------------- (b) host replay
class Harness:
    """ctypes view of the host-compiled kernel arithmetic."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        vp = ctypes.c_void_p
        lib.egp_host_preprocess.argtypes = [vp, ctypes.c_int, ctypes.c_int]
        lib.egp_host_preprocess.restype = None
        lib.egp_host_desc_layout.argtypes = [vp]
        lib.egp_host_desc_layout.restype = None
        lib.egp_host_f16.argtypes = [vp, vp, ctypes.c_longlong]
        lib.egp_host_f16.restype = None
        lib.egp_host_median9.argtypes = [vp]
        lib.egp_host_median9.restype = ctypes.c_int
        lib.egp_host_threads.restype = ctypes.c_int
        self.lib = lib

    def run(
        self, cfg: PreprocessConfig, images: list[U8], squeezers: tuple[Squeeze, ...] = (), misalign: int = 0
    ) -> npt.NDArray[np.generic]:
        """One emulated launch over ``images`` (pitched, misaligned host copies); returns the tensor."""
        keep: list[U8] = []
        frames: list[DeviceFrame] = []
        for img in images:
            h, w = img.shape[:2]
            pitch = 3 * w + 5 + misalign  # odd pitch and base: no alignment assumptions in the kernel
            buf = np.zeros(h * pitch + 16, dtype=np.uint8)
            view = buf[misalign : misalign + h * pitch].reshape(h, pitch)
            view[:, : 3 * w] = img.reshape(h, 3 * w)
            keep.append(buf)
            frames.append(DeviceFrame(view.ctypes.data, pitch, w, h))
        n_slots = len(images) * (1 + len(squeezers))
        tw, th = cfg.size
        shape = (n_slots, 3, th, tw) if cfg.layout == "nchw" else (n_slots, th, tw, 3)
        out = np.full(shape, 0xA5, dtype=np.dtype(cfg.dtype))  # poison: every element must be written
        descs, blocks, _ = fill_descs(cfg, frames, out.ctypes.data, squeezers)
        assert out.nbytes == n_slots * slot_bytes(cfg)
        self.lib.egp_host_preprocess(descs.ctypes.data, len(descs), blocks)
        return out


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot build the host harness")
    lib = tmp_path_factory.mktemp("pre_harness") / "libpreprocess_host.so"
    cmd = [gxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-shared", "-fPIC",
           "-I", str(KERNELS), str(HARNESS_SRC), "-o", str(lib)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"host build failed (warnings are errors):\n{proc.stderr}"
    return Harness(lib)


@pytest.fixture(scope="module")
def photos(test_data: Path) -> list[U8]:
    out = []
    for name in PHOTOS:
        img = cv2.imread(str(test_data / "images" / "photos" / name), cv2.IMREAD_COLOR)
        assert img is not None, name
        out.append(np.asarray(img, dtype=np.uint8))
    return out


def test_descriptor_layout_matches_header(harness: Harness) -> None:
    offsets = np.zeros(len(DESC_DTYPE.names or ()) + 1, dtype=np.int64)
    harness.lib.egp_host_desc_layout(offsets.ctypes.data)
    names = DESC_DTYPE.names or ()
    expected = [int(DESC_DTYPE.fields[name][1]) for name in names] + [DESC_DTYPE.itemsize]  # type: ignore[index]
    assert offsets.tolist() == expected
    assert DESC_DTYPE.itemsize == 112
    assert harness.lib.egp_host_threads() == THREADS


def test_float16_conversion_is_numpy_round_to_nearest_even(harness: Harness) -> None:
    rng = np.random.default_rng(7)
    specials = np.array(
        [0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-9,
         np.inf, -np.inf, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 2.0**-24 * 1.5, 2.0**-24 * 2.5],
        dtype=np.float32,
    )  # fmt: skip
    # every float32 halfway between two float16 neighbours: the tie-to-even cases
    halves = (np.arange(-2048, 2048, dtype=np.float32) + np.float32(0.5)) * np.float32(2.0**-3)
    values = np.concatenate([specials, halves, rng.normal(0, 100, 20000).astype(np.float32),
                             rng.normal(0, 1e-5, 5000).astype(np.float32)])  # fmt: skip
    out = np.zeros(values.size, dtype=np.uint16)
    harness.lib.egp_host_f16(values.ctypes.data, out.ctypes.data, values.size)
    with np.errstate(over="ignore"):  # 1e6 -> inf is one of the cases
        expected = values.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(out, expected)


def test_median9_network_is_the_median(harness: Harness) -> None:
    rng = np.random.default_rng(3)
    for _ in range(3000):
        v = rng.integers(0, 6 if rng.random() < 0.5 else 256, 9).astype(np.int32)  # many ties too
        assert harness.lib.egp_host_median9(v.ctypes.data) == int(np.median(v))


CASES = [
    # (id, config, squeezers)
    ("squeezenet-stretch-nchw-f32", SQUEEZENET),
    ("yolox-letterbox-topleft-nchw-f32", YOLOX),
    ("imagenet-letterbox-center-rgb-nchw-f16", IMAGENET_RGB.model_copy(update={"dtype": "float16"})),
    ("imagenet-letterbox-center-rgb-nhwc-f32", IMAGENET_RGB.model_copy(update={"layout": "nhwc"})),
    ("stretch-nhwc-f16-upscale", SQUEEZENET.model_copy(update={"size": (1100, 900), "layout": "nhwc",
                                                                 "dtype": "float16"})),
    ("letterbox-center-uint8-nhwc", PreprocessConfig(size=(300, 300), resize="letterbox", pad_position="center",
                                                     layout="nhwc", dtype="uint8")),
    ("stretch-rgb-uint8-nchw-odd", PreprocessConfig(size=(97, 61), channel_order="rgb", dtype="uint8")),
]  # fmt: skip


def _tolerance(cfg: PreprocessConfig, ref: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    """1 level before normalisation (times |mul|), plus one float16 ulp of the value for float16."""
    mul, _ = normalization(cfg)
    level = 1.0 if cfg.dtype == "uint8" else float(np.abs(mul).max())
    tol = np.full(ref.shape, level * 1.0001)
    if cfg.dtype == "float16":
        tol += np.abs(ref.astype(np.float64)) * 2.0**-10 + 2.0**-24
    return tol


@pytest.mark.parametrize(("case", "cfg"), CASES, ids=[c[0] for c in CASES])
def test_host_kernel_matches_cpu_preprocessing(harness: Harness, photos: list[U8], case: str,
                                               cfg: PreprocessConfig) -> None:  # fmt: skip
    ref = preprocess(photos, cfg)  # the CPU path the kernel replaces
    got = harness.run(cfg, photos, misalign=3)  # all photos, mixed sizes, one launch
    assert got.shape == ref.shape and got.dtype == ref.dtype
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    identical = float(np.mean(got == ref))
    print(f"{case}: {identical:.6f} of values identical, max |diff| {diff.max():.3g}")
    assert np.all(diff <= _tolerance(cfg, ref)), f"{case}: max |diff| {diff.max()}"
    assert identical >= 0.999, f"{case}: only {identical:.5f} of values identical"


def test_identity_size_is_exact_copy(harness: Harness) -> None:
    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)
    cfg = PreprocessConfig(size=(97, 61), dtype="uint8", layout="nhwc")
    np.testing.assert_array_equal(harness.run(cfg, [img])[0], img)
    box = PreprocessConfig(size=(97, 61), resize="letterbox", dtype="uint8", layout="nhwc")
    np.testing.assert_array_equal(harness.run(box, [img])[0], img)


def test_tiny_and_extreme_aspect_frames(harness: Harness) -> None:
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(1, 1, 3), (3, 7, 3), (1, 640, 3), (480, 2, 3)]]
    for cfg in (PreprocessConfig(size=(32, 24), dtype="uint8"),
                PreprocessConfig(size=(32, 24), resize="letterbox", pad_position="center", dtype="uint8")):  # fmt: skip
        ref = preprocess(images, cfg)
        got = harness.run(cfg, images)
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


# --------------------------------------------------------------------------- (c) squeezing
@pytest.mark.parametrize("cfg", [SQUEEZENET, YOLOX], ids=["stretch", "letterbox"])
def test_squeezed_slots_match_references(harness: Harness, photos: list[U8], cfg: PreprocessConfig) -> None:
    squeezers = parse_squeezers("bits:5,median:3,bits:3")
    raw = cfg.model_copy(update={"dtype": "uint8", "layout": "nhwc", "scale": 1.0, "mean": (0, 0, 0), "std": (1, 1, 1)})
    canvases = harness.run(raw, photos[:4], squeezers)  # (4 * 4, H, W, 3) canvases, one launch
    plain, squeezed = split_by_variant(list(canvases), 4, squeezers)
    for i, canvas in enumerate(plain):
        np.testing.assert_array_equal(squeezed["bits5"][i], bit_depth(canvas, 5))
        np.testing.assert_array_equal(squeezed["bits3"][i], bit_depth(canvas, 3))
        np.testing.assert_array_equal(squeezed["median3"][i], cv2.medianBlur(canvas, 3))
    # the normalised squeezed slots are the normalised squeezed canvases (one batch, model dtype)
    full = harness.run(cfg, photos[:4], squeezers)
    np.testing.assert_array_equal(full, preprocess(list(canvases), cfg))


def test_bit_depth_reference() -> None:
    v = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(bit_depth(v, 8), v)
    one = bit_depth(v, 1)
    assert set(one.tolist()) == {0, 255} and one[127] == 0 and one[128] == 255
    five = bit_depth(v, 5)
    assert len(np.unique(five)) == 32 and five[0] == 0 and five[255] == 255
    # within half a quantisation step of the original
    assert np.abs(five.astype(int) - v.astype(int)).max() <= round(255 / 31 / 2 + 0.5)
    with pytest.raises(ValueError, match=r"bits must be in 1\.\.8"):
        bit_depth(v, 0)


def test_median3_reference_replicates_borders() -> None:
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    img[0, 0] = 200
    img[0, 1] = 200
    out = median3(img)
    assert out[0, 0, 0] == 200  # corner window: 4 copies of (0,0) and 2 of (0,1) via replication
    assert out[2, 2, 0] == 0


@pytest.mark.parametrize(
    ("text", "expected", "error"),
    [
        ("", (), None),
        ("bits:5,median:3", (Squeeze("bits", 5), Squeeze("median", 3)), None),
        ("median, bits", (Squeeze("median", 3), Squeeze("bits", 5)), None),
        ("bits:9", None, "1..7 bits"),
        ("median:5", None, "3x3 window only"),
        ("blur:3", None, "must look like"),
        ("bits:4,bits:4", None, "distinct"),
    ],
)
def test_parse_squeezers(text: str, expected: tuple[Squeeze, ...] | None, error: str | None) -> None:
    if error is not None:
        with pytest.raises(ValueError, match=error):
            parse_squeezers(text)
    else:
        assert parse_squeezers(text) == expected


def test_slot_layout_and_split() -> None:
    sq = parse_squeezers("bits:4,median")
    assert slot_layout(2, sq) == [(0, None), (1, None), (0, sq[0]), (1, sq[0]), (0, sq[1]), (1, sq[1])]
    plain, squeezed = split_by_variant(["a", "b", "c", "d", "e", "f"], 2, sq)
    assert plain == ["a", "b"] and squeezed == {"bits4": ["c", "d"], "median3": ["e", "f"]}
    with pytest.raises(ValueError, match="expected 6 results"):
        split_by_variant(["a"], 2, sq)


def test_cpu_squeezed_canvases_feed_the_cpu_preprocessing(photos: list[U8]) -> None:
    sq = parse_squeezers("bits:5,median:3")
    canvases = squeezed_canvases(photos[:2], YOLOX, sq)
    assert len(canvases) == 4 and all(c.shape == (416, 416, 3) for c in canvases)
    plain = [resize_frame(p, YOLOX)[0] for p in photos[:2]]
    np.testing.assert_array_equal(canvases[0], bit_depth(plain[0], 5))
    np.testing.assert_array_equal(canvases[3], median3(plain[1]))
    # at the model size the CPU resize is the identity: preprocess() only normalises them
    np.testing.assert_array_equal(preprocess([canvases[0]], YOLOX), preprocess([bit_depth(plain[0], 5)], YOLOX))


def test_infer_with_squeezers_on_a_cpu_runner(test_data: Path, photos: list[U8]) -> None:
    cfg = ModelConfig(path=test_data / "models" / "squeezenet1.0_fp32_upcast.onnx", preprocess=SQUEEZENET,
                      providers=["cpu"])  # fmt: skip
    runner = OnnxRunner(cfg)
    sq = parse_squeezers("bits:5,median:3")
    plain, squeezed = infer_with_squeezers(runner, photos[:2], SQUEEZENET, sq)
    direct = runner.infer(photos[:2])
    assert [o.top1 for o in plain] == [o.top1 for o in direct]
    again = runner.infer(squeezed_canvases(photos[:2], SQUEEZENET, sq))
    assert [o.top1 for o in squeezed["bits5"] + squeezed["median3"]] == [o.top1 for o in again]


def test_infer_with_squeezers_maps_detector_boxes_to_frame_pixels(test_data: Path) -> None:
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    cfg = ModelConfig(path=test_data / "models" / "yolox_nano_coco.onnx", kind="detector", preprocess=YOLOX,
                      providers=["cpu"])  # fmt: skip
    image = np.asarray(frame, dtype=np.uint8)
    plain, squeezed = infer_with_squeezers(OnnxRunner(cfg), [image], YOLOX, parse_squeezers("bits:5"))
    a, b = plain[0].detections, squeezed["bits5"][0].detections
    assert a is not None and b is not None and len(a) >= 3 and len(b) >= 3  # pedestrians in both
    # 5-bit colour barely moves the boxes: each confident plain box has a squeezed twin nearby, in frame pixels
    for box in a[a[:, 4] >= 0.5]:
        assert np.abs(b[:, :4] - box[:4]).max(axis=1).min() < 12.0


# --------------------------------------------------------------------------- planner
def test_fill_descs_geometry_and_slots() -> None:
    frames = [DeviceFrame(0x1000, 3 * 640, 640, 480), DeviceFrame(0x9000, 2048, 500, 333)]
    descs, blocks, geos = fill_descs(YOLOX, frames, 0x10_0000, parse_squeezers("median"))
    assert geos == [plan_resize((640, 480), YOLOX), plan_resize((500, 333), YOLOX)]
    per_slot = -(-416 * 416 // THREADS)
    assert blocks == 4 * per_slot and descs["block_start"].tolist() == [0, per_slot, 2 * per_slot, 3 * per_slot]
    assert descs["dst"].tolist() == [0x10_0000 + s * slot_bytes(YOLOX) for s in range(4)]
    assert descs["src"].tolist() == [0x1000, 0x9000, 0x1000, 0x9000]
    assert (descs["flags"] >> 4).tolist() == [0, 0, 2, 2]
    assert descs["box_w"][0] == 416 and descs["box_h"][0] == 312 and descs["pad_value"][0] == 114


def test_unsupported_interpolation_and_bad_frames() -> None:
    area = SQUEEZENET.model_copy(update={"interpolation": "area"})
    assert unsupported_reason(SQUEEZENET) is None
    reason = unsupported_reason(area)
    assert reason is not None and "'area'" in reason
    with pytest.raises(BackendUnavailable, match="linear"):
        fill_descs(area, [DeviceFrame(0x1000, 30, 10, 10)], 0x2000)
    with pytest.raises(FrameError, match="pitch >= 3 \\* width"):
        DeviceFrame(0x1000, 20, 10, 10)
    with pytest.raises(FrameError, match="empty batch"):
        fill_descs(SQUEEZENET, [], 0x2000)


# --------------------------------------------------------------------------- on a GPU
@pytest.fixture
def gpu_launcher() -> Iterator[object]:
    from agent.gpu.launcher import open_launcher  # noqa: PLC0415

    try:
        launcher = open_launcher("cuda-python", 0)
    except BackendUnavailable as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    yield launcher
    launcher.close()


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "cfg"), CASES, ids=[c[0] for c in CASES])
def test_gpu_kernel_matches_host_and_cpu(gpu_launcher: object, harness: Harness, photos: list[U8], case: str,
                                         cfg: PreprocessConfig) -> None:  # fmt: skip
    from agent.gpu.launcher import Launcher  # noqa: PLC0415
    from agent.gpu.preprocess import FrameUploader, GpuPreprocessor  # noqa: PLC0415

    gpu: Launcher = gpu_launcher  # type: ignore[assignment]
    squeezers = parse_squeezers("bits:5,median:3")
    pre = GpuPreprocessor(cfg, gpu)
    uploader = FrameUploader(gpu)
    n_slots = len(photos) * 3
    dst = gpu.alloc(n_slots * slot_bytes(cfg))
    frames = uploader.upload(photos)
    pre.run(frames, dst, squeezers)
    host = harness.run(cfg, photos, squeezers)
    got = np.empty_like(host)
    gpu.copy_dtoh(got, dst)
    gpu.synchronize()
    np.testing.assert_array_equal(got, host)  # same arithmetic on both sides: bit-exact
    ref = preprocess(photos, cfg)
    diff = np.abs(got[: len(photos)].astype(np.float64) - ref.astype(np.float64))
    assert np.all(diff <= _tolerance(cfg, ref)), f"{case}: max |diff| {diff.max()}"
    pre.close()
    uploader.close()
