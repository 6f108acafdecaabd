"""How fast one study is interpreted against the candidate bank, and how fast the bank starts.

For a 50-video study (15 section embeddings, D = 512) against banks of 230 676 and 1 230 676
candidates (random unit embeddings; random reports with 8-15 of the 16 sections and 1-4
phrases each; random labels with ~30 % missing per phenotype), times per study:

* ``fast``: ``bank.neighbours`` (one batched search, k = 50, all 15 sections) shared by
  ``predict_metrics`` and ``generate_report`` (echoprime.retrieval);
* ``straightforward``: the stated algorithm written the plain way (:class:`Straightforward`),
  on the bank as the release holds it (``N x D`` row-major; also timed on the column-major
  file the fast bank uses, where its matrix-vector products are faster):
  per section a similarity against the whole bank, one section at a time; a top-k per section;
  per-phenotype Python loops over the neighbours with dict look-ups; the report by repeated
  argmax over the whole bank with a header search in the decoded text; every bank report
  decoded at start-up.

It asserts that both give the same outputs: predictions within 1e-4 with NaN in the same
places, the same chosen candidate and text for every section (the data has no phrase naming
another section, so the header search cannot hit the release's defect). A difference counts as
a float tie, not an error, only when the two candidates involved score within 1e-5 of each
other (BLAS matrix-matrix and matrix-vector products round differently).

Start-up: a fresh Python process imports echoprime.retrieval, loads the saved bank
(memory-mapped) and answers a first study; the straightforward start-up is decoding every
report and building the label dicts.

Usage::

    python bench/retrieval_speed.py [--out bench/out/retrieval_speed.json] [--sizes 230676 1230676]
        [--studies 5] [--work DIR] [--ivf]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch  # noqa: F401  (loaded in every interpreter process; the exact search then uses its top-k)

from echoprime import taxonomy
from echoprime.reports import default_vocabulary
from echoprime.retrieval.bank import CandidateBank
from echoprime.retrieval.knn import predict_metrics, release_values
from echoprime.retrieval.rai import NOT_ASSESSED, generate_report
from echoprime.retrieval.synthetic import random_labels, random_report_table, random_unit_embeddings
from echoprime.retrieval.table import ReportTable, decode_value

DIM, K, N_VIDEOS = 512, 50, 50
SEP = "[SEP]"


class Straightforward:
    """The stated algorithm, written the way a first implementation would be."""

    def __init__(self, embeddings: np.ndarray, study_ids: list[str], texts: list[str], labels: np.ndarray,
                 phenotypes: tuple[str, ...]) -> None:  # fmt: skip
        """``texts``: every report decoded (:func:`decode_all`, timed apart); ``labels``: N x P."""
        self.embeddings = embeddings
        self.study_ids = study_ids
        self.texts = texts
        t0 = time.perf_counter()
        self.labels: dict[str, dict[str, float]] = {}
        for j, p in enumerate(phenotypes):
            col = labels[:, j].tolist()
            self.labels[p] = {study_ids[i]: v for i, v in enumerate(col) if not math.isnan(v)}
        self.label_dicts_s = time.perf_counter() - t0

    def predict_metrics(
        self, section_emb: np.ndarray, k: int = K, positional: bool = False
    ) -> dict[str, float]:
        out = {}
        for key_pos, (section, phenos) in enumerate(taxonomy.SECTION_TO_PHENOTYPES.items()):
            row = key_pos if positional else taxonomy.MIL_SECTIONS.index(section)
            sims = self.embeddings @ section_emb[row]
            top = np.argpartition(-sims, k)[:k]
            top = top[np.argsort(-sims[top])]
            for p in phenos:
                vals = []
                for i in top:
                    sid = self.study_ids[i]
                    if sid in self.labels[p]:
                        vals.append(self.labels[p][sid])
                out[p] = sum(vals) / len(vals) if vals else math.nan
        return out

    def generate_report(self, section_emb: np.ndarray) -> list[tuple[int | None, str]]:
        out: list[tuple[int | None, str]] = []
        for row, section in enumerate(taxonomy.MIL_SECTIONS):
            sims = self.embeddings @ section_emb[row]
            header = section + ":"
            chosen: tuple[int | None, str] = (None, NOT_ASSESSED.format(section=section))
            for _ in range(
                len(sims)
            ):  # bounded: the release's loop never ends when no report has the section
                i = int(np.argmax(sims))
                text = self.texts[i]
                start = text.find(header)
                if start >= 0:
                    chosen = (i, text[start : text.index(SEP, start) + len(SEP)])
                    break
                sims[i] = -np.inf
            out.append(chosen)
        return out


def decode_all(table: ReportTable, vocab: Any, chunk: int = 50_000) -> list[str]:
    """Every report's text, decoded the plain way (the release-format rule, written out here)."""
    names = list(vocab.sections)
    phrases = [vocab.phrases(s) for s in names]
    texts: list[str] = []
    n = len(table)
    for a in range(0, n, chunk):  # chunked so Python objects for only one chunk of triples exist at once
        b = min(n, a + chunk)
        t0, t1 = int(table.offsets[a]), int(table.offsets[b])
        sec = table.section[t0:t1].tolist()
        phr = table.phrase[t0:t1].tolist()
        kind = table.kind[t0:t1].tolist()
        num = table.num[t0:t1].tolist()
        txt = table.text.slice(t0, t1 - t0).to_pylist()
        offs = (table.offsets[a : b + 1] - t0).tolist()
        for c in range(b - a):
            text, current = "", None
            for j in range(offs[c], offs[c + 1]):
                if sec[j] != current:
                    if current is not None:
                        text += "[SEP] "
                    text += names[sec[j]] + ": "
                    current = sec[j]
                value = str(decode_value(kind[j], num[j], txt[j]))
                text += phrases[sec[j]][phr[j]].replace("<numerical>", value).replace("<string>", value) + " "
            texts.append(text + "[SEP]")
    return texts


def study_embeddings(rng: np.random.Generator) -> np.ndarray:
    """15 x 512 section embeddings of a 50-video study: normalised weighted sums of its videos."""
    videos = random_unit_embeddings(N_VIDEOS, DIM, rng)
    weights = rng.random((len(taxonomy.MIL_SECTIONS), N_VIDEOS)).astype(np.float32)
    emb = weights @ videos  # 15 x 512
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def make_bank(
    n: int, root: Path, rng: np.random.Generator
) -> tuple[CandidateBank, ReportTable, np.ndarray, float]:
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Written column-major in place: the layout an exact bank is saved in (save() then keeps the file).
    emb = np.lib.format.open_memmap(
        root / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, DIM), fortran_order=True
    )
    random_unit_embeddings(n, DIM, rng, out=emb)
    emb.flush()
    emb = np.load(root / "embeddings.npy", mmap_mode="r")
    table = random_report_table(n, default_vocabulary(), rng)
    labels = random_labels(n, rng)
    bank = CandidateBank.build(emb, np.char.add("study", np.arange(n).astype(str)), table, labels,
                               default_vocabulary(), phenotypes=taxonomy.PHENOTYPE_NAMES)  # fmt: skip
    bank.save(root, overwrite=True)
    return bank, table, labels, time.perf_counter() - t0


_STARTUP = """
import time, json, sys
t0 = time.perf_counter()
import numpy as np
from echoprime.retrieval.bank import CandidateBank
from echoprime.retrieval.knn import predict_metrics
from echoprime.retrieval.rai import generate_report
t1 = time.perf_counter()
bank = CandidateBank.load(sys.argv[1])
t2 = time.perf_counter()
emb = np.load(sys.argv[2])
nb = bank.neighbours(emb, 50)
predict_metrics(emb, bank, 50, neighbours=nb); generate_report(emb, bank, top=50, neighbours=nb)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_study_s": t3 - t2, "load_plus_first_study_s": t3 - t1}))
"""


def fast_startup(root: Path, emb: np.ndarray) -> dict[str, float]:
    path = root / "query.npy"
    np.save(path, emb)
    out = subprocess.run([sys.executable, "-c", _STARTUP, str(root), str(path)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def fast_study(bank: CandidateBank, emb: np.ndarray) -> tuple[dict, Any, dict[str, float]]:
    t0 = time.perf_counter()
    nb = bank.neighbours(emb, K)
    t1 = time.perf_counter()
    metrics = predict_metrics(emb, bank, K, neighbours=nb)
    t2 = time.perf_counter()
    report = generate_report(emb, bank, top=K, neighbours=nb)
    t3 = time.perf_counter()
    return (
        metrics,
        report,
        {"search_s": t1 - t0, "metrics_s": t2 - t1, "report_s": t3 - t2, "total_s": t3 - t0},
    )


def compare_metrics(fast: dict, slow: dict[str, float], emb: np.ndarray, embeddings: np.ndarray,
                    positional: bool = False) -> dict[str, int]:  # fmt: skip
    """Count equal predictions (within 1e-4, NaN alike); a difference must be a float tie at the k-th neighbour."""
    counts = {"equal": 0, "tie": 0}
    values = release_values(fast)
    keys = list(taxonomy.SECTION_TO_PHENOTYPES)
    for p, want in slow.items():
        got = values[p]
        if (math.isnan(got) and math.isnan(want)) or (not math.isnan(got) and abs(got - want) <= 1e-4):
            counts["equal"] += 1
            continue
        section = taxonomy.PHENOTYPE_BY_NAME[p].section
        row = keys.index(section) if positional else taxonomy.MIL_SECTIONS.index(section)
        sims = (embeddings @ emb[row]).astype(np.float64)
        kth = np.sort(sims)[-K - 1 : -K + 1]  # the (k+1)-th and k-th scores
        if abs(kth[1] - kth[0]) > 1e-5:
            raise AssertionError(
                f"{p}: fast {got} vs straightforward {want} and no float tie at the k-th neighbour"
            )
        counts["tie"] += 1
    return counts


def compare_report(
    fast_report: Any, slow_report: list, emb: np.ndarray, embeddings: np.ndarray
) -> dict[str, int]:
    """Count sections with the same candidate and text; a difference must be a float tie between the two."""
    counts = {"equal": 0, "tie": 0}
    for choice, (cand, text) in zip(fast_report, slow_report, strict=True):
        if choice.candidate == cand and choice.text == text:
            counts["equal"] += 1
            continue
        row = taxonomy.MIL_SECTIONS.index(choice.section)
        if (
            cand is None
            or choice.candidate is None
            or abs(float(embeddings[cand] @ emb[row]) - float(embeddings[choice.candidate] @ emb[row])) > 1e-5
        ):
            raise AssertionError(
                f"{choice.section}: fast chose {choice.candidate} {choice.text!r}, straightforward {cand} {text!r}"
            )
        counts["tie"] += 1
    return counts


def _row_major_copy(embeddings: np.ndarray, path: Path) -> np.ndarray:
    """The bank as the release holds it (``N x D`` row-major), for the straightforward path."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=embeddings.shape)
    for start in range(0, embeddings.shape[0], 65_536):
        out[start : start + 65_536] = embeddings[start : start + 65_536]
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def _time_slow(slow: Straightforward, emb: np.ndarray) -> tuple[dict, list, dict[str, float]]:
    t0 = time.perf_counter()
    metrics = slow.predict_metrics(emb)
    t1 = time.perf_counter()
    report = slow.generate_report(emb)
    t2 = time.perf_counter()
    return metrics, report, {"metrics_s": t1 - t0, "report_s": t2 - t1, "total_s": t2 - t0}


def run_size(n: int, studies: int, work: Path, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    root = work / f"bank_{n}"
    bank, table, labels, build_s = make_bank(n, root, rng)
    queries = [study_embeddings(rng) for _ in range(studies)]
    result: dict[str, Any] = {"n": n, "dim": DIM, "k": K, "studies": studies, "build_and_save_s": build_s,
                              "triples": int(table.offsets[-1])}  # fmt: skip
    result["fast_startup"] = fast_startup(root, queries[0])
    t0 = time.perf_counter()
    texts = decode_all(table, bank.vocab)
    decode_s = time.perf_counter() - t0
    study_ids, phenotypes = [str(s) for s in bank.study_ids], bank.phenotypes
    del table, bank  # free the in-memory reports before the straightforward's dicts: bounded peak memory
    gc.collect()
    row_major = _row_major_copy(np.load(root / "embeddings.npy", mmap_mode="r"), work / f"row_major_{n}.npy")
    slow = Straightforward(row_major, study_ids, texts, labels, phenotypes)
    result["straightforward_startup"] = {"decode_all_s": decode_s, "label_dicts_s": slow.label_dicts_s}
    del labels, texts
    bank = CandidateBank.load(root)
    fast_study(bank, queries[0])  # warm: page cache and the reports' first row groups are not what we time
    slow.predict_metrics(queries[0])
    fast_t, slow_t, checks = [], [], {"metrics": {"equal": 0, "tie": 0}, "sections": {"equal": 0, "tie": 0}}
    for emb in queries:
        metrics, report, times = fast_study(bank, emb)
        fast_t.append(times)
        slow_metrics, slow_report, times = _time_slow(slow, emb)
        slow_t.append(times)
        for key, v in compare_metrics(metrics, slow_metrics, emb, bank.embeddings).items():
            checks["metrics"][key] += v
        for key, v in compare_report(report, slow_report, emb, bank.embeddings).items():
            checks["sections"][key] += v
    # The release-compatible positional pairing, checked on every study too.
    checks["positional_metrics"] = {"equal": 0, "tie": 0}
    for emb in queries:
        fast = predict_metrics(emb, bank, K, compat_positional=True)
        for key, v in compare_metrics(fast, slow.predict_metrics(emb, positional=True), emb, bank.embeddings,
                                      positional=True).items():  # fmt: skip
            checks["positional_metrics"][key] += v
    # The same straightforward code on the column-major file (only the layout differs).
    slow.embeddings = bank.embeddings
    slow.predict_metrics(queries[0])
    col_t = [_time_slow(slow, emb)[2] for emb in queries[:2]]
    del row_major, slow.embeddings
    (work / f"row_major_{n}.npy").unlink()
    result["fast_per_study"] = _summary(fast_t)
    result["straightforward_per_study"] = _summary(slow_t)
    result["straightforward_column_major_per_study"] = _summary(col_t)
    result["speedup_median"] = (
        result["straightforward_per_study"]["total_s"]["median"]
        / result["fast_per_study"]["total_s"]["median"]
    )
    result["speedup_vs_column_major_median"] = (
        result["straightforward_column_major_per_study"]["total_s"]["median"]
        / result["fast_per_study"]["total_s"]["median"]
    )
    result["checks"] = checks
    return result


def run_ivf(n: int, work: Path, seed: int) -> dict[str, Any]:
    """Recall@50 of IVF/PQ (re-ranked exactly) against exact search, on the random bank (no
    structure: IVF's worst case) and on clustered data of the same size (closer to real
    report embeddings, which group by finding)."""
    from echoprime.retrieval.index import build_index, search

    rng = np.random.default_rng(seed)
    random_bank = np.load(work / f"bank_{n}" / "embeddings.npy", mmap_mode="r")
    centres = random_unit_embeddings(2000, DIM, rng)
    clustered = (
        centres[rng.integers(0, 2000, size=n)] + rng.standard_normal((n, DIM), dtype=np.float32) * 0.03
    )
    clustered /= np.linalg.norm(clustered, axis=1, keepdims=True)
    out: dict[str, Any] = {"n": n, "nlist": 1024, "pq_m": 64, "pq_bits": 8, "train_size": 50_000, "rerank": 4}
    for name, emb in (("random", random_bank), ("clustered", clustered)):
        if name == "random":
            queries = np.concatenate([study_embeddings(rng) for _ in range(4)])  # 60 x 512
        else:  # a study resembles some bank reports: queries near random bank rows
            near = (
                clustered[rng.choice(n, 60, replace=False)]
                + rng.standard_normal((60, DIM), dtype=np.float32) * 0.03
            )
            queries = near / np.linalg.norm(near, axis=1, keepdims=True)
        t0 = time.perf_counter()
        index = build_index(emb, "ivfpq", nlist=1024, train_size=50_000, use_gpu=False, rng=rng)
        res: dict[str, Any] = {"build_s": time.perf_counter() - t0, "by_nprobe": {}}
        _, exact = search(emb, queries, K)
        for nprobe in (8, 32, 128):
            index.nprobe = nprobe
            t0 = time.perf_counter()
            _, ids = search(index, queries, K, exact=emb)
            dt = (time.perf_counter() - t0) / 4
            recall = float(np.mean([len(set(a) & set(e)) / K for a, e in zip(ids, exact, strict=True)]))
            res["by_nprobe"][nprobe] = {"recall_at_50": recall, "per_15_queries_s": dt}
        out[name] = res
    return out


def _summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {key: {"median": float(np.median([r[key] for r in rows])), "min": float(min(r[key] for r in rows))}
            for key in rows[0]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/out/retrieval_speed.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[230_676, 1_230_676])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument(
        "--work", default=None, help="where the banks are written (default: a temp dir, removed)"
    )
    parser.add_argument("--ivf", action="store_true", help="also measure IVF/PQ recall on the smallest bank")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                               "numpy": np.__version__}, "sizes": {}}  # fmt: skip
        for n in args.sizes:
            results["machine"].setdefault("load_average_at_start", {})[str(n)] = os.getloadavg()
            res = run_size(n, args.studies, work, args.seed)
            results["sizes"][str(n)] = res
            print(json.dumps(res, indent=1), flush=True)
            if args.ivf and n == min(args.sizes):
                results["ivfpq"] = run_ivf(n, work, args.seed)
                print(json.dumps(results["ivfpq"], indent=1), flush=True)
            shutil.rmtree(work / f"bank_{n}")  # free the disk before the next size
        results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for n, res in results["sizes"].items():
        fast = res["fast_per_study"]["total_s"]["median"]
        slow = res["straightforward_per_study"]["total_s"]["median"]
        print(f"N={n}: fast {fast:.3f} s/study, straightforward {slow:.3f} s/study, {slow / fast:.1f}x; "
              f"start-up {res['fast_startup']['load_plus_first_study_s']:.2f} s; checks {res['checks']}")  # fmt: skip
    print(f"peak RSS {results['peak_rss_gb']:.2f} GB -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
