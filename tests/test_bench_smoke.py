"""Smoke test of the trainable benchmark: `bench/bench_trainable.py --quick` runs and reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_trainable_quick(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MTSWEEP_CACHE": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_trainable.py"), "--quick", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert "Throughput ratio (trainable ÷ bare" in report
    assert "Padding efficiency, bucketed" in report
    assert "Speed-up per real token" in report
    assert report.startswith("# mtsweep trainable benchmark")
