"""The trial config: validation names the key, overrides are type-checked, views round-trip."""

from __future__ import annotations

import dataclasses

import pytest

from trainables.config import TrialConfig, apply_overrides
from trainables.errors import ConfigError

from .conftest import REPO


def test_shipped_trial_configs_load():
    for name in ("tiny_demo.yaml", "minilm_cs224n.yaml"):
        cfg = TrialConfig.load(REPO / "search_spaces" / "trials" / name)
        assert TrialConfig.from_dict(cfg.to_dict()) == cfg


def test_frozen_and_round_trip(tiny_config):
    cfg = tiny_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]
    again = TrialConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.fingerprint() == cfg.fingerprint()
    assert cfg.flat()["tasks.para.head"] == "cosine"
    assert cfg.flat()["optim.lr"] == 1e-3


def test_overrides_are_typed(tiny_config):
    cfg = tiny_config().replace(["optim.lr=2e-5", "batch_size=32", "optim.betas=[0.9, 0.98]",
                                 "data.train_limit.para=null", "tasks.para.head=concat",
                                 "tasks.para.head_args={}"])
    assert cfg.optim.lr == 2e-5 and cfg.batch_size == 32 and cfg.optim.betas == (0.9, 0.98)
    assert cfg.data.train_limit["para"] is None and cfg.tasks["para"].head == "concat"
    with pytest.raises(ConfigError, match=r"batch_size: expected an integer"):
        tiny_config().replace(["batch_size=big"])
    with pytest.raises(ConfigError, match=r"expected key.path=value"):
        apply_overrides({}, ["nonsense"])


@pytest.mark.parametrize(
    "override, message",
    [
        ({"epochz": 3}, r"epochz: unknown key; valid keys: .*epochs"),
        ({"optim.lrr": 1.0}, r"optim.lrr: unknown key"),
        ({"epochs": "three"}, r"epochs: expected an integer"),
        ({"epochs": 0}, r"epochs: must be > 0"),
        ({"optim.lr": -1.0}, r"optim.lr: must be > 0"),
        ({"encoder.hidden_dropout": 1.5}, r"encoder.hidden_dropout: must be in \[0, 1\)"),
        ({"encoder.pooling": "max"}, r"encoder.pooling: 'max' is not one of cls, mean"),
        ({"tasks.para.head": "cosin"}, r"tasks.para.head: unknown head 'cosin'; valid: "
                                        r"concat, cosine, cross, mlp, sbert"),
        ({"tasks.para.loss": "ce"}, r"tasks.para: head 'cosine' gives 1 similarity score but "
                                     r"loss 'ce' needs 2 outputs"),
        ({"tasks.sst.head": "cosine"}, r"tasks.sst.head: head 'cosine' does not fit task 'sst'"),
        ({"tasks.sts.loss": "ce"}, r"tasks.sts.loss: .*does not apply to 'sts' \(regression\)"),
        ({"tasks.para.head": "concat", "tasks.para.head_args": {}, "tasks.para.loss": "cosent"},
         r"tasks.para: loss 'cosent' needs a similarity head"),
        ({"tasks.sst.head_args": {"width": 3}}, r"tasks.sst.head_args: unknown argument\(s\) "
                                                 r"width for head 'mlp'; valid: dropout, "),
        ({"tasks.sst.head_args.activation": "swish"}, r"tasks.sst.head_args: activation"),
        ({"tasks.sst.loss_args.label_smoothing": 2.0}, r"tasks.sst.loss: label_smoothing"),
        ({"tasks.qqp": {"head": "mlp", "loss": "ce"}}, r"tasks.qqp: unknown task"),
        ({"schedule.name": "zigzag"}, r"schedule.name: unknown schedule 'zigzag'; valid: "),
        ({"schedule.args": {"alpha": 2.0}, "schedule.name": "proportional"},
         r"schedule.args: alpha: must be in \[0, 1\]"),
        ({"schedule.epoch_length": "fixed"}, r"schedule.steps_per_epoch: required"),
        ({"gradient.name": "pcgrad"}, r"gradient.name: pcgrad combines .* \(use: round_robin_sum\)"),
        ({"weighting.name": "magic"}, r"weighting.name: unknown weighting 'magic'"),
        ({"data.train_limit.para": 1.5}, r"data.train_limit.para: a fraction must be in \(0, 1\]"),
        ({"data.format": "xml"}, r"data.format: 'xml' is not one of"),
    ],
)
def test_invalid_configs_name_the_key(tiny_config, override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(override)


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line"):
        TrialConfig.load(bad)
    bad.write_text("")
    with pytest.raises(ConfigError, match=r"bad.yaml: the file is empty"):
        TrialConfig.load(bad)
    bad.write_text("epochs: 2\nencoder: {name: tiny, size: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: encoder.size: unknown key"):
        TrialConfig.load(bad)
    with pytest.raises(ConfigError, match=r"missing.yaml: no such file"):
        TrialConfig.load(tmp_path / "missing.yaml")


def test_fraction_one_is_all_not_one_example(tiny_config):
    cfg = tiny_config({"data.train_limit.para": 1.0})
    assert cfg.data.train_limit["para"] == 1.0 and isinstance(cfg.data.train_limit["para"], float)
