"""`mtsweep predict SOURCE --data-dir DIR`: write CS224N submission files from a trained model.

SOURCE is a `mtsweep train --out` folder (its `model/` is used) or the MLflow run id of a trial
whose sweep had `tracking.log_model: true` (its `model/` artifact is downloaded). For each task of
the model, the split's CS224N file in DIR is predicted and written as `{task}-{split}-output.csv`
in the reference code's layout (`id \\t Predicted_… ` header, `{id} , {value} ` rows, in file
order). When the files carry labels the task metrics are printed too, and for an MLflow source
logged to its run as `predict_{split}_{metric}`. Every input row needs a prediction: a malformed
row (which training skips with a warning) is an error, and then no file is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.errors import MtsweepError

MODEL_ARTIFACT = "model"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"  # sharded weights (very large models)

# Input files by split, in order of preference: the test-student files have no labels; the
# `*-test.csv` names are used when those are absent (labelled test sets give metrics).
INPUT_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "dev": {"sst": ("ids-sst-dev.csv",), "para": ("quora-dev.csv",), "sts": ("sts-dev.csv",)},
    "test": {
        "sst": ("ids-sst-test-student.csv", "ids-sst-test.csv"),
        "para": ("quora-test-student.csv", "quora-test.csv"),
        "sts": ("sts-test-student.csv", "sts-test.csv"),
    },
}
# The value column of each output file, spelled as the CS224N reference code spells it.
OUTPUT_COLUMN = {
    "sst": "Predicted_Sentiment",
    "para": "Predicted_Is_Paraphrase",
    "sts": "Predicted_Similiarity",
}


class PredictError(MtsweepError):
    """The model or the data to predict cannot be used."""


@dataclass
class LoadedModel:
    """A trained model ready to predict, with its config and tokenizer."""

    config: Any  # TrialConfig
    tokenizer: Any
    model: Any  # MultiTaskModel, in eval mode on `device`
    device: Any  # torch.device


def _note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr, flush=True)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


_HOW_TO_GET_A_MODEL = ("set `tracking.log_model: true` in the sweep file and run the sweep "
                       "again, or train with `mtsweep train CONFIG --out DIR` and pass DIR")


def _no_model_message(tracking_uri: str, run) -> str:
    """Why run `run` has no model artifact, and what to pass instead, by its `mtsweep.kind`."""
    from orchestrator.reproduce import REPRODUCES
    from orchestrator.tracking import KIND

    run_id = run.info.run_id
    kind = run.data.tags.get(KIND)
    if kind == "sweep":
        best = _best_trial_with_model(tracking_uri, run)
        if best is not None:
            return (f"run {run_id} is a sweep run, whose models are logged by its trial runs: "
                    f"pass one of those, e.g. its best, {best.info.run_id} "
                    f"(overall {best.data.metrics['overall']:.4f})")
        return (f"run {run_id} is a sweep run, and none of its trial runs has a "
                f"`{MODEL_ARTIFACT}/` artifact (`mtsweep report {run_id}` lists them); to get "
                f"one, {_HOW_TO_GET_A_MODEL}")
    if kind == "reproduction":
        original = run.data.tags.get(REPRODUCES)
        instead = f": pass the run it reproduces, {original}" if original else ""
        return f"run {run_id} is a reproduction run, and those do not log models{instead}"
    return (f"run {run_id} has no `{MODEL_ARTIFACT}/` artifact ({_why_no_model(run)}); to get "
            f"one, {_HOW_TO_GET_A_MODEL}")


def _best_trial_with_model(tracking_uri: str, sweep, checked: int = 20):
    """The trial run of `sweep` with the highest `overall` that has a model artifact (among its
    best `checked`), or None."""
    from orchestrator.tracking import KIND, PARENT, client

    c = client(tracking_uri)
    try:
        runs = c.search_runs([sweep.info.experiment_id],
                             filter_string=f"tags.`{PARENT}` = '{sweep.info.run_id}'",
                             max_results=10000)
        scored = [r for r in runs if r.data.tags.get(KIND, "trial") == "trial"
                  and np.isfinite(r.data.metrics.get("overall", np.nan))]
        scored.sort(key=lambda r: -r.data.metrics["overall"])
        for r in scored[:checked]:
            if c.list_artifacts(r.info.run_id, MODEL_ARTIFACT):
                return r
    except Exception:  # noqa: BLE001 - only a hint: the error says how to list the trials
        return None
    return None


def _why_no_model(run) -> str:
    """Why a trial run has no model: only a trial that trained its every epoch logs one."""
    from orchestrator.tracking import STOPPED_EARLY

    epochs = run.data.params.get("epochs")
    epoch = run.data.metrics.get("epoch")
    reached = (f"after epoch {int(epoch)}" if epoch is not None else "before its first epoch") \
        + (f" of {epochs}" if epochs else "")
    if run.data.tags.get(STOPPED_EARLY) == "true":
        return f"the scheduler stopped it early, {reached}"
    if run.info.status in ("FAILED", "KILLED"):
        return f"it ended {run.info.status} {reached}"
    if run.info.status != "FINISHED":
        return f"it is {run.info.status}, {reached}"
    return "its sweep did not log models"


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())  # one line, whatever the library put in its message
    return text[:500] if text else type(e).__name__


# ---- the model ---------------------------------------------------------------------------------


def model_folder(path: Path) -> Path:
    """The saved-model folder of a `mtsweep train --out` folder (or the model folder itself)."""
    for folder in (path / MODEL_ARTIFACT, path):
        if (folder / "config.yaml").is_file() and (folder / "encoder").is_dir():
            return folder
    raise PredictError(f"{path} holds no saved model (expected {path / MODEL_ARTIFACT}/ with "
                       f"{WEIGHTS}, config.yaml and encoder/, as `mtsweep train --out` writes)")


def read_weights(folder: Path) -> dict[str, Any]:
    """The state dict saved by `accelerator.save_model`: one safetensors file, or shards."""
    from safetensors.torch import load_file

    index = folder / WEIGHTS_INDEX
    if (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    elif index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as e:
            raise PredictError(f"{index}: not a safetensors index ({_first_line(e)})") from None
        files = [folder / s for s in shards]
    else:
        raise PredictError(f"{folder} has no {WEIGHTS}")
    state: dict[str, Any] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))  # safetensors: plain tensors, no pickle
        except Exception as e:  # noqa: BLE001 - missing shard, truncated or corrupt file
            raise PredictError(f"cannot read the checkpoint {f}: {_first_line(e)}") from None
    return state


def _mismatch(expected: dict[str, Any], loaded: dict[str, Any]) -> str | None:
    """What differs between the model's state dict and the checkpoint's (None: nothing)."""
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    shapes = [f"{k} {tuple(loaded[k].shape)} in the checkpoint vs {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in loaded and loaded[k].shape != v.shape]

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f", … ({len(keys) - 4} more)" if len(keys) > 4 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {some(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {some(shapes)}")
    return "; ".join(parts) or None


# What `save_pretrained` writes for a tokenizer: its options, and its vocabulary (tokenizer.json,
# or a slow tokenizer's vocabulary file). Without them transformers builds a tokenizer of the
# special tokens only, and every word becomes [UNK].
TOKENIZER_CONFIG = "tokenizer_config.json"
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model")


def check_tokenizer_files(folder: Path) -> None:
    """A PredictError naming `folder` and the tokenizer files it lacks."""
    missing = [] if (folder / TOKENIZER_CONFIG).is_file() else [TOKENIZER_CONFIG]
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        missing.append(f"{VOCABULARY_FILES[0]} (or another vocabulary file, e.g. vocab.txt)")
    if missing:
        raise PredictError(f"{folder} lacks its tokenizer files: {' and '.join(missing)} "
                           f"(`mtsweep train --out` saves them there)")


def load_model(folder: Path, cpu: bool = False) -> LoadedModel:
    """Rebuild the model from its saved config and encoder folder and load its weights."""
    import torch

    from trainables.config import TrialConfig
    from trainables.encoder import load_saved_encoder
    from trainables.model import MultiTaskModel

    config = TrialConfig.load(folder / "config.yaml")
    check_tokenizer_files(folder / "encoder")
    try:
        tokenizer, encoder = load_saved_encoder(folder / "encoder")
    except (OSError, ValueError) as e:
        raise PredictError(f"cannot load the encoder from {folder / 'encoder'}: "
                           f"{_first_line(e)}") from None
    vocab = getattr(encoder.config, "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        raise PredictError(f"{folder / 'encoder'}: its tokenizer has {len(tokenizer)} tokens, "
                           f"more than the encoder's vocabulary of {vocab}: the tokenizer files "
                           f"are not this model's")
    state = read_weights(folder)
    # A tiny encoder is built without BERT's pooler layer (unused: the model pools itself);
    # `AutoModel.from_config` adds one. Drop it when the checkpoint has none.
    if getattr(encoder, "pooler", None) is not None \
            and not any(k.startswith("encoder.pooler.") for k in state):
        encoder.pooler = None
    model = MultiTaskModel(config, encoder)
    where = folder / WEIGHTS if (folder / WEIGHTS).is_file() else folder
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise PredictError(f"checkpoint {where} does not match its config: {problem}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PredictError(f"checkpoint {where} does not match its config: "
                           f"{_first_line(e)}") from None
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    model.to(device).eval()
    return LoadedModel(config, tokenizer, model, device)


def download_model(tracking_uri: str, run_id: str, dst: Path) -> Path:
    """Download the `model/` artifact of an MLflow run into `dst`; its local folder."""
    from mlflow.artifacts import download_artifacts

    from orchestrator.reproduce import get_run
    from orchestrator.tracking import check_reachable, client, missing_local_store, redact

    why = missing_local_store(tracking_uri)  # MLflow would create the store
    if why:
        raise PredictError(f"{run_id} is neither a folder nor a run in {redact(tracking_uri)} "
                           f"({why})")
    try:
        check_reachable(tracking_uri)
        run = get_run(tracking_uri, run_id)
    except MtsweepError as e:
        raise PredictError(f"{run_id} is not a folder, and {e}") from None
    try:
        listed = client(tracking_uri).list_artifacts(run_id, MODEL_ARTIFACT)
    except Exception as e:  # noqa: BLE001 - unreachable artifact store, …
        raise PredictError(f"run {run_id}: cannot list its artifacts: {_first_line(e)}") from None
    if not listed:
        raise PredictError(_no_model_message(tracking_uri, run))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        local = download_artifacts(run_id=run_id, artifact_path=MODEL_ARTIFACT,
                                   dst_path=str(dst), tracking_uri=tracking_uri)
    except Exception as e:  # noqa: BLE001
        raise PredictError(f"run {run_id}: cannot download its `{MODEL_ARTIFACT}/` artifact: "
                           f"{_first_line(e)}") from None
    return model_folder(Path(local))


# ---- data and predictions -------------------------------------------------------------------


def input_file(data_dir: Path, task: str, split: str) -> Path | None:
    """The task's CS224N file of `split` in `data_dir`, or None when there is none."""
    return next((data_dir / n for n in INPUT_FILES[split][task] if (data_dir / n).is_file()),
                None)


def read_input(task: str, path: Path):
    """The rows of one input file. Training skips malformed rows with a warning; here every
    row needs a prediction, so they are a PredictError naming the file and the lines."""
    import warnings

    from trainables.data.readers import DataWarning, read_split

    with warnings.catch_warnings():
        # The error below says it all; the reader's warning would repeat it.
        warnings.simplefilter("ignore", DataWarning)
        raw = read_split(task, path, "cs224n", require_labels=False)
    if raw.skipped:
        raise PredictError(f"{path}: {raw.skipped} malformed row(s), line(s) "
                           f"{raw.describe_skipped()}; every row needs a prediction, so nothing "
                           f"was written (fix or remove the row(s))")
    return raw


def predict_split(lm: LoadedModel, task: str, tok, batch_size: int) -> np.ndarray:
    """Predictions for every row of a tokenized split, in file order (float64; class ids for
    classification). Batches are formed by length, as the training loop's evaluation does."""
    import torch

    from trainables.data.batching import collate, make_batches

    pad_id = lm.tokenizer.pad_token_id or 0
    out = np.zeros(tok.num_rows, dtype=np.float64)
    with torch.inference_mode():
        for rows in make_batches(tok.lengths, batch_size, shuffle=False, seed=0, bucket=True):
            batch = {k: v.to(lm.device) for k, v in collate(tok, rows, pad_id).items()
                     if k not in ("index", "labels")}
            pred = lm.model.predict(task, batch)
            out[rows] = np.asarray(pred.float().cpu().tolist(), dtype=np.float64)
    return out


def format_value(task: str, value: float) -> str:
    """sst: the class (int 0..4); para: 0/1; sts: the raw score (shortest float32 repr)."""
    from trainables.tasks import TASKS

    if TASKS[task].is_regression:
        return str(np.float32(value))
    return str(int(value))


def write_output(path: Path, task: str, ids: list[str], preds: np.ndarray) -> None:
    """One CS224N output file, written to a temp file and renamed (never half-written)."""
    lines = [f"id \t {OUTPUT_COLUMN[task]} \n"]
    lines += [f"{i} , {format_value(task, p)} \n" for i, p in zip(ids, preds)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def task_metric(task: str, preds: np.ndarray, gold: np.ndarray) -> float:
    from trainables.metrics import accuracy, pearson
    from trainables.tasks import TASKS

    if TASKS[task].is_regression:
        return pearson(preds, gold)
    return accuracy(preds.astype(np.int64), gold)


def predict_files(lm: LoadedModel, data_dir: Path, split: str, out_dir: Path,
                  batch_size: int | None = None) -> dict[str, Any]:
    """Predict each task's `split` file in `data_dir` into `out_dir`.

    Returns {"files": {task: path}, "metrics": {...}, "skipped": [tasks]}; metrics are those of
    the tasks whose file has labels, with the overall scores over them.
    """
    from trainables.data.cache import load_tokenized
    from trainables.metrics import TASK_METRIC, overall_scores
    from trainables.runtime import Runtime

    if not data_dir.is_dir():
        raise PredictError(f"data directory {data_dir} does not exist")
    batch_size = batch_size or lm.config.eval_batch_size
    cache = Runtime().resolved_cache_dir()
    files: dict[str, str] = {}
    metrics: dict[str, float] = {}
    skipped: list[str] = []
    todo = {t: input_file(data_dir, t, split) for t in lm.config.tasks}
    if not any(todo.values()):
        looked = ", ".join(n for t in lm.config.tasks for n in INPUT_FILES[split][t])
        raise PredictError(f"no {split} file of the model's tasks in {data_dir} "
                           f"(looked for {looked})")
    # Every file is read before anything is written: a bad one leaves no output behind.
    raws = {}
    for task, path in todo.items():
        if path is None:
            _note(f"no {task} {split} file in {data_dir} (looked for "
                  f"{', '.join(INPUT_FILES[split][task])}); skipping {task}")
            skipped.append(task)
            continue
        raw = read_input(task, path)
        if not len(raw):
            _note(f"{path} has no examples; skipping {task}")
            skipped.append(task)
            continue
        raws[task] = (path, raw)
    for task, (path, raw) in raws.items():
        tok = load_tokenized(raw, lm.tokenizer, lm.config.max_length,
                             lm.model.input_mode(task), cache)
        preds = predict_split(lm, task, tok, batch_size)
        target = out_dir / f"{task}-{split}-output.csv"
        write_output(target, task, raw.ids, preds)
        files[task] = str(target)
        if raw.labels is not None:
            metrics[TASK_METRIC[task]] = task_metric(task, preds, raw.labels)
        print(f"{task}: {len(raw)} predictions from {path.name} → {target}", flush=True)
    metrics.update(overall_scores(metrics))
    return {"files": files, "metrics": metrics, "skipped": skipped}


def log_metrics(tracking_uri: str, run_id: str, split: str, metrics: dict[str, float]) -> None:
    """Record the metrics on the source run as `predict_{split}_{metric}` (best effort)."""
    from mlflow.entities import Metric

    from orchestrator.tracking import client

    now = int(time.time() * 1000)
    batch = [Metric(f"predict_{split}_{k}", float(v), now, 0) for k, v in metrics.items()]
    try:
        client(tracking_uri).log_batch(run_id, metrics=batch)
    except Exception as e:  # noqa: BLE001 - the files are written; the record is extra
        _warn(f"could not log the metrics to run {run_id}: {_first_line(e)}")


def predict(source: str, data_dir: str | Path, split: str = "dev", out_dir: str | Path = ".",
            tracking_uri: str | None = None, batch_size: int | None = None,
            cpu: bool = False) -> dict[str, Any]:
    """Load the model of `source` (train --out folder or MLflow run id) and predict `split`."""
    from orchestrator.tracking import resolve_tracking_uri

    if split not in INPUT_FILES:
        raise PredictError(f"unknown split {split!r}; expected one of {', '.join(INPUT_FILES)}")
    if batch_size is not None and batch_size < 1:
        raise PredictError(f"--batch-size must be ≥ 1, got {batch_size}")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if Path(source).is_dir():
        lm = load_model(model_folder(Path(source)), cpu)
        return predict_files(lm, data_dir, split, out_dir, batch_size)
    if os.sep in source or "/" in source or source.startswith((".", "~")):
        raise PredictError(f"{source}: no such folder (give a `mtsweep train --out` folder or "
                           f"an MLflow run id)")
    uri = resolve_tracking_uri(tracking_uri, None)
    with tempfile.TemporaryDirectory(prefix="mtsweep-predict-") as tmp:
        lm = load_model(download_model(uri, source, Path(tmp)), cpu)
    result = predict_files(lm, data_dir, split, out_dir, batch_size)
    if result["metrics"]:
        log_metrics(uri, source, split, result["metrics"])
    return result


def format_metrics(metrics: dict[str, float]) -> str:
    order = ("sst_acc", "para_acc", "sts_corr", "overall", "overall_mean")
    return " · ".join(f"{k} {metrics[k]:.4f}" for k in order if k in metrics)


def run_predict(args: argparse.Namespace) -> int:
    result = predict(args.source, args.data_dir, args.split, args.out, args.tracking_uri,
                     args.batch_size, args.cpu)
    if result["metrics"]:
        print(f"{args.split} metrics: {format_metrics(result['metrics'])}")
    else:
        print(f"{args.split} files have no labels: no metrics")
    if args.json:
        print(json.dumps(result))
    return 0


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN_ID_OR_TRAIN_OUT_DIR",
                   help="a `mtsweep train --out` folder, or the MLflow run id of a trial whose "
                        "sweep had tracking.log_model: true")
    p.add_argument("--data-dir", required=True,
                   help="folder with the CS224N files (ids-sst-dev.csv, quora-test-student.csv, …)")
    p.add_argument("--split", choices=list(INPUT_FILES), default="dev")
    p.add_argument("--out", default=".", help="where the *-output.csv files go (default: here)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for a run id (default "
                                          "$MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--json", action="store_true",
                   help="end with one JSON line: files, metrics, skipped tasks")
    p.add_argument("--batch-size", type=int, help="examples per batch (default: the config's "
                                                   "eval_batch_size)")
    p.add_argument("--cpu", action="store_true", help="use the CPU even when a GPU is present")
