"""Smoke test of the benchmark suite: `bench/run_all.py --quick` runs the wrapper-tax,
orchestration, cache, search and scale benchmarks and writes a report with the machine line and
one overview row each (the trainable and GPU benchmarks have their own smoke tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEYS = ("tax", "orchestration", "cache", "search", "scale")


@pytest.mark.slow
def test_run_all_quick(tmp_path: Path) -> None:
    out = tmp_path / "R.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MTSWEEP_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)  # the suite starts its own Ray; never attach to another one
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_all.py"), "--quick", "--only", ",".join(KEYS),
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert report.startswith("# mtsweep benchmarks")
    assert re.search(r"^Machine: .+ cores .+ torch .+ ray .+ optuna .+ mlflow ", report, re.M)
    assert "bench/run_all.py --quick --only tax,orchestration,cache,search,scale" in report
    assert "| benchmark | measured ratio | target | met? | summary |" in report
    for key in KEYS:
        row = re.search(rf"^\| \[{key}\]\(#[^)]*\) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", report,
                        re.M)
        assert row, f"no overview row for {key}"
        ratio, _, met = (c.strip() for c in row.groups())
        assert met != "error", f"{key} failed:\n{report}"
        float(ratio)  # every one of these has a headline ratio
        assert re.search(rf"^## .*\(`{key}`\)$", report, re.M), f"no section for {key}"
    # The plots are copied next to the report and linked from it.
    for name in ("search_efficiency.png", "scale_driver.png", "scale_optuna.png",
                 "scale_mlflow.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
        assert f"(plots/{name})" in report
    from bench.scale import CPUS_PER_NODE, NODES

    # The scale benchmark's driver kept a trial queued or running for every slot, as a sweep's
    # does (without the limiter `mtsweep launch` uses, Tune queues one trial at a time).
    header = re.search(r"^\| trials \| TPE sampler \|.*$", report, re.M).group(0)
    col = [c.strip() for c in header.strip("|").split("|")].index("most trials queued or running")
    rows = re.findall(r"^\| \d+ \| mtsweep \|.*$", report, re.M)
    assert rows
    for line in rows:
        assert int(line.strip("|").split("|")[col]) == NODES * CPUS_PER_NODE, line
    # The sweep's TPE sampler proposed what Optuna's own does, ask for ask.
    assert re.search(r"proposed the same parameters at (\d+) of \1 asks", report)
    # Progress lines on stderr, one per benchmark.
    assert all(f"[bench] {key}: " in proc.stderr for key in KEYS)


def test_full_report_shows_the_earlier_run_beside_each_ratio() -> None:
    """A full run's overview has a *before* column from `bench/before.json`; a quick one not."""
    import argparse
    import json
    from datetime import datetime, timezone

    from bench.common import Result
    from bench.run_all import BEFORE_FILE, render

    before = json.loads(BEFORE_FILE.read_text())
    results = [(Result(key="tax", title="1. Wrapper tax", ratio=0.97, target="≥ 0.95", met=True,
                       summary="s", details_md="d"), 1.0),
               (Result(key="new", title="new", ratio=2.0, target="", met=None, summary="s",
                       details_md="d"), 1.0)]
    args = {q: argparse.Namespace(quick=q) for q in (False, True)}
    full = render(results, args[False], "m", "c", datetime.now(timezone.utc), 1.0, {})
    rows = [line for line in full.splitlines() if line.startswith("| [")]
    assert f"| {before['ratios']['tax']:#.3g} ({before['notes']['tax']}) |" in rows[0]
    assert "| 2.00 | – |" in rows[1], "a benchmark the earlier run did not have"
    assert before["date"] in full
    quick = render(results, args[True], "m", "c", datetime.now(timezone.utc), 1.0, {})
    assert "before" not in quick.split("## Overview")[1].split("\n\n")[1]


@pytest.mark.slow
def test_workers_benchmark_quick(tmp_path: Path) -> None:
    """The opt-in multi-worker benchmark: a one-trial sweep with 1 worker and with 2 (DDP over
    gloo) under `mtsweep launch`; a default run leaves it out."""
    from bench.run_all import parse_args

    assert "workers" not in parse_args([]).keys
    assert parse_args(["--only", "workers"]).keys == ["workers"]
    out = tmp_path / "W.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_all.py"), "--quick", "--only", "workers",
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    row = re.search(r"^\| 1 \| 1 worker, 2 workers \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) / "
                    r"([\d.]+) \|", report, re.M)
    assert row, report
    one, two, ratio, start_one, start_two = (float(v) for v in row.groups())
    assert one > 0 and two > 0 and ratio == pytest.approx(two / one, abs=0.01)
    # A two-worker trial starts its worker processes; a one-worker trial runs in place.
    assert start_two > start_one
