"""Readers: the real CS224N files, synthetic GLUE/JSONL files and every bad-input path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from trainables.data.readers import (
    DataWarning,
    RawSplit,
    default_split_path,
    detect_format,
    parse_hf_spec,
    read_split,
)
from trainables.errors import DataError

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cs224n"
needs_real = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"real CS224N data not found at {REAL} (../shared/data/cs224n)"
)


# --------------------------------------------------------------------------------------------
# Real CS224N files


@needs_real
@pytest.mark.parametrize(
    ("task", "split", "rows"),
    [("sst", "train", 8544), ("sst", "dev", 1101), ("sts", "dev", 863), ("sts", "train", 6040)],
)
def test_real_counts_and_labels(task: str, split: str, rows: int) -> None:
    raw = read_split(task, default_split_path(REAL, task, split, "cs224n"))
    assert len(raw) == rows and raw.skipped == 0
    assert raw.format == "cs224n"
    assert len(raw.ids) == len(raw.texts_a) == len(raw.labels) == rows
    if task == "sst":
        assert raw.texts_b is None
        assert raw.labels.dtype == np.int64
        assert set(np.unique(raw.labels)) == {0, 1, 2, 3, 4}
        # The files have a leading space before every sentence; it is stripped.
        assert not any(t != t.strip() for t in raw.texts_a)
    else:
        assert len(raw.texts_b) == rows
        assert raw.labels.dtype == np.float32
        assert 0.0 <= raw.labels.min() and raw.labels.max() <= 5.0


@needs_real
def test_real_quora_train_skips_two_malformed_rows() -> None:
    with pytest.warns(DataWarning, match=r"quora-train\.csv: skipped 2 malformed rows \(lines "):
        raw = read_split("para", REAL / "quora-train.csv")
    assert len(raw) == 16168 and raw.skipped == 2
    assert raw.labels.dtype == np.int64 and set(np.unique(raw.labels)) == {0, 1}
    # A quoted field parses with csv's default quoting (one level of unquoting, as the CS224N
    # code does): the file's `"""Which ... """"the"""" here?"""` becomes this.
    assert raw.texts_a[0] == (
        '"Which is correct grammar: I graduated from University of XXXX or I graduated from '
        'the University of XXXX? Do I need ""the"" here?"'
    )
    assert "\t" not in "".join(raw.texts_a) + "".join(raw.texts_b)


@needs_real
def test_real_quora_quoted_row() -> None:
    raw = read_split("para", REAL / "quora-dev.csv")
    assert len(raw) == 4044 and raw.skipped == 0
    quoted = [t for t in raw.texts_a if "you and me both" in t]
    assert quoted == ['"How do you correctly use ""you and me both"" in a sentence?"']
    assert all(not t.startswith('"""') for t in raw.texts_a)


@needs_real
@pytest.mark.parametrize(("task", "rows"), [("sst", 2210), ("sts", 1725)])
def test_real_test_student_without_labels(task: str, rows: int, caplog) -> None:
    path = default_split_path(REAL, task, "test", "cs224n")
    with caplog.at_level(logging.INFO, logger="mtsweep.data"):
        raw = read_split(task, path, require_labels=False)
    assert raw.labels is None and len(raw) == rows and raw.format == "cs224n"
    assert "detected format cs224n" in caplog.text
    assert raw.ids[0] and len(raw.ids[0]) == 25
    with pytest.raises(DataError, match="missing column"):
        read_split(task, path)  # labels required by default


@needs_real
def test_real_detect_format() -> None:
    for name in ("ids-sst-train.csv", "ids-sst-test-student.csv", "quora-dev.csv", "sts-dev.csv"):
        assert detect_format(REAL / name) == "cs224n"
    assert default_split_path(REAL, "sst", "dev") == REAL / "ids-sst-dev.csv"


# --------------------------------------------------------------------------------------------
# GLUE layouts


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
)


def test_glue_stsb(tmp_path: Path) -> None:
    _write(
        tmp_path / "STS-B" / "train.tsv",
        [
            STSB_HEADER,
            "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000",
            '1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA "man" is playing.\tA man plays.\t3.800',
            "2\tmain-news\theadlines\t2013\t0005\tnone\tnone\textra\ttab\there\t1.0",  # 11 fields
        ],
    )
    _write(
        tmp_path / "STS-B" / "test.tsv",
        [STSB_HEADER.rsplit("\t", 1)[0], "0\tg\tf\ty\t1\tn\tn\tA b.\tC d."],
    )
    path = default_split_path(tmp_path, "sts", "train", "glue")
    assert path == tmp_path / "STS-B" / "train.tsv"
    assert detect_format(path) == "glue"
    with pytest.warns(DataWarning, match="skipped 1 malformed rows"):
        raw = read_split("sts", path)
    assert raw.format == "glue" and len(raw) == 2 and raw.skipped == 1
    assert raw.ids == ["0", "1"]
    assert raw.texts_a[1] == 'A "man" is playing.'  # GLUE quotes are literal
    np.testing.assert_allclose(raw.labels, [5.0, 3.8])
    assert raw.labels.dtype == np.float32
    test = read_split(
        "sts", default_split_path(tmp_path, "sts", "test", "auto"), require_labels=False
    )
    assert test.labels is None and test.texts_b == ["C d."]


def test_glue_qqp_and_sst5_flat_dir(tmp_path: Path) -> None:
    # No QQP/ subfolder: files directly in the data dir are accepted.
    _write(
        tmp_path / "dev.tsv",
        [
            "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
            "201359\t303345\t303346\tWhy are you?\tWhy are we?\t0",
            "263843\t69383\t380476\tHow do I?\tHow can I?\t1",
        ],
    )
    path = default_split_path(tmp_path, "para", "dev", "glue")
    assert path == tmp_path / "dev.tsv" and detect_format(path) == "glue"
    raw = read_split("para", path)
    assert raw.ids == ["201359", "263843"] and raw.labels.tolist() == [0, 1]
    assert raw.texts_a == ["Why are you?", "How do I?"] and raw.texts_b[1] == "How can I?"

    sst = _write(tmp_path / "SST-5" / "train.tsv", ["sentence\tlabel", "a fine film\t3", "bad\t0"])
    raw = read_split("sst", sst, "glue")
    assert raw.ids == ["2", "3"]  # no id column: the line number
    assert raw.labels.tolist() == [3, 0] and raw.texts_b is None


# --------------------------------------------------------------------------------------------
# JSONL


def test_jsonl_single_and_aliases(tmp_path: Path) -> None:
    path = tmp_path / "sst-train.jsonl"
    rows = [
        {"id": "a", "sentence": " Great . ", "label": 4},
        {"text": "Bad .", "label": "0"},
        {"sentence": "no label"},  # malformed: missing label
        "not an object",
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\nnot json\n", encoding="utf-8")
    assert default_split_path(tmp_path, "sst", "train") == path
    with pytest.warns(DataWarning, match=r"skipped 3 malformed rows \(lines 3, 4, 6\)"):
        raw = read_split("sst", path)
    assert raw.format == "jsonl"
    assert raw.ids == ["a", "2"] and raw.texts_a == ["Great .", "Bad ."]
    assert raw.labels.tolist() == [4, 0] and raw.skipped == 3


def test_jsonl_pair_aliases(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"question1": "q a", "question2": "q b", "is_duplicate": True},
        {"sentence1": "s a", "sentence2": "s b", "is_duplicate": "0.0"},
        {"text_a": "t a", "text_b": "t b", "is_duplicate": 1},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    raw = read_split("para", path, "jsonl")
    assert raw.labels.tolist() == [1, 0, 1]
    assert raw.texts_a == ["q a", "s a", "t a"] and raw.texts_b == ["q b", "s b", "t b"]

    sts = tmp_path / "sts.jsonl"
    sts.write_text(
        json.dumps({"id": 7, "sentence1": "x", "sentence2": "y", "similarity": 2.5})
        + "\n"
        + json.dumps({"sentence1": "x", "sentence2": "z", "score": "4"}),
        encoding="utf-8",
    )
    raw = read_split("sts", sts)
    assert raw.ids == ["7", "2"] and raw.labels.dtype == np.float32
    np.testing.assert_allclose(raw.labels, [2.5, 4.0])

    unlabeled = tmp_path / "test.jsonl"
    unlabeled.write_text(json.dumps({"sentence1": "x", "sentence2": "y"}), encoding="utf-8")
    assert read_split("sts", unlabeled, require_labels=False).labels is None


# --------------------------------------------------------------------------------------------
# Bad input


CS_HEADER = "\tid\tsentence\tsentiment"


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "ids-sst-train.csv"
    with pytest.raises(DataError, match=str(missing).replace(".", r"\.")):
        read_split("sst", missing, "cs224n")
    with pytest.raises(DataError, match="data directory .*nope.* does not exist"):
        read_split("sst", tmp_path / "nope" / "ids-sst-train.csv")
    with pytest.raises(DataError, match="nope"):
        default_split_path(tmp_path / "nope", "sst", "train")


def test_missing_column_names_file_and_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "ids-sst-dev.csv", ["\tid\ttext\tsentiment", "0\tx\thello\t1"])
    with pytest.raises(DataError) as e:
        read_split("sst", path)
    msg = str(e.value)
    assert str(path) in msg and "'sentence'" in msg and "columns found" in msg and "'text'" in msg
    assert "\n" not in msg


def test_label_out_of_range_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "sst.csv", [CS_HEADER, "0\ta\tfine\t2", "1\tb\tbad\t7"])
    with pytest.raises(DataError, match=rf"{path}:3: sst label '7' is not a class in 0\.\.4"):
        read_split("sst", path)
    path = _write(
        tmp_path / "sts.csv", ["\tid\tsentence1\tsentence2\tsimilarity", "0\ta\tx\ty\t5.5"]
    )
    with pytest.raises(DataError, match=rf"{path}:2: .*outside \[0, 5\]"):
        read_split("sts", path)
    path = _write(
        tmp_path / "q.csv", ["\tid\tsentence1\tsentence2\tis_duplicate", "0\ta\tx\ty\t2.0"]
    )
    with pytest.raises(DataError, match=rf"{path}:2:"):
        read_split("para", path)


def test_empty_file(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.csv", [CS_HEADER])
    with pytest.raises(DataError, match=rf"{empty}: no data rows"):
        read_split("sst", empty, "cs224n")
    (tmp_path / "zero.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty file"):
        read_split("sst", tmp_path / "zero.csv", "cs224n")
    (tmp_path / "zero.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no data rows"):
        read_split("sst", tmp_path / "zero.jsonl")


def test_malformed_rows_counted(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "quora.csv",
        [
            "\tid\tsentence1\tsentence2\tis_duplicate",
            "0\ta\tx\ty\t1.0",
            "1\tb\tx\ty\t",  # empty label
            "2\tc\tx\ty",  # too few fields
            "3\td\tx\ty\tmaybe",  # unparseable label
            "4\te\tx\ty\t0.0",
        ],
    )
    with pytest.warns(DataWarning, match=r"skipped 3 malformed rows \(lines 3, 4, 5\)"):
        raw = read_split("para", path)
    assert raw.skipped == 3 and raw.ids == ["a", "e"] and raw.labels.tolist() == [1, 0]
    # The split itself says which lines were left out and why the first was.
    assert raw.skipped_lines == (3, 4, 5) and raw.skip_reason == "empty label"
    assert raw.describe_skipped() == "3, 4, 5; line 3: empty label"


def test_unknown_format_and_task(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.parquet", ["x"])
    with pytest.raises(DataError, match="cs224n, glue, jsonl, hf"):
        detect_format(path)
    with pytest.raises(DataError, match="unknown data format"):
        read_split("sst", path, "xml")
    with pytest.raises(DataError, match="unknown task"):
        read_split("nli", path)


def test_hf_spec_parsing() -> None:
    assert parse_hf_spec("hf:SetFit/sst5::train") == ("SetFit/sst5", None, "train")
    assert parse_hf_spec("hf:glue:qqp:train") == ("glue", "qqp", "train")
    assert parse_hf_spec("hf:glue:stsb:validation") == ("glue", "stsb", "validation")
    assert parse_hf_spec("hf:imdb:test") == ("imdb", None, "test")
    assert detect_format("hf:glue:qqp:train") == "hf"
    for bad in ("hf:", "hf:glue", "hf:a:b:c:d", "hf::train", "glue:qqp:train"):
        with pytest.raises(DataError):
            parse_hf_spec(bad)
    with pytest.raises(DataError, match="hf"):
        read_split("sts", "hf:glue:stsb:validation", "cs224n")


def test_rawsplit_len() -> None:
    raw = RawSplit("sst", "x", "jsonl", ["1"], ["a"], None, np.array([1]))
    assert len(raw) == 1
