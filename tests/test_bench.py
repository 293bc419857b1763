"""``edge-guard bench``: --compare on constructed reports, a real short run, the publisher on mosquitto."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import unwritable_folder, write_squeezenet_config
from mosquitto import Collector, Mosquitto, free_port

from agent import exitcodes
from agent.cli import main
from agent.config import load_config
from agent.fieldtools.bench import REPORT_FORMAT, bench_publisher
from agent.fieldtools.benchreport import P99_MIN_RUNS, compare_reports, format_compare, metrics_of


def _report(*, fps: float = 400.0, p50: float = 5.0, p99: float = 9.0, runs: int = 500, e2e: float = 100.0,
            rss: float = 200.0) -> dict[str, Any]:
    return {
        "format": REPORT_FORMAT,
        "stats": [{"backend": "cpu", "resolution": "camera", "fps": fps},
                  {"backend": "cpu", "resolution": "4K", "fps": 40.0}],
        "model": [{"provider": "cpu", "p50_ms": p50, "p99_ms": p99, "n": runs},
                  {"provider": "cuda", "skipped": "not in this onnxruntime build"}],
        "pipeline": {"e2e_fps": e2e, "model_guard_ms": 8.0, "guard_overhead_ratio": 1.4},
        "publisher": {"skipped": "no broker configured"},
        "memory": {"peak_rss_mb": rss},
    }


def _status(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {r["metric"]: r["status"] for r in rows}


def test_metrics_are_flat_and_typed() -> None:
    m = metrics_of(_report())
    assert m["stats.cpu.camera.fps"] == {"value": 400.0, "unit": "fps", "better": "higher", "gated": True}
    assert m["model.cpu.p50_ms"]["better"] == "lower"
    assert not m["model.cpu.p99_ms"]["gated"]  # 500 runs < P99_MIN_RUNS
    assert not any(k.startswith("model.cuda") for k in m)  # skipped providers have no metrics
    assert "publisher.msgs_per_s" not in m


def test_compare_equal_reports_pass() -> None:
    rows = compare_reports(_report(), _report(), 0.1)
    assert set(_status(rows).values()) == {"ok"}
    assert "no regression beyond 10%" in format_compare(rows, 0.1, "old.json")


@pytest.mark.parametrize(
    ("new", "metric", "status"),
    [
        (_report(fps=340.0), "stats.cpu.camera.fps", "REGRESSION"),  # throughput -15%
        (_report(fps=370.0), "stats.cpu.camera.fps", "ok"),  # -7.5%: within 10%
        (_report(fps=500.0), "stats.cpu.camera.fps", "improved"),
        (_report(p50=5.6), "model.cpu.p50_ms", "REGRESSION"),  # latency +12%
        (_report(e2e=85.0), "pipeline.e2e_fps", "REGRESSION"),
        (_report(rss=300.0), "memory.peak_rss_mb", "worse (info)"),  # shown, never fails
        (_report(p99=20.0), "model.cpu.p99_ms", "worse (info)"),  # too few runs to gate a p99
        (_report(p99=20.0, runs=P99_MIN_RUNS), "model.cpu.p99_ms", "worse (info)"),  # baseline had few runs
    ],
)
def test_compare_flags_injected_regressions(new: dict[str, Any], metric: str, status: str) -> None:
    rows = compare_reports(_report(), new, 0.1)
    assert _status(rows)[metric] == status
    others = {k: v for k, v in _status(rows).items() if k != metric and v == "REGRESSION"}
    assert others == {}


def test_compare_gates_p99_with_enough_runs_and_lists_new_metrics() -> None:
    old, new = _report(runs=P99_MIN_RUNS), _report(p99=20.0, runs=P99_MIN_RUNS)
    new["publisher"] = {"msgs_per_s": 900.0}
    rows = compare_reports(old, new, 0.1)
    assert _status(rows)["model.cpu.p99_ms"] == "REGRESSION"
    assert _status(rows)["publisher.msgs_per_s"] == "new"
    text = format_compare(rows, 0.1, "old.json")
    assert "REGRESSION: 1 metric(s) worse by more than 10%: model.cpu.p99_ms +122.2%" in text


def test_bench_default_config_writes_json_and_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Built-in defaults (synthetic camera, reference model): a short run, then --compare against doctored baselines."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--duration", "1", "--out", str(out), "--no-progress"]) == exitcodes.OK
    report = json.loads(out.read_text(encoding="utf-8"))
    text = capsys.readouterr().out
    assert report["format"] == REPORT_FORMAT
    assert {r["resolution"] for r in report["stats"]} == {"camera", "720p", "1080p", "4K"}
    assert all(r["fps"] > 0 for r in report["stats"] if r["backend"] == "cpu")
    cpu = next(r for r in report["model"] if r["provider"] == "cpu")
    assert cpu["ort_provider"] == "CPUExecutionProvider" and 0 < cpu["p50_ms"] <= cpu["p99_ms"]
    pipe = report["pipeline"]
    assert pipe["guard_overhead_ratio"] > 0 and pipe["e2e_fps"] > 0  # measured; its size is the benchmark's business
    assert report["memory"]["peak_rss_mb"] > 10
    assert report["memory"]["gpu_memory"] == "n/a" or report["memory"]["gpu_memory"].endswith("(this process)")
    assert report["publisher"] == {"skipped": "no broker configured"}
    for key in ("cpu", "cores", "ram_gb", "os", "python", "numpy", "opencv", "onnxruntime", "gpu"):
        assert key in report["machine"]
    assert "statistics backends" in text and "guard overhead ratio" in text

    # The --compare wiring, with baselines 100x off so that no load on the machine can flip the verdict.
    # A baseline 100x faster than this machine: every gated metric regressed -> exit 3
    faster = copy.deepcopy(report)
    for r in faster["stats"]:
        r["fps"] *= 100
    faster["pipeline"]["e2e_fps"] *= 100
    (tmp_path / "faster.json").write_text(json.dumps(faster), encoding="utf-8")
    code = main(["bench", "--duration", "1", "--no-progress", "--compare", str(tmp_path / "faster.json")])
    assert code == exitcodes.REGRESSION
    assert "REGRESSION" in capsys.readouterr().out
    # a baseline 100x slower: improvements only -> exit 0
    slower = copy.deepcopy(report)
    for r in slower["stats"]:
        r["fps"] /= 100
    slower["pipeline"]["e2e_fps"] /= 100
    slower["pipeline"]["model_guard_ms"] *= 100  # every gated latency too
    for r in slower["model"]:
        for key in ("p50_ms", "p99_ms"):
            if key in r:
                r[key] *= 100
    (tmp_path / "slower.json").write_text(json.dumps(slower), encoding="utf-8")
    code = main(["bench", "--duration", "1", "--no-progress", "--compare", str(tmp_path / "slower.json")])
    assert code == exitcodes.OK
    assert "no regression beyond 10%" in capsys.readouterr().out


def test_bench_compare_rejects_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something-else"}', encoding="utf-8")
    assert main(["bench", "--compare", str(bad), "--no-progress"]) == exitcodes.CONFIG
    assert "not an edge-guard bench report" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_squeezenet_on_test_video(test_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_squeezenet_config(test_data, tmp_path, "benchtest")
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", str(cfg), "--duration", "2", "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["camera_wh"] == [768, 576]
    assert report["stats"][0]["size_wh"] == [768, 576]
    assert report["pipeline"]["model_ms"] > 0
    assert report["pipeline"]["profile"].startswith("calibrated on the 40 bench frames")
    assert "guard overhead ratio" in capsys.readouterr().out


def test_publisher_skips_without_broker(tmp_path: Path) -> None:
    cfg = load_config(None)
    assert bench_publisher(cfg, 1.0) == {"skipped": "no broker configured"}
    port = free_port()  # nothing listens there
    cfg = load_config(None, {"mqtt": {"host": "127.0.0.1", "port": port,
                                      "spool": {"path": str(tmp_path / "s.sqlite")}}})
    result = bench_publisher(cfg, 1.0)
    assert result["skipped"].startswith(f"broker 127.0.0.1:{port} unreachable")


@pytest.mark.integration
def test_publisher_throughput_against_mosquitto(tmp_path: Path, broker: Mosquitto) -> None:
    spool = tmp_path / "agent-spool.sqlite"
    cfg = load_config(None, {"mqtt": {"host": "127.0.0.1", "port": broker.port, "spool": {"path": str(spool)}}})
    result = bench_publisher(cfg, 1.0)
    assert result["broker"] == f"127.0.0.1:{broker.port}"
    assert result["sent"] >= 1  # how many is the benchmark's business: the test asserts none is lost
    assert result["acked"] == result["sent"], "every health message must be acknowledged"
    assert result["msgs_per_s"] > 0
    assert not spool.exists(), "the bench must not touch the agent's own spool"


@pytest.mark.integration
def test_publisher_never_takes_over_the_agents_client_id(tmp_path: Path, broker: Mosquitto) -> None:
    """A config with a fixed ``mqtt.client_id``: the bench connects under a derived id, so the
    running agent (here a client holding that id) is not kicked off the broker."""
    agent = Collector("127.0.0.1", broker.port, "edge-guard/#", client_id="agent-cam1")
    drops: list[object] = []
    agent.client.on_disconnect = lambda *a: drops.append(a)
    try:
        cfg = load_config(None, {"mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "agent-cam1",
                                          "spool": {"path": str(tmp_path / "s.sqlite")}}})
        result = bench_publisher(cfg, 1.0)
        assert result["acked"] == result["sent"] >= 1
        assert drops == [], "the bench took the agent's session over"
        assert "as agent-cam1-bench" in broker.log()
    finally:
        agent.close()


@pytest.mark.integration
def test_publisher_with_a_systemd_credential_run_from_a_shell_is_skipped(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's config names its password as a systemd credential; a field engineer runs
    bench from a shell, where there is none: the publisher row says why, the report stands."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load_config(None, {"mqtt": {"host": "127.0.0.1", "port": broker.port, "username": "n1",
                                      "password_credential": "mqtt-password",
                                      "spool": {"path": str(tmp_path / "s.sqlite")}}})
    result = bench_publisher(cfg, 1.0)
    assert result["skipped"].startswith("cannot connect as configured: the MQTT password is configured as "
                                        "credential 'mqtt-password' but $CREDENTIALS_DIRECTORY is not set")


def test_bench_out_at_its_own_config_is_refused_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cam.yaml"
    cfg.write_text("camera_id: cam1\nsource:\n  uri: synthetic://clean\n")
    assert main(["bench", "--config", str(cfg), "--duration", "1", "--out", str(cfg), "--no-progress"]) == (
        exitcodes.CONFIG)
    err = capsys.readouterr().err
    assert "--out" in err and "is also an input of this command" in err
    assert cfg.read_text() == "camera_id: cam1\nsource:\n  uri: synthetic://clean\n"


def test_bench_out_where_no_file_can_be_written_is_refused_before_measuring(
    capsys: pytest.CaptureFixture[str]
) -> None:
    """--out in /proc (root included): exit 78 naming the option and the path, no table measured."""
    out = unwritable_folder() / "bench.json"
    assert main(["bench", "--duration", "1", "--no-progress", "--out", str(out)]) == exitcodes.CONFIG
    cap = capsys.readouterr()
    assert f"edge-guard: error: --out {out}: cannot write there: " in cap.err
    assert ".tmp" not in cap.err and not cap.out  # nothing measured, no temporary file named


def test_threshold_without_compare_is_reported_as_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # (a missing source then stops the run at once: only the warning matters here)
    with caplog.at_level(logging.WARNING, logger="agent.fieldtools.bench"):
        code = main(["bench", "--threshold", "0.2", "--source", str(tmp_path / "none.avi"), "--no-progress"])
    assert code == exitcodes.CONFIG
    assert "--threshold 0.2 is ignored without --compare" in caplog.text
