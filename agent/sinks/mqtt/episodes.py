"""Episodes: consecutive risky frames with overlapping reasons are one event, not 300 messages.

Per camera, a FLAG/BLOCK frame opens an episode (lifecycle ``new``). Further risky frames whose
reason set *overlaps* the episode's (shares at least one code) extend it: on real video a
secondary reason flickers frame to frame (``ood_model`` or ``patch`` on some frames of a blur
episode, not on others), and splitting one physical incident at every flicker would flood
operators with new/end pairs. The episode's ``reason_codes`` is the running union of its frames'
codes (sorted). It publishes an ``update`` on every escalation FLAG -> BLOCK, whenever a frame
adds a code the episode did not have yet (so subscribers learn about it at once), and otherwise
at most every ``update_interval_s``. It ends (``end``) after ``end_after_clean_frames``
consecutive PASS frames, when a risky frame whose reason set is disjoint from the episode's
arrives (``reasons_changed``; that frame opens the next episode), when no frame arrived for
``gap_s``, when the camera goes offline, or at shutdown. Because the union only grows, an
episode may drift from its first reason to a later one as long as consecutive risky frames keep
sharing a code with it: that is one incident seen through changing symptoms.

The tracker keeps the riskiest frame of the episode (decision, then smallest p-value, then
largest score) so the publisher can send the best frame at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

from agent.frame import Frame
from agent.sinks.mqtt.config import EventsConfig
from agent.verdict import Decision, Verdict

__all__ = ["Episode", "EpisodeTracker", "Transition", "risk_key"]

Risk = tuple[int, float, float]


def risk_key(verdict: Verdict) -> Risk:
    """Orders frames by riskiness: decision, then -min p-value, then max score."""
    ps = [r.p_value for r in verdict.reasons if r.p_value is not None]
    scores = [r.score for r in verdict.reasons if r.score == r.score]  # NaN-safe
    return (int(verdict.decision), -min(ps) if ps else -1.0, max(scores) if scores else 0.0)


@dataclass(slots=True)
class Episode:
    """A running (or just ended) episode of one camera. Mutated only by its tracker."""

    event_id: str
    camera_id: str
    reason_codes: tuple[str, ...]
    start_ts: float
    start_seq: int
    last_ts: float
    last_seq: int
    last_mono: float
    frames: int
    flag_frames: int
    block_frames: int
    max_decision: Decision
    worst: Verdict
    worst_frame: Frame
    worst_risk: Risk
    update_seq: int = 0
    last_update_mono: float = 0.0
    clean_run: int = 0
    sent_frame_seq: int | None = None
    sent_frame_risk: Risk | None = None

    def add(self, verdict: Verdict, frame: Frame, codes: tuple[str, ...], now_mono: float) -> bool:
        """Extend with a risky frame with reason set ``codes``.

        Returns True when the frame is news for subscribers: it escalated the episode's decision
        or added a reason code the episode did not have yet (``reason_codes`` becomes the union).
        """
        self.frames += 1
        self.flag_frames += verdict.decision == Decision.FLAG
        self.block_frames += verdict.decision == Decision.BLOCK
        self.last_ts, self.last_seq, self.last_mono = verdict.capture_ts, verdict.seq, now_mono
        self.clean_run = 0
        risk = risk_key(verdict)
        if risk > self.worst_risk:
            # Keep a reference, not a copy: frames are immutable once built.
            self.worst, self.worst_frame, self.worst_risk = verdict, frame, risk
        escalated = verdict.decision > self.max_decision
        self.max_decision = max(self.max_decision, verdict.decision)
        union = tuple(sorted(set(self.reason_codes).union(codes)))
        widened = union != self.reason_codes
        self.reason_codes = union
        return escalated or widened


@dataclass(frozen=True, slots=True)
class Transition:
    """Something to publish: an event lifecycle step of ``episode`` (``end_reason`` for ``end``)."""

    lifecycle: str  # new | update | end
    episode: Episode
    end_reason: str | None = None


class EpisodeTracker:
    """Turns the verdict stream of ONE camera into episode transitions. Not thread-safe (caller locks)."""

    def __init__(self, camera_id: str, config: EventsConfig) -> None:
        self.camera_id = camera_id
        self.config = config
        self.current: Episode | None = None

    def update(self, verdict: Verdict, frame: Frame, now_mono: float) -> list[Transition]:
        """Feed one verdict; returns the transitions it caused, in order."""
        out: list[Transition] = []
        ep = self.current
        if ep is not None and now_mono - ep.last_mono > self.config.gap_s:
            out.append(self._end("gap"))
            ep = None
        if verdict.decision == Decision.PASS:
            if ep is not None:
                ep.clean_run += 1
                ep.last_mono = now_mono
                if ep.clean_run >= self.config.end_after_clean_frames:
                    out.append(self._end("clean"))
            return out
        codes = tuple(sorted(set(verdict.reason_codes))) or ("unspecified",)
        if ep is not None and set(codes).isdisjoint(ep.reason_codes):
            # Only a disjoint set is another incident; an overlapping one (a flickering
            # secondary reason) continues this episode.
            out.append(self._end("reasons_changed"))
            ep = None
        if ep is None:
            self.current = self._open(verdict, frame, codes, now_mono)
            out.append(Transition("new", self.current))
            return out
        news = ep.add(verdict, frame, codes, now_mono)
        if news or now_mono - ep.last_update_mono >= self.config.update_interval_s:
            ep.update_seq += 1
            ep.last_update_mono = now_mono
            out.append(Transition("update", ep))
        return out

    def tick(self, now_mono: float) -> list[Transition]:
        """Periodic check: ends an episode whose camera went quiet for ``gap_s``."""
        if self.current is not None and now_mono - self.current.last_mono > self.config.gap_s:
            return [self._end("gap")]
        return []

    def finish(self, reason: str) -> list[Transition]:
        """End the running episode (camera offline, shutdown)."""
        return [self._end(reason)] if self.current is not None else []

    def _open(self, verdict: Verdict, frame: Frame, codes: tuple[str, ...], now_mono: float) -> Episode:
        event_id = f"{self.camera_id}-{int(verdict.capture_ts * 1000):x}-{verdict.seq}"
        return Episode(
            event_id=event_id,
            camera_id=self.camera_id,
            reason_codes=codes,
            start_ts=verdict.capture_ts,
            start_seq=verdict.seq,
            last_ts=verdict.capture_ts,
            last_seq=verdict.seq,
            last_mono=now_mono,
            frames=1,
            flag_frames=int(verdict.decision == Decision.FLAG),
            block_frames=int(verdict.decision == Decision.BLOCK),
            max_decision=verdict.decision,
            worst=verdict,
            worst_frame=frame,
            worst_risk=risk_key(verdict),
            last_update_mono=now_mono,
        )

    def _end(self, reason: str) -> Transition:
        ep = self.current
        assert ep is not None
        self.current = None
        ep.update_seq += 1
        return Transition("end", ep, reason)
