"""Bad input through the real CLI (`python -m orchestrator.cli`, a subprocess): each case exits
non-zero with one line on stderr naming the file and the key or line, no traceback, and leaves
nothing half-written (no output folder, no token-cache entry, no runs, no MLflow run).

`test_readers.py` covers the readers function by function, `test_space.py` every bad sweep file
through `load_sweep`, and `test_sweep.py` three bad sweep files through `mtsweep launch`
(unknown search algorithm, reversed bounds, zero workers); these are the end-to-end cases
beyond those.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_dict
from .test_sweep import _mtsweep

ROWS = 40  # data rows kept in each copied demo file: reading and tokenizing stay instant

FILES = {"sst": ("ids-sst-train.csv", "ids-sst-dev.csv"),
         "para": ("quora-train.csv", "quora-dev.csv"),
         "sts": ("sts-train.csv", "sts-dev.csv")}


def _one_error_line(stderr: str) -> str:
    """The single line a user error prints (exit status 2), checked to be just that."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------
# Data files: `mtsweep train` on a small copy of the demo data with one file damaged.


@pytest.fixture
def small_data(tmp_path: Path, demo_dir: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for names in FILES.values():
        for name in names:
            lines = (demo_dir / name).read_text(encoding="utf-8").splitlines(keepends=True)
            (folder / name).write_text("".join(lines[: ROWS + 1]), encoding="utf-8")
    return folder


def _train(tmp_path: Path, data: Path):
    raw = tiny_dict(data, epochs=1)
    raw["data"]["train_limit"] = {"sst": 16, "para": 16, "sts": 16}
    raw["data"]["dev_limit"] = {"sst": 16, "para": 16, "sts": 16}
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump(raw))
    return _mtsweep(["train", str(config), "--out", str(tmp_path / "out"), "--cpu"],
                    cwd=tmp_path, timeout=300, MTSWEEP_CACHE=str(tmp_path / "cache"))


def _replace_field(path: Path, line: int, column: int, value: str) -> None:
    """Set one tab-separated field of one line (1-based line number, as messages count)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    fields = lines[line - 1].split("\t")
    fields[column] = value
    lines[line - 1] = "\t".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")


def _set_label(name: str, line: int, value: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        _replace_field(d / name, line, -1, value)
        return d / name
    return damage


def _remove_dir(d: Path) -> Path:
    shutil.rmtree(d)
    return d


def _dir_is_a_file(d: Path) -> Path:
    shutil.rmtree(d)
    d.write_text("not a folder\n")
    return d


def _remove(name: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        (d / name).unlink()
        return d / name
    return damage


def _rename_column(name: str, old: str, new: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        text = (d / name).read_text(encoding="utf-8")
        header, rest = text.split("\n", 1)
        (d / name).write_text(header.replace(old, new) + "\n" + rest, encoding="utf-8")
        return d / name
    return damage


def _zero_bytes(name: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        (d / name).write_bytes(b"")
        return d / name
    return damage


def _header_only(name: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        header = (d / name).read_text(encoding="utf-8").split("\n", 1)[0]
        (d / name).write_text(header + "\n", encoding="utf-8")
        return d / name
    return damage


def _every_label(name: str, value: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        for line in range(2, ROWS + 2):
            _replace_field(d / name, line, -1, value)
        return d / name
    return damage


def _not_utf8(name: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        data = (d / name).read_bytes().split(b"\n")
        data[5] = data[5].replace(b" ", b" \xff\xfe ", 1)
        (d / name).write_bytes(b"\n".join(data))
        return d / name
    return damage


# (id, damage: data folder -> the path the message must name, fragments of the message)
BAD_DATA = [
    ("missing-data-dir", _remove_dir, ["data.dir", "does not exist"]),
    ("data-dir-is-a-file", _dir_is_a_file, ["data.dir", "is not a folder"]),
    ("missing-task-file", _remove("quora-dev.csv"),
     ["not found", "the para dev set", "data.files.para.dev"]),
    ("header-lacks-a-column", _rename_column("sts-dev.csv", "similarity", "score"),
     ["missing column(s) 'similarity'", "columns found:", "'score'"]),
    ("sst-label-7", _set_label("ids-sst-train.csv", 7, "7"),
     [":7: sst label '7' is not a class in 0..4"]),
    ("sts-score-6.2", _set_label("sts-train.csv", 9, "6.2"),
     [":9: sts label '6.2' is outside [0, 5]"]),
    ("qqp-label-2", _set_label("quora-dev.csv", 4, "2"), [":4: para label '2' is not a class in 0..1"]),
    ("zero-bytes", _zero_bytes("ids-sst-dev.csv"), ["empty file (no header, no data rows)"]),
    ("header-only", _header_only("sts-train.csv"), ["no data rows"]),
    ("every-label-non-numeric", _every_label("quora-train.csv", "yes"),
     [f"no data rows ({ROWS} malformed rows skipped; line 2: label 'yes' is not a number)"]),
    ("not-utf8", _not_utf8("ids-sst-train.csv"), ["not UTF-8 text"]),
]


@pytest.mark.parametrize("damage, fragments", [c[1:] for c in BAD_DATA],
                         ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_one_line_and_writes_nothing(tmp_path, small_data, damage, fragments):
    named = damage(small_data)
    r = _train(tmp_path, small_data)
    assert r.returncode == 2, r.stderr[-3000:]
    line = _one_error_line(r.stderr)
    assert str(named) in line, line
    for fragment in fragments:
        assert fragment in line, line
    # Every file is read before anything is tokenized or written.
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("damage, why", [
    (lambda d: _replace_field(d / "quora-train.csv", 5, -1, "abc"), "label 'abc' is not a number"),
    (lambda d: _replace_field(d / "quora-train.csv", 5, 2, "one\textra field"),
     "6 fields, the header has 5"),
], ids=["non-numeric-label", "wrong-number-of-fields"])
def test_a_malformed_row_is_skipped_with_one_warning_naming_file_and_line(
        tmp_path, small_data, damage, why):
    """The real CS224N quora-train.csv has two malformed rows, so a malformed row is skipped
    (not fatal): one warning line names the file, the line and why, and training goes on."""
    damage(small_data)
    r = _train(tmp_path, small_data)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {small_data / 'quora-train.csv'}: skipped 1 malformed rows "
                        f"(lines 5); line 5: {why}"], r.stderr[-3000:]
    assert (tmp_path / "out" / "summary.json").is_file()


# --------------------------------------------------------------------------------------------
# Sweep files: `mtsweep launch` stops before Ray, MLflow or any folder.


@pytest.fixture
def trial_file(tmp_path: Path, demo_dir: Path) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tiny_dict(demo_dir, epochs=1)))
    return path


BASE = "base: trial.yaml\n"
BAD_SWEEPS = [
    ("not-yaml", "base: [unclosed\nspace: {}\n", ["not valid YAML (line 2, column 6)"]),
    ("empty", "", ["the file is empty"]),
    ("unknown-section", BASE + "serach: {algorithm: tpe}\n", ["serach: unknown section"]),
    ("unknown-key-in-base", "base: {encoder: {size: 2}}\n",
     ["base: not a valid trial config: encoder.size: unknown key"]),
    ("unknown-key-in-base-file", "base: bad_trial.yaml\n",
     ["base: bad_trial.yaml: not a valid trial config: encoder.size: unknown key"]),
    ("unknown-key-in-space", BASE + "space: {encoder.size: [1, 2]}\n",
     ["space.encoder.size: unknown trial-config key 'size'"]),
    ("when-missing-parameter",
     BASE + "space:\n  tasks.sts.weight: {float: [1, 2], when: {schedule.nam: x}}\n",
     ["space.tasks.sts.weight.when.schedule.nam: no parameter 'schedule.nam'"]),
    ("unknown-head", BASE + "space: {tasks.para.head: [cosine, siamese]}\n",
     ["space.tasks.para.head", "unknown head 'siamese'; valid: concat, cosine"]),
    ("unknown-loss", BASE + "space: {tasks.sts.loss: [mse, huber]}\n",
     ["space.tasks.sts.loss", "unknown loss 'huber'; valid: bce"]),
    ("unknown-schedule", BASE + "fixed: {schedule.name: random}\n",
     ["fixed.schedule.name", "unknown schedule 'random'; valid: annealed"]),
    ("unknown-scheduler", BASE + "scheduler: {name: pbt}\n",
     ["scheduler.name: unknown scheduler 'pbt'; valid: fifo, asha"]),
    ("grace-beyond-epochs", BASE + "scheduler: {name: asha, args: {grace_period: 5}}\n",
     ["scheduler.args.grace_period: 5 is more than the most epochs a trial of this sweep "
      "runs (1), ASHA's max_t"]),
]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--num-samples", "0"], "argument --num-samples: expected a whole number ≥ 1, got '0'"),
    (["--num-cpus", "-1"], "argument --num-cpus: expected a whole number ≥ 1, got '-1'"),
    (["--storage", "/proc/mtsweep-runs"],
     "error: /proc/mtsweep-runs: cannot create the --storage folder: No such file or directory"),
    (["--address", "127.0.0.1:PORT"], "error: cannot reach the Ray cluster at 127.0.0.1:PORT: "
                                      "Connection refused"),
    (["--address", "no-port"], "error: --address no-port: expected host:port"),
    (["--set", "fixed.data.dir=/nope"], "ok.yaml: data.dir: data directory /nope does not exist"),
    (["--tracking-uri", "sqlite:////proc/mtsweep.db"],
     "error: sqlite:////proc/mtsweep.db: cannot create the database: No such file or directory"),
    (["--tracking-uri", "file:///tmp/mlruns"], "error: file:///tmp/mlruns: a folder (MLflow's "
     "file store) is off by default in MLflow 3; use a database, e.g. --tracking-uri "
     "sqlite:////tmp/mlruns.db"),
    (["--tracking-uri", "http://me:s3cret@[::1"],
     "error: cannot reach the MLflow tracking store http://me:***@[::1: Invalid IPv6 URL"),
], ids=["num-samples", "num-cpus", "storage", "address", "address-form", "data-dir",
        "sqlite-unwritable", "file-store", "bad-url"])
def test_bad_launch_options_are_one_line_and_start_nothing(tmp_path, trial_file, args, message):
    """Checked before Ray, MLflow or any folder is touched (an unreachable Ray address would
    otherwise be retried by Ray for many minutes)."""
    port = str(_closed_port())
    args = [a.replace("PORT", port) for a in args]
    sweep = tmp_path / "ok.yaml"
    sweep.write_text(BASE + "search: {num_samples: 1}\n")
    r = _mtsweep(["launch", str(sweep), *args], cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr and message.replace("PORT", port) in r.stderr, r.stderr
    assert "s3cret" not in r.stderr + r.stdout
    assert not (tmp_path / "runs").exists()
    if (tmp_path / "mlflow.db").exists():
        from mlflow.tracking import MlflowClient

        c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert c.search_runs([e.experiment_id for e in c.search_experiments()]) == []


@pytest.mark.parametrize("text, fragments", [c[1:] for c in BAD_SWEEPS],
                         ids=[c[0] for c in BAD_SWEEPS])
@pytest.mark.parametrize("dry_run", [False, True], ids=["launch", "dry-run"])
def test_bad_sweep_file_is_one_line_and_starts_nothing(tmp_path, trial_file, text, fragments,
                                                       dry_run):
    (tmp_path / "bad_trial.yaml").write_text("epochs: 1\nencoder: {size: 2}\n")
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(text)
    r = _mtsweep(["launch", str(sweep), *(["--dry-run"] if dry_run else [])], cwd=tmp_path,
                 timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    line = _one_error_line(r.stderr)
    assert line.startswith(f"error: {sweep}: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow  # starts a local Ray (about 10 s, more on a busy machine)
def test_resources_the_cluster_cannot_satisfy_are_refused_before_any_trial(tmp_path, trial_file):
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "gpus.yaml"
    sweep.write_text("base: trial.yaml\nsearch: {num_samples: 1}\n"
                     "resources: {workers: 1, gpus_per_worker: 4}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    ray_temps = set(Path("/tmp").glob("mtsw-ray-*"))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "launch", str(sweep)],
                            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        # The banner `sweep gpus: 1 trials, ...` is printed once the resources were accepted.
        banner = proc.stdout.readline()
        if banner.startswith("sweep "):
            proc.send_signal(signal.SIGTERM)  # stops the sweep like Ctrl-C
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not banner.startswith("sweep "), f"the sweep started: {banner}{stderr[-3000:]}"
    assert proc.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(f"error: {sweep}: resources.gpus_per_worker: 4 GPU(s) per worker")
    assert "no node of the cluster has that many" in errors[0]
    # The local Ray started for it and stopped again, leaving no temp folder (its logs are
    # kept only after an unexpected error).
    assert set(Path("/tmp").glob("mtsw-ray-*")) <= ray_temps
    # Refused before any trial: no Ray Tune folder, no sweep or trial run.
    assert not (tmp_path / "runs").exists()
    if (tmp_path / "mlflow.db").exists():
        c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
        assert runs == []


# --------------------------------------------------------------------------------------------
# Run ids that do not exist: `mtsweep reproduce RUN_ID` and `mtsweep predict RUN_ID`.

RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> str:
    """A real SQLite tracking store with an experiment and a run, but not RUN_ID."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    c = MlflowClient(uri)
    c.create_run(c.create_experiment("other"))
    return uri


def _store(kind: str, tmp_path: Path, empty_store: str) -> tuple[str, str, Path | None]:
    """(tracking URI to pass, as messages show it, a path that must not be created)."""
    if kind == "sqlite-without-the-run":
        return empty_store, empty_store, None
    if kind == "sqlite-no-such-file":
        db = tmp_path / "nowhere" / "mlflow.db"
        return f"sqlite:///{db}", f"sqlite:///{db}", db.parent
    folder = tmp_path / "no such folder"  # a plain path: MLflow's file store
    return str(folder), folder.as_uri(), folder


@pytest.mark.parametrize("kind", ["sqlite-without-the-run", "sqlite-no-such-file",
                                  "folder-no-such-path"])
@pytest.mark.parametrize("command", ["reproduce", "predict"])
def test_unknown_run_id_is_one_line_naming_it(tmp_path, demo_dir, empty_store, command, kind):
    uri, shown, not_created = _store(kind, tmp_path, empty_store)
    extra = ["--data-dir", str(demo_dir)] if command == "predict" else []
    r = _mtsweep([command, RUN_ID, "--tracking-uri", uri, *extra], cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    line = _one_error_line(r.stderr)
    assert RUN_ID in line and shown in line, line
    if kind == "sqlite-without-the-run":
        assert "not found" in line, line
    else:
        why = "no such database" if kind.startswith("sqlite") else "no such folder"
        assert line.endswith(f"({why})"), line
        assert not not_created.exists(), "looking a run up must not create a tracking store"
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.glob("*output.csv"))
