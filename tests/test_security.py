"""Security properties: servers on loopback unless asked, YAML and checkpoints loaded without
running code, commands recorded with safe quoting, and no secrets in what a run records."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, tiny_dict
from .test_sweep import _mtsweep

PAYLOAD = '!!python/object/apply:os.system ["touch PWNED"]'


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


# --------------------------------------------------------------------------------------------
# `mtsweep ui` listens on 127.0.0.1 unless another host is asked for.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port`, from /proc/net/tcp{,6}."""
    out = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr)
            if v6:  # four little-endian 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                out.add(socket.inet_ntop(socket.AF_INET6, raw))
            else:
                out.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return out


def test_ui_command_line_binds_loopback_unless_asked():
    from orchestrator.cli import build_parser
    from orchestrator.ui import server_command

    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1"
    cmd = server_command("sqlite:////x/mlflow.db", args.host, args.port)
    assert cmd[1] == "server" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    args = build_parser().parse_args(["ui", "--host", "0.0.0.0", "--port", "5123"])
    cmd = server_command("sqlite:////x/mlflow.db", args.host, args.port)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "5123"


@pytest.mark.parametrize("host, warned", [(None, False), ("127.0.0.1", False),
                                          ("0.0.0.0", True), ("192.0.2.7", True)])
def test_ui_warns_before_listening_beyond_this_machine(tmp_path, host, warned):
    """Checked before anything starts (the store does not exist, so nothing does)."""
    args = ["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]
    r = _mtsweep(args + (["--host", host] if host else []), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "no tracking store" in r.stderr
    assert ("reachable from other machines" in r.stderr) == warned, r.stderr


@pytest.mark.slow  # the MLflow server takes 10-20 s to start on a busy 2-core machine
@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 0), (signal.SIGTERM, 128 + 15)],
                         ids=["ctrl-c", "sigterm"])
def test_ui_listens_on_127_0_0_1_by_default(tmp_path, stop, status):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the store
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # Started as a shell script's background job starts it: with SIGINT ignored.
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "--tracking-uri", uri,
                             "--port", str(port)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stdout.readline()  # printed once the server answers /health
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stderr.read()
        assert _listening(port) == {"127.0.0.1"}
    finally:
        proc.send_signal(stop)  # stops the server too (it runs in a session of its own)
        rc = proc.wait(timeout=180)
    assert rc == status
    deadline = time.time() + 20
    while _listening(port) and time.time() < deadline:
        time.sleep(0.5)
    assert not _listening(port), "the MLflow server outlived `mtsweep ui`"


# --------------------------------------------------------------------------------------------
# The local Ray of `mtsweep launch` keeps its dashboard on 127.0.0.1.


class _Stop(Exception):
    pass


def test_local_ray_dashboard_is_on_loopback(monkeypatch, tmp_path):
    """The arguments `launch` gives `ray.init` for its local Ray (captured; no Ray starts)."""
    import ray

    from orchestrator.launch import LaunchOptions, _init_ray
    from orchestrator.space import load_sweep

    seen: dict = {}

    def capture(*args, **kwargs):
        seen.update(kwargs, args=args, api_server=os.environ.get("RAY_API_SERVER_ADDRESS"))
        raise _Stop

    monkeypatch.setattr(ray, "init", capture)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://elsewhere:8265")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": tiny_dict(tmp_path)}))
    with pytest.raises(_Stop):
        _init_ray(LaunchOptions(num_cpus=1), load_sweep(sweep))
    assert seen["include_dashboard"] is True and seen["dashboard_host"] == "127.0.0.1"
    assert seen["_node_ip_address"] == "127.0.0.1"
    assert seen["_temp_dir"].startswith("/tmp/mtsw-ray-")
    # Ray's processes inherit where their own state API is (another Ray may run here), and a
    # Ray that did not start leaves no temp folder and the environment as it was.
    assert seen["api_server"] == f"http://127.0.0.1:{seen['dashboard_port']}"
    assert os.environ["RAY_API_SERVER_ADDRESS"] == "http://elsewhere:8265"
    assert not Path(seen["_temp_dir"]).exists()


# --------------------------------------------------------------------------------------------
# YAML is loaded with safe_load: a python/object tag is refused and never runs.


@pytest.fixture
def trial_file(tmp_path, demo_dir):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tiny_dict(demo_dir, epochs=1)))
    return path


@pytest.mark.parametrize("case", ["sweep-top", "sweep-value", "sweep-dry-run", "base-file",
                                  "trial", "trial-set", "predict-model-config"])
def test_yaml_python_tags_are_refused_and_never_run(tmp_path, trial_file, case):
    bad = tmp_path / "bad.yaml"
    if case == "sweep-top":
        bad.write_text(PAYLOAD + "\n")
        args = ["launch", str(bad)]
    elif case in ("sweep-value", "sweep-dry-run"):
        bad.write_text(f"base: trial.yaml\nsearch:\n  seed: {PAYLOAD}\n")
        args = ["launch", str(bad)] + (["--dry-run"] if case == "sweep-dry-run" else [])
    elif case == "base-file":
        trial_file.write_text(trial_file.read_text() + f"seed: {PAYLOAD}\n")
        (tmp_path / "sweep.yaml").write_text("base: trial.yaml\n")
        bad = trial_file
        args = ["launch", str(tmp_path / "sweep.yaml")]
    elif case == "trial":
        bad.write_text(f"seed: {PAYLOAD}\nepochs: 1\n")
        args = ["train", str(bad)]
    elif case == "trial-set":
        bad = trial_file
        args = ["train", str(trial_file), "--set", f"seed={PAYLOAD}", "--out", "out"]
    else:  # a saved model whose config.yaml carries the tag
        model = tmp_path / "model"
        (model / "encoder").mkdir(parents=True)
        bad = model / "config.yaml"
        bad.write_text(f"seed: {PAYLOAD}\n")
        args = ["predict", str(model), "--data-dir", str(tmp_path), "--out", "out"]
    r = _mtsweep(args, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    line = _one_error_line(r.stderr)
    if case == "trial-set":  # the value stays a string, and a seed is an integer
        assert line.startswith("error: --set seed: expected an integer"), line
    else:
        assert str(bad.name) in line, line
        assert "not valid YAML" in line and "python/object/apply:os.system" in line, line
    assert not (tmp_path / "PWNED").exists(), "the YAML payload ran"
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()


def _calls(root: Path):
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield path.relative_to(REPO), node


def _name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def test_no_unsafe_deserialisation_in_the_code():
    """Every torch.load passes weights_only=True; no pickle.load(s), no yaml.load/unsafe_load
    or full/unsafe YAML loaders, in the shipped packages."""
    found = []
    for package in ("orchestrator", "trainables"):
        for where, call in _calls(REPO / package):
            name = _name(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "torch.load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    found.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads",
                        "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all",
                        "dill.load", "dill.loads"):
                found.append(f"{where}:{call.lineno}: {name}")
    assert not found, found


# --------------------------------------------------------------------------------------------
# Checkpoints are loaded with weights_only=True: a pickled object in any file of an epoch
# checkpoint is refused by the real resume path (`mtsweep train --resume`), and never runs.


class Payload:
    """Unpickled by a full unpickler, this creates the file `path`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, demo_dir, cache_dir):
    """A one-epoch tiny trial trained by `mtsweep train --out`, with its epoch-1 checkpoint."""
    folder = tmp_path_factory.mktemp("checkpoint")
    raw = tiny_dict(demo_dir, epochs=1)
    raw["data"]["train_limit"] = {"sst": 32, "para": 32, "sts": 32}
    raw["data"]["dev_limit"] = {"sst": 16, "para": 16, "sts": 16}
    config = folder / "trial.yaml"
    config.write_text(yaml.safe_dump(raw))
    r = _mtsweep(["train", str(config), "--out", str(folder / "out"), "--cpu"], cwd=folder,
                 timeout=300, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    epoch = folder / "out" / "checkpoints" / "epoch-1"
    assert {"lr_scheduler.pt", "optimizer.bin", "random_states_0.pkl", "model.safetensors",
            "trainer_state.json"} <= {p.name for p in epoch.iterdir()}
    assert not (epoch / "custom_checkpoint_0.pkl").exists()
    return {"config": config, "epoch": epoch, "cache": str(cache_dir)}


def _resume(checkpoint: dict, folder: Path, tmp_path: Path):
    return _mtsweep(["train", str(checkpoint["config"]), "--resume", str(folder), "--out",
                     str(tmp_path / "out"), "--cpu"], cwd=tmp_path, timeout=300,
                    MTSWEEP_CACHE=checkpoint["cache"])


def test_an_intact_checkpoint_resumes(checkpoint, tmp_path):
    r = _resume(checkpoint, checkpoint["epoch"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {checkpoint['epoch']} after epoch 1" in r.stdout


@pytest.mark.parametrize("name", ["lr_scheduler.pt", "optimizer.bin", "random_states_0.pkl",
                                  "legacy custom_checkpoint_0.pkl"])
def test_a_pickled_object_in_a_checkpoint_is_refused_and_never_runs(checkpoint, tmp_path, name):
    import torch

    folder = tmp_path / "epoch-1"
    shutil.copytree(checkpoint["epoch"], folder)
    marker = tmp_path / "PWNED"
    if name.startswith("legacy "):  # the layout before the scheduler state was this module's
        name = name.split()[1]
        (folder / "lr_scheduler.pt").unlink()
    torch.save({"state": Payload(marker), "param_groups": []}, folder / name)
    r = _resume(checkpoint, folder, tmp_path)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    line = _one_error_line(r.stderr)
    assert str(folder) in line, line
    if name == "custom_checkpoint_0.pkl":
        assert "written by an earlier mtsweep" in line and "not loaded" in line, line
    else:
        assert f"{folder / name}: cannot load it: it holds objects other than tensors " \
               f"and plain data" in line, line
        assert "(io.open); refused by torch.load(weights_only=True)" in line, line
    assert not marker.exists(), "the checkpoint's payload ran"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, fragment", [
    (lambda f: (f / "optimizer.bin").write_bytes(b"PK\x03\x04 truncated"),
     "optimizer.bin: cannot load it: RuntimeError: PytorchStreamReader failed"),
    (lambda f: (f / "trainer_state.json").unlink(), "not an epoch checkpoint (no trainer_state.json)"),
    (lambda f: shutil.rmtree(f), "no such checkpoint folder"),
], ids=["corrupt-optimizer", "no-trainer-state", "no-folder"])
def test_a_broken_checkpoint_is_one_line(checkpoint, tmp_path, damage, fragment):
    folder = tmp_path / "epoch-1"
    shutil.copytree(checkpoint["epoch"], folder)
    damage(folder)
    r = _resume(checkpoint, folder, tmp_path)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    line = _one_error_line(r.stderr)
    assert str(folder) in line and fragment in line, line
    assert not (tmp_path / "out").exists()


def test_predict_never_unpickles_weights(checkpoint, tmp_path, demo_dir):
    """A model folder with a pickled `pytorch_model.bin` instead of safetensors is refused."""
    import torch

    model = tmp_path / "model"
    shutil.copytree(checkpoint["config"].parent / "out" / "model", model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    torch.save({"w": Payload(marker)}, model / "pytorch_model.bin")
    r = _mtsweep(["predict", str(model), "--data-dir", str(demo_dir), "--out", "pred", "--cpu"],
                 cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    line = _one_error_line(r.stderr)
    assert f"{model} has no model.safetensors" in line, line
    assert not marker.exists() and not (tmp_path / "pred").exists()


# --------------------------------------------------------------------------------------------
# The recorded `mtsweep reproduce` command survives any path or URI, and carries no password.

AWKWARD = [
    "sqlite:////data/my sweeps/mlflow.db",
    "sqlite:////data/it's here/mlflow.db",
    'sqlite:////data/"quoted" $(touch PWNED) `touch PWNED`; rm -rf x/mlflow.db',
    "http://127.0.0.1:5000",
]


@pytest.mark.parametrize("uri", AWKWARD)
def test_reproduce_command_is_quoted_for_the_shell(uri, tmp_path):
    import shlex

    from orchestrator.tracking import reproduce_command

    run_id = "0123456789abcdef0123456789abcdef"
    command = reproduce_command(run_id, uri)
    assert shlex.split(command) == ["mtsweep", "reproduce", run_id, "--tracking-uri", uri]
    # A real shell reads the same words and runs nothing else (`mtsweep` is a stand-in here).
    script = 'mtsweep() { printf "%s\\0" "$@"; }; ' + command
    out = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.split("\0")[:-1] == ["reproduce", run_id, "--tracking-uri", uri]
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("uri, kept", [
    ("http://alice:s3cr3t@mlflow.example:5000", "http://mlflow.example:5000"),
    ("https://tok3n@mlflow.example", "https://mlflow.example"),
    ("postgresql://mlflow:s3cr3t@db:5432/mlflow", "postgresql://db:5432/mlflow"),
])
def test_reproduce_command_has_no_credentials(uri, kept):
    from orchestrator.tracking import reproduce_command

    command = reproduce_command("abc", uri)
    assert command.endswith(f"--tracking-uri {kept}")
    assert "s3cr3t" not in command and "tok3n" not in command and "alice" not in command


# --------------------------------------------------------------------------------------------
# No secrets in logs, params or tags.


@pytest.mark.parametrize("uri, secret, shown", [
    ("http://alice:s3cr3t@mlflow.example:5000", "s3cr3t", "http://alice:***@mlflow.example:5000"),
    ("postgresql://mlflow:s3cr3t@db:5432/mlflow", "s3cr3t", "postgresql://mlflow:***@db:5432/mlflow"),
    ("http://alice:p%40ss@host", "p%40ss", "http://alice:***@host"),
    ("https://tok3n@mlflow.example", "tok3n", "https://***@mlflow.example"),
    ("http://mlflow.example/api?token=tok3n&x=1", "tok3n",
     "http://mlflow.example/api?token=***&x=1"),
    ("sqlite:////home/me/mlflow.db", None, "sqlite:////home/me/mlflow.db"),
    ("http://alice:s3cr3t@[::1", "s3cr3t", "http://alice:***@[::1"),  # not a valid URL
])
def test_redact_hides_credentials(uri, secret, shown):
    from orchestrator.tracking import redact

    assert redact(uri) == shown
    if secret:
        assert secret not in redact(uri)


SECRETS = {"HF_TOKEN": "hf_FAKEfakeFAKEfake0001", "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-pw-0002",
           "AWS_SECRET_ACCESS_KEY": "fakeAWSsecretKEY0003", "MLFLOW_TRACKING_TOKEN": "fake-tok-0004"}


def test_trial_params_never_carry_environment_secrets(monkeypatch, tmp_path, demo_dir):
    """The params of a trial run are built from the config and the sampled point only."""
    from orchestrator.space import load_sweep, point_to_config, sample_points
    from orchestrator.trial import trial_params

    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    base = tiny_dict(demo_dir)
    base["tasks"]["para"]["head_args"] = {}
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": base,
        "space": {"optim.lr": {"float": [1e-4, 1e-3], "log": True},
                  "tasks.para.head": {"values": ["cosine", "sbert"],
                                      "branches": {"cosine": {"tasks.para.head_args.scale":
                                                              [1.0, 5.0]}}},
                  "tag.note": ["a", "b"]},
        "tracking": {"tracking_uri": f"http://alice:{SECRETS['MLFLOW_TRACKING_PASSWORD']}@h:5000"},
    }))
    spec = load_sweep(sweep)
    for point in sample_points(spec, 4, seed=0):
        params = trial_params(spec, point, point_to_config(spec, point))
        assert "optim.lr" in params and "tag.note" in params
        recorded = json.dumps(params, default=str)
        for name, value in SECRETS.items():
            assert value not in recorded and name not in recorded


def test_dry_run_description_hides_the_tracking_password(tmp_path, demo_dir):
    from orchestrator.space import describe, load_sweep

    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": tiny_dict(demo_dir),
        "tracking": {"tracking_uri": f"http://alice:{SECRETS['MLFLOW_TRACKING_PASSWORD']}@h:5000"},
    }))
    assert SECRETS["MLFLOW_TRACKING_PASSWORD"] not in describe(load_sweep(sweep))
