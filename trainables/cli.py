"""`mtsweep train` and `mtsweep data demo`, runnable without the orchestrator:
`python -m trainables CONFIG.yaml` (also under `accelerate launch --num_processes N -m trainables`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from trainables.errors import MtsweepError
from trainables.runtime import ATTENTIONS


class OutputError(MtsweepError):
    """A folder the command writes to cannot be created or written."""


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
    p.add_argument("--threads", type=_at_least_one, metavar="N", help="torch threads per process")
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


def _whole_number(text: str, minimum: int) -> int:
    try:
        n = int(text)
    except ValueError:
        n = minimum - 1
    if n < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ {minimum}, got {text!r}")
    return n


def _at_least_one(text: str) -> int:
    return _whole_number(text, 1)


def _at_least_zero(text: str) -> int:
    return _whole_number(text, 0)


def make_folder(path: str | Path, what: str) -> list[Path]:
    """Create the folder `path` (and its parents); an OutputError naming it and `what` (the
    option) when it cannot be, so that a bad path fails before any work. Returns the folders it
    created, parents first."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: not a folder ({what})")
    created = [p for p in (path, *path.parents) if not p.exists()][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path}: cannot create the {what} folder: "
                          f"{e.strerror or e}") from None
    try:
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise OutputError(f"{path}: cannot write to the {what} folder: "
                          f"{e.strerror or e}") from None
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders `make_folder` created (children first) that are still empty."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):  # not empty: something was written into it
            folder.rmdir()


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
    created: list[Path] = []
    try:
        # Folders written later (the checkpoints after a whole epoch) are checked now.
        if args.out:
            created += make_folder(args.out, "--out")
        checkpoints = runtime.resolved_checkpoint_dir()
        if checkpoints is not None:
            created += make_folder(checkpoints, "--checkpoint-dir" if args.checkpoint_dir
                                   else "checkpoints")
        created += make_folder(runtime.resolved_cache_dir(),
                               "--cache-dir" if args.cache_dir else "tokenized-data cache")
        metrics = train(config, runtime)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    except BaseException:
        remove_empty(created)  # a run that fails before it writes anything (bad data, say)
        raise
    from accelerate import PartialState

    if args.json and PartialState().is_main_process:
        print(json.dumps(_json_safe(metrics)))
    return 0


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder to write the demo data set into (CS224N layout)")
    p.add_argument("--seed", type=_at_least_zero, default=0)
    p.add_argument("--force", action="store_true",
                   help="overwrite files of the same names (the demo files have the CS224N "
                        "names, so a real data set in DIR would be replaced)")


def run_demo(args: argparse.Namespace) -> int:
    from trainables.data.demo import DEMO_FILES, write_demo_data

    out = Path(args.dir)
    existing = [out / name for name in DEMO_FILES if (out / name).exists()]
    if existing and not args.force:
        which = (f"{existing[0]} exists, and the demo data would replace it" if len(existing) == 1
                 else f"{existing[0]} and {len(existing) - 1} more of the demo's files exist, "
                      f"and the demo data would replace them")
        raise OutputError(f"{which} (it writes the CS224N file names); pass --force to "
                          f"overwrite, or choose another folder")
    make_folder(out, "demo data")
    try:
        paths = write_demo_data(out, seed=args.seed)
    except OSError as e:
        raise OutputError(f"{e.filename or out}: cannot write the demo data: "
                          f"{e.strerror or e}") from None
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
    except OSError as e:  # a path the user gave that cannot be read or written
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or e}", file=sys.stderr)
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
