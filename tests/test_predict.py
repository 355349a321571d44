"""`mtsweep predict`: CS224N output files from a `mtsweep train --out` folder or an MLflow run,
dev metrics equal to the training run's, skipped tasks, tampered checkpoints, missing tokenizer
files, malformed input rows, unknown runs and runs without a model."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import cli
from orchestrator.predict import OUTPUT_COLUMN, _mismatch

from .conftest import REPO, tiny_dict

SCORES = ("sst_acc", "para_acc", "sts_corr", "overall", "overall_mean")
DEV_FILES = {"sst": "ids-sst-dev.csv", "para": "quora-dev.csv", "sts": "sts-dev.csv"}
TEST_FILES = {"sst": "ids-sst-test-student.csv", "para": "quora-test-student.csv",
              "sts": "sts-test-student.csv"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir, cache_dir) -> dict:
    """A tiny model trained by `mtsweep train --out` for one short epoch, on the full dev sets."""
    folder = tmp_path_factory.mktemp("predict-train")
    raw = tiny_dict(demo_dir, epochs=1)
    raw["data"]["train_limit"] = {"sst": 48, "para": 48, "sts": 48}
    del raw["data"]["dev_limit"]  # the whole dev sets, as predict sees them
    cfg = folder / "trial.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = folder / "out"
    assert cli.main(["train", str(cfg), "--out", str(out), "--cpu"]) == 0
    return {"out": out, "summary": json.loads((out / "summary.json").read_text())}


def _predict(capsys, *args: str) -> tuple[int, str, str, dict | None]:
    capsys.readouterr()
    rc = cli.main(["predict", *args, "--cpu", "--json"])
    r = capsys.readouterr()
    lines = r.out.strip().splitlines()
    last = json.loads(lines[-1]) if rc == 0 and lines else None
    return rc, r.out, r.err, last


def _input_ids(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    col = [h.strip() for h in rows[0]].index("id")
    return [r[col] for r in rows[1:] if r]


def _check_file(path: Path, task: str, ids: list[str]) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""  # ends with a newline
    lines = lines[:-1]
    assert lines[0] == f"id \t {OUTPUT_COLUMN[task]} "  # the reference code's exact header
    assert len(lines) == len(ids) + 1
    values = []
    for line, want in zip(lines[1:], ids):
        got, value = line.rstrip(" ").split(" , ")
        assert got == want
        values.append(value)
    if task == "sst":
        assert {int(v) for v in values} <= set(range(5))
    elif task == "para":
        assert set(values) <= {"0", "1"}
    else:
        assert all(isinstance(float(v), float) for v in values)
    return values


def test_dev_files_and_metrics_match_training(trained, demo_dir, tmp_path, capsys):
    rc, out, err, result = _predict(capsys, str(trained["out"]), "--data-dir", str(demo_dir),
                                    "--out", str(tmp_path))
    assert rc == 0, err
    assert result["skipped"] == [] and set(result["files"]) == {"sst", "para", "sts"}
    for task, name in DEV_FILES.items():
        path = tmp_path / f"{task}-dev-output.csv"
        assert result["files"][task] == str(path)
        _check_file(path, task, _input_ids(demo_dir / name))
    assert not list(tmp_path.glob(".*.tmp"))
    # Same weights, same batches, same metric code: the training run's final dev metrics.
    for key in SCORES:
        assert result["metrics"][key] == trained["summary"][key], key
    assert "dev metrics: sst_acc" in out


def test_test_student_files(trained, demo_dir, tmp_path, capsys):
    rc, out, err, result = _predict(capsys, str(trained["out"] / "model"), "--data-dir",
                                    str(demo_dir), "--split", "test", "--out", str(tmp_path))
    assert rc == 0, err
    assert result["metrics"] == {} and result["skipped"] == []
    for task, name in TEST_FILES.items():
        _check_file(tmp_path / f"{task}-test-output.csv", task, _input_ids(demo_dir / name))
    assert "no labels" in out


def test_missing_task_file_is_skipped_with_a_note(trained, demo_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for task in ("sst", "para"):
        shutil.copy(demo_dir / TEST_FILES[task], data)
    rc, _, err, result = _predict(capsys, str(trained["out"]), "--data-dir", str(data),
                                  "--split", "test", "--out", str(tmp_path / "pred"))
    assert rc == 0, err
    assert result["skipped"] == ["sts"] and set(result["files"]) == {"sst", "para"}
    assert "note: no sts test file" in err and "sts-test-student.csv" in err
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "para-test-output.csv", "sst-test-output.csv"]


def _copied_model(trained, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(trained["out"] / "model", model)
    return model


def _predict_errors(capsys, model: Path, demo_dir, tmp_path) -> list[str]:
    """The error lines of a predict that must refuse `model` (exit 2)."""
    rc, _, err, _ = _predict(capsys, str(model), "--data-dir", str(demo_dir), "--out",
                             str(tmp_path / "pred"))
    assert rc == 2
    return err.strip().splitlines()


def test_tampered_checkpoint_is_one_line(trained, demo_dir, tmp_path, capsys):
    model = _copied_model(trained, tmp_path)
    cfg = yaml.safe_load((model / "config.yaml").read_text())
    cfg["tasks"]["para"].update(head="sbert", head_args={})  # other parameter names
    cfg["tasks"]["sst"]["head_args"] = {"hidden_size": 16}  # other shapes
    (model / "config.yaml").write_text(yaml.safe_dump(cfg))
    line, = _predict_errors(capsys, model, demo_dir, tmp_path)
    assert line.startswith(f"error: checkpoint {model / 'model.safetensors'} does not match its "
                           f"config: ")
    assert "missing key(s): heads.para." in line and "unexpected key(s): heads.para." in line
    assert "shape mismatch(es): heads.sst.net.1.weight (64, 64) in the checkpoint vs (16, 64)" \
        in line
    assert not (tmp_path / "pred").exists()


def test_mismatch_summary():
    import torch

    model = {"a": torch.zeros(2), "b": torch.zeros(3, 4)}
    assert _mismatch(model, {"a": torch.ones(2), "b": torch.ones(3, 4)}) is None
    got = _mismatch(model, {"b": torch.ones(4, 3), **{f"x{i}": torch.ones(1) for i in range(6)}})
    assert got == ("1 missing key(s): a; 6 unexpected key(s): x0, x1, x2, x3, … (2 more); "
                   "1 shape mismatch(es): b (4, 3) in the checkpoint vs (3, 4) in the model")


def test_mlflow_run_source(trained, demo_dir, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = get_or_create_experiment(uri, "predict-test")
    c = MlflowClient(uri)
    with_model = c.create_run(exp).info.run_id
    c.log_artifacts(with_model, str(trained["out"] / "model"), "model")
    without = c.create_run(exp).info.run_id

    rc, _, err, result = _predict(capsys, with_model, "--tracking-uri", uri, "--data-dir",
                                  str(demo_dir), "--out", str(tmp_path / "pred"))
    assert rc == 0, err
    logged = c.get_run(with_model).data.metrics
    for key in SCORES:
        assert result["metrics"][key] == trained["summary"][key]
        assert logged[f"predict_dev_{key}"] == pytest.approx(result["metrics"][key])

    rc, _, err, _ = _predict(capsys, without, "--tracking-uri", uri, "--data-dir", str(demo_dir))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "has no `model/` artifact" in err and "tracking.log_model: true" in err
    assert "mtsweep train" in err

    rc, _, err, _ = _predict(capsys, "0" * 32, "--tracking-uri", uri, "--data-dir", str(demo_dir))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not found" in err


def test_unknown_run_id_cli(tmp_path, demo_dir):
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "predict", "no-such-run", "--data-dir",
         str(demo_dir), "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: no-such-run is neither a folder nor a run in "
                                f"sqlite:///{tmp_path / 'none.db'} (no such database)")
    assert not (tmp_path / "none.db").exists()


def test_missing_folder_is_not_taken_for_a_run_id(tmp_path, capsys):
    rc, _, err, _ = _predict(capsys, str(tmp_path / "nope"), "--data-dir", str(tmp_path))
    assert rc == 2 and err.strip().startswith(f"error: {tmp_path / 'nope'}: no such folder")


@pytest.mark.parametrize("removed, named", [
    (["tokenizer.json"], "tokenizer.json (or another vocabulary file, e.g. vocab.txt)"),
    (["tokenizer.json", "tokenizer_config.json"],
     "tokenizer_config.json and tokenizer.json (or another vocabulary file, e.g. vocab.txt)"),
    (["tokenizer_config.json"], "tokenizer_config.json"),
], ids=["vocabulary", "both", "config"])
def test_missing_tokenizer_files_are_one_line(trained, demo_dir, tmp_path, capsys, removed,
                                              named):
    # Without its vocabulary transformers would build a tokenizer of the 5 special tokens and
    # predict from [UNK]s.
    model = _copied_model(trained, tmp_path)
    for name in removed:
        (model / "encoder" / name).unlink()
    assert _predict_errors(capsys, model, demo_dir, tmp_path) == [
        f"error: {model / 'encoder'} lacks its tokenizer files: {named} (`mtsweep train --out` "
        f"saves them there)"]
    assert not (tmp_path / "pred").exists()


def test_tokenizer_of_another_model_is_one_line(trained, demo_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    model = _copied_model(trained, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(model / "encoder")
    size = len(tokenizer)
    tokenizer.add_tokens([f"newword{i}" for i in range(3)])  # ids past the embedding table
    tokenizer.save_pretrained(model / "encoder")
    assert _predict_errors(capsys, model, demo_dir, tmp_path) == [
        f"error: {model / 'encoder'}: its tokenizer has {size + 3} tokens, more than the "
        f"encoder's vocabulary of {size}: the tokenizer files are not this model's"]


@pytest.mark.parametrize("split", ["test", "dev"])
def test_malformed_rows_are_refused(trained, demo_dir, tmp_path, capsys, split):
    # Training skips malformed rows with a warning; a prediction file one id short would be
    # wrong, so predict refuses and writes nothing (not even the good files).
    files = TEST_FILES if split == "test" else DEV_FILES
    data = tmp_path / "data"
    data.mkdir()
    for name in files.values():
        shutil.copy(demo_dir / name, data)
    bad = data / files["para"]
    lines = bad.read_text().split("\n")
    lines[4] = lines[4].rsplit("\t", 1)[0]  # line 5: a field short
    lines[7] += "\textra"  # line 8: a field too many
    bad.write_text("\n".join(lines))
    rc, out, err, _ = _predict(capsys, str(trained["out"]), "--data-dir", str(data), "--split",
                               split, "--out", str(tmp_path / "pred"))
    n = 4 if split == "test" else 5
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: {bad}: 2 malformed row(s), line(s) 5, 8; line 5: {n - 1} fields, the header "
        f"has {n}; every row needs a prediction, so nothing was written (fix or remove the "
        f"row(s))"]
    assert not (tmp_path / "pred").exists()


def test_sweep_and_reproduction_runs_point_to_a_trial_with_a_model(trained, demo_dir, tmp_path,
                                                                    capsys):
    from mlflow.tracking import MlflowClient

    from orchestrator.reproduce import REPRODUCES
    from orchestrator.tracking import KIND, PARENT, get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = get_or_create_experiment(uri, "predict-kinds")
    c = MlflowClient(uri)

    def run(kind: str, parent: str | None = None, overall: float | None = None,
            model: bool = False, **tags: str) -> str:
        tags = {KIND: kind, **({PARENT: parent} if parent else {}), **tags}
        run_id = c.create_run(exp, tags=tags).info.run_id
        if overall is not None:
            c.log_metric(run_id, "overall", overall)
        if model:
            c.log_artifacts(run_id, str(trained["out"] / "model"), "model")
        c.set_terminated(run_id)
        return run_id

    sweep = run("sweep")
    run("trial", sweep, overall=0.9)  # the best, but stopped early: no model
    with_model = run("trial", sweep, overall=0.7, model=True)
    run("trial", sweep, overall=0.5, model=True)
    bare_sweep = run("sweep")
    run("trial", bare_sweep, overall=0.8)
    reproduction = run("reproduction", overall=0.7, **{REPRODUCES: with_model})

    def error(source: str) -> str:
        rc, _, err, _ = _predict(capsys, source, "--tracking-uri", uri, "--data-dir",
                                 str(demo_dir), "--out", str(tmp_path / "pred"))
        assert rc == 2
        line, = err.strip().splitlines()
        return line

    assert error(sweep) == (
        f"error: run {sweep} is a sweep run, whose models are logged by its trial runs: pass one "
        f"of those, e.g. its best, {with_model} (overall 0.7000)")
    assert error(bare_sweep) == (
        f"error: run {bare_sweep} is a sweep run, and none of its trial runs has a `model/` "
        f"artifact (`mtsweep report {bare_sweep}` lists them); to get one, set "
        f"`tracking.log_model: true` in the sweep file and run the sweep again, or train with "
        f"`mtsweep train CONFIG --out DIR` and pass DIR")
    assert error(reproduction) == (
        f"error: run {reproduction} is a reproduction run, and those do not log models: pass "
        f"the run it reproduces, {with_model}")
    assert not (tmp_path / "pred").exists()
