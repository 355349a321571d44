"""The trial config: one frozen, validated object that drives training.

The same object is saved next to the checkpoint, logged by the sweep and read back to reproduce
a trial. `TrialConfig.from_dict` is the only way in: it rejects unknown keys, wrong types,
out-of-range values and impossible combinations, naming the key path (and the file).

Machine settings (devices, precision, paths, threads) are *not* here; see `trainables.runtime`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Literal

import yaml

from trainables.errors import ConfigError
from trainables.tasks import TASKS


@dataclass(frozen=True)
class EncoderConfig:
    # "tiny" (a small random BERT with an offline tokenizer, for tests and the demo), a local
    # folder, a Hugging Face hub id, or "pkg:<python package>" for weights shipped in a package.
    name: str = "tiny"
    # "full" fine-tunes every encoder weight; "frozen" trains the heads only.
    fine_tune: Literal["full", "frozen"] = "full"
    # How a sentence embedding is read off the encoder: the [CLS] vector or the masked mean.
    pooling: Literal["cls", "mean"] = "cls"
    # BERT's hidden_dropout_prob (the paper's "hidden dropout prob"); heads default to it too.
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1


@dataclass(frozen=True)
class TaskConfig:
    # Registry names (trainables.heads / trainables.losses) and their keyword arguments.
    head: str
    loss: str
    head_args: dict[str, Any] = field(default_factory=dict)
    loss_args: dict[str, Any] = field(default_factory=dict)
    # Multiplies the task's loss (the paper scaled SST ×15 and STS ×25).
    weight: float = 1.0


@dataclass(frozen=True)
class ScheduleConfig:
    # Update schedule (trainables.schedules): serial, round_robin, round_robin_sum,
    # proportional, annealed.
    name: str = "round_robin"
    # How long an epoch is when the tasks' data sets differ in size: "shortest" stops at the
    # smallest, "longest" cycles the smaller ones until the largest is done, "exhaust" goes
    # through every set once (tasks drop out as they run out), "fixed" takes steps_per_epoch.
    epoch_length: Literal["shortest", "longest", "exhaust", "fixed"] = "shortest"
    steps_per_epoch: int | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComponentConfig:
    """A registry name and its keyword arguments (loss weighting, gradient combination)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimConfig:
    # AdamW. The paper's defaults: lr 1e-5, betas (0.9, 0.999), eps 1e-6, no weight decay.
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.0
    # Linear warmup over this fraction of all steps, then `decay` down to 0 (or constant).
    warmup_ratio: float = 0.0
    decay: Literal["constant", "linear", "cosine"] = "constant"
    # Gradient-norm clipping; None disables it.
    max_grad_norm: float | None = 1.0


@dataclass(frozen=True)
class DataConfig:
    # Folder holding the task files (CS224N names by default).
    dir: str = "data/demo"
    # cs224n | glue | jsonl | hf | auto (detected from each file; the log says which).
    format: Literal["auto", "cs224n", "glue", "jsonl", "hf"] = "auto"
    # Per task: an int caps the training set at that many examples, a float in (0, 1] keeps
    # that fraction, null keeps all (e.g. down-sampled QQP vs all QQP).
    train_limit: dict[str, int | float | None] = field(default_factory=dict)
    dev_limit: dict[str, int | float | None] = field(default_factory=dict)
    # Optional explicit files per task and split: {sst: {train: path, dev: path}}.
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    # Sort batches by length within chunks (bucketing) to cut padding.
    bucket: bool = True


def _default_tasks() -> dict[str, TaskConfig]:
    return {
        "sst": TaskConfig(head="mlp", loss="ce"),
        "para": TaskConfig(head="cosine", loss="bce"),
        "sts": TaskConfig(head="cosine", loss="mse"),
    }


@dataclass(frozen=True)
class TrialConfig:
    """Everything the study compares for one trial. Build with `from_dict` / `load`."""

    seed: int = 11711
    epochs: int = 1
    # Per-process batch size of each task's batches.
    batch_size: int = 8
    eval_batch_size: int = 64
    # Tokens per sentence (per pair for cross-encoder heads), after truncation.
    max_length: int = 128
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=_default_tasks)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Loss weighting across tasks (trainables.weighting): static | uncertainty.
    weighting: ComponentConfig = field(default_factory=lambda: ComponentConfig("static"))
    # How per-task gradients are combined in a multi-task step (trainables.gradients): sum | pcgrad.
    gradient: ComponentConfig = field(default_factory=lambda: ComponentConfig("sum"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str | None = None) -> TrialConfig:
        """Validate a plain mapping (parsed YAML) into a TrialConfig.

        Raises ConfigError naming `source` and the key path of the first problem.
        """
        try:
            cfg = _build(cls, raw, "")
            _check_semantics(cfg)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from None
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrialConfig:
        """Read a YAML trial config and apply `key.path=value` overrides."""
        raw = load_yaml(path)
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: expected a mapping of trial-config keys at the top level")
        sweep_keys = sorted({"base", "space", "search"} & set(raw))
        if sweep_keys and not {"tasks", "encoder"} & set(raw):
            raise ConfigError(f"{path}: a sweep file (it has {', '.join(sweep_keys)}); run it "
                              "with mtsweep launch")
        try:
            return cls.from_dict(apply_overrides(raw, overrides), source=str(path))
        except ConfigError as e:
            if overrides and _valid(raw, path):  # the mistake is in an override
                raise ConfigError(str(e).replace(f"{path}: ", "--set ", 1)) from None
            raise

    # ---- views --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON/YAML-serialisable) that `from_dict` turns back into `self`."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """`a.b.c -> value` view of `to_dict()` (for logging as params)."""
        return flatten(self.to_dict())

    def fingerprint(self) -> str:
        """Short content hash of the resolved config."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, overrides: Sequence[str] | Mapping[str, Any]) -> TrialConfig:
        """A new, re-validated config with `key.path` overrides applied."""
        return TrialConfig.from_dict(apply_overrides(self.to_dict(), overrides))


# ---- YAML and overrides -----------------------------------------------------------------


def _valid(raw: Mapping[str, Any], path: str | Path) -> bool:
    try:
        TrialConfig.from_dict(raw, source=str(path))
    except ConfigError:
        return False
    return True


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the last would win)."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep)  # its own errors (tags) first
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is given twice", key_node.start_mark)
        return mapping


def load_yaml(path: str | Path) -> Any:
    """Safe-load a YAML file; a missing file or a syntax error is a ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {'a folder, not a file' if p.is_dir() else 'no such file'}")
    try:
        loader = _UniqueKeyLoader(p.read_text())
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty")
    return data


def apply_overrides(
    raw: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any]
) -> dict[str, Any]:
    """Return a deep copy of `raw` with `a.b.c=value` (or {"a.b.c": value}) applied.

    String values are parsed as YAML scalars/lists (`lr=2e-5`, `betas=[0.9,0.98]`,
    `train_limit.para=null`); types are then checked by `from_dict`.
    """
    out = json.loads(json.dumps(raw, default=list))
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item!r}: expected key.path=value")
            items.append((key.strip(), _parse_scalar(value)))
    for key, value in items:
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = child
        node[parts[-1]] = value
    return out


def _parse_scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return _float_or_self(value) if isinstance(value, str) else value


def _float_or_self(value: str) -> Any:
    # YAML 1.1 reads "1e-5" as a string; users mean a number.
    try:
        return float(value) if any(c.isdigit() for c in value) else value
    except ValueError:
        return value


# ---- typed construction ------------------------------------------------------------------


def _build(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path or '(top level)'}: expected a mapping, got {_tname(raw)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = [k for k in raw if k not in known]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key; valid keys{' of ' + path if path else ''}: "
            f"{', '.join(sorted(known))}"
        )
    kwargs = {}
    for f in fields(cls):
        if f.name in raw:
            kwargs[f.name] = _coerce(hints[f.name], raw[f.name], f"{path}.{f.name}".lstrip("."))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}.{f.name}".lstrip(".") + ": required key is missing")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: expected "
                          f"{' or '.join(_tname_t(a) for a in args if a is not type(None))}, "
                          f"got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_tname(value)}")
        return {str(k): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        # No float → int coercion: in `int | float` (a count or a fraction) 1.0 means "all".
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            value = _float_or_self(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {path}")  # a bug in this module


def _tname(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _tname_t(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ---- cross-field checks ------------------------------------------------------------------


def _positive(value: float | int | None, path: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path}: must be {'≥' if allow_zero else '>'} 0, got {value}")


def _check_semantics(cfg: TrialConfig) -> None:
    """Checks that span several keys: names exist in registries, heads fit tasks and losses."""
    from trainables.gradients import GRADIENTS
    from trainables.heads import HEADS
    from trainables.losses import LOSSES
    from trainables.schedules import SCHEDULES
    from trainables.weighting import WEIGHTINGS

    for name, value in (("seed", cfg.seed),):
        _positive(value, name, allow_zero=True)
    for name in ("epochs", "batch_size", "eval_batch_size", "max_length"):
        _positive(getattr(cfg, name), name)
    if cfg.max_length < 8:
        raise ConfigError(f"max_length: must be ≥ 8, got {cfg.max_length}")
    for name in ("hidden_dropout", "attention_dropout"):
        p = getattr(cfg.encoder, name)
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"encoder.{name}: must be in [0, 1), got {p}")
    o = cfg.optim
    _positive(o.lr, "optim.lr")
    _positive(o.eps, "optim.eps")
    _positive(o.weight_decay, "optim.weight_decay", allow_zero=True)
    _positive(o.max_grad_norm, "optim.max_grad_norm")
    for i, b in enumerate(o.betas):
        if not 0.0 <= b < 1.0:
            raise ConfigError(f"optim.betas[{i}]: must be in [0, 1), got {b}")
    if not 0.0 <= o.warmup_ratio < 1.0:
        raise ConfigError(f"optim.warmup_ratio: must be in [0, 1), got {o.warmup_ratio}")

    if not cfg.tasks:
        raise ConfigError(f"tasks: at least one task is needed; valid: {', '.join(TASKS)}")
    for task_name, tc in cfg.tasks.items():
        key = f"tasks.{task_name}"
        if task_name not in TASKS:
            raise ConfigError(f"{key}: unknown task; valid: {', '.join(TASKS)}")
        task = TASKS[task_name]
        _positive(tc.weight, f"{key}.weight", allow_zero=True)
        head_cls = HEADS.get(tc.head, f"{key}.head")
        HEADS.check_args(tc.head, tc.head_args, f"{key}.head_args")
        LOSSES.get(tc.loss, f"{key}.loss")
        LOSSES.check_args(tc.loss, tc.loss_args, f"{key}.loss_args")
        loss = _probe(partial(LOSSES.build, tc.loss, task, **tc.loss_args), f"{key}.loss")
        head_cls.check_compatible(task, loss, key)
        # Build the head once at a toy width so that bad argument values fail here, not later.
        _probe(partial(head_cls, 8, loss.num_outputs, 0.1, **tc.head_args), f"{key}.head_args")

    sched = cfg.schedule
    SCHEDULES.get(sched.name, "schedule.name")
    SCHEDULES.check_args(sched.name, sched.args, "schedule.args")
    probe_sizes = {t: 1 for t in cfg.tasks}
    _probe(
        lambda: SCHEDULES.build(sched.name, probe_sizes, "shortest", None, cfg.epochs, **sched.args),
        "schedule.args",
    )
    if sched.epoch_length == "fixed" and sched.steps_per_epoch is None:
        raise ConfigError("schedule.steps_per_epoch: required when schedule.epoch_length is fixed")
    _positive(sched.steps_per_epoch, "schedule.steps_per_epoch")

    WEIGHTINGS.get(cfg.weighting.name, "weighting.name")
    WEIGHTINGS.check_args(cfg.weighting.name, cfg.weighting.args, "weighting.args")
    weights = {t: 1.0 for t in cfg.tasks}
    _probe(lambda: WEIGHTINGS.build(cfg.weighting.name, weights, **cfg.weighting.args),
           "weighting.args")
    grad_cls = GRADIENTS.get(cfg.gradient.name, "gradient.name")
    GRADIENTS.check_args(cfg.gradient.name, cfg.gradient.args, "gradient.args")
    _probe(lambda: GRADIENTS.build(cfg.gradient.name, **cfg.gradient.args), "gradient.args")
    sched_cls = SCHEDULES.get(sched.name)
    if grad_cls.needs_multi_task_steps and not sched_cls.multi_task_steps:
        multi = [n for n in SCHEDULES if SCHEDULES.get(n).multi_task_steps]
        raise ConfigError(
            f"gradient.name: {cfg.gradient.name} combines the gradients of several tasks in one "
            f"step; schedule {sched.name!r} steps on one task at a time (use: {', '.join(multi)})"
        )

    d = cfg.data
    for limits_key in ("train_limit", "dev_limit"):
        for task_name, limit in getattr(d, limits_key).items():
            key = f"data.{limits_key}.{task_name}"
            if task_name not in TASKS:
                raise ConfigError(f"{key}: unknown task; valid: {', '.join(TASKS)}")
            if isinstance(limit, float) and not 0.0 < limit <= 1.0:
                raise ConfigError(f"{key}: a fraction must be in (0, 1], got {limit}")
            if isinstance(limit, int) and limit <= 0:
                raise ConfigError(f"{key}: a count must be > 0, got {limit}")
    for task_name, splits in d.files.items():
        if task_name not in TASKS:
            raise ConfigError(f"data.files.{task_name}: unknown task; valid: {', '.join(TASKS)}")
        for split in splits:
            if split not in ("train", "dev", "test"):
                raise ConfigError(f"data.files.{task_name}.{split}: valid splits: train, dev, test")


def _probe(build, key: str):
    """Run `build()`; a ConfigError or a bad argument type becomes an error naming `key`."""
    try:
        return build()
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
