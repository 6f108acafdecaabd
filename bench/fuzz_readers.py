"""Fuzz the file readers at length: every case must end in a clip or an EchoIOError.

Cases are mutations of real inputs: the hostile corpus (tests/hostile_corpus.py, 92 files in 31
classes, good and bad) and the property tests' seed files (every DICOM encoding read, MP4, AVI),
each with 1-8 random edits (bit flips, interesting 16/32-bit values, inserted, deleted and
spliced runs, truncation, a changed suffix), plus one case in five a DICOM built from random
header values with random pixel bytes. Each goes through ``read_any`` with the interpreter's
limits (``max_frames=32``, the default pixel and byte limits), the way a study's file is read.

Case ``i`` of a run with ``--seed S`` is drawn from ``numpy.random.default_rng([S, i])``:
``--replay S:i`` re-runs exactly that case and prints its outcome and traceback.

Cases run in a worker process. Before each case the worker writes its index to a progress file,
so a worker that dies (a segmentation fault in a decoder: no exception handler catches that)
or a case that runs past ``--case-timeout`` is recorded by the parent with its case id, and a
fresh worker goes on from the next case. Found: any exception other than EchoIOError, crashes,
hangs, cases slower than 2 s, and the case that first pushed the worker's peak RSS up by more
than 256 MB.

Usage::

    python bench/fuzz_readers.py --minutes 5 --seed 17        # -> bench/out/fuzz_readers.json
    python bench/fuzz_readers.py --replay 17:4242             # one case, in this process
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile_bytes import (  # noqa: E402  (the repository root is put on the path first)
    DEFLATED,
    EXPLICIT_LE,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    encapsulated,
    file_meta,
    image_header,
    native_pixels,
)
from tests.hostile_corpus import write_hostile_corpus  # noqa: E402

LIMITS = {"max_frames": 32}  # echoprime.inference.read_study's, with the default pixel/byte limits
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
SUFFIXES = (".dcm", ".mp4", ".avi", ".mov", "", ".txt")
SLOW_S = 2.0
RSS_JUMP_MB = 256


def seed_files(directory: Path) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of every seed: the hostile corpus and the property tests' valid files."""
    from tests.unit.test_io_properties import dicom_seeds, video_seeds

    seeds = [(f.path.name, f.path.read_bytes()) for f in write_hostile_corpus(directory / "corpus")]
    seeds += [(f"seed{i}.dcm", d) for i, d in enumerate(dicom_seeds())]
    seeds += [
        (f"seed{i}{s}", d)
        for i, (d, s) in enumerate(zip(video_seeds(), (".mp4", ".avi", ".mp4"), strict=True))
    ]
    return seeds


def _interesting(rng: np.random.Generator, width: int) -> bytes:
    value = int(rng.choice(INTERESTING)) & ((1 << 8 * width) - 1)
    return struct.pack(f"{'<>'[int(rng.integers(2))]}{'H' if width == 2 else 'I'}", value)


def mutate(rng: np.random.Generator, seeds: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """One case: a seed file with 1-8 random edits, sometimes renamed."""
    name, raw = seeds[int(rng.integers(len(seeds)))]
    data = bytearray(raw)
    for _ in range(int(rng.integers(1, 9))):
        if not data:
            break
        # half the edits in the first KB, where the headers are
        pos = int(rng.integers(min(len(data), 1024))) if rng.random() < 0.5 else int(rng.integers(len(data)))
        kind = int(rng.integers(8))
        if kind == 0:
            data[pos] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            data[pos] = int(rng.integers(256))
        elif kind in (2, 3):
            width = 2 if kind == 2 else 4
            data[pos : pos + width] = _interesting(rng, width)
        elif kind == 4:
            data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        elif kind == 5:
            del data[pos : pos + int(rng.integers(1, 65))]
        elif kind == 6:
            other = seeds[int(rng.integers(len(seeds)))][1]
            if other:
                a = int(rng.integers(len(other)))
                data[pos : pos + 64] = other[a : a + 64]
        else:
            del data[pos:]
    if rng.random() < 0.1:
        name = "case" + SUFFIXES[int(rng.integers(len(SUFFIXES)))]
    return name, bytes(data)


def random_header(rng: np.random.Generator) -> tuple[str, bytes]:
    """One case: a DICOM with random image attributes and random pixel bytes."""
    ts = [EXPLICIT_LE, DEFLATED, JPEG_BASELINE, JPEG_2000_LOSSLESS, "1.2.840.10008.1.2.5"][
        int(rng.integers(5))
    ]

    def pick(values):
        return values[int(rng.integers(len(values)))]

    frames = pick([int(rng.integers(-3, 40)), int(rng.integers(0, 2**31)), "1e3", " 4 ", "x", None])
    header = image_header(
        rows=pick([int(rng.integers(0, 65)), int(rng.integers(0, 65536))]),
        cols=pick([int(rng.integers(0, 65)), int(rng.integers(0, 65536))]),
        frames=frames,
        spp=pick([0, 1, 2, 3, 4, 65535]),
        bits=pick([0, 1, 7, 8, 12, 16, 32, 64, 65535]),
        stored=pick([None, 0, 1, 8, 12, 16, 65]),
        signed=pick([0, 1, 2]),
        photometric=pick(
            ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "XYZ"]
        ),
    )
    payload = rng.integers(0, 256, int(rng.integers(0, 8192)), dtype=np.uint8).tobytes()
    if ts in (JPEG_BASELINE, JPEG_2000_LOSSLESS, "1.2.840.10008.1.2.5"):
        cuts = sorted(int(c) for c in rng.integers(0, len(payload) + 1, int(rng.integers(0, 5))))
        parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        pixels = encapsulated(parts, bot=bool(rng.integers(2)))
    else:
        pixels = native_pixels(payload)
    body = header + pixels
    if ts == DEFLATED:
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = c.compress(body) + c.flush()
    return "header.dcm", file_meta(ts) + body


def make_case(seed: int, i: int, seeds: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    rng = np.random.default_rng([seed, i])
    return random_header(rng) if rng.random() < 0.2 else mutate(rng, seeds)


def run_case(name: str, data: bytes) -> tuple[str, str]:
    """``(outcome, detail)``: ``ok``, an EchoIOError's code, or ``unexpected`` with the traceback."""
    from echoprime.io import EchoIOError, read_any

    try:
        clip = read_any(data, name=name, **LIMITS)
    except EchoIOError as e:
        return e.code, e.reason
    except Exception:  # noqa: BLE001  (what the fuzzer is looking for)
        return "unexpected", traceback.format_exc(limit=8)
    f = clip.frames
    if not (
        f.dtype == np.uint8 and f.ndim == 4 and f.shape[-1] == 3 and 2 <= f.shape[0] <= LIMITS["max_frames"]
    ):
        return "unexpected", f"invalid clip {f.dtype} {f.shape}"
    return "ok", ""


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> int:
    """Run cases from ``--start`` until ``--until`` (epoch seconds); report through files."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    seeds = seed_files(Path(args.tmp))
    progress = os.open(args.progress, os.O_WRONLY | os.O_CREAT)
    counts: Counter[str] = Counter()
    rss0, flagged_rss = _rss_mb(), False
    with open(args.results, "a") as out:

        def emit(**record) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        i = args.start
        while time.time() < args.until:
            os.pwrite(progress, f"{i:>20}".encode(), 0)
            name, data = make_case(args.seed, i, seeds)
            t0 = time.perf_counter()
            outcome, detail = run_case(name, data)
            dt = time.perf_counter() - t0
            counts[outcome] += 1
            if outcome == "unexpected":
                emit(event="unexpected", case=f"{args.seed}:{i}", name=name, detail=detail)
            if dt > SLOW_S:
                emit(event="slow", case=f"{args.seed}:{i}", name=name, seconds=round(dt, 2), outcome=outcome)
            if not flagged_rss and _rss_mb() - rss0 > RSS_JUMP_MB:
                flagged_rss = True
                emit(
                    event="rss_jump",
                    case=f"{args.seed}:{i}",
                    name=name,
                    rss_mb=round(_rss_mb()),
                    outcome=outcome,
                )
            i += 1
            if i % 250 == 0:
                emit(
                    event="progress",
                    next=i,
                    counts=dict(counts),
                    rss_mb=round(_rss_mb()),
                    rss_start_mb=round(rss0),
                )
        emit(event="done", next=i, counts=dict(counts), rss_mb=round(_rss_mb()), rss_start_mb=round(rss0))
    return 0


def parent(args: argparse.Namespace) -> int:
    until = time.time() + args.minutes * 60
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-readers-"))
    progress, results = tmp / "progress", tmp / "results.jsonl"
    start, workers, crashes, hangs = 0, 0, [], []
    while time.time() < until:
        progress.write_text(f"{start:>20}")
        cmd = [sys.executable, __file__, "--worker", "--seed", str(args.seed), "--start", str(start)]
        cmd += [
            "--until",
            str(until),
            "--tmp",
            str(tmp),
            "--progress",
            str(progress),
            "--results",
            str(results),
        ]
        proc = subprocess.Popen(cmd, cwd=ROOT)
        workers += 1
        last, last_change, hung = None, time.time() + 60, False  # 60 s to start (imports, seeds)
        while proc.poll() is None:
            time.sleep(0.5)
            now = int(progress.read_text() or start)
            if now != last:
                last, last_change = now, time.time()
            elif time.time() - last_change > args.case_timeout:
                proc.kill()
                proc.wait()
                hangs.append(f"{args.seed}:{now}")
                hung = True
        if proc.returncode != 0 and not hung:  # a signal (segfault, OOM kill) or an error exit
            crashes.append(
                {"case": f"{args.seed}:{int(progress.read_text())}", "returncode": proc.returncode}
            )
        if results.exists():
            results.rename(tmp / f"results-{workers}.jsonl")
        if proc.returncode == 0:
            break  # the worker ran until the deadline
        start = int(progress.read_text()) + 1
    records = [json.loads(x) for f in sorted(tmp.glob("results-*.jsonl")) for x in f.read_text().splitlines()]
    reports = [r for r in records if r["event"] in ("progress", "done")]
    counts: Counter[str] = Counter()
    for w in sorted(tmp.glob("results-*.jsonl")):  # each worker's last report holds its counts
        mine = [json.loads(x) for x in w.read_text().splitlines()]
        last_report = next((r for r in reversed(mine) if r["event"] in ("progress", "done")), None)
        counts += Counter(last_report["counts"]) if last_report else Counter()
    n = max((r["next"] for r in reports), default=start)  # case ids run: 0 .. n-1
    peak = max((r["rss_mb"] for r in reports), default=0)
    summary = {
        "seed": args.seed,
        "minutes": args.minutes,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "cases": n,
        "cases_per_s": round(n / max(time.perf_counter() - t_start, 1e-9), 1),
        "workers": workers,
        "outcomes": dict(counts.most_common()),  # from each worker's last report (every 250 cases)
        "unexpected": [r for r in records if r["event"] == "unexpected"],
        "crashes": crashes,
        "hangs": hangs,
        "slow": [r for r in records if r["event"] == "slow"],
        "rss_jumps": [r for r in records if r["event"] == "rss_jump"],
        "worker_peak_rss_mb": peak,
        "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "limits": LIMITS,
        "python": sys.version.split()[0],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    short = {k: v for k, v in summary.items() if k not in ("unexpected", "slow")}
    short |= {"unexpected": len(summary["unexpected"]), "slow": len(summary["slow"])}
    print(json.dumps(short))
    return 1 if summary["unexpected"] or crashes or hangs else 0


def replay(spec: str) -> int:
    seed, i = (int(x) for x in spec.split(":"))
    with tempfile.TemporaryDirectory() as tmp:
        name, data = make_case(seed, i, seed_files(Path(tmp)))
    t0 = time.perf_counter()
    outcome, detail = run_case(name, data)
    print(
        f"case {spec}: {name}, {len(data)} bytes -> {outcome} in {time.perf_counter() - t0:.3f} s\n{detail}"
    )
    return 1 if outcome == "unexpected" else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="how long to fuzz (default 5)")
    ap.add_argument(
        "--seed", type=int, default=17, help="run seed: case i is drawn from default_rng([seed, i])"
    )
    ap.add_argument("--case-timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "fuzz_readers.json"))
    ap.add_argument(
        "--replay", metavar="SEED:I", help="re-run one case in this process and print its outcome"
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--start", "--until"):
        ap.add_argument(name, type=float, default=0, help=argparse.SUPPRESS)
    for name in ("--tmp", "--progress", "--results"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    if args.worker:
        args.start = int(args.start)
        return worker(args)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
