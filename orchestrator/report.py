"""`mtsweep report EXPERIMENT_OR_SWEEP_RUN`: what a recorded sweep found.

Reads the sweep run and its trial runs from MLflow and writes one report: the results table
(one row per trial, best first, like the study's Table 3), which choices mattered (fANOVA
parameter importances from an in-memory Optuna study, and the objective per value of each
scientific parameter), plots (objective over trials, parallel coordinates, per-task metrics by
schedule) and, for a multi-objective sweep, the Pareto front. The report and its plots are also
logged to the sweep run as artifacts under `report/`.
"""

from __future__ import annotations

import argparse
import base64
import csv
import fnmatch
import html
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.tracking import (
    INACTIVE,
    KIND,
    PARENT,
    STOPPED_EARLY,
    TrackingError,
    check_reachable,
    client,
    missing_local_store,
    redact,
    resolve_tracking_uri,
)
from trainables.errors import MtsweepError

ARTIFACT_DIR = "report"
FORMATS = ("md", "csv", "html")
# Task metric → table column (the study's Table 3 headings).
METRIC_COLUMNS = {"sst_acc": "SST acc", "para_acc": "QQP acc", "sts_corr": "STS r",
                  "overall": "overall", "overall_mean": "overall_mean"}
TASK_PLOT_METRICS = ("sst_acc", "para_acc", "sts_corr")
# Scientific parameters (the choices the study compares); the rest are nuisance parameters.
SCIENTIFIC = ("tasks.*.head", "tasks.*.loss", "schedule.name", "schedule.epoch_length",
              "weighting.name", "gradient.name", "data.train_limit.*", "encoder.*", "tag.*")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class ReportError(MtsweepError):
    """The sweep to report on cannot be found."""


# ---- what was recorded ---------------------------------------------------------------------


@dataclass
class Column:
    """A sampled parameter (key path) as the report treats it."""

    key: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: list[str] = field(default_factory=list)  # categorical: choices as logged (str)

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")

    @property
    def scientific(self) -> bool:
        return self.kind == "categorical" and any(fnmatch.fnmatchcase(self.key, pat)
                                                  for pat in SCIENTIFIC)


@dataclass
class Trial:
    """One trial run: its sampled params (as logged), final metrics and status."""

    run_id: str
    name: str
    start_time: int
    status: str  # done | stopped early | failed | running
    params: dict[str, str]
    metrics: dict[str, float]

    def value(self, metric: str) -> float | None:
        v = self.metrics.get(metric)
        return v if v is not None and math.isfinite(v) else None

    def number(self, key: str) -> float | None:
        """A param as a number; None when inactive or not a number."""
        try:
            return float(self.params.get(key, INACTIVE))
        except ValueError:
            return None


@dataclass
class Sweep:
    """A sweep run and its trials (in start order)."""

    run_id: str
    run_name: str
    experiment: str
    tracking_uri: str
    metrics: list[str]
    modes: list[str]
    columns: list[Column]
    trials: list[Trial]
    notes: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def mode(self) -> str:
        return self.modes[0]

    def ranked(self) -> list[Trial]:
        """Trials best first by the objective; those without a value last (in start order)."""
        sign = -1 if self.mode == "max" else 1
        return sorted(self.trials, key=lambda t: (t.value(self.metric) is None,
                                                  sign * (t.value(self.metric) or 0.0)))

    def scored(self) -> list[Trial]:
        """Trials that ended with a value of the objective (failed ones left out)."""
        return [t for t in self.trials
                if t.status != "failed" and t.value(self.metric) is not None]


def _status(run) -> str:
    status = run.info.status
    if status == "FAILED":
        return "failed"
    if status == "KILLED" or run.data.tags.get(STOPPED_EARLY) == "true":
        return "stopped early"
    return "done" if status == "FINISHED" else status.lower()


def find_sweep_run(tracking_uri: str, target: str):
    """The sweep run `target` names: a sweep run id (a trial run id leads to its sweep), else
    an experiment name (its most recent sweep run)."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    if _RUN_ID.match(target):
        try:
            run = c.get_run(target)
        except MlflowException:
            run = None
        if run is not None:
            kind = run.data.tags.get(KIND)
            if kind == "trial" and run.data.tags.get(PARENT):
                return c.get_run(run.data.tags[PARENT])
            if kind != "sweep":
                raise ReportError(f"run {target} is not a sweep run ({KIND}={kind or 'unset'})")
            return run
    exp = c.get_experiment_by_name(target)
    if exp is None:
        raise ReportError(f"no sweep run or experiment named {target!r} in "
                          f"{redact(tracking_uri)}")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND}` = 'sweep'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ReportError(f"experiment {target!r} has no sweep run")
    return runs[0]


def load_sweep_record(tracking_uri: str, parent) -> Sweep:
    """The sweep run's objective, its sampled columns and its trials."""
    c = client(tracking_uri)
    p = parent.data.params
    metrics = [m.strip() for m in p.get("search.metric", "overall").split(",") if m.strip()]
    modes = [m.strip() for m in p.get("search.mode", "max").split(",") if m.strip()]
    modes = (modes + [modes[-1] if modes else "max"] * len(metrics))[: len(metrics)]
    runs = c.search_runs([parent.info.experiment_id],
                         filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'",
                         max_results=10000)
    runs = [r for r in runs if r.data.tags.get(KIND, "trial") == "trial"]
    runs.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    notes: list[str] = []
    space = _space_columns(tracking_uri, parent.info.run_id, notes)
    if space is None:
        keys = sorted({k for r in runs for k in r.data.params})
    else:
        keys = list(space)
    trials = [Trial(run_id=r.info.run_id, name=r.info.run_name or r.info.run_id[:8],
                    start_time=r.info.start_time or 0, status=_status(r),
                    params={k: r.data.params.get(k, INACTIVE) for k in keys},
                    metrics=dict(r.data.metrics)) for r in runs]
    columns = []
    for key in keys:
        seen = list(dict.fromkeys(t.params[key] for t in trials))
        if len(seen) < 2:  # not sampled, or the same in every trial
            continue
        col = space[key] if space is not None else _infer_column(key, seen)
        _fit_column(col, seen)
        columns.append(col)
    exp = c.get_experiment(parent.info.experiment_id)
    return Sweep(run_id=parent.info.run_id, run_name=parent.info.run_name or parent.info.run_id,
                 experiment=exp.name, tracking_uri=tracking_uri, metrics=metrics, modes=modes,
                 columns=columns, trials=trials, notes=notes)


def _space_columns(tracking_uri: str, run_id: str, notes: list[str]) -> dict[str, Column] | None:
    """Key path → column, from the sweep file logged with the sweep run (`sweep/<name>.yaml`).

    Only its `space` section is read (its `base` may be a file beside the original)."""
    from mlflow.artifacts import download_artifacts

    from orchestrator import space as sp
    from trainables.config import load_yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with tempfile.TemporaryDirectory(prefix="mtsweep-report-") as tmp:
            local = Path(download_artifacts(run_id=run_id, artifact_path="sweep", dst_path=tmp,
                                            tracking_uri=tracking_uri))
            files = sorted(local.glob("*.y*ml")) if local.is_dir() else [local]
            path = files[0]
            raw = load_yaml(path)
            params = tuple(sp._parse_params(path, raw.get("space") or {}, "space", "", None, None))
            params, _ = sp._resolve(path, params)
    except Exception as e:  # noqa: BLE001 - no artifact, unreadable file: infer from the runs
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        notes.append(f"the sweep file could not be read from the sweep run ({reason}); "
                     f"parameter kinds are inferred from the trial runs")
        return None
    out: dict[str, Column] = {}
    for q in sp._walk(params):
        if not q.sampled:
            continue
        col = out.get(q.key)
        if q.kind == "categorical":
            values = [str(v) for v in q.values]
            if col is None or col.numeric:
                out[q.key] = Column(q.key, "categorical", values=values)
            else:
                col.values += [v for v in values if v not in col.values]
        elif col is None:
            out[q.key] = Column(q.key, q.kind, low=float(q.low), high=float(q.high), log=q.log)
        elif col.numeric:  # the same key path in two branches: one range over both
            col.low, col.high = min(col.low, q.low), max(col.high, q.high)
            col.log = col.log and q.log
    return out


def _infer_column(key: str, seen: list[str]) -> Column:
    active = [v for v in seen if v != INACTIVE]
    try:
        nums = [float(v) for v in active]
    except ValueError:
        return Column(key, "categorical", values=list(active))
    if len(active) <= 3:
        return Column(key, "categorical", values=list(active))
    low, high = min(nums), max(nums)
    return Column(key, "float", low=low, high=high, log=low > 0 and high / low >= 100)


def _fit_column(col: Column, seen: list[str]) -> None:
    """Make the column hold every logged value (a `--set` at launch can move a range)."""
    if col.numeric:
        nums = []
        for v in seen:
            try:
                nums.append(float(v))
            except ValueError:
                pass
        if nums:
            col.low, col.high = min([col.low, *nums]), max([col.high, *nums])
        return
    col.values += [v for v in seen if v not in col.values and v != INACTIVE]
    if INACTIVE in seen and INACTIVE not in col.values:
        col.values.append(INACTIVE)


# ---- which choices mattered ----------------------------------------------------------------


def importances(sweep: Sweep) -> tuple[dict[str, float], str]:
    """fANOVA importances of the sampled params for the objective (an empty dict and a note
    when there are too few trials); the second item names the method or explains."""
    import optuna

    scored = sweep.scored()
    if len(scored) < 2:
        return {}, (f"parameter importances need at least 2 trials with a value of "
                    f"{sweep.metric}; this sweep has {len(scored)}")
    if not sweep.columns:
        return {}, "no parameter varied across the trials: nothing to compare"
    dists, imputed = {}, []
    for col in sweep.columns:
        if col.numeric:
            if col.kind == "int":
                dist = optuna.distributions.IntDistribution(
                    int(col.low), int(col.high), log=col.log and col.low >= 1)
            else:
                dist = optuna.distributions.FloatDistribution(
                    col.low, col.high, log=col.log and col.low > 0)
            dists[col.key] = dist
            if any(t.number(col.key) is None for t in scored):
                imputed.append(col.key)
        else:
            dists[col.key] = optuna.distributions.CategoricalDistribution(col.values)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep.mode == "max" else "minimize")
    for t in scored:
        params = {}
        for key, d in dists.items():
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                params[key] = t.params[key]
            else:
                v = t.number(key)
                v = d.low if v is None else min(max(v, d.low), d.high)
                params[key] = int(round(v)) if isinstance(
                    d, optuna.distributions.IntDistribution) else v
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=t.value(sweep.metric)))
    how = (f"fANOVA (optuna FanovaImportanceEvaluator, seed 0) over {len(scored)} trials, "
           f"objective {sweep.metric}")
    try:
        from optuna.importance import FanovaImportanceEvaluator

        evaluator = FanovaImportanceEvaluator(seed=0)
        try:
            import sklearn  # noqa: F401 - fANOVA's random forest
        except ImportError:
            evaluator = None
            how = (f"Optuna's default evaluator (PED-ANOVA; fANOVA needs scikit-learn, which "
                   f"is not installed) over {len(scored)} trials, objective {sweep.metric}")
        result = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as e:  # noqa: BLE001 - e.g. every value the same
        return {}, f"parameter importances could not be computed: {str(e).splitlines()[0]}"
    out = {k: float(v) for k, v in result.items()}
    if imputed:
        how += ("; inactive conditional numeric params (" + ", ".join(imputed)
                + ") are placed at their range's low end")
    return out, how


def per_value(sweep: Sweep) -> dict[str, list[dict[str, Any]]]:
    """For each scientific parameter: count, mean and best objective per value."""
    pick = max if sweep.mode == "max" else min
    scored = {t.run_id for t in sweep.scored()}
    out: dict[str, list[dict[str, Any]]] = {}
    for col in sweep.columns:
        if not col.scientific:
            continue
        rows = []
        for value in col.values:
            group = [t for t in sweep.trials if t.params[col.key] == value]
            if not group:
                continue
            vals = [t.value(sweep.metric) for t in group if t.run_id in scored]
            rows.append({"value": value, "trials": len(group), "scored": len(vals),
                         "mean": sum(vals) / len(vals) if vals else None,
                         "best": pick(vals) if vals else None})
        out[col.key] = rows
    return out


def pareto_front(sweep: Sweep) -> list[Trial]:
    """The non-dominated trials over the sweep's objectives (best first by the first one)."""
    signs = [1 if m == "max" else -1 for m in sweep.modes]
    pts = [(t, [s * t.value(m) for s, m in zip(signs, sweep.metrics)]) for t in sweep.trials
           if t.status != "failed" and all(t.value(m) is not None for m in sweep.metrics)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    front = [t for t, v in pts if not any(dominates(w, v) for _, w in pts)]
    return sorted(front, key=lambda t: -signs[0] * t.value(sweep.metrics[0]))


# ---- tables --------------------------------------------------------------------------------


def _short_names(keys: list[str]) -> dict[str, str]:
    """`tasks.para.head` → `para.head`, unless two keys would read the same."""
    short = {k: ".".join(k.split(".")[-2:]) for k in keys}
    dup = {v for v in short.values() if list(short.values()).count(v) > 1}
    return {k: k if v in dup else v for k, v in short.items()}


def format_param(value: Any) -> str:
    """A parameter for a table: floats to 4 significant digits, other values as they are."""
    value = str(value)
    try:
        f = float(value)
    except ValueError:
        return value
    return value if f.is_integer() or "e" in value.lower() and len(value) < 8 else f"{f:.4g}"


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def metric_columns(sweep: Sweep) -> list[str]:
    """The table's metric columns: the task metrics, then objectives not among them."""
    return [*METRIC_COLUMNS, *[m for m in sweep.metrics if m not in METRIC_COLUMNS]]


def table_rows(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    """The results table (header, rows), best trial first."""
    names = _short_names([c.key for c in sweep.columns])
    mcols = metric_columns(sweep)
    header = ["#", "run", *names.values(), "status", "epochs",
              *[METRIC_COLUMNS.get(m, m) for m in mcols]]
    rows = []
    for i, t in enumerate(sweep.ranked(), 1):
        epoch = t.metrics.get("epoch")
        rows.append([str(i), t.run_id[:8], *[format_param(t.params[c.key]) for c in sweep.columns],
                     t.status, str(int(epoch)) if epoch is not None else "-",
                     *[_fmt(t.value(m)) for m in mcols]])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[j]) for r in rows)]) for j, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                     for r in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def importance_rows(imp: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    return ["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()]


def per_value_rows(sweep: Sweep, stats: dict[str, list[dict[str, Any]]]
                   ) -> tuple[list[str], list[list[str]]]:
    header = ["parameter", "value", "trials", f"mean {sweep.metric}", f"best {sweep.metric}"]
    rows = [[key, r["value"], str(r["trials"]), _fmt(r["mean"]), _fmt(r["best"])]
            for key, rs in stats.items() for r in rs]
    return header, rows


def pareto_rows(sweep: Sweep, front: list[Trial]) -> tuple[list[str], list[list[str]]]:
    names = _short_names([c.key for c in sweep.columns])
    header = ["run", *names.values(), *[f"{m} ({mode})" for m, mode in
                                        zip(sweep.metrics, sweep.modes)]]
    rows = [[t.run_id[:8], *[format_param(t.params[c.key]) for c in sweep.columns],
             *[_fmt(t.value(m), 4) for m in sweep.metrics]] for t in front]
    return header, rows


# ---- plots ---------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_objective(sweep: Sweep, path: Path) -> None:
    """The objective of each trial in start order, with the running best."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    pick = max if sweep.mode == "max" else min
    colors = {"done": "tab:blue", "stopped early": "tab:orange", "failed": "tab:red"}
    best, xs, bests = None, [], []
    for i, t in enumerate(sweep.trials, 1):
        v = t.value(sweep.metric) if t.status != "failed" else None
        if v is None:
            ax.axvline(i, color="tab:red", alpha=0.2, lw=4)
            continue
        ax.scatter(i, v, color=colors.get(t.status, "grey"), zorder=3)
        best = v if best is None else pick(best, v)
        xs.append(i)
        bests.append(best)
    if xs:
        ax.step(xs, bests, where="post", color="black", lw=1.2, label="best so far")
    for status, color in colors.items():
        if any(t.status == status for t in sweep.trials):
            ax.scatter([], [], color=color, label=status)
    ax.set_xlabel("trial (by start time)")
    ax.set_ylabel(f"{sweep.metric} ({sweep.mode})")
    ax.set_title(f"{sweep.run_name}: {sweep.metric} over trials")
    ax.set_xticks(range(1, len(sweep.trials) + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _axis_position(col: Column, value: str) -> float | None:
    """A param value on its parallel-coordinates axis (0..1); inactive → -0.12."""
    if value == INACTIVE:
        return -0.12
    if not col.numeric:
        n = len(col.values) - (INACTIVE in col.values)
        idx = col.values.index(value) if value in col.values else 0
        return 0.5 if n <= 1 else idx / (n - 1)
    try:
        v = float(value)
    except ValueError:
        return None
    lo, hi = col.low, col.high
    if col.log and lo > 0 and v > 0:
        v, lo, hi = math.log10(v), math.log10(lo), math.log10(hi)
    return 0.5 if hi == lo else (v - lo) / (hi - lo)


def plot_parallel(sweep: Sweep, path: Path) -> None:
    """Parallel coordinates: one axis per sampled param, then the objective; lines colored by
    the objective (failed trials grey, dashed)."""
    plt = _plt()
    from matplotlib import cm, colors

    cols = sweep.columns
    scored = sweep.scored()
    vals = [t.value(sweep.metric) for t in scored]
    vmin, vmax = (min(vals), max(vals)) if vals else (0.0, 1.0)
    n_axes = len(cols) + 1
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * n_axes), 4.8), dpi=100)
    norm = colors.Normalize(vmin, vmax if vmax > vmin else vmin + 1e-9)
    cmap = cm.get_cmap("viridis") if hasattr(cm, "get_cmap") else plt.get_cmap("viridis")
    for t in sweep.trials:
        ys = [_axis_position(c, t.params[c.key]) for c in cols]
        v = t.value(sweep.metric) if t in scored else None
        ys.append(None if v is None else norm(v))
        pts = [(x, y) for x, y in enumerate(ys) if y is not None]
        if not pts:
            continue
        style = ({"color": cmap(norm(v)), "lw": 1.8, "alpha": 0.85} if v is not None
                 else {"color": "grey", "ls": "--", "lw": 1, "alpha": 0.6})
        ax.plot(*zip(*pts), marker="o", ms=3, **style)
    for x, c in enumerate(cols):
        ax.axvline(x, color="black", lw=0.8)
        if c.numeric:
            lo, hi = c.low, c.high
            ticks = [(0.0, lo), (0.5, math.sqrt(lo * hi) if c.log and lo > 0 else (lo + hi) / 2),
                     (1.0, hi)]
            labels = [(y, f"{v:.3g}") for y, v in ticks]
        else:
            labels = [(_axis_position(c, v), v) for v in c.values if v != INACTIVE]
        if INACTIVE in [t.params[c.key] for t in sweep.trials]:
            labels.append((-0.12, INACTIVE))
        for y, text in labels:
            ax.text(x + 0.04, y, text, fontsize=7, va="center", zorder=4,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})
    ax.axvline(len(cols), color="black", lw=0.8)
    for y, v in ((0.0, vmin), (0.5, (vmin + vmax) / 2), (1.0, vmax)):
        ax.text(len(cols) + 0.03, y, f"{v:.3f}", fontsize=7, va="center")
    names = _short_names([c.key for c in cols])
    ax.set_xticks(range(n_axes), [*names.values(), sweep.metric], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, n_axes - 0.6)
    ax.set_ylim(-0.2, 1.08)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{sweep.run_name}: sampled parameters and {sweep.metric}")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=sweep.metric, pad=0.01)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def group_column(sweep: Sweep) -> Column | None:
    """What the per-task plot groups by: schedule.name if it varied, else the first varying
    categorical param."""
    cats = [c for c in sweep.columns if not c.numeric]
    return next((c for c in cats if c.key == "schedule.name"), cats[0] if cats else None)


def plot_per_task(sweep: Sweep, path: Path) -> None:
    """Each task's dev metric by schedule (box + points), over the trials with metrics."""
    import random

    plt = _plt()
    col = group_column(sweep)
    groups = [v for v in col.values if any(t.params[col.key] == v for t in sweep.trials)] \
        if col else ["all"]
    trials = [t for t in sweep.trials if t.status != "failed"]
    fig, axes = plt.subplots(1, len(TASK_PLOT_METRICS), figsize=(4 * len(TASK_PLOT_METRICS), 3.8),
                             dpi=100, squeeze=False)
    jitter = random.Random(0)
    for ax, metric in zip(axes[0], TASK_PLOT_METRICS):
        data = [[t.value(metric) for t in trials
                 if (col is None or t.params[col.key] == g) and t.value(metric) is not None]
                for g in groups]
        pos = [i for i, d in enumerate(data, 1) if d]
        if pos:
            ax.boxplot([data[i - 1] for i in pos], positions=pos, widths=0.5, showfliers=False)
        for i, d in enumerate(data, 1):
            ax.scatter([i + jitter.uniform(-0.12, 0.12) for _ in d], d, s=18, alpha=0.8,
                       color="tab:blue", zorder=3)
        ax.set_xticks(range(1, len(groups) + 1), groups, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(0.4, len(groups) + 0.6)
        ax.set_title(METRIC_COLUMNS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{sweep.run_name}: per-task dev metrics by {col.key if col else 'sweep'}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_pareto(sweep: Sweep, front: list[Trial], path: Path) -> None:
    """The first two objectives of every trial, the Pareto front highlighted."""
    plt = _plt()
    mx, my = sweep.metrics[:2]
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    pts = [t for t in sweep.trials if t.status != "failed"
           and t.value(mx) is not None and t.value(my) is not None]
    ax.scatter([t.value(mx) for t in pts], [t.value(my) for t in pts], color="grey", alpha=0.6,
               label="trials")
    f = sorted(front, key=lambda t: t.value(mx))
    ax.plot([t.value(mx) for t in f], [t.value(my) for t in f], "o-", color="tab:red",
            label="Pareto front")
    ax.set_xlabel(f"{mx} ({sweep.modes[0]})")
    ax.set_ylabel(f"{my} ({sweep.modes[1]})")
    ax.set_title(f"{sweep.run_name}: Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---- the report ----------------------------------------------------------------------------


@dataclass
class Report:
    """What `report` wrote and found."""

    path: Path
    plots: list[Path]
    importances: dict[str, float]
    importance_note: str
    rows: int
    pareto: list[str] = field(default_factory=list)  # run ids on the front (multi-objective)


def _sections(sweep: Sweep, imp: dict[str, float], how: str,
              stats: dict[str, list[dict[str, Any]]], front: list[Trial] | None
              ) -> list[tuple[str, str, tuple[list[str], list[list[str]]] | None]]:
    """(heading, text, table) of the report, in order; the same for Markdown and HTML."""
    counts = {s: sum(t.status == s for t in sweep.trials) for s in ("done", "stopped early",
                                                                     "failed")}
    objective = ", ".join(f"{m} ({mode})" for m, mode in zip(sweep.metrics, sweep.modes))
    intro = (f"Experiment `{sweep.experiment}`, sweep run `{sweep.run_id}` "
             f"({redact(sweep.tracking_uri)}). {len(sweep.trials)} trials: "
             + ", ".join(f"{n} {s}" for s, n in counts.items())
             + f". Objective: {objective}; rows best first by {sweep.metric}.")
    out: list[tuple[str, str, tuple[list[str], list[list[str]]] | None]] = [
        ("Results", intro + "".join(f"\n\nNote: {n}" for n in sweep.notes), table_rows(sweep)),
        ("Parameter importances", how + ".", importance_rows(imp) if imp else None),
    ]
    if stats:
        out.append(("Objective per value of the scientific parameters",
                    f"Mean and best {sweep.metric} over the trials with each value (failed "
                    f"trials have no value).", per_value_rows(sweep, stats)))
    else:
        out.append(("Objective per value of the scientific parameters",
                    "No scientific parameter (head, loss, schedule, weighting, gradient, data "
                    "limits, encoder, tag) varied in this sweep.", None))
    if front is not None:
        out.append(("Pareto front", f"Non-dominated trials over {objective}.",
                    pareto_rows(sweep, front)))
    return out


def write_markdown(path: Path, sweep: Sweep, sections, plots: list[Path]) -> None:
    parts = [f"# Sweep report: {sweep.run_name}"]
    for heading, text, table in sections:
        parts.append(f"## {heading}\n\n{text}")
        if table:
            parts.append(markdown_table(*table))
    parts.append("## Plots\n\n" + "\n\n".join(
        f"![{p.stem}]({p.parent.name}/{p.name})" for p in plots))
    path.write_text("\n\n".join(parts) + "\n")


def write_html(path: Path, sweep: Sweep, sections, plots: list[Path]) -> None:
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
             "th{background:#eee}img{max-width:100%;display:block;margin:1em 0}")
    title = html.escape(f"Sweep report: {sweep.run_name}")
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
             f"<style>{style}</style></head><body>\n<h1>{title}</h1>"]
    for heading, text, table in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts += [f"<p>{_code(html.escape(t))}</p>" for t in text.split("\n\n")]
        if table:
            parts.append(html_table(*table))
    parts.append("<h2>Plots</h2>")
    for p in plots:  # embedded, so that the page reads the same in MLflow's artifact view
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<img alt='{html.escape(p.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts) + "\n")


def _code(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", text)


def write_csv(path: Path, sweep: Sweep) -> None:
    """The results table with full key paths and unrounded values."""
    mcols = metric_columns(sweep)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "run_id", "run_name", *[c.key for c in sweep.columns], "status",
                    "epochs", *mcols])
        for i, t in enumerate(sweep.ranked(), 1):
            epoch = t.metrics.get("epoch")
            w.writerow([i, t.run_id, t.name, *[t.params[c.key] for c in sweep.columns],
                        t.status, "" if epoch is None else int(epoch),
                        *["" if t.value(m) is None else repr(t.value(m)) for m in mcols]])


def write_report(sweep: Sweep, output: Path, fmt: str) -> Report:
    """Write the report file and its plots (in `<stem>-plots/` beside it)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    plots_dir = output.parent / f"{output.stem}-plots"
    plots_dir.mkdir(exist_ok=True)
    imp, how = importances(sweep)
    stats = per_value(sweep)
    front = pareto_front(sweep) if len(sweep.metrics) > 1 else None
    plots = [plots_dir / "objective.png", plots_dir / "parallel_coordinates.png",
             plots_dir / "per_task_by_schedule.png"]
    plot_objective(sweep, plots[0])
    plot_parallel(sweep, plots[1])
    plot_per_task(sweep, plots[2])
    if front is not None:
        plots.append(plots_dir / "pareto_front.png")
        plot_pareto(sweep, front, plots[-1])
    sections = _sections(sweep, imp, how, stats, front)
    if fmt == "md":
        write_markdown(output, sweep, sections, plots)
    elif fmt == "html":
        write_html(output, sweep, sections, plots)
    else:
        write_csv(output, sweep)
    return Report(path=output, plots=plots, importances=imp, importance_note=how,
                  rows=len(sweep.trials), pareto=[t.run_id for t in front or []])


def log_report(tracking_uri: str, sweep: Sweep, report: Report) -> None:
    """The report file and its plots, as artifacts of the sweep run under `report/`."""
    c = client(tracking_uri)
    c.log_artifact(sweep.run_id, str(report.path), ARTIFACT_DIR)
    folder = report.plots[0].parent
    c.log_artifacts(sweep.run_id, str(folder), f"{ARTIFACT_DIR}/{folder.name}")


def report(target: str, tracking_uri: str | None = None, fmt: str = "md",
           output: str | Path | None = None) -> tuple[Sweep, Report]:
    """Find the sweep, write the report and log it to the sweep run."""
    uri = resolve_tracking_uri(tracking_uri, None)
    if missing_local_store(uri):
        # check_reachable would create an empty store there.
        raise ReportError(f"no sweep run or experiment named {target!r}: {redact(uri)} does "
                          f"not exist")
    check_reachable(uri)
    try:
        parent = find_sweep_run(uri, target)
        sweep = load_sweep_record(uri, parent)
    except MtsweepError:
        raise
    except Exception as e:  # noqa: BLE001 - the store refused a request
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise TrackingError(f"cannot read the sweep from {redact(uri)}: {reason}") from None
    if not sweep.trials:
        raise ReportError(f"sweep run {sweep.run_id} ({sweep.run_name}) has no trial runs")
    path = Path(output) if output else Path(f"report-{sweep.run_name}.{fmt}")
    rep = write_report(sweep, path, fmt)
    log_report(uri, sweep, rep)
    return sweep, rep


# ---- the command ---------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
        fmt = {"markdown": "md", "htm": "html"}.get(suffix, suffix)
        fmt = fmt if fmt in FORMATS else "md"
    sweep, rep = report(args.target, args.tracking_uri, fmt, args.output)
    print(f"sweep run {sweep.run_id} ({sweep.run_name}) of experiment {sweep.experiment}: "
          f"{rep.rows} trials, objective {sweep.metric} ({sweep.mode})")
    print(f"report: {rep.path}")
    print("plots: " + ", ".join(str(p) for p in rep.plots))
    if rep.importances:
        print("importances (" + rep.importance_note.split(" over ")[0] + "): " + ", ".join(
            f"{k} {v:.3f}" for k, v in rep.importances.items()))
    else:
        print(f"importances: {rep.importance_note}")
    print(f"logged to sweep run {sweep.run_id} as artifacts under {ARTIFACT_DIR}/")
    if args.json:
        print(json.dumps({"report": str(rep.path), "plots": [str(p) for p in rep.plots],
                          "importances": rep.importances, "rows": rep.rows}))
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="EXPERIMENT_OR_SWEEP_RUN",
                   help="a sweep run id (or one of its trial runs), or an experiment name (its "
                        "most recent sweep)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, "
                                          "else sqlite:///./mlflow.db)")
    p.add_argument("--format", choices=FORMATS,
                   help="md (default), csv (the results table) or html (table and plots)")
    p.add_argument("--output", help="report file (default report-<sweep run name>.<format>); "
                                    "plots go beside it in <stem>-plots/")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")


__all__ = ["ReportError", "Sweep", "add_report_arguments", "find_sweep_run", "importances",
           "load_sweep_record", "pareto_front", "per_value", "report", "run_report"]
