"""Read one split of one task from disk (CS224N, GLUE or JSONL layout) or from the HF hub.

Every reader returns a `RawSplit`: ids, texts and labels as plain Python/numpy, with the
malformed rows already skipped and counted. Anything a user can get wrong (missing file, wrong
columns, impossible label, empty file) is a `DataError` naming the file, and the line where
there is one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.errors import DataError
from trainables.tasks import TASK_NAMES, TASKS

logger = logging.getLogger("mtsweep.data")

FORMATS: tuple[str, ...] = ("auto", "cs224n", "glue", "jsonl", "hf")
SPLITS: tuple[str, ...] = ("train", "dev", "test")

# Row counts listed in warnings before eliding the rest.
_MAX_LINES_SHOWN = 10


class DataWarning(UserWarning):
    """Malformed rows were skipped while reading a data file."""


@dataclass(frozen=True)
class RawSplit:
    """One split of one task, untokenized.

    `labels` is int64 for classification tasks and float32 for `sts`, and None when the source
    has no labels (the test-student files). `skipped_lines` are the file lines of the malformed
    rows left out, and `skip_reason` why the first of them is malformed ('' when unknown).
    """

    task: str
    source: str
    format: str
    ids: list[str]
    texts_a: list[str]
    texts_b: list[str] | None
    labels: np.ndarray | None
    skipped_lines: tuple[int, ...] = ()
    skip_reason: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def skipped(self) -> int:
        """How many malformed rows were left out."""
        return len(self.skipped_lines)

    def describe_skipped(self) -> str:
        """The skipped lines and why the first is malformed, `3, 8; line 3: why` (at most ten
        lines, then `…`); '' when nothing was skipped."""
        lines = sorted(self.skipped_lines)
        return f"{_shown_lines(lines)}{_first_why(lines, self.skip_reason)}" if lines else ""


def _shown_lines(lines: list[int]) -> str:
    """`3, 8, 12`: the first lines, then `…`."""
    shown = ", ".join(str(n) for n in lines[:_MAX_LINES_SHOWN])
    return shown + (", …" if len(lines) > _MAX_LINES_SHOWN else "")


def _first_why(lines: list[int], reason: str) -> str:
    """`; line 3: why` for the first skipped line; '' when its reason is unknown."""
    return f"; line {lines[0]}: {reason}" if lines and reason else ""


# --------------------------------------------------------------------------------------------
# Column names per format and task.

# cs224n: the label column per task; text columns are `sentence` or `sentence1`/`sentence2`.
_CS224N_LABEL = {"sst": "sentiment", "para": "is_duplicate", "sts": "similarity"}
_CS224N_FILES = {
    "sst": ("ids-sst-train.csv", "ids-sst-dev.csv", "ids-sst-test-student.csv"),
    "para": ("quora-train.csv", "quora-dev.csv", "quora-test-student.csv"),
    "sts": ("sts-train.csv", "sts-dev.csv", "sts-test-student.csv"),
}
_GLUE_DIRS = {"sst": "SST-5", "para": "QQP", "sts": "STS-B"}

# Aliases accepted by the jsonl and hf readers (and, for the text columns, by glue), in order of
# preference: the first key present wins.
_ID_KEYS = ("id", "idx", "index", "guid")
_SINGLE_TEXT_KEYS = ("sentence", "text", "text_a", "sentence1")
_TEXT_A_KEYS = ("sentence1", "text_a", "question1", "sentence", "text")
_TEXT_B_KEYS = ("sentence2", "text_b", "question2")
_LABEL_KEYS = {
    "sst": ("label", "sentiment"),
    "para": ("label", "is_duplicate"),
    "sts": ("label", "score", "similarity"),
}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}")


# --------------------------------------------------------------------------------------------
# Labels


class _BadLabel(Exception):
    """The label field is empty or not a number: the row is malformed and is skipped.
    The message says why (it ends up in the skip warning)."""


def _parse_label(task: str, value: Any, where: str) -> float | int:
    """Parse one label; unparseable -> _BadLabel (skip), impossible value -> DataError."""
    if value is None or isinstance(value, (list, dict)):
        raise _BadLabel("no label" if value is None else f"label {value!r} is not a number")
    if isinstance(value, bool):  # JSON true/false for paraphrase
        value = int(value)
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise _BadLabel("empty label")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _BadLabel(f"label {value!r} is not a number") from None
    if math.isnan(x):
        raise _BadLabel(f"label {value!r} is not a number")
    spec = TASKS[task]
    if spec.is_regression:
        lo, hi = spec.label_range  # type: ignore[misc]
        if not lo <= x <= hi:
            raise DataError(f"{where}: {task} label {value!r} is outside [{lo:g}, {hi:g}]")
        return x
    n = spec.num_classes
    # "1.0" is a valid paraphrase label (the CS224N quora files write them that way), "2.5" is not.
    if x != int(x) or not 0 <= int(x) < n:  # type: ignore[operator]
        raise DataError(f"{where}: {task} label {value!r} is not a class in 0..{n - 1}")  # type: ignore[operator]
    return int(x)


def _labels_array(task: str, labels: list[float | int]) -> np.ndarray:
    dtype = np.float32 if TASKS[task].is_regression else np.int64
    return np.asarray(labels, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Shared row assembly


class _Builder:
    """Accumulates rows for one file and produces the RawSplit (with the skip warning)."""

    def __init__(self, task: str, source: str, fmt: str, has_labels: bool) -> None:
        self.task, self.source, self.fmt, self.has_labels = task, source, fmt, has_labels
        self.pair = TASKS[task].pair
        self.ids: list[str] = []
        self.a: list[str] = []
        self.b: list[str] = []
        self.labels: list[float | int] = []
        self.bad_lines: list[int] = []
        # Why each skipped line was malformed; the first one is shown to the user.
        self.reasons: dict[int, str] = {}

    def add(self, line: int, id_: Any, a: Any, b: Any, label: Any) -> None:
        if self.has_labels:
            try:
                y = _parse_label(self.task, label, f"{self.source}:{line}")
            except _BadLabel as e:
                self.skip(line, str(e))
                return
            self.labels.append(y)
        # Missing ids become the line number so that predictions can still be written.
        self.ids.append(str(line) if id_ is None or id_ == "" else str(id_))
        # Sentences in the CS224N SST files start with a space; strip everywhere for consistency.
        self.a.append(str(a).strip())
        if self.pair:
            self.b.append(str(b).strip())

    def skip(self, line: int, reason: str = "") -> None:
        self.bad_lines.append(line)
        if reason:
            self.reasons[line] = reason

    def finish(self) -> RawSplit:
        lines = sorted(self.bad_lines)
        reason = self.reasons.get(lines[0], "") if lines else ""
        why = _first_why(lines, reason)
        if not self.ids:
            extra = f" ({len(lines)} malformed rows skipped{why})" if lines else ""
            raise DataError(f"{self.source}: no data rows{extra}")
        if lines:
            msg = (f"{self.source}: skipped {len(lines)} malformed rows "
                   f"(lines {_shown_lines(lines)}){why}")
            # A warning (not a log record) so tests and users see it once per file and process;
            # a CLI can route it to logging with logging.captureWarnings(True).
            warnings.warn(msg, DataWarning, stacklevel=4)
        return RawSplit(
            task=self.task,
            source=self.source,
            format=self.fmt,
            ids=self.ids,
            texts_a=self.a,
            texts_b=self.b if self.pair else None,
            labels=_labels_array(self.task, self.labels) if self.has_labels else None,
            skipped_lines=tuple(lines),
            skip_reason=reason,
        )


def _missing_columns(path: Path, wanted: Sequence[str], found: Sequence[str]) -> DataError:
    return DataError(
        f"{path}: missing column(s) {', '.join(repr(w) for w in wanted)}; "
        f"columns found: {', '.join(repr(f) for f in found) or '(none)'}"
    )


def _check_exists(path: Path) -> None:
    if path.is_file():
        return
    if not path.parent.exists():
        raise DataError(f"data file {path} not found: data directory {path.parent} does not exist")
    if path.exists():
        raise DataError(f"data file {path} is not a regular file")
    raise DataError(f"data file {path} not found")


# --------------------------------------------------------------------------------------------
# Delimited files (cs224n and glue)


def _tsv_rows(path: Path, quoting: bool) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line number, fields) for every record of a tab-separated file.

    Line 1 is the header. With `quoting` the csv module's default quote handling is used (as the
    CS224N starter code does: quora has fields like `"How ... ""you"" ..."`); GLUE files are read
    without quote handling, as the GLUE reference code does, because their quotes are literal.
    """
    kwargs: dict[str, Any] = {"delimiter": "\t"}
    if not quoting:
        kwargs.update(quoting=csv.QUOTE_NONE, quotechar=None)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, **kwargs)
        start = 1
        try:
            for fields in reader:
                yield start, fields
                start = reader.line_num + 1
        except csv.Error as e:
            # A stray quote can run a field past csv's size limit: name the place and stop.
            raise DataError(f"{path}:{start}: cannot parse the row ({e})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e})") from None


def _read_delimited(task: str, path: Path, fmt: str, require_labels: bool) -> RawSplit:
    rows = _tsv_rows(path, quoting=(fmt == "cs224n"))
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataError(f"{path}: empty file (no header, no data rows)") from None
    header = [h.strip() for h in header]
    cols = {name: i for i, name in enumerate(header) if name}
    pair = TASKS[task].pair

    if fmt == "cs224n":
        text_cols = ["sentence1", "sentence2"] if pair else ["sentence"]
        label_options: tuple[str, ...] = (_CS224N_LABEL[task],)
        id_col: str | None = "id"
        required_id = True
    else:  # glue
        text_cols = ["sentence1", "sentence2"] if pair else ["sentence"]
        if task == "para" and "question1" in cols:
            text_cols = ["question1", "question2"]
        label_options = {"sst": ("label",), "para": ("is_duplicate", "label"), "sts": ("score",)}[
            task
        ]
        # GLUE SST-5 files have no id column; then the line number is used.
        id_col = next((c for c in ("id", "index") if c in cols), None)
        required_id = False

    wanted = [c for c in text_cols if c not in cols]
    if required_id and id_col not in cols:
        wanted.insert(0, id_col)  # type: ignore[arg-type]
    label_col = next((c for c in label_options if c in cols), None)
    if require_labels and label_col is None:
        wanted.append(label_options[0])
    if wanted:
        raise _missing_columns(path, wanted, header)

    has_labels = label_col is not None
    ia = cols[text_cols[0]]
    ib = cols[text_cols[1]] if pair else None
    il = cols[label_col] if label_col is not None else None
    iid = cols[id_col] if id_col is not None else None
    n_fields = len(header)

    out = _Builder(task, str(path), fmt, has_labels)
    for line, fields in rows:
        if not fields or fields == [""]:
            continue  # blank line (e.g. a trailing newline)
        if len(fields) != n_fields:
            out.skip(line, f"{len(fields)} fields, the header has {n_fields}")
            continue
        out.add(
            line,
            fields[iid] if iid is not None else None,
            fields[ia],
            fields[ib] if ib is not None else None,
            fields[il] if il is not None else None,
        )
    return out.finish()


# --------------------------------------------------------------------------------------------
# JSONL and HF records


def _first_key(record: dict[str, Any], keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in record), None)


def _record_columns(task: str, keys: Sequence[str]) -> tuple[str | None, str | None, str | None]:
    """Pick (text_a, text_b, label) column names from the aliases; None where absent."""
    present = dict.fromkeys(keys)
    if TASKS[task].pair:
        a = _first_key(present, _TEXT_A_KEYS)
        b = _first_key(present, _TEXT_B_KEYS)
    else:
        a, b = _first_key(present, _SINGLE_TEXT_KEYS), None
    return a, b, _first_key(present, _LABEL_KEYS[task])


def _read_jsonl(task: str, path: Path, require_labels: bool) -> RawSplit:
    records: list[tuple[int, dict[str, Any]]] = []
    bad: dict[int, str] = {}  # line -> why it is malformed
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    stripped = text.lstrip()
    if path.suffix == ".json" and stripped.startswith("["):
        # A plain JSON array of objects is accepted too; its "lines" are the element numbers.
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e})") from None
        for i, item in enumerate(items, start=1):
            if isinstance(item, dict):
                records.append((i, item))
            else:
                bad[i] = "not a JSON object"
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                bad[i] = "not valid JSON"
                continue
            if isinstance(item, dict):
                records.append((i, item))
            else:
                bad[i] = "not a JSON object"

    if not records:
        first = min(bad) if bad else 0
        extra = f" ({len(bad)} malformed lines skipped; line {first}: {bad[first]})" if bad else ""
        raise DataError(f"{path}: no data rows{extra}")
    # Columns are taken from the union of keys, so one record missing a key is a malformed row,
    # not a reason to reject the file.
    keys: dict[str, None] = {}
    for _, r in records:
        keys.update(dict.fromkeys(r))
    a_key, b_key, label_key = _record_columns(task, list(keys))
    wanted = []
    if a_key is None:
        wanted.append("sentence1" if TASKS[task].pair else "sentence")
    if TASKS[task].pair and b_key is None:
        wanted.append("sentence2")
    if require_labels and label_key is None:
        wanted.append("label")
    if wanted:
        raise _missing_columns(path, wanted, list(keys))

    out = _Builder(task, str(path), "jsonl", label_key is not None)
    for line, why in bad.items():
        out.skip(line, why)
    for line, r in records:
        # Aliases are resolved per record: files mixing `sentence`/`text` keys are fine.
        ra, rb, rl = _record_columns(task, list(r))
        a = r.get(ra) if ra else None
        b = r.get(rb) if rb else None
        if not isinstance(a, str) or (TASKS[task].pair and not isinstance(b, str)):
            out.skip(line, "no sentence pair" if TASKS[task].pair else "no sentence")
            continue
        id_key = _first_key(r, _ID_KEYS)
        out.add(line, r[id_key] if id_key else None, a, b, r.get(rl) if rl else None)
    out.bad_lines.sort()
    return out.finish()


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """Split `hf:<dataset>[:<config>]:<split>` into (dataset, config or None, split).

    `hf:SetFit/sst5::train` -> ("SetFit/sst5", None, "train");
    `hf:glue:stsb:validation` -> ("glue", "stsb", "validation").
    """
    if not spec.startswith("hf:"):
        raise DataError(f"not an hf source: {spec!r}; expected hf:<dataset>[:<config>]:<split>")
    parts = spec[3:].split(":")
    if len(parts) == 2:
        dataset, config, split = parts[0], "", parts[1]
    elif len(parts) == 3:
        dataset, config, split = parts
    else:
        raise DataError(f"bad hf source {spec!r}; expected hf:<dataset>[:<config>]:<split>")
    if not dataset or not split:
        raise DataError(f"bad hf source {spec!r}; dataset and split must not be empty")
    return dataset, (config or None), split


def _read_hf(task: str, spec: str, require_labels: bool) -> RawSplit:
    dataset, config, split = parse_hf_spec(spec)
    try:
        import datasets  # optional dependency: only this reader needs it
    except ImportError:
        raise DataError(
            f"{spec}: reading from the Hugging Face hub needs the `datasets` package; "
            "pip install 'mtsweep[hf]'"
        ) from None
    try:
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # noqa: BLE001 - any hub/network failure is a data problem here
        raise DataError(f"{spec}: cannot load the dataset ({type(e).__name__}: {e})") from None
    columns = list(ds.column_names)
    a_key, b_key, label_key = _record_columns(task, columns)
    id_key = _first_key(dict.fromkeys(columns), _ID_KEYS)
    labels = ds[label_key] if label_key else None
    # GLUE test splits carry label -1 for every row: that means "no labels".
    if labels is not None and len(labels) and all(y == -1 for y in labels):
        label_key, labels = None, None
    wanted = []
    if a_key is None:
        wanted.append("sentence1" if TASKS[task].pair else "sentence")
    if TASKS[task].pair and b_key is None:
        wanted.append("sentence2")
    if require_labels and label_key is None:
        wanted.append("label")
    if wanted:
        raise DataError(
            f"{spec}: missing column(s) {', '.join(repr(w) for w in wanted)}; "
            f"columns found: {', '.join(repr(c) for c in columns)}"
        )
    out = _Builder(task, spec, "hf", label_key is not None)
    a_col = ds[a_key]
    b_col = ds[b_key] if b_key else None
    id_col = ds[id_key] if id_key else None
    for i in range(len(ds)):
        out.add(
            i + 1,
            id_col[i] if id_col is not None else None,
            a_col[i],
            b_col[i] if b_col is not None else None,
            labels[i] if labels is not None else None,
        )
    return out.finish()


# --------------------------------------------------------------------------------------------
# Format detection and paths


def _header_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\r\n")


def detect_format(path: str | Path) -> str:
    """Guess the format of a source: "cs224n", "glue", "jsonl" or "hf" (an `hf:` spec).

    Goes by extension and header: a tab-separated header whose first column is an empty row
    index (or the `0` of the odd SST test-student header) is CS224N; GLUE headers name their
    columns (`sentence`, `index genre ...`, `id qid1 qid2 ...`).
    """
    s = str(path)
    if s.startswith("hf:"):
        return "hf"
    p = Path(path)
    if p.suffix.lower() in (".jsonl", ".json"):
        return "jsonl"
    _check_exists(p)
    if p.suffix.lower() in (".csv", ".tsv", ".txt"):
        header = [h.strip() for h in _header_line(p).split("\t")]
        if len(header) >= 2:
            first = header[0]
            if (first == "" or first.isdigit()) and ("id" in header):
                return "cs224n"
            names = set(header)
            glue_headers = (
                {"sentence1", "sentence2"},
                {"question1", "question2"},
                {"sentence", "label"},
                {"index", "sentence"},
            )
            if any(g <= names for g in glue_headers):
                return "glue"
    raise DataError(
        f"{path}: cannot detect the data format from its name and header; "
        f"pass one of {', '.join(FORMATS[1:])} explicitly"
    )


def _glue_path(data_dir: Path, task: str, split: str) -> Path:
    sub = data_dir / _GLUE_DIRS[task]
    base = sub if sub.is_dir() else data_dir
    return base / f"{split}.tsv"


def default_split_path(data_dir: str | Path, task: str, split: str, fmt: str = "auto") -> Path:
    """The conventional file for (task, split) under `data_dir` in format `fmt`.

    split is "train", "dev" or "test". With fmt="auto" the first layout whose file exists wins
    (cs224n, then glue, then jsonl). The `hf` format has no files: use `default_hf_source`.
    """
    _check_task(task)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    d = Path(data_dir)
    candidates = {
        "cs224n": lambda: d / _CS224N_FILES[task][SPLITS.index(split)],
        "glue": lambda: _glue_path(d, task, split),
        "jsonl": lambda: d / f"{task}-{split}.jsonl",
    }
    if fmt == "hf":
        raise DataError(
            "format 'hf' has no files under a data directory; give the source as "
            f"hf:<dataset>[:<config>]:<split> (e.g. {default_hf_source(task, split)})"
        )
    if fmt != "auto":
        return candidates[fmt]()
    if not d.is_dir():
        raise DataError(f"data directory {d} does not exist")
    for make in candidates.values():
        p = make()
        if p.is_file():
            return p
    tried = ", ".join(str(make()) for make in candidates.values())
    raise DataError(f"no {task} {split} file in {d} (looked for {tried})")


_HF_DEFAULTS = {"sst": ("SetFit/sst5", ""), "para": ("glue", "qqp"), "sts": ("glue", "stsb")}


def default_hf_source(task: str, split: str) -> str:
    """The usual hub source for (task, split), e.g. `hf:glue:stsb:validation` for sts dev."""
    _check_task(task)
    dataset, config = _HF_DEFAULTS[task]
    hf_split = {"dev": "validation"}.get(split, split)
    return f"hf:{dataset}:{config}:{hf_split}"


def read_split(
    task: str, source: str | Path, fmt: str = "auto", *, require_labels: bool = True
) -> RawSplit:
    """Read one split of `task` from a file path or an `hf:` spec.

    fmt is one of FORMATS ("auto" detects it). With require_labels=False a file without a
    label column (the test-student files) gives labels=None; labels present are still read.
    Malformed rows are skipped with a DataWarning; bad input raises DataError.
    """
    _check_task(task)
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    is_hf = isinstance(source, str) and source.startswith("hf:")
    if fmt == "auto":
        fmt = detect_format(source)
        logger.info("%s: detected format %s", source, fmt)
    if fmt == "hf":
        if not is_hf:
            raise DataError(f"{source}: format 'hf' needs a source hf:<dataset>[:<config>]:<split>")
        return _read_hf(task, str(source), require_labels)
    if is_hf:
        raise DataError(f"{source}: an hf: source needs format 'hf' or 'auto', not {fmt!r}")
    path = Path(source)
    _check_exists(path)
    if fmt == "jsonl":
        return _read_jsonl(task, path, require_labels)
    return _read_delimited(task, path, fmt, require_labels)
