"""Benchmark "cache": loading one trial's tokenized data with the Arrow cache warm ÷ cold.

What a trial does before its first step (`trainables.training.train` → `load_task_splits`): read
each task's train and dev files, tokenize them into Arrow IPC files in the cache folder (cold),
or find the file built by an earlier trial and memory-map it (warm). The CS224N files from
`../shared/data/cs224n` (the demo data, with a note, when absent), the demo trial's tokenizer
(`tiny`), max length and input modes. Cold: a fresh, empty cache folder each repetition. Warm:
one folder filled before the timing. Alternating repetitions, median of warm ÷ cold.
Target ≤ 0.05.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.common import REAL_DATA, REPO, Result, alternate, md_table, verdict

DEMO_YAML = REPO / "search_spaces" / "trials" / "tiny_demo.yaml"
TARGET = 0.05
FILES = ("ids-sst-train.csv", "ids-sst-dev.csv", "quora-train.csv", "quora-dev.csv",
         "sts-train.csv", "sts-dev.csv")


def _head(src: Path, dst: Path, rows: dict[str, int]) -> None:
    """Copy the first rows of each train/dev file (header kept): --quick's smaller data."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        n = rows["dev" if "-dev" in name else "train"]
        with (src / name).open(encoding="utf-8") as f, (dst / name).open("w", encoding="utf-8") as g:
            for i, line in enumerate(f):
                if i > n:
                    break
                g.write(line)


def _data_dir(quick: bool, workdir: Path) -> tuple[Path, str]:
    """(folder, description) of the data the benchmark loads."""
    if (REAL_DATA / "ids-sst-train.csv").is_file():
        if not quick:
            return REAL_DATA, f"the CS224N files in `{REAL_DATA}` (all rows)"
        d = workdir / "cs224n-head"
        _head(REAL_DATA, d, {"train": 2000, "dev": 400})
        return d, "the first 2,000 training and 400 dev rows of each CS224N file (--quick)"
    from trainables.data.demo import write_demo_data

    d = workdir / "demo"
    write_demo_data(d)
    return d, (f"the synthetic demo data (1,200 training, 300 dev rows per task): **the CS224N "
               f"files were not found at `{REAL_DATA}`**, so the sizes are not the real ones")


def run(quick: bool, workdir: Path) -> Result:
    from trainables.config import TrialConfig
    from trainables.data.cache import cache_key, tokenizer_fingerprint
    from trainables.data.loading import load_task_splits, split_source
    from trainables.data.readers import read_split
    from trainables.encoder import load_encoder
    from trainables.model import MultiTaskModel

    data_dir, data_note = _data_dir(quick, workdir)
    config = TrialConfig.load(DEMO_YAML).replace({"data.dir": str(data_dir),
                                                  "data.format": "cs224n"})
    # What train() builds before loading the data; the same for every repetition, not timed.
    tokenizer, encoder = load_encoder(config.encoder)
    modes = {t: MultiTaskModel(config, encoder).input_mode(t) for t in config.tasks}

    warm_dir = workdir / "warm"
    first = load_task_splits(config, tokenizer, modes, warm_dir)  # fills the warm cache
    sizes = {(t, sp): s.data.num_rows for t, d in first.items() for sp, s in d.items()}
    cache_bytes = sum(f.stat().st_size for f in warm_dir.glob("*.arrow"))
    cold_n = 0

    def warm() -> float:
        t0 = time.perf_counter()
        got = load_task_splits(config, tokenizer, modes, warm_dir)
        secs = time.perf_counter() - t0
        assert all(s.data.cache_hit for d in got.values() for s in d.values())
        return secs

    def cold() -> float:
        nonlocal cold_n
        cold_n += 1
        folder = workdir / f"cold-{cold_n}"  # new and empty: every split is tokenized
        t0 = time.perf_counter()
        got = load_task_splits(config, tokenizer, modes, folder)
        secs = time.perf_counter() - t0
        assert not any(s.data.cache_hit for d in got.values() for s in d.values())
        return secs

    reps = 3 if quick else 5
    ratio, pairs = alternate(warm, cold, reps)

    # Where the warm load's time goes: reading and parsing the files, hashing content and
    # tokenizer for the cache key; the rest is memory-mapping and the per-split views.
    t0 = time.perf_counter()
    raws = {(t, sp): read_split(t, split_source(config, t, sp), config.data.format)
            for t in config.tasks for sp in ("train", "dev")}
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    for (t, _), raw in raws.items():
        cache_key(raw, tokenizer, config.max_length, modes[t])
    t_key = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in raws:
        tokenizer_fingerprint(tokenizer)
    t_fp = time.perf_counter() - t0
    warm_med = statistics.median(w for w, _ in pairs)
    cold_med = statistics.median(c for _, c in pairs)
    met = ratio <= TARGET

    rows = [[i + 1, "warm first" if i % 2 == 0 else "cold first", f"{w * 1000:.0f}",
             f"{c * 1000:.0f}", f"{w / c:.3f}"] for i, (w, c) in enumerate(pairs)]
    split_rows = [[t, sp, modes[t], f"{n:,}"] for (t, sp), n in sizes.items()]
    details = "\n".join([
        "Time of `trainables.data.loading.load_task_splits` (what `train()` calls before its "
        "first step: read the train and dev file of each task, tokenize or find the cached "
        "Arrow file, memory-map it, pick the rows) for the demo trial "
        f"(`{DEMO_YAML.relative_to(REPO)}`: tiny tokenizer, max_length {config.max_length}) on "
        f"{data_note}. Cold: a new, empty cache folder every repetition (every split "
        "tokenized and written). Warm: a folder filled once before the timing (every split a "
        "cache hit). The tokenizer and model are built once, outside the timing. "
        f"{reps} repetitions, alternating.",
        "",
        md_table(["split", "", "mode", "rows"], split_rows, "lllr"),
        "",
        f"Cache files: {cache_bytes / 2**20:.1f} MiB.",
        "",
        md_table(["rep", "order", "warm ms", "cold ms", "warm ÷ cold"], rows, "rlrrr"),
        "",
        f"**Warm ÷ cold (median of {reps}): {ratio:.3f}** (target ≤ {TARGET}: {verdict(met)}); "
        f"medians {warm_med * 1000:.0f} ms warm, {cold_med * 1000:.0f} ms cold.",
        "",
        f"Where a warm load's {warm_med * 1000:.0f} ms go (the parts timed once, separately, "
        f"so they need not add up): reading and parsing the six CSV files "
        f"{t_read * 1000:.0f} ms; hashing content and tokenizer for the cache keys "
        f"{t_key * 1000:.0f} ms, of which the tokenizer's fingerprint (computed again for each "
        f"of the six splits) {t_fp * 1000:.0f} ms; memory-mapping the Arrow files, the ids "
        "and lengths and the row selection take the rest. The key covers the file's content, "
        "not its path or mtime, so a warm load still reads and hashes every file: that is "
        "the floor of the ratio.",
    ])
    summary = (f"warm {warm_med * 1000:.0f} ms vs cold {cold_med * 1000:.0f} ms to load one "
               f"trial's tokenized data ({'CS224N' if 'CS224N' in data_note else 'demo data'}"
               f"{', quick subset' if quick and 'CS224N' in data_note else ''})")
    return Result(
        key="cache", title="4. Tokenized-data cache, warm ÷ cold", ratio=ratio,
        target=f"≤ {TARGET}", met=met, summary=summary, details_md=details,
    )
