"""Adversarial inputs: squeezing distance, the batched squeezer on the real SqueezeNet, chroma energy,
the adversarial_hf test, and the NumPy SqueezeNet used by the benchmark's white-box attacks."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers import synthetic_frames

from agent.frame import Frame
from agent.model.config import ModelConfig, OutputConfig, PreprocessConfig
from agent.model.onnx_runner import OnnxRunner
from agent.model.types import ModelInfo, ModelOutput
from agent.scoring.adversarial import (
    REQUANTIZATION_FLOOR,
    FeatureSqueezer,
    make_squeezer,
    requantization_floor,
    squeeze_distance,
    squeeze_scores,
)
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig, SqueezeConfig
from agent.scoring.observation import chroma_energy
from agent.scoring.policy import Guard
from agent.stats.cpu import CpuStats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _attacks import NumpyCNN, fgsm

Image = npt.NDArray[np.uint8]
MEAN = (104.0, 117.0, 123.0)
PRE = PreprocessConfig(size=(224, 224), mean=MEAN)


@pytest.mark.parametrize(
    ("plain", "squeezed", "expected"),
    [
        ([1.0, 0.0], [[1.0, 0.0]], 0.0),  # unchanged
        ([1.0, 0.0], [[0.0, 1.0]], 2.0),  # flipped: the largest possible L1
        ([0.9, 0.1], [[0.8, 0.2], [0.3, 0.7]], 1.2),  # the largest over squeezers
    ],
)
def test_squeeze_distance_by_hand(plain: list[float], squeezed: list[list[float]], expected: float) -> None:
    assert squeeze_distance(plain, squeezed) == pytest.approx(expected)


def test_squeeze_scores_need_probabilities() -> None:
    p = np.array([0.7, 0.3], np.float32)
    with_probs = ModelOutput(top1=0, confidence=0.7, probs=p)
    detector = ModelOutput(top1=-1, confidence=0.0)
    flipped = ModelOutput(top1=1, confidence=0.7, probs=p[::-1].copy())
    scores = squeeze_scores([with_probs, detector], {"bits5": [flipped, detector]})
    assert scores[0] == pytest.approx(0.8) and np.isnan(scores[1])


class CountingRunner:
    """A real ONNX runner that also counts its ``infer`` calls (the squeezer must make one)."""

    def __init__(self, runner: OnnxRunner) -> None:
        self.runner = runner
        self.info: ModelInfo = runner.info
        self.calls: list[int] = []

    def infer(self, images: list[Image]) -> list[ModelOutput]:
        self.calls.append(len(images))
        return self.runner.infer(images)

    def warmup(self) -> None:
        self.runner.warmup()


@pytest.fixture(scope="module")
def squeezenet(test_data: Path) -> OnnxRunner:
    cfg = ModelConfig(path=test_data / "models" / "squeezenet1.0_fp32_upcast.onnx", preprocess=PRE,
                      output=OutputConfig(name="softmaxout_1"), providers=["cpu"])
    return OnnxRunner(cfg)


@pytest.fixture(scope="module")
def photos(test_data: Path) -> list[Image]:
    out = []
    for f in sorted((test_data / "images" / "photos").glob("*.jpg"))[:6]:
        image = cv2.imread(str(f))
        assert image is not None, f
        out.append(np.asarray(cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA), np.uint8))
    return out


def test_feature_squeezer_one_batched_call(squeezenet: OnnxRunner, photos: list[Image]) -> None:
    runner = CountingRunner(squeezenet)
    squeezer = FeatureSqueezer(runner, PRE, "bits:5,median:3")
    result = squeezer.infer(photos)
    assert runner.calls == [3 * len(photos)]  # plain + 2 squeezed copies, one call
    plain = squeezenet.infer(photos)
    assert [o.top1 for o in result.outputs] == [o.top1 for o in plain]
    assert all(0.0 <= s <= 2.0 for s in result.scores)
    with pytest.raises(ValueError, match="squeezer"):
        FeatureSqueezer(runner, PRE, "")


def test_chroma_energy() -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (64, 96, 1), dtype=np.uint8), 3, axis=2)
    assert np.all(chroma_energy(grey, (2, 2)) == 0.0)  # B = G = R: no chroma at all
    smooth = np.zeros((64, 96, 3), np.uint8)
    smooth[:, :, 2] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]  # a red ramp: smooth chroma
    signs = rng.choice(np.array([-4, 4]), size=smooth.shape)  # per-channel sign pattern, as an L-inf attack
    attacked = np.clip(smooth.astype(np.int16) + signs, 0, 255).astype(np.uint8)
    assert chroma_energy(smooth, (2, 2)).max() < 1.0
    assert chroma_energy(attacked, (2, 2)).min() > 10.0


@pytest.mark.parametrize("shape", [(432, 768), (180, 320), (1080, 1920)])
def test_requantization_floor_sits_between_rounding_and_a_1_code_value_attack(shape: tuple[int, int]) -> None:
    """One 8-bit rounding of each channel leaves a floor of ~3, two ~3 x sqrt 2: both are at most
    REQUANTIZATION_FLOOR; a perturbation of 1 code value per channel, random signs, is > 2x it."""
    one = requantization_floor(shape)
    assert 2.5 < one < 3.3
    assert one * np.sqrt(2) <= REQUANTIZATION_FLOOR * 1.1
    signs = np.random.default_rng(0).choice(np.array([-1, 1]), size=(*shape, 3))
    attack = np.nanmedian(chroma_energy((128 + signs).astype(np.uint8), (4, 4)))
    assert attack > 2 * REQUANTIZATION_FLOOR


@pytest.fixture(scope="module")
def scene() -> list[Image]:
    return synthetic_frames("synthetic://clean?size=224x224&seed=3&frames=230")


def test_adversarial_hf_flags_sign_noise_not_clean(scene: list[Image]) -> None:
    backend = CpuStats((4, 4))
    cal = Calibrator(CalibrationConfig(frames=200), (4, 4))
    for image in scene[:200]:
        cal.update(backend.compute(image), image=image)
    guard = Guard(cal.build(), PolicyConfig())
    rng = np.random.default_rng(1)
    clean, attacked = 0, 0
    for i, image in enumerate(scene[200:], start=200):
        v = guard.update(Frame(image, "cam", i, 0.0, 0.0), backend.compute(image), None)
        clean += "adversarial" in v.reason_codes
        signs = rng.choice(np.array([-4, 4]), size=image.shape)
        bad = np.clip(image.astype(np.int16) + signs, 0, 255).astype(np.uint8)
        v = guard.update(Frame(bad, "cam", i, 0.0, 0.0), backend.compute(bad), None)
        attacked += "adversarial" in v.reason_codes
    assert clean == 0 and attacked == 30


def test_numpy_squeezenet_matches_onnxruntime_and_finite_differences(
    test_data: Path, squeezenet: OnnxRunner, photos: list[Image]
) -> None:
    net = NumpyCNN(test_data / "models" / "squeezenet1.0_fp32_upcast.onnx")
    batch = np.stack(photos[:2])
    x = np.ascontiguousarray((batch.astype(np.float32) - np.asarray(MEAN, np.float32)).transpose(0, 3, 1, 2))
    probs, _ = net.forward(x)
    ort = squeezenet.infer(list(batch))
    assert np.allclose(probs, np.stack([o.probs for o in ort if o.probs is not None]), atol=1e-4)
    labels = probs.argmax(axis=1)
    grad, _ = net.input_gradient(x[:1], labels[:1])
    direction = np.random.default_rng(0).normal(size=x[:1].shape).astype(np.float32)

    def loss(z: npt.NDArray[np.float32]) -> float:
        p, _ = net.forward(z)
        return float(-np.log(p[0, labels[0]]))

    h = 0.05
    numeric = (loss(x[:1] + h * direction) - loss(x[:1] - h * direction)) / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(numeric, rel=0.1)
    # FGSM at 8/255 moves every pixel by at most 8 code values and changes the prediction
    adv = fgsm(net, batch, labels, 8, MEAN)
    assert int(np.abs(adv.astype(np.int16) - batch).max()) == 8
    assert any(o.top1 != int(y) for o, y in zip(squeezenet.infer(list(adv)), labels, strict=True))


def test_squeezing_distance_is_calibrated_and_flagged(scene: list[Image]) -> None:
    backend = CpuStats((4, 4))
    rng = np.random.default_rng(3)
    cal = Calibrator(CalibrationConfig(frames=200), (4, 4))
    for image in scene[:200]:
        cal.update(backend.compute(image), squeeze=float(rng.uniform(0.0, 0.3)))
    profile = cal.build()
    assert "adversarial_squeeze" in profile.test_names()
    guard = Guard(profile, PolicyConfig())
    image = scene[210]
    stats = backend.compute(image)
    assert "adversarial" not in guard.update(Frame(image, "cam", 1, 0.0, 0.0), stats, None, squeeze=0.2).reason_codes
    v = guard.update(Frame(image, "cam", 2, 0.0, 0.0), stats, None, squeeze=1.9)
    assert v.reason_codes == ("adversarial",) and v.reasons[0].detail["test"] == "adversarial_squeeze"
    # without a squeezing distance the test does not apply
    assert "adversarial_squeeze" not in guard.update(Frame(image, "cam", 3, 0.0, 0.0), stats, None).scores


def test_make_squeezer(squeezenet: OnnxRunner) -> None:
    on = SqueezeConfig(enabled=True, squeezers="bits:4")
    squeezer = make_squeezer(squeezenet, PRE, on)
    assert squeezer is not None and [s.name for s in squeezer.squeezers] == ["bits4"]
    assert make_squeezer(squeezenet, PRE, SqueezeConfig()) is None  # off by default
    assert make_squeezer(None, PRE, on) is None
    with pytest.raises(ValueError, match="squeezer"):
        SqueezeConfig(squeezers="blur:3")
