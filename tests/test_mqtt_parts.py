"""MQTT pieces without a broker: config, topics, episodes, frames, commands, credentials, schemas."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import random
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from mosquitto import free_port
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from agent.credentials import read_configured_secret
from agent.errors import ConfigError, ProfileError
from agent.frame import Frame
from agent.sinks.mqtt.commands import CommandProcessor, IncomingCommand, sign_request, verify_signature
from agent.sinks.mqtt.config import CommandsConfig, EventsConfig, MqttConfig, TlsConfig
from agent.sinks.mqtt.connection import SESSION_TAKEN_OVER, STABLE_SESSION_S
from agent.sinks.mqtt.episodes import EpisodeTracker
from agent.sinks.mqtt.frames import DailyBudget, Reservoir, encode_jpeg
from agent.sinks.mqtt.identity import AgentIdentity
from agent.sinks.mqtt.loadgen import FakeTarget, synthetic
from agent.sinks.mqtt.schemas import CommandRequest, SetThresholdsArgs
from agent.sinks.mqtt.sink import MqttSink
from agent.sinks.mqtt.tail import FleetView
from agent.sinks.mqtt.topics import Topics, acl_example
from agent.tokenbucket import TokenBucket
from agent.verdict import Decision, Reason, Verdict

DoesNotRaise = contextlib.nullcontext


# -- config ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expect"),
    [
        ({"host": "b"}, DoesNotRaise()),  # minimal
        ({"host": "b", "password_file": "/p"}, pytest.raises(ValidationError, match="password must be provided")),
        ({"host": "b", "username": "u", "password_file": "/p", "password_credential": "pw"},
         pytest.raises(ValidationError, match="either password_file or password_credential")),
        ({"host": "b", "reconnect_min_s": 10, "reconnect_max_s": 1}, pytest.raises(ValidationError, match="<=")),
        ({"host": "b", "will_delay_s": 60, "session_expiry_s": 30},
         pytest.raises(ValidationError, match="session_expiry_s")),
        ({"host": "b", "prefix": "a/+/b"}, pytest.raises(ValidationError, match="no wildcards")),
        ({"host": "b", "prefix": "/a"}, pytest.raises(ValidationError, match="levels")),
        ({"host": "b", "bogus": 1}, pytest.raises(ValidationError, match="Extra inputs")),
        ({"host": "b", "commands": {"require_signature": True}}, pytest.raises(ValidationError, match="needs a key")),
        ({"host": "b", "frames": {"jpeg_quality": 30, "min_quality": 50}},
         pytest.raises(ValidationError, match="min_quality")),
        ({"host": "b", "tls": {"ca_file": "/ca", "cert_file": "/c"}}, pytest.raises(ValidationError, match="both")),
        ({"host": "b", "spool": {"max_bytes": 10}}, pytest.raises(ValidationError, match="greater than or equal")),
    ],
)
def test_config_validation(data: dict[str, Any], expect: Any) -> None:
    with expect:
        MqttConfig.model_validate(data)


def test_tls_config_key_from_credential() -> None:
    t = TlsConfig.model_validate({"ca_file": "/ca", "cert_file": "/c", "key_credential": "tls-key"})
    assert t.key_credential == "tls-key"


# -- topics ------------------------------------------------------------------------------------------
def test_topics_build_and_parse() -> None:
    t = Topics("edge-guard/v1", "plant1", "box7")
    cases = {
        t.node_status: ("status", None, None),
        t.camera_status("cam0"): ("camera_status", "cam0", None),
        t.health("cam0"): ("health", "cam0", None),
        t.events("cam0"): ("events", "cam0", None),
        t.frames("cam0", "cam0-1a-3"): ("frames", "cam0", "cam0-1a-3"),
        t.command("ping"): ("cmd", None, "ping"),
        t.command_response("ping"): ("cmd_response", None, "ping"),
    }
    for topic, (kind, cam, name) in cases.items():
        p = t.parse(topic)
        assert p is not None and (p.kind, p.camera, p.name, p.site, p.node) == (kind, cam, name, "plant1", "box7")
    assert t.parse("other/v1/a/b/status") is None
    assert t.command_filter == "edge-guard/v1/plant1/box7/cmd/+"


@pytest.mark.parametrize("camera", ["cmd", "status", "a/b", "a+b", ""])
def test_topics_reject_bad_camera_ids(camera: str) -> None:
    with pytest.raises(ConfigError):
        Topics("edge-guard/v1", "s", "n").health(camera)


def test_acl_example_names_every_agent_topic() -> None:
    acl = acl_example()
    for needle in ("pattern write edge-guard/v1/+/%u/+/frames/+", "pattern read edge-guard/v1/+/%u/cmd/+",
                   "topic write edge-guard/v1/+/+/cmd/+"):
        assert needle in acl


# -- episodes ----------------------------------------------------------------------------------------
def test_episode_lifecycle_golden() -> None:
    tr = EpisodeTracker("cam0", EventsConfig(end_after_clean_frames=3, gap_s=5.0, update_interval_s=100.0))
    stream: list[tuple[str | None, Decision]] = [
        (None, Decision.PASS), ("dark", Decision.FLAG), ("dark", Decision.FLAG), ("dark", Decision.BLOCK),
        (None, Decision.PASS), ("dark", Decision.FLAG), (None, Decision.PASS), (None, Decision.PASS),
        (None, Decision.PASS), ("blur", Decision.FLAG), ("dark", Decision.FLAG), (None, Decision.PASS),
    ]
    got: list[tuple[int, str, str, str | None]] = []
    ids: list[str] = []
    for seq, (fault, decision) in enumerate(stream):
        v, f = synthetic("cam0", seq, fault, decision)
        for t in tr.update(v, f, now_mono=float(seq)):
            got.append((seq, t.lifecycle, ",".join(t.episode.reason_codes), t.end_reason))
            ids.append(t.episode.event_id)
    got += [(99, t.lifecycle, ",".join(t.episode.reason_codes), t.end_reason) for t in tr.finish("shutdown")]
    assert got == [
        (1, "new", "dark", None),
        (3, "update", "dark", None),  # escalation FLAG -> BLOCK
        (8, "end", "dark", "clean"),  # the clean run restarted at seq 5
        (9, "new", "blur", None),
        (10, "end", "blur", "reasons_changed"),
        (10, "new", "dark", None),
        (99, "end", "dark", "shutdown"),
    ]
    assert ids[0] == ids[1] == ids[2] and len(set(ids)) == 3


def test_episode_gap_and_worst_frame() -> None:
    tr = EpisodeTracker("c", EventsConfig(end_after_clean_frames=3, gap_s=2.0, update_interval_s=1.0))
    v1, f1 = synthetic("c", 1, "dark", Decision.FLAG)
    v2, f2 = synthetic("c", 2, "dark", Decision.BLOCK)
    v3, f3 = synthetic("c", 3, "dark", Decision.FLAG)
    tr.update(v1, f1, 0.0)
    assert [t.lifecycle for t in tr.update(v2, f2, 0.5)] == ["update"]
    assert [t.lifecycle for t in tr.update(v3, f3, 1.6)] == ["update"]  # periodic update
    assert tr.current is not None and tr.current.worst.seq == 2 and tr.current.frames == 3
    assert tr.tick(3.0) == []
    ended = tr.tick(3.7)
    assert [(t.lifecycle, t.end_reason) for t in ended] == [("end", "gap")]
    assert ended[0].episode.worst_frame is f2



def risky(seq: int, codes: str, decision: Decision = Decision.FLAG) -> tuple[Verdict, Frame]:
    """A synthetic risky frame of camera ``c`` whose reasons are ``codes`` ("blur+ood_model")."""
    first, *more = codes.split("+")
    v, f = synthetic("c", seq, first, decision)
    extra = tuple(Reason(code, decision, 4.0, 1e-3) for code in more)
    return replace(v, reasons=v.reasons + extra, scores={**v.scores, **{r.code: r.score for r in extra}},
                   p_values={**v.p_values, **{r.code: 1e-3 for r in extra}}), f


def run_episodes(tr: EpisodeTracker, stream: list[str | None], times: list[float] | None = None,
                 decisions: list[Decision] | None = None) -> list[tuple[int, str, str, int, str | None]]:
    """Feed ``stream`` (reason codes per frame, None = PASS); (seq, lifecycle, codes, update_seq, end_reason)."""
    got: list[tuple[int, str, str, int, str | None]] = []
    for seq, codes in enumerate(stream):
        decision = Decision.PASS if codes is None else (decisions[seq] if decisions else Decision.FLAG)
        v, f = synthetic("c", seq, None, Decision.PASS) if codes is None else risky(seq, codes, decision)
        for t in tr.update(v, f, now_mono=times[seq] if times else float(seq)):
            got.append((seq, t.lifecycle, ",".join(t.episode.reason_codes), t.episode.update_seq, t.end_reason))
    return got


def test_episode_flickering_secondary_reason_is_one_episode() -> None:
    tr = EpisodeTracker("c", EventsConfig(end_after_clean_frames=3, gap_s=5.0, update_interval_s=100.0))
    flicker: list[str | None] = ["blur", "blur+ood_model"] * 4 + [None, None, None]
    got = run_episodes(tr, flicker)
    assert got == [
        (0, "new", "blur", 0, None),
        (1, "update", "blur,ood_model", 1, None),  # the added reason, at once; the flicker back is silent
        (10, "end", "blur,ood_model", 2, "clean"),
    ]
    assert tr.current is None


def test_episode_overlap_continues_disjoint_opens_next() -> None:
    tr = EpisodeTracker("c", EventsConfig(end_after_clean_frames=3, gap_s=5.0, update_interval_s=100.0))
    stream: list[str | None] = [
        "blur", "blur+ood_model", "ood_model",  # ood_model alone still overlaps the union: same episode
        "dark",  # disjoint from {blur, ood_model}: the next episode
        "dark+patch", "ood_model",  # ood_model is disjoint from {dark, patch}: the next one again
    ]
    got = run_episodes(tr, stream)
    assert got == [
        (0, "new", "blur", 0, None),
        (1, "update", "blur,ood_model", 1, None),
        (3, "end", "blur,ood_model", 2, "reasons_changed"),
        (3, "new", "dark", 0, None),
        (4, "update", "dark,patch", 1, None),
        (5, "end", "dark,patch", 2, "reasons_changed"),
        (5, "new", "ood_model", 0, None),
    ]


def test_episode_escalation_and_new_reason_in_one_frame_is_one_update() -> None:
    tr = EpisodeTracker("c", EventsConfig(end_after_clean_frames=2, gap_s=5.0, update_interval_s=100.0))
    stream: list[str | None] = ["blur", "blur+ood_model", "blur", "blur+ood_model", "blur", None, None]
    decisions = [Decision.FLAG, Decision.BLOCK] + [Decision.FLAG] * 5
    got = run_episodes(tr, stream, decisions=decisions)
    assert got == [(0, "new", "blur", 0, None), (1, "update", "blur,ood_model", 1, None),
                   (6, "end", "blur,ood_model", 2, "clean")]


def test_episode_new_reason_restarts_the_update_interval() -> None:
    tr = EpisodeTracker("c", EventsConfig(end_after_clean_frames=3, gap_s=5.0, update_interval_s=1.0))
    got = run_episodes(tr, ["blur", "blur+ood_model", "blur", "blur", "blur+patch"], times=[0.0, 0.5, 1.2, 1.6, 1.7])
    assert got == [
        (0, "new", "blur", 0, None),
        (1, "update", "blur,ood_model", 1, None),  # added reason: not held back by the interval
        (3, "update", "blur,ood_model", 2, None),  # periodic, 1.0 s after the previous update (not at 1.2)
        (4, "update", "blur,ood_model,patch", 3, None),
    ]
    assert tr.current is not None and tr.current.frames == 5 and tr.current.start_seq == 0

# -- frames ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("w", "h", "cap"), [(1920, 1080, 128 * 1024), (1920, 1080, 4096), (640, 480, 200_000)])
def test_jpeg_under_byte_cap(w: int, h: int, cap: int) -> None:
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: worst case for JPEG
    j = encode_jpeg(img, cap, 1280, 85, 35)
    assert len(j.data) <= cap and j.width <= 1280
    decoded = cv2.imdecode(np.frombuffer(j.data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (j.height, j.width, 3)


def test_token_bucket_and_daily_budget() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=0.1, burst=2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] = 10.0
    assert bucket.take() and not bucket.take()
    store: dict[str, str] = {}
    wall = [86400.0 * 100 + 10]
    budget = DailyBudget(1000, lambda: store.get("b"), lambda v: store.__setitem__("b", v), clock=lambda: wall[0])
    assert budget.allow(600) and not budget.allow(600) and budget.allow(400)
    again = DailyBudget(1000, lambda: store.get("b"), lambda v: store.__setitem__("b", v), clock=lambda: wall[0])
    assert not again.allow(1), "the day's usage survives a restart"
    wall[0] += 86400
    assert again.allow(900), "a new UTC day has a fresh budget"


def test_reservoir_hourly() -> None:
    res = Reservoir(2, random.Random(1))
    img = np.zeros((4, 4, 3), np.uint8)
    hour0 = 3600.0 * 1000
    out: list[Frame] = []
    for i in range(100):
        out += res.offer(Frame(img, "c", i, hour0 + i, 0.0))
    assert out == []
    out = res.offer(Frame(img, "c", 100, hour0 + 3600, 0.0))
    assert len(out) == 2 and all(f.capture_ts < hour0 + 3600 for f in out)


# -- commands ----------------------------------------------------------------------------------------
KEY = b"k" * 32
TOPIC = "edge-guard/v1/s/n/cmd/"


def run_cmd(name: str, payload: Any, *, key: bytes | None = None, require: bool = False, sign: bool = False,
            target: Any = "default") -> tuple[str, str | None]:
    cfg = CommandsConfig(require_signature=require, hmac_key_file=Path("/unused") if require else None)
    proc = CommandProcessor(cfg, key, snapshot_interval_s=0.0)
    if isinstance(payload, dict) and sign:
        payload = sign_request(KEY, TOPIC + name, payload)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    tgt = FakeTarget() if target == "default" else target
    if tgt is not None and hasattr(tgt, "last"):
        tgt.last = synthetic("cam0", 5, None, Decision.PASS)[1]
    out = proc.handle(IncomingCommand(TOPIC + name, name, raw, b"c"), tgt)
    return out.status, out.reason


@pytest.mark.parametrize(
    ("name", "payload", "status", "why"),
    [
        ("ping", {"id": "1"}, "ok", None),
        ("ping", b"", "rejected", "invalid request"),  # empty payload: id is required
        ("set-thresholds", {"id": "2", "args": {"alpha_flag": 0.01, "alpha_block": 0.001}}, "ok", None),
        ("set-thresholds", {"id": "3", "args": {"alpha_flag": "0.01", "alpha_block": 0.001}}, "rejected",
         "valid number"),  # strict: a string is not a number
        ("set-thresholds", {"id": "4", "args": {"alpha_flag": 0.001, "alpha_block": 0.01}}, "rejected", "<="),
        ("set-thresholds", {"id": "5", "args": {"alpha_flag": 2, "alpha_block": 0.1}}, "rejected", "invalid args"),
        ("reload-profile", {"id": "6"}, "ok", None),
        ("snapshot", {"id": "7"}, "ok", None),
        ("snapshot", {"id": "8", "args": {"camera_id": "other"}}, "rejected", "unknown camera"),
        ("ping", {"id": "9", "args": {"x": 1}}, "rejected", "Extra inputs"),
        ("reboot", {"id": "10"}, "rejected", "unknown command"),
        ("ping", b"\xff\xfe\x00garbage", "rejected", "not UTF-8 JSON"),
        ("ping", b"[1, 2]", "rejected", "JSON object"),
        ("ping", {"id": "a b"}, "rejected", "invalid request"),
        ("ping", {"id": 5}, "rejected", "invalid request"),
        ("ping", b"{" * 9000, "rejected", "exceeds"),
        ("limits", {"id": "11"}, "ok", None),
        ("limits", {"id": "12", "args": {"alpha_flag": 0.1}}, "rejected", "Extra inputs"),
    ],
)
def test_command_rejections(name: str, payload: Any, status: str, why: str | None) -> None:
    got_status, reason = run_cmd(name, payload)
    assert got_status == status, reason
    if why is not None:
        assert reason is not None and reason.startswith("rejected: ") and why in reason


def test_command_signatures() -> None:
    now = time.time()
    ok = {"id": "s1", "ts": now}
    assert run_cmd("ping", ok, key=KEY, require=True, sign=True)[0] == "ok"
    assert "missing signature" in str(run_cmd("ping", {"id": "s2", "ts": now}, key=KEY, require=True)[1])
    forged = dict(sign_request(b"wrong key", TOPIC + "ping", {"id": "s3", "ts": now}))
    assert "bad signature" in str(run_cmd("ping", forged, key=KEY, require=True)[1])
    other_node = sign_request(KEY, "edge-guard/v1/s/OTHER/cmd/ping", {"id": "s4", "ts": now})
    assert "bad signature" in str(run_cmd("ping", other_node, key=KEY, require=True)[1])
    assert "stale" in str(run_cmd("ping", {"id": "s5", "ts": now - 3600}, key=KEY, require=True, sign=True)[1])
    assert "carry ts" in str(run_cmd("ping", {"id": "s6"}, key=KEY, require=True, sign=True)[1])
    # A NaN or infinite ts would pass any staleness comparison: refused as a field error.
    for ts in (float("nan"), float("inf")):
        status, reason = run_cmd("ping", {"id": "s7", "ts": ts}, key=KEY, require=True, sign=True)
        assert status == "rejected" and "invalid request: ts" in str(reason), reason
    # Replay of one signed request to the same processor.
    proc = CommandProcessor(CommandsConfig(require_signature=True, hmac_key_file=Path("/k")), KEY)
    raw = json.dumps(sign_request(KEY, TOPIC + "ping", {"id": "r1", "ts": now})).encode()
    first = proc.handle(IncomingCommand(TOPIC + "ping", "ping", raw, None), FakeTarget())
    second = proc.handle(IncomingCommand(TOPIC + "ping", "ping", raw, None), FakeTarget())
    assert first.status == "ok" and second.status == "rejected" and "replayed" in str(second.reason)
    assert verify_signature(KEY, TOPIC + "ping", json.loads(raw))


def test_a_json_bomb_is_rejected_with_a_response() -> None:
    """8000 nested brackets overflow Python's JSON decoder (RecursionError): one rejection, counted."""
    proc = CommandProcessor(CommandsConfig(max_payload_bytes=65536), None)
    out = proc.handle(IncomingCommand(TOPIC + "ping", "ping", b"[" * 8000, None), FakeTarget())
    assert out.status == "rejected" and "not UTF-8 JSON (RecursionError)" in str(out.reason)


class FailingTarget(FakeTarget):
    def reload_profile(self) -> str:
        raise ProfileError("profile made for another model")

    def limits(self) -> dict[str, object]:
        raise ValueError("the guard is still calibrating (12 of 300 frames): no limits yet")


class MisshapenTarget(FakeTarget):
    def limits(self) -> dict[str, object]:
        return {"profile_id": "p", "alpha_flag": 0.01, "level": 0.001, "limits": [{"reason": "dark"}]}


def test_command_target_failures_are_answered() -> None:
    assert run_cmd("ping", {"id": "1"}, target=None) == ("rejected", "rejected: agent not ready: no pipeline "
                                                         "attached yet")
    status, reason = run_cmd("reload-profile", {"id": "2"}, target=FailingTarget())
    assert status == "error" and reason == "error: profile made for another model"
    # limits: not yet (the request was fine, the agent is not ready), or the agent's own bug
    not_yet = run_cmd("limits", {"id": "3"}, target=FailingTarget())
    assert not_yet == ("rejected", "rejected: the guard is still calibrating (12 of 300 frames): no limits yet")
    status, reason = run_cmd("limits", {"id": "4"}, target=MisshapenTarget())
    assert status == "error" and str(reason).startswith("error: limits do not fit their schema: ")


def test_strict_request_schema() -> None:
    with pytest.raises(ValidationError):
        CommandRequest.model_validate({"id": "1", "ts": "now"})
    assert SetThresholdsArgs(alpha_flag=0.1, alpha_block=0.1).alpha_block == 0.1


# -- credentials ---------------------------------------------------------------------------------------
def _secret(file: Path | None, credential: str | None, what: str) -> bytes | None:
    """The MQTT sink's ``*_file`` / ``*_credential`` pair, read the way the sink reads it."""
    secret = read_configured_secret(file, credential, what=what)
    return None if secret is None else secret.reveal_bytes()


def test_secret_from_file_and_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"s3cret\n")
    assert _secret(f, None, "MQTT password") == b"s3cret"
    assert _secret(None, None, "x") is None
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        _secret(None, "mqtt-password", "MQTT password")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert _secret(None, "pw", "MQTT password") == b"s3cret"
    with pytest.raises(ConfigError, match="not found"):
        _secret(None, "nope", "MQTT password")
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(ConfigError, match="empty") as exc:
        _secret(tmp_path / "empty", None, "MQTT password")
    assert "s3cret" not in str(exc.value)
    # *_file means that file only: the unit's mqtt-password credential does not replace it
    (tmp_path / "mqtt-password").write_bytes(b"other")
    assert _secret(f, None, "MQTT password") == b"s3cret"
    with pytest.raises(ConfigError, match=r"the MQTT password file .*missing does not exist"):
        _secret(tmp_path / "missing", None, "MQTT password")


# -- schemas -----------------------------------------------------------------------------------------
def test_exported_schemas_are_up_to_date(repo_root: Path) -> None:
    spec = importlib.util.spec_from_file_location("export_mqtt_schemas", repo_root / "scripts/export_mqtt_schemas.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["export_mqtt_schemas"] = mod
    spec.loader.exec_module(mod)
    files: dict[str, str] = mod.render()
    out = repo_root / "docs" / "mqtt"
    stale = [n for n, text in files.items() if not (out / n).is_file() or (out / n).read_text() != text]
    assert not stale, f"run scripts/export_mqtt_schemas.py: out of date {stale}"
    assert {p.name for p in out.glob("*.schema.json")} == set(files)


# -- tail view ---------------------------------------------------------------------------------------
def test_fleet_view_renders_rates_and_gaps(tmp_path: Path) -> None:
    view = FleetView("edge-guard/v1", save_frames=tmp_path)
    base = "edge-guard/v1/s1/n1"
    view.feed(f"{base}/status", json.dumps({"state": "online", "reason": "connected"}).encode())
    view.feed(f"{base}/cam0/status", json.dumps({"state": "degraded", "reason": "source down"}).encode())
    for seq in (0, 1, 3):
        view.feed(f"{base}/cam0/health", json.dumps({
            "summary": {"seq": seq, "fps": 25.0, "frames_processed": 100, "decisions": {"PASS": 90, "FLAG": 10},
                        "drift_alarms": ["brightness"]},
            "backlog": {"queued_msgs": 7, "drops": {"frame": 2}},
        }).encode())
    view.feed(f"{base}/cam0/events", json.dumps({"event_id": "e1", "lifecycle": "new"}).encode())
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    view.feed(f"{base}/cam0/frames/e1", jpeg, {"sha256": hashlib.sha256(jpeg).hexdigest(), "seq": "4", "role": "first"})
    view.feed(f"{base}/cam0/health", b"not json")
    text = view.render()
    assert "s1/n1" in text and "degraded" in text and "90.0" in text and "10.0" in text
    assert "brightness" in text and "gaps=1" in text and "1/1" in text
    assert view.bad == 1
    assert (tmp_path / "s1/n1/cam0/e1_4_first.jpg").read_bytes() == jpeg


def test_fleet_view_saves_health_once_per_message_and_rates_exclude_calibration(tmp_path: Path) -> None:
    """A window holding start-up calibration (300 frames, no decision) and 100 guarded frames:
    the rates are of the 100. A QoS 1 re-delivery (same msg_id) is saved once."""
    view = FleetView("edge-guard/v1", save_health=tmp_path)
    summary = {"camera_id": "cam0", "seq": 0, "window_start_ts": 0.0, "window_end_ts": 1.0, "fps": 25.0,
               "frames_processed": 400, "frames_calibrated": 300, "decisions": {"PASS": 90, "FLAG": 10}}
    payload = json.dumps({"type": "health", "msg_id": "r-7", "seq": 0, "summary": summary}).encode()
    for _ in range(2):
        view.feed("edge-guard/v1/s1/n1/cam0/health", payload)
    row = view.cameras[("s1", "n1", "cam0")]
    assert row.rates == {"PASS": 0.9, "FLAG": 0.1, "BLOCK": 0.0}
    lines = (tmp_path / "s1" / "n1" / "cam0" / "health.jsonl").read_text().splitlines()
    assert [json.loads(ln) for ln in lines] == [summary] and view.health_saved == 1


def _offline_sink(tmp_path: Path, *, start: bool = False, **config: Any) -> MqttSink:
    """The sink of node lab/n1 (camera cam0) with its spool in ``tmp_path``; it only tries to
    connect with ``start`` (to ``host``/``port`` in ``config``, default localhost)."""
    cfg = MqttConfig.model_validate({"host": "localhost", "spool": {"path": str(tmp_path / "s.sqlite")}, **config})
    ident = AgentIdentity.create("lab", "n1", ["cam0"], model_sha256=None, profile_id=None, config_hash=None)
    return MqttSink(cfg, ident, start=start)


def test_session_taken_over_is_named_and_short_sessions_back_off(tmp_path: Path) -> None:
    # The broker's DISCONNECT 0x8E (MQTT 5 brokers newer than the mosquitto in CI send it; the
    # socket-close variant runs against a real broker in test_mqtt_broker.py).
    sink = _offline_sink(tmp_path)
    try:
        conn = sink.conn
        conn._connected_at = time.monotonic()
        conn._server_disconnect = ReasonCode(PacketTypes.DISCONNECT, identifier=SESSION_TAKEN_OVER)
        assert conn._lost(0) == "taken_over"
        assert conn.last_error is not None and "took its session over" in conn.last_error
        assert "edge-guard-lab-n1" in conn.last_error and "mqtt.node" in conn.last_error
        conn._server_disconnect = None
        assert conn._lost(7) == "short"  # dropped right after CONNACK: back off, do not reset
        conn._connected_at = time.monotonic() - STABLE_SESSION_S - 1.0
        assert conn._lost(7) == "served"  # a connection that lasted: reconnect at the minimum delay
    finally:
        sink.close()


def test_frames_per_minute_zero_sends_no_episode_frame(tmp_path: Path) -> None:
    """per_minute 0 means none, not "the first burst": every risky frame is counted as rate-limited."""
    sink = _offline_sink(tmp_path, frames={"per_minute": 0, "burst": 3}, events={"end_after_clean_frames": 1})
    try:
        for seq in range(12):  # six one-frame BLOCK episodes, each ended by a clean frame
            v, f = synthetic("cam0", seq, "dark" if seq % 2 == 0 else None, Decision.BLOCK)
            sink.publish_verdict(v, f)
        stats = sink.stats()
        assert stats["frames_published"] == 0
        # per episode, its first frame and (none having gone out) its riskiest at the end: 2 x 6
        assert stats["frames_rate_limited"] == 12
        assert stats["queued_msgs"] == 12  # the episodes' start and end events still went to the spool
    finally:
        sink.close()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--password-file", "/nonexistent"], "--password-file needs --username"),
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-ca", "/nonexistent.pem"], "--tls-ca/--tls-cert/--tls-key: cannot load them as PEM"),
        (["--site", "a+b"], "--site 'a+b': topic levels without '#' or '+'"),
        (["--save-health", "/proc/no-such-dir"], "--save-health /proc/no-such-dir: cannot create the folder"),
    ],
)
def test_tail_refuses_unusable_options_before_connecting(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main  # noqa: PLC0415

    assert main(["tail", "--host", "127.0.0.1", "--port", "1", *argv]) == 2
    assert says in capsys.readouterr().err


def test_tail_without_an_mqtt_session_is_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that accepts TCP but never answers MQTT (here: a silent listener) is not 'no agents yet'."""
    from agent.cli import main  # noqa: PLC0415

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert main(["tail", "--host", "127.0.0.1", "--port", str(port), "--once", "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert f"no MQTT session with 127.0.0.1:{port}" in err


def test_tail_stops_with_an_error_when_it_cannot_save(tmp_path: Path) -> None:
    """--save-health into a folder that turned into a file meanwhile: the write error is reported
    (exit 1 from the main loop), not a traceback in paho's thread and a silent 'saved 0'."""
    import argparse  # noqa: PLC0415

    import paho.mqtt.client as mqtt  # noqa: PLC0415

    from agent.sinks.mqtt.tail import _client  # noqa: PLC0415

    save = tmp_path / "health"
    view = FleetView("edge-guard/v1", None, save)
    args = argparse.Namespace(username=None, password_file=None, tls_ca=None, tls_cert=None, tls_key=None,
                              prefix="edge-guard/v1", site="+", save_frames=None, host="h")
    errors: list[str] = []
    client = _client(args, view, errors)
    save.write_text("not a folder")
    msg = mqtt.MQTTMessage(topic=b"edge-guard/v1/s1/n1/cam0/health")
    msg.payload = json.dumps({"type": "health", "msg_id": "m1", "summary": {
        "camera_id": "cam0", "seq": 0, "window_start_ts": 0, "window_end_ts": 1, "decisions": {"PASS": 1}}}).encode()
    assert client.on_message is not None
    client.on_message(client, None, msg)
    assert len(errors) == 1 and "cannot save what arrived on edge-guard/v1/s1/n1/cam0/health" in errors[0]
    assert view.health_saved == 0


def test_a_full_spool_disk_is_counted_and_guarding_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite's own "database or disk is full" (max_page_count caps the file, as a full disk would):
    every message and frame-budget write that fails is counted and logged with that cause; no
    exception reaches the pipeline thread."""
    sink = _offline_sink(tmp_path, frames={"per_minute": 6000, "burst": 100}, events={"end_after_clean_frames": 1})
    try:
        pages = sink.spool._db.execute("PRAGMA page_count").fetchone()[0]
        sink.spool._db.execute(f"PRAGMA max_page_count = {pages + 2}")
        with caplog.at_level(logging.ERROR, logger="agent.sinks.mqtt.sink"):
            for seq in range(40):  # one-frame BLOCK episodes: events and JPEG frames
                v, f = synthetic("cam0", seq, "dark" if seq % 2 == 0 else None, Decision.BLOCK)
                sink.publish_verdict(v, f)
        errors = sink.stats()["spool_errors"]
        assert errors > 0
        assert "database or disk is full" in caplog.text and "no transaction is active" not in caplog.text
    finally:
        sink.close()


def test_stopping_without_a_connection_says_what_stays_spooled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a port nothing listens on: connecting, it never gets a session
    sink = _offline_sink(tmp_path, start=True, host="127.0.0.1", port=free_port(), flush_timeout_s=0.5)
    sink.publish_camera_status("cam0", "online", "guarding")
    with caplog.at_level(logging.WARNING, logger="agent.sinks.mqtt.connection"):
        sink.close()
    queued = sink.spool.queued_msgs
    assert queued >= 2  # the camera status and the node's 'stopped'
    assert (f"stopping without an MQTT connection: {queued} messages stay in the spool {tmp_path / 's.sqlite'}"
            in caplog.text)
