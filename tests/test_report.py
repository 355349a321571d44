"""`mtsweep report`: on a sweep recorded the way the launcher records one (a sweep run with its
params, tags and sweep-file artifact; trial runs with every space key path as a param, "n/a"
where inactive, final metrics and status tags) in a temporary SQLite MLflow store.

A real sweep takes minutes on a small machine; `test_sweep.py` checks that the launcher writes
these records, this module that the report reads them."""

from __future__ import annotations

import csv
import json
import re
import time

import pytest
import yaml

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"
SPACE = {
    "optim.lr": {"float": [5e-4, 3e-3], "log": True},
    "schedule.name": ["round_robin", "round_robin_sum"],
    "tasks.para.head": {"values": ["cosine", "sbert"],
                        "branches": {"cosine": {"tasks.para.head_args.scale": [1.0, 5.0]}}},
}
# (lr, schedule, head, scale, mlflow status, stopped early, metrics or None when failed)
TRIALS = [
    (1.1e-3, "round_robin", "cosine", "5.0", "FINISHED", False, (0.21, 0.62, 0.10)),
    (6.0e-4, "round_robin_sum", "sbert", "n/a", "FINISHED", False, (0.25, 0.70, 0.30)),
    (2.5e-3, "round_robin", "cosine", "1.0", "KILLED", True, (0.15, 0.55, 0.02)),
    (8.0e-4, "round_robin_sum", "cosine", "1.0", "FAILED", False, None),
    (1.6e-3, "round_robin_sum", "sbert", "n/a", "FINISHED", False, (0.30, 0.66, 0.20)),
]


def _record_sweep(tmp_path, experiment: str, metric: str, mode: str) -> tuple[str, str]:
    """A sweep run with its trial runs, as `mtsweep launch` leaves them; (uri, sweep run id)."""
    from mlflow.entities import Metric, Param, RunTag

    from orchestrator.tracking import SweepTracker, get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = get_or_create_experiment(uri, experiment)
    sweep_file = tmp_path / f"{experiment}.yaml"
    # The base is a file beside the original sweep file: the report reads only `space`.
    sweep_file.write_text(yaml.safe_dump({"name": experiment, "base": "trials/tiny.yaml",
                                          "space": SPACE}, sort_keys=False))
    tracker = SweepTracker(uri, exp_id)
    tracker.start_parent(f"{experiment}-20250101-000000", tags={"description": ""},
                         params={"search.algorithm": "random", "search.metric": metric,
                                 "search.mode": mode, "search.num_samples": len(TRIALS)},
                         sweep_file=sweep_file)
    c = tracker.client
    start = int(time.time() * 1000)
    for i, (lr, sched, head, scale, status, early, m) in enumerate(TRIALS):
        run = c.create_run(exp_id, run_name=f"trial_{i}", start_time=start + 1000 * i,
                           tags={"mlflow.parentRunId": tracker.parent_run_id,
                                 "mtsweep.kind": "trial", "mtsweep.ray_trial_id": f"t{i}"})
        params = {"optim.lr": lr, "schedule.name": sched, "tasks.para.head": head,
                  "tasks.para.head_args.scale": scale, "encoder.name": "tiny", "epochs": 2}
        c.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                    tags=[RunTag("mtsweep.stopped_early", str(early).lower())])
        if m is not None:
            sst, para, sts = m
            values = {"sst_acc": sst, "para_acc": para, "sts_corr": sts,
                      "overall": (sst + para + (sts + 1) / 2) / 3,
                      "overall_mean": (sst + para + sts) / 3, "epoch": 1 if early else 2}
            c.log_batch(run.info.run_id, metrics=[Metric(k, v, start, 1)
                                                  for k, v in values.items()])
        c.set_terminated(run.info.run_id, status)
    tracker.end_parent("FINISHED")
    return uri, tracker.parent_run_id


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri, run_id = _record_sweep(tmp, "rep", "overall", "max")
    return tmp, uri, run_id


def _report(capsys, *args: str) -> tuple[int, str, str]:
    from orchestrator.cli import main

    rc = main(["report", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_markdown_report_table_importances_plots_and_artifacts(recorded, capsys, tmp_path):
    from mlflow.tracking import MlflowClient

    _, uri, run_id = recorded
    rc, out, err = _report(capsys, "rep", "--tracking-uri", uri, "--output",
                           str(tmp_path / "r.md"), "--json")
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rows"] == len(TRIALS) and result["report"] == str(tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()

    # The results table: one row per trial, best overall first, the failed trial last.
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:2] == ["#", "run"] and header[-5:] == ["SST acc", "QQP acc", "STS r",
                                                          "overall", "overall_mean"]
    assert {"optim.lr", "schedule.name", "para.head", "head_args.scale", "status",
            "epochs"} <= set(header) and "encoder.name" not in header  # constant: no column
    rows = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|"))))
            for ln in lines[1:1 + len(TRIALS)]]
    overall = [float(r["overall"]) for r in rows[:-1]]
    assert overall == sorted(overall, reverse=True)
    assert rows[-1]["status"] == "failed" and rows[-1]["overall"] == "-"
    assert [r["status"] for r in rows].count("stopped early") == 1
    assert {r["head_args.scale"] for r in rows if r["para.head"] == "sbert"} == {"n/a"}

    # Which choices mattered: fANOVA importances over the sampled params (sum 1), per value.
    imp = result["importances"]
    assert imp and set(imp) <= set(SPACE) | {"tasks.para.head_args.scale"}
    assert sum(imp.values()) == pytest.approx(1.0, abs=1e-6)
    assert "fANOVA" in text and "| schedule.name   | round_robin_sum |" in text
    assert "optim.lr" not in text.split("## Objective per value")[1].split("## Plots")[0]

    # Plots: valid PNGs beside the report, linked from it.
    assert [p.rsplit("/", 1)[-1] for p in result["plots"]] == [
        "objective.png", "parallel_coordinates.png", "per_task_by_schedule.png"]
    for p in result["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == PNG
        assert f"r-plots/{p.rsplit('/', 1)[-1]}" in text

    # Everything is logged to the sweep run under report/.
    c = MlflowClient(uri)
    arts = {a.path for a in c.list_artifacts(run_id, "report")}
    assert arts == {"report/r.md", "report/r-plots"}
    assert {a.path for a in c.list_artifacts(run_id, "report/r-plots")} == {
        "report/r-plots/objective.png", "report/r-plots/parallel_coordinates.png",
        "report/r-plots/per_task_by_schedule.png"}


def test_csv_and_html_by_sweep_run_id(recorded, capsys, tmp_path):
    _, uri, run_id = recorded
    rc, _, err = _report(capsys, run_id, "--tracking-uri", uri, "--format", "csv", "--output",
                         str(tmp_path / "t.csv"))
    assert rc == 0, err
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(TRIALS) and rows[0]["tasks.para.head_args.scale"] in ("n/a", "5.0")
    scores = [float(r["overall"]) for r in rows if r["overall"]]
    assert scores == sorted(scores, reverse=True) and rows[-1]["status"] == "failed"

    rc, _, err = _report(capsys, run_id, "--tracking-uri", uri, "--format", "html",
                         "--output", str(tmp_path / "t.html"))
    assert rc == 0, err
    page = (tmp_path / "t.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<img ") == 3
    assert "data:image/png;base64," in page and page.count("<tr>") >= len(TRIALS) + 1


def test_default_output_name(recorded, capsys, tmp_path, monkeypatch):
    _, uri, _ = recorded
    monkeypatch.chdir(tmp_path)
    rc, out, err = _report(capsys, "rep", "--tracking-uri", uri)
    assert rc == 0, err
    assert (tmp_path / "report-rep-20250101-000000.md").is_file()
    assert (tmp_path / "report-rep-20250101-000000-plots" / "objective.png").is_file()
    assert "report: report-rep-20250101-000000.md" in out


def test_multi_objective_pareto_front(tmp_path, capsys):
    uri, _ = _record_sweep(tmp_path, "mo", "sst_acc,sts_corr", "max,max")
    rc, out, err = _report(capsys, "mo", "--tracking-uri", uri, "--output",
                           str(tmp_path / "mo.md"), "--json")
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["plots"][-1].endswith("pareto_front.png")
    with open(result["plots"][-1], "rb") as f:
        assert f.read(8) == PNG
    front = (tmp_path / "mo.md").read_text().split("## Pareto front")[1].split("## Plots")[0]
    # (sst, sts): (0.30, 0.20) and (0.25, 0.30) are non-dominated; the others are dominated.
    assert re.search(r"0\.3000 *\| 0\.2000", front) and re.search(r"0\.2500 *\| 0\.3000", front)
    assert "0.2100" not in front and "0.1500" not in front


def test_too_few_trials_gives_a_note(tmp_path):
    from orchestrator.report import Sweep, Trial, importances

    t = Trial("a" * 32, "t0", 0, "done", {"optim.lr": "0.001"}, {"overall": 0.4})
    sweep = Sweep("b" * 32, "s", "e", "sqlite://", ["overall"], ["max"], [], [t])
    imp, note = importances(sweep)
    assert imp == {} and "at least 2 trials" in note


@pytest.mark.parametrize("target", ["no-such-experiment", "0123456789abcdef0123456789abcdef"])
def test_unknown_experiment_or_run_is_one_line_exit_2(recorded, capsys, target):
    _, uri, _ = recorded
    rc, out, err = _report(capsys, target, "--tracking-uri", uri)
    assert rc == 2
    assert err.strip().count("\n") == 0 and err.startswith("error: ") and target in err
    assert "Traceback" not in err


def test_missing_store_is_not_created(tmp_path, capsys):
    rc, _, err = _report(capsys, "rep", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert rc == 2 and "does not exist" in err and not (tmp_path / "none.db").exists()


def test_the_sweep_table_gives_float_parameters_four_significant_digits():
    """The table `mtsweep launch` prints at the end: parameters as a reader compares them."""
    from orchestrator.launch import format_table

    summary = {"trials": [
        {"status": "FINISHED", "metrics": {"epoch": 3, "sst_acc": 0.7634, "overall": 0.6776},
         "params": {"optim.lr": "0.0010615360772719654", "tasks.para.head": "sbert",
                    "schedule.args.alpha_end": "n/a", "batch_size": "32"}},
        {"status": "KILLED", "metrics": {}, "params": {"optim.lr": 1e-05}},
    ]}
    keys = ["optim.lr", "tasks.para.head", "schedule.args.alpha_end", "batch_size"]
    lines = format_table(summary, keys).splitlines()
    assert lines[0].split("|")[3:7] == [" optim.lr ", " para.head ", " args.alpha_end ",
                                        " batch_size "]
    first = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert first[:6] == ["1", "done", "0.001062", "sbert", "n/a", "32"]
    assert first[6:9] == ["3", "0.763", "-"] and first[-2] == "0.678"
    second = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert second[:4] == ["2", "stopped", "1e-05", ""] and second[6] == "-"
