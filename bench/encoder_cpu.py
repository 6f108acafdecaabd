"""The release-size video encoder (mViT v2 S, 3 x 16 x 224 x 224, 512-d) on CPU: the release's
way (one clip per forward, fp32, eager) against batched and compiled variants, in one
interleaved run, with each variant's largest difference from the release's embedding.

  python bench/encoder_cpu.py [--clips 8] [--rounds 2] [--threads 2] [--variants release,batch4,...]

Variants (random weights, seeded; the same clips for all):

* ``release``: ``model(x[i:i+1])`` per clip under ``torch.no_grad`` (as the published code runs it);
* ``batchN``: ``N`` clips per forward under ``torch.inference_mode`` (the interpreter's path,
  ``interpret.batch_size``);
* ``batchN-cl``: the same with the input and weights in ``channels_last_3d``;
* ``batchN-freeze``: ``torch.jit.trace`` + ``torch.jit.freeze`` (oneDNN folds and fuses), batched;
* ``batchN-bf16``: ``torch.autocast("cpu", torch.bfloat16)``, batched (not within fp32 tolerance:
  its difference is reported, never used unless a site opts in).

Writes ``bench/out/encoder_cpu.json``: per variant the median / min / max seconds per clip over
rounds, the speed-up against ``release`` (median ratio of the rounds' paired times), the max
absolute difference and the smallest cosine of the unit embeddings against ``release``'s, and
the largest relative difference of the raw outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def build(seed: int = 0) -> torch.nn.Module:
    from echoprime.models.video import echoprime_mvit_v2_s

    torch.manual_seed(seed)
    return echoprime_mvit_v2_s().eval()


def run_variant(name: str, model: torch.nn.Module, clips: torch.Tensor, cache: dict) -> torch.Tensor:
    """The embeddings of ``clips`` by variant ``name`` (``cache`` keeps traced models)."""
    if name == "release":
        with torch.no_grad():
            return torch.cat([model(clips[i : i + 1]) for i in range(len(clips))])
    base, _, how = name.partition("-")
    b = int(base.removeprefix("batch"))
    if how == "freeze":
        if name not in cache:
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(model, clips[:b])
                cache[name] = torch.jit.freeze(traced)
        fn = cache[name]
    elif how == "cl":
        if name not in cache:  # a copy of its own: .to(memory_format) converts in place
            cache[name] = build().to(memory_format=torch.channels_last_3d)
        fn = cache[name]
    else:
        fn = model
    outs = []
    with torch.inference_mode():
        for i in range(0, len(clips), b):
            x = clips[i : i + b]
            if how == "cl":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            if how == "bf16":
                with torch.autocast("cpu", torch.bfloat16):
                    outs.append(fn(x).float())
            else:
                outs.append(fn(x))
    return torch.cat(outs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=8, help="clips per timed run (default 8)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument(
        "--variants",
        default="release,batch1,batch2,batch4,batch8,batch4-cl,batch1-freeze,batch1-bf16,batch4-bf16",
        help="comma-separated variants (module docstring)",
    )
    p.add_argument("--out", default="bench/out/encoder_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    model = build()
    torch.manual_seed(1)
    clips = torch.randn(args.clips, 3, 16, 224, 224)
    cache: dict = {}
    emb: dict[str, torch.Tensor] = {}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:  # warm-up (and trace) outside the timed rounds
        run_variant(v, model, clips[:4], cache)
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            t = time.perf_counter()
            emb[v] = run_variant(v, model, clips, cache)
            times[v].append((time.perf_counter() - t) / args.clips)
            print(f"round {r} {v}: {times[v][-1]:.2f} s per clip", flush=True)
    ref = torch.nn.functional.normalize(emb["release"], dim=-1) if "release" in emb else None
    doc = {"clips": args.clips, "rounds": args.rounds, "threads": args.threads, "variants": {}}
    for v in variants:
        d = {
            "s_per_clip_median": statistics.median(times[v]),
            "min": min(times[v]),
            "max": max(times[v]),
        }
        if ref is not None:
            e = torch.nn.functional.normalize(emb[v], dim=-1)
            d["speedup"] = statistics.median(a / b for a, b in zip(times["release"], times[v], strict=True))
            d["max_abs_diff"] = float((e - ref).abs().max())
            d["min_cosine"] = float((e * ref).sum(-1).min())
            d["max_rel_diff_raw"] = float(
                ((emb[v] - emb["release"]).abs() / emb["release"].abs().clamp_min(1e-3)).max()
            )
        doc["variants"][v] = d
        print(v, json.dumps(d))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
