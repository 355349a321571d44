"""The training loop: one trial, config → per-epoch dev metrics.

Written as the Accelerate examples are: seed, build, `prepare` once, step, gather for metrics,
save state. Works in one process or many (DDP; `accelerate launch --num_processes N`, or Ray
Train workers). Data are sharded here rather than by a prepared DataLoader because every
process must follow the same multi-task plan (same task at the same step).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.config import TrialConfig, flatten
from trainables.data.batching import collate
from trainables.data.loading import BatchStream, TaskSplit, batches_per_pass, load_task_splits
from trainables.encoder import load_encoder
from trainables.errors import CheckpointError, ConfigError
from trainables.gradients import GRADIENTS
from trainables.metrics import TASK_METRIC, accuracy, confusion_matrix, overall_scores, pearson
from trainables.model import MultiTaskModel
from trainables.packing import Packing
from trainables.runtime import Runtime, host_to_device
from trainables.schedules import SCHEDULES
from trainables.tasks import TASKS

log = logging.getLogger("mtsweep.train")

STATE_FILE = "trainer_state.json"
# The learning-rate scheduler's state, saved by this module beside Accelerate's files and loaded
# with weights_only=True. (Registered with `accelerator.register_for_checkpointing` it would be
# Accelerate's custom_checkpoint_0.pkl, which Accelerate unpickles with weights_only=False: a
# checkpoint folder from elsewhere could then run code.)
SCHEDULER_FILE = "lr_scheduler.pt"
_LEGACY_SCHEDULER_FILE = "custom_checkpoint_0.pkl"
# The torch-pickled files of an Accelerate state folder (`accelerator.save_state`).
_ACCELERATE_PICKLES = ("pytorch_model*.bin", "optimizer*.bin", "scheduler*.bin", "sampler*.bin",
                       "dl_state_dict*.bin", "scaler.pt", "random_states_*.pkl")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class EpochReport:
    """What a callback receives after each epoch (on every process)."""

    epoch: int  # 1-based
    metrics: dict[str, float]
    checkpoint: Path | None  # this epoch's state folder, when checkpointing
    is_main: bool


EpochCallback = Callable[[EpochReport], None]


def make_accelerator(runtime: Runtime):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cpu = runtime.on_cpu()
    precision = runtime.mixed_precision
    if precision == "auto":
        bf16 = not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        precision = "bf16" if bf16 else "no"
    # Heads of the tasks not in a step take no part in it. No module's buffers change in
    # training (position ids, loss constants: a contract test checks every head and loss), so
    # DDP need not broadcast them from rank 0 before every forward (2 workers on the CPU:
    # about 1 ms of a 27-ms step).
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    # Accelerate keeps one state per process; a second trial in the same process (reproduce,
    # a notebook, a benchmark) may use another precision. The process group is kept.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=cpu, mixed_precision=precision, kwargs_handlers=[ddp])


def _optimizer(model: MultiTaskModel, config: TrialConfig) -> torch.optim.Optimizer:
    o = config.optim
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        # No weight decay on biases, LayerNorm weights or learned loss weights.
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel (CPU and CUDA): on the CPU PyTorch's default is a per-parameter loop,
    # about 15 % of a tiny model's step time (bench/RESULTS-ablation.md).
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, fused=True)


def _grad_clipper(accelerator, model):
    """Gradient-norm clipping. Accelerate's own call is needed with an fp16 grad scaler (it
    unscales first) or sharded models; otherwise torch's multi-tensor clip on a parameter list
    built once is about twice as fast (bench/RESULTS-micro.md)."""
    from accelerate.utils import DistributedType

    if accelerator.scaler is not None or accelerator.distributed_type in (
        DistributedType.FSDP, DistributedType.DEEPSPEED
    ):
        return lambda max_norm: accelerator.clip_grad_norm_(model.parameters(), max_norm)
    params = [p for p in model.parameters() if p.requires_grad]
    return lambda max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


def _lr_scheduler(optimizer, config: TrialConfig, total_steps: int):
    from transformers import get_scheduler

    names = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
    warmup = int(config.optim.warmup_ratio * total_steps)
    return get_scheduler(
        names[config.optim.decay], optimizer, num_warmup_steps=warmup,
        num_training_steps=total_steps,
    )


def _to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    """The batch's tensors (and a packed encoder's `packing`) on `device`, without waiting for
    the GPU (`host_to_device`)."""
    device = torch.device(device)
    return {k: v.to(device) if isinstance(v, Packing) else host_to_device(v, device)
            for k, v in batch.items() if k != "index"}


def _model_batch(model: MultiTaskModel, task: str, data, rows: np.ndarray, pad_id: int,
                 device) -> dict[str, Any]:
    """Rows of a task's tokenized split as `model` takes them, on `device`: padded tensors and,
    for a packed encoder, the packing built from the host's masks (no wait on the GPU)."""
    batch = collate(data, rows, pad_id)
    packing = model.packing(task, batch)
    if packing is not None:
        batch["packing"] = packing
    return _to_device(batch, device)


def train(
    config: TrialConfig, runtime: Runtime | None = None, callbacks: Sequence[EpochCallback] = ()
) -> dict[str, Any]:
    """Train one trial and return the last epoch's metrics (plus timing).

    Metrics: sst_acc, para_acc, sts_corr (tasks present), overall, overall_mean,
    train_loss_<task>, epoch, epochs_completed, train_seconds, examples_per_second.
    """
    runtime = runtime or Runtime()
    with _attention_kernels(runtime):
        return _train(config, runtime, callbacks)


def _attention_kernels(runtime: Runtime):
    """With `attention: auto` on a GPU, PyTorch's flash and memory-efficient attention kernels,
    not cuDNN's (PyTorch's first choice on Hopper GPUs). With a padding mask and dropout, as
    every batch here has, cuDNN's forward took 1.1 ms per BERT-base layer at batch 1024 against
    0.44 ms, and its steps cost about 40 ms more CPU time at small batches (H200,
    bench/gpu-h200.json). Set for the trial (also while it is compiled, which reads the choice
    once) and restored after it."""
    if runtime.on_cpu() or runtime.attention != "auto":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH])


# What the compiled encoder code held by this process was built for (see `_compile`).
_compiled_for: str | None = None


def _compile(encoder, config: TrialConfig, runtime: Runtime) -> None:
    """Compile the encoder with torch.compile, in place (the parameter names of checkpoints
    and saved models stay those of the encoder), with dynamic shapes from the start (bucketed
    batches vary in length and size).

    A process that runs trial after trial (a reused Ray Tune trial process) reuses the compiled
    code when the encoder is built the same way. Its dropout rates are constants in that code,
    so another encoder config compiles anew; torch.compile keeps at most 8 versions of a
    function and then silently runs it uncompiled, so the old versions are dropped first."""
    global _compiled_for
    import torch._dynamo

    key = json.dumps([config.to_dict()["encoder"], runtime.attention, runtime.mixed_precision],
                     sort_keys=True)
    if _compiled_for != key:
        torch._dynamo.reset()
        _compiled_for = key
    encoder.compile(dynamic=True)


def _train(config: TrialConfig, runtime: Runtime, callbacks: Sequence[EpochCallback]):
    from accelerate.utils import set_seed

    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    accelerator = make_accelerator(runtime)
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    say = _printer(main)

    # A checkpoint to resume from is checked before any work: its config, and that its pickled
    # files hold only tensors and plain data.
    resume = _read_resume_state(Path(runtime.resume_from), config) \
        if runtime.resume_from else None

    # Seed before anything random is built; bit-exact on CPU.
    set_seed(config.seed, deterministic=accelerator.device.type == "cpu")

    tokenizer, encoder = load_encoder(config.encoder, runtime.attention)
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions is not None and config.max_length > positions:
        raise ConfigError(f"max_length: {config.max_length} is more than encoder "
                          f"'{config.encoder.name}' takes ({positions} positions)")
    if runtime.compile:
        _compile(encoder, config, runtime)
    model = MultiTaskModel(config, encoder)
    modes = {t: model.input_mode(t) for t in config.tasks}
    splits = load_task_splits(config, tokenizer, modes, runtime.resolved_cache_dir())
    pad_id = tokenizer.pad_token_id or 0

    per_pass = {t: batches_per_pass(splits[t]["train"], config.batch_size, world)
                for t in config.tasks}
    schedule = SCHEDULES.build(
        config.schedule.name, per_pass,
        config.schedule.epoch_length, config.schedule.steps_per_epoch, config.epochs,
        **config.schedule.args,
    )
    plans = [schedule.plan(e, np.random.default_rng([config.seed, e, 1])) for e in range(config.epochs)]
    total_steps = sum(len(p) for p in plans)
    rule = GRADIENTS.build(config.gradient.name, **config.gradient.args)

    optimizer = _optimizer(model, config)
    lr_scheduler = _lr_scheduler(optimizer, config, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Stepped once per optimizer step here (a prepared scheduler would step once per process);
    # checkpointed by this module (SCHEDULER_FILE), not by Accelerate.
    core: MultiTaskModel = accelerator.unwrap_model(model)
    clip = _grad_clipper(accelerator, model)
    # The prepared optimizer's zero_grad inspects its signature on every call.
    raw_optimizer = getattr(optimizer, "optimizer", optimizer)

    sizes = ", ".join(f"{t} {len(splits[t]['train'])}" for t in config.tasks)
    say(
        f"trial {config.fingerprint()}: train examples {sizes}; "
        f"schedule {config.schedule.name}/{config.schedule.epoch_length}, "
        f"{total_steps} steps over {config.epochs} epochs, {world} process(es) on "
        f"{accelerator.device.type}, precision {accelerator.mixed_precision}"
    )

    ckpt_root = runtime.resolved_checkpoint_dir()
    if ckpt_root is not None and resume is None and main:
        _prune(ckpt_root, 0)  # a new run: the epoch checkpoints of an earlier run in the folder
    if ckpt_root is not None:
        accelerator.wait_for_everyone()
    history: list[dict[str, Any]] = []
    start_epoch = 0
    train_seconds = 0.0
    examples_seen = 0
    if resume is not None:
        state, scheduler_state = resume
        try:
            # Model weights from safetensors; optimizer and RNG states with weights_only=True.
            accelerator.load_state(runtime.resume_from)
        except Exception as e:  # noqa: BLE001 - a corrupt, truncated or foreign file
            raise CheckpointError(
                f"{runtime.resume_from}: cannot load the checkpoint: {_load_problem(e)}"
            ) from None
        lr_scheduler.load_state_dict(scheduler_state)
        start_epoch = state["epoch"]
        history = state["history"]
        train_seconds = state["train_seconds"]
        examples_seen = state["examples_seen"]
        say(f"resumed from {runtime.resume_from} after epoch {start_epoch}")

    out_dir = Path(runtime.out_dir) if runtime.out_dir else None
    if out_dir and main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(config.to_yaml())
        # One line per epoch: the resumed checkpoint's epochs, then each new one (a run into a
        # folder of an earlier run replaces its lines).
        (out_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history))

    metrics: dict[str, Any] = history[-1] if history else {}
    watch = _FiniteWatch(accelerator.device)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        plan = plans[epoch]
        streams = {
            t: BatchStream(splits[t]["train"], config.batch_size, world, rank,
                           (config.seed, epoch, i), config.data.bucket)
            for i, t in enumerate(config.tasks)
        }
        loss_sums = {t: torch.zeros((), device=accelerator.device) for t in config.tasks}
        loss_counts = dict.fromkeys(config.tasks, 0)
        every = max(1, len(plan) // runtime.progress_lines) if runtime.progress_lines else 0
        t0 = time.perf_counter()
        epoch_examples = 0
        for step_i, step_tasks in enumerate(plan):
            batches = {}
            for t in step_tasks:
                rows = streams[t].next()
                batches[t] = _model_batch(core, t, splits[t]["train"].data, rows, pad_id,
                                          accelerator.device)
                epoch_examples += len(rows)
            sync = accelerator.no_sync(model) if rule.manual_sync else nullcontext()
            with sync:
                out = model(batches)
                rule.backward(accelerator, model, out["weighted"])
            if config.optim.max_grad_norm:
                clip(config.optim.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            raw_optimizer.zero_grad(set_to_none=True)
            for t, loss in out["losses"].items():
                loss_sums[t] += loss.detach().float()
                loss_counts[t] += 1
            if runtime.nan_check_every and (step_i + 1) % runtime.nan_check_every == 0:
                watch.check(out["losses"], epoch, step_i)
            if every and main and (step_i + 1) % every == 0:
                rate = epoch_examples * world / (time.perf_counter() - t0)
                say(f"  epoch {epoch + 1} step {step_i + 1}/{len(plan)} · {rate:.0f} examples/s",
                    err=True)
        watch.flush()
        if plan:
            _check_finite(out["losses"], epoch, len(plan) - 1)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        examples_seen += epoch_examples * world

        t1 = time.perf_counter()
        dev = evaluate(core, splits, accelerator, config.eval_batch_size, pad_id, config.data.bucket)
        metrics = {
            "epoch": epoch + 1,
            **dev["metrics"],
            **_mean_train_losses(accelerator, loss_sums, loss_counts),
            "lr": lr_scheduler.get_last_lr()[0],
            "epoch_seconds": epoch_seconds,
            "eval_seconds": time.perf_counter() - t1,
            "train_seconds": train_seconds,
            "examples_per_second": examples_seen / train_seconds if train_seconds else 0.0,
        }
        history.append(metrics)
        say(_format_epoch(metrics, config.epochs))

        ckpt = None
        if ckpt_root is not None:
            ckpt = ckpt_root / f"epoch-{epoch + 1}"
            accelerator.save_state(str(ckpt))
            if main:
                torch.save(lr_scheduler.state_dict(), ckpt / SCHEDULER_FILE)
                (ckpt / STATE_FILE).write_text(json.dumps({
                    "epoch": epoch + 1, "config_fingerprint": config.fingerprint(),
                    "config": config.to_dict(), "history": history,
                    "train_seconds": train_seconds, "examples_seen": examples_seen,
                }, indent=1))
                _prune(ckpt_root, runtime.keep_checkpoints)
            accelerator.wait_for_everyone()
        if out_dir and main:
            _write_epoch_outputs(out_dir, metrics, dev)
        if out_dir and epoch + 1 == config.epochs:
            # Before the last epoch's callbacks: a scheduler may end the trial from within its
            # report of the last epoch (Ray Tune's ASHA stops every trial at its max_t).
            _save_final(accelerator, core, tokenizer, config, out_dir, metrics, history)
        for cb in callbacks:
            cb(EpochReport(epoch + 1, metrics, ckpt, main))

    if out_dir and start_epoch == config.epochs:  # resumed after the last epoch
        _save_final(accelerator, core, tokenizer, config, out_dir, metrics, history)
    return _summary(metrics, history)


def _read_resume_state(folder: Path, config: TrialConfig) -> tuple[dict, dict]:
    """(trainer state, lr-scheduler state) of an epoch checkpoint folder, checked before any
    work: the folder is an epoch checkpoint of this very config, and every pickled file in it
    (optimizer, RNG states, scheduler) holds only tensors and plain data. Raises
    CheckpointError naming the file (ConfigError for another config)."""
    state_file = folder / STATE_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    if not state_file.is_file():
        raise CheckpointError(f"{folder}: not an epoch checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(state_file.read_text())
        fingerprint, epoch = state["config_fingerprint"], int(state["epoch"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{state_file}: not a trainer state ({_load_problem(e)})") from None
    if fingerprint != config.fingerprint():
        raise ConfigError(f"{folder}: checkpoint belongs to a different trial config "
                          f"({_config_difference(state.get('config'), fingerprint, config)})")
    if epoch < 1:
        raise CheckpointError(f"{state_file}: epoch {epoch} is not an epoch checkpoint")
    if not (folder / SCHEDULER_FILE).is_file():
        if (folder / _LEGACY_SCHEDULER_FILE).is_file():
            raise CheckpointError(
                f"{folder}: written by an earlier mtsweep, whose scheduler state "
                f"({_LEGACY_SCHEDULER_FILE}) can only be read by unpickling arbitrary objects; "
                f"it is not loaded (train the trial from the start)"
            )
        raise CheckpointError(f"{folder}: incomplete checkpoint (no {SCHEDULER_FILE})")
    # Accelerate loads these with weights_only=True too, but it does not say which file failed,
    # and it swallows any error reading an RNG state (a silently different random stream).
    # Memory-mapped: the check unpickles the structure without reading the tensors' data.
    for pattern in _ACCELERATE_PICKLES:
        for path in sorted(folder.glob(pattern)):
            load_plain(path, mmap=True)
    return state, load_plain(folder / SCHEDULER_FILE)


def load_plain(path: Path, mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`: tensors, numpy arrays (as Accelerate saves RNG
    states) and plain Python data only, never code. Anything else is a CheckpointError naming
    the file; the file's objects are not created. `mmap` maps tensor data instead of reading
    it (files written by torch.save)."""
    try:
        from accelerate.utils.other import TORCH_SAFE_GLOBALS as numpy_globals
    except ImportError:  # an Accelerate without the list: tensors and plain data only
        numpy_globals = []
    try:
        with torch.serialization.safe_globals(numpy_globals):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - refused, corrupt or truncated
        raise CheckpointError(f"{path}: cannot load it: {_load_problem(e)}") from None


def _load_problem(e: BaseException) -> str:
    """One line saying why a checkpoint file did not load (torch's weights-only refusal names the
    global it blocked; the rest of its text is advice to load the file unsafely)."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError):
        refused = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported (operand \d+)", text)
        if refused:
            return (f"it holds objects other than tensors and plain data ({refused.group(1)}); "
                    f"refused by torch.load(weights_only=True)")
    first = " ".join(text.split())[:300]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _mean_train_losses(accelerator, sums: dict[str, torch.Tensor], counts: dict[str, int]):
    """Per-task mean training loss of the epoch, averaged over processes."""
    out = {}
    for t, total in sums.items():
        mean = accelerator.reduce(total / max(counts[t], 1), reduction="mean")
        out[f"train_loss_{t}"] = mean.item()
    return out


def _summary(metrics: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    return {**metrics, "epochs_completed": len(history)}


class _FiniteWatch:
    """Stops training when a loss becomes NaN or infinite, without stalling a GPU.

    On the CPU each check looks at the step's losses at once (it costs nothing). On a GPU
    reading a value waits for all queued work, so a check only queues a copy of its verdict to
    host memory, and the next check (or `flush`) reads it, by when the GPU has long finished
    that step: divergence is reported at most `nan_check_every` steps late, naming the step.
    """

    def __init__(self, device: torch.device) -> None:
        self.lazy = device.type == "cuda"
        self.pending: tuple | None = None

    def check(self, losses: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        if not self.lazy:
            _check_finite(losses, epoch, step)
            return
        self.flush()
        if not losses:
            return
        kept = {t: loss.detach() for t, loss in losses.items()}
        verdict = torch.stack([torch.isfinite(v).all() for v in kept.values()])
        host, done = verdict, None
        if verdict.is_cuda:
            host = torch.empty(verdict.shape, dtype=torch.bool, pin_memory=True)
            host.copy_(verdict, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        self.pending = (host, done, kept, epoch, step)

    def flush(self) -> None:
        if self.pending is None:
            return
        host, done, kept, epoch, step = self.pending
        self.pending = None
        if done is not None:
            done.synchronize()
        if not bool(host.all()):
            _check_finite(kept, epoch, step)


def _check_finite(losses: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    for t, loss in losses.items():
        if not torch.isfinite(loss).item():
            raise TrainingDiverged(
                f"loss of task {t!r} is {loss.item()} at epoch {epoch + 1}, step {step + 1}"
            )


@torch.no_grad()
def evaluate(
    model: MultiTaskModel, splits: dict[str, dict[str, TaskSplit]], accelerator, batch_size: int,
    pad_id: int, bucket: bool = True, split: str = "dev",
) -> dict[str, Any]:
    """Predict every task's `split` (sharded over processes, gathered) and score it.

    Returns {"metrics": {...}, "predictions": {task: {"id", "label", "prediction"}},
    "confusion": {task: matrix}}.
    """
    from accelerate.utils import gather_object

    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    metrics: dict[str, float] = {}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    confusion: dict[str, np.ndarray] = {}
    for task, parts in splits.items():
        part = parts[split]
        local: list[tuple[int, float]] = []
        for rows in part.batches(batch_size, shuffle=False, seed=0, bucket=bucket)[rank::world]:
            batch = _model_batch(model, task, part.data, rows, pad_id, accelerator.device)
            with accelerator.autocast():
                pred = model.predict(task, batch)
            local.extend(zip(rows.tolist(), pred.float().cpu().tolist()))
        pairs = sorted(gather_object(local)) if world > 1 else sorted(local)
        rows = np.array([r for r, _ in pairs], dtype=np.int64)
        pred = np.array([p for _, p in pairs])
        spec = TASKS[task]
        entry = {"id": np.array(part.data.ids, dtype=object)[rows], "prediction": pred}
        if "label" in part.data.table.column_names:
            gold = part.data.table.column("label").to_numpy()[rows]
            entry["label"] = gold
            if spec.is_regression:
                metrics[TASK_METRIC[task]] = pearson(pred, gold)
            else:
                metrics[TASK_METRIC[task]] = accuracy(pred.astype(np.int64), gold)
                confusion[task] = confusion_matrix(pred.astype(np.int64), gold, spec.num_classes)
        predictions[task] = entry
    metrics.update(overall_scores(metrics))
    if was_training:
        model.train()
    return {"metrics": metrics, "predictions": predictions, "confusion": confusion}


def _format_epoch(m: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {m['epoch']}/{epochs}"]
    for key in ("sst_acc", "para_acc", "sts_corr", "overall", "overall_mean"):
        if key in m:
            parts.append(f"{key} {m[key]:.4f}")
    parts.append(f"{m['examples_per_second']:.0f} ex/s")
    return " · ".join(parts)


def _config_difference(saved: Any, fingerprint: str, config: TrialConfig, shown: int = 4) -> str:
    """The keys where a checkpoint's config and this one differ, e.g. `epochs: 2 in the
    checkpoint, 3 here` (the two fingerprints when the checkpoint holds no readable config)."""
    differ = []
    if isinstance(saved, dict):
        old, new = flatten(saved), flatten(config.to_dict())
        differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not differ:
        return f"{fingerprint} ≠ {config.fingerprint()}"
    parts = [f"{k}: {old.get(k, '(none)')!r} in the checkpoint, {new.get(k, '(none)')!r} here"
             for k in differ[:shown]]
    more = f"; … ({len(differ) - shown} more)" if len(differ) > shown else ""
    return "; ".join(parts) + more


def _prune(root: Path, keep: int) -> None:
    done = sorted(
        (p for p in root.glob("epoch-*") if (p / STATE_FILE).exists()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def _write_epoch_outputs(out_dir: Path, metrics: dict[str, Any], dev: dict[str, Any]) -> None:
    """metrics.jsonl (one line per epoch), confusion matrices and dev predictions (latest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics) + "\n")
    (out_dir / "confusion.json").write_text(json.dumps(
        {t: m.tolist() for t, m in dev["confusion"].items()}, indent=1
    ))
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    for task, entry in dev["predictions"].items():
        table = pa.table({k: list(v) if k == "id" else v for k, v in entry.items()})
        pq.write_table(table, pred_dir / f"{task}-dev.parquet")


def _save_final(accelerator, core: MultiTaskModel, tokenizer, config: TrialConfig, out_dir: Path,
                metrics: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """The trial's final outputs in `out_dir`: `model/` and `summary.json` (main process)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_model(accelerator, core, tokenizer, config, out_dir / "model")
        (out_dir / "summary.json").write_text(json.dumps(_summary(metrics, history), indent=1))


def _save_model(accelerator, core: MultiTaskModel, tokenizer, config: TrialConfig, folder: Path) -> None:
    """The final model: weights (safetensors), the resolved config, and the encoder's config and
    tokenizer, so that it loads with no hub access."""
    folder.mkdir(parents=True, exist_ok=True)
    accelerator.save_model(core, str(folder))
    (folder / "config.yaml").write_text(config.to_yaml())
    core.encoder.config.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "encoder")


def _printer(main: bool):
    def say(msg: str, err: bool = False) -> None:
        if main:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)

    return say
