"""The synthetic demo data set: CS224N layout, readable, deterministic; the tiny tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator import cli
from trainables.data.demo import DEMO_FILES, demo_vocabulary, write_demo_data
from trainables.data.readers import DataWarning, default_split_path, detect_format, read_split
from trainables.data.tiny import build_tiny_tokenizer, tiny_vocab_path

FILES = {
    "ids-sst-train.csv": ("sst", "train"),
    "ids-sst-dev.csv": ("sst", "dev"),
    "ids-sst-test-student.csv": ("sst", "test"),
    "quora-train.csv": ("para", "train"),
    "quora-dev.csv": ("para", "dev"),
    "quora-test-student.csv": ("para", "test"),
    "sts-train.csv": ("sts", "train"),
    "sts-dev.csv": ("sts", "dev"),
    "sts-test-student.csv": ("sts", "test"),
}


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_data(out, seed=3, n_train=(200, 150, 120), n_dev=50, n_test=40)
    return out


def test_layout_and_headers(small_demo: Path) -> None:
    assert sorted(p.name for p in small_demo.iterdir()) == sorted(FILES) == sorted(DEMO_FILES)
    first = {name: (small_demo / name).read_text().splitlines()[:2] for name in FILES}
    assert first["ids-sst-test-student.csv"][0] == "0\t\tid\tsentence"
    assert first["ids-sst-test-student.csv"][1].startswith("1\t0.0\t")
    assert first["ids-sst-train.csv"][0] == "\tid\tsentence\tsentiment"
    assert first["quora-dev.csv"][0] == "\tid\tsentence1\tsentence2\tis_duplicate"
    assert first["quora-dev.csv"][1].rsplit("\t", 1)[1] in ("0.0", "1.0")
    assert first["sts-test-student.csv"][0] == "\tid\tsentence1\tsentence2"
    for name in FILES:
        assert detect_format(small_demo / name) == "cs224n"


def test_read_back_every_file(small_demo: Path) -> None:
    sizes = {("sst", "train"): 200, ("para", "train"): 150, ("sts", "train"): 120}
    for name, (task, split) in FILES.items():
        path = default_split_path(small_demo, task, split)
        assert path.name == name
        if name == "quora-train.csv":
            with pytest.warns(DataWarning, match="skipped 1 malformed rows"):
                raw = read_split(task, path)
            assert raw.skipped == 1
        else:
            raw = read_split(task, path, require_labels=split != "test")
            assert raw.skipped == 0
        assert len(raw) == sizes.get((task, split), 50 if split == "dev" else 40)
        assert len(set(raw.ids)) == len(raw)
        if split == "test":
            assert raw.labels is None
            continue
        y = raw.labels
        if task == "sst":
            assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1, 2, 3, 4}
        elif task == "para":
            assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
        else:
            assert y.dtype == np.float32 and y.min() >= 0.0 and y.max() <= 5.0
            assert np.allclose(y * 10, np.round(y * 10), atol=1e-3)  # one decimal


def test_label_balance_and_signal(tmp_path: Path) -> None:
    write_demo_data(tmp_path, seed=0)
    para = read_split("para", tmp_path / "quora-dev.csv")
    assert 0.3 < para.labels.mean() < 0.5  # about 40% duplicates
    sts = read_split("sts", tmp_path / "sts-train.csv")
    overlap = [
        len(set(a.split()) & set(b.split())) / len(set(a.split()) | set(b.split()))
        for a, b in zip(sts.texts_a, sts.texts_b, strict=True)
    ]
    assert np.corrcoef(overlap, sts.labels)[0, 1] > 0.5  # score follows word overlap
    sst = read_split("sst", tmp_path / "ids-sst-train.csv")
    assert len(sst) == 1200 and np.bincount(sst.labels).min() > 150


def test_deterministic(tmp_path: Path) -> None:
    a = write_demo_data(tmp_path / "a", seed=5, n_train=60, n_dev=20, n_test=20)
    b = write_demo_data(tmp_path / "b", seed=5, n_train=60, n_dev=20, n_test=20)
    c = write_demo_data(tmp_path / "c", seed=6, n_train=60, n_dev=20, n_test=20)
    assert set(a) == set(FILES)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()
    assert a["sts-train.csv"].read_bytes() != c["sts-train.csv"].read_bytes()


def test_tiny_tokenizer_covers_demo_words() -> None:
    lines = Path(tiny_vocab_path()).read_text(encoding="utf-8").splitlines()
    assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(lines) <= 5000 and len(set(lines)) == len(lines)
    tok = build_tiny_tokenizer()
    assert tok.pad_token_id == 0 and len(tok) == len(lines)
    vocab = tok.get_vocab()
    missing = [w for w in demo_vocabulary() if w not in vocab]
    assert not missing
    # Unknown words fall back to characters instead of [UNK]; text is lowercased.
    assert tok.tokenize("Zyzzyva Film") == ["z", "##y", "##z", "##z", "##y", "##v", "##a", "film"]


def _demo_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(["data", "demo", *args])
    r = capsys.readouterr()
    return rc, r.out, r.err


def test_cli_does_not_overwrite_a_data_set_without_force(tmp_path: Path, capsys) -> None:
    # A real data set has the same file names as the demo's.
    real = tmp_path / "ids-sst-train.csv"
    real.write_text("the real training data\n")
    rc, out, err = _demo_cli(capsys, str(tmp_path))
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: {real} exists, and the demo data would replace it (it writes the CS224N file "
        f"names); pass --force to overwrite, or choose another folder"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids-sst-train.csv"]
    assert real.read_text() == "the real training data\n"

    rc, out, err = _demo_cli(capsys, str(tmp_path), "--force")
    assert rc == 0, err
    assert out.strip() == f"wrote 9 files of demo data to {tmp_path}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    assert real.read_text().startswith("\tid\tsentence\tsentiment\n")

    # A second run into a demo folder counts the files it would replace.
    rc, _, err = _demo_cli(capsys, str(tmp_path))
    assert rc == 2 and err.strip().startswith(
        f"error: {real} and 8 more of the demo's files exist, and the demo data would "
        f"replace them")


def test_cli_folder_that_cannot_be_made_is_one_line(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    rc, _, err = _demo_cli(capsys, str(afile))
    assert rc == 2 and err.strip().splitlines() == [f"error: {afile}: not a folder (demo data)"]
    rc, _, err = _demo_cli(capsys, str(afile / "demo"))
    assert rc == 2 and err.strip().splitlines() == [
        f"error: {afile / 'demo'}: cannot create the demo data folder: Not a directory"]
    assert afile.read_text() == "not a folder"
    if Path("/proc/self").is_dir():  # Linux: no folder can be made in /proc, even by root
        rc, _, err = _demo_cli(capsys, "/proc/demo")
        assert rc == 2 and err.strip().splitlines() == [
            "error: /proc/demo: cannot create the demo data folder: No such file or directory"]
