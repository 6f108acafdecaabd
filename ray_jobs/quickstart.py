"""The main job: the whole echoprime pipeline end to end on a local Ray, in minutes.

Starts a local Ray (or joins the one in the config), then runs each stage into its own folder
under --out and records its status, wall time and headline numbers in DIR/summary.json:

  synth/      a synthetic cohort of echo studies (parallel Ray tasks): train/val studies, and
              synth.test_studies (200) test studies from a seed namespace no training step reaches
  shards/     the cohort ingested into Parquet study shards (Ray Data)
  bundle/     the model bundle, stage by stage:
                pretrained/  video-report pretraining (Ray Train; train.num_workers workers)
                views/       the view classifier (Ray Train)
                mil/         the anatomical attention (per-section weights over a study's videos)
                bank/        the candidate report bank, thresholds, and the committed manifest
  interpret/  one held-out study interpreted, next to its true report and labels
  eval/       the bundle evaluated on the test split (metrics.json, report.md, figures)
  serve/      the bundle served as the Ray Serve graph; the same study sent over HTTP

Every later capability of the project joins this job as a stage. With configs/tiny-cpu.yaml
(the default) it runs on a 2-core laptop without a GPU in under 10 minutes.

Example:
  echoprime quickstart --out quickstart-out
  echoprime quickstart --out /tmp/qs synth.studies=120 train.time_budget_s=60
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart-out", help="output folder (default: ./quickstart-out)")
    p.add_argument("--clean", action="store_true", help="delete the output folder first")
    from echoprime.cli import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


def _say(stage: str, text: str) -> None:
    print(f"[{stage}] {text}", flush=True)


def held_out_study(synth_dir: Path) -> tuple[str, list[Path], dict[str, Any]]:
    """The first test-split study of the cohort: (study id, its video files, its row in studies.parquet)."""
    import pyarrow.parquet as pq

    studies = {r["study_id"]: r for r in pq.read_table(synth_dir / "studies.parquet").to_pylist()}
    videos = pq.read_table(synth_dir / "manifest.parquet").to_pylist()
    sid = sorted(s for s, r in studies.items() if r["split"] == "test")[0]
    files = [synth_dir / v["path"] for v in videos if v["study_id"] == sid]
    return sid, files, studies[sid]


def compare_with_truth(result: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """Headline agreement of an interpretation with a synthetic study's true labels."""
    from echoprime.taxonomy import PHENOTYPE_BY_NAME

    labels = json.loads(truth["labels"])
    agree = total = 0
    rows = []
    for name, m in result["metrics"].items():
        t = labels.get(name)
        if t is None or m["value"] is None:
            continue
        if PHENOTYPE_BY_NAME[name].kind == "binary":
            total += 1
            ok = bool(m["decision"]) == bool(t)
            agree += ok
            rows.append(
                (
                    name,
                    f"p={m['value']:.2f} -> {'present' if m['decision'] else 'absent'}",
                    "present" if t else "absent",
                    ok,
                )
            )
        else:
            rows.append((name, f"{m['value']:.1f}", f"{t:.0f}", abs(m["value"] - t)))
    return {"binary_agreement": agree / max(total, 1), "binary_total": total, "rows": rows}


def run_pipeline(cfg: EchoPrimeConfig, out: Path) -> dict:
    """Run every stage under ``out``; returns the summary dict (also in ``out/summary.json``)."""
    from echoprime.runlog import RunSummary
    from ray_jobs import synth as synth_job
    from ray_jobs.build_bank import run_build_bank
    from ray_jobs.common import ray_session
    from ray_jobs.fit_mil import run_fit_mil
    from ray_jobs.ingest import run_ingest
    from ray_jobs.pretrain import run_pretrain
    from ray_jobs.train_views import run_train_views

    summary = RunSummary(out / "summary.json", job="quickstart", config=cfg.name, seed=cfg.seed)
    cfg.save(out)
    synth_dir, shards, bundle = out / "synth", out / "shards", out / "bundle"
    cfg = cfg.replace(train={**cfg.train.model_dump(), "storage_path": str(out / "runs")})
    with ray_session(cfg.ray):
        with summary.stage("synth") as st:
            res = synth_job.generate(cfg, synth_dir, use_ray=True)
            st.record(**{k: v for k, v in res.items() if k != "out"})
            _say(
                "synth",
                f"{res['studies']} studies, {res['videos']} videos, splits {res['splits']} ({res['videos_per_s']} videos/s)",
            )
        with summary.stage("ingest") as st:
            # The cohort is synthetic (no patient behind any id), so its pseudonyms are keyed
            # with a secret made from the seed: the same run gives the same shards, ids included.
            # A real archive's ingest uses $ECHOPRIME_SITE_SECRET or a one-off secret.
            demo = hashlib.sha256(f"echoprime synthetic cohort, seed {cfg.seed}".encode()).digest()
            res = run_ingest(cfg, str(synth_dir), str(shards), secret=(demo, "synthetic-seed"))
            st.record(**{k: v for k, v in res.items() if k != "out"})
            _say(
                "ingest",
                f"rows {res['rows']}, studies {res['studies']}, {res['rejects']} rejected ({res['wall_s']} s)",
            )
        with summary.stage("pretrain") as st:
            res = run_pretrain(cfg, str(shards), str(bundle / "pretrained"))
            st.record(**{k: v for k, v in res.items() if k not in ("out", "run")})
            _say(
                "pretrain",
                f"{res['steps']} steps, loss {res['loss_first']:.2f} -> {res['loss_last']:.2f}; val video->report "
                f"R@1/5/10 {res['val_v2t_r@1']:.2f}/{res['val_v2t_r@5']:.2f}/{res['val_v2t_r@10']:.2f} "
                f"(chance R@10 {res['chance_r@10']:.2f}); {res['clips_per_s']:.0f} clips/s, data wait {100 * res['data_wait_frac']:.0f} %",
            )
        with summary.stage("views") as st:
            res = run_train_views(cfg, str(shards), str(bundle))
            st.record(**res)
            _say(
                "views",
                f"view accuracy {res['val_accuracy']:.3f} on {res['val_clips']} val clips (chance {res['chance']:.3f})",
            )
        with summary.stage("mil") as st:
            embedded: dict = {}
            res = run_fit_mil(cfg, str(shards), str(bundle), keep_embeddings=embedded)
            st.record(**res)
            _say(
                "mil",
                ", ".join(f"{k} {v}" for k, v in res.items() if k.startswith(("val_section", "alignment"))),
            )
        with summary.stage("bank") as st:
            res = run_build_bank(cfg, str(shards), str(bundle), val_embeddings=embedded.get("val"))
            st.record(**res)
            _say(
                "bank",
                f"{res['bank_reports']} reports; thresholds for {res['thresholds_fitted']} phenotypes; bundle committed",
            )
        with summary.stage("interpret") as st:
            from echoprime.inference import StudyInterpreter
            from echoprime.interpret_cli import format_result

            sid, files, truth = held_out_study(synth_dir)
            interp = StudyInterpreter.from_bundle(bundle)
            result = interp.interpret(files).to_dict()
            (out / "interpret").mkdir(exist_ok=True)
            (out / "interpret" / f"{sid}.json").write_text(json.dumps(result, indent=2))
            cmp = compare_with_truth(result, truth)
            st.record(
                study=sid,
                videos=len(files),
                binary_agreement=round(cmp["binary_agreement"], 3),
                ef_pred=result["metrics"]["ejection_fraction"]["value"],
                ef_true=json.loads(truth["labels"])["ejection_fraction"],
            )
            _say("interpret", f"held-out study {sid} ({len(files)} videos):\n{format_result(result)}")
            _say("interpret", f"true report:\n  {truth['report']}")
            _say(
                "interpret",
                "predicted vs true: " + "; ".join(f"{n} {p} vs {t}" for n, p, t, _ in cmp["rows"]),
            )
        with summary.stage("evaluate") as st:
            from ray_jobs.evaluate import run_evaluate

            res = run_evaluate(cfg, str(bundle), str(shards), out / "eval", n_boot=100, draws=1)
            st.record(**{k: v for k, v in res.items() if k != "out" and not isinstance(v, dict | list)})
            _say("evaluate", "\n  ".join(f"{k}: {_fmt(v)}" for k, v in res.items() if k != "out"))
            _say("evaluate", f"report: {out / 'eval' / 'report.md'}")
        with summary.stage("serve") as st:
            from ray_jobs.serve_app import serve_and_query

            t_serve = time.perf_counter()
            answer = serve_and_query(str(bundle), [str(f) for f in files])
            (out / "serve").mkdir(exist_ok=True)
            (out / "serve" / f"{sid}.json").write_text(json.dumps(answer, indent=2))
            same = _same_interpretation(answer, result)
            st.record(
                study=sid,
                http_status=200,
                same_as_in_process=same,
                round_trip_s=round(time.perf_counter() - t_serve, 1),
            )
            _say(
                "serve",
                f"POST /v1/interpret for {sid}: {answer['status']}, report of {len(answer['report'])} sections; "
                f"{'the same' if same else 'NOT the same'} as the in-process interpretation",
            )
            if not same:
                raise RuntimeError("the served graph's answer differs from StudyInterpreter's for " + sid)
    return summary.to_dict()


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _same_interpretation(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-4) -> bool:
    """The served answer and the in-process one agree: report texts, decisions, values to ``tol``."""
    if [r["text"] for r in a["report"]] != [r["text"] for r in b["report"]]:
        return False
    for name, m in b["metrics"].items():
        o = a["metrics"].get(name)
        if o is None or o.get("decision") != m.get("decision"):
            return False
        if (o["value"] is None) != (m["value"] is None):
            return False
        if m["value"] is not None and abs(o["value"] - m["value"]) > tol * max(1.0, abs(m["value"])):
            return False
    return True


def run(args: argparse.Namespace) -> int:
    from echoprime.runlog import ensure_writable_dir
    from ray_jobs.common import resolve_config

    cfg = resolve_config(args)
    out = Path(args.out)
    if args.clean and out.exists():
        shutil.rmtree(out)
    ensure_writable_dir(out)
    t0 = time.perf_counter()
    print(f"echoprime quickstart: config {cfg.name}, output {out.resolve()}", flush=True)
    result = run_pipeline(cfg, out)
    wall = time.perf_counter() - t0
    print(
        f"\nquickstart finished in {wall:.0f} s; status {result['status']}; summary: {out / 'summary.json'}"
    )
    for name, st in result["stages"].items():
        nums = {k: v for k, v in st.items() if k not in ("status", "wall_s")}
        print(f"  {name:<10} {st['status']:<7} {st['wall_s']:>7.1f} s  {json.dumps(nums, default=str)[:160]}")
    return 0 if result["status"] == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["quickstart", *(argv or [])])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
