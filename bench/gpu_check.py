"""One short GPU check at the paper's scale (run once per lent GPU; see docs/benchmarks.md).

1. Pretraining step at configs/a6000x2.yaml settings scaled to one GPU: mViT v2 S video tower +
   BiomedBERT-base text tower (random weights, the real architectures), 16 x 224 x 224 clips,
   512-token reports, per-GPU batch 32, bf16 autocast; uint8 clips come from a
   DataLoader with worker processes (pinned memory) and are normalised on the GPU by the
   library's `prepare_batch`, exactly as in ray_jobs.pretrain. Reports clips/s, peak memory and
   the data-wait fraction measured by `train_one_epoch`.
2. Interpretation of 50-video studies with the release-size models: mViT encoder (512-d) +
   ConvNeXt-base view classifier on each clip's first frame, bf16 -> studies/s.
3. Exact bank search on the GPU: 15 section queries against 230 676 and 1 230 676 candidates.

Usage: python bench/gpu_check.py [--smoke] [--out results.json]
(--smoke: tiny sizes on CPU, to check the script itself before spending device time.)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echoprime.losses import ClipLoss  # noqa: E402
from echoprime.models import create_clip, create_model  # noqa: E402
from echoprime.taxonomy import RELEASE_MEAN, RELEASE_STD  # noqa: E402
from echoprime.training.loop import train_one_epoch  # noqa: E402


class ClipSource(torch.utils.data.Dataset):
    """uint8 clips as a shard reader yields them, plus random report tokens (study per row)."""

    def __init__(self, n: int, frames: int, size: int, tokens: int, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.pool = torch.randint(0, 255, (8, frames, size, size, 3), dtype=torch.uint8, generator=g)
        self.n, self.tokens, self.vocab = n, tokens, vocab

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        ids = torch.randint(5, self.vocab, (self.tokens,), generator=g)
        ids[0], ids[-1] = 2, 3
        clip = self.pool[i % 8].clone()  # a copy, like a decoded row
        return {
            "clip": clip,
            "input_ids": ids,
            "attention_mask": torch.ones(self.tokens, dtype=torch.long),
            "token_type_ids": torch.zeros(self.tokens, dtype=torch.long),
            "study_idx": torch.tensor(i),
        }


def pretrain_check(dev: torch.device, smoke: bool) -> dict:
    frames, size, tokens, batch = (4, 32, 32, 4) if smoke else (16, 224, 512, 32)
    text = "tiny_bert" if smoke else "biomedbert"
    vid = "echoprime_tiny" if smoke else "echoprime_mvit_v2_s"
    vo = {"frames": frames, "size": size} if smoke else {}
    model = create_clip(vid, text, embed_dim=512, video_overrides=vo).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss = ClipLoss()
    steps_warm, steps = (1, 2) if smoke else (4, 20)
    ds = ClipSource(batch * (steps + steps_warm + 1), frames, size, tokens, 2000 if smoke else 30522)
    dl = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        num_workers=0 if smoke else 8,
        pin_memory=dev.type == "cuda",
        drop_last=True,
        persistent_workers=not smoke,
        prefetch_factor=None if smoke else 4,
    )
    spec = {"mean": RELEASE_MEAN, "std": RELEASE_STD}
    dtype = torch.bfloat16 if dev.type == "cuda" else None
    it = iter(dl)
    train_one_epoch(
        model, loss, opt, None, it, dev, spec=spec, autocast_dtype=dtype, grad_clip=1.0, max_steps=steps_warm
    )
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    st = train_one_epoch(
        model, loss, opt, None, it, dev, spec=spec, autocast_dtype=dtype, grad_clip=1.0, max_steps=steps
    )
    out = {
        "video": vid,
        "text": text,
        "clip": [3, frames, size, size],
        "tokens": tokens,
        "batch": batch,
        "precision": "bf16" if dtype else "fp32",
        "steps": st.steps,
        "clips_per_s": round(st.clips_per_s, 1),
        "step_s": round(st.seconds / max(st.steps, 1), 3),
        "data_wait_frac": round(st.data_wait_frac, 4),
    }
    if dev.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model, opt
    return out


@torch.no_grad()
def interpret_check(dev: torch.device, smoke: bool) -> dict:
    frames, size, n_videos = (4, 32, 6) if smoke else (16, 224, 50)
    if smoke:
        enc = create_model("echoprime_tiny", frames=frames, size=size).to(dev).eval()
        views = create_model("tiny_views").to(dev).eval()
    else:
        enc = create_model("echoprime_mvit_v2_s").to(dev).eval()
        views = (
            create_model("echoprime_convnext_base_views").to(dev).eval().to(memory_format=torch.channels_last)
        )
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    study = torch.randn(n_videos, 3, frames, size, size, device=dev)

    def one() -> None:
        with torch.autocast(device_type=dev.type, dtype=dtype, enabled=dev.type == "cuda"):
            emb = enc(study)
            logits = views(
                study[:, :, 0].contiguous(memory_format=torch.channels_last) if not smoke else study[:, :, 0]
            )
        torch.cat([emb.float(), torch.nn.functional.one_hot(logits.argmax(1), 11).float()], 1).cpu()

    one()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    n = 2 if smoke else 10
    t0 = time.perf_counter()
    for _ in range(n):
        one()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / n
    return {
        "videos_per_study": n_videos,
        "s_per_study": round(dt, 4),
        "studies_per_s": round(1 / dt, 2),
        "clips_per_s": round(n_videos / dt, 1),
    }


@torch.no_grad()
def search_check(dev: torch.device, smoke: bool) -> dict:
    res = {}
    for n in (2000,) if smoke else (230_676, 1_230_676):
        bank = torch.nn.functional.normalize(torch.randn(n, 512, device=dev), dim=1)
        q = torch.nn.functional.normalize(torch.randn(15, 512, device=dev), dim=1)
        (q @ bank.T).topk(50, dim=1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            s, i = (q @ bank.T).topk(50, dim=1)
            i.cpu()
        res[str(n)] = {"ms_per_study": round((time.perf_counter() - t0) / 20 * 1000, 3)}
        del bank
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default="bench/out/gpu_check.json")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    info = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = {"info": info}
    for name, fn in (("pretrain", pretrain_check), ("interpret", interpret_check), ("search", search_check)):
        t0 = time.perf_counter()
        try:
            results[name] = fn(dev, a.smoke)
        except Exception as e:  # noqa: BLE001 - a device check reports every part, even after one fails
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(results[name]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
