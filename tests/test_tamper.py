"""Tamper alarms: hysteresis (golden indices), defocused and moved tests, edge-map similarity."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.corruptions import corrupt
from agent.frame import Frame
from agent.scoring import explain
from agent.scoring.base import make_test
from agent.scoring.calibrate import DEFAULT_TESTS, Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig, TamperConfig
from agent.scoring.observation import clipped_tiles, make_thumbnail, observe
from agent.scoring.policy import Guard
from agent.scoring.tamper import TAMPER_REASONS, Hysteresis, TamperMonitor
from agent.scoring.view import Moved, ViewReference, block_ncc, edge_map, hidden_mask, ncc
from agent.sources.synthetic import SyntheticCamera, SyntheticScene, parse_synthetic_uri
from agent.stats.cpu import CpuStats
from agent.stats.types import FrameStats
from agent.verdict import Decision

Image = npt.NDArray[np.uint8]
Stream = list[tuple[Image, FrameStats, str | None]]
CAL = 250
URI = ("synthetic://custom?faults=covered:290:330,frozen:350:390,blur:410:450,scene_change:470:510"
       "&size=192x108&seed=2&frames=540")


@pytest.fixture(scope="module")
def stream() -> Stream:
    spec = parse_synthetic_uri(URI)
    camera = SyntheticCamera(SyntheticScene(spec.seed, spec.size_wh, style=spec.style), spec.schedule)
    backend = CpuStats((4, 4))
    out: Stream = []
    for i in range(540):
        image, _, fault = camera.render(i)
        out.append((image, backend.compute(image), fault))
    return out


@pytest.fixture(scope="module")
def guard(stream: Stream) -> Guard:
    cal = Calibrator(CalibrationConfig(frames=CAL), (4, 4))
    for image, stats, fault in stream[:CAL]:
        assert fault is None
        cal.update(stats, image=image)
    return Guard(cal.build(), PolicyConfig())


def test_tamper_alarms_golden_indices(guard: Guard, stream: Stream) -> None:
    """Each alarm is raised on the 3rd tampered frame and cleared on the 3rd clean one (seeded stream)."""
    guard.reset()
    events = []
    clean_flags = []
    for i, (image, stats, fault) in enumerate(stream[CAL:], start=CAL):
        v = guard.update(Frame(image, "cam", i, float(i), float(i), live=True, fault=fault), stats, None)
        events += [(i, r, s.raised) for r, s in guard.tamper_states.items() if s.changed]
        if fault is None and v.decision != Decision.PASS:
            clean_flags.append(i)
        if fault is not None and i >= {"covered": 292, "frozen": 353, "blur": 412, "scene_change": 472}[fault]:
            # a raised alarm is in the verdict's reasons with its state
            raised = [r for r in v.reasons if r.detail.get("tamper") == "raised"]
            assert raised, (i, fault, v.reason_codes)
    assert events == [
        (292, "covered", True), (292, "moved", True), (332, "covered", False), (332, "moved", False),
        (353, "frozen", True), (392, "frozen", False),
        # a blurred lens is defocused, not covered; another place is moved, not covered
        (412, "defocused", True), (452, "defocused", False),
        (472, "moved", True), (512, "moved", False),
    ]
    # raised within 1 s at 25 fps, cleared when the condition ends, no false alarm in between
    assert clean_flags == []


def test_hysteresis_golden_on_seeded_noise() -> None:
    rng = np.random.default_rng(11)
    on = rng.random(200) < np.where(np.arange(200) // 50 % 2 == 1, 0.9, 0.02)  # evidence in 50..99, 150..199
    off = ~on & (rng.random(200) < 0.9)
    h = Hysteresis(raise_frames=3, clear_frames=3)
    changes = [(i, h.raised) for i in range(200) if h.update(bool(on[i]), bool(off[i])).changed]
    assert changes == [(52, True), (102, False), (152, True)]


@pytest.mark.parametrize(
    ("raise_frames", "clear_frames", "expected"),
    [
        (1, 1, [(0, True), (4, False)]),
        (2, 1, [(1, True), (4, False)]),
        (3, 2, [(2, True), (5, False)]),
        (5, 1, []),  # never 5 consecutive "on" frames
    ],
)
def test_hysteresis_table(raise_frames: int, clear_frames: int, expected: list[tuple[int, bool]]) -> None:
    on = [1, 1, 1, 1, 0, 0, 0]
    off = [0, 0, 0, 0, 1, 1, 1]
    h = Hysteresis(raise_frames, clear_frames)
    assert [(i, h.raised) for i in range(7) if h.update(bool(on[i]), bool(off[i])).changed] == expected


def test_hysteresis_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        Hysteresis(0, 3)


def test_monitor_keeps_reason_only_below_clear_level() -> None:
    mon = TamperMonitor(TamperConfig(raise_frames=2, clear_frames=2, clear_alpha=0.1))
    for seq in range(2):
        mon.update(seq, {"covered": 1e-6}, alpha_flag=0.01)
    assert mon.raised == ["covered"]
    assert mon.keeps("covered", 0.05) and not mon.keeps("covered", 0.5) and not mon.keeps("moved", 0.05)
    states = mon.update(2, {"covered": 0.5}, alpha_flag=0.01)
    assert states["covered"].raised and states["covered"].since_seq == 1
    states = mon.update(3, {"covered": 0.5}, alpha_flag=0.01)
    assert not states["covered"].raised and states["covered"].changed and mon.raised == []


def test_ncc_is_gain_and_offset_invariant() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((20, 30)).astype(np.float32)
    assert ncc(a, 3.0 * a + 7.0) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    assert ncc(a, np.zeros_like(a)) == 0.0  # flat: no evidence of similarity


def test_moved_scores_another_view_high(stream: Stream) -> None:
    clean = [observe(s, None, image=im) for im, s, f in stream[:CAL]]
    test = Moved()
    test.fit(clean)
    same = [test.update(o).score for o in clean[::10]]
    image = stream[100][0]
    h, w = image.shape[:2]
    moved = {
        "tilted": np.roll(image, h // 6, axis=0),
        "zoomed": cv2.resize(image[h // 8 : h - h // 8, w // 8 : w - w // 8], (w, h)),
        "rotated": cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), 8, 1.0), (w, h),
                                  borderMode=cv2.BORDER_REFLECT),
        "other scene": stream[490][0],
    }
    for name, raw in moved.items():
        view: Image = np.ascontiguousarray(raw, dtype=np.uint8)
        score = test.update(observe(CpuStats((4, 4)).compute(view), None, image=view)).score
        # 2x the tolerance: a tilt that brings flat sky over the old texture loses those pixels (hidden)
        assert score > 2 * Moved.default_tolerance > max(same), (name, score, max(same))
    brighter = np.clip(image.astype(np.float32) * 1.3 + 10, 0, 255).astype(np.uint8)
    assert test.update(observe(CpuStats((4, 4)).compute(brighter), None, image=brighter)).score < 0.3
    # the reference survives a JSON round trip
    again = Moved()
    again.load_params(test.params())
    assert again.reference is not None and test.reference is not None
    assert np.array_equal(again.reference, test.reference)
    with pytest.raises(ValueError, match="thumbnail"):
        again.load_params({"reference": [1, 2, 3]})


def test_moved_not_applicable_without_image(stream: Stream) -> None:
    test = Moved()
    test.fit([observe(s, None) for _, s, _ in stream[:20]])
    assert test.params() == {} and np.isnan(test.update(observe(stream[0][1], None)).score)


def test_edge_map_shape_and_thumbnail() -> None:
    image = np.zeros((90, 160, 3), np.uint8)
    cv2.rectangle(image, (40, 20), (120, 70), (255, 255, 255), -1)
    thumb = make_thumbnail(image)
    assert thumb.shape == (36, 64) and thumb.dtype == np.uint8
    edges = edge_map(thumb)
    assert edges.shape == thumb.shape and float(edges[18, 32]) < float(edges.max()) / 10  # flat inside


def test_tamper_tests_and_warped_and_only_they_keep_their_tolerance() -> None:
    """A calibration that resolves alpha drops the default tolerances, but a tamper reason's (and
    ``warped``'s) is the smallest event it names (Test.keeps_tolerance): these keep it, no other test does."""
    tests = [make_test(name, CalibrationConfig()) for name in DEFAULT_TESTS]
    assert {t.name for t in tests if t.keeps_tolerance} == {*TAMPER_REASONS, "warped"}
    assert all(t.default_tolerance > 0 for t in tests if t.keeps_tolerance)


def test_module_doctests() -> None:
    import doctest  # noqa: PLC0415

    from agent.scoring import explain, observation, tamper, view  # noqa: PLC0415

    for module, examples in ((tamper, 1), (view, 2), (explain, 10), (observation, 4)):
        result = doctest.testmod(module)
        assert result.attempted >= examples and result.failed == 0, module.__name__


def _exposed(image: Image, gain: float) -> Image:
    out: Image = np.clip(image.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize("gain", [0.15, 0.25])
def test_a_dim_exposure_is_dark_not_covered(guard: Guard, stream: Stream, gain: float) -> None:
    """A 15-25 % exposure loses as much tile contrast as a hand over the lens, but the calibrated view's
    edges are all there (``moved`` far from firing): ``dark``, never the ``covered`` tamper reason or alarm.
    A cover over the same frames stays ``covered`` (and ``moved``: the view is gone)."""
    guard.reset()
    cover = stream[300][0]  # the scenario's cover fault
    dim_reasons: set[str] = set()
    for i in range(CAL, CAL + 30):
        image = _exposed(stream[i][0], gain)
        v = guard.update(Frame(image, "cam", i, float(i), float(i), live=True), CpuStats((4, 4)).compute(image), None)
        assert v.decision != Decision.PASS
        dim_reasons |= set(v.reason_codes)
        assert "covered" not in guard.tamper_states or not guard.tamper_states["covered"].raised
        assert v.p_values["covered"] <= guard.alpha_flag  # the contrast test alone would have fired
    assert "dark" in dim_reasons and not dim_reasons & {"covered", "moved", "occluded"}
    v = guard.update(Frame(cover, "cam", 999, 999.0, 999.0, live=True), CpuStats((4, 4)).compute(cover), None)
    assert {"covered", "moved"} <= set(v.reason_codes)


def test_light_that_washes_out_the_view_is_not_a_move(stream: Stream) -> None:
    """A flare or an overexposure clips blocks and wipes their edges: ``moved`` leaves blocks more than
    10 % clipped out (a flare scores like the calibrated view) and does not apply where fewer than half
    are left (an overexposure); a bump of the camera, with nothing clipped, still scores high."""
    spec = parse_synthetic_uri(URI.replace("covered:290:330", "glare:290:310,overexposed:310:330"))
    camera = SyntheticCamera(SyntheticScene(spec.seed, spec.size_wh, style=spec.style), spec.schedule)
    backend = CpuStats((4, 4))
    test = Moved()
    test.fit([observe(s, None, image=im) for im, s, _ in stream[:CAL]])
    assert test._ref_blocks is not None
    scores: dict[str, list[float]] = {"glare": [], "overexposed": []}
    unmasked: dict[str, list[float]] = {"glare": [], "overexposed": []}
    for i in range(290, 330):
        image, _, fault = camera.render(i)
        assert fault in scores
        obs = observe(backend.compute(image), None, image=image)
        scores[fault].append(test.update(obs).score)
        assert obs.thumb is not None
        unmasked[fault].append(1.0 - block_ncc(edge_map(obs.thumb), test._ref_blocks))
    tolerance = Moved.default_tolerance
    assert max(scores["glare"]) < tolerance < float(np.median(unmasked["glare"])), (scores, unmasked)
    clean_max = max(test.update(observe(s, None, image=im)).score for im, s, _ in stream[CAL : CAL + 40])
    assert all(np.isnan(scores["overexposed"])) and min(unmasked["overexposed"]) > 10 * clean_max
    h, w = stream[0][0].shape[:2]
    bump = cv2.getRotationMatrix2D((w / 2, h / 2), 2.0, 1.0)
    bump[:, 2] += (0.04 * w, 0.02 * h)
    bumped: Image = np.ascontiguousarray(cv2.warpAffine(stream[CAL][0], bump, (w, h), borderMode=cv2.BORDER_REFLECT))
    assert test.update(observe(backend.compute(bumped), None, image=bumped)).score > tolerance


def test_blur_does_not_apply_to_a_washed_out_view(stream: Stream) -> None:
    """An overexposure clips most tiles: the frame's Laplacian energy says nothing about focus then."""
    spec = parse_synthetic_uri(URI.replace("covered:290:330", "overexposed:290:300"))
    camera = SyntheticCamera(SyntheticScene(spec.seed, spec.size_wh, style=spec.style), spec.schedule)
    backend = CpuStats((4, 4))
    blur = make_test("blur", CalibrationConfig())
    washed = [observe(backend.compute(im), None) for im, _, f in map(camera.render, range(290, 300))]
    assert all(clipped_tiles(o.stats) > 0.5 and np.isnan(blur.update(o).score) for o in washed)
    clean = observe(stream[CAL][1], None)
    assert clipped_tiles(clean.stats) == 0.0 and np.isfinite(blur.update(clean).score)


def test_an_occluder_hides_the_view_it_does_not_move_it(stream: Stream) -> None:
    """Flat rectangles over 20-30 % of the view (corruption ``occlusion`` s3-s4) wipe the edges of the
    blocks they straddle: compared whole, those blocks made ``moved`` fire. What they hide is left
    out, so they score like the calibrated view; a cover (most of the view gone) is compared whole
    and still scores high."""
    backend = CpuStats((4, 4))
    test = Moved()
    test.fit([observe(s, None, image=im) for im, s, _ in stream[:CAL]])
    assert test._ref_blocks is not None
    tolerance = Moved.default_tolerance
    for severity in (3, 4):
        scores, whole = [], []
        for k, (image, _, _) in enumerate(stream[CAL : CAL + 40 : 4]):
            occluded = corrupt(image, "occlusion", severity, seed=k)
            obs = observe(backend.compute(occluded), None, image=occluded)
            assert obs.thumb is not None
            scores.append(test.update(obs).score)
            whole.append(1.0 - block_ncc(edge_map(obs.thumb), test._ref_blocks))
        assert max(scores) < tolerance < float(np.median(whole)), (severity, scores, whole)
    covered = [test.update(observe(s, None, image=im)).score for im, s, f in stream[290:330] if f == "covered"]
    assert len(covered) == 40 and min(covered) > 0.5


def test_a_sticker_is_occluded_with_where_it_is(guard: Guard, stream: Stream) -> None:
    """A flat sticker over 9 % of the view: ``occluded`` on every frame, its alarm raised on the 3rd
    and cleared on the 3rd clean frame after, the hidden share and centre in the detail; not
    ``moved`` (the rest of the view is where it was) and not ``blur`` (explained away)."""
    guard.reset()
    h, w = stream[0][0].shape[:2]
    x0, x1, y0, y1 = int(0.1 * w), int(0.4 * w), int(0.2 * h), int(0.5 * h)
    events, verdicts = [], []
    for i in range(CAL, CAL + 30):
        image, stats, fault = stream[i]
        assert fault is None
        if i < CAL + 20:
            image = image.copy()
            image[y0:y1, x0:x1] = 40
            stats = CpuStats((4, 4)).compute(image)
        verdicts.append(guard.update(Frame(image, "cam", i, float(i), float(i), live=True), stats, None))
        events += [(i, r, st.raised) for r, st in guard.tamper_states.items() if st.changed]
    stuck, after = verdicts[:20], verdicts[23:]
    assert all("occluded" in v.reason_codes and not {"moved", "blur"} & set(v.reason_codes) for v in stuck)
    assert events == [(CAL + 2, "occluded", True), (CAL + 22, "occluded", False)]
    detail = next(r.detail for r in stuck[5].reasons if r.code == "occluded")
    assert detail["tamper"] == "raised" and 0.06 < float(detail["hidden_share"]) < 0.12
    assert 0.1 < float(detail["center_x"]) < 0.4 and 0.2 < float(detail["center_y"]) < 0.5
    assert all(v.decision == Decision.PASS for v in after)


def test_a_cover_is_covered_not_occluded(guard: Guard, stream: Stream) -> None:
    """Most of the view hidden: the typical texture is the cover's, nothing counts as hidden, and
    ``covered`` names it (``occluded`` is dropped where ``covered`` fires anyway)."""
    guard.reset()
    covered = [guard.update(Frame(im, "cam", i, float(i), float(i), live=True, fault=f), s, None)
               for i, (im, s, f) in enumerate(stream[290:330], start=290)]
    assert all("covered" in v.reason_codes and "occluded" not in v.reason_codes for v in covered)


def test_block_ncc_leaves_hidden_pixels_out_unless_most_blocks_are_hidden() -> None:
    rng = np.random.default_rng(2)
    ref = rng.random((32, 64)).astype(np.float32)
    frame = ref.copy()
    hidden = np.zeros(ref.shape, dtype=bool)
    for x in (0, 16, 32, 48):  # bars over a quarter of every 8 x 16 block
        frame[:, x : x + 4], hidden[:, x : x + 4] = 0.0, True
    assert block_ncc(frame, ref) < 0.9  # compared whole, no block matches
    assert block_ncc(frame, ref, hidden=hidden) == pytest.approx(1.0)  # what is seen matches
    # what is seen is compared block by block, as ncc() would on the seen pixels of each 8 x 16 block
    noisy = (ref + rng.normal(0.0, 0.5, ref.shape)).astype(np.float32)
    corners = [(r, c) for r in range(0, 32, 8) for c in range(0, 64, 16)]
    by_hand = []
    for r, c in corners:
        seen = ~hidden[r : r + 8, c : c + 16]
        by_hand.append(ncc(noisy[r : r + 8, c : c + 16][seen], ref[r : r + 8, c : c + 16][seen]))
    assert block_ncc(noisy, ref, hidden=hidden) == pytest.approx(float(np.median(by_hand)))
    frame[:, :44], hidden[:, :44] = 0.0, True  # 12 of 16 blocks more than half hidden: compared whole
    assert block_ncc(frame, ref, hidden=hidden) == block_ncc(frame, ref) < 0.9


def test_block_ncc_spreads_rows_that_do_not_divide_into_the_blocks() -> None:
    """A 640x272 camera's thumbnail is 64 x 27: its 4 block rows span 6, 7, 7 and 7 rows (none left out),
    each block compared as ncc() compares it, with and without hidden pixels."""
    rng = np.random.default_rng(4)
    ref = rng.random((27, 64)).astype(np.float32)
    frame = (ref + rng.normal(0.0, 0.7, ref.shape)).astype(np.float32)
    hidden = np.zeros(ref.shape, dtype=bool)
    hidden[20:, :6] = True  # 6 of the 16 columns of the bottom-left block: less than half of it
    ys, xs = [0, 6, 13, 20, 27], [0, 16, 32, 48, 64]
    spans = [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(4) for j in range(4)]
    whole = [ncc(frame[y0:y1, x0:x1], ref[y0:y1, x0:x1]) for y0, y1, x0, x1 in spans]
    seen = [ncc(frame[y0:y1, x0:x1][~hidden[y0:y1, x0:x1]], ref[y0:y1, x0:x1][~hidden[y0:y1, x0:x1]])
            for y0, y1, x0, x1 in spans]
    assert block_ncc(frame, ref) == pytest.approx(float(np.median(whole)))
    assert block_ncc(frame, ref, hidden=hidden) == pytest.approx(float(np.median(seen)))


def test_hidden_pixels_are_flat_where_light_should_show_texture() -> None:
    """A flat sticker hides what is under it; light taken away (a dim exposure, a dark half of the
    view) or added until it clips hides nothing: the texture each pixel should show scales with the
    light it gets now."""
    rng = np.random.default_rng(3)
    thumb = (30 + rng.random((36, 64)) * 170).astype(np.uint8)
    ref = ViewReference.of(thumb)
    stuck, washed, dusk = thumb.copy(), thumb.copy(), thumb.astype(np.float32)
    stuck[:, :16], washed[:, :16] = 40, 255  # a quarter of the view under a flat sticker / clipped by light
    dusk[:, :32] = dusk[:, :32] * 0.05 + rng.normal(0.0, 0.2, (36, 32))  # the left half in the dark, and noise
    dim = (thumb * 0.15).astype(np.uint8)
    for lit in (dim, washed, np.clip(dusk + 0.5, 0, 255).astype(np.uint8)):
        assert not hidden_mask(lit, ref).any()
    assert hidden_mask(stuck, ref)[:, :15].all() and not hidden_mask(stuck, ref)[:, 17:].any()


def test_block_ncc_needs_half_of_the_structured_blocks() -> None:
    rng = np.random.default_rng(1)
    ref = rng.random((32, 64)).astype(np.float32)
    usable = np.ones(16, dtype=bool)
    assert block_ncc(ref, ref, usable=usable) == pytest.approx(1.0)
    usable[:8] = False  # 8 of 16 left: enough
    assert block_ncc(ref, ref, usable=usable) == pytest.approx(1.0)
    usable[8] = False  # 7 of 16: too much of the view is gone to tell
    assert np.isnan(block_ncc(ref, ref, usable=usable))


def test_a_flare_is_not_a_defocus(stream: Stream) -> None:
    """A flare's halo adds light over most tiles: their variance rises and their Laplacian energy stays,
    so the sharpness ratio drops but the detail does not, and its clipped core's tiles are left out:
    not ``defocused``. A blurred lens loses both, in every tile."""
    spec = parse_synthetic_uri(URI.replace("covered:290:330", "glare:290:330"))
    camera = SyntheticCamera(SyntheticScene(spec.seed, spec.size_wh, style=spec.style), spec.schedule)
    backend = CpuStats((4, 4))
    test = make_test("defocused", CalibrationConfig())
    test.fit([observe(s, None) for _, s, _ in stream[:CAL]])
    clean = [test.update(observe(s, None)).score for _, s, _ in stream[CAL : CAL + 40]]
    flare = []
    for i in range(290, 330):
        image, _, fault = camera.render(i)
        assert fault == "glare"
        flare.append(test.update(observe(backend.compute(image), None)).score)
    blurred = [test.update(observe(s, None)).score for _, s, f in stream if f == "blur"]
    tolerance = test.default_tolerance
    assert max(flare) < max(clean) + tolerance < min(blurred) / 10, (max(flare), max(clean), min(blurred))


def test_explaining_a_reason_away_changes_the_reasons_not_the_decisions(
    guard: Guard, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dim exposures (covered explained away) get the same decisions with the rules as without them."""
    frames = [(i, _exposed(stream[i][0], gain)) for gain in (0.1, 0.15, 0.25) for i in range(CAL, CAL + 10)]

    def decide() -> list[tuple[Decision, tuple[str, ...]]]:
        guard.reset()
        return [(v.decision, v.reason_codes) for v in (
            guard.update(Frame(im, "cam", i, float(i), float(i), live=True), CpuStats((4, 4)).compute(im), None)
            for i, im in frames)]

    with_rules = decide()
    monkeypatch.setattr(explain, "_RULES", {})
    without = decide()
    assert [d for d, _ in with_rules] == [d for d, _ in without]
    assert any(d == Decision.BLOCK for d, _ in without)  # the strongest ones were BLOCKed on 'covered' too
    assert all("covered" in r for _, r in without) and not any("covered" in r for _, r in with_rules)


def test_a_dropped_reason_keeps_its_block_on_the_frame(
    guard: Guard, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mechanism, with a made-up rule: 'dark' and 'ood_stats' (both at the BLOCK level on a 40 %
    exposure) explained away by 'covered' (only at the FLAG level there) leave 'covered' as the only
    reason, and the frame BLOCKed as before: the evidence did not get weaker, only its name changed."""
    monkeypatch.setattr(explain, "_RULES", {"dark": ("moved", frozenset({"covered"})),
                                            "ood_stats": ("moved", frozenset({"covered"}))})
    guard.reset()
    for i in range(CAL, CAL + 5):
        image = _exposed(stream[i][0], 0.4)
        v = guard.update(Frame(image, "cam", i, float(i), float(i), live=True), CpuStats((4, 4)).compute(image), None)
    assert v.p_values["dark"] <= guard.alpha_block and v.p_values["ood_stats"] <= guard.alpha_block
    assert v.reason_codes == ("covered",)
    assert v.reasons[0].decision == Decision.FLAG and v.decision == Decision.BLOCK


def _clocked(image: Image, i: int, fps: int = 10) -> Image:
    """The picture with a clock burned in after the sensor (an OSD), ticking once a second."""
    out = image.copy()
    text = f"13:{i // (60 * fps) % 60:02d}:{i // fps % 60:02d}"
    for colour, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, thick, cv2.LINE_AA)
    return out


def test_a_frozen_picture_under_a_ticking_clock_is_frozen(stream: Stream) -> None:
    """Many cameras burn a clock into the picture after the sensor: when the sensor's feed hangs,
    the clock goes on ticking. Calibrated on the clocked stream, the hung picture is still
    ``frozen`` (from its 3rd frame, through the ticks), and the clocked clean frames pass."""
    backend = CpuStats((4, 4))
    cal = Calibrator(CalibrationConfig(frames=CAL), (4, 4))
    for i, (image, _, _) in enumerate(stream[:CAL]):
        clocked = _clocked(image, i)
        cal.update(backend.compute(clocked), image=clocked)
    guard = Guard(cal.build(), PolicyConfig())
    assert "frozen" in guard.profile.test_names()
    frozen: list[tuple[int, bool, Decision]] = []
    clean: list[tuple[int, bool, Decision]] = []
    for i, (image, _, fault) in enumerate(stream[CAL:], start=CAL):
        if fault not in (None, "frozen"):
            continue
        clocked = _clocked(image, i)
        v = guard.update(Frame(clocked, "cam", i, float(i), float(i), live=True), backend.compute(clocked), None)
        (frozen if fault else clean).append((i, "frozen" in v.reason_codes, v.decision))
    hung = frozen[0][0]
    assert all(named for i, named, _ in frozen if i >= hung + 2), frozen
    assert all(d == Decision.PASS for _, _, d in clean), [c for c in clean if c[2] != Decision.PASS]
