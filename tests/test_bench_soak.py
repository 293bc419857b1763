"""benchmarks/bench_soak.py: its delivery accounting by hand, and a short real run (daemon + mosquitto + outage)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from mosquitto import Received, mosquitto_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_soak import PREFIX, Sample, delivery, main, rss_check, slope_mb_per_h, slope_window_s


def _json(kind: str, msg_id: str, seq: int, **extra: object) -> Received:
    body = {"type": kind, "msg_id": msg_id, "seq": seq, "camera_id": "cam0", "ts": 0.0, **extra}
    return Received(f"{PREFIX}/cam0/x", json.dumps(body).encode(), False, {}, "application/json", None, 0.0)


def test_delivery_counts_redeliveries_once_and_gaps_per_stream() -> None:
    msgs = [
        _json("event", "r-1", 0),
        _json("event", "r-2", 1),
        _json("event", "r-2", 1),  # QoS 1 re-delivery: not a new message
        _json("event", "r-4", 3),  # seq 2 never arrived
        _json("health", "r-3", 0, summary={"seq": 0}),
        _json("health", "r-5", 1, summary={"seq": 1}),
        Received(f"{PREFIX}/cam0/frames/e1", b"\xff\xd8", False, {"msg_id": "r-6", "seq": "1200"}, "image/jpeg",
                 None, 0.0),
    ]
    d = delivery(msgs)
    assert (d["messages"], d["unique"], d["duplicates"]) == (7, 6, 1)
    assert d["seq_gaps"] == {"event/cam0": 1, "health/cam0": 0} and d["lost"] == 1
    assert d["streams"]["frame"] == 1  # counted, not gap-checked (a frame's seq is its video frame number)
    assert (d["health_summaries"], d["health_seq_gaps"]) == (2, 0)
    # A stream whose first messages are missing is a gap too.
    assert delivery([_json("event", "a", 2)])["lost"] == 2


def test_status_gaps_are_lost_only_beyond_what_the_spool_superseded() -> None:
    """A camera status queued in the outage that a newer one replaced leaves a seq gap that is not a
    loss, as many as the spool counted ``superseded``; an event gap always is."""
    msgs = [_json("camera_status", "s-1", 0), _json("camera_status", "s-3", 2), _json("camera_status", "s-6", 5),
            _json("event", "e-1", 1)]
    assert delivery(msgs)["lost"] == 4  # nothing superseded: every gap is a loss
    d = delivery(msgs, superseded=2)
    assert (d["superseded"], d["lost"]) == (2, 2)  # 3 status gaps, 2 explained; the event's gap stays
    assert delivery(msgs, superseded=9)["lost"] == 1  # more superseded than gaps explains the status gaps only


def test_slope_is_fitted_after_the_warm_up_only() -> None:
    samples = [Sample(t, 100.0 + (50.0 if t < 60 else 0.0) + 2.0 * t / 3600, 9, 8, 0.0) for t in range(0, 600, 10)]
    assert slope_mb_per_h(samples, 60.0) == pytest.approx(2.0)
    assert math.isnan(slope_mb_per_h(samples, 590.0))  # too few samples after the warm-up


def test_rss_growth_is_judged_only_on_a_long_enough_window() -> None:
    """A 2-minute run's one-minute window extrapolates a 1.8 MB step to +108 MB/h: printed, not failed."""
    samples = [Sample(float(t), 100.0, 9, 8, 0.0) for t in range(0, 600, 10)]
    assert slope_window_s(samples, 60.0) == 530.0 and slope_window_s(samples, 595.0) == 0.0
    line, ok = rss_check(108.0, 60.0, 10.0)
    assert ok is None and "60 s after the warm-up are too few" in line and "--minutes 5" in line
    assert rss_check(float("nan"), 0.0, 10.0)[1] is None
    assert rss_check(108.0, 530.0, 10.0) == ("RSS growth after warm-up <= 10 MB/h", False)
    assert rss_check(2.0, 240.0, 10.0) == ("RSS growth after warm-up <= 10 MB/h", True)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto / mosquitto_passwd not installed")
def test_short_soak_with_a_broker_outage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The user's config is soaked with its camera and source; its own broker (unreachable here)
    and file sink are replaced by the soak's broker."""
    user = tmp_path / "yard.yaml"
    user.write_text("""camera_id: yard
source:
  uri: synthetic://default?seed=3
file_sink:
  dir: /nonexistent/out
mqtt:
  host: broker.invalid
  port: 8883
""")
    out = tmp_path / "soak.json"
    code = main(["--config", str(user), "--minutes", "0.75", "--outage-s", "8", "--sample-s", "3", "--quiet",
                 "--out", str(out), "--plot", str(tmp_path / "soak.png")])
    text = capsys.readouterr().out
    assert code == 0, text
    r = json.loads(out.read_text())
    assert r["exit_code"] == 0 and not r["crashed"] and r["spool_left"] == 0
    assert r["delivery"]["lost"] == 0 and r["delivery"]["health_seq_gaps"] == 0
    assert r["delivery"]["streams"]["health/yard"] >= 5 and r["frames_guarded"] > 300
    assert (r["source"], r["fps"], r["last_camera_status"]) == ("synthetic://default?seed=3", 25.0, "offline")
    assert r["outage"]["messages_spooled"] >= 1  # a health summary at least was created while it was down
    assert "[n/a ] RSS growth" in text  # 45 s are within the one-minute warm-up
    assert (tmp_path / "soak.png").stat().st_size > 1000
