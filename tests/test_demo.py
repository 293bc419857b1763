"""``edge-guard demo`` end to end: the closing table must show every fault caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import REPO_ROOT
from agent.sources.synthetic_schedule import FAULT_NAMES

pytestmark = pytest.mark.slow


def _demo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_GUARD_") and k != "NOTIFY_SOCKET"}
    return subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--no-live", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT, env={**env, "ORT_DISABLE_TELEMETRY": "1"},
                          check=False)


def test_default_demo_catches_every_fault(tmp_path: Path) -> None:
    proc = _demo("--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = json.loads((tmp_path / "summary.json").read_text())
    rows = summary["rows"]
    alpha = summary["alpha_flag"]
    # the closing table names every injected fault type and the clean false-alarm rate
    assert "injected fault" in proc.stdout and "clean (false alarms)" in proc.stdout
    assert set(rows) == {*FAULT_NAMES, "clean"}
    shares = {name: round(row["share"], 3) for name, row in rows.items()}
    for fault in FAULT_NAMES:
        assert rows[fault]["frames"] > 0
        assert rows[fault]["share"] >= 0.9, f"{fault} caught in only {shares[fault]:.1%} of its frames: {shares}"
        assert f"\n{fault} " in proc.stdout
    clean = rows["clean"]
    assert clean["frames"] >= 300, "enough clean guarded frames to measure the false-alarm rate"
    assert clean["share"] <= 2 * alpha, f"clean frames flagged {clean['share']:.2%} > 2 x alpha={alpha}: {shares}"
    # the demo says what computed what: here, with no GPU, CPU statistics and why
    backends = summary["backends"]
    assert set(backends) == {"stats", "model"} and backends["model"].startswith("onnxruntime:")
    assert f"backends: stats {backends['stats']}, model {backends['model']}" in proc.stdout
    if not Path("/dev/nvidia0").exists():
        assert backends["stats"].startswith("cpu (") and len(backends["stats"]) > len("cpu ()")
    # outputs went where the table says
    assert f"outputs: {tmp_path}/" in proc.stdout
    assert (tmp_path / "verdicts.jsonl").stat().st_size > 0
    assert (tmp_path / "health.jsonl").stat().st_size > 0


def test_demo_on_real_video(tmp_path: Path, test_data: Path) -> None:
    video = test_data / "videos" / "opencv_vtest.avi"
    proc = _demo("--source", str(video), "--frames", "450", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ground_truth"] is False
    assert (summary["frames_processed"], summary["frames_calibrated"]) == (450, 300)
    assert "no ground truth for this source" in proc.stdout
    assert "decision" in proc.stdout and "PASS" in proc.stdout
    guarded = sum(r["frames"] for r in summary["rows"].values())
    assert guarded == 150
