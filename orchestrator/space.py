"""Sweep files: one YAML file → a validated `SweepSpec` → an Optuna define-by-run function.

A sweep file names the trial config every trial starts from (`base`), constants on top of it
(`fixed`), what Optuna samples (`space`), the search algorithm, the trial scheduler, the
resources of one trial and where results are tracked. Everything is checked here, before Ray
starts; each problem is one ConfigError whose message starts with `<file>: <key.path>: `.

Optuna parameter names (the contract with the launcher, tracking and reproduction):
  - a top-level parameter is named by its key path: `optim.lr`;
  - a parameter inside a branch carries the branch, outermost first:
    `tasks.para.loss@tasks.para.head=cosine`, `a@b=x@c=y` (c lives in branch x of b);
  - a parameter with `when` carries its condition last: `tasks.sts.weight@schedule.name=a|b`.
Two conditional parameters that share a key path are therefore different Optuna parameters
(the tuning playbook's point). Constants are named the same way and are returned by the
define-by-run function. `point_to_config` strips the `@...` part to get the key path back;
key paths starting with `tag.` label a point (e.g. a table row) and are not applied.

Ray is not imported here (`mtsweep launch --dry-run` must start fast).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import random
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from orchestrator import tpe
from orchestrator.tracking import redact
from trainables.config import TrialConfig, apply_overrides, flatten, load_yaml
from trainables.errors import ConfigError
from trainables.metrics import TASK_METRIC
from trainables.runtime import ATTENTIONS, PACKED_ATTENTIONS
from trainables.tasks import TASKS

__all__ = [
    "ALGORITHMS",
    "BranchGridSampler",
    "METRICS",
    "SCHEDULERS",
    "DefineByRun",
    "Param",
    "ResourcesSpec",
    "SchedulerSpec",
    "SearchSpec",
    "CheckpointsSpec",
    "FailuresSpec",
    "SweepSpec",
    "TrackingSpec",
    "check_key_path",
    "describe",
    "grid_search_space",
    "grid_size",
    "key_path_of",
    "load_sweep",
    "make_sampler",
    "point_key_paths",
    "point_to_config",
    "sample_points",
    "space_key_paths",
]

SECTIONS = (
    "name", "description", "base", "fixed", "space", "search", "scheduler", "resources",
    "failures", "checkpoints", "tracking",
)
TAG_PREFIX = "tag."

# Search algorithm → Optuna sampler class (in optuna.samplers).
ALGORITHMS: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "nsga2": "NSGAIISampler",
}
# CMA-ES optimises one objective only; NSGA-II is only worth it with several.
SINGLE_OBJECTIVE = frozenset({"cmaes"})
MULTI_OBJECTIVE = frozenset({"nsga2"})
# Sampler arguments the sweep file does not set through `search.args` (set from other keys).
_RESERVED_SAMPLER_ARGS = frozenset({"self", "seed", "search_space"})

# Ray Tune trial schedulers and the constructor arguments a sweep file may set, checked by name
# only (importing Ray here would make --dry-run slow). Kind of value: count (int ≥ 1), factor
# (number > 1), nonneg (number ≥ 0), bool. time_attr/metric/mode are set by the launcher.
SCHEDULERS: dict[str, dict[str, str]] = {
    "fifo": {},
    "asha": {"grace_period": "count", "reduction_factor": "factor", "brackets": "count",
             "max_t": "count"},
    "median": {"grace_period": "nonneg", "min_samples_required": "count", "hard_stop": "bool",
               "min_time_slice": "nonneg"},
    "hyperband": {"max_t": "count", "reduction_factor": "factor", "stop_last_trials": "bool"},
}

# What a trial reports (trainables.train): the dev metrics and the per-task training loss.
METRICS: tuple[str, ...] = (
    *TASK_METRIC.values(), "overall", "overall_mean", *(f"train_loss_{t}" for t in TASKS),
)

_SEARCH_KEYS = ("algorithm", "metric", "mode", "num_samples", "max_concurrent", "time_budget_s",
                "seed", "args")
_SCHEDULER_KEYS = ("name", "metric", "mode", "args")
_RESOURCES_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker", "ray_train", "compile",
                   "attention")
RAY_TRAIN_MODES = ("auto", "always")
_TRACKING_KEYS = ("experiment", "tracking_uri", "log_model")
_FAILURES_KEYS = ("worker_restarts", "trial_retries")
_CHECKPOINTS_KEYS = ("keep", "metric", "mode")
_RANGE_KEYS = ("float", "int", "log", "step", "when")
_CATEGORICAL_KEYS = ("values", "branches", "when")

# How many points the load-time combination check builds into trial configs.
_CHECK_ALL_UP_TO = 256
_CHECK_RANDOM = 64
# Distinct points a grid search may have (enumerated at load).
_GRID_LIMIT = 100_000
# PyYAML (YAML 1.1) reads `1e-5` as a string; in a search space it always means a number.
_EXP_FLOAT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)[eE][+-]?\d+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SCALARS = (type(None), bool, int, float, str)


# ---- the parsed space --------------------------------------------------------------------


# A condition a parameter needs to be active: one of `names` was sampled (or is a constant)
# with a value among `values`.
Requirement = tuple[tuple[str, ...], tuple[Any, ...]]


@dataclass(frozen=True)
class Param:
    """One entry of `space` (or of a branch): a distribution, or a constant.

    `kind` is float | int | categorical | constant. `branches` pairs a categorical value with
    the parameters that exist only under it. `requires` (resolved at load) lists the conditions
    under which the parameter is active: its parent's value and its `when` clauses.
    """

    key: str
    name: str
    kind: str
    where: str  # the sweep-file path, for messages: space.tasks.para.head.branches.cosine.…
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    values: tuple[Any, ...] = ()
    value: Any = None
    branches: tuple[tuple[Any, tuple[Param, ...]], ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    parent: str | None = None  # Optuna name of the categorical whose branch holds this one
    branch: Any = None  # ... and the value of that branch
    requires: tuple[Requirement, ...] = ()

    @property
    def sampled(self) -> bool:
        return self.kind != "constant"

    @property
    def conditional(self) -> bool:
        return self.parent is not None or bool(self.when)

    @property
    def is_tag(self) -> bool:
        return self.key.startswith(TAG_PREFIX)

    @property
    def has_grid(self) -> bool:
        """Whether a grid search can enumerate the values (not a float/log range w/o step)."""
        return self.kind in ("categorical", "constant") or self.step is not None or (
            self.kind == "int" and not self.log)

    def is_active(self, values: Mapping[str, Any]) -> bool:
        """True when every condition holds for the values chosen so far (by Optuna name)."""
        return all(
            any(n in values and _member(values[n], vals) for n in names)
            for names, vals in self.requires
        )

    def can_take(self, value: Any) -> bool:
        """Whether `value` is a value this parameter can have."""
        if self.kind == "constant":
            return _same(self.value, value)
        if self.kind == "categorical":
            return _member(value, self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.kind == "int":
            return float(value).is_integer() and (int(value) - self.low) % (self.step or 1) == 0
        return True

    def grid_values(self) -> tuple[Any, ...]:
        """The values a grid search tries (categoricals and stepped ranges only)."""
        if self.kind == "categorical":
            return self.values
        if self.kind == "constant":
            return (self.value,)
        if not self.has_grid:
            raise ValueError(f"{self.name}: a float or log range without step has no grid")
        step = self.step or 1  # an int range steps by 1 unless told
        n = int(round((self.high - self.low) / step)) + 1
        if self.kind == "int":
            return tuple(self.low + i * step for i in range(n))
        # Rounded so that 0.1 * 3 lands on 0.3, as the YAML author wrote it.
        return tuple(round(self.low + i * self.step, 12) for i in range(n))

    def ends(self) -> tuple[Any, ...]:
        """The extreme values (a range's ends, every categorical value)."""
        if self.kind in ("float", "int"):
            return (self.low, self.high)
        return self.grid_values()

    def distribution(self) -> str:
        """A short description: `float [1e-05, 0.001] log`, `categorical: a, b`, `= 3`."""
        if self.kind == "constant":
            return f"= {_fmt(self.value)}"
        if self.kind == "categorical":
            text = "categorical: " + ", ".join(_fmt(v) for v in self.values)
            if len(text) > 64:  # keep the --dry-run table readable
                text = text[:56].rsplit(", ", 1)[0] + f", … ({len(self.values)} values)"
            return text
        extra = " log" if self.log else f" step {_fmt(self.step)}" if self.step else ""
        return f"{self.kind} [{_fmt(self.low)}, {_fmt(self.high)}]{extra}"

    def condition(self) -> str:
        """Human-readable condition, e.g. `schedule.name = annealed`, or '' when always on."""
        # The parent's name holds the conditions above it (`k=v` parts after its key path).
        parts = []
        if self.parent:
            parts += self.parent.split("@")[1:]
            parts.append(f"{key_path_of(self.parent)}={_fmt(self.branch)}")
        parts += [f"{ref}={'|'.join(_fmt(v) for v in vals)}" for ref, vals in self.when]
        return " and ".join(
            f"{k} in {v}" if "|" in v else f"{k} = {v}" for k, _, v in
            (part.partition("=") for part in parts)
        )

    def suggest(self, trial: Any) -> Any:
        """Ask `trial` (an optuna.Trial or anything with its suggest_* methods) for a value."""
        if self.kind == "constant":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)


class DefineByRun:
    """The Optuna define-by-run function of a sweep (picklable: Ray pickles OptunaSearch).

    Calling it with a trial suggests every active parameter, in an order where each parameter
    comes after those its conditions read, and returns the active constants by name (or None).
    """

    def __init__(self, params: Sequence[Param]) -> None:
        self.params = tuple(params)

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        values: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for p in self.params:
            if not p.is_active(values):
                continue
            values[p.name] = p.suggest(trial)
            if not p.sampled:
                constants[p.name] = p.value
        return constants or None

    def __repr__(self) -> str:
        return f"DefineByRun({len(self.params)} parameters)"


# ---- the other sections ------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpec:
    """How Optuna searches: algorithm, objective(s), budget and seed."""

    algorithm: str = "tpe"
    metric: str | tuple[str, ...] = "overall"
    mode: str | tuple[str, ...] = "max"
    num_samples: int = 10
    max_concurrent: int = 1
    time_budget_s: float | None = None
    seed: int | None = 0
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        return isinstance(self.metric, tuple)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.metric if isinstance(self.metric, tuple) else (self.metric,)

    @property
    def modes(self) -> tuple[str, ...]:
        return self.mode if isinstance(self.mode, tuple) else (self.mode,)

    @property
    def directions(self) -> list[str]:
        """Optuna study directions, one per metric."""
        return ["maximize" if m == "max" else "minimize" for m in self.modes]


@dataclass(frozen=True)
class SchedulerSpec:
    """A Ray Tune trial scheduler by name, the metric it watches and its arguments."""

    name: str = "fifo"
    metric: str = "overall"
    mode: str = "max"
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourcesSpec:
    """What one trial gets: Ray Train workers (DDP processes) and each worker's CPUs/GPUs.

    `ray_train`: `auto` runs a one-worker trial inside its Ray Tune trial process (no Ray
    Train worker group to start, and Tune reuses that process for the next trial: its imports
    and caches stay warm); trials of 2+ workers always run as a Ray Train DDP worker group.
    `always` uses Ray Train for one-worker trials too. `compile`: the encoder is compiled
    with torch.compile (faster steps on a GPU, after a start-up of a minute or more).
    `attention`: the encoder's attention (`Runtime.attention`); `packed` runs it on the real
    tokens only (no padding; needs encoder.attention_dropout 0)."""

    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    ray_train: str = "auto"
    compile: bool = False
    attention: str = "auto"

    @property
    def uses_ray_train(self) -> bool:
        return self.workers > 1 or self.ray_train == "always"


@dataclass(frozen=True)
class FailuresSpec:
    """What happens when something breaks. `worker_restarts`: Ray Train restarts a trial's
    worker group (a killed process, a lost node) from the trial's last checkpoint up to this
    many times. `trial_retries`: Ray Tune then re-runs a failed trial (again resuming from its
    checkpoint, and continuing its MLflow run) up to this many times."""

    worker_restarts: int = 0
    trial_retries: int = 0


@dataclass(frozen=True)
class CheckpointsSpec:
    """Per trial, keep the `keep` best epoch checkpoints by `metric` (plus always the latest,
    which a restart resumes from); older ones are deleted as the trial goes."""

    keep: int = 1
    metric: str = "overall"
    mode: str = "max"


@dataclass(frozen=True)
class TrackingSpec:
    """MLflow: experiment name (default: the sweep's name), tracking URI (null: the launcher
    decides) and whether the final checkpoint is logged as an artifact."""

    experiment: str
    tracking_uri: str | None = None
    log_model: bool = False


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file. Build with `load_sweep`.

    `base` is the raw trial-config dict after base ⊕ fixed; `params` is the space as a tree
    (branch parameters under their categorical); `order` is the same parameters flattened in
    sampling order (what the define-by-run function walks).
    """

    path: Path
    name: str
    description: str
    base: dict[str, Any]
    base_source: str
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    search: SearchSpec
    scheduler: SchedulerSpec
    resources: ResourcesSpec
    tracking: TrackingSpec
    text: str
    sha256: str
    overrides: tuple[str, ...] = ()
    order: tuple[Param, ...] = field(default=(), repr=False)
    failures: FailuresSpec = field(default_factory=FailuresSpec)
    checkpoints: CheckpointsSpec = field(default_factory=CheckpointsSpec)

    @property
    def define_by_run(self) -> DefineByRun:
        return DefineByRun(self.order)

    def all_params(self) -> list[Param]:
        """Every parameter and constant, parents before their branches (file order)."""
        return list(_walk(self.params))

    def max_epochs(self) -> int:
        """The most epochs any trial of the sweep can run (ASHA/HyperBand's max_t)."""
        best = int(self.base.get("epochs", 1))
        for q in self.all_params():
            if q.key == "epochs":
                vals = [q.high] if q.kind in ("int", "float") else (
                    list(q.values) if q.kind == "categorical" else [q.value])
                best = max([best, *[int(v) for v in vals if v is not None]])
        return best

    @property
    def n_sampled(self) -> int:
        """How many parameters Optuna samples (branch parameters included)."""
        return sum(1 for p in self.order if p.sampled)

    @property
    def has_conditional(self) -> bool:
        return any(p.conditional and p.sampled for p in self.order)

    def trial_config(self, params: Mapping[str, Any]) -> TrialConfig:
        return point_to_config(self, params)


# ---- small helpers -----------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    # 1 == 1.0 is fine (YAML ints vs floats), True == 1 is not.
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, str) != isinstance(b, str):
        return False
    return a == b


def _member(value: Any, values: Sequence[Any]) -> bool:
    return any(_same(value, v) for v in values)


def _fmt(value: Any) -> str:
    """A value as it appears in parameter names and messages (YAML spelling)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, default=str)


def _norm(value: Any) -> Any:
    if isinstance(value, str) and _EXP_FLOAT.match(value.strip()):
        return float(value)
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def key_path_of(name: str) -> str:
    """The trial-config key path of an Optuna parameter name (`a.b@c=x` → `a.b`)."""
    return name.partition("@")[0]


def _walk(params: Sequence[Param]) -> Iterator[Param]:
    for p in params:
        yield p
        for _, children in p.branches:
            yield from _walk(children)


def _err(file: Any, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{file}: {where}: {msg}")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def check_key_path(key: str) -> str | None:
    """Why `key` is not a TrialConfig key path, or None when it is.

    Dataclass fields must exist; dict-typed fields (head_args, schedule.args, data.train_limit)
    take any subkey, except that `tasks.<task>` must be a known task.
    """
    parts = key.split(".")
    if any(not p for p in parts) or "@" in key or "/" in key:
        return f"{key!r} is not a key path (dotted names; no '@' or '/')"
    tp: Any = TrialConfig
    walked: list[str] = []
    for part in parts:
        tp = _strip_optional(tp)
        if is_dataclass(tp):
            names = [f.name for f in fields(tp)]
            if part not in names:
                of = f" of {'.'.join(walked)}" if walked else ""
                valid = ", ".join(sorted(names))
                return f"unknown trial-config key {part!r}; valid keys{of}: {valid}"
            tp = typing.get_type_hints(tp)[part]
        elif typing.get_origin(tp) is dict:
            if walked == ["tasks"] and part not in TASKS:
                return f"unknown task {part!r}; valid: {', '.join(TASKS)}"
            tp = typing.get_args(tp)[1]
        elif tp is Any:
            return None  # free-form arguments: the registry checks them when the config is built
        else:
            return f"{'.'.join(walked)} is a single value, not a mapping"
        walked.append(part)
    return None


def _parse_value(text: str) -> Any:
    # The same parsing as `--set` on a trial config (YAML scalars/lists, 1e-5 as a number).
    return apply_overrides({}, [f"v={text}"])["v"]


# ---- loading -----------------------------------------------------------------------------


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, override (`key.path=value`) and validate a sweep file.

    `fixed.<key.path>=v` and `space.<key.path>=v` treat the rest as one key path (the sweep
    file's dotted keys); anything else goes into its section (`search.num_samples=2`).
    Raises ConfigError `<file>: <key.path>: <problem>` for the first problem found.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {'a folder, not a file' if p.is_dir() else 'no such file'}")
    text = p.read_text()
    raw = load_yaml(p)
    if not isinstance(raw, Mapping):
        raise _err(p, "(top level)", f"expected a mapping of sweep sections "
                   f"({', '.join(SECTIONS)}), got {type(raw).__name__}")
    raw = _apply_sweep_overrides(p, dict(raw), overrides)
    unknown = [str(k) for k in raw if k not in SECTIONS]
    trial_keys = sorted({"tasks", "encoder", "optim"} & set(unknown))
    if trial_keys:
        raise ConfigError(f"{p}: a trial config (it has {', '.join(trial_keys)}); train it with "
                          "mtsweep train, or name it as a sweep file's base")
    if unknown:
        raise _err(p, unknown[0], f"unknown section; valid: {', '.join(SECTIONS)}")

    name = raw.get("name", p.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _err(p, "name", f"{name!r}: use letters, digits, '.', '_' or '-'")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise _err(p, "description", "expected text")

    base_raw, base_source = _load_base(p, raw)
    fixed = _parse_fixed(p, raw.get("fixed"))
    base = _resolve_base(p, base_raw, base_source, fixed)

    space = raw.get("space")
    if space is None:
        space = {}
    if not isinstance(space, Mapping):
        raise _err(p, "space", f"expected a mapping of key paths to distributions, "
                   f"got {type(space).__name__}")
    params = tuple(_parse_params(p, space, "space", "", None, None))
    params, order = _resolve(p, params)

    search = _parse_search(p, raw.get("search"), order)
    scheduler = _parse_scheduler(p, raw.get("scheduler"), search)
    resources = _parse_resources(p, raw.get("resources"))
    tracking = _parse_tracking(p, raw.get("tracking"), name)
    failures = _parse_failures(p, raw.get("failures"))
    checkpoints = _parse_checkpoints(p, raw.get("checkpoints"), scheduler)

    spec = SweepSpec(
        path=p, name=name, description=description.strip(), base=base,
        base_source=base_source, fixed=fixed, params=params, search=search,
        scheduler=scheduler, resources=resources, tracking=tracking, text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(), overrides=tuple(overrides),
        order=order, failures=failures, checkpoints=checkpoints,
    )
    _check_values(spec)
    _check_combinations(spec)
    _check_grace_period(spec)
    make_sampler(spec)  # bad search.args fail here, not in Ray
    return spec


def _check_grace_period(spec: SweepSpec) -> None:
    """ASHA's first rung must be within the trials' epochs (its max_t defaults to the most
    epochs a trial can run); Ray would only fail once the sweep had started."""
    s = spec.scheduler
    grace = s.args.get("grace_period")
    if s.name != "asha" or grace is None or "max_t" in s.args:
        return
    max_t = spec.max_epochs()
    if grace > max_t:
        raise _err(spec.path, "scheduler.args.grace_period",
                   f"{grace} is more than the most epochs a trial of this sweep runs "
                   f"({max_t}), ASHA's max_t")


def _apply_sweep_overrides(
    p: Path, raw: dict[str, Any], overrides: Sequence[str]
) -> dict[str, Any]:
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _err(p, f"--set {item!r}", "expected key.path=value")
        section, _, rest = key.partition(".")
        if not rest:
            raw[section] = _parse_value(text)
        elif section in ("fixed", "space"):
            # The rest is one dotted key of that section, not a nested path.
            node = dict(raw.get(section) or {})
            node.pop(rest, None)
            node[rest] = _parse_value(text)
            raw[section] = node
        else:
            node = raw.get(section)
            if node is not None and not isinstance(node, Mapping):
                raise _err(p, f"--set {key}", f"{section} is not a mapping")
            raw[section] = apply_overrides(node or {}, [f"{rest}={text}"])
    return raw


def _load_base(p: Path, raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    base = raw.get("base")
    if base is None:
        raise _err(p, "base", "required: a trial-config file (relative to this file) or an "
                   "inline mapping of trial-config keys")
    if isinstance(base, Mapping):
        return dict(base), "inline"
    if not isinstance(base, str):
        raise _err(p, "base", f"expected a path or a mapping, got {type(base).__name__}")
    base_path = Path(base) if Path(base).is_absolute() else p.parent / base
    if not base_path.is_file():
        raise _err(p, "base", f"no such file {base_path} (paths are relative to the sweep file)")
    try:
        data = load_yaml(base_path)
    except ConfigError as e:
        raise _err(p, "base", str(e)) from None
    if not isinstance(data, Mapping):
        raise _err(p, "base", f"{base_path}: expected a mapping of trial-config keys")
    return dict(data), base


def _parse_fixed(p: Path, fixed: Any) -> dict[str, Any]:
    if fixed is None:
        return {}
    if not isinstance(fixed, Mapping):
        raise _err(p, "fixed", f"expected a mapping of key paths to values, "
                   f"got {type(fixed).__name__}")
    # Nested mappings merge into the base (keys flattened); an empty mapping replaces.
    flat = flatten({str(k): v for k, v in fixed.items()})
    for key in flat:
        problem = check_key_path(key)
        if problem:
            raise _err(p, f"fixed.{key}", problem)
    return flat


def _resolve_base(
    p: Path, base: dict[str, Any], source: str, fixed: dict[str, Any]
) -> dict[str, Any]:
    raw = _override(base, fixed)
    try:
        TrialConfig.from_dict(raw)
    except ConfigError as e:
        try:
            TrialConfig.from_dict(base)
        except ConfigError as base_error:
            where = "" if source == "inline" else f"{source}: "
            raise _err(p, "base", f"{where}not a valid trial config: {base_error}") from None
        bad = str(e).partition(":")[0]
        hit = [k for k in fixed if k == bad or bad.startswith(k + ".") or k.startswith(bad + ".")]
        raise _err(p, f"fixed.{hit[0]}" if hit else "fixed",
                   f"base + fixed is not a valid trial config: {e}") from None
    return raw


def _override(raw: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    # Shallow keys first, so that `a.b: {}` then `a.b.c: 1` both hold.
    items = sorted(flat.items(), key=lambda kv: kv[0].count("."))
    return apply_overrides(raw, dict(items))


# ---- the space ---------------------------------------------------------------------------


def _parse_params(
    p: Path, node: Mapping[Any, Any], where: str, prefix: str, parent: str | None, branch: Any
) -> Iterator[Param]:
    for key, dist in node.items():
        key = str(key)
        w = f"{where}.{key}"
        if key.startswith(TAG_PREFIX) and len(key) > len(TAG_PREFIX):
            if "@" in key or "/" in key:
                raise _err(p, w, "a tag name must not contain '@' or '/'")
        else:
            problem = check_key_path(key)
            if problem:
                raise _err(p, w, problem + f" (or a label: {TAG_PREFIX}<name>)")
        yield _parse_param(p, key, dist, w, prefix, parent, branch)


def _parse_param(
    p: Path, key: str, dist: Any, w: str, prefix: str, parent: str | None, branch: Any
) -> Param:
    common = {"key": key, "where": w, "parent": parent, "branch": branch}
    if isinstance(dist, list):
        values = _parse_values(p, w, dist)
        return Param(name=key + prefix, kind="categorical", values=values, **common)
    if not isinstance(dist, Mapping):
        if not isinstance(dist, _SCALARS):
            raise _err(p, w, f"a constant must be a scalar, got {type(dist).__name__}")
        return Param(name=key + prefix, kind="constant", value=_norm(dist), **common)

    keys = [str(k) for k in dist]
    if "values" in keys:
        allowed = _CATEGORICAL_KEYS
    elif "float" in keys or "int" in keys:
        if "float" in keys and "int" in keys:
            raise _err(p, w, "give either float: [lo, hi] or int: [lo, hi], not both")
        allowed = _RANGE_KEYS
    else:
        raise _err(p, w, "a mapping must be a distribution: {values: [...], branches: {...}}, "
                   "{float: [lo, hi], log?, step?} or {int: [lo, hi], log?, step?} "
                   f"(any with when); got keys {', '.join(keys) or '(none)'}")
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        raise _err(p, f"{w}.{unknown[0]}", f"unknown distribution key; valid here: "
                   f"{', '.join(allowed)}")
    when = _parse_when(p, w, dist.get("when"))
    suffix = "".join(f"@{ref}={'|'.join(_fmt(v) for v in vals)}" for ref, vals in when)
    name = key + prefix + suffix
    if "/" in name:
        raise _err(p, w, f"parameter name {name!r} must not contain '/' (Ray splits names there)")
    common["when"] = when

    if "values" in keys:
        values = _parse_values(p, f"{w}.values", dist["values"])
        branches = _parse_branches(p, w, key, prefix, name, values, dist.get("branches"))
        return Param(name=name, kind="categorical", values=values, branches=branches, **common)

    kind = "float" if "float" in keys else "int"
    bounds = dist[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise _err(p, f"{w}.{kind}", f"expected [lo, hi], got {bounds!r}")
    lo, hi = (_norm(b) for b in bounds)
    ok = _number if kind == "float" else (lambda v: isinstance(v, int) and not isinstance(v, bool))
    if not (ok(lo) and ok(hi)):
        what = "numbers" if kind == "float" else "integers"
        raise _err(p, f"{w}.{kind}", f"lo and hi must be {what}, got {bounds!r}")
    if lo >= hi:
        raise _err(p, f"{w}.{kind}", f"lo ({lo}) must be < hi ({hi})")
    log = dist.get("log", False)
    if not isinstance(log, bool):
        raise _err(p, f"{w}.log", f"expected true or false, got {log!r}")
    step = _norm(dist.get("step"))
    if step is not None:
        if kind == "int" and (not isinstance(step, int) or isinstance(step, bool)):
            raise _err(p, f"{w}.step", f"an int range needs an integer step, got {step!r}")
        if not _number(step) or step <= 0:
            raise _err(p, f"{w}.step", f"must be a number > 0, got {step!r}")
        if log:
            raise _err(p, f"{w}.step", "step and log cannot be combined (Optuna has no "
                       "log-stepped distribution); use a categorical list instead")
        n = (hi - lo) / step
        if abs(n - round(n)) > 1e-9:
            raise _err(p, f"{w}.step", f"hi - lo ({hi} - {lo}) must be a multiple of step "
                       f"({step}); Optuna would otherwise move hi")
    if log and lo <= 0:
        raise _err(p, f"{w}.{kind}", f"a log range needs lo > 0, got {lo}")
    if kind == "float":
        lo, hi = float(lo), float(hi)
    return Param(name=name, kind=kind, low=lo, high=hi, step=step, log=log, **common)


def _parse_values(p: Path, w: str, values: Any) -> tuple[Any, ...]:
    if not isinstance(values, list) or not values:
        raise _err(p, w, f"expected a non-empty list of values, got {values!r}")
    out = tuple(_norm(v) for v in values)
    for v in out:
        if not isinstance(v, _SCALARS):
            raise _err(p, w, f"categorical values must be scalars (null, true/false, numbers, "
                       f"strings), got {v!r}")
    for i, v in enumerate(out):
        if _member(v, out[:i]):
            raise _err(p, w, f"value {_fmt(v)} is listed twice")
    return out


def _parse_when(p: Path, w: str, when: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise _err(p, f"{w}.when", "expected {parameter: value or [values]}")
    out = []
    for ref, vals in when.items():
        vals = tuple(_norm(v) for v in (vals if isinstance(vals, list) else [vals]))
        if not vals or not all(isinstance(v, _SCALARS) for v in vals):
            raise _err(p, f"{w}.when.{ref}", f"expected a value or a list of values, got {vals!r}")
        out.append((str(ref), vals))
    return tuple(out)


def _parse_branches(
    p: Path, w: str, key: str, prefix: str, name: str, values: tuple[Any, ...], branches: Any
) -> tuple[tuple[Any, tuple[Param, ...]], ...]:
    if branches is None:
        return ()
    if not isinstance(branches, Mapping):
        raise _err(p, f"{w}.branches", "expected a mapping of values to parameters")
    out = []
    for raw_key, body in branches.items():
        value = _match_value(raw_key, values)
        bw = f"{w}.branches.{raw_key}"
        if value is _NO_MATCH:
            raise _err(p, bw, f"{_fmt(raw_key)} is not a value of {key}; its values: "
                       f"{', '.join(_fmt(v) for v in values)}")
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise _err(p, bw, "expected a mapping of key paths to distributions or constants")
        child_prefix = f"{prefix}@{key}={_fmt(value)}"
        out.append((value, tuple(_parse_params(p, body, bw, child_prefix, name, value))))
    return tuple(out)


_NO_MATCH = object()


def _match_value(raw_key: Any, values: tuple[Any, ...]) -> Any:
    # YAML mapping keys: `null:`, `8544:` and `annealed:` parse to their types; after `--set`
    # (a JSON round trip) they are strings, so fall back to the YAML spelling.
    key = _norm(raw_key)
    for v in values:
        if _same(key, v):
            return v
    spelled = [v for v in values if _fmt(v) == str(raw_key)]
    return spelled[0] if len(spelled) == 1 else _NO_MATCH


def _resolve(p: Path, params: tuple[Param, ...]) -> tuple[tuple[Param, ...], tuple[Param, ...]]:
    """Resolve `when` references, set each parameter's requirements, order for sampling."""
    flat = list(_walk(params))
    by_name: dict[str, Param] = {}
    for q in flat:
        if q.name in by_name:
            raise _err(p, q.where, f"parameter name {q.name!r} is used twice")
        by_name[q.name] = q

    requires: dict[str, tuple[Requirement, ...]] = {}
    deps: dict[str, set[str]] = {}
    for q in flat:
        reqs: list[Requirement] = []
        dep: set[str] = set()
        if q.parent is not None:
            reqs.append(((q.parent,), (q.branch,)))
            dep.add(q.parent)
        for ref, vals in q.when:
            targets = [ref] if ref in by_name else [t.name for t in flat if t.key == ref]
            if not targets:
                sampled = ", ".join(t.name for t in flat if t.sampled and t is not q)
                raise _err(p, f"{q.where}.when.{ref}", f"no parameter {ref!r} in the space; "
                           f"parameters: {sampled or '(none)'}")
            if q.name in targets:
                raise _err(p, f"{q.where}.when.{ref}", "a parameter cannot depend on itself")
            for v in vals:
                if not any(by_name[t].can_take(v) for t in targets):
                    can = "; ".join(by_name[t].distribution() for t in targets)
                    raise _err(p, f"{q.where}.when.{ref}", f"{ref} never takes the value "
                               f"{_fmt(v)} ({can})")
            reqs.append((tuple(targets), vals))
            dep.update(targets)
        requires[q.name] = tuple(reqs)
        deps[q.name] = dep

    # Stable topological order: file order, except that a parameter waits for those it reads.
    order: list[str] = []
    done: set[str] = set()
    pending = [q.name for q in flat]
    while pending:
        ready = next((n for n in pending if deps[n] <= done), None)
        if ready is None:
            raise _err(p, by_name[pending[0]].where, "`when` conditions form a cycle among: "
                       + ", ".join(pending))
        pending.remove(ready)
        order.append(ready)
        done.add(ready)

    def rebuild(ps: tuple[Param, ...]) -> tuple[Param, ...]:
        return tuple(
            replace(q, requires=requires[q.name],
                    branches=tuple((v, rebuild(children)) for v, children in q.branches))
            for q in ps
        )

    tree = rebuild(params)
    resolved = {q.name: q for q in _walk(tree)}
    _check_exclusive(p, list(_walk(tree)))
    return tree, tuple(resolved[n] for n in order)


def _chain(q: Param, by_name: Mapping[str, Param]) -> list[tuple[str, Any]]:
    """(parent name, branch value) from the outermost branch down to `q`'s own."""
    out: list[tuple[str, Any]] = []
    while q.parent is not None:
        out.append((q.parent, q.branch))
        q = by_name[q.parent]
    return out[::-1]


def _check_exclusive(p: Path, flat: list[Param]) -> None:
    # Two parameters that set the same key path must never be active together.
    by_name = {q.name: q for q in flat}

    def conditions(q: Param) -> dict[str, set[Any]]:
        out: dict[str, set[Any]] = {}
        for n, v in _chain(q, by_name):
            out[n] = {_fmt(v)}
        for names, vals in q.requires:
            ref = ",".join(names)
            if ref not in out:
                out[ref] = {_fmt(v) for v in vals}
        return out

    by_key: dict[str, list[Param]] = {}
    for q in flat:
        by_key.setdefault(q.key, []).append(q)
    for same in by_key.values():
        for i, a in enumerate(same):
            ca = conditions(a)
            for b in same[i + 1:]:
                cb = conditions(b)
                if not any(n in cb and not ca[n] & cb[n] for n in ca):
                    raise _err(p, b.where, f"{a.key} is also set by {a.name} ({a.where}), and "
                               "both can be active in one trial; put them in different "
                               "branches or give them disjoint `when` conditions")


# ---- value checks against the trial-config schema -----------------------------------------


def _check_values(spec: SweepSpec) -> None:
    """Build a trial config with each categorical value / constant / range end set alone (in
    its branch's context), so that unknown names, wrong types and out-of-range values name
    the sweep-file entry that holds them."""
    flat = spec.all_params()
    by_name = {q.name: q for q in flat}
    cache: dict[str, str | None] = {}

    def problem(overrides: dict[str, Any]) -> str | None:
        blob = json.dumps(overrides, sort_keys=True, default=str)
        if blob not in cache:
            try:
                TrialConfig.from_dict(_override(spec.base, overrides))
                cache[blob] = None
            except ConfigError as e:
                cache[blob] = str(e)
        return cache[blob]

    # Constants first: each parameter is checked with the constants around it, so a bad
    # constant would otherwise be blamed on the first parameter checked.
    for q in sorted(flat, key=lambda q: q.kind != "constant"):
        if q.is_tag:
            continue
        context = _context(q, flat, by_name)
        for v in q.ends():
            bad = problem({**context, q.key: v})
            if bad:
                what = "end" if q.kind in ("float", "int") else "value"
                raise _err(spec.path, q.where, f"{what} {_fmt(v)} does not give a valid trial "
                           f"config: {bad}")


def _context(q: Param, flat: list[Param], by_name: Mapping[str, Param]) -> dict[str, Any]:
    """The key paths that hold wherever `q` is active: constants of its branch and of the
    branches above it, its ancestors' branch values, and the first value of each `when`."""
    chain = _chain(q, by_name)
    ctx: dict[str, Any] = {}
    for c in flat:
        if c.kind == "constant" and c is not q and not c.when and not c.is_tag:
            cc = _chain(c, by_name)
            if cc == chain[: len(cc)]:
                ctx[c.key] = c.value
    for n, v in chain:
        if not by_name[n].is_tag:
            ctx[by_name[n].key] = v
    for names, vals in q.requires[1 if q.parent else 0:]:
        ref = by_name[names[0]]
        if not ref.is_tag:
            ctx[ref.key] = vals[0]
    return ctx


def _check_combinations(spec: SweepSpec) -> None:
    """Build the trial config of many whole points (every one when there are few; a seeded
    random set otherwise), so that values that are valid alone but not together (a head and
    a loss that do not fit, pcgrad without round_robin_sum) fail now, not in trial 37."""
    grid = spec.search.algorithm == "grid"
    candidates = (lambda q: q.grid_values()) if grid else (lambda q: q.ends())
    points = _enumerate(spec.order, candidates, _CHECK_ALL_UP_TO)
    if points is None:
        rng = random.Random(0)
        points = [_walk_once(spec.order, candidates, rng) for _ in range(_CHECK_RANDOM)]
    sampled = {q.name for q in spec.order if q.sampled}
    for point in points:
        try:
            config = TrialConfig.from_dict(_override(spec.base, _point_overrides(spec, point)))
        except ConfigError as e:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in point.items() if k in sampled)
            raise _err(spec.path, "space", f"the point {{{shown}}} does not give a valid trial "
                       f"config: {e}; use branches or `when` so that these values are not "
                       "sampled together") from None
        if spec.resources.attention in PACKED_ATTENTIONS and config.encoder.attention_dropout:
            raise _err(spec.path, "resources.attention",
                       "packed attention has no attention dropout, and the trials have "
                       f"encoder.attention_dropout {config.encoder.attention_dropout}; set "
                       "`fixed: {encoder.attention_dropout: 0}`")


class _Choose(Exception):
    """Raised by `_ScriptedTrial` when the define-by-run function reaches a new decision."""

    def __init__(self, n: int) -> None:
        self.n = n


class _ScriptedTrial:
    """A stand-in for optuna.Trial that answers from a script of choice indices (or a random
    generator); used to enumerate or sample points without a study."""

    def __init__(
        self,
        spec_params: Mapping[str, Param],
        candidates: Callable[[Param], Sequence[Any]],
        script: Sequence[int] = (),
        rng: random.Random | None = None,
    ) -> None:
        self._params = spec_params
        self._candidates = candidates
        self._script = list(script)
        self._rng = rng
        self._pos = 0
        self.params: dict[str, Any] = {}

    def _pick(self, name: str) -> Any:
        options = list(self._candidates(self._params[name]))
        if len(options) == 1:
            i = 0
        elif self._rng is not None:
            i = self._rng.randrange(len(options))
        elif self._pos < len(self._script):
            i = self._script[self._pos]
            self._pos += 1
        else:
            raise _Choose(len(options))
        self.params[name] = options[i]
        return options[i]

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(name)

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return self._pick(name)

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return self._pick(name)


def _enumerate(
    order: Sequence[Param], candidates: Callable[[Param], Sequence[Any]], limit: int
) -> list[dict[str, Any]] | None:
    """Every distinct point (params + constants), or None when there are more than `limit`."""
    by_name = {q.name: q for q in order}
    dbr = DefineByRun(order)
    points: list[dict[str, Any]] = []
    stack: list[list[int]] = [[]]
    while stack:
        script = stack.pop()
        trial = _ScriptedTrial(by_name, candidates, script)
        try:
            constants = dbr(trial)
        except _Choose as c:
            stack.extend(script + [i] for i in reversed(range(c.n)))
            continue
        points.append({**trial.params, **(constants or {})})
        if len(points) > limit:
            return None
    return points


def _walk_once(
    order: Sequence[Param], candidates: Callable[[Param], Sequence[Any]], rng: random.Random
) -> dict[str, Any]:
    trial = _ScriptedTrial({q.name: q for q in order}, candidates, rng=rng)
    constants = DefineByRun(order)(trial)
    return {**trial.params, **(constants or {})}


# ---- search / scheduler / resources / tracking --------------------------------------------


def _section(p: Path, raw: Any, name: str, keys: Sequence[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _err(p, name, f"expected a mapping, got {type(raw).__name__}")
    for k in raw:
        if k not in keys:
            raise _err(p, f"{name}.{k}", f"unknown key; valid keys of {name}: {', '.join(keys)}")
    return dict(raw)


def _check_metric(p: Path, where: str, metric: Any) -> str:
    if metric not in METRICS:
        raise _err(p, where, f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    return metric


def _check_mode(p: Path, where: str, mode: Any) -> str:
    if mode not in ("max", "min"):
        raise _err(p, where, f"{mode!r} is not max or min")
    return mode


def _int_at_least(p: Path, where: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _err(p, where, f"expected an integer ≥ {lo}, got {value!r}")
    return value


def _parse_search(p: Path, raw: Any, order: tuple[Param, ...]) -> SearchSpec:
    s = _section(p, raw, "search", _SEARCH_KEYS)
    algorithm = s.get("algorithm", "tpe")
    if algorithm not in ALGORITHMS:
        raise _err(p, "search.algorithm", f"unknown algorithm {algorithm!r}; valid: "
                   f"{', '.join(ALGORITHMS)}")

    metric = s.get("metric", "overall")
    mode = s.get("mode", "max")
    if isinstance(metric, list):
        metrics = tuple(_check_metric(p, f"search.metric[{i}]", m) for i, m in enumerate(metric))
        if len(set(metrics)) != len(metrics):
            raise _err(p, "search.metric", "a metric is listed twice")
        modes = mode if isinstance(mode, list) else [mode] * len(metrics)
        if len(modes) != len(metrics):
            raise _err(p, "search.mode", f"expected {len(metrics)} modes (one per metric) or "
                       f"one for all, got {len(modes)}")
        modes = tuple(_check_mode(p, f"search.mode[{i}]", m) for i, m in enumerate(modes))
        if len(metrics) == 1:
            metric, mode = metrics[0], modes[0]
        else:
            metric, mode = metrics, modes
    else:
        metric = _check_metric(p, "search.metric", metric)
        if isinstance(mode, list):
            raise _err(p, "search.mode", "a list of modes needs a list of metrics")
        mode = _check_mode(p, "search.mode", mode)
    multi = isinstance(metric, tuple)
    if multi and algorithm in SINGLE_OBJECTIVE:
        multi_ok = [a for a in ALGORITHMS if a not in SINGLE_OBJECTIVE]
        raise _err(p, "search.metric", f"{algorithm} optimises a single metric; give one, or "
                   f"use an algorithm that takes several: {', '.join(multi_ok)}")
    if not multi and algorithm in MULTI_OBJECTIVE:
        raise _err(p, "search.metric", f"{algorithm} optimises several metrics at once; give a "
                   "list, e.g. [sst_acc, para_acc, sts_corr] (or use tpe for one metric)")

    grid_n: int | None = None
    if algorithm == "grid":
        for q in order:
            if not q.has_grid:
                raise _err(p, q.where, f"search.algorithm grid needs a finite set of values; "
                           f"give this {'log ' if q.log else ''}{q.kind} range a step (without "
                           "log), or list its values")
        grid_n = len(_grid_points(p, order))
    num_samples = s.get("num_samples")
    if num_samples is None:  # grid: every point once
        num_samples = grid_n if grid_n is not None else 10
    num_samples = _int_at_least(p, "search.num_samples", num_samples, 1)
    if grid_n is not None and num_samples > grid_n:
        raise _err(p, "search.num_samples", f"{num_samples} is more than the {grid_n} points "
                   "of the grid")
    max_concurrent = _int_at_least(p, "search.max_concurrent", s.get("max_concurrent", 1), 1)
    budget = s.get("time_budget_s")
    if budget is not None and (not _number(budget) or budget <= 0):
        raise _err(p, "search.time_budget_s", f"expected seconds > 0 or null, got {budget!r}")
    seed = s.get("seed", 0)
    if seed is not None:
        seed = _int_at_least(p, "search.seed", seed, 0)
    args = s.get("args") or {}
    if not isinstance(args, Mapping):
        raise _err(p, "search.args", "expected a mapping of sampler arguments")
    valid = _sampler_arg_names(algorithm)
    for k in args:
        if k not in valid:
            raise _err(p, f"search.args.{k}", f"not an argument of optuna.samplers."
                       f"{ALGORITHMS[algorithm]}; valid: {', '.join(valid) or '(none)'}"
                       + (" (seed comes from search.seed)" if k == "seed" else ""))
    return SearchSpec(
        algorithm=algorithm, metric=metric, mode=mode, num_samples=num_samples,
        max_concurrent=max_concurrent, time_budget_s=budget, seed=seed, args=dict(args),
    )


def _sampler_class(algorithm: str) -> type:
    if algorithm == "tpe" and tpe.supported():
        return tpe.TPESampler  # Optuna's TPE, the same proposals for less work
    return getattr(optuna.samplers, ALGORITHMS[algorithm])


def _sampler_arg_names(algorithm: str) -> list[str]:
    sig = inspect.signature(_sampler_class(algorithm).__init__)
    return [n for n in sig.parameters if n not in _RESERVED_SAMPLER_ARGS]


def _parse_scheduler(p: Path, raw: Any, search: SearchSpec) -> SchedulerSpec:
    s = _section(p, raw, "scheduler", _SCHEDULER_KEYS)
    name = s.get("name", "fifo")
    if name not in SCHEDULERS:
        raise _err(p, "scheduler.name", f"unknown scheduler {name!r}; valid: "
                   f"{', '.join(SCHEDULERS)}")
    metric = _check_metric(p, "scheduler.metric", s.get("metric", search.metrics[0]))
    default_mode = dict(zip(search.metrics, search.modes)).get(metric, search.modes[0])
    mode = _check_mode(p, "scheduler.mode", s.get("mode", default_mode))
    args = s.get("args") or {}
    if not isinstance(args, Mapping):
        raise _err(p, "scheduler.args", "expected a mapping of scheduler arguments")
    table = SCHEDULERS[name]
    for k, v in args.items():
        if k not in table:
            raise _err(p, f"scheduler.args.{k}", f"not an argument of the {name} scheduler; "
                       f"valid: {', '.join(table) or '(none)'}")
        kind = table[k]
        ok = {
            "count": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "factor": _number(v) and v > 1,
            "nonneg": _number(v) and v >= 0,
            "bool": isinstance(v, bool),
        }[kind]
        if not ok:
            want = {"count": "an integer ≥ 1", "factor": "a number > 1",
                    "nonneg": "a number ≥ 0", "bool": "true or false"}[kind]
            raise _err(p, f"scheduler.args.{k}", f"expected {want}, got {v!r}")
    grace, max_t = args.get("grace_period"), args.get("max_t")
    if grace is not None and max_t is not None and grace > max_t:
        raise _err(p, "scheduler.args.grace_period", f"{grace} is more than max_t ({max_t})")
    return SchedulerSpec(name=name, metric=metric, mode=mode, args=dict(args))


def _parse_resources(p: Path, raw: Any) -> ResourcesSpec:
    s = _section(p, raw, "resources", _RESOURCES_KEYS)
    workers = _int_at_least(p, "resources.workers", s.get("workers", 1), 1)
    cpus = s.get("cpus_per_worker", 1)
    if not _number(cpus) or cpus <= 0:
        raise _err(p, "resources.cpus_per_worker", f"expected a number > 0, got {cpus!r}")
    gpus = s.get("gpus_per_worker", 0)
    if not _number(gpus) or gpus < 0:
        raise _err(p, "resources.gpus_per_worker", f"expected a number ≥ 0, got {gpus!r}")
    mode = s.get("ray_train", "auto")
    if mode not in RAY_TRAIN_MODES:
        raise _err(p, "resources.ray_train",
                   f"unknown mode {mode!r}; valid: {', '.join(RAY_TRAIN_MODES)}")
    compile_ = s.get("compile", False)
    if not isinstance(compile_, bool):
        raise _err(p, "resources.compile", f"expected true or false, got {compile_!r}")
    attention = s.get("attention", "auto")
    if attention not in ATTENTIONS:
        raise _err(p, "resources.attention",
                   f"unknown attention {attention!r}; valid: {', '.join(ATTENTIONS)}")
    return ResourcesSpec(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus,
                         ray_train=mode, compile=compile_, attention=attention)


def _parse_failures(p: Path, raw: Any) -> FailuresSpec:
    s = _section(p, raw, "failures", _FAILURES_KEYS)
    return FailuresSpec(
        worker_restarts=_int_at_least(p, "failures.worker_restarts",
                                      s.get("worker_restarts", 0), 0),
        trial_retries=_int_at_least(p, "failures.trial_retries", s.get("trial_retries", 0), 0),
    )


def _parse_checkpoints(p: Path, raw: Any, scheduler: SchedulerSpec) -> CheckpointsSpec:
    s = _section(p, raw, "checkpoints", _CHECKPOINTS_KEYS)
    metric = _check_metric(p, "checkpoints.metric", s.get("metric", scheduler.metric))
    default_mode = scheduler.mode if metric == scheduler.metric else (
        "min" if metric.startswith("train_loss") else "max")
    return CheckpointsSpec(
        keep=_int_at_least(p, "checkpoints.keep", s.get("keep", 1), 1),
        metric=metric,
        mode=_check_mode(p, "checkpoints.mode", s.get("mode", default_mode)),
    )


def _parse_tracking(p: Path, raw: Any, name: str) -> TrackingSpec:
    s = _section(p, raw, "tracking", _TRACKING_KEYS)
    experiment = s.get("experiment") or name
    if not isinstance(experiment, str):
        raise _err(p, "tracking.experiment", f"expected a name, got {experiment!r}")
    uri = s.get("tracking_uri")
    if uri is not None and not isinstance(uri, str):
        raise _err(p, "tracking.tracking_uri", f"expected a URI or null, got {uri!r}")
    log_model = s.get("log_model", False)
    if not isinstance(log_model, bool):
        raise _err(p, "tracking.log_model", f"expected true or false, got {log_model!r}")
    return TrackingSpec(experiment=experiment, tracking_uri=uri, log_model=log_model)


# ---- points → trial configs ---------------------------------------------------------------


def point_key_paths(params: Mapping[str, Any]) -> dict[str, Any]:
    """One entry per key path (`tasks.para.loss@tasks.para.head=cosine` → `tasks.para.loss`),
    for logging. Keys starting with `__` (bookkeeping) are left out."""
    return {key_path_of(n): v for n, v in params.items() if not n.startswith("__")}


def space_key_paths(spec: SweepSpec) -> list[str]:
    """Every key path the space can set (so that each run can log every column, with a
    placeholder where a conditional parameter is inactive)."""
    return list(dict.fromkeys(q.key for q in spec.all_params()))


def point_to_config(spec: SweepSpec, params: Mapping[str, Any]) -> TrialConfig:
    """The trial config of a point: base ⊕ fixed ⊕ each parameter's value at its key path.

    `params` maps Optuna names (or plain key paths) to values: what `sample_points` returns or
    the config Ray gives a trial (sampled values and constants). `tag.*` keys are not applied.
    """
    overrides = _point_overrides(spec, params)
    point = ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items())
    return TrialConfig.from_dict(_override(spec.base, overrides),
                                 source=f"{spec.path} (point {{{point}}})")


def _point_overrides(spec: SweepSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Key path → value of a point (tags left out), checking the names."""
    by_name = {q.name: q for q in spec.all_params()}
    names = set(by_name)
    keys = {q.key for q in by_name.values()}
    overrides: dict[str, Any] = {}
    for name, value in params.items():
        if name.startswith("__"):
            continue
        if name not in names and name not in keys:
            raise ConfigError(f"{spec.path}: {name}: not a parameter of this sweep; its "
                              f"parameters: {', '.join(sorted(names)) or '(none)'}")
        key = key_path_of(name)
        if key.startswith(TAG_PREFIX):
            continue
        q = by_name.get(name)
        if q is not None and q.kind == "float" and q.step is not None and _number(value):
            value = round(value, 12)  # Optuna's 0.1 * 3 is 0.30000000000000004
        if key in overrides and not _same(overrides[key], value):
            raise ConfigError(f"{spec.path}: {name}: {key} is set twice in one point "
                              f"({_fmt(overrides[key])} and {_fmt(value)})")
        overrides[key] = value
    return overrides


# ---- Optuna -------------------------------------------------------------------------------


def _grid_points(p: Path, order: Sequence[Param]) -> list[dict[str, Any]]:
    points = _enumerate(order, lambda q: q.grid_values(), _GRID_LIMIT)
    if points is None:
        raise _err(p, "search.algorithm", f"the grid has more than {_GRID_LIMIT} points; list "
                   "fewer values or use another algorithm")
    return points


def grid_size(spec: SweepSpec) -> int:
    """Distinct points of the grid: a branch's parameters multiply only their branch."""
    return len(_grid_points(spec.path, spec.order))


def grid_search_space(spec: SweepSpec) -> dict[str, list[Any]]:
    """Every sampled parameter's grid values, by Optuna name (GridSampler's search space)."""
    return {q.name: list(q.grid_values()) for q in spec.order if q.sampled}


class BranchGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose grid is a list of points instead of the product of all values.

    Optuna's GridSampler needs every parameter that can be suggested in its search space and
    takes the product, so a parameter that exists in one branch would multiply the whole grid
    with copies of the same trial configs. This keeps GridSampler's bookkeeping (a grid id per
    trial, stopping when every point ran) but walks the distinct points of the space; at a
    point where a parameter is inactive its grid slot holds a value no trial reads.
    """

    def __init__(
        self,
        search_space: Mapping[str, Sequence[Any]],
        points: Sequence[Mapping[str, Any]],
        seed: int | None = None,
    ) -> None:
        # A one-point grid keeps the parent's set-up cheap; the real grid replaces it below.
        super().__init__({n: list(v)[:1] for n, v in search_space.items()}, seed)
        self._search_space = {n: list(search_space[n]) for n in sorted(search_space)}
        grids = [
            tuple(point.get(n, self._search_space[n][0]) for n in self._param_names)
            for point in points
        ]
        self._rng.rng.shuffle(grids)  # like GridSampler: concurrent workers rarely collide
        self._all_grids = grids
        self._n_min_trials = len(grids)


TPE_STARTUP_MAX = 10  # Optuna's default number of random start-up trials


def tpe_startup_trials(n_params: int, num_samples: int) -> int:
    """How many random trials TPE runs before it models the results.

    Optuna's 10, but no more than one more than the sampled parameters (the fewest points
    BOHB builds its density model from) and no more than a quarter of the sweep's trials
    (SMAC's cap on its initial design): with Optuna's default a 6-trial sweep would be random
    search throughout, and on a small space 10 random trials spend much of the budget before
    the model starts.
    """
    return max(2, min(TPE_STARTUP_MAX, n_params + 1, math.ceil(num_samples / 4)))


def make_sampler(spec: SweepSpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of `search.algorithm`, seeded with `seed` (default: search.seed),
    with `search.args` as keyword arguments."""
    seed = spec.search.seed if seed is None else seed
    algorithm = spec.search.algorithm
    cls = _sampler_class(algorithm)
    kwargs: dict[str, Any] = {}
    if algorithm == "tpe":
        kwargs["n_startup_trials"] = tpe_startup_trials(spec.n_sampled, spec.search.num_samples)
    if algorithm == "tpe" and not spec.search.multi_objective:
        # Multivariate TPE models parameters jointly; `group` splits the space by which
        # parameters trials actually had, so branch parameters are modelled within their branch.
        kwargs.update(multivariate=True, group=spec.has_conditional)
    if algorithm in ("cmaes", "qmc"):
        # Categorical/conditional parameters fall back to independent sampling every trial.
        kwargs["warn_independent_sampling"] = False
    kwargs.update(spec.search.args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if algorithm == "grid" and spec.has_conditional:
                points = _grid_points(spec.path, spec.order)
                return BranchGridSampler(grid_search_space(spec), points, seed=seed, **kwargs)
            if algorithm == "grid":
                return cls(grid_search_space(spec), seed=seed, **kwargs)
            return cls(seed=seed, **kwargs)
    except (TypeError, ValueError) as e:
        raise _err(spec.path, "search.args", f"optuna.samplers.{cls.__name__}: {e}") from None


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def sample_points(
    spec: SweepSpec, n: int, seed: int | None = None, *, preview: bool = False
) -> list[dict[str, Any]]:
    """Ask an in-memory Optuna study for `n` points (params + constants, by Optuna name).

    Uses the spec's sampler (seeded with `seed`, default search.seed), or a RandomSampler
    when `preview` is set. No trial is told a result, so model-based samplers behave as in
    their start-up phase.
    """
    seed = spec.search.seed if seed is None else seed
    sampler = optuna.samplers.RandomSampler(seed=seed) if preview else make_sampler(spec, seed)
    dbr = spec.define_by_run
    with _quiet_optuna(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(sampler=sampler, directions=spec.search.directions)
        points = []
        for _ in range(n):
            trial = study.ask()
            constants = dbr(trial)
            points.append({**trial.params, **(constants or {})})
    return points


def describe(spec: SweepSpec) -> str:
    """A readable summary of the sweep and a table of its space (for `launch --dry-run`)."""
    s = spec.search
    lines = [f"sweep {spec.name}  ({spec.path}, sha256 {spec.sha256[:12]})"]
    if spec.description:
        lines.append(f"  {spec.description.splitlines()[0]}")
    fixed = ", ".join(f"{k}={_fmt(v)}" for k, v in spec.fixed.items())
    lines.append(f"  base: {spec.base_source}" + (f"; fixed: {fixed}" if fixed else ""))
    objective = ", ".join(f"{m} {k}" for k, m in zip(s.metrics, s.modes))
    budget = f", time budget {s.time_budget_s:g} s" if s.time_budget_s else ""
    lines.append(f"  search: {s.algorithm} ({objective}), {s.num_samples} trials, "
                 f"{s.max_concurrent} at a time, seed {s.seed}{budget}"
                 + (f", args {dict(s.args)}" if s.args else ""))
    if s.algorithm == "tpe" and "n_startup_trials" not in s.args:
        lines.append(f"  tpe: {tpe_startup_trials(spec.n_sampled, s.num_samples)} random "
                     f"start-up trials ({spec.n_sampled} sampled parameters; "
                     "search.args.n_startup_trials sets it)")
    if s.algorithm == "grid":
        size = grid_size(spec)
        product = math.prod(len(q.grid_values()) for q in spec.order if q.sampled)
        lines.append(f"  grid: {size} points"
                     + (f" (the plain product would be {product})" if product != size else ""))
    sc = spec.scheduler
    args = ", ".join(f"{k}={_fmt(v)}" for k, v in sc.args.items())
    lines.append(f"  scheduler: {sc.name}" + (f"({args})" if args else "")
                 + f" on {sc.mode} {sc.metric}")
    r = spec.resources
    lines.append(f"  resources: {r.workers} worker(s) × ({_fmt(r.cpus_per_worker)} CPU, "
                 f"{_fmt(r.gpus_per_worker)} GPU), "
                 + ("a Ray Train worker group per trial" if r.uses_ray_train
                    else "run in the trial's process, reused between trials")
                 + ("; encoder compiled (torch.compile)" if r.compile else "")
                 + (f"; {r.attention} attention" if r.attention != "auto" else ""))
    t = spec.tracking
    uri = redact(t.tracking_uri) if t.tracking_uri else "(launcher)"
    lines.append(f"  tracking: experiment {t.experiment}, uri {uri}, "
                 f"log_model {_fmt(t.log_model)}")
    flat = spec.all_params()
    sampled = sum(q.sampled for q in flat)
    conditional = sum(q.conditional for q in flat)
    lines.append(f"  space: {sampled} sampled, {len(flat) - sampled} constant, "
                 f"{conditional} conditional")
    rows = [("name", "distribution", "condition")]
    rows += [(q.name, q.distribution(), q.condition() or "-") for q in flat]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        lines.append(f"    {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())
    return "\n".join(lines)
