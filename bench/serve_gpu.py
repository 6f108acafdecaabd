"""The Serve graph's GPU work with the release-size models: studies/s for 50-video studies.

What one VideoEncoder and one ViewClassifier replica do per batch, on one GPU: uint8 clips
(16 x 224 x 224 x 3, as Preprocess sends them) copied to the device and normalised there
(``StudyInterpreter.normalise_clips``), mViT v2 S -> unit-norm 512-d embeddings and ConvNeXt-base (first frame) -> view probabilities, exactly as
``Towers.embed`` / ``Towers.classify`` (echoprime.inference) (random weights; float32 as served, and
bf16 autocast for comparison). Swept over the batch size (``user_config.max_batch_size``, in
clips); a 50-video study is 50 clips. Only torch, torchvision and echoprime.models are needed,
so it runs on a GPU machine without Ray.

Usage: python bench/serve_gpu.py [--smoke] [--out results.json]
(--smoke: tiny models on CPU, to check the script before spending device time.)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echoprime.models import create_model  # noqa: E402
from echoprime.preprocess import RELEASE_MEAN, RELEASE_STD, normalise  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16, 25, 50])
    ap.add_argument("--studies", type=int, default=4, help="50-video studies per timing")
    args = ap.parse_args(argv)
    dev = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    frames, size, n_videos = (4, 32, 6) if args.smoke else (16, 224, 50)
    torch.manual_seed(0)
    if args.smoke:
        enc = create_model("echoprime_tiny", frames=frames, size=size).to(dev).eval()
        views = create_model("tiny_views").to(dev).eval()
    else:
        enc = create_model("echoprime_mvit_v2_s").to(dev).eval()
        views = create_model("echoprime_convnext_base_views").to(dev).eval()
    # Preprocess's answer for one study: uint8 clips (the storage form) and full-length clips.
    study = torch.randint(0, 256, (n_videos, frames, size, size, 3), dtype=torch.uint8)
    study = study.pin_memory() if dev.type == "cuda" else study
    out: dict = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "videos_per_study": n_videos,
        "clip": [frames, size, size, 3],
        "clip_dtype_sent": "uint8",
        "runs": [],
    }

    def one_study(batch: int, dtype: torch.dtype | None) -> None:
        for i in range(0, n_videos, batch):
            u8 = study[i : i + batch].to(dev, non_blocking=True)
            x = normalise(u8, RELEASE_MEAN, RELEASE_STD, n_valid=[frames] * u8.shape[0])  # B x 3 x T x S x S
            with torch.autocast(
                device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                F.normalize(enc(x).float(), dim=-1).cpu()
                torch.softmax(views(x).float(), dim=-1).cpu()

    with torch.inference_mode():
        for dtype in (None, torch.bfloat16):
            for batch in args.batches:
                one_study(batch, dtype)  # warm-up (cuDNN algorithm choice for this shape)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                for _ in range(args.studies):
                    one_study(batch, dtype)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                wall = time.perf_counter() - t
                run = {
                    "dtype": "bf16-autocast" if dtype else "float32",
                    "batch_clips": batch,
                    "studies_per_s": round(args.studies / wall, 3),
                    "clips_per_s": round(args.studies * n_videos / wall, 1),
                    "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                    if dev.type == "cuda"
                    else None,
                }
                out["runs"].append(run)
                print(json.dumps(run), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
