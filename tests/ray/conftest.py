"""A tiny synthetic cohort, its shards and a pretrained model, made once per test session.

Later stages (views, MIL, bank, interpretation, serving) build on the same artifacts so that the
suite pays for generation, ingestion and pretraining once.
"""

from __future__ import annotations

import logging

import pytest


class _Keep(logging.Handler):
    """Keeps the formatted messages of the records at INFO and above."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="session")
def test_cfg(tiny_cfg):
    """tiny-cpu.yaml scaled to the test cohort: 300 studies of 4-6 videos at 64 px, short training."""
    from echoprime.config import load_config
    from tests.conftest import ROOT

    return load_config(
        ROOT / "configs" / "tiny-cpu.yaml",
        [
            "synth.studies=300",
            "synth.size=64",
            "synth.min_videos=4",
            "synth.max_videos=6",
            "synth.test_studies=0",  # the split's own ~45 test studies: the suite's time stays as it was
            # The suite's shared model: CLIP alone on the stored shards with 2 DDP workers, as its
            # learning bounds were measured; the stream and the label objective have their own test.
            "stream.studies=0",
            "train.num_workers=2",
            "train.cpus_per_worker=1",
            "train.label_weight_video=0",
            "train.label_weight_text=0",
            "model.label_heads=none",
            "train.shift=4",  # on ~200 stored studies the shift keeps CLIP from memorising them
            "stream.bank_studies=40",  # the bank also holds 40 stream reports (rendered: none)
            "stream.probe_studies=30",  # evaluate's probes also fit on 30 rendered studies
            "interpret.k=10",  # a bank of ~280 reports
            "train.batch_size=32",
            "train.epochs=12",
            "train.time_budget_s=90",
            "train.checkpoint_every_steps=1000",
            "views.epochs=4",
        ],
    )


@pytest.fixture(scope="session")
def cohort_dir(ray_cluster, test_cfg, tmp_path_factory):
    from ray_jobs.synth import generate

    out = tmp_path_factory.mktemp("cohort")
    generate(test_cfg, out, use_ray=True)
    return out


@pytest.fixture(scope="session")
def shards_dir(ray_cluster, test_cfg, cohort_dir, tmp_path_factory):
    from ray_jobs.ingest import run_ingest

    out = tmp_path_factory.mktemp("shards")
    # De-identified as by default; the operator's map goes to a folder of its own (never searched
    # by tests/ray/test_privacy.py, which checks that no other file holds an original id).
    run_ingest(
        test_cfg, str(cohort_dir), str(out), id_map=str(tmp_path_factory.mktemp("private") / "ids.json")
    )
    return out


@pytest.fixture(scope="session")
def evaluation(ray_cluster, test_cfg, shards_dir, bundle_dir, tmp_path_factory):
    """``(headline, metrics.json, output folder)`` of `echoprime evaluate` on the session bundle."""
    import json

    from ray_jobs.evaluate import run_evaluate

    out = tmp_path_factory.mktemp("eval")
    res = run_evaluate(test_cfg, str(bundle_dir), str(shards_dir), out, n_boot=100, draws=1)
    print("evaluate headline:", json.dumps(res))
    return res, json.loads((out / "metrics.json").read_text()), out


@pytest.fixture(scope="session")
def pretrained(ray_cluster, test_cfg, shards_dir, tmp_path_factory):
    """(output dir, result dict) of one pretraining run on the test cohort."""
    from ray_jobs.pretrain import run_pretrain

    base = tmp_path_factory.mktemp("pretrain")
    cfg = test_cfg.replace(train={**test_cfg.train.model_dump(), "storage_path": str(base / "runs")})
    res = run_pretrain(cfg, str(shards_dir), str(base / "bundle" / "pretrained"))
    return base / "bundle" / "pretrained", res


@pytest.fixture(scope="session")
def bundle_dir(ray_cluster, test_cfg, shards_dir, pretrained):
    """The committed bundle: pretrained + views + attention + bank (stage results in .stages)."""
    from ray_jobs.build_bank import run_build_bank
    from ray_jobs.fit_mil import run_fit_mil
    from ray_jobs.train_views import run_train_views

    bundle = pretrained[0].parent
    embedded: dict = {}  # as the quickstart does: the bank's thresholds reuse fit-mil's val embeddings
    stages = {
        "views": run_train_views(test_cfg, str(shards_dir), str(bundle)),
        "mil": run_fit_mil(test_cfg, str(shards_dir), str(bundle), keep_embeddings=embedded),
    }
    # The operator's pseudonym map is written beside the bundle, and the driver's log lines at
    # INFO and above are kept for tests/ray/test_privacy.py.
    records = _Keep()
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(records)
    root.setLevel(min(level, logging.INFO))
    try:
        stages["bank"] = run_build_bank(
            test_cfg,
            str(shards_dir),
            str(bundle),
            val_embeddings=embedded.get("val"),
            id_map=str(bundle.parent / "id-map.json"),
        )
    finally:
        root.removeHandler(records)
        root.setLevel(level)
    (bundle.parent / "build-bank.log").write_text("\n".join(records.lines))
    (bundle.parent / "stages.json").write_text(__import__("json").dumps(stages, default=str))
    return bundle
