"""`mtsweep resume`: continue an interrupted sweep from its Ray Tune state.

Completed trials are kept (not re-run), unfinished ones restart from their last checkpoints,
the Optuna searcher continues with its history (it is restored with the Tuner), and the sweep's
MLflow runs are continued rather than duplicated (trial runs are found by their Ray trial id).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from orchestrator.launch import (
    META_FILE,
    LaunchOptions,
    SweepInterrupted,
    TerminationSignal,
    _init_ray,
    absolute_data_dir,
    check_ray_address,
    check_resources,
    closing_sweep_run,
    finish,
    make_trainable,
    stopping_ray,
    sweep_fingerprint,
)
from orchestrator.reproduce import check_run_store, get_run
from orchestrator.space import load_sweep
from orchestrator.tracking import SweepTracker, redact, resolve_tracking_uri
from orchestrator.trial import TrialContext
from trainables.errors import MtsweepError


class ResumeError(MtsweepError):
    """There is no sweep to resume at the given place."""


def find_sweep_folder(path: str | Path) -> str:
    """The sweep's Ray Tune folder: `path` itself, or the newest sweep inside `path`
    (the `--storage` given at launch). A local folder or a storage URI (s3://, gs://, …)."""
    text = str(path)
    if "://" in text:
        return _find_remote(text.rstrip("/"))
    p = Path(path)
    if (p / META_FILE).exists():
        return str(p)
    if p.is_dir():
        found = sorted(p.glob(f"*/{META_FILE}"), key=lambda f: f.stat().st_mtime)
        if found:
            return str(found[-1].parent)
    raise ResumeError(f"{p}: no sweep to resume here (no {META_FILE} in it or in a folder "
                      f"inside it; give the --storage of the launch or its sweep folder)")


def _find_remote(uri: str) -> str:
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        if filesystem.get_file_info(f"{path}/{META_FILE}").type == fs.FileType.File:
            return uri
        found = [info for info in filesystem.get_file_info(fs.FileSelector(path))
                 if info.type == fs.FileType.Directory and filesystem.get_file_info(
                     f"{info.path}/{META_FILE}").type == fs.FileType.File]
    except (OSError, ValueError) as e:
        raise ResumeError(f"{uri}: cannot read the sweep storage: {e}") from None
    if not found:
        raise ResumeError(f"{uri}: no sweep to resume here (no {META_FILE} in it or in a "
                          f"folder inside it)")
    newest = max(found, key=lambda info: filesystem.get_file_info(
        f"{info.path}/{META_FILE}").mtime or 0)
    return f"{uri}/{newest.base_name}"


def read_meta(folder: str) -> dict[str, Any]:
    """The sweep's record (`mtsweep-sweep.json`), checked for the keys resume needs."""
    try:
        if "://" not in folder:
            meta = json.loads((Path(folder) / META_FILE).read_text())
        else:
            from pyarrow import fs

            filesystem, path = fs.FileSystem.from_uri(folder)
            with filesystem.open_input_stream(f"{path}/{META_FILE}") as f:
                meta = json.loads(f.read().decode())
    except ValueError as e:
        raise ResumeError(f"{folder}/{META_FILE}: not valid JSON ({e})") from None
    missing = [k for k in _META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ResumeError(f"{folder}/{META_FILE}: not a sweep record written by mtsweep launch "
                          f"(missing: {', '.join(missing)})")
    return meta


_META_KEYS = ("sweep_file", "overrides", "cwd", "tracking_uri", "experiment_id",
              "parent_run_id", "experiment", "num_samples", "cache_dir", "storage", "git_commit")


def resume(path: str | Path, tracking_uri: str | None = None, address: str | None = None
           ) -> dict[str, Any]:
    from ray import tune

    folder = find_sweep_folder(path)
    meta = read_meta(folder)
    sweep_file = meta["sweep_file"]
    if not Path(sweep_file).is_file():
        raise ResumeError(f"{sweep_file}: no such file; it is the sweep file {folder} was "
                          f"launched with (the sweep run in MLflow keeps a copy: its artifact "
                          f"sweep/{Path(sweep_file).name})")
    spec = absolute_data_dir(load_sweep(sweep_file, meta["overrides"]), meta["cwd"])
    if meta.get("sweep_fingerprint") not in (None, sweep_fingerprint(spec)):
        raise ResumeError(f"{sweep_file}: changed since the sweep was launched (it, or its "
                          f"base trial config); resuming would mix trials of two sweeps. Put "
                          f"back the launched version (the sweep run in MLflow keeps a copy: "
                          f"its artifact sweep/{Path(sweep_file).name}), or launch a new sweep")
    uri = resolve_tracking_uri(tracking_uri, None) if tracking_uri else meta["tracking_uri"]
    try:  # the sweep run is in this store
        check_run_store(uri, meta["parent_run_id"])
        get_run(uri, meta["parent_run_id"])
    except MtsweepError as e:
        raise ResumeError(f"the sweep's MLflow run: {e} (the sweep was launched with "
                          f"{redact(meta['tracking_uri'])})") from None
    if not tune.Tuner.can_restore(str(folder)):
        raise ResumeError(f"{folder}: Ray Tune's saved state of the sweep is missing "
                          f"(no tuner.pkl): it cannot be resumed")
    opts = LaunchOptions(num_cpus=meta.get("num_cpus"), address=address)
    existing = bool(address or os.environ.get("RAY_ADDRESS"))
    if existing:
        check_ray_address(address or os.environ["RAY_ADDRESS"])
    where = _init_ray(opts, spec)
    with stopping_ray():
        check_resources(spec, existing_cluster=existing)
        tracker = SweepTracker(uri, meta["experiment_id"], meta["parent_run_id"])
        tracker.client.update_run(meta["parent_run_id"], status="RUNNING")
        print(f"resuming sweep {spec.name} from {folder} on {where}; MLflow sweep run "
              f"{meta['parent_run_id']}", flush=True)
        ctx = TrialContext(spec=spec, tracker=tracker, storage=meta["storage"],
                           cache_dir=meta["cache_dir"], git_commit=meta["git_commit"])
        tuner = tune.Tuner.restore(str(folder), trainable=make_trainable(ctx),
                                   resume_unfinished=True, resume_errored=False)

        def run() -> dict[str, Any]:
            with TerminationSignal.tuning():
                results = tuner.fit()
            return finish(results, spec, tracker, meta["experiment"], meta["num_samples"],
                          folder)

        return closing_sweep_run(tracker, run)


def run_resume(args) -> int:
    with TerminationSignal() as term:
        try:
            summary = resume(args.path, args.tracking_uri, args.address)
        except SweepInterrupted as e:
            print(f"interrupted again; continue with\n  "
                  f"{shlex.join(['mtsweep', 'resume', str(e.folder)])}",
                  file=sys.stderr)
            return term.exit_status
    if args.json:
        print(json.dumps(summary, default=str))
    return 0


def add_resume_arguments(p) -> None:
    p.add_argument("path", help="the --storage given at launch, or the sweep folder inside it")
    p.add_argument("--tracking-uri", help="default: the one the sweep was launched with")
    p.add_argument("--address", help="the Ray cluster to continue on (default: $RAY_ADDRESS, "
                                     "else a local Ray as at launch)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
