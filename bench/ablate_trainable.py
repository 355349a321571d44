"""Where `train()` loses time against a bare loop: the bare loop of bench_trainable.py plus one
of the training loop's extras at a time, alternating, as throughput ratios to the bare loop.

Run: .venv/bin/python bench/ablate_trainable.py [--reps 5] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainable import DEMO_YAML, Settings, bench_config, machine_line  # noqa: E402

# Each variant: the bare loop plus the named extras of train()'s loop.
VARIANTS: dict[str, tuple[str, ...]] = {
    "bare": (),
    "+ clip_grad_norm_ (torch)": ("clip",),
    "+ lr scheduler step": ("sched",),
    "+ loss sums (detach/float/+=)": ("sums",),
    "+ isfinite check every 10 steps": ("nan",),
    "+ Accelerate (prepare, backward, optimizer wrapper, _to_device)": ("accel",),
    "+ Accelerate clip_grad_norm_": ("accel", "accel_clip"),
    "all of train()'s loop (replica)": ("accel", "accel_clip", "sched", "sums", "nan"),
    "replica without clipping": ("accel", "sched", "sums", "nan"),
    "replica, torch clip_grad_norm_ on a cached list": ("accel", "torch_clip_list", "sched",
                                                         "sums", "nan"),
    "bare, pre-collated batches": ("precollate",),
    "bare, fused AdamW": ("fused",),
    "replica, fused AdamW": ("accel", "accel_clip", "sched", "sums", "nan", "fused"),
}


def build(config, s: Settings, accelerator):
    """Model, splits, plan, pad id and optimizer exactly as train() builds them."""
    from accelerate.utils import set_seed

    from trainables.data.loading import BatchStream, load_task_splits
    from trainables.encoder import load_encoder
    from trainables.model import MultiTaskModel
    from trainables.schedules import SCHEDULES

    set_seed(config.seed, deterministic=True)
    tokenizer, encoder = load_encoder(config.encoder)
    model = MultiTaskModel(config, encoder)
    modes = {t: model.input_mode(t) for t in config.tasks}
    splits = load_task_splits(config, tokenizer, modes, s.cache_dir)
    meta = {t: BatchStream(splits[t]["train"], config.batch_size, 1, 0, (config.seed,), True)
            for t in config.tasks}
    schedule = SCHEDULES.build(
        config.schedule.name, {t: m.batches_per_pass() for t, m in meta.items()},
        config.schedule.epoch_length, config.schedule.steps_per_epoch, config.epochs,
        **config.schedule.args,
    )
    plan = schedule.plan(0, np.random.default_rng([config.seed, 0, 1]))
    return model, splits, plan, tokenizer.pad_token_id or 0


def run_variant(config, s: Settings, accelerator, feats: tuple[str, ...]) -> float:
    """Seconds per training step of one variant over one epoch."""
    from trainables.data.batching import collate
    from trainables.data.loading import BatchStream
    from trainables.training import _check_finite, _lr_scheduler, _to_device

    model, splits, plan, pad_id = build(config, s, accelerator)
    o = config.optim
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kw = {"foreach": True} if "foreach" in feats else {"fused": True} if "fused" in feats else {}
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, **kw)
    sched = _lr_scheduler(optimizer, config, len(plan)) if "sched" in feats else None
    if "accel" in feats:
        model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    streams = {t: BatchStream(splits[t]["train"], config.batch_size, 1, 0, (config.seed, 0, i),
                              config.data.bucket) for i, t in enumerate(config.tasks)}
    pre = None
    if "precollate" in feats:
        pre = [{t: _to_device(collate(splits[t]["train"].data, streams[t].next(), pad_id), "cpu")
                for t in step} for step in plan]
    sums = {t: torch.zeros(()) for t in config.tasks}
    params = list(model.parameters())
    t0 = time.perf_counter()
    for i, step in enumerate(plan):
        if pre is not None:
            batches = pre[i]
        elif "accel" in feats:
            batches = {t: _to_device(collate(splits[t]["train"].data, streams[t].next(), pad_id),
                                     accelerator.device) for t in step}
        else:
            batches = {}
            for t in step:
                b = collate(splits[t]["train"].data, streams[t].next(), pad_id)
                b.pop("index")
                batches[t] = b
        out = model(batches)
        loss = sum(out["weighted"].values())
        if "accel" in feats:
            accelerator.backward(loss)
        else:
            loss.backward()
        if "accel_clip" in feats:
            accelerator.clip_grad_norm_(model.parameters(), o.max_grad_norm)
        elif "clip" in feats:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.max_grad_norm)
        elif "torch_clip_list" in feats:
            torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
        optimizer.step()
        if sched is not None:
            sched.step()
        optimizer.zero_grad(set_to_none=True)
        if "sums" in feats:
            for t, v in out["losses"].items():
                sums[t] += v.detach().float()
        if "nan" in feats and (i + 1) % 10 == 0:
            _check_finite(out["losses"], 0, i)
    return (time.perf_counter() - t0) / len(plan)


def main(argv: list[str] | None = None) -> int:
    import logging
    import tempfile
    import warnings

    from accelerate import Accelerator

    from trainables.data.demo import write_demo_data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=1200)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    s = Settings(quick=False, reps=a.reps, train_limit=a.train_limit, dev_limit=16,
                 threads=a.threads, max_length=128, speed_batches=None, speed_batch_size=16,
                 work=Path(tempfile.mkdtemp(prefix="mtsweep-ablate-")))
    torch.set_num_threads(s.threads)
    write_demo_data(s.work / "demo")
    config = bench_config(s.work / "demo", s)
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    names = list(VARIANTS)
    run_variant(bench_config(s.work / "demo", s, train_limit=64), s, accelerator, ())  # warm-up
    per: dict[str, list[float]] = {n: [] for n in names}
    ratio: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(s.reps):
        k = rep % len(names)
        order = names[k:] + names[:k]  # rotate the order every repetition
        got = {n: run_variant(config, s, accelerator, VARIANTS[n]) for n in order}
        for n in names:
            per[n].append(got[n])
            ratio[n].append(got["bare"] / got[n])
        print(f"rep {rep + 1}/{s.reps} done", file=sys.stderr)
    base = statistics.median(per["bare"])
    lines = [
        "# Ablation: the bare loop plus one of train()'s extras at a time",
        "",
        machine_line(s),
        "",
        f"Demo trial (`{DEMO_YAML.name}`) for 1 epoch, {s.train_limit} rows per task; "
        f"{s.reps} repetitions, order rotated; ratio = bare step time ÷ variant step time in "
        "the same repetition (a throughput ratio, like bench_trainable's).",
        "",
        "| variant | ms / step (median) | Δ vs bare, ms / step | throughput ratio (median) |",
        "|---|---:|---:|---:|",
    ]
    for n in names:
        med = statistics.median(per[n])
        lines.append(f"| {n} | {1e3 * med:.2f} | {1e3 * (med - base):+.2f} | "
                     f"{statistics.median(ratio[n]):.3f} |")
    shutil.rmtree(s.work, ignore_errors=True)  # demo data and token cache
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        a.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
