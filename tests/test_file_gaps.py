"""agent/sources/file_gaps.FrameLedger on golden frame sequences: each is what FFmpeg delivers
for one kind of damaged (or healthy but uneven) file, as (timestamp index, failed reads before it)."""

from __future__ import annotations

from collections.abc import Iterable

from agent.sources.file_gaps import FrameLedger, Gap


def feed(ledger: FrameLedger, frames: Iterable[tuple[int | None, int]]) -> list[Gap]:
    """Every gap the ledger counts over ``frames`` and at the end of the pass."""
    gaps: list[Gap] = []
    for index, failed in frames:
        gaps += ledger.frame(index, failed)
    return gaps + ledger.end()


def run(*parts: Iterable[int], failed_at: dict[int, int] | None = None) -> list[tuple[int | None, int]]:
    """Frame indices 1.. in the order given, with ``failed_at[i]`` failed reads before index i."""
    failed_at = failed_at or {}
    return [(i, failed_at.get(i, 0)) for part in parts for i in part]


def test_a_healthy_file_loses_nothing() -> None:
    ledger = FrameLedger(100, 25.0)
    assert feed(ledger, run(range(1, 100))) == []
    assert (ledger.pos, ledger.shortfall(), ledger.silent_slots) == (100, 0, 0)


def test_failed_reads_then_a_jump_count_the_jumped_frames_once() -> None:
    """mp4: read() fails 12 times while the decoder resyncs, then frame 66 comes."""
    ledger = FrameLedger(100, 25.0)
    gaps = feed(ledger, run(range(1, 54), range(66, 100), failed_at={66: 12}))
    assert gaps == [Gap(54, 12, "timestamps")]
    assert ledger.shortfall() == 0


def test_a_jump_with_no_failed_read_is_reported_not_counted() -> None:
    """Frame 50 follows frame 29 with no failed read: a demuxer that dropped damaged packets
    (MPEG-TS, Matroska) looks exactly like a motion-triggered recording that paused."""
    ledger = FrameLedger(100, 25.0)
    assert feed(ledger, run(range(1, 30), range(50, 90), range(95, 100))) == []
    assert (ledger.silent_slots, ledger.silent_jumps, ledger.largest_jump) == (20 + 5, 2, (20, 29))
    assert ledger.shortfall() == 0


def test_jumped_frames_are_held_until_the_horizon_so_late_frames_are_not_counted() -> None:
    """H.264 with B-frames after damage: 108 comes first, then 78 and 80 late, and 109 is lost."""
    ledger = FrameLedger(250, 25.0)
    frames = run(range(1, 77), [108, 78, 110, 111, 80], range(112, 250), failed_at={108: 9})
    out: list[Gap] = []
    for index, failed in frames:
        got = ledger.frame(index, failed)
        if got:
            # Released in one piece, once the stream is a horizon (50 frames) past the last jumped frame.
            assert index is not None and index - 109 > ledger.horizon and not out
        out += got
    out += ledger.end()
    lost = [i for g in out for i in range(g.first, g.first + g.count)]
    assert lost == [77, 79, *range(81, 108), 109]
    assert sum(g.count for g in out) + len(frames) + 1 == 250  # every frame delivered or counted, none twice


def test_a_buffered_frame_after_failed_reads_is_not_a_loss_but_the_jump_after_it_is() -> None:
    """After 16 failed reads the decoder hands out frame 120 itself (it had it buffered); the
    next frame is 149. Counted: 121-148, not the 16 failed reads as well."""
    gaps = feed(FrameLedger(250, 25.0), run(range(1, 121), range(149, 250), failed_at={120: 16}))
    assert gaps == [Gap(121, 28, "timestamps")]


def test_failed_reads_that_no_timestamp_explains_count_as_themselves() -> None:
    """AVI: timestamps count packets, so the frame after 3 failed reads shows no jump."""
    ledger = FrameLedger(100, 25.0)
    gaps = feed(ledger, run(range(1, 97), failed_at={40: 3}))
    assert gaps == [Gap(40, 3, "failed reads")]
    assert ledger.shortfall() == 0  # 97 frames delivered + 3 counted: the declared 100


def test_without_a_frame_rate_failed_reads_are_the_count() -> None:
    ledger = FrameLedger(None, 0.0)
    gaps = feed(ledger, [(None, 0)] * 10 + [(None, 4)] + [(None, 0)] * 5)
    assert gaps == [Gap(11, 4, "failed reads")]
    assert (ledger.pos, ledger.shortfall()) == (21, 0)


def test_uneven_timestamps_are_not_counted_as_losses() -> None:
    """An AVI with empty chunks for the frames its capture dropped (opencv_tree.avi: 68 frames
    over 444 slots), and a phone clip whose frame rate halves in the dark."""
    ledger = FrameLedger(444, 15.0)
    assert feed(ledger, run(range(6, 444, 6))) == []  # frames 0, 6, ..., 438
    assert (ledger.silent_slots, ledger.silent_jumps, ledger.shortfall()) == (438 - 73, 73, 444 - 439)
    phone = FrameLedger(None, 30.0)
    # 30 fps, then 15 (every other slot), then 30 again with a 5-frame hiccup: none of it counted.
    assert feed(phone, run(range(1, 40), range(41, 80, 2), range(80, 90), range(95, 120))) == []
    assert (phone.silent_slots, phone.largest_jump) == (20 + 5, (5, 89))


def test_garbled_timestamps_fall_back_to_failed_reads() -> None:
    """After damage a timestamp points past the declared count: from then on failed reads count."""
    ledger = FrameLedger(100, 25.0)
    gaps = feed(ledger, run(range(1, 40), [5000], range(41, 60), failed_at={5000: 2}))
    assert not ledger.timestamps
    assert gaps == [Gap(40, 2, "failed reads")]


def test_timestamps_that_stand_still_fall_back_to_counting_frames() -> None:
    """A container that reports no timestamp (0 for every frame) is read as one without timestamps."""
    ledger = FrameLedger(50, 25.0)
    assert feed(ledger, [(0, 0)] * 49) == []
    assert (ledger.timestamps, ledger.shortfall()) == (False, 0)
