"""Health summaries over days -> what changed since calibration (for deciding when to retrain).

Reads the health summaries a camera wrote (the file sink's ``health.jsonl``, or MQTT ``health``
payloads a collector stored one per line: the summary is then under ``"summary"``), groups them
per camera into time buckets and reports, per bucket, what an ML engineer looks at before
retraining: frames guarded, FLAG and BLOCK rates and their top reasons, the drift scores
against the calibration profile (PSI per statistic, model confidence and class mix; CUSUM
alarms), the model's median confidence and the class mix. Then, per camera, the comparison of
the first and the last guarded bucket.

Every line is accounted for: lines that are not a health summary are counted per file, with
the first few line numbers and the reason, never dropped silently. Frames used for the
start-up calibration are counted apart and not in the rates (they got no decision). A gap in a
camera's ``seq`` numbers (lost summaries, or a restart: seq starts again at 0) is counted.

Aggregates are frame-weighted: a bucket's PSI for a statistic and its median confidence are
the means over its summaries weighted by their guarded frames (exact for rates and class
counts; an approximation for quantiles and PSI, which are per-window values).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import ConfigError
from agent.health import HealthSummary

__all__ = ["Bucket", "CameraReport", "LoadResult", "auto_bucket_s", "build_reports", "load_summaries"]

#: At most this many bad lines are quoted per file (all are counted).
QUOTED_BAD_LINES = 3
#: Buckets ``auto_bucket_s`` aims for over the whole span.
AUTO_BUCKETS = 24
_NICE_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)


@dataclass
class LoadResult:
    """Summaries read, and every line that was not one."""

    summaries: list[HealthSummary] = field(default_factory=list)
    bad_lines: dict[str, int] = field(default_factory=dict)  # file -> count
    quoted: list[str] = field(default_factory=list)  # "file:line: reason"


def _summary_of(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict) and obj.get("type") == "health" and isinstance(inner := obj.get("summary"), dict):
        return inner  # an MQTT payload stored by a collector
    if isinstance(obj, dict):
        return obj
    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")


def load_summaries(paths: Iterable[Path]) -> LoadResult:
    """Read every health summary from ``paths`` (files, or folders searched for ``health*.jsonl``)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.rglob("health*.jsonl")))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"report: {p} does not exist (name health.jsonl files or folders that hold them)")
    if not files:
        raise ConfigError(f"report: no health*.jsonl under {', '.join(str(p) for p in paths)}")
    out = LoadResult()
    for f in files:
        with f.open(encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    out.summaries.append(HealthSummary.model_validate(_summary_of(json.loads(line))))
                except (json.JSONDecodeError, ValueError, ValidationError) as exc:
                    out.bad_lines[str(f)] = out.bad_lines.get(str(f), 0) + 1
                    if out.bad_lines[str(f)] <= QUOTED_BAD_LINES:
                        reason = str(exc).splitlines()[0][:120]
                        out.quoted.append(f"{f}:{n}: {reason}")
    return out


def auto_bucket_s(summaries: Sequence[HealthSummary]) -> int:
    """A round bucket length giving about ``AUTO_BUCKETS`` buckets over the summaries' span."""
    if not summaries:
        return 3600
    span = max(s.window_end_ts for s in summaries) - min(s.window_start_ts for s in summaries)
    want = span / AUTO_BUCKETS
    return next((b for b in _NICE_S if b >= want), _NICE_S[-1]) if want > 60 else 60


@dataclass
class Bucket:
    """One camera's summaries whose window ended in [start, start + length)."""

    start: float
    summaries: int = 0
    guarded_summaries: int = 0  # windows with at least one decision
    frames: int = 0  # guarded: frames with a decision
    frames_calibrating: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    corrupt: int = 0
    skipped: int = 0  # frame slots a file's timestamps skipped without a decode error
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    alarm_summaries: int = 0
    alarms: Counter[str] = field(default_factory=Counter)
    _drift: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    _conf: list[tuple[float, int]] = field(default_factory=list)

    def add(self, s: HealthSummary) -> None:
        self.summaries += 1
        self.dropped += s.frames_dropped
        self.corrupt += s.frames_corrupt
        self.skipped += s.frames_skipped
        self.reconnects += s.source_reconnects
        self.errors.update(s.errors)
        self.frames_calibrating += s.frames_calibrated
        guarded = sum(s.decisions.values())  # frames_processed also counts the calibration frames
        if guarded == 0:
            return
        self.guarded_summaries += 1
        self.frames += guarded
        self.decisions.update(s.decisions)
        self.reasons.update(s.reasons)
        self.classes.update(s.class_counts)
        if s.drift_alarms:
            self.alarm_summaries += 1
            self.alarms.update(s.drift_alarms)
        for k, v in s.drift.items():
            if math.isfinite(v):
                self._drift[k].append((v, guarded))
        if s.confidence.p50 is not None:
            self._conf.append((s.confidence.p50, guarded))

    @staticmethod
    def _mean(values: list[tuple[float, int]]) -> float | None:
        total = sum(w for _, w in values)
        return sum(v * w for v, w in values) / total if total else None

    @property
    def drift(self) -> dict[str, float]:
        """Frame-weighted mean drift score per key."""
        return {k: m for k, v in self._drift.items() if (m := self._mean(v)) is not None}

    def top_psi(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` highest PSI drift scores (``psi.*`` keys), highest first."""
        psi = [(k, v) for k, v in self.drift.items() if k.startswith("psi.")]
        return sorted(psi, key=lambda kv: -kv[1])[:n]

    @property
    def confidence_p50(self) -> float | None:
        return self._mean(self._conf)

    def rate(self, decision: str) -> float | None:
        return self.decisions.get(decision, 0) / self.frames if self.frames else None

    def as_dict(self) -> dict[str, Any]:
        psi = {k: round(v, 4) for k, v in sorted(self.drift.items(), key=lambda kv: -kv[1])}
        conf = self.confidence_p50
        return {
            "start_ts": self.start, "summaries": self.summaries, "frames": self.frames,
            "frames_calibrating": self.frames_calibrating, "flag_rate": self.rate("FLAG"),
            "block_rate": self.rate("BLOCK"), "reasons": dict(self.reasons.most_common()),
            "drift": psi,
            "drift_alarm_share": self.alarm_summaries / self.guarded_summaries if self.guarded_summaries else 0.0,
            "drift_alarms": dict(self.alarms), "confidence_p50": None if conf is None else round(conf, 4),
            "classes": dict(self.classes.most_common()), "dropped": self.dropped, "corrupt": self.corrupt,
            "skipped": self.skipped, "reconnects": self.reconnects, "errors": dict(self.errors),
        }


def _shares(c: Counter[str]) -> dict[str, float]:
    total = sum(c.values())
    return {k: v / total for k, v in c.items()} if total else {}


def total_variation(a: Counter[str], b: Counter[str]) -> float | None:
    """Half the L1 distance between two class mixes (0 = same mix, 1 = disjoint); None if one is empty.

    >>> total_variation(Counter(car=1, person=1), Counter(car=3, person=1))
    0.25
    """
    sa, sb = _shares(a), _shares(b)
    if not sa or not sb:
        return None
    return 0.5 * sum(abs(sa.get(k, 0.0) - sb.get(k, 0.0)) for k in set(sa) | set(sb))


@dataclass
class CameraReport:
    """One camera's buckets and the comparison of its first and last guarded bucket."""

    camera_id: str
    bucket_s: int
    buckets: list[Bucket]
    seq_gaps: int
    restarts: int
    profiles: list[str]

    @property
    def guarded(self) -> list[Bucket]:
        return [b for b in self.buckets if b.frames > 0]

    def changes(self) -> dict[str, Any]:
        """First vs last guarded bucket: rates, confidence, class mix, the statistics drifting most."""
        g = self.guarded
        if not g:
            return {}
        first, last = g[0], g[-1]
        sf, sl = _shares(first.classes), _shares(last.classes)
        moved = sorted(set(sf) | set(sl), key=lambda k: -abs(sl.get(k, 0.0) - sf.get(k, 0.0)))[:3]
        return {
            "first_bucket_ts": first.start, "last_bucket_ts": last.start,
            "flag_rate": [first.rate("FLAG"), last.rate("FLAG")],
            "block_rate": [first.rate("BLOCK"), last.rate("BLOCK")],
            "confidence_p50": [first.confidence_p50, last.confidence_p50],
            "class_mix_total_variation": total_variation(first.classes, last.classes),
            "classes_moved": {k: [round(sf.get(k, 0.0), 4), round(sl.get(k, 0.0), 4)] for k in moved},
            "top_drift_last_bucket": dict(last.top_psi(5)),
            "drift_alarm_share_overall": (
                sum(b.alarm_summaries for b in g) / max(1, sum(b.guarded_summaries for b in g))
            ),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "camera_id": self.camera_id, "bucket_s": self.bucket_s, "seq_gaps": self.seq_gaps,
            "restarts": self.restarts, "profiles": self.profiles,
            "frames": sum(b.frames for b in self.buckets), "changes": self.changes(),
            "buckets": [b.as_dict() for b in self.buckets],
        }


def _seq_accounting(summaries: Sequence[HealthSummary]) -> tuple[int, int]:
    """(missing summaries, restarts) from one camera's seq numbers in time order."""
    gaps = restarts = 0
    prev: int | None = None
    for s in summaries:
        if prev is not None:
            if s.seq <= prev:
                restarts += 1
                gaps += s.seq  # a restart's first summary is seq 0
            else:
                gaps += s.seq - prev - 1
        prev = s.seq
    return gaps, restarts


def build_reports(summaries: Sequence[HealthSummary], bucket_s: int | None = None,
                  camera: str | None = None) -> list[CameraReport]:
    """Bucket ``summaries`` per camera (``bucket_s`` seconds; None: ``auto_bucket_s``)."""
    chosen = [s for s in summaries if camera is None or s.camera_id == camera]
    if not chosen:
        if camera is None:
            raise ConfigError("report: no summaries")
        found = ", ".join(sorted({s.camera_id for s in summaries}))
        raise ConfigError(f"report: no health summaries of camera {camera!r} (--camera); these hold: {found}")
    length = bucket_s if bucket_s is not None else auto_bucket_s(chosen)
    per_camera: dict[str, list[HealthSummary]] = defaultdict(list)
    for s in sorted(chosen, key=lambda s: (s.window_end_ts, s.seq)):
        per_camera[s.camera_id].append(s)
    reports = []
    for cam, items in sorted(per_camera.items()):
        buckets: dict[int, Bucket] = {}
        for s in items:
            k = int(s.window_end_ts // length)
            buckets.setdefault(k, Bucket(start=float(k * length))).add(s)
        gaps, restarts = _seq_accounting(items)
        profiles = list(dict.fromkeys(s.profile_id for s in items if s.profile_id))
        reports.append(CameraReport(cam, length, [buckets[k] for k in sorted(buckets)], gaps, restarts, profiles))
    return reports
