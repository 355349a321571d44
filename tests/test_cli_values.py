"""Option values and output folders of `mtsweep train` and `python -m trainables`: a bad value
is an argparse error, and a folder that cannot be created or written is one line on stderr
(exit status 2) before any data is loaded."""

from __future__ import annotations

import pytest
import yaml

from orchestrator import cli
from trainables import cli as trainable_cli

from .conftest import tiny_dict

# Both entry points of training: `mtsweep train ARGS` and `python -m trainables ARGS`.
ENTRY_POINTS = {
    "mtsweep": lambda args: cli.main(["train", *args]),
    "python -m trainables": trainable_cli.main,
}


@pytest.fixture
def config(tmp_path, demo_dir):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tiny_dict(demo_dir, epochs=1)))
    return path


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_must_be_at_least_one(entry, value, config, capsys):
    with pytest.raises(SystemExit) as e:
        ENTRY_POINTS[entry]([str(config), "--threads", value, "--cpu"])
    assert e.value.code == 2
    assert f"argument --threads: expected a whole number ≥ 1, got '{value}'" in \
        capsys.readouterr().err


def test_threads_accepts_a_whole_number(config):
    args = cli.build_parser().parse_args(["train", str(config), "--threads", "3"])
    assert args.threads == 3


def test_demo_seed_must_not_be_negative(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "demo", str(tmp_path / "demo"), "--seed", "-1"])
    assert e.value.code == 2
    assert "argument --seed: expected a whole number ≥ 0, got '-1'" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def _bad_folders(tmp_path):
    """(options, the error line) for folders that cannot be made or written."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = tmp_path / "out"
    return {
        "out is a file": (["--out", str(afile)], f"error: {afile}: not a folder (--out)"),
        "out under a file": (["--out", str(afile / "sub")],
                             f"error: {afile / 'sub'}: cannot create the --out folder: "
                             f"Not a directory"),
        "cache is a file": (["--cache-dir", str(afile)],
                            f"error: {afile}: not a folder (--cache-dir)"),
        # Written only after the first epoch: checked before it all the same.
        "checkpoints under a file": (
            ["--out", str(out), "--checkpoint-dir", str(afile / "ckpt")],
            f"error: {afile / 'ckpt'}: cannot create the --checkpoint-dir folder: "
            f"Not a directory"),
    }


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", ["out is a file", "out under a file", "cache is a file",
                                  "checkpoints under a file"])
def test_output_folder_that_cannot_be_made_is_one_line(entry, case, config, tmp_path,
                                                       cache_dir, capsys):
    options, line = _bad_folders(tmp_path)[case]
    capsys.readouterr()
    rc = ENTRY_POINTS[entry]([str(config), "--cpu", *options])
    r = capsys.readouterr()
    assert rc == 2
    assert r.err.strip().splitlines() == [line]
    assert r.out == ""  # failed before training started (no "trial …" header)
    assert not (tmp_path / "out").exists()  # no empty folder left behind
