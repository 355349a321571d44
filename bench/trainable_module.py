"""Benchmark "trainable": `bench/bench_trainable.py` inside the suite.

Calls that script's own measurements (its command line is unchanged): the throughput of
`trainables.train` ÷ a bare PyTorch loop, the padding efficiency of length bucketing on the
CS224N training sets, and the speed-up per real token of bucketed over padded batches. The
headline is the padding efficiency (target ≥ 0.85, with the speed-up ≥ 2×); the throughput
ratio (target ≥ 0.95) is in the summary with its own verdict.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench import bench_trainable as bt
from bench.common import Result, verdict


def run(quick: bool, workdir: Path) -> Result:
    from trainables.data.demo import write_demo_data

    # 3 repetitions in the suite (5 when the script runs on its own) keep the whole suite
    # under 10 minutes.
    s, _ = bt.parse_args(["--quick"] if quick else ["--reps", "3"])
    s.work.rmdir()  # the script's own (empty) temp folder: the suite gives us one
    s.work = workdir
    demo_dir = workdir / "demo"
    write_demo_data(demo_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        thr_lines, throughput = bt.throughput_section(demo_dir, s)
        real = (bt.REAL_DATA / "ids-sst-train.csv").is_file()
        pad_dir = bt.REAL_DATA if real else demo_dir
        pad_lines, efficiency = bt.padding_section(pad_dir, real, s)
        spd_lines, speedup = bt.speedup_section(pad_dir, s)
        machine = bt.machine_line(s)
    finally:
        torch.set_num_threads(threads)

    eff_ok = efficiency >= bt.EFFICIENCY_TARGET
    spd_ok = speedup >= bt.SPEEDUP_TARGET
    thr_ok = throughput >= bt.THROUGHPUT_TARGET
    summary = (
        f"padding efficiency {efficiency:.3f} ({verdict(eff_ok)}), speed-up per real token "
        f"{speedup:.2f}× (≥ {bt.SPEEDUP_TARGET:g}×: {verdict(spd_ok)}); throughput "
        f"train() ÷ bare loop {throughput:.3f} (≥ {bt.THROUGHPUT_TARGET}: {verdict(thr_ok)})"
    )
    # bench_trainable's sections use ## / ###; here they sit under the suite's ## heading.
    body = [("#" + ln if ln.startswith("#") else ln) for ln in thr_lines + pad_lines + spd_lines]
    details = "\n".join([
        f"`bench/bench_trainable.py{' --quick' if quick else ''}` "
        f"({s.reps} repetitions, alternating). {machine.split(' · ', 1)[1]}",
        "",
        *body,
    ])
    return Result(
        key="trainable",
        title="3. Training loop throughput and length bucketing",
        ratio=efficiency,
        target=f"≥ {bt.EFFICIENCY_TARGET} (and speed-up ≥ {bt.SPEEDUP_TARGET:g}×)",
        met=eff_ok and spd_ok,
        summary=summary,
        details_md=details,
    )
