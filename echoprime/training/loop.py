"""The plain training loop: any iterable of dict batches in, epoch statistics out.

Everything arrives as an argument (model, loss, optimizer, scheduler, batches, device), the
torchvision ``train_one_epoch`` habit, so the same function runs in a unit test on a list of
dicts and inside a Ray Train worker on ``get_dataset_shard("train").iter_torch_batches()``; Ray
stays in ``ray_jobs/``. The loop sums every ``*_loss`` key the loss returns.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from echoprime.metrics import median_rank_chunked, recall_at_k_chunked
from echoprime.training.batch import NO_AUGMENTATION, Augmentation, prepare_batch
from echoprime.training.checkpoint import unwrap


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` receives after each optimizer step.

    Attributes:
        step: steps taken in this epoch (1 after the first).
        loss: total loss of the step.
        lr: learning rate of the first param group after the scheduler stepped.
        clips: clips in the step's batch.
        losses: every ``*_loss`` value of the step.
    """

    step: int
    loss: float
    lr: float
    clips: int
    losses: dict[str, float]


@dataclass(frozen=True)
class EpochStats:
    """Summary of one call to :func:`train_one_epoch`.

    Attributes:
        loss: mean total loss over the steps.
        steps: optimizer steps taken.
        clips: clips seen.
        seconds: wall time from the first request of a batch to the end of the last step.
        clips_per_s: ``clips / seconds``.
        data_wait_s: time spent blocked on the next batch from ``batches``.
        data_wait_frac: ``data_wait_s / seconds``; near 0 means the model is the bottleneck,
            near 1 means the data pipeline is.
        lr: learning rate at the end.
        stopped_early: ``on_step`` asked to stop.
    """

    loss: float
    steps: int
    clips: int
    seconds: float
    clips_per_s: float
    data_wait_s: float
    data_wait_frac: float
    lr: float
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(
    model: nn.Module,
    loss_fn: Callable[..., Mapping[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str,
    *,
    spec: Mapping[str, Any] | None = None,
    autocast_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    on_step: Callable[[StepInfo], bool | None] | None = None,
    max_steps: int | None = None,
    augmentation: Augmentation = NO_AUGMENTATION,
    generator: torch.Generator | None = None,
) -> EpochStats:
    """Train a CLIP model for one pass over ``batches`` (or ``max_steps`` steps).

    Args:
        model: takes ``(video, input_ids, attention_mask, token_type_ids)`` and returns the loss
            kwargs (``EchoClip``, possibly DDP-wrapped).
        loss_fn: ``loss_fn(**model_out, study_ids=...)`` (plus ``labels=`` when the batches have
            them) -> dict whose ``*_loss`` values are summed.
        optimizer: steps once per batch.
        scheduler: ``step()``-ed after each optimizer step, or None.
        batches: dicts with ``clip``, ``input_ids``, ``attention_mask``, ``token_type_ids``, ``study_idx``
            and optionally ``labels``.
        device: where to compute.
        spec: preprocessing spec (``mean``/``std`` pixel units) for uint8 clips.
        autocast_dtype: e.g. ``torch.bfloat16`` for mixed precision; None for fp32.
        grad_clip: clip the global gradient norm to this, or None.
        on_step: called after every step with a :class:`StepInfo`; returning True ends the epoch
            (time budgets, preemption).
        max_steps: stop after this many steps without requesting another batch.
        augmentation: applied to every batch's clips (:class:`echoprime.training.batch.Augmentation`).
        generator: random source for the augmentation.

    Raises:
        FloatingPointError: the loss became NaN or infinite (names the step).
    """
    device = torch.device(device)
    model.train()
    it = iter(batches)
    steps = clips = 0
    loss_sum = data_wait = 0.0
    stopped = False
    t_start = time.perf_counter()
    while max_steps is None or steps < max_steps:
        t0 = time.perf_counter()
        try:
            raw = next(it)
        except StopIteration:
            break
        data_wait += time.perf_counter() - t0
        b = prepare_batch(raw, spec, device, augmentation=augmentation, generator=generator)
        with _autocast(device, autocast_dtype):
            out = model(b["video"], b.get("input_ids"), b.get("attention_mask"), b.get("token_type_ids"))
        # The loss runs outside autocast: logits and softmax in fp32 (a bf16 softmax over a
        # global batch loses the small differences the contrastive loss is made of).
        extra = {"labels": b["labels"]} if "labels" in b else {}
        losses = loss_fn(**out, study_ids=b["study_idx"], **extra)
        parts = {k: v for k, v in losses.items() if k.endswith("_loss")}
        if not parts:
            raise ValueError(f"loss_fn returned no '*_loss' key (keys: {sorted(losses)})")
        total = sum(parts.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # .item() waits for the device, so per-step time (and the data-wait fraction) is honest.
        loss_val = float(total.item())
        if not math.isfinite(loss_val):
            raise FloatingPointError(
                f"non-finite loss {loss_val} at step {steps + 1} of the epoch ({ {k: float(v.detach()) for k, v in parts.items()} })"
            )
        steps += 1
        n = int(b["video"].shape[0])
        clips += n
        loss_sum += loss_val
        lr = float(optimizer.param_groups[0]["lr"])
        if on_step is not None and on_step(
            StepInfo(steps, loss_val, lr, n, {k: float(v.detach()) for k, v in parts.items()})
        ):
            stopped = True
            break
    _sync(device)
    seconds = time.perf_counter() - t_start
    return EpochStats(
        loss=loss_sum / steps if steps else float("nan"),
        steps=steps,
        clips=clips,
        seconds=seconds,
        clips_per_s=clips / seconds if seconds > 0 else 0.0,
        data_wait_s=data_wait,
        data_wait_frac=data_wait / seconds if seconds > 0 else 0.0,
        lr=float(optimizer.param_groups[0]["lr"]),
        stopped_early=stopped,
    )


@torch.no_grad()
def embed_for_retrieval(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str,
    *,
    spec: Mapping[str, Any] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Embed every clip, and each study's report once, for retrieval evaluation.

    Returns:
        ``video`` ``N x D``, ``video_study`` ``N``, ``text`` ``S x D``, ``text_study`` ``S`` (CPU,
        float32, unit norm). A study's report is embedded from the first row of it seen.
    """
    device = torch.device(device)
    clip_model = unwrap(model)
    was_training = clip_model.training
    clip_model.eval()
    vids, vstudy, texts, tstudy = [], [], [], []
    seen: set[int] = set()
    try:
        for raw in batches:
            b = prepare_batch(raw, spec, device)
            with _autocast(device, autocast_dtype):
                vids.append(clip_model.encode_video(b["video"]).float().cpu())
                vstudy.append(b["study_idx"].cpu())
                rows = []
                for i, s in enumerate(b["study_idx"].tolist()):
                    if s not in seen:
                        seen.add(s)
                        rows.append(i)
                if rows:
                    idx = torch.tensor(rows, device=device)
                    am = b.get("attention_mask")
                    tt = b.get("token_type_ids")
                    texts.append(
                        clip_model.encode_text(
                            b["input_ids"][idx],
                            None if am is None else am[idx],
                            None if tt is None else tt[idx],
                        )
                        .float()
                        .cpu()
                    )
                    tstudy.append(b["study_idx"][idx].cpu())
    finally:
        clip_model.train(was_training)
    if not vids:
        raise ValueError("no batches to evaluate")
    return {
        "video": torch.cat(vids),
        "video_study": torch.cat(vstudy),
        "text": torch.cat(texts),
        "text_study": torch.cat(tstudy),
    }


def retrieval_metrics(
    video: torch.Tensor,
    video_study: torch.Tensor,
    text: torch.Tensor,
    text_study: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 4096,
) -> dict[str, float]:
    """Video-level retrieval between clips and their studies' reports.

    Protocol: the candidate reports are the unique studies (duplicated study ids in ``text`` are
    dropped, first kept). Video -> text: each clip ranks all study reports; its positive is its
    own study's report. Text -> video: each study report ranks all clips; a hit at k is any clip
    of that study within the top k. Embeddings gathered from several ranks can be concatenated
    and passed here.

    Returns:
        ``v2t_r@k`` and ``t2v_r@k`` for each k, ``v2t_median_rank``, ``t2v_median_rank``, ``n``
        (clips) and ``n_studies``.
    """
    ts = text_study.long().tolist()
    keep, seen = [], set()
    for i, s in enumerate(ts):
        if s not in seen:
            seen.add(s)
            keep.append(i)
    text, text_study = text[keep], text_study.long()[keep]
    col = {int(s): j for j, s in enumerate(text_study.tolist())}
    missing = sorted({int(s) for s in video_study.tolist()} - set(col))
    if missing:
        raise ValueError(f"clips of studies {missing[:10]} have no report embedding")
    v2t_target = torch.tensor([col[int(s)] for s in video_study.tolist()], dtype=torch.long)
    t2v_target = text_study[:, None] == video_study.long()[None, :]  # S x N: the study's clips
    out: dict[str, float] = {}
    for k, r in recall_at_k_chunked(video, text, v2t_target, ks, chunk).items():
        out[f"v2t_r@{k}"] = r
    for k, r in recall_at_k_chunked(text, video, t2v_target, ks, chunk).items():
        out[f"t2v_r@{k}"] = r
    out["v2t_median_rank"] = median_rank_chunked(video, text, v2t_target, chunk)
    out["t2v_median_rank"] = median_rank_chunked(text, video, t2v_target, chunk)
    out["n"] = float(video.shape[0])
    out["n_studies"] = float(text.shape[0])
    return out


def evaluate_retrieval(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str,
    *,
    spec: Mapping[str, Any] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Embed ``batches`` and compute :func:`retrieval_metrics` (``v2t_r@1`` ... ``n``)."""
    e = embed_for_retrieval(model, batches, device, spec=spec, autocast_dtype=autocast_dtype)
    return retrieval_metrics(e["video"], e["video_study"], e["text"], e["text_study"], ks)
