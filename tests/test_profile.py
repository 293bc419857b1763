"""Profiles: building (Calibrator), JSON round trip, versions, compatibility, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import exact_tolerances, synthetic_stats, unwritable_folder

from agent.errors import ConfigError, ProfileError
from agent.frame import Frame
from agent.scoring.base import make_test
from agent.scoring.calibrate import DEFAULT_TESTS, MIN_BLOCKS, MIN_KEPT, Calibrator, block_ids
from agent.scoring.config import CalibrationConfig
from agent.scoring.policy import Guard
from agent.scoring.profile import PROFILE_VERSION, QUANTILE_LEVELS, Profile
from agent.sources.synthetic import SyntheticScene, parse_synthetic_uri
from agent.stats import STATS_VERSION
from agent.stats.cpu import CpuStats
from agent.stats.types import SCALAR_FIELDS, TILE_FIELDS, FrameStats
from agent.verdict import Decision

SHA = "1234567890abcdef" * 4


@pytest.fixture(scope="module")
def stats() -> list[FrameStats]:
    return synthetic_stats("synthetic://clean?size=96x64&seed=9&frames=200")


def calibrate(stats: list[FrameStats], **cfg: object) -> Profile:
    cal = Calibrator(CalibrationConfig(**cfg), (4, 4), camera_id="cam1")
    for s in stats:
        cal.update(s)
        if cal.done:
            break
    return cal.build(model_sha256=SHA, model_input_wh=(224, 224), config_hash="cafe")


@pytest.fixture(scope="module")
def profile(stats: list[FrameStats]) -> Profile:
    return calibrate(stats, frames=160)


def test_profile_contents(profile: Profile) -> None:
    assert profile.version == PROFILE_VERSION and profile.stats_version == STATS_VERSION
    assert (profile.width, profile.height, profile.grid) == (96, 64, (4, 4))
    assert profile.model_sha256 == SHA and profile.model_input_wh == (224, 224) and profile.config_hash == "cafe"
    assert profile.camera_id == "cam1" and len(profile.profile_id) == 16
    # cross-fitted: every kept frame fits the tests and has an out-of-sample calibration score
    assert profile.n_frames == 160 and profile.n_kept == profile.n_fit == profile.n_cal == 160
    assert set(profile.statistics) == set(SCALAR_FIELDS)
    q = profile.statistics["brightness"].quantiles
    assert len(q) == len(QUANTILE_LEVELS) and q == sorted(q)  # type: ignore[type-var]
    assert profile.tiles.fields == list(TILE_FIELDS) and len(profile.tiles.median) == 4
    assert profile.robust.location and len(profile.robust.scatter) == len(profile.robust.location)
    # no images: no thumbnail (moved, occluded), no chroma energy (adversarial_hf), no detail image (warped)
    imageless = ("moved", "occluded", "adversarial_hf", "warped")
    assert profile.test_names() == [t for t in DEFAULT_TESTS if t not in imageless]
    for t in profile.tests:
        assert len(t.calibration_scores) == profile.n_cal
    assert profile.model is None


def test_save_load_round_trip(profile: Profile, tmp_path: Path) -> None:
    path = profile.save(tmp_path / "sub" / "profile.json")
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]  # no temporary left behind
    loaded = Profile.load(path)
    assert loaded == profile
    assert Profile.content_id(loaded.model_dump(mode="json")) == profile.profile_id
    json.loads(path.read_text())  # strict JSON (no NaN literals)


def test_profiles_are_deterministic(stats: list[FrameStats], profile: Profile) -> None:
    again = calibrate(stats, frames=160)
    assert again.profile_id == profile.profile_id
    assert again.model_dump(exclude={"created_at"}) == profile.model_dump(exclude={"created_at"})
    other = calibrate(stats, frames=160, stride=2)
    assert other.profile_id != profile.profile_id


def test_loaded_profile_scores_like_the_original(stats: list[FrameStats], profile: Profile, tmp_path: Path) -> None:
    a, b = Guard(profile), Guard(Profile.load(profile.save(tmp_path / "p.json")))
    image = np.zeros((64, 96, 3), np.uint8)
    for i, s in enumerate(stats[160:]):
        va, vb = a.update(Frame(image, "c", i, 0, 0), s, None), b.update(Frame(image, "c", i, 0, 0), s, None)
        assert va.p_values == vb.p_values and va.decision == vb.decision


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: [1, 2], "not an edge-guard profile"),
        (lambda d: {**d, "format": "other"}, "not an edge-guard profile"),
        (lambda d: {**d, "version": PROFILE_VERSION + 1}, f"format version {PROFILE_VERSION + 1}"),
        (lambda d: {**d, "stats_version": STATS_VERSION + 7}, "stats contract"),
        (lambda d: {k: v for k, v in d.items() if k != "tests"}, "corrupt"),
        (lambda d: {**d, "width": "wide"}, "corrupt"),
        (lambda d: {**d, "unexpected": 1}, "corrupt"),
        (lambda d: {**d, "tests": [{**d["tests"][0], "calibration_scores": [None]}]}, "no calibration scores"),
    ],
)
def test_bad_files_raise_profile_error(profile: Profile, tmp_path: Path, mutate: object, message: str) -> None:
    data = profile.model_dump(mode="json")
    with pytest.raises(ProfileError, match=message):
        Profile.load(_write(tmp_path, mutate(data)))  # type: ignore[operator]


def test_unknown_test_or_bad_params_raise_profile_error(profile: Profile) -> None:
    data = profile.model_dump(mode="json")
    renamed = {**data, "tests": [{**data["tests"][0], "name": "telepathy"}]}
    with pytest.raises(ProfileError, match="telepathy"):
        Profile.from_dict(renamed).build_tests()
    ood = next(t for t in data["tests"] if t["name"] == "ood_stats")
    broken = {**data, "tests": [{**ood, "params": {**ood["params"], "scatter": [[1.0]]}}]}
    with pytest.raises(ProfileError, match="ood_stats"):
        Profile.from_dict(broken).build_tests()


def test_a_failed_save_names_the_users_path_not_the_temporary_file(profile: Profile) -> None:
    out = unwritable_folder() / "p.json"
    with pytest.raises(ProfileError, match=r"^cannot write profile to /proc/p\.json: ") as info:
        profile.save(out)
    assert ".tmp" not in str(info.value)
    with pytest.raises(ProfileError, match=r"^cannot write profile to /proc/sub/p\.json: "):
        profile.save(out.parent / "sub" / "p.json")  # its folder cannot be made: the same error, not an OSError


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="edge-guard calibrate"):
        Profile.load(tmp_path / "nope.json")


def test_check_compatible(profile: Profile) -> None:
    profile.check_compatible(SHA, 96, 64, (4, 4))
    with pytest.raises(ProfileError) as err:
        profile.check_compatible("5678" * 16, 1280, 720, (4, 4))
    text = str(err.value)
    assert profile.profile_id in text and "1234567890ab" in text and "567856785678" in text
    assert "96x64" in text and "1280x720" in text and "edge-guard calibrate" in text
    with pytest.raises(ProfileError, match="no model"):
        profile.check_compatible(None, 96, 64, (4, 4))
    with pytest.raises(ProfileError, match="grid 3x3"):
        profile.check_compatible(SHA, 96, 64, (3, 3))
    # at start-up the frame size is not known yet: it is not compared, nor claimed in the message
    profile.check_compatible(SHA, None, None, (4, 4))
    with pytest.raises(ProfileError, match=r"this run uses no model \(grid 4x4\)"):
        profile.check_compatible(None, None, None, (4, 4))


def test_calibrator_skip_stride_and_progress(stats: list[FrameStats]) -> None:
    cal = Calibrator(CalibrationConfig(frames=40, skip=10, stride=3), (4, 4))
    for i, s in enumerate(stats[:49]):
        cal.update(s)
        assert cal.n == i + 1
    assert not cal.done and cal.progress == pytest.approx(49 / 50)
    cal.update(stats[49])
    assert cal.done and cal.n_kept == 14  # ceil(40 / 3)
    cal.update(stats[50])  # frames after done are ignored
    assert cal.n_kept == 14
    with pytest.raises(ProfileError, match=f"at least {MIN_KEPT}"):
        cal.build()


def test_calibrator_rejects_inconsistent_frames(stats: list[FrameStats]) -> None:
    cal = Calibrator(CalibrationConfig(), (2, 2))
    with pytest.raises(ProfileError, match="grid"):
        cal.update(stats[0])
    cal = Calibrator(CalibrationConfig(), (4, 4)).update(stats[0])
    spec = parse_synthetic_uri("synthetic://clean?size=64x64")
    other = CpuStats((4, 4)).compute(SyntheticScene(0, spec.size_wh).render(0)[0])
    with pytest.raises(ProfileError, match="one size"):
        cal.update(other)
    with pytest.raises(ValueError, match="grid"):
        Calibrator(CalibrationConfig(), (0, 4))


def test_wildcard_tolerance_applies_to_every_test_not_named() -> None:
    cfg = CalibrationConfig(tolerances={"*": 0.0, "blur": 0.3})
    assert make_test("blur", cfg).tolerance == 0.3
    assert make_test("dark", cfg).tolerance == 0.0
    assert make_test("moved", cfg).tolerance == 0.0
    ood = make_test("ood_model", cfg)
    ood._set_kind("energy")  # type: ignore[attr-defined]  # the model's score kind, known after fit
    assert ood.tolerance == 0.0  # not the kind's default
    dark = make_test("dark", CalibrationConfig())
    assert dark.tolerance == dark.default_tolerance > 0


def _tolerances(profile: Profile) -> dict[str, float]:
    return {t.name: t.tolerance for t in profile.tests}


def test_default_tolerances_dropped_when_calibration_resolves_alpha(
    stats: list[FrameStats], caplog: pytest.LogCaptureFixture
) -> None:
    """Frames in random order are independent states: 160 of them resolve alpha 0.05 (>= 19 needed),
    so the default tolerances are recorded as 0 (exact p-values) and the rebuilt tests use them."""
    shuffled = [stats[i] for i in np.random.default_rng(3).permutation(len(stats))]
    cal = Calibrator(CalibrationConfig(frames=160, tolerances={"blur": 0.3}), (4, 4))
    for s in shuffled[:160]:
        cal.update(s)
    with caplog.at_level("INFO", logger="agent.scoring.calibrate"):
        exact = cal.build(alpha_flag=0.05)
    assert exact.effective_frames is not None and exact.effective_frames + 1 >= 20
    assert "default tolerances dropped" in caplog.text
    tol, expected = _tolerances(exact), exact_tolerances(exact)
    assert tol.pop("blur") == 0.3  # named in calibration.tolerances: kept as given
    assert tol == {k: v for k, v in expected.items() if k != "blur"}
    # the tamper tests keep their default: the smallest change the reason names (no images: no
    # moved, no warped)
    assert {k for k, v in tol.items() if v > 0} == {"covered", "frozen", "defocused"}
    assert {t.name: t.tolerance for t in Guard(exact).tests} == _tolerances(exact)
    # Without alpha_flag, or with exact_when_resolved off, every default stays.
    off = Calibrator(CalibrationConfig(frames=160, exact_when_resolved=False), (4, 4))
    for s in shuffled[:160]:
        off.update(s)
    for c, profile in ((cal, cal.build()), (off, off.build(alpha_flag=0.05))):
        assert all(t.tolerance == make_test(t.name, c.cfg).tolerance > 0 for t in profile.tests), _tolerances(profile)


def test_an_exact_profile_still_needs_a_physical_cover(stats: list[FrameStats]) -> None:
    """Exact p-values (tolerances dropped) flag a frame whose tiles lost 20 % of their contrast, a
    veil, but `covered` keeps its ln 2: only tiles at a fifth of their contrast are a cover."""
    shuffled = [stats[i] for i in np.random.default_rng(3).permutation(len(stats))]
    cal = Calibrator(CalibrationConfig(frames=160), (4, 4))
    for s in shuffled[:160]:
        cal.update(s)
    guard = Guard(cal.build(alpha_flag=0.05))
    assert guard.tests and all(t.tolerance == 0 for t in guard.tests if t.name in ("low_contrast", "ood_stats"))
    c = TILE_FIELDS.index("contrast")
    image = np.zeros((64, 96, 3), np.uint8)

    def scaled(s: FrameStats, k: float) -> FrameStats:
        tiles = s.tiles.copy()
        tiles[..., c] *= k
        return dataclasses.replace(s, contrast=s.contrast * k, tiles=tiles)

    for i, s in enumerate(shuffled[160:170]):
        guard.reset()
        veil = guard.update(Frame(image, "c", i, 0, 0), scaled(s, 0.8), None)
        assert veil.decision >= Decision.FLAG and "covered" not in veil.reason_codes, veil.reason_codes
        guard.reset()
        cover = guard.update(Frame(image, "c", i, 0, 0), scaled(s, 0.2), None)
        assert "covered" in cover.reason_codes, cover.reason_codes


def test_dropped_tolerances_score_like_tolerances_configured_0(stats: list[FrameStats]) -> None:
    """'Exact' means what tolerances 0 configured mean (for all but the tamper tests and warped, which keep
    their default): the rebuilt tests get the tail-scale floor of a zero tolerance too (not the
    dropped tolerance's), so both profiles give the same p-values, also beyond every calibration
    score where the tail is extrapolated."""
    shuffled = [stats[i] for i in np.random.default_rng(3).permutation(len(stats))]
    profiles = []
    tamper = [make_test(n, CalibrationConfig()) for n in DEFAULT_TESTS]
    zero_but_tamper = {"*": 0.0} | {t.name: t.default_tolerance for t in tamper if t.keeps_tolerance}
    for cfg in (CalibrationConfig(frames=160), CalibrationConfig(frames=160, tolerances=zero_but_tamper)):
        cal = Calibrator(cfg, (4, 4))
        for s in shuffled[:160]:
            cal.update(s)
        profiles.append(cal.build(alpha_flag=0.05))
    exact, zero = (Guard(p) for p in profiles)
    assert {t.name: (t.tolerance, t.resolution) for t in exact.tests} == {
        t.name: (t.tolerance, t.resolution) for t in zero.tests
    }
    dark = next(t for t in exact.tests if t.name == "dark")
    assert dark.resolution < make_test("dark", CalibrationConfig()).tolerance
    image = np.zeros((64, 96, 3), np.uint8)
    dim = [dataclasses.replace(s, brightness=s.brightness * 0.5) for s in shuffled[160:]]
    dark_p = []
    for i, s in enumerate(shuffled[160:] + dim):
        va, vb = exact.update(Frame(image, "c", i, 0, 0), s, None), zero.update(Frame(image, "c", i, 0, 0), s, None)
        assert va.p_values == vb.p_values and va.decision == vb.decision
        dark_p.append(va.p_values["dark"])
    assert min(dark_p) < 1 / 161  # dim frames reach the extrapolated tail


def test_default_tolerances_kept_when_frames_are_correlated(stats: list[FrameStats], tmp_path: Path) -> None:
    """The same frames in time order hold too few independent states for alpha 0.01 (the
    calibrator warns): the tolerances stay, and a saved profile keeps them on reload."""
    cal = Calibrator(CalibrationConfig(frames=160), (4, 4))
    for s in stats[:160]:
        cal.update(s)
    profile = cal.build(alpha_flag=0.01)
    assert profile.effective_frames is not None and profile.effective_frames + 1 < 100
    assert all(t.tolerance == make_test(t.name, CalibrationConfig()).tolerance > 0 for t in profile.tests)
    loaded = Guard(Profile.load(profile.save(tmp_path / "p.json")))
    assert {t.name: t.tolerance for t in loaded.tests} == _tolerances(profile)


def test_rebuilt_tests_use_the_recorded_tolerance(profile: Profile) -> None:
    """The profile's record, not the running code's default, sets a rebuilt test's tolerance."""
    edited = profile.model_copy(update={"tests": [
        t.model_copy(update={"tolerance": 0.0}) if t.name == "dark" else t for t in profile.tests
    ]})
    dark = next(t for t in edited.build_tests() if t.name == "dark")
    assert dark.tolerance == 0.0 < make_test("dark", CalibrationConfig()).tolerance
    assert dark.conformal is not None and dark.conformal.tolerance == 0.0


def test_unknown_tolerance_key() -> None:
    # refused when the config is read (check-config too), not when calibration ends
    with pytest.raises(ValueError, match=r"tolerances names unknown tests \['blurr'\]"):
        CalibrationConfig(tolerances={"blurr": 0.1})
    with pytest.raises(ConfigError, match="tolerances"):  # and by the tests, for a config not validated
        make_test("blur", CalibrationConfig.model_construct(tolerances={"blurr": 0.1}))
    with pytest.raises(ValueError, match=">= 0"):
        CalibrationConfig(tolerances={"blur": -1.0})


@pytest.mark.parametrize(
    ("n", "block", "length"),
    [
        (300, 25, 25),
        (100, 25, 10),  # shrunk to keep at least MIN_BLOCKS blocks
        (20, 25, 2),
        (1000, 7, 7),
        (5, 25, 1),
    ],
)
def test_block_ids(n: int, block: int, length: int) -> None:
    ids, used = block_ids(n, block)
    assert used == length
    assert ids.tolist() == [i // length for i in range(n)]  # consecutive runs
    assert int(ids[-1]) + 1 >= min(MIN_BLOCKS, n)
