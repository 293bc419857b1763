"""Drift over windows: distances to the profile for health summaries, and sequential alarms.

**Window distances (reported, not alarmed).** For every transformed statistic (observation
FEATURES) and, with a model, the confidence, detections per frame, mean detection score,
the class frequency and the spatial grid of detections, the last ``window`` frames are
binned against the profile and compared with the population stability index

    PSI = sum_b (o_b - e_b) ln(o_b / e_b)

Continuous quantities use the calibration quantiles at 5, 25, 50, 75 and 95 % as bin edges
(equal edges merged, so a point mass such as "no clipped pixels" is one bin) and the
calibration frames' share per bin as e (``Profile.drift_bins``); classes use the profile's top-1 frequencies
(the 8 most frequent classes plus "other"), detections the profile's box-centre grid. Window
shares o_b are smoothed by half a count per bin, so an empty bin gives a finite PSI.
Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 large shift.

**Sequential alarms (``Cusum``).** Per frame, the surprise x_t = min(-ln p_t, 5) (``SURPRISE_CAP``) of a
p-value stream: ``stats`` uses the family-wise p-value of the frame (every enabled test),
``model`` the smallest p-value of the model-output tests. A one-sided CUSUM

    S_t = max(0, S_{t-1} + x_t - (mu0 + k)),     alarm while S_t > h

accumulates surprise above the clean mean mu0 plus an allowance k (``allowance``, in nats:
k = 1 ignores a stretch whose p-values are up to e times smaller than clean ones on average,
the kind of slow change a short calibration clip does not show, e.g. more people in view).
mu0 is the calibration frames' mean surprise, but at least 1 nat: a valid p-value of a clean
frame is (super-)uniform, so E[-ln p] <= 1 whatever the calibration; the tolerances make most
calibration p-values near 1 (mean surprise 0.1-0.4), and a reference that low let one
unusual scene episode of a few seconds (p ~ 0.2 throughout: a crowd a 40 s calibration never
saw) reach the alarm on clean footage. The alarm thus tests whether the p-values stopped
being uniform, on average e^-k times smaller than uniform ones. Consecutive frames are
correlated, so an i.i.d. threshold would fire every few seconds on real video. Instead h is
set by a **moving-block bootstrap** of the calibration frames' *out-of-block* surprises (each
calibration frame scored against the other, distant blocks: what a new stretch of clean
video looks like): ``R`` streams of ``H`` frames are glued from random runs of ``block``
consecutive calibration frames, and h is the quantile of the streams' max S_t at which the
share of streams with an alarm within H frames equals 1 - exp(-H / ARL0), ARL0 =
``false_alarm_frames`` (renewal approximation), and at least 0.2 nats per frame of the window
(``MIN_EVIDENCE_PER_FRAME``): a calibration clip whose surprise never exceeds mu0 + k would
otherwise give h ~ 0. In alarm, S_t is capped at h, and the alarm clears when S_t returns to 0
(about h / k frames after the change ends).

>>> rng = np.random.default_rng(7)
>>> c = Cusum(threshold=8.0, mu0=1.0, allowance=0.5)
>>> xs = np.concatenate([rng.exponential(1.0, 300), rng.exponential(3.0, 100)])
>>> [i for i, x in enumerate(xs) if c.update(float(x)).changed and c.drift_detected]
[309]
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt

from agent.scoring.config import DriftConfig
from agent.scoring.observation import FEATURES, Observation
from agent.scoring.profile import Profile

__all__ = [
    "MIN_EVIDENCE_PER_FRAME",
    "SURPRISE_CAP",
    "UNIFORM_SURPRISE",
    "Cusum",
    "DriftEvent",
    "DriftMonitor",
    "DriftSnapshot",
    "bootstrap_threshold",
    "psi",
]

FloatArray = npt.NDArray[np.float64]

#: Per-frame surprise -ln p is capped here (p = 0.0067): one extreme frame is a fault, not drift.
SURPRISE_CAP: float = 5.0
#: E[-ln p] of a uniform p-value: the least clean mean surprise mu0 the CUSUM assumes.
UNIFORM_SURPRISE: float = 1.0
#: The CUSUM threshold is at least this many nats per frame of the window (0.2 x 250 = 50 nats:
#: some 13 frames of capped surprise), so drift needs a sustained change, not a short fault.
MIN_EVIDENCE_PER_FRAME: float = 0.2
_TOP_CLASSES = 8


def psi(observed: npt.ArrayLike, expected: npt.ArrayLike) -> float:
    """Population stability index of counts ``observed`` against shares ``expected`` (half-count smoothing)."""
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if o.shape != e.shape or o.ndim != 1:
        raise ValueError(f"observed and expected must be 1-D of one length, but got {o.shape} and {e.shape}")
    o = (o + 0.5) / (o.sum() + 0.5 * o.size)
    e = np.clip(e / max(float(e.sum()), 1e-12), 1e-6, None)
    return float(((o - e) * np.log(o / e)).sum())


class Cusum:
    """One-sided CUSUM on a surprise stream (river style; see the module docstring)."""

    def __init__(self, threshold: float, mu0: float = 1.0, allowance: float = 0.5) -> None:
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number > 0, but got {threshold}")
        if not (mu0 >= 0 and allowance > 0):
            raise ValueError(f"mu0 and allowance must be > 0, but got {mu0}, {allowance}")
        self.threshold = threshold
        self.reference = mu0 + allowance
        self._s = 0.0
        self._alarm = False
        self._changed = False

    def update(self, x: float) -> Self:
        """Add one surprise value (NaN is ignored)."""
        was = self._alarm
        if not math.isnan(x):
            self._s = max(0.0, self._s + min(x, SURPRISE_CAP) - self.reference)
            if self._s > self.threshold:
                self._alarm = True
                self._s = self.threshold  # capped: once the change ends, S returns to 0 within h / k frames
            elif self._s == 0.0:
                self._alarm = False
        self._changed = self._alarm != was
        return self

    def reset(self) -> None:
        self._s, self._alarm, self._changed = 0.0, False, False

    @property
    def statistic(self) -> float:
        """S_t."""
        return self._s

    @property
    def drift_detected(self) -> bool:
        """True while in alarm (from S_t > h until S_t returns to 0; S_t is capped at h meanwhile)."""
        return self._alarm

    @property
    def changed(self) -> bool:
        """True when the last update raised or cleared the alarm."""
        return self._changed


def bootstrap_threshold(
    surprise: npt.ArrayLike,
    *,
    block: int,
    mu0: float,
    allowance: float,
    false_alarm_frames: float,
    horizon: int = 4000,
    replicates: int = 300,
    seed: int = 0,
) -> float:
    """CUSUM threshold h from a moving-block bootstrap of calibration surprises (module docstring)."""
    x = np.minimum(np.asarray(surprise, dtype=np.float64), SURPRISE_CAP)
    x = x[~np.isnan(x)]
    if x.size < 2:
        raise ValueError(f"bootstrap_threshold needs at least 2 surprise values, but got {x.size}")
    block = max(1, min(block, x.size))
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(horizon / block)
    starts = rng.integers(0, x.size - block + 1, size=(replicates, n_blocks))  # (R, B)
    idx = (starts[:, :, None] + np.arange(block)).reshape(replicates, -1)[:, :horizon]  # (R, H)
    inc = x[idx] - (mu0 + allowance)  # (R, H)
    s = np.zeros(replicates)
    peak = np.zeros(replicates)
    for t in range(inc.shape[1]):  # vectorised over replicates
        s = np.maximum(0.0, s + inc[:, t])
        np.maximum(peak, s, out=peak)
    p_alarm = 1.0 - math.exp(-horizon / false_alarm_frames)
    return float(np.quantile(peak, 1.0 - p_alarm))


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A sequential drift alarm raised (``start``) or cleared (``end``) at frame ``seq`` of ``camera_id``."""

    camera_id: str
    detector: str
    lifecycle: str
    seq: int
    capture_ts: float
    statistic: float
    threshold: float

    def to_dict(self) -> dict[str, object]:
        return {"type": "drift", "camera_id": self.camera_id, "detector": self.detector,
                "lifecycle": self.lifecycle, "seq": self.seq, "capture_ts": self.capture_ts,
                "statistic": self.statistic, "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class DriftSnapshot:
    """What a health summary takes: ``scores`` -> HealthSummary.drift, ``alarms`` -> drift_alarms."""

    scores: dict[str, float]
    alarms: list[str]
    frames: int


class _Binned:
    """Sliding-window bin counts of one quantity."""

    def __init__(self, expected: npt.ArrayLike, window: int) -> None:
        self.expected = np.asarray(expected, dtype=np.float64)
        self.counts = np.zeros(self.expected.size, dtype=np.int64)
        self.recent: deque[int] = deque()
        self.window = window

    def add(self, b: int) -> None:
        self.recent.append(b)
        self.counts[b] += 1
        if len(self.recent) > self.window:
            self.counts[self.recent.popleft()] -= 1

    def psi(self) -> float:
        return psi(self.counts, self.expected) if self.recent else math.nan


class DriftMonitor:
    """Window PSIs and sequential alarms for one camera (thread-safe snapshot; module docstring).

    ``surprise_stats`` / ``surprise_model``: the calibration frames' out-of-block surprises in
    time order (the policy computes them), from which the CUSUM thresholds are bootstrapped.
    """

    def __init__(
        self,
        profile: Profile,
        cfg: DriftConfig | None = None,
        *,
        surprise_stats: Sequence[float] = (),
        surprise_model: Sequence[float] = (),
    ) -> None:
        self.cfg = cfg if cfg is not None else DriftConfig()
        self._lock = threading.Lock()
        self._frames = 0
        self._events: list[DriftEvent] = []
        w = self.cfg.window
        self._continuous: dict[str, tuple[list[float], _Binned]] = {
            name: (bins.edges, _Binned(bins.shares, w)) for name, bins in profile.drift_bins.items()
        }
        model = profile.model
        self._classes: list[str] = []
        self._class_bins: _Binned | None = None
        if model is not None and model.top1_counts:
            top = Counter(model.top1_counts).most_common(_TOP_CLASSES)
            self._classes = [k for k, _ in top]
            other = sum(model.top1_counts.values()) - sum(v for _, v in top)
            self._class_bins = _Binned([*(v for _, v in top), other], w)
        self._cells: _Binned | None = None
        if model is not None and model.detection_cells and sum(model.detection_cells) > 0:
            self._cells = _Binned(model.detection_cells, w)
        self.cusums: dict[str, Cusum] = {}
        for name, series in (("stats", surprise_stats), ("model", surprise_model)):
            x = np.asarray(series, dtype=np.float64)
            x = x[~np.isnan(x)]
            if x.size >= 20:
                mu0 = max(float(np.minimum(x, SURPRISE_CAP).mean()), UNIFORM_SURPRISE)
                h = bootstrap_threshold(x, block=profile.block, mu0=mu0, allowance=self.cfg.allowance,
                                        false_alarm_frames=self.cfg.false_alarm_frames)
                h = max(h, MIN_EVIDENCE_PER_FRAME * self.cfg.window)
                self.cusums[name] = Cusum(h, mu0, self.cfg.allowance)

    # --- streaming ------------------------------------------------------------------------
    def update(
        self,
        obs: Observation,
        surprise: Mapping[str, float],
        seq: int = 0,
        capture_ts: float = 0.0,
        camera_id: str = "",
    ) -> Self:
        """Add one frame: its Observation and {detector: -ln p} for the sequential alarms."""
        with self._lock:
            self._frames += 1
            for name, (edges, bins) in self._continuous.items():
                value = self._value(obs, name)
                if not math.isnan(value):
                    bins.add(int(np.searchsorted(edges, value, side="right")))
            m = obs.model
            if m is not None and self._class_bins is not None:
                key = str(m.top1)
                self._class_bins.add(self._classes.index(key) if key in self._classes else len(self._classes))
            if m is not None and m.boxes is not None and self._cells is not None:
                for cell, count in enumerate(m.boxes.cells):
                    for _ in range(count):
                        self._cells.add(cell)
            for name, cusum in self.cusums.items():
                x = surprise.get(name, math.nan)
                if cusum.update(x).changed:
                    self._events.append(DriftEvent(camera_id, name, "start" if cusum.drift_detected else "end", seq,
                                                   capture_ts, cusum.statistic, cusum.threshold))
        return self

    @staticmethod
    def _value(obs: Observation, name: str) -> float:
        if name in FEATURES:
            return float(obs.features[FEATURES.index(name)])
        m = obs.model
        if m is None:
            return math.nan
        if name == "confidence":
            return m.confidence
        if name == "detections":
            return math.nan if m.detections is None else float(m.detections)
        return math.nan if m.boxes is None else m.boxes.mean_score

    def reset(self) -> None:
        with self._lock:
            for cusum in self.cusums.values():
                cusum.reset()

    # --- reading (any thread) ---------------------------------------------------------------
    def snapshot(self) -> DriftSnapshot:
        """Current window PSIs, CUSUM statistics (as S/h) and the detectors in alarm."""
        with self._lock:
            scores = {f"psi.{k}": bins.psi() for k, (_, bins) in self._continuous.items()}
            if self._class_bins is not None:
                scores["psi.classes"] = self._class_bins.psi()
            if self._cells is not None:
                scores["psi.detection_cells"] = self._cells.psi()
            for name, c in self.cusums.items():
                scores[f"cusum.{name}"] = c.statistic / c.threshold
            alarms = [name for name, c in self.cusums.items() if c.drift_detected]
            clean = {k: round(v, 6) for k, v in scores.items() if not math.isnan(v)}
            return DriftSnapshot(scores=clean, alarms=alarms, frames=self._frames)

    def pop_events(self) -> list[DriftEvent]:
        """Drift alarms raised or cleared since the last call (oldest first)."""
        with self._lock:
            out, self._events = self._events, []
            return out
