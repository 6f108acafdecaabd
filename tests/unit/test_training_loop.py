"""Training loop pieces: schedule, batch preparation, epoch stats, checkpoints, retrieval eval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from echoprime.losses import ClipLoss
from echoprime.models import create_clip
from echoprime.taxonomy import RELEASE_MEAN, RELEASE_STD
from echoprime.training import (
    Augmentation,
    cosine_scheduler,
    evaluate_retrieval,
    load_checkpoint,
    lr_at,
    prepare_batch,
    retrieval_metrics,
    save_checkpoint,
    train_one_epoch,
)

SPEC = {"mean": RELEASE_MEAN, "std": RELEASE_STD}


@pytest.fixture(autouse=True)
def _seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _model():
    return create_clip(
        "echoprime_tiny",
        "tiny_bert",
        embed_dim=16,
        video_overrides={"frames": 4, "size": 16, "width": 4},
        text_overrides={"vocab_size": 40, "hidden": 16, "layers": 1, "heads": 2, "max_positions": 12},
    )


def _batch(rng: np.random.Generator, b: int = 4, studies: list[int] | None = None) -> dict:
    study = torch.tensor(studies if studies is not None else list(range(b)))
    ids = torch.randint(5, 40, (len(study), 12), generator=torch.Generator().manual_seed(int(study.sum())))
    ids[:, 0] = 2
    return {
        "clip": torch.from_numpy(rng.integers(0, 255, (len(study), 4, 16, 16, 3), dtype=np.uint8)),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.randint(0, 17, ids.shape),
        "study_idx": study,
    }


def test_lr_schedule_warmup_cosine_floor():
    assert lr_at(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 110, 0.1) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110, 0.1) == pytest.approx(0.55)
    assert lr_at(110, 1.0, 10, 110, 0.1) == 0.1 and lr_at(500, 1.0, 10, 110, 0.1) == 0.1
    vals = [lr_at(s, 1.0, 10, 110) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))
    with pytest.raises(ValueError, match="invalid schedule"):
        lr_at(0, 1.0, 20, 10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched = cosine_scheduler(opt, 0.5, warmup=4, total=20, min_lr=0.01)
    seen = []
    for _ in range(25):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, 0.5, 4, 20, 0.01) for s in range(25)])


def test_prepare_batch_normalises_uint8_channels_first():
    b = _batch(np.random.default_rng(0))
    out = prepare_batch(b, SPEC, "cpu")
    v = out["video"]
    assert v.shape == (4, 3, 4, 16, 16) and v.dtype == torch.float32
    raw = b["clip"][1, 2, 3, 5].float()  # T=2, H=3, W=5: the 3 channels
    expected = (raw - torch.tensor(RELEASE_MEAN)) / torch.tensor(RELEASE_STD)
    assert torch.allclose(v[1, :, 2, 3, 5], expected)
    assert torch.equal(prepare_batch({**b, "clip": v}, None, "cpu")["video"], v)  # float clips pass through
    assert out["study_idx"].dtype == torch.long


def test_prepare_batch_jitter_is_seeded_per_clip():
    b = _batch(np.random.default_rng(0))
    a1 = prepare_batch(
        b,
        SPEC,
        "cpu",
        augmentation=Augmentation(brightness=0.2, contrast=0.2),
        generator=torch.Generator().manual_seed(5),
    )["video"]
    a2 = prepare_batch(
        b,
        SPEC,
        "cpu",
        augmentation=Augmentation(brightness=0.2, contrast=0.2),
        generator=torch.Generator().manual_seed(5),
    )["video"]
    plain = prepare_batch(b, SPEC, "cpu")["video"]
    assert torch.equal(a1, a2) and not torch.allclose(a1, plain)
    # the same affine change for every frame and channel of a clip
    ratio = (a1[0] - a1[0].mean()) / (plain[0] - plain[0].mean())
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-3)


def test_prepare_batch_errors():
    b = _batch(np.random.default_rng(0))
    with pytest.raises(ValueError, match="need a preprocessing spec"):
        prepare_batch(b, None, "cpu")
    with pytest.raises(ValueError, match="batch has no 'study_idx'"):
        prepare_batch({k: v for k, v in b.items() if k != "study_idx"}, SPEC, "cpu")
    with pytest.raises(ValueError, match=r"batch\['input_ids'\] has 3 rows but the batch has 4"):
        prepare_batch({**b, "input_ids": b["input_ids"][:3]}, SPEC, "cpu")
    with pytest.raises(ValueError, match="B x T x H x W x 3"):
        prepare_batch({**b, "clip": b["clip"].permute(0, 4, 1, 2, 3).contiguous()}, SPEC, "cpu")


def test_train_one_epoch_stats_max_steps_and_stop():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    pulled = []

    def batches():
        for i in range(10):
            pulled.append(i)
            yield _batch(rng, studies=[0, 0, 1, 2])  # two clips of study 0 share its report

    infos = []
    stats = train_one_epoch(
        model,
        ClipLoss(),
        opt,
        None,
        batches(),
        "cpu",
        spec=SPEC,
        grad_clip=1.0,
        on_step=infos.append,
        max_steps=3,
    )
    assert stats.steps == 3 and stats.clips == 12 and len(pulled) == 3  # no batch pulled past max_steps
    assert stats.loss == pytest.approx(np.mean([i.loss for i in infos]))
    assert 0.0 <= stats.data_wait_frac < 1.0 and stats.clips_per_s > 0 and stats.seconds > 0
    assert set(infos[0].losses) == {"contrastive_loss"} and [i.step for i in infos] == [1, 2, 3]
    stopped = train_one_epoch(
        model, ClipLoss(), opt, None, batches(), "cpu", spec=SPEC, on_step=lambda info: info.step == 2
    )
    assert stopped.steps == 2 and stopped.stopped_early


def test_data_wait_fraction_measures_a_slow_loader():
    import time

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    rng = np.random.default_rng(0)

    def slow():
        for _ in range(3):
            time.sleep(0.3)
            yield _batch(rng)

    stats = train_one_epoch(model, ClipLoss(), opt, None, slow(), "cpu", spec=SPEC)
    assert stats.data_wait_s >= 0.9 and stats.data_wait_frac > 0.5


def test_non_finite_loss_raises_with_step():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    b = _batch(np.random.default_rng(0))
    b["clip"] = prepare_batch(b, SPEC, "cpu")["video"]
    b["clip"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite loss nan at step 1"):
        train_one_epoch(model, ClipLoss(), opt, None, [b], "cpu")


def test_checkpoint_round_trip(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = cosine_scheduler(opt, 1e-3, warmup=2, total=10)
    train_one_epoch(
        model, ClipLoss(), opt, sched, [_batch(np.random.default_rng(i)) for i in range(2)], "cpu", spec=SPEC
    )
    cfg = {"model": {"video_encoder": "echoprime_tiny"}, "data": {"mean": list(RELEASE_MEAN)}}
    d = save_checkpoint(
        tmp_path / "ckpt", model, opt, sched, step=2, epoch=1, config=cfg, extra={"val_r@1": 0.5}
    )
    assert sorted(p.name for p in d.iterdir()) == [
        "config.yaml",
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "state.json",
    ]
    fresh = _model()
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    sched2 = cosine_scheduler(opt2, 1e-3, warmup=2, total=10)
    state = load_checkpoint(d, fresh, opt2, sched2)
    assert (
        state["step"] == 2
        and state["epoch"] == 1
        and state["extra"] == {"val_r@1": 0.5}
        and state["config"] == cfg
    )
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # tied MLM decoder weight still tied after loading (stored once in safetensors)
    tb = fresh.text_encoder.backbone
    assert (
        tb.cls.predictions.decoder.weight.data_ptr() == tb.bert.embeddings.word_embeddings.weight.data_ptr()
    )
    assert (
        sched2.last_epoch == sched.last_epoch
        and opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    )
    # a resumed step continues identically
    nb = _batch(np.random.default_rng(9))
    for m, o, s in ((model, opt, sched), (fresh, opt2, sched2)):
        torch.manual_seed(1)
        train_one_epoch(m, ClipLoss(), o, s, [nb], "cpu", spec=SPEC)
    assert all(torch.allclose(a, b) for a, b in zip(model.parameters(), fresh.parameters(), strict=True))
    # overwrite in place, and a mismatched model is a clear error
    save_checkpoint(d, model, None, None, step=3, epoch=1, config=cfg)
    assert not (d / "optimizer.pt").exists()
    with pytest.raises(FileNotFoundError, match="optimizer.pt is missing"):
        load_checkpoint(d, fresh, opt2)
    other = create_clip(
        "echoprime_tiny",
        "tiny_bert",
        embed_dim=8,
        video_overrides={"frames": 4, "size": 16, "width": 4},
        text_overrides={"vocab_size": 40, "hidden": 16, "layers": 1, "heads": 2, "max_positions": 12},
    )
    with pytest.raises(ValueError, match="does not fit EchoClip"):
        load_checkpoint(d, other)
    with pytest.raises(FileNotFoundError, match="is not a checkpoint"):
        load_checkpoint(tmp_path, fresh)


def test_retrieval_metrics_protocol():
    # 3 studies; study 7 has two clips. Embeddings are axis vectors: perfect retrieval.
    video = torch.eye(3)[[0, 0, 1, 2]]
    video_study = torch.tensor([7, 7, 8, 9])
    text = torch.eye(3)[[0, 1, 2, 0]]
    text_study = torch.tensor([7, 8, 9, 7])  # a duplicate report of study 7 is dropped
    m = retrieval_metrics(video, video_study, text, text_study, ks=(1,))
    assert m == {
        "v2t_r@1": 1.0,
        "t2v_r@1": 1.0,
        "v2t_median_rank": 1.0,
        "t2v_median_rank": 1.0,
        "n": 4.0,
        "n_studies": 3.0,
    }
    # swap study 8's and 9's clips: each now scores 1 with the other's report and ties (0) with
    # study 7's, and ties count against the query, so its own report ranks third of three
    m2 = retrieval_metrics(torch.eye(3)[[0, 0, 2, 1]], video_study, text, text_study, ks=(1, 2, 3))
    assert (m2["v2t_r@1"], m2["v2t_r@2"], m2["v2t_r@3"]) == (0.5, 0.5, 1.0)
    assert m2["t2v_r@1"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"studies \[9\] have no report"):
        retrieval_metrics(video, video_study, text[:2], text_study[:2])


def test_evaluate_retrieval_embeds_each_study_report_once():
    model = _model()
    calls = []
    orig = model.encode_text

    def counting(ids, *a):
        calls.append(ids.shape[0])
        return orig(ids, *a)

    model.encode_text = counting
    rng = np.random.default_rng(0)
    batches = [_batch(rng, studies=[0, 0, 1, 2]), _batch(rng, studies=[2, 3, 3, 4])]
    model.train()
    m = evaluate_retrieval(model, batches, "cpu", spec=SPEC, ks=(1, 5))
    assert m["n"] == 8 and m["n_studies"] == 5 and sum(calls) == 5
    assert model.training  # mode restored
    assert all(0.0 <= m[k] <= 1.0 for k in ("v2t_r@1", "v2t_r@5", "t2v_r@1", "t2v_r@5"))
    assert m["v2t_r@5"] == 1.0 and not math.isnan(m["v2t_median_rank"])


def test_bf16_autocast_epoch_runs_with_fp32_loss():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    infos = []
    stats = train_one_epoch(
        model,
        ClipLoss(),
        opt,
        None,
        [_batch(rng) for _ in range(2)],
        "cpu",
        spec=SPEC,
        autocast_dtype=torch.bfloat16,
        on_step=infos.append,
    )
    assert stats.steps == 2 and all(math.isfinite(i.loss) for i in infos)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32 under autocast
