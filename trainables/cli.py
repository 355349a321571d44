"""`mtsweep train` and `mtsweep data demo`, runnable without the orchestrator:
`python -m trainables CONFIG.yaml` (also under `accelerate launch --num_processes N -m trainables`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings
from collections.abc import Sequence

from trainables.errors import MtsweepError
from trainables.runtime import ATTENTIONS


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="trial config YAML (e.g. search_spaces/trials/tiny_demo.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=2e-5 (repeatable)")
    p.add_argument("--out", help="write config, metrics, confusion matrices, predictions, model")
    p.add_argument("--json", action="store_true", help="end with one JSON line of final metrics")
    p.add_argument("--resume", metavar="EPOCH_DIR", help="continue from an epoch checkpoint")
    p.add_argument("--checkpoint-dir", help="where per-epoch state goes (default OUT/checkpoints)")
    p.add_argument("--keep-checkpoints", type=_at_least_one, default=1, metavar="N",
                   help="epoch checkpoints to keep, the newest (default 1: the last epoch's)")
    p.add_argument("--cpu", action="store_true", help="use the CPU even when a GPU is present")
    p.add_argument("--precision", choices=["auto", "no", "bf16", "fp16"], default="auto")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--compile", action="store_true",
                   help="compile the encoder with torch.compile (faster GPU steps after a "
                        "start-up of a minute or more)")
    p.add_argument("--attention", choices=ATTENTIONS, default="auto",
                   help="the encoder's attention; packed: the real tokens only, no padding "
                        "(variable-length flash attention on a GPU; needs "
                        "encoder.attention_dropout=0); packed_flex: the same with "
                        "FlexAttention's block-diagonal mask on a GPU")
    p.add_argument("--cache-dir", help="tokenized-data cache (default $MTSWEEP_CACHE or "
                   "~/.cache/mtsweep)")


def _at_least_one(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return n


def run_train(args: argparse.Namespace) -> int:
    from trainables.config import TrialConfig
    from trainables.runtime import Runtime
    from trainables.training import TrainingDiverged, train

    config = TrialConfig.load(args.config, args.overrides)
    runtime = Runtime(
        cpu=True if args.cpu else None, mixed_precision=args.precision,
        num_threads=args.threads, cache_dir=args.cache_dir, out_dir=args.out,
        checkpoint_dir=args.checkpoint_dir, resume_from=args.resume, compile=args.compile,
        attention=args.attention, keep_checkpoints=args.keep_checkpoints,
    )
    try:
        metrics = train(config, runtime)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    from accelerate import PartialState

    if args.json and PartialState().is_main_process:
        print(json.dumps(_json_safe(metrics)))
    return 0


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder to write the demo data set into (CS224N layout)")
    p.add_argument("--seed", type=int, default=0)


def run_demo(args: argparse.Namespace) -> int:
    from trainables.data.demo import write_demo_data

    paths = write_demo_data(args.dir, seed=args.seed)
    print(f"wrote {len(paths)} files of demo data to {args.dir}")
    return 0


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("mtsweep").setLevel(logging.INFO)
    # Data warnings (skipped malformed rows) read as one line, not with a source excerpt.
    warnings.showwarning = _show_warning
    for noisy in ("transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def guarded(fn, args) -> int:
    """Run a command; an error the user can fix is one line on stderr and exit status 2."""
    try:
        return fn(args)
    except MtsweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables", description="Train one trial.")
    add_train_arguments(p)
    args = p.parse_args(argv)
    setup_logging()
    return guarded(run_train, args)
