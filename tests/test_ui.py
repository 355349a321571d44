"""`mtsweep ui`: its errors (one line, credentials masked, before any server starts), and the
real MLflow UI in headless Chromium over the records of a finished sweep: the sweep run with its
nested trial runs, and the compare view of two trials (screenshots kept in test-artifacts/)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml

from orchestrator import cli

from .conftest import REPO, tiny_dict
from .test_sweep import _mtsweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = REPO / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, demo_dir, cache_dir):
    tmp = tmp_path_factory.mktemp("ui-sweep")
    base = tiny_dict(demo_dir, epochs=1)
    base["data"]["train_limit"] = {"sst": 48, "para": 48, "sts": 48}
    base["data"]["dev_limit"] = {"sst": 32, "para": 32, "sts": 32}
    sweep = {"name": "ui-sweep", "base": base,
             "space": {"optim.lr": [1e-3, 2e-3]},
             "search": {"algorithm": "grid", "max_concurrent": 1},
             "resources": {"workers": 1, "cpus_per_worker": 1}}
    (tmp / "ui.yaml").write_text(yaml.safe_dump(sweep))
    r = _mtsweep(["launch", str(tmp / "ui.yaml"), "--json"], cwd=tmp,
                 MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
                 "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_for_text(driver, texts, timeout=60.0) -> str:
    deadline = time.time() + timeout
    body = ""
    while time.time() < deadline:
        body = driver.find_element("tag name", "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(1)
    raise AssertionError(f"{texts} not on the page; it shows: {body[:1500]}")


@pytest.mark.slow
def test_mlflow_ui_shows_the_sweep_and_compares_trials(finished_sweep, browser):
    from mlflow.tracking import MlflowClient

    from orchestrator.ui import experiment_url, start_server, stop_server

    tmp, out = finished_sweep
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.get_run(out["parent_run_id"])
    trials = [client.get_run(t["run_id"]) for t in out["trials"]]
    port = _free_port()
    server = start_server(uri, "127.0.0.1", port)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        url = experiment_url(f"http://127.0.0.1:{port}", uri, None)
        assert url.endswith(f"/#/experiments/{parent.info.experiment_id}/runs")
        browser.get(url)
        body = _wait_for_text(browser, [parent.info.run_name])
        # Nested runs sit under the sweep run, collapsed: expand them.
        expanders = browser.find_elements(
            "css selector", "button[data-component-id*='runnamecellrenderer']")
        assert expanders, "the sweep run shows an expander for its nested runs"
        expanders[0].click()
        body = _wait_for_text(browser, [parent.info.run_name] +
                              [t.info.run_name for t in trials])
        browser.save_screenshot(str(ARTIFACTS / "mlflow-experiment.png"))

        ids = ",".join(f'"{t.info.run_id}"' for t in trials)
        browser.get(f"http://127.0.0.1:{port}/#/compare-runs?runs=[{ids}]"
                    f"&experiments=[\"{parent.info.experiment_id}\"]")
        body = _wait_for_text(browser, [t.info.run_name for t in trials] + ["overall"])
        browser.save_screenshot(str(ARTIFACTS / "mlflow-compare.png"))
        assert "optim.lr" in body
    finally:
        stop_server(server)
    assert (ARTIFACTS / "mlflow-compare.png").stat().st_size > 10_000


# ---- errors ----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> str:
    """A local tracking store with one experiment."""
    from orchestrator.tracking import get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    get_or_create_experiment(uri, "ui-errors")
    return uri


def _ui(capsys, *args: str) -> tuple[int, str, float]:
    capsys.readouterr()
    start = time.monotonic()
    rc = cli.main(["ui", *args])
    return rc, capsys.readouterr().err, time.monotonic() - start


@pytest.mark.parametrize("extra", [[], ["--experiment", "nosuch"]])
def test_unreachable_tracking_server_is_one_line_without_the_password(extra):
    port = _free_port()  # nothing listens there
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--tracking-uri",
         f"http://alice:s3cretPW@127.0.0.1:{port}", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    line, = r.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the MLflow tracking store "
                           f"http://alice:***@127.0.0.1:{port}: ")
    assert "s3cretPW" not in r.stderr


def test_unknown_experiment_fails_before_the_server_starts(store, capsys):
    with socket.socket() as taken:  # a server started first would fail on this port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        rc, err, seconds = _ui(capsys, "--tracking-uri", store, "--experiment", "nosuch",
                               "--port", str(taken.getsockname()[1]))
    assert rc == 2 and err.strip().splitlines() == [f"error: no experiment 'nosuch' in {store}"]
    assert seconds < 10


def test_port_in_use_is_one_prompt_line(store, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, err, seconds = _ui(capsys, "--tracking-uri", store, "--port", str(port))
    assert rc == 2 and err.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: port {port} is already in use (pick another "
        f"with --port)"]
    assert seconds < 10


def test_host_that_cannot_be_bound_is_one_prompt_line(store, capsys):
    port = _free_port()
    rc, err, seconds = _ui(capsys, "--tracking-uri", store, "--host", "999.1.1.1",
                           "--port", str(port))
    assert rc == 2
    warning, line = err.strip().splitlines()
    assert warning == "warning: the UI will listen on 999.1.1.1, reachable from other machines"
    assert line.startswith(f"error: cannot listen on 999.1.1.1:{port}: cannot resolve the host "
                           f"'999.1.1.1' (")  # (the resolver's reason)
    assert seconds < 10


def test_port_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["ui", "--port", "70000"])
    assert e.value.code == 2
    assert "argument --port: expected a port number 1..65535, got '70000'" in \
        capsys.readouterr().err


def test_server_error_names_the_cause():
    from orchestrator.ui import _server_error

    log = (b"2026/11/27 08:00:56 INFO:     Started server process [5904]\n"
           b"2026/11/27 08:00:57 ERROR:    [Errno 98] error while attempting to bind on address "
           b"('127.0.0.1', 5124): address already in use\n"
           b"2026/11/27 08:00:57 INFO:     Waiting for application shutdown.\n"
           b"2026/11/27 08:00:57 INFO:     Application shutdown complete.\n")
    assert _server_error(log) == ("[Errno 98] error while attempting to bind on address "
                                  "('127.0.0.1', 5124): address already in use")
    assert _server_error(b"ERROR: cannot open postgresql://bob:pw@db/mlflow\n") == \
        "cannot open postgresql://bob:***@db/mlflow"
    assert _server_error(b"") == "it exited"
