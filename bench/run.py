"""Run the CPU benchmarks one after another (``make bench``); each writes bench/out/NAME.json.

The numbers are summarised by hand in docs/benchmarks.md, next to how each was measured. GPU
checks (bench/gpu_check.py, bench/serve_gpu.py) and the learning sweeps (bench/learning.py,
which needs ingested shards) are run on their own; see their docstrings.

Usage::

    python bench/run.py                 # all of them (about 20-30 minutes on 2 cores)
    python bench/run.py synth retrieval # a selection
    python bench/run.py --list
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "synth": ["synth_speed.py"],
    "preprocess": ["preprocess_speed.py"],
    "retrieval": ["retrieval_speed.py"],
    "batch": ["batch_interpret.py"],
    "serve": ["serve_load.py"],
    "fuzz": ["fuzz_readers.py", "--minutes", "5"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help=f"which to run (default: all of {list(BENCHES)})")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, cmd in BENCHES.items():
            print(f"{name:<11} python bench/{' '.join(cmd)}")
        return 0
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {list(BENCHES)}")
    (HERE / "out").mkdir(exist_ok=True)
    failed = []
    for name in args.names or list(BENCHES):
        cmd = [sys.executable, str(HERE / BENCHES[name][0]), *BENCHES[name][1:]]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
