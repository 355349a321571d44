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


def test_gpu_benchmark_smoke_on_the_cpu(tmp_path: Path) -> None:
    """`bench/gpu.py --smoke` runs its whole measurement path (token counting, fixed-length
    epochs, the profile window, the report and JSON) with the tiny encoder on the CPU."""
    data = REPO.parent / "shared" / "data" / "cs224n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out, js, prof = tmp_path / "gpu.md", tmp_path / "gpu.json", tmp_path / "profile.txt"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--smoke", "--data", str(data),
         "--batches", "16,64", "--compiled", "", "--packed", "64", "--packed-compiled", "64",
         "--flex", "64", "--flex-compiled", "", "--workers", "2", "--workers-batch", "32",
         "--out", str(out), "--json", str(js),
         "--profile", str(prof)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    recorded = json.loads(js.read_text())
    rows = recorded["rows"]
    assert [(r["name"].split(":")[0], r["batch"]) for r in rows] == [
        ("baseline", 32), ("fast", 16), ("fast", 64), ("fast + packed", 64),
        ("fast + packed, FlexAttention", 64), ("fast + packed + torch.compile", 64)]
    for r in rows:
        assert r["real_tokens_per_s"] > 0 and 0 < r["padding_efficiency"] <= 1
    # Bucketing pads less than padding each batch to its longest row.
    assert rows[1]["padding_efficiency"] > rows[0]["padding_efficiency"]
    # Packed, the encoder computes the real tokens only.
    assert rows[3]["padding_efficiency"] == rows[4]["padding_efficiency"] == 1.0 \
        > rows[2]["padding_efficiency"]
    # Packed rows run without attention dropout, and the report says the rows differ in it.
    assert rows[3]["attention_dropout"] == 0 < rows[2]["attention_dropout"]
    assert "Attention dropout differs between the rows" in out.read_text()
    assert "| baseline: fp32, eager, unbucketed | 32 |" in out.read_text()
    assert prof.read_text().startswith("2 steps in ")
    # Compiled: a graph for training, one for evaluation, and on the CPU one more where the
    # packed token count first exceeds 4096 (a guard of Inductor's CPU code); not one per batch
    # (bucketed batches vary in size and length: dynamic shapes). Waits on the GPU: not
    # counted without one.
    graphs = [r["compiled_graphs"] for r in rows]
    assert graphs[:5] == [None] * 5 and 2 <= graphs[5] <= 3, graphs
    assert all(r["gpu_waits"] is None for r in rows)
    assert "| waits on the GPU | compiled graphs |" in out.read_text()
    # One trial on 1 worker and on 2 (DDP through accelerate launch; CPU processes here): 2 ×
    # the examples per step, so more examples/s unless DDP costs as much as a worker adds.
    one, two = recorded["workers"]
    assert (one["workers"], two["workers"]) == (1, 2) and one["vs_one"] == 1.0
    assert two["vs_one"] == two["examples_per_s"] / one["examples_per_s"] > 1.0
    assert "| workers | batch per worker |" in out.read_text()
