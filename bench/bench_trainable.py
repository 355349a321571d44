"""Benchmark of the trainable: loop overhead against a bare PyTorch loop, and what length
bucketing saves over padding.

Run: .venv/bin/python bench/bench_trainable.py [--quick] [--out bench/RESULTS-trainable.md]

The machine is shared and noisy, so every comparison runs candidate and baseline in the same
process, alternating (the order flips every repetition), and reports the median of the
per-repetition ratios rather than absolute timings. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO_YAML = REPO / "search_spaces" / "trials" / "tiny_demo.yaml"
REAL_DATA = REPO.parent / "shared" / "data" / "cs224n"
TASK_NAMES = ("sst", "para", "sts")

THROUGHPUT_TARGET = 0.95
EFFICIENCY_TARGET = 0.85
SPEEDUP_TARGET = 2.0


# ---- settings ------------------------------------------------------------------------------


@dataclass
class Settings:
    """What one benchmark run measures (full or --quick)."""

    quick: bool
    reps: int
    train_limit: int  # training rows per task for the throughput runs
    dev_limit: int
    threads: int
    max_length: int  # for the padding section
    speed_batches: int | None  # SST batches timed per repetition (None: all)
    speed_batch_size: int
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mtsweep-bench-")))

    @property
    def cache_dir(self) -> Path:
        return self.work / "cache"


def parse_args(argv: list[str] | None = None) -> tuple[Settings, Path | None]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 repetitions on little data (< 60 s)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5; 3 with --quick)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for both loops (default 1: the machine is shared)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="training rows per task (default 1200, all; 256 with --quick)")
    a = p.parse_args(argv)
    s = Settings(
        quick=a.quick,
        reps=a.reps or (3 if a.quick else 5),
        train_limit=a.train_limit or (256 if a.quick else 1200),
        dev_limit=16 if a.quick else 32,
        threads=a.threads,
        max_length=128,
        speed_batches=16 if a.quick else 96,
        speed_batch_size=16,
    )
    return s, a.out


# ---- 1. throughput: train() vs a bare loop ----------------------------------------------------


def bench_config(data_dir: Path, s: Settings, train_limit: int | None = None):
    """The demo trial (tiny encoder) for one epoch on `data_dir`, with small dev sets."""
    from trainables.config import TrialConfig

    limit = train_limit or s.train_limit
    return TrialConfig.load(DEMO_YAML).replace({
        "epochs": 1,
        "data.dir": str(data_dir),
        "data.format": "cs224n",
        "data.train_limit": dict.fromkeys(TASK_NAMES, limit),
        "data.dev_limit": dict.fromkeys(TASK_NAMES, s.dev_limit),
    })


def run_trainable(config, s: Settings) -> tuple[float, float]:
    """(examples/s, training seconds) of `trainables.training.train`, as it reports them."""
    from trainables.runtime import Runtime
    from trainables.training import train

    rt = Runtime(cpu=True, num_threads=s.threads, progress_lines=0, cache_dir=str(s.cache_dir))
    with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch lines would mix with ours
        out = train(config, rt)
    return out["examples_per_second"], out["train_seconds"]


def run_bare(config, s: Settings) -> tuple[float, float]:
    """(examples/s, training seconds) of a bare PyTorch loop training the same recipe as
    `train` — the same model, batches, optimizer, gradient-norm clipping and learning-rate
    schedule — written directly in PyTorch: no Accelerate, no loss bookkeeping, no NaN checks,
    no callbacks, no evaluation. Batches are collated on the fly from the same TaskSplits, as
    `train` does."""
    from accelerate.utils import set_seed

    from trainables.data.batching import collate
    from trainables.data.loading import BatchStream, load_task_splits
    from trainables.encoder import load_encoder
    from trainables.model import MultiTaskModel
    from trainables.schedules import SCHEDULES
    from trainables.training import _lr_scheduler, _optimizer

    torch.set_num_threads(s.threads)
    set_seed(config.seed, deterministic=True)  # as train() does on the CPU
    tokenizer, encoder = load_encoder(config.encoder)
    model = MultiTaskModel(config, encoder)
    modes = {t: model.input_mode(t) for t in config.tasks}
    splits = load_task_splits(config, tokenizer, modes, s.cache_dir)
    pad_id = tokenizer.pad_token_id or 0
    meta = {t: BatchStream(splits[t]["train"], config.batch_size, 1, 0, (config.seed,), True)
            for t in config.tasks}
    schedule = SCHEDULES.build(
        config.schedule.name, {t: m.batches_per_pass() for t, m in meta.items()},
        config.schedule.epoch_length, config.schedule.steps_per_epoch, config.epochs,
        **config.schedule.args,
    )
    plan = schedule.plan(0, np.random.default_rng([config.seed, 0, 1]))
    optimizer = _optimizer(model, config)
    lr_scheduler = _lr_scheduler(optimizer, config, len(plan) * config.epochs)
    max_norm = config.optim.max_grad_norm

    model.train()
    streams = {t: BatchStream(splits[t]["train"], config.batch_size, 1, 0, (config.seed, 0, i),
                              config.data.bucket)
               for i, t in enumerate(config.tasks)}
    examples = 0
    t0 = time.perf_counter()
    for step_tasks in plan:
        batches = {}
        for t in step_tasks:
            rows = streams[t].next()
            batch = collate(splits[t]["train"].data, rows, pad_id)
            batch.pop("index")
            batches[t] = batch
            examples += len(rows)
        out = model(batches)
        sum(out["weighted"].values()).backward()
        if max_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - t0
    return examples / seconds, seconds


def throughput_section(data_dir: Path, s: Settings) -> tuple[list[str], float]:
    """Alternating repetitions of train() and the bare loop; Markdown lines and median ratio."""
    config = bench_config(data_dir, s)
    warm = bench_config(data_dir, s, train_limit=32)
    # Untimed warm-up of both (imports, tokenization cache, first-call kernel setup).
    run_bare(warm, s)
    run_trainable(warm, s)

    rows, ratios = [], []
    for rep in range(s.reps):
        order = ("trainable", "bare") if rep % 2 == 0 else ("bare", "trainable")
        got: dict[str, tuple[float, float]] = {}
        for which in order:
            got[which] = (run_trainable if which == "trainable" else run_bare)(config, s)
        ratio = got["trainable"][0] / got["bare"][0]
        ratios.append(ratio)
        rows.append(
            f"| {rep + 1} | {order[0]} first | {got['trainable'][0]:.1f} "
            f"({got['trainable'][1]:.2f} s) | {got['bare'][0]:.1f} ({got['bare'][1]:.2f} s) "
            f"| {ratio:.3f} |"
        )
        print(f"  throughput rep {rep + 1}/{s.reps}: ratio {ratio:.3f}", file=sys.stderr)
    med = statistics.median(ratios)
    steps = _count_steps(config)
    lines = [
        "## 1. Throughput: `train()` vs a bare PyTorch loop",
        "",
        f"Demo trial (`{DEMO_YAML.relative_to(REPO)}`, tiny encoder) for 1 epoch: "
        f"{s.train_limit} training rows per task, batch size {config.batch_size}, "
        f"schedule {config.schedule.name}/{config.schedule.epoch_length} ({steps} steps), "
        f"dev limit {s.dev_limit}; {s.threads} thread(s). Examples/s over the training steps "
        "only (collation on the fly included, evaluation excluded) in both loops.",
        "",
        "| rep | order | trainable ex/s (train s) | bare loop ex/s (train s) | ratio |",
        "|---:|---|---:|---:|---:|",
        *rows,
        "",
        f"**Throughput ratio (trainable ÷ bare, median of {s.reps}): {med:.3f}** "
        f"(target ≥ {THROUGHPUT_TARGET}: {_verdict(med >= THROUGHPUT_TARGET)}; "
        f"range {min(ratios):.3f}–{max(ratios):.3f})",
        "",
    ]
    return lines, med


def _count_steps(config) -> int:
    rows = config.data.train_limit["sst"]
    per_task = -(-rows // config.batch_size)
    return per_task * len(config.tasks)  # round_robin/longest with equal-size tasks


# ---- 2. padding efficiency and the speed-up from bucketing -----------------------------------


def _tokenized_train(data_dir: Path, s: Settings) -> dict[str, Any]:
    """{task: TokenizedSplit} of each training set, tiny tokenizer, the demo trial's modes."""
    from trainables.config import TrialConfig
    from trainables.data.cache import load_tokenized
    from trainables.data.readers import default_split_path, read_split
    from trainables.data.tiny import build_tiny_tokenizer
    from trainables.heads import HEADS

    demo = TrialConfig.load(DEMO_YAML)
    tok = build_tiny_tokenizer()
    out = {}
    for task in TASK_NAMES:
        mode = HEADS.get(demo.tasks[task].head).input_mode
        raw = read_split(task, default_split_path(data_dir, task, "train"))
        out[task] = load_tokenized(raw, tok, s.max_length, mode, s.cache_dir)
    return out


def _model_computed(split, batches: list[np.ndarray]) -> int:
    """Tokens the model computes: separate-mode pairs are padded to one common width."""
    if split.mode != "separate":
        return sum(len(b) * int(split.lengths[b].max()) for b in batches if len(b))
    return sum(2 * len(b) * int(split.lengths[b].max()) for b in batches if len(b))


def padding_section(data_dir: Path, real: bool, s: Settings) -> tuple[list[str], float]:
    """Padding efficiency per task and batch size; Markdown lines and the bucketed efficiency
    over all tasks at batch size 16."""
    from trainables.data.batching import make_batches, padding_efficiency

    splits = _tokenized_train(data_dir, s)
    rows = []
    tot_real = tot_comp = 0
    for task, split in splits.items():
        sides = 2 if split.mode == "separate" else 1
        for bs in (16, 32):
            eff = {}
            for bucket in (True, False):
                batches = make_batches(split.lengths, bs, shuffle=True, seed=0, bucket=bucket)
                real_tok, comp = padding_efficiency(split, batches)
                eff[bucket] = real_tok / comp
                if bucket:
                    model_eff = real_tok / _model_computed(split, batches)
                    if bs == 16:
                        tot_real, tot_comp = tot_real + real_tok, tot_comp + comp
            max_eff = real_tok / (len(split) * s.max_length * sides)
            rows.append(
                f"| {task} | {split.mode} | {len(split)} | {bs} | {eff[True]:.3f} | "
                f"{model_eff:.3f} | {eff[False]:.3f} | {max_eff:.3f} |"
            )
    overall = tot_real / tot_comp
    source = (f"CS224N training sets (`{REAL_DATA}`)" if real else
              "the synthetic demo data (the CS224N files were not found at "
              f"`{REAL_DATA}`; numbers are not representative of real text)")
    lines = [
        "## 2. Padding efficiency (real tokens ÷ computed tokens)",
        "",
        f"Data: {source}, tokenized with the tiny tokenizer at max_length {s.max_length}, in "
        "the demo trial's input modes (sst single; para, sts separate). Batches from "
        "`make_batches(shuffle=True, seed=0)`; efficiency from `padding_efficiency` (each side "
        "of a separate pair padded on its own). *Model view*: the tokens `MultiTaskModel` really "
        "computes for separate pairs, which pads both sides to one common width.",
        "",
        "| task | mode | rows | batch | bucketed | bucketed (model view) | not bucketed "
        f"| padded to {s.max_length} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"**Padding efficiency, bucketed (all tasks, batch 16): {overall:.3f}** "
        f"(target ≥ {EFFICIENCY_TARGET}: {_verdict(overall >= EFFICIENCY_TARGET)})",
        "",
    ]
    return lines, overall


def speedup_section(data_dir: Path, s: Settings) -> tuple[list[str], float]:
    """Forward+backward of the MultiTaskModel over SST training batches, bucketed vs padded
    to max_length (the same rows); the median ratio of seconds per real token."""
    from accelerate.utils import set_seed

    from trainables.config import TrialConfig
    from trainables.data.batching import collate, make_batches
    from trainables.encoder import load_encoder
    from trainables.model import MultiTaskModel

    split = _tokenized_train(data_dir, s)["sst"]
    config = TrialConfig.load(DEMO_YAML)
    torch.set_num_threads(s.threads)
    set_seed(config.seed)
    tokenizer, encoder = load_encoder(config.encoder)
    model = MultiTaskModel(config, encoder).train()
    pad_id = tokenizer.pad_token_id or 0

    batches = make_batches(split.lengths, s.speed_batch_size, shuffle=True, seed=0, bucket=True)
    if s.speed_batches:
        batches = batches[: s.speed_batches]
    bucketed = []
    for rows in batches:
        b = collate(split, rows, pad_id)
        b.pop("index")
        bucketed.append(b)
    padded = [_pad_to(b, s.max_length, pad_id) for b in bucketed]
    real_tokens = int(sum(int(b["attention_mask"].sum()) for b in bucketed))
    comp = {"bucketed": sum(b["input_ids"].numel() for b in bucketed),
            "padded": sum(b["input_ids"].numel() for b in padded)}

    def run(step_batches: list[dict[str, torch.Tensor]]) -> float:
        t0 = time.perf_counter()
        for b in step_batches:
            out = model({"sst": b})
            sum(out["weighted"].values()).backward()
            model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    run(bucketed[:4])
    run(padded[:4])  # warm-up
    rows, ratios = [], []
    for rep in range(s.reps):
        order = ("bucketed", "padded") if rep % 2 == 0 else ("padded", "bucketed")
        secs = {which: run(bucketed if which == "bucketed" else padded) for which in order}
        ratio = secs["padded"] / secs["bucketed"]  # same real tokens in both
        ratios.append(ratio)
        rows.append(
            f"| {rep + 1} | {order[0]} first | {secs['bucketed']:.2f} | "
            f"{1e6 * secs['bucketed'] / real_tokens:.1f} | {secs['padded']:.2f} | "
            f"{1e6 * secs['padded'] / real_tokens:.1f} | {ratio:.2f}× |"
        )
        print(f"  speed-up rep {rep + 1}/{s.reps}: {ratio:.2f}x", file=sys.stderr)
    med = statistics.median(ratios)
    lines = [
        "### Speed-up from bucketing (time per real token)",
        "",
        f"Forward+backward of the demo trial's `MultiTaskModel` (tiny encoder, {s.threads} "
        f"thread(s)) over {len(batches)} SST training batches of {s.speed_batch_size} rows "
        f"({real_tokens} real tokens): bucketed (dynamic padding) vs the same rows padded to "
        f"max_length {s.max_length}. Computed tokens: {comp['bucketed']} bucketed, "
        f"{comp['padded']} padded ({comp['padded'] / comp['bucketed']:.2f}× more).",
        "",
        "| rep | order | bucketed s | µs / real token | padded s | µs / real token | "
        "speed-up |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"**Speed-up per real token, bucketed vs padded to {s.max_length} (median of "
        f"{s.reps}): {med:.2f}×** (target ≥ {SPEEDUP_TARGET:g}×: "
        f"{_verdict(med >= SPEEDUP_TARGET)}; range {min(ratios):.2f}–{max(ratios):.2f}×)",
        "",
    ]
    return lines, med


def _pad_to(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the token tensors of a single-sentence batch to `width` columns."""
    out = dict(batch)
    extra = width - batch["input_ids"].shape[1]
    if extra > 0:
        pad = torch.nn.functional.pad
        out["input_ids"] = pad(batch["input_ids"], (0, extra), value=pad_id)
        out["attention_mask"] = pad(batch["attention_mask"], (0, extra), value=0)
        if "token_type_ids" in batch:
            out["token_type_ids"] = pad(batch["token_type_ids"], (0, extra), value=0)
    return out


# ---- 3. machine, report -----------------------------------------------------------------------


def machine_line(s: Settings) -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import accelerate
    import transformers

    return (
        f"Machine: {model} · {os.cpu_count()} cores ({usable} usable) · torch {torch.__version__} "
        f"· accelerate {accelerate.__version__} · transformers {transformers.__version__} · "
        f"Python {platform.python_version()} · {s.threads} torch thread(s) · "
        f"load average {load:.2f} at start"
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def main(argv: list[str] | None = None) -> int:
    s, out_path = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    from trainables.data.demo import write_demo_data

    started = time.perf_counter()
    header = [
        "# mtsweep trainable benchmark",
        "",
        machine_line(s),
        "",
        f"Mode: {'quick' if s.quick else 'full'} · {s.reps} repetitions, alternating · "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
    ]
    demo_dir = s.work / "demo"
    write_demo_data(demo_dir)
    torch.set_num_threads(s.threads)

    try:
        print("throughput…", file=sys.stderr)
        thr_lines, _ = throughput_section(demo_dir, s)
        real = (REAL_DATA / "ids-sst-train.csv").is_file()
        pad_dir = REAL_DATA if real else demo_dir
        print("padding…", file=sys.stderr)
        pad_lines, _ = padding_section(pad_dir, real, s)
        spd_lines, _ = speedup_section(pad_dir, s)
    finally:
        shutil.rmtree(s.work, ignore_errors=True)  # demo data and token cache
    footer = [f"_Total benchmark time: {time.perf_counter() - started:.0f} s._", ""]
    report = "\n".join(header + thr_lines + pad_lines + spd_lines + footer)
    print(report)
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
