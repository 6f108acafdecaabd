"""ClipLoss across 2 gloo ranks equals the single-process loss on the concatenated batch.

Gradients: with ``gather_with_grad=True`` each rank's gradient w.r.t. its local features is
``world_size`` x the single-process gradient of those rows (every rank's identical global loss
sends gradient to them; DDP's averaging divides the factor back out). With
``gather_with_grad=False`` it is exactly the single-process gradient.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from echoprime.losses import ClipLoss

WORLD = 2
B, D = 4, 8


def _global_batch():
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(WORLD * B, D, generator=g), dim=-1)
    t = F.normalize(torch.randn(WORLD * B, D, generator=g), dim=-1)
    # studies span ranks (0 and 3 appear on both) so cross-rank positives are exercised
    ids = torch.tensor([0, 1, 0, 3, 3, 5, 6, 0])
    return v, t, ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, gather_with_grad: bool, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        v, t, ids = _global_batch()
        sl = slice(rank * B, (rank + 1) * B)
        v_local = v[sl].clone().requires_grad_(True)
        t_local = t[sl].clone().requires_grad_(True)
        scale = torch.tensor(7.0, requires_grad=True)
        loss = ClipLoss(rank, WORLD, gather_with_grad=gather_with_grad)(
            v_local, t_local, scale, study_ids=ids[sl]
        )["contrastive_loss"]
        loss.backward()
        out[rank] = (float(loss.detach()), v_local.grad.clone(), t_local.grad.clone(), float(scale.grad))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("gather_with_grad", [True, False])
def test_two_rank_loss_and_gradients_match_single_process(gather_with_grad):
    torch.set_num_threads(1)
    v, t, ids = _global_batch()
    v1, t1 = v.clone().requires_grad_(True), t.clone().requires_grad_(True)
    scale = torch.tensor(7.0, requires_grad=True)
    ref = ClipLoss()(v1, t1, scale, study_ids=ids)["contrastive_loss"]
    ref.backward()

    ctx = mp.get_context("fork")  # children inherit the imported torch: start in well under a second
    with ctx.Manager() as manager:
        out = manager.dict()
        port = _free_port()
        procs = [ctx.Process(target=_worker, args=(r, port, gather_with_grad, out)) for r in range(WORLD)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        results = dict(out)

    factor = WORLD if gather_with_grad else 1
    for r in range(WORLD):
        loss, gv, gt, gs = results[r]
        sl = slice(r * B, (r + 1) * B)
        assert abs(loss - float(ref.detach())) < 1e-6
        assert torch.allclose(gv, factor * v1.grad[sl], atol=1e-6)
        assert torch.allclose(gt, factor * t1.grad[sl], atol=1e-6)
        # the temperature is a local parameter: each rank sees the full-batch gradient
        assert abs(gs - float(scale.grad)) < 1e-5
