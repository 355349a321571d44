"""From a trial config to the tokenized train/dev sets of each task, sharded per process."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.config import TrialConfig
from trainables.data.batching import make_batches
from trainables.data.cache import TokenizedSplit, load_tokenized
from trainables.data.readers import RawSplit, default_split_path, read_split
from trainables.errors import DataError

log = logging.getLogger("mtsweep.data")


@dataclass
class TaskSplit:
    """A tokenized split and the rows of it in use (after down-sampling)."""

    data: TokenizedSplit
    rows: np.ndarray  # indices into data.table

    def __len__(self) -> int:
        return len(self.rows)

    def batches(
        self, batch_size: int, *, shuffle: bool, seed: int | tuple, bucket: bool
    ) -> list[np.ndarray]:
        """Row-index batches (indices into `data.table`)."""
        local = make_batches(
            self.data.lengths[self.rows], batch_size, shuffle=shuffle,
            seed=_seed_int(seed), bucket=bucket,
        )
        return [self.rows[b] for b in local]


def _seed_int(seed: int | tuple) -> int:
    return int(np.random.SeedSequence(seed).generate_state(1)[0]) if isinstance(seed, tuple) else seed


def split_source(config: TrialConfig, task: str, split: str) -> str | Path:
    """The file (or `hf:` source) of one split: `data.files.<task>.<split>` under `data.dir`,
    else the format's conventional name there. A missing folder or file is a DataError naming
    the config key that points at it."""
    explicit = config.data.files.get(task, {}).get(split)
    if explicit and explicit.startswith("hf:"):
        return explicit
    d = Path(config.data.dir)
    if config.data.format != "hf" and not d.is_dir():
        what = "does not exist" if not d.exists() else "is not a folder"
        raise DataError(f"data.dir: data directory {d} {what}")
    if explicit:
        path = d / explicit
        if not path.is_file():
            raise DataError(f"data.files.{task}.{split}: data file {path} not found")
        return path
    path = default_split_path(d, task, split, config.data.format)
    if isinstance(path, Path) and not path.exists():
        raise DataError(f"data file {path} not found (the {task} {split} set under data.dir; "
                        f"data.files.{task}.{split} names another file)")
    return path


def _limit(n: int, limit: int | float | None) -> int:
    if limit is None:
        return n
    if isinstance(limit, float):
        return max(1, math.floor(n * limit))
    return min(n, limit)


def load_task_splits(
    config: TrialConfig, tokenizer, modes: dict[str, str], cache_dir: Path, splits=("train", "dev")
) -> dict[str, dict[str, TaskSplit]]:
    """{task: {split: TaskSplit}} for the tasks in `config`; `modes[task]` is the head's input
    mode. Training sets are down-sampled per `data.train_limit` with the trial's seed (a fixed
    random subset), dev sets per `data.dev_limit`."""
    # Every file is read and checked before anything is tokenized: a bad file stops the trial
    # before it writes to the cache.
    raws: dict[str, dict[str, RawSplit]] = {
        task: {split: read_split(task, split_source(config, task, split), config.data.format)
               for split in splits}
        for task in config.tasks
    }
    out: dict[str, dict[str, TaskSplit]] = {}
    for i, task in enumerate(config.tasks):
        out[task] = {}
        for split in splits:
            raw = raws[task].pop(split)  # let each split's text go once it is tokenized
            tok = load_tokenized(raw, tokenizer, config.max_length, modes[task], cache_dir)
            limits = config.data.train_limit if split == "train" else config.data.dev_limit
            n = _limit(tok.num_rows, limits.get(task))
            rng = np.random.default_rng([config.seed, i, 7])
            rows = np.arange(tok.num_rows) if n == tok.num_rows else np.sort(
                rng.choice(tok.num_rows, size=n, replace=False)
            )
            out[task][split] = TaskSplit(tok, rows)
            log.info(
                "%s %s: %d of %d examples from %s (%s, cache %s)", task, split, n, tok.num_rows,
                raw.source, raw.format, "hit" if tok.cache_hit else "built",
            )
    return out


def batches_per_pass(split: TaskSplit, batch_size: int, world: int) -> int:
    """Global batches (batch_size rows on each of `world` processes) in one pass over a set."""
    return math.ceil(len(split) / (batch_size * world))


class BatchStream:
    """An endless stream of one task's training batches for one process.

    Global batches of `batch_size × world` rows are formed (bucketed, shuffled by the seed),
    and process `rank` takes every world-th row of each, so all processes take the same number
    of steps. When a pass ends the stream reshuffles with the next seed and goes on (the
    `longest` epoch rule cycles smaller data sets this way).
    """

    def __init__(
        self, split: TaskSplit, batch_size: int, world: int, rank: int, seed: tuple, bucket: bool
    ) -> None:
        self.split, self.batch_size, self.world, self.rank = split, batch_size, world, rank
        self.seed, self.bucket = seed, bucket
        self._pass = 0
        self._queue: list[np.ndarray] = []

    def batches_per_pass(self) -> int:
        return batches_per_pass(self.split, self.batch_size, self.world)

    def _refill(self) -> None:
        glob = self.split.batches(
            self.batch_size * self.world, shuffle=True, seed=(*self.seed, self._pass),
            bucket=self.bucket,
        )
        self._queue = [self.shard(b) for b in reversed(glob)]
        self._pass += 1

    def shard(self, rows: np.ndarray) -> np.ndarray:
        if self.world == 1:
            return rows
        if len(rows) < self.world:  # a short last batch: repeat rows so no process is idle
            return rows[[self.rank % len(rows)]]
        return rows[self.rank :: self.world]

    def next(self) -> np.ndarray:
        if not self._queue:
            self._refill()
        return self._queue.pop()
