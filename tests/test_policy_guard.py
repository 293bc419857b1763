"""The Guard: verdict contents, alphas, disabled reasons, the model-output test, errors."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import ConfigError, ProfileError
from agent.frame import Frame
from agent.model.types import ModelOutput
from agent.scoring import policy
from agent.scoring.base import Scorer
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.scoring.policy import FAMILY_KEY, Guard
from agent.scoring.profile import Profile
from agent.sources.synthetic import SyntheticCamera, SyntheticScene, parse_synthetic_uri
from agent.stats.cpu import CpuStats
from agent.stats.types import FrameStats
from agent.verdict import REASON_CODES, Decision

N_CLASSES = 10
Data = list[tuple[np.ndarray, FrameStats]]


@pytest.fixture(scope="module")
def clean() -> Data:
    spec = parse_synthetic_uri("synthetic://clean?size=128x72&seed=4&frames=260")
    camera = SyntheticCamera(SyntheticScene(spec.seed, spec.size_wh), spec.schedule)
    backend = CpuStats((4, 4))
    out = []
    for i in range(260):
        image = camera.render(i)[0]
        out.append((image, backend.compute(image)))
    return out


def confident(rng: np.random.Generator, logits: bool = True) -> ModelOutput:
    """A classifier output on an in-distribution frame: one class clearly ahead."""
    z = rng.normal(0.0, 1.0, N_CLASSES).astype(np.float32)
    top = int(rng.integers(N_CLASSES))
    z[top] += 8.0
    p = np.exp(z - z.max())
    p /= p.sum()
    return ModelOutput(top1=top, confidence=float(p[top]), probs=p.astype(np.float32),
                       logits=z if logits else None)


def unsure() -> ModelOutput:
    """An output on an unfamiliar frame: flat logits."""
    z = np.zeros(N_CLASSES, np.float32)
    return ModelOutput(top1=0, confidence=1.0 / N_CLASSES, probs=np.full(N_CLASSES, 0.1, np.float32), logits=z)


def build(data: Data, outputs: list[ModelOutput] | None = None, **cfg: object) -> Profile:
    cal = Calibrator(CalibrationConfig(frames=200, **cfg), (4, 4))
    for i, (_, stats) in enumerate(data[:200]):
        cal.update(stats, outputs[i] if outputs else None)
    return cal.build(model_sha256="ab" * 32 if outputs else None)


@pytest.fixture(scope="module")
def profile(clean: Data) -> Profile:
    return build(clean)


def frame(image: np.ndarray, seq: int, **kw: object) -> Frame:
    return Frame(image, "cam7", seq, 1000.0 + seq, float(seq), **kw)  # type: ignore[arg-type]


def test_verdict_contents(clean: Data, profile: Profile) -> None:
    guard = Guard(profile)
    image = clean[230][0]
    dark = (image // 8).astype(np.uint8)
    v = guard.update(frame(dark, 230, fault="dark"), CpuStats((4, 4)).compute(dark), None, {"stats": 1.5})
    assert v.camera_id == "cam7" and v.seq == 230 and v.capture_ts == 1230.0 and v.fault == "dark"
    assert v.decision == Decision.BLOCK
    assert v.latency_ms["stats"] == 1.5 and v.latency_ms["score"] > 0
    assert set(v.scores) <= set(profile.test_names()) and "dark" in v.scores
    assert set(v.p_values) == set(v.scores) | {FAMILY_KEY}
    assert all(0.0 < p <= 1.0 for p in v.p_values.values())
    assert v.reasons and v.reasons[0].p_value is not None
    ps = [r.p_value for r in v.reasons]
    assert ps == sorted(ps)  # type: ignore[type-var]
    assert "dark" in v.reason_codes
    for r in v.reasons:
        assert r.score == v.scores[str(r.detail["test"])]
        assert float(r.detail["p_family"]) <= guard.alpha_flag
    assert v.p_values[FAMILY_KEY] == min(float(r.detail["p_family"]) for r in v.reasons)
    assert guard.p_family == v.p_values[FAMILY_KEY]
    assert all(isinstance(t, Scorer) for t in guard.tests)  # the pluggable-test protocol


def test_every_flag_has_a_reason_and_pass_has_none(clean: Data) -> None:
    # exact p-values (no tolerances) at alpha 0.5: many clean frames are flagged, many pass
    guard = Guard(build(clean, tolerances={"*": 0.0}), PolicyConfig(alpha_flag=0.5, alpha_block=0.01))
    decisions = set()
    for i, (image, stats) in enumerate(clean[200:], start=200):
        v = guard.update(frame(image, i), stats, None)
        decisions.add(v.decision)
        assert (v.decision == Decision.PASS) == (not v.reasons)
        assert (v.decision >= Decision.FLAG) == (v.p_values[FAMILY_KEY] <= 0.5)
    assert Decision.FLAG in decisions and Decision.PASS in decisions


def test_set_alphas(clean: Data, profile: Profile) -> None:
    guard = Guard(profile)
    image = clean[210][0]
    tinted = np.clip(image.astype(np.float32) * (1.0, 1.0, 1.12), 0, 255).astype(np.uint8)
    tint_stats = CpuStats((4, 4)).compute(tinted)
    p = guard.update(frame(tinted, 1), tint_stats, None).p_values[FAMILY_KEY]
    assert 0 < p < 1
    # the same frame each time, seen afresh (a frame repeated three times builds up `patch` evidence)
    guard.set_alphas(min(0.99, p * 1.01), min(0.99, p * 1.01))
    guard.reset()
    assert guard.update(frame(tinted, 2), tint_stats, None).decision == Decision.BLOCK
    guard.set_alphas(p * 0.99, p * 0.5)
    guard.reset()
    assert guard.update(frame(tinted, 3), tint_stats, None).decision == Decision.PASS
    for bad in ((0.0, 0.0), (1.0, 0.5), (0.01, 0.02), (float("nan"), 0.001)):
        with pytest.raises(ConfigError):
            guard.set_alphas(*bad)
    assert guard.alpha_flag == pytest.approx(p * 0.99)


def test_disabled_reasons(clean: Data, profile: Profile) -> None:
    image = clean[220][0] // 8
    stats = CpuStats((4, 4)).compute(image)
    guard = Guard(profile, PolicyConfig(disabled_reasons=["dark", "covered"]))
    v = guard.update(frame(image, 1), stats, None)
    assert "dark" not in v.scores and "dark" not in v.reason_codes and "covered" not in v.reason_codes
    assert v.decision == Decision.BLOCK  # still caught by the other tests
    with pytest.raises(ConfigError, match="disables every test"):
        Guard(profile, PolicyConfig(disabled_reasons=sorted({t.reason for t in profile.tests})))
    with pytest.raises(ValueError, match="unknown reason codes"):
        PolicyConfig(disabled_reasons=["darkness"])


def test_frame_of_another_size_is_blocked_until_the_size_is_back(
    clean: Data, profile: Profile, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swapped camera / another stream resolution: BLOCK 'resolution' (no test can score it),
    one warning per change, and guarding as before once the profile's size is back."""
    guard = Guard(profile)
    images = [im for im, _ in clean[:8]]
    small = [im[:36, :64] for im in images]
    backend = CpuStats((4, 4))
    with caplog.at_level("WARNING", logger="agent.scoring.policy"):
        for i, im in enumerate(small[:3]):
            v = guard.update(frame(im, i), backend.compute(im, key="s"), None)
            assert v.decision == Decision.BLOCK and v.reason_codes == ("resolution",)
            assert v.reasons[0].detail == {"frame": "64x36", "profile": f"{profile.width}x{profile.height}"}
            assert v.p_values == {} and v.stats.width == 64
        back = [guard.update(frame(im, 10 + i), backend.compute(im), None) for i, im in enumerate(images)]
    assert [r.message.split(":")[0] for r in caplog.records] == ["camera cam7", "camera cam7"]
    assert "BLOCKed with reason 'resolution'" in caplog.records[0].message
    assert "back to the profile's" in caplog.records[1].message
    assert all("resolution" not in v.reason_codes and "family" in v.p_values for v in back)
    assert guard.size_mismatch is not None  # held for MISMATCH_HOLD_S after the last small frame
    monkeypatch.setattr(policy, "MISMATCH_HOLD_S", 0.0)
    assert guard.size_mismatch is None
    # a clean frame of the profile's size after the episode is judged as one before it
    ref = Guard(profile).update(frame(images[0], 0), CpuStats((4, 4)).compute(images[0]), None)
    assert back[0].p_values == ref.p_values


def test_a_stream_flapping_between_sizes_does_not_flood_the_log(
    clean: Data, profile: Profile, caplog: pytest.LogCaptureFixture
) -> None:
    guard = Guard(profile)
    image = clean[0][0]
    small = np.ascontiguousarray(image[:36, :64])
    backend = CpuStats((4, 4))
    with caplog.at_level("WARNING", logger="agent.scoring.policy"):
        decisions = [guard.update(frame(im, i), backend.compute(im, key=str(i % 2)), None).reason_codes
                     for i, im in enumerate([small, image] * 150)]
    assert decisions[::2] == [("resolution",)] * 150 and all("resolution" not in d for d in decisions[1::2])
    assert [r.message.split("size change ")[1][:3] for r in caplog.records] == ["1):", "2):", "3):", "4):",
                                                                                "100", "200", "300"]
    # the camera status it feeds stays one steady 'degraded' state, not a flip per frame
    assert guard.size_mismatch == f"frames 64x36, profile {profile.width}x{profile.height}: recalibrate"


def test_frame_with_another_grid_is_refused(clean: Data, profile: Profile) -> None:
    guard = Guard(profile)
    image = clean[0][0]
    with pytest.raises(ProfileError, match=r"tile grid .*recalibrate"):
        guard.update(frame(image, 1), CpuStats((2, 2)).compute(image), None)


def test_resolution_cannot_be_disabled() -> None:
    with pytest.raises(ValueError, match="'resolution' cannot be disabled"):
        PolicyConfig(disabled_reasons=["resolution"])
    with pytest.raises(ValueError, match="'model_output' cannot be disabled"):
        PolicyConfig(disabled_reasons=["model_output"])


def test_an_unusable_model_output_blocks_a_clean_frame(clean: Data, profile: Profile) -> None:
    guard = Guard(profile)
    image, stats = clean[200]
    assert guard.update(frame(image, 1), stats, None).decision == Decision.PASS
    v = guard.update(frame(image, 2), stats, None, model_error="classifier output contains NaN or infinity")
    assert v.decision == Decision.BLOCK and v.reason_codes == ("model_output",)
    assert v.reasons[0].detail == {"error": "classifier output contains NaN or infinity"}
    assert v.scores  # the image tests still ran


def test_ood_model_with_logits_uses_energy(clean: Data) -> None:
    rng = np.random.default_rng(1)
    prof = build(clean, [confident(rng) for _ in range(200)])
    assert "ood_model" in prof.test_names()
    assert prof.model is not None and prof.model.score_kind == "energy"
    assert prof.model.energy is not None and prof.model.entropy is not None
    guard = Guard(prof)
    image, stats = clean[240]
    ok = guard.update(frame(image, 1), stats, confident(rng))
    assert ok.decision == Decision.PASS and "ood_model" in ok.scores
    bad = guard.update(frame(image, 2), stats, unsure())
    assert bad.reason_codes == ("ood_model",)
    assert bad.scores["ood_model"] == pytest.approx(-math.log(N_CLASSES), rel=1e-5)
    none = guard.update(frame(image, 3), stats, None)  # model skipped this frame
    assert "ood_model" not in none.scores


def test_ood_model_without_logits_uses_max_softmax(clean: Data) -> None:
    rng = np.random.default_rng(2)
    prof = build(clean, [confident(rng, logits=False) for _ in range(200)])
    assert prof.model is not None and prof.model.score_kind == "msp"
    guard = Guard(prof)
    image, stats = clean[240]
    v = guard.update(frame(image, 1), stats, unsure())
    assert "ood_model" in v.reason_codes and v.scores["ood_model"] == pytest.approx(0.9)


def test_profile_without_model_has_no_ood_model(clean: Data, profile: Profile) -> None:
    assert profile.model is None and "ood_model" not in profile.test_names()
    v = Guard(profile).update(frame(clean[240][0], 1), clean[240][1], unsure())
    assert "ood_model" not in v.scores


def test_guard_is_deterministic(clean: Data, profile: Profile) -> None:
    runs = []
    for _ in range(2):
        guard = Guard(Profile.from_dict(profile.model_dump(mode="json")))
        runs.append([guard.update(frame(im, i), st, None).p_values for i, (im, st) in enumerate(clean[200:])])
    assert runs[0] == runs[1]


def test_small_n_for_alpha_is_logged(clean: Data, caplog: pytest.LogCaptureFixture) -> None:
    cal = Calibrator(CalibrationConfig(frames=100), (4, 4))
    for _, stats in clean[:100]:
        cal.update(stats)
    with caplog.at_level(logging.WARNING, logger="agent.scoring.calibrate"):
        cal.build(alpha_flag=0.05, alpha_block=0.001)
    messages = [r.getMessage() for r in caplog.records]
    assert any("alpha_block=0.001" in m and "extrapolated tail" in m for m in messages), messages
    assert not any("alpha_flag=0.05 is below" in m for m in messages)


def test_a_calibration_that_changed_within_is_named_when_it_blunts_every_test(
    clean: Data, profile: Profile, caplog: pytest.LogCaptureFixture
) -> None:
    """Its last 10 calibration frames 40 % darker (dusk came early): those frames score extreme
    p-values against the rest, the family level falls far below Bonferroni's alpha/K, and the
    guard says so, naming the tests and the frames; a steady calibration says nothing."""
    with caplog.at_level(logging.WARNING, logger="agent.scoring.policy"):
        steady = Guard(profile, PolicyConfig(alpha_flag=0.01))
    assert steady.family.level(0.01) * policy.UNSTEADY_FACTOR >= 0.01 / steady.family.k
    assert "calibration frames" not in caplog.text
    dusk = [(im, dataclasses.replace(st, brightness=st.brightness * (0.6 if i >= 190 else 1.0)))
            for i, (im, st) in enumerate(clean)]
    unsteady = build(dusk)
    with caplog.at_level(logging.WARNING, logger="agent.scoring.policy"):
        guard = Guard(unsteady, PolicyConfig(alpha_flag=0.01))
    level, bonferroni = guard.family.level(0.01), 0.01 / guard.family.k
    assert level * policy.UNSTEADY_FACTOR < bonferroni
    said = [r.getMessage() for r in caplog.records if "Bonferroni" in r.getMessage()]
    assert len(said) == 1, said
    assert f"per-test level is {level:.2g}" in said[0] and "(kept frames 190..199)" in said[0]
    assert "dark (10 frames)" in said[0] and "policy.disabled_reasons" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent.scoring.policy"):
        Guard(unsteady, PolicyConfig(alpha_flag=0.01, disabled_reasons=["dark", "ood_stats"]))
    assert "Bonferroni" not in caplog.text  # without the tests that saw the change: steady again


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (32, 24)])
def test_frames_smaller_than_the_tile_grids_are_guarded_without_warnings(size: tuple[int, int]) -> None:
    """Tiles a frame is too small to measure are NaN in every frame (all-NaN calibration columns):
    calibrating and guarding go through without NumPy's 'All-NaN slice' warnings (errors under
    pytest's filterwarnings), and a darkened frame is still caught."""
    spec = parse_synthetic_uri("synthetic://clean?size=128x72&seed=4&frames=160")
    camera = SyntheticCamera(SyntheticScene(spec.seed, spec.size_wh), spec.schedule)
    shrink = cv2.INTER_AREA
    images: list[npt.NDArray[np.uint8]] = [
        np.asarray(cv2.resize(camera.render(i)[0], size, interpolation=shrink), dtype=np.uint8) for i in range(140)
    ]
    backend = CpuStats((4, 4))
    cal = Calibrator(CalibrationConfig(frames=120), (4, 4))
    for im in images[:120]:
        cal.update(backend.compute(im), None, image=im, live=True)
    guard = Guard(cal.build(model_sha256=None))
    clean = [guard.update(frame(im, i, live=True), backend.compute(im), None) for i, im in enumerate(images[120:])]
    dark = (images[-1] // 6).astype(np.uint8)
    v = guard.update(frame(dark, 99, live=True), backend.compute(dark), None)
    assert [c.decision for c in clean] == [Decision.PASS] * len(clean)
    assert v.decision == Decision.BLOCK and "dark" in v.reason_codes


def test_nanstats_doctests() -> None:
    import doctest  # noqa: PLC0415

    from agent.scoring import nanstats  # noqa: PLC0415

    result = doctest.testmod(nanstats)
    assert result.attempted == 3 and result.failed == 0


def test_nan_median_is_numpys_with_or_without_nan() -> None:
    """Its fast path (no NaN: np.median) gives np.nanmedian's numbers; with NaN it ignores them."""
    from agent.scoring.nanstats import nan_median  # noqa: PLC0415

    rng = np.random.default_rng(5)
    for _ in range(200):
        x = rng.normal(size=(int(rng.integers(1, 30)), 6)).round(int(rng.integers(0, 3)))  # ties too
        assert np.array_equal(nan_median(x), np.nanmedian(x, axis=0))
        x[rng.random(x.shape) < 0.2] = np.nan
        x[:, 0] = np.nan  # an all-NaN column: NaN, without NumPy's warning
        with np.errstate(all="ignore"):
            want = np.array([np.nanmedian(c) if not np.isnan(c).all() else np.nan for c in x.T])
        assert np.array_equal(nan_median(x), want, equal_nan=True)


def test_every_reason_code_has_a_row_in_the_on_site_table(repo_root: Path) -> None:
    """docs/deploy.md tells field engineers what each reason asks of them: one row per code, no stale ones."""
    deploy = (repo_root / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = deploy.split("### What each reason asks of you on site", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)`", section, flags=re.MULTILINE)
    assert sorted(rows) == sorted(REASON_CODES)
