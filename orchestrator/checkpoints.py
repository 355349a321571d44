"""Epoch checkpoints of a trial that trains in its own Ray Tune process.

A Ray Train worker group registers its checkpoints itself, so a restarted group or a re-run
trial finds them even when the driver was killed. Ray Tune's function-trainable checkpoints are
registered by the driver instead, one round trip after the report: a driver killed in between
loses them, and the trial would train (and log) those epochs again. So a one-worker trial keeps
its checkpoints the way Ray Train does, in the same place — `STORAGE/train/train-<trial id>/
epoch-K` — and finds the latest one when it starts again. Storage is a local folder or any URI
pyarrow can write (s3://, gs://, file://).

An `epoch-K` folder counts once its `done.json` (written last) exists; the `keep` best by the
sweep's checkpoint metric and the latest are kept, the others deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DONE = "done.json"


def _filesystem(root: str):
    from pyarrow import fs

    if "://" in root:
        return fs.FileSystem.from_uri(root)
    return fs.LocalFileSystem(), str(Path(root).resolve())


@dataclass
class TrialCheckpoints:
    root: str  # STORAGE/train/train-<trial id>, a folder or a URI
    keep: int = 1
    metric: str = "overall"
    mode: str = "max"

    def __post_init__(self) -> None:
        self._fs, self._path = _filesystem(self.root)

    def _saved(self) -> dict[int, dict[str, Any]]:
        """epoch → its metrics, for every complete checkpoint."""
        from pyarrow import fs

        out = {}
        try:
            infos = self._fs.get_file_info(fs.FileSelector(self._path, allow_not_found=True))
        except FileNotFoundError:
            return out
        for info in infos:
            name = info.base_name
            if info.type != fs.FileType.Directory or not name.startswith("epoch-"):
                continue
            try:
                with self._fs.open_input_stream(f"{info.path}/{DONE}") as f:
                    out[int(name.split("-", 1)[1])] = json.loads(f.read())
            except (OSError, ValueError):
                continue  # being written, or cut short: not a checkpoint
        return out

    def latest_saved(self) -> tuple[int, dict[str, Any]] | None:
        """The epoch of the newest complete checkpoint and the metrics saved with it (what the
        trial logged for that epoch); None when there is none."""
        saved = self._saved()
        if not saved:
            return None
        epoch = max(saved)
        return epoch, saved[epoch]

    def latest(self) -> int | None:
        """The epoch of the newest complete checkpoint, None when there is none."""
        found = self.latest_saved()
        return found[0] if found else None

    def download(self, epoch: int, local: Path) -> None:
        from pyarrow import fs

        local.mkdir(parents=True, exist_ok=True)
        fs.copy_files(f"{self._path}/epoch-{epoch}", str(local.resolve()),
                      source_filesystem=self._fs,
                      destination_filesystem=fs.LocalFileSystem())

    def save(self, local: Path, epoch: int, metrics: dict[str, Any]) -> None:
        """Copy this epoch's checkpoint folder to storage, mark it complete, then delete the
        checkpoints that are neither among the `keep` best nor the latest."""
        from pyarrow import fs

        target = f"{self._path}/epoch-{epoch}"
        self._fs.create_dir(target, recursive=True)
        fs.copy_files(str(local.resolve()), target,
                      source_filesystem=fs.LocalFileSystem(), destination_filesystem=self._fs)
        scores = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        with self._fs.open_output_stream(f"{target}/{DONE}") as f:
            f.write(json.dumps(scores).encode())
        self._prune(epoch)

    def _prune(self, latest: int) -> None:
        saved = self._saved()
        sign = 1 if self.mode == "max" else -1
        ranked = sorted((e for e in saved if self.metric in saved[e]),
                        key=lambda e: (sign * saved[e][self.metric], e), reverse=True)
        kept = set(ranked[: self.keep]) | {latest}
        for epoch in saved:
            if epoch not in kept:  # unmarked first: a deletion cut short leaves no checkpoint
                self._fs.delete_file(f"{self._path}/epoch-{epoch}/{DONE}")
                self._fs.delete_dir(f"{self._path}/epoch-{epoch}")
