"""The deployment files in infra/: the Ray cluster-launcher config against the schema Ray ships
(and Ray's own offline config preparation), the KubeRay RayCluster's structure, the tracking
stack's compose file, the worker Dockerfile, and that all of them name the versions pinned in
constraints.txt. Fast: no network, no Ray started, no container built."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

INFRA = REPO / "infra"
AWS = INFRA / "ray-cluster.aws.yaml"
KUBERAY = INFRA / "kuberay" / "raycluster.yaml"
TRACKING = INFRA / "tracking"
COMPOSE = TRACKING / "docker-compose.yaml"
WORKER_DOCKERFILE = INFRA / "docker" / "Dockerfile.worker"


def pins() -> dict[str, str]:
    """name → version of every `name==version` line of constraints.txt."""
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower()] = version.strip()
    return out


def package_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)[1]


def test_constraints_pin_what_the_infra_files_name():
    p = pins()
    for name in ("ray", "mlflow", "torch", "psycopg", "psycopg-binary"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", p.get(name, "")), f"{name} is pinned"


# ---- Ray cluster launcher (AWS) ------------------------------------------------------------

def aws_config() -> dict:
    return yaml.safe_load(AWS.read_text())


def test_aws_cluster_config_validates_against_rays_schema():
    import jsonschema
    import ray

    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(aws_config(), schema)  # raises with the failing key path


def test_aws_cluster_config_passes_rays_own_preparation_and_validation():
    """What `ray up` does before it talks to AWS: merge the AWS defaults, merge the setup
    commands, check the docker section and the per-type worker bounds, validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(aws_config()))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types and types[prepared["head_node_type"]]["max_workers"] == 0
    setup = prepared["worker_setup_commands"]
    assert any("constraints.txt" in c for c in setup), "workers install mtsweep with its pins"


def test_aws_cluster_has_a_cpu_head_and_autoscaling_gpu_workers():
    cfg = aws_config()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert not re.match(r"(g\d|p\d)", head["node_config"]["InstanceType"]), "a CPU head"
    assert head["resources"].get("CPU") == 0, "no training worker on the head"
    gpu = {n: t for n, t in types.items() if re.match(r"(g5|g6|p4d|p5)\.", t["node_config"]["InstanceType"])}
    assert len(gpu) >= 1
    for name, t in gpu.items():
        assert t["max_workers"] > t.get("min_workers", 0), f"{name} can scale up"
    assert any(t.get("min_workers", 0) == 0 for t in gpu.values()), "a GPU type that scales to 0"
    assert sum(t["max_workers"] for t in gpu.values()) <= cfg["max_workers"]
    # Ray's `latest_dlami` is an Ubuntu 18.04 AMI with a CUDA 11 driver: too old for the images.
    for name, t in types.items():
        assert t["node_config"]["ImageId"] != "latest_dlami", name


def test_aws_cluster_installs_mtsweep_with_constraints_and_pins_ray():
    cfg = aws_config()
    p = pins()
    ray_version = p["ray"]
    for key in ("image", "head_image", "worker_image"):
        image = cfg["docker"][key]
        assert image.startswith(f"rayproject/ray:{ray_version}-py311"), (key, image)
    setup = "\n".join(cfg["setup_commands"])
    assert "OWNER/mtsweep" in setup, "the git URL placeholder is there, and said so in a comment"
    assert "placeholder" in AWS.read_text()
    install = [c for c in cfg["setup_commands"] if "pip install" in c and "mtsweep" in c]
    assert install and all("-c " in c and "constraints.txt" in c for c in install)
    assert f'torch=={p["torch"]}' in setup, "the CUDA build of the pinned torch"


def test_aws_cluster_dashboard_on_loopback_and_workers_join_the_head():
    cfg = aws_config()
    head = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in head and "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head
    workers = " ".join(cfg["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers


def test_aws_cluster_file_mounts_exist_or_are_documented():
    cfg = aws_config()
    ignored = (REPO / ".gitignore").read_text()
    for remote, local in cfg["file_mounts"].items():
        path = (REPO / local).resolve()
        assert remote.startswith("/home/ray/"), remote
        if local == "./infra/cluster":
            assert (path / "cluster.env.example").exists()
            assert "infra/cluster/cluster.env" in ignored, "the filled-in file is not committed"
        elif local == "./data/cs224n":
            assert "data/cs224n/" in ignored and "data/cs224n" in (INFRA / "README.md").read_text()
        else:
            assert path.exists(), local


# ---- KubeRay -------------------------------------------------------------------------------

def kuberay_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]


def raycluster() -> dict:
    found = [d for d in kuberay_docs() if d.get("kind") == "RayCluster"]
    assert len(found) == 1
    return found[0]


def test_kuberay_raycluster_has_the_required_v1_fields():
    rc = raycluster()
    assert rc["apiVersion"] == "ray.io/v1" and rc["metadata"]["name"]
    spec = rc["spec"]
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"][0]["image"]
    assert spec["workerGroupSpecs"], "at least one worker group"
    for group in spec["workerGroupSpecs"]:
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams",
                    "template"):
            assert key in group, f"workerGroupSpecs[{group.get('groupName')}].{key}"
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"][0]["image"]
        assert isinstance(group["rayStartParams"], dict)


def test_kuberay_gpu_workers_autoscale():
    spec = raycluster()["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get(
                      "nvidia.com/gpu")]
    assert gpu_groups, "a worker group with nvidia.com/gpu limits"
    for g in gpu_groups:
        assert g["maxReplicas"] > g["minReplicas"]
    head_limits = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits, "a CPU head"


def test_kuberay_images_and_ray_version_match_constraints():
    p = pins()
    spec = raycluster()["spec"]
    assert spec["rayVersion"] == p["ray"]
    images = [spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]]
    images += [g["template"]["spec"]["containers"][0]["image"] for g in spec["workerGroupSpecs"]]
    assert len(set(images)) == 1, f"head and workers run the same image: {images}"
    name, tag = images[0].rsplit(":", 1)
    assert name.endswith("/mtsweep-worker")
    assert tag == f"{package_version()}-ray{p['ray']}", "the tag names mtsweep's and Ray's versions"
    assert f"-t {images[0]}" in WORKER_DOCKERFILE.read_text(), "the Dockerfile builds this tag"


def test_kuberay_dashboard_on_loopback_and_tracking_uri_is_the_service():
    docs = kuberay_docs()
    rc = raycluster()
    params = rc["spec"]["headGroupSpec"]["rayStartParams"]
    assert params.get("dashboard-host") == "127.0.0.1"
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    containers = [rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]]
    containers += [g["template"]["spec"]["containers"][0] for g in rc["spec"]["workerGroupSpecs"]]
    for c in containers:
        env = {e["name"]: e for e in c["env"]}
        uri = env["MLFLOW_TRACKING_URI"]["value"]
        host = re.match(r"http://([^:/]+):(\d+)$", uri)
        assert host, uri
        service, namespace = host[1].split(".")[:2]
        assert service in services and services[service]["metadata"]["namespace"] == namespace
        assert int(host[2]) in [p["port"] for p in services[service]["spec"]["ports"]]
        assert "@" not in uri, "no credentials in the URI"
        for secret in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert "secretKeyRef" in env[secret]["valueFrom"], "credentials come from a Secret"


def test_kuberay_pods_run_as_non_root_and_share_the_volume():
    rc = raycluster()
    pvcs = {d["metadata"]["name"] for d in kuberay_docs() if d["kind"] == "PersistentVolumeClaim"}
    templates = [rc["spec"]["headGroupSpec"]["template"]]
    templates += [g["template"] for g in rc["spec"]["workerGroupSpecs"]]
    for t in templates:
        assert t["spec"]["securityContext"]["runAsNonRoot"] is True
        claims = {v["persistentVolumeClaim"]["claimName"] for v in t["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims and claims <= pvcs


# ---- tracking stack (docker compose) -------------------------------------------------------

def env_example() -> dict[str, str]:
    out = {}
    for line in (TRACKING / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error}; $$ is a $."""

    def sub(m):
        name, op, arg = m[1], m[2], m[3]
        value = env.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        return value if value is not None else ""

    return _VAR.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


def compose_vars() -> set[str]:
    return {m[1] for m in _VAR.finditer(COMPOSE.read_text().replace("$$", ""))}


def compose(env: dict[str, str] | None = None) -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env_example() if env is None else env))


def test_compose_services_and_healthchecks():
    services = compose()["services"]
    assert set(services) == {"postgres", "minio", "minio-setup", "mlflow"}
    for name in ("postgres", "minio", "mlflow"):
        assert services[name]["healthcheck"]["test"], name
    deps = services["mlflow"]["depends_on"]
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["minio-setup"]["condition"] == "service_completed_successfully"
    assert services["minio-setup"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["minio-setup"]["restart"] == "no"
    assert "mc mb --ignore-existing local/mlflow-artifacts" in "\n".join(
        services["minio-setup"]["entrypoint"])


def test_compose_publishes_only_on_loopback_by_default():
    services = compose()["services"]
    assert "ports" not in services["postgres"], "PostgreSQL stays inside the compose network"
    published = []
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host_ip = str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port}"
            published.append(name)
    assert "mlflow" in published
    assert services["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]
    # Without .env at all the MLflow port still binds to loopback (the default).
    no_env = interpolate(COMPOSE.read_text(), {k: "x" for k in compose_vars()
                                               if k != "MLFLOW_BIND_ADDRESS"} | {"MLFLOW_PORT": "5000"})
    assert yaml.safe_load(no_env)["services"]["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]


def test_compose_mlflow_server_uses_postgres_and_s3_without_secrets_in_uris():
    svc = compose()["services"]["mlflow"]
    cmd = svc["command"]
    assert cmd[:2] == ["mlflow", "server"]
    args = dict(zip(cmd[2::1], cmd[3::1]))
    backend = args["--backend-store-uri"]
    assert backend.startswith("postgresql+psycopg://") and backend.endswith("@postgres:5432/mlflow")
    user_part = backend.split("://", 1)[1].split("@")[0]
    assert ":" not in user_part, "no password in the backend-store URI"
    assert args["--artifacts-destination"] == "s3://mlflow-artifacts"
    assert "--serve-artifacts" in cmd and args["--host"] == "0.0.0.0"
    env = svc["environment"]
    assert env["PGPASSWORD"] == env_example()["POSTGRES_PASSWORD"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    # Secrets only as ${...} references to .env, never written into the file.
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in raw.items():
        for key, value in service.get("environment", {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET")):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), f"{name}: {key}"


def test_every_compose_variable_is_in_env_example_and_it_holds_no_real_secret():
    example = env_example()
    missing = compose_vars() - set(example)
    assert not missing, f"referenced in docker-compose.yaml but not in .env.example: {missing}"
    for key, value in example.items():
        if any(word in key for word in ("PASSWORD", "SECRET")):
            assert value.startswith("change-me"), f"{key} is a placeholder, not a secret"
    assert example["MLFLOW_BIND_ADDRESS"] == "127.0.0.1"
    assert "infra/tracking/.env" in (REPO / ".gitignore").read_text()
    assert not (TRACKING / ".env").exists() or "infra/tracking/.env" in subprocess.run(
        ["git", "check-ignore", "infra/tracking/.env"], cwd=REPO, capture_output=True,
        text=True).stdout


def test_compose_missing_secret_is_an_error_not_an_empty_password():
    env = env_example()
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        compose(env)


def test_mlflow_image_pins_match_constraints():
    text = (TRACKING / "Dockerfile.mlflow").read_text()
    p = pins()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    assert args["MLFLOW_VERSION"] == p["mlflow"]
    assert args["PSYCOPG_VERSION"] == p["psycopg"] == p["psycopg-binary"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["BOTO3_VERSION"])
    assert '"mlflow==${MLFLOW_VERSION}"' in text and "boto3==" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert compose()["services"]["mlflow"]["image"].endswith(f":{p['mlflow']}")


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return [shutil.which("docker-compose")]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither the `docker compose` plugin nor docker-compose is installed here; "
                    "the file is checked by the parsing tests above")
    r = subprocess.run([*cli, "--env-file", str(TRACKING / ".env.example"), "-f", str(COMPOSE),
                        "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---- worker image --------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuations joined."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
        current = ""
    return out


def test_worker_image_is_rays_cuda_image_at_the_pinned_version():
    ins = dockerfile_instructions(WORKER_DOCKERFILE)
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 1
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cu\d+)", froms[0])
    assert m, froms[0]
    assert m[1] == pins()["ray"], "the base image's Ray is the ray== pin of constraints.txt"
    assert (m[2], m[3]) == ("3", "11"), "Python 3.11"


def test_worker_image_installs_the_repo_with_constraints_as_non_root():
    ins = dockerfile_instructions(WORKER_DOCKERFILE)
    args = dict(re.match(r"(\w+)=(\S*)", a).groups() for i, a in ins if i == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == pins()["torch"]
    copies = [a for i, a in ins if i == "COPY"]
    copied = set()
    for c in copies:
        parts = [p for p in shlex.split(c) if not p.startswith("--")]
        copied.update(parts[:-1])
    assert {"constraints.txt", "pyproject.toml", "trainables", "orchestrator"} <= copied
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert src not in ignored, f"COPY {src}: excluded by .dockerignore"
    runs = [a for i, a in ins if i == "RUN"]
    install = [r for r in runs if "pip install" in r and ".[minilm]" in r]
    assert install and "-c constraints.txt" in install[0]
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    assert ".venv" in ignored and ".git" in ignored


def test_infra_readme_uses_real_cli_flags():
    """The commands infra/README.md tells people to run exist with those flags."""
    from orchestrator.cli import build_parser

    text = (INFRA / "README.md").read_text().replace("\\\n", " ")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("launch", "resume"):
        flags = {o for a in sub[command]._actions for o in a.option_strings}
        used = set(re.findall(rf"mtsweep {command} [^\n`]*", text))
        assert used, f"infra/README.md shows mtsweep {command}"
        for line in used:
            for flag in re.findall(r"(--[a-z-]+)", line):
                assert flag in flags, f"mtsweep {command} has no {flag} ({line})"


# ---- constraints-lock.txt ------------------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    """name → version of every line of constraints-lock.txt (each is `name==version`)."""
    out = {}
    for n, line in enumerate((REPO / "constraints-lock.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line.strip())
        assert m, f"constraints-lock.txt line {n} is not name==version: {line!r}"
        out[_norm(m[1])] = m[2]
    return out


def test_lock_agrees_with_constraints():
    lock = lock_pins()
    assert "torch" not in lock, "torch is pinned by constraints.txt only (CUDA builds match it)"
    for name, version in pins().items():
        if name != "torch":
            assert lock.get(_norm(name)) == version, f"{name}=={version} in both files"


def test_lock_names_every_dependency_of_an_install():
    """Every package `pip install -e .[test,minilm]` pulls in, all the way down, is in the lock:
    a dependency added to pyproject.toml without `make lock` would install unpinned."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    lock = lock_pins()
    missing, seen = [], set()
    todo = [("mtsweep", frozenset({"test", "minilm"}))]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # a requirement whose marker holds nowhere here (e.g. another OS)
        for spec in dist.requires or []:
            req = Requirement(spec)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = _norm(req.name)
            if dep != "torch" and dep not in lock:
                missing.append(f"{dep} (required by {name})")
            todo.append((dep, frozenset(req.extras)))
    assert not missing, f"not in constraints-lock.txt (run `make lock`): {sorted(set(missing))}"
