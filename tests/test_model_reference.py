"""The embedded reference model: loads by default, matches its sidecar, classifies fresh synthetic scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import ModelError
from agent.model import factory
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.factory import (
    REFERENCE_MODEL,
    effective_model_config,
    effective_preprocess,
    load_model,
    read_sidecar,
)
from agent.model.onnx_runner import OnnxRunner, file_sha256
from agent.sources.synthetic_scene import SCENE_CLASSES, SceneStyle, SyntheticScene

pytest.importorskip("onnxruntime")


def _arr(x: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
    """The array of an optional ModelOutput field, failing the test when it is missing."""
    assert x is not None
    return x


def test_reference_files_and_sidecar() -> None:
    side = read_sidecar()
    assert REFERENCE_MODEL.stat().st_size < 1_000_000
    assert side["sha256"] == file_sha256(REFERENCE_MODEL)
    assert side["labels"] == list(SCENE_CLASSES)
    assert side["output"]["softmax_applied"] is False
    assert side["validation"]["accuracy_onnxruntime_full_frames"] >= 0.95


def test_sidecar_preprocess_replaces_config_only_for_the_default() -> None:
    cfg = ModelConfig(preprocess=PreprocessConfig(size=(10, 10)))
    pre = effective_preprocess(cfg)
    assert pre == PreprocessConfig.model_validate(read_sidecar()["preprocess"])
    assert pre.size != (10, 10)
    resolved = effective_model_config(cfg)
    assert resolved.reference and resolved.config.path == REFERENCE_MODEL
    assert resolved.labels == SCENE_CLASSES
    own = ModelConfig(path=Path("/some/model.onnx"), preprocess=PreprocessConfig(size=(10, 10)))
    assert effective_preprocess(own).size == (10, 10)
    assert not effective_model_config(own).reference


def test_reference_model_classifies_fresh_scenes() -> None:
    runner = load_model(ModelConfig(batch_size=16, providers=["cpu"]))
    assert runner is not None
    info = runner.info
    assert info.input_name == "input" and info.labels == SCENE_CLASSES and info.num_classes == len(SCENE_CLASSES)
    assert info.sha256 == read_sidecar()["sha256"]
    # seeds far from the training and validation ranges, two styles, a size not used in training
    rng = np.random.default_rng(99)
    frames: list[np.ndarray] = []
    labels: list[str] = []
    cases: tuple[tuple[int, SceneStyle], ...] = (
        (900_001, "street"),
        (900_002, "indoor"),
        (900_003, "street"),
        (900_004, "indoor"),
    )
    for seed, style in cases:
        scene = SyntheticScene(seed=seed, size_wh=(560, 315), style=style)
        for idx in rng.choice(2000, size=24, replace=False):
            image, label = scene.render(int(idx))
            frames.append(image)
            labels.append(label)
    outs = runner.infer(frames)
    hits = [o.label == lab for o, lab in zip(outs, labels, strict=True)]
    assert np.mean(hits) >= 0.9, f"accuracy {np.mean(hits):.3f}"
    for o in outs:  # the model outputs logits: kept, energy defined
        assert o.logits is not None and o.logits.shape == (4,)
        assert o.energy is not None and o.probs is not None
        assert float(o.probs.sum()) == pytest.approx(1.0, abs=1e-5)


def test_dynamic_batch_equals_singles() -> None:
    runner = load_model(ModelConfig(batch_size=3, providers=["cpu"]))
    assert runner is not None
    scene = SyntheticScene(seed=5, size_wh=(320, 180))
    frames = [scene.render(i)[0] for i in (3, 80, 160, 240, 320)]
    batch = runner.infer(frames)  # chunks of 3 + 2
    singles = [runner.infer([f])[0] for f in frames]
    for b, s in zip(batch, singles, strict=True):
        np.testing.assert_allclose(_arr(b.logits), _arr(s.logits), rtol=1e-4, atol=1e-5)


def test_warmup_is_one_inference_that_changes_nothing() -> None:
    runner = load_model(ModelConfig(providers=["cpu"]))
    assert runner is not None  # model.enabled is on by default
    image = SyntheticScene(seed=5, size_wh=(320, 180)).render(0)[0]
    before = runner.infer([image])[0]
    runner.warmup()  # a mid-grey frame of the model's input size (the daemon calls it before the first frame)
    after = runner.infer([image])[0]
    assert after.top1 == before.top1 and np.array_equal(_arr(after.probs), _arr(before.probs))


def test_missing_reference_model_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a checkout without the built model: the error says how to rebuild it
    monkeypatch.setattr(factory, "REFERENCE_MODEL", tmp_path / "reference_cnn.onnx")
    with pytest.raises(ModelError, match=r"build_reference_model\.py"):
        load_model(ModelConfig())


def test_runner_needs_a_path() -> None:
    with pytest.raises(ModelError, match=r"model\.path"):
        OnnxRunner(ModelConfig())
