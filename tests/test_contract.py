"""Contract tests run over every registry entry: a new head, loss, schedule, weighting or
gradient rule is tested here without new test code."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trainables.config import TrialConfig
from trainables.data.batching import collate
from trainables.data.cache import load_tokenized
from trainables.data.readers import default_split_path, read_split
from trainables.errors import ConfigError
from trainables.gradients import GRADIENTS
from trainables.heads import HEADS
from trainables.losses import LOSSES
from trainables.model import MultiTaskModel
from trainables.schedules import SCHEDULES
from trainables.tasks import TASKS
from trainables.weighting import WEIGHTINGS

from .conftest import tiny_dict

ALL_COMBOS = list(itertools.product(TASKS, HEADS.names(), LOSSES.names()))


class HostReads(TorchDispatchMode):
    """Records the operations that move data between the host and the tensors' device:
    reading a value back (`.item()`, `bool(t)`, `nonzero`) or making a tensor from host
    data (`torch.tensor(x, device=…)`). On a GPU each one waits for every queued kernel, so a
    training step that does one cannot queue its successor while the GPU works. Seen here on
    the CPU, where the same operations run."""

    OPS = ("aten._local_scalar_dense", "aten.lift_fresh", "aten.nonzero")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in self.OPS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def _config(demo_dir, task, head, loss, **extra):
    raw = tiny_dict(demo_dir, **extra)
    raw["tasks"] = {task: {"head": head, "loss": loss}}
    return TrialConfig.from_dict(raw)


def _valid(demo_dir, task, head, loss) -> bool:
    try:
        _config(demo_dir, task, head, loss)
    except ConfigError:
        return False
    return True


@pytest.fixture(scope="module")
def tokenizer():
    from trainables.data.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def batches(demo_dir, cache_dir, tokenizer):
    """One small training batch per (task, input mode)."""
    out = {}
    for task in TASKS:
        raw = read_split(task, default_split_path(demo_dir, task, "train", "cs224n"))
        modes = ("separate", "pair") if TASKS[task].pair else ("single",)
        for mode in modes:
            split = load_tokenized(raw, tokenizer, 32, mode, cache_dir)
            out[task, mode] = collate(split, np.arange(8), tokenizer.pad_token_id)
    return out


def test_every_combination_is_valid_or_a_clear_config_error(demo_dir):
    valid = 0
    for task, head, loss in ALL_COMBOS:
        try:
            _config(demo_dir, task, head, loss)
            valid += 1
        except ConfigError as e:
            assert f"tasks.{task}" in str(e), str(e)
    # Every task has at least one head and loss; not everything goes with everything.
    assert 0 < valid < len(ALL_COMBOS)
    for task in TASKS:
        assert any(_valid(demo_dir, task, h, loss) for _, h, loss in ALL_COMBOS if _ == task)


# The combinations the config accepts (the others are checked to be clear errors above).
VALID_COMBOS = [c for c in ALL_COMBOS if _valid("unused", *c)]


@pytest.mark.parametrize("task, head, loss", VALID_COMBOS,
                         ids=["-".join(c) for c in VALID_COMBOS])
def test_head_loss_contract(demo_dir, batches, task, head, loss):
    cfg = _config(demo_dir, task, head, loss)
    from trainables.encoder import load_encoder

    torch.manual_seed(0)
    _, encoder = load_encoder(cfg.encoder)
    model = MultiTaskModel(cfg, encoder)
    batch = batches[task, model.input_mode(task)]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with HostReads() as reads:
        out = model({task: batch})
        value = out["weighted"][task]
        value.backward()
    # The encoder, head and loss of a training step read nothing back from the device.
    assert reads.seen == [], f"{task}/{head}/{loss}: a training step reads the device: " \
        f"{reads.seen}"
    outputs = out["outputs"][task]
    assert outputs.shape == (8, model.losses[task].num_outputs)
    assert value.ndim == 0 and torch.isfinite(value)
    head_grads = [p.grad for p in model.heads[task].parameters()]
    assert head_grads and all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert any(g.abs().sum() > 0 for g in head_grads)
    enc = model.encoder.embeddings.word_embeddings.weight.grad
    assert enc is not None and enc.abs().sum() > 0, "gradient must reach the encoder"
    # Training never changes a buffer (no running statistics): DDP does not broadcast them
    # (trainables.training.make_accelerator).
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), f"a training step changed the buffer {name}"

    model.eval()
    pred = model.predict(task, batch)
    again = model.predict(task, batch)
    assert torch.equal(pred, again), "eval predictions are deterministic"
    assert pred.shape == (8,)
    spec = TASKS[task]
    if spec.is_regression:
        assert pred.is_floating_point()
        lo, hi = spec.label_range
        if head == "cosine" or loss == "bins":  # bounded outputs map into the label range
            assert ((pred >= lo - 1e-4) & (pred <= hi + 1e-4)).all()
    else:
        assert pred.dtype == torch.long
        assert ((pred >= 0) & (pred < spec.num_classes)).all()


SIZES = {"sst": 5, "para": 12, "sts": 3}


@pytest.mark.parametrize("name", SCHEDULES.names())
@pytest.mark.parametrize("rule", ["shortest", "longest", "exhaust", "fixed"])
def test_schedule_contract(name, rule):
    sched = SCHEDULES.build(name, SIZES, rule, 7 if rule == "fixed" else None, 3)
    plans = [sched.plan(e, np.random.default_rng([1, e])) for e in range(3)]
    assert plans[0] == sched.plan(0, np.random.default_rng([1, 0])), "deterministic for a seed"
    for plan in plans:
        assert plan and all(step and set(step) <= set(SIZES) for step in plan)
        counts = {t: sum(t in s for s in plan) for t in SIZES}
        batches = sum(counts.values())
        if rule == "fixed":
            assert len(plan) == 7
        elif name in ("proportional", "annealed"):
            assert batches == sum(sched.quota().values())
        else:
            assert counts == sched.quota()
            if rule == "shortest":
                assert set(counts.values()) == {3}
            if rule == "longest":
                assert set(counts.values()) == {12}
            if rule == "exhaust":
                assert counts == SIZES
        if sched.multi_task_steps and rule in ("shortest", "longest"):
            assert all(len(s) == len(SIZES) for s in plan)
        if not sched.multi_task_steps:
            assert all(len(s) == 1 for s in plan)


def test_serial_runs_tasks_in_blocks_and_round_robin_interleaves():
    serial = SCHEDULES.build("serial", SIZES, "exhaust", None, 1).plan(0, np.random.default_rng(0))
    assert [s[0] for s in serial] == ["sst"] * 5 + ["para"] * 12 + ["sts"] * 3
    rr = SCHEDULES.build("round_robin", SIZES, "shortest", None, 1).plan(0, np.random.default_rng(0))
    assert [s[0] for s in rr[:6]] == ["sst", "para", "sts"] * 2


def test_annealed_moves_from_proportional_to_uniform():
    sizes = {"sst": 10, "para": 1000, "sts": 10}
    sched = SCHEDULES.build("annealed", sizes, "fixed", 4000, 3, alpha_start=1.0, alpha_end=0.0)
    first = sched.plan(0, np.random.default_rng(0))
    last = sched.plan(2, np.random.default_rng(0))
    share = lambda plan: sum(s == ("para",) for s in plan) / len(plan)  # noqa: E731
    assert share(first) > 0.95 and 0.25 < share(last) < 0.42


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_weighting_contract(name):
    w = WEIGHTINGS.build(name, {"sst": 15.0, "sts": 1.0})
    losses = {"sst": torch.tensor(2.0, requires_grad=True), "sts": torch.tensor(1.0)}
    buffers = {n: b.clone() for n, b in w.named_buffers()}
    out = w(losses)
    for n, b in w.named_buffers():  # DDP does not broadcast buffers: none may change
        assert torch.equal(b, buffers[n]), n
    assert set(out) == {"sst", "sts"} and all(torch.isfinite(v) for v in out.values())
    total = sum(out.values())
    total.backward()
    assert losses["sst"].grad is not None and losses["sst"].grad.item() > 0
    if list(w.parameters()):
        assert all(p.grad is not None for p in w.parameters())


@pytest.mark.parametrize("name", GRADIENTS.names())
def test_gradient_rule_trains_a_multi_task_step(demo_dir, batches, name):
    from accelerate import Accelerator

    from trainables.encoder import load_encoder

    cfg = TrialConfig.from_dict(tiny_dict(demo_dir)).replace(
        {"schedule.name": "round_robin_sum", "gradient.name": name}
    )
    torch.manual_seed(0)
    _, encoder = load_encoder(cfg.encoder)
    model = MultiTaskModel(cfg, encoder)
    step = {t: batches[t, model.input_mode(t)] for t in cfg.tasks}
    before = [p.detach().clone() for p in model.parameters()]
    rule = GRADIENTS.build(name, **cfg.gradient.args)
    rule.backward(Accelerator(cpu=True), model, model(step)["weighted"])
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads[:5])
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_pcgrad_removes_conflicts():
    from trainables.gradients.pcgrad import PCGrad

    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    merged = PCGrad()._project([g1, g2])
    # Each projected gradient is orthogonal to the other task's conflicting gradient.
    assert torch.allclose(merged, torch.tensor([0.5, 0.5]) + torch.tensor([0.0, 1.0]))
    assert torch.dot(merged, g1) >= 0 and torch.dot(merged, g2) >= 0


@pytest.mark.parametrize("attention", ["auto", "eager"])
def test_the_encoder_mask_gives_hugging_faces_results(demo_dir, batches, attention):
    """The model hands the encoder a 4D mask that it need not read back; the token states are
    those of Hugging Face's own handling of the 2D mask, padded batch or not."""
    from trainables.encoder import load_encoder

    cfg = _config(demo_dir, "sst", "mlp", "ce")
    torch.manual_seed(0)
    _, encoder = load_encoder(cfg.encoder, attention)
    model = MultiTaskModel(cfg, encoder).eval()
    batch = batches["sst", "single"]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert not mask.all()  # the batch has padding
    for rows in (slice(None), mask.all(1)):  # padded; only the rows with no padding
        with torch.no_grad():
            ours = model.embed(ids[rows], mask[rows])
            states = encoder(input_ids=ids[rows], attention_mask=mask[rows]).last_hidden_state
        torch.testing.assert_close(ours, model.pooling(states, mask[rows]), rtol=1e-5, atol=1e-5)


def test_bce_pos_weight_weighs_the_positives_and_stays_out_of_checkpoints():
    from trainables.losses.bce import BCELoss

    outputs, labels = torch.tensor([[0.3], [-1.2], [2.0]]), torch.tensor([1, 0, 1])
    plain, weighted = BCELoss(TASKS["para"]), BCELoss(TASKS["para"], pos_weight=3.0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        outputs.squeeze(-1), labels.float(), pos_weight=torch.tensor(3.0))
    torch.testing.assert_close(weighted(outputs, labels), expected)
    assert weighted(outputs, labels) > plain(outputs, labels)
    assert "_pos_weight" not in weighted.state_dict()  # checkpoints are as before
