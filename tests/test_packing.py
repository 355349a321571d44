"""Packed encoding (`Runtime(attention="packed")`): the same outputs, gradients and training as
the padded encoder, on the demo data's real batches."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch

from trainables import Runtime, train
from trainables.data.batching import collate
from trainables.data.loading import load_task_splits
from trainables.encoder import load_encoder
from trainables.errors import ConfigError
from trainables.model import MultiTaskModel
from trainables.packing import Packing

from .test_train import scores


def _models(cfg):
    """The same model twice: padded (SDPA) and packed, identical weights."""
    torch.manual_seed(0)
    tokenizer, encoder = load_encoder(cfg.encoder, "auto")
    padded = MultiTaskModel(cfg, encoder)
    _, encoder2 = load_encoder(cfg.encoder, "packed")
    packed = MultiTaskModel(cfg, encoder2)
    packed.load_state_dict(padded.state_dict())
    assert packed.packed and not padded.packed
    return tokenizer, padded, packed


def _step(cfg, tokenizer, model, cache_dir, rows: int) -> dict:
    """One batch of each task's first `rows` training rows, as the model takes them."""
    modes = {t: model.input_mode(t) for t in cfg.tasks}
    splits = load_task_splits(cfg, tokenizer, modes, cache_dir, splits=("train",))
    return {task: collate(s["train"].data, s["train"].rows[:rows], tokenizer.pad_token_id)
            for task, s in splits.items()}


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("para,sts", [("cosine", "concat"), ("cross", "sbert")])
def test_packed_outputs_and_gradients_equal_padded(tiny_config, cache_dir, pooling, para, sts):
    """Single sentences (SST), pairs with segment ids (cross-encoder) and bi-encoder pairs."""
    cfg = tiny_config({"encoder.attention_dropout": 0.0, "encoder.hidden_dropout": 0.0,
                       "encoder.pooling": pooling, "tasks.para.head": para,
                       "tasks.para.head_args": {}, "tasks.sts.head": sts})
    tokenizer, padded, packed = _models(cfg)
    step = _step(cfg, tokenizer, padded, cache_dir, 24)
    for batch in step.values():
        mask = batch.get("attention_mask", batch.get("attention_mask_a"))
        assert (mask == 0).any(), "the batch should have padding"
    out_a, out_b = padded(step), packed(step)
    for task in step:
        torch.testing.assert_close(out_b["outputs"][task], out_a["outputs"][task],
                                   rtol=1e-4, atol=1e-5)
    sum(out_a["weighted"].values()).backward()
    sum(out_b["weighted"].values()).backward()
    grads_a = dict(padded.named_parameters())
    compared = 0
    for name, p in packed.named_parameters():
        g = grads_a[name].grad
        if g is None:
            assert p.grad is None or not p.grad.any(), name
            continue
        torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-5, msg=name)
        compared += 1
    assert compared > 20


def test_packing_round_trip_and_pooling():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    p = Packing.of(mask)
    assert p.cu_seqlens.tolist() == [0, 3, 4, 8] and p.cu_seqlens.dtype == torch.int32
    assert p.positions().tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]
    x = torch.arange(12.0).view(3, 4, 1)
    packed = p.pack(x)
    assert packed.squeeze(-1).tolist() == [[0, 1, 2, 4, 8, 9, 10, 11]]
    assert torch.equal(p.unpack(packed.squeeze(0)), x * mask.unsqueeze(-1))
    assert p.pool(packed, "cls").squeeze(-1).tolist() == [0, 4, 8]
    assert p.pool(packed, "mean").squeeze(-1).tolist() == [1, 4, 9.5]


def test_a_packing_moves_whole():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    p = Packing.of(mask)
    q = p.to("cpu")
    for name in ("keep", "index", "row", "cu_seqlens"):
        assert torch.equal(getattr(q, name), getattr(p, name)), name
    assert (q.rows, q.width) == (2, 3)


@pytest.mark.parametrize("attention", ["packed", "packed_flex"])
def test_training_builds_each_packing_on_the_host(tiny_config, monkeypatch, attention):
    """A packed trial packs each batch where it is collated, before it goes to the device: the
    model never packs a mask itself while it trains or predicts (on a GPU that would wait for
    every queued kernel, as the packed length is data-dependent). Bi-encoder pairs are packed
    as the encoder takes them: both sides stacked, twice the batch's rows."""
    from trainables.model import MultiTaskModel

    built, in_model, tiles = [], [], []
    inside = {"model": False}
    of = Packing.of.__func__

    def recording_of(cls, mask, blocks=False):
        (in_model if inside["model"] else built).append(tuple(mask.shape))
        tiles.append(blocks)
        return of(cls, mask, blocks)

    task_outputs = MultiTaskModel.task_outputs

    def recording_task_outputs(self, task, batch):
        assert "packing" in batch, task
        inside["model"] = True
        try:
            return task_outputs(self, task, batch)
        finally:
            inside["model"] = False

    monkeypatch.setattr(Packing, "of", classmethod(recording_of))
    monkeypatch.setattr(MultiTaskModel, "task_outputs", recording_task_outputs)
    cfg = tiny_config({"encoder.attention_dropout": 0.0, "epochs": 1})
    metrics = train(cfg, Runtime(cpu=True, progress_lines=0, attention=attention))
    assert metrics["epochs_completed"] == 1
    assert built and not in_model
    assert set(tiles) == {attention == "packed_flex"}  # FlexAttention's tiles: on the host too
    rows = {shape[0] for shape in built}
    assert 2 * cfg.batch_size in rows and cfg.batch_size in rows  # pairs and single sentences


def test_the_kernel_call_compiles_without_graph_breaks(monkeypatch):
    """Under torch.compile with dynamic shapes (as `Runtime(compile=True)` runs the encoder) the
    call into the variable-length kernel stays in the graph: a break there would run every
    layer eagerly. A stand-in kernel takes the GPU kernel's place on the CPU."""
    from trainables import packing

    seen = {}

    def stand_in(q, k, v, cu_q, cu_k, max_q, max_k, scale=None):
        seen["scale"] = scale
        return q * scale + k - v

    monkeypatch.setattr(packing, "_VARLEN", [stand_in])
    monkeypatch.setattr(packing, "_kernel_runs", lambda q: True)
    torch._dynamo.reset()

    def attend(q, p):
        return packing.packed_attention(None, q, q, q, None, scaling=0.25, packing=p)[0]

    compiled = torch.compile(attend, fullgraph=True, dynamic=True)
    for lengths in ([3, 1, 4], [2, 5]):  # two batches: other rows, widths and token counts
        mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
        p = Packing.of(mask)
        q = torch.randn(1, 2, sum(lengths), 16)
        torch.testing.assert_close(compiled(q, p), attend(q, p))
    assert seen["scale"] == 0.25
    torch._dynamo.reset()


def test_the_flex_call_compiles_without_graph_breaks_or_a_graph_per_batch():
    """FlexAttention with the block mask built per batch (new tiles, a new mask function over
    new row ids) compiles into one graph with dynamic shapes and keeps it for later batches
    (forward, as FlexAttention runs on the CPU): no break and no recompilation per batch."""
    from torch._dynamo.utils import counters

    from trainables import packing

    torch._dynamo.reset()

    def attend(q, p):
        return packing.packed_attention(None, q, q, q, None, scaling=0.25, packing=p)[0]

    # Dynamo's capture is what is checked; Inductor's CPU code for FlexAttention is not what a
    # GPU runs (and fails to build for some shapes in this torch release).
    compiled = torch.compile(attend, fullgraph=True, dynamic=True, backend="aot_eager")
    graphs = []
    # (Each packs into 2+ blocks of queries: dynamic shapes specialise a size of 1.)
    for lengths in ([3, 1, 4, 140, 7], [2, 5, 130, 9], [60, 70, 3], [9, 8, 200, 1]):
        mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
        p = Packing.of(mask, blocks=True).with_block_mask()
        q = torch.randn(1, 2, sum(lengths), 16)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the eager reference's "without torch.compile"
            torch.testing.assert_close(compiled(q, p), attend(q, p))
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[-1] == graphs[1], graphs  # the first batch's shapes are specialised once
    torch._dynamo.reset()


def _reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=None):
    """Variable-length attention row by row with SDPA: (T, heads, d) in and out."""
    assert cu_q.dtype == torch.int32 and max_q == max_k and torch.equal(cu_q, cu_k)
    assert int(cu_q.diff().max()) <= max_q
    out = []
    for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
        qi, ki, vi = (t[a:b].transpose(0, 1) for t in (q, k, v))  # (heads, len, d)
        out.append(torch.nn.functional.scaled_dot_product_attention(qi, ki, vi, scale=scale)
                   .transpose(0, 1))
    return torch.cat(out)


def test_the_kernel_call_gives_the_padded_result(tiny_config, cache_dir, monkeypatch):
    """The call into the variable-length kernel (layout, row offsets, widths, scale), checked on
    the CPU with a row-by-row reference kernel in its place: the same outputs as padded SDPA."""
    from trainables import packing

    cfg = tiny_config({"encoder.attention_dropout": 0.0, "encoder.hidden_dropout": 0.0,
                       "tasks.para.head": "cross", "tasks.para.head_args": {}})
    tokenizer, padded, packed = _models(cfg)
    calls = []
    monkeypatch.setattr(packing, "_VARLEN",
                        [lambda *a, **k: calls.append(1) or _reference_varlen(*a, **k)])
    monkeypatch.setattr(packing, "_kernel_runs", lambda q: True)
    step = _step(cfg, tokenizer, padded, cache_dir, 24)
    out_a, out_b = padded(step), packed(step)
    assert calls
    for task in step:
        torch.testing.assert_close(out_b["outputs"][task], out_a["outputs"][task],
                                   rtol=1e-4, atol=1e-5)


def test_packed_trial_trains_like_the_padded_one(tiny_config):
    """Two epochs of the demo trial: the packed encoder gives the padded one's metrics up to
    float rounding (the two sum in different orders); without dropout, whose masks would be
    drawn over differently shaped tensors."""
    cfg = tiny_config({"encoder.attention_dropout": 0.0, "encoder.hidden_dropout": 0.0})
    a = scores(train(cfg, Runtime(cpu=True, progress_lines=0)))
    b = scores(train(cfg, Runtime(cpu=True, progress_lines=0, attention="packed")))
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-3), key
    assert np.isfinite(b["train_loss_sst"]) and b["epochs_completed"] == 2


def test_packed_attention_refuses_attention_dropout(tiny_config):
    cfg = tiny_config({"encoder.attention_dropout": 0.1})
    with pytest.raises(ConfigError, match="encoder.attention_dropout"):
        train(cfg, Runtime(cpu=True, progress_lines=0, attention="packed"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("para,sts", [("cosine", "concat"), ("cross", "sbert")])
def test_packed_flash_attention_matches_padded_on_a_gpu(tiny_config, cache_dir, monkeypatch,
                                                        para, sts):
    """On a GPU in bf16 the packed encoder runs PyTorch's variable-length flash attention: its
    outputs and gradients match the padded SDPA encoder's to bf16 precision."""
    from trainables import packing

    cfg = tiny_config({"encoder.attention_dropout": 0.0, "encoder.hidden_dropout": 0.0,
                       "tasks.para.head": para, "tasks.para.head_args": {},
                       "tasks.sts.head": sts})
    tokenizer, padded, packed = _models(cfg)
    assert packing._VARLEN and packing._VARLEN[0] is not None, \
        f"torch {torch.__version__} has no variable-length attention"
    calls = []
    kernel = packing._VARLEN[0]
    monkeypatch.setattr(packing, "_VARLEN", [lambda *a, **k: calls.append(1) or kernel(*a, **k)])
    padded.to("cuda", torch.bfloat16)
    packed.to("cuda", torch.bfloat16)
    step = {task: {k: v.cuda() for k, v in batch.items()}
            for task, batch in _step(cfg, tokenizer, padded, cache_dir, 64).items()}
    _matches_padded_in_bf16(padded, packed, step)
    assert calls, "the packed encoder did not call the variable-length kernel"


def _matches_padded_in_bf16(padded, packed, step, autocast: bool = False) -> None:
    """The packed model's outputs and gradients match the padded model's to bf16 precision
    (`autocast`: the packed model runs under bf16 autocast, as training runs)."""
    out_a = padded(step)
    device = next(packed.parameters()).device.type
    with torch.autocast(device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
        out_b = packed(step)
    for task in step:
        torch.testing.assert_close(out_b["outputs"][task].float(), out_a["outputs"][task].float(),
                                   rtol=0.05, atol=0.05)
    sum(out_a["weighted"].values()).backward()
    sum(out_b["weighted"].values()).backward()
    grads_a = dict(padded.named_parameters())
    for name, p in packed.named_parameters():
        g = grads_a[name.replace("_orig_mod.", "")].grad  # (a compiled encoder's names)
        if g is not None and p.grad is not None:
            cos = torch.nn.functional.cosine_similarity(p.grad.float().flatten(),
                                                        g.float().flatten(), dim=0)
            assert cos > 0.98 or g.abs().max() < 1e-4, (name, float(cos))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("attention", ["packed", "packed_flex"])
def test_a_packed_training_step_does_not_wait_on_the_gpu(tiny_config, cache_dir, attention):
    """A packed step with its packings built on the host (as training builds them) queues its
    forward, backward, clipping and optimizer step without one wait on the GPU: PyTorch raises
    at any synchronizing call while its sync debug mode is "error"."""
    from trainables.training import _model_batch

    cfg = tiny_config({"encoder.attention_dropout": 0.0, "tasks.para.head": "cross",
                       "tasks.para.head_args": {}, "tasks.sts.head": "sbert"})
    tokenizer, _, _ = _models(cfg)
    _, encoder = load_encoder(cfg.encoder, attention)
    packed = MultiTaskModel(cfg, encoder)
    packed.to("cuda")
    modes = {t: packed.input_mode(t) for t in cfg.tasks}
    splits = load_task_splits(cfg, tokenizer, modes, cache_dir, splits=("train",))
    params = [p for p in packed.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, fused=True)
    for attempt in range(2):  # the first step allocates the optimizer's state
        torch.cuda.synchronize()
        if attempt:
            torch.cuda.set_sync_debug_mode("error")
        try:
            step = {t: _model_batch(packed, t, s["train"].data, s["train"].rows[:64],
                                    tokenizer.pad_token_id, "cuda") for t, s in splits.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = packed(step)
            sum(out["weighted"].values()).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert all(torch.isfinite(v).all() for v in out["losses"].values())


def _same_row_blocks(lengths: list[int], block: int) -> set[tuple[int, int]]:
    """The (query block, key block) pairs that hold a query and a key of the same row."""
    row = np.repeat(np.arange(len(lengths)), lengths)
    blocks = np.arange(len(row)) // block
    return {(int(blocks[q]), int(blocks[k])) for q in range(len(row)) for k in range(len(row))
            if row[q] == row[k]}


@pytest.mark.parametrize("lengths", [[5, 3, 130, 2, 9, 4, 127, 1, 60, 70], [128, 128, 1],
                                     [1], [40] * 20, [127, 2, 127]])
def test_flex_tiles_are_exactly_the_blocks_rows_share(lengths):
    """FlexAttention's tiles of a packing cover every pair of tokens of the same row and no
    block pair without one (so no tile is computed in vain, beyond the partial ones)."""
    from trainables.packing import FLEX_BLOCK

    width = max(lengths)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    packing = Packing.of(mask, blocks=True)
    counts, indices = packing.kv_blocks[0, 0], packing.kv_indices[0, 0]
    tiles = {(q, int(k)) for q in range(len(counts)) for k in indices[q, :counts[q]]}
    assert tiles == _same_row_blocks(lengths, FLEX_BLOCK)
    assert Packing.of(mask).kv_blocks is None  # only when asked for


def test_flex_attention_gives_the_padded_encoders_states(tiny_config, cache_dir):
    """The packed encoder with FlexAttention's block-diagonal mask (its forward runs on the
    CPU too) gives the padded encoder's embeddings, for rows of the real data."""
    cfg = tiny_config({"encoder.attention_dropout": 0.0, "encoder.hidden_dropout": 0.0})
    tokenizer, padded, _ = _models(cfg)
    _, encoder = load_encoder(cfg.encoder, "packed_flex")
    flex = MultiTaskModel(cfg, encoder)
    flex.load_state_dict(padded.state_dict())
    assert flex.packed and flex.flex
    batch = _step(cfg, tokenizer, padded, cache_dir, 24)["sst"]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    packing = flex.packing("sst", batch).with_block_mask()
    assert packing.kv_blocks is not None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlexAttention's "without torch.compile" on the CPU
        states = flex.encoder(input_ids=packing.pack(ids), position_ids=packing.positions(),
                              packing=packing).last_hidden_state
        expected = padded.eval().embed(ids, mask)
    torch.testing.assert_close(flex.pooling(states, packing), expected, rtol=1e-4, atol=1e-5)


def test_packed_flex_trains_on_the_cpu_as_packed(tiny_config):
    """FlexAttention has no backward on the CPU: there a packed_flex trial trains exactly as
    a packed one (the GPU tests below run FlexAttention)."""
    cfg = tiny_config({"encoder.attention_dropout": 0.0, "epochs": 1})
    a = scores(train(cfg, Runtime(cpu=True, progress_lines=0, attention="packed")))
    b = scores(train(cfg, Runtime(cpu=True, progress_lines=0, attention="packed_flex")))
    assert a == b


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("compiled", [False, True])
def test_packed_flex_attention_matches_padded_on_a_gpu(tiny_config, cache_dir, compiled):
    """On a GPU the packed_flex encoder runs FlexAttention with the block-diagonal mask: under
    bf16 autocast (as trials train) its outputs and gradients match the padded SDPA encoder's
    in fp32 to bf16 precision, eager (the kernel compiled alone) and with the encoder
    compiled."""
    cfg = tiny_config({"encoder.attention_dropout": 0.0, "encoder.hidden_dropout": 0.0,
                       "tasks.para.head": "cross", "tasks.para.head_args": {},
                       "tasks.sts.head": "sbert"})
    tokenizer, padded, _ = _models(cfg)
    _, encoder = load_encoder(cfg.encoder, "packed_flex")
    flex = MultiTaskModel(cfg, encoder)
    flex.load_state_dict(padded.state_dict())
    padded.to("cuda")  # fp32: the reference
    flex.to("cuda")
    if compiled:
        flex.encoder = torch.compile(flex.encoder, dynamic=True)
    step = {task: {k: v.cuda() for k, v in batch.items()}
            for task, batch in _step(cfg, tokenizer, padded, cache_dir, 64).items()}
    _matches_padded_in_bf16(padded, flex, step, autocast=True)
