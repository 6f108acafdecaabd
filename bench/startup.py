"""Start-up to ready of a converted published release: each run a fresh process that loads the
bundle (``StudyInterpreter.from_bundle``, every component, hashes verified) and interprets one
study of preprocessed clips; the time to the end of loading and to the first answer, and peak RSS.

  python bench/startup.py --make /tmp/startup-release [--candidates 230676]   # once: a converted stand-in
  python bench/startup.py --bundle /tmp/startup-release/bundle --runs 3

The stand-in release is tests/fixtures_release.py's (the release's formats and real tower shapes,
random weights), converted by ``import_release`` as a user would; without the tokenizer it has no
text encoder (as a user's conversion without BiomedBERT's tokenizer). Pair two checkouts with
farm-bench or run this script from each; docs/benchmarks.md holds the numbers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def make(root: Path, candidates: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from echoprime.release.convert import import_release
    from tests.fixtures_release import make_fake_release

    make_fake_release(root / "release", n_candidates=candidates, text_encoder=False)
    out = import_release(root / "release" / "model_data", root / "release" / "assets", root / "bundle",
                         trust_pickles=True)  # fmt: skip
    print(f"converted stand-in release: {out}")
    return out


def once(bundle: str) -> dict[str, float]:
    t0 = time.perf_counter()
    import torch

    from echoprime.inference import StudyInterpreter

    t_import = time.perf_counter() - t0
    interp = StudyInterpreter.from_bundle(bundle, device="cpu")
    t_load = time.perf_counter() - t0
    s = interp.spec
    torch.manual_seed(0)
    clips = torch.randn(2, 3, s.frames, s.size, s.size)
    interp.interpret(clips)
    return {
        "imports_s": t_import,
        "loaded_s": t_load,
        "first_answer_s": time.perf_counter() - t0,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--make", default=None, help="write a converted stand-in release into this folder")
    p.add_argument("--candidates", type=int, default=230_676, help="its bank size (default 230 676)")
    p.add_argument("--bundle", default=None, help="the bundle to start from")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.make:
        make(Path(args.make), args.candidates)
        return
    if args.once:
        print(json.dumps(once(args.bundle)))
        return
    runs = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, __file__, "--bundle", args.bundle, "--once"], capture_output=True,
                             text=True, check=True)  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(runs[-1], flush=True)
    keys = runs[0].keys()
    print(json.dumps({k: sorted(r[k] for r in runs)[len(runs) // 2] for k in keys}))


if __name__ == "__main__":
    main()
