"""``echoprime finetune``: a head fitted on a label-only cohort through pretraining's Ray Train
path, written into a new bundle that interpretation answers with."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from echoprime.bundle import manifest_sha256, read_manifest
from echoprime.data.shards import ShardError, read_split
from echoprime.inference import StudyInterpreter


@pytest.fixture(scope="module")
def label_only_shards(ray_cluster, test_cfg, tmp_path_factory):
    """A small cohort written as a labels-only archive (no reports), ingested as usual."""
    from ray_jobs.ingest import run_ingest
    from ray_jobs.synth import generate

    cfg = test_cfg.replace(
        seed=23,
        synth={
            **test_cfg.synth.model_dump(),
            "studies": 36,
            "min_videos": 3,
            "max_videos": 4,
            "label_only": True,
        },
    )
    root = tmp_path_factory.mktemp("label-only")
    generate(cfg, root / "cohort", use_ray=True)
    studies = pq.read_table(root / "cohort" / "studies.parquet")
    assert "report" not in studies.column_names
    run_ingest(cfg, str(root / "cohort"), str(root / "shards"), id_map=str(root / "ids.json"))
    return root


def test_finetune_ef_on_label_only_shards_gives_a_bundle_whose_head_interpret_reports(
    test_cfg, label_only_shards, bundle_dir, tmp_path
):
    from ray_jobs.finetune import run_finetune
    from ray_jobs.pretrain import run_pretrain

    shards = str(label_only_shards / "shards")
    t = read_split(shards, "train", columns=["report", "labels"])
    assert set(t.column("report").to_pylist()) == {""}
    labels = json.loads(t.column("labels")[0].as_py())
    assert "ejection_fraction" in labels and "mitral_regurgitation_grade" in labels
    cfg = test_cfg.replace(
        train={
            **test_cfg.train.model_dump(),
            "storage_path": str(tmp_path / "runs"),
            "epochs": 3,
            "batch_size": 8,
            "lr": 3e-3,
            "time_budget_s": None,
        }
    )
    # Pretraining learns from reports: label-only shards are refused before any worker starts.
    with pytest.raises(ShardError, match="no report .*label-only.*echoprime finetune --task"):
        run_pretrain(cfg, shards, str(tmp_path / "nope"))

    sha = manifest_sha256(str(bundle_dir))
    res = run_finetune(cfg, "ef", str(bundle_dir), shards, str(tmp_path / "with-ef"))
    assert res["steps"] == res["planned_steps"] > 0 and res["epochs"] == 3 and res["encoder"] == "frozen"
    assert res["val_studies"] >= 3 and res["train_clips"] > 0
    # The starting head's numbers are logged before the first step and the last epoch's after.
    before, after = res["init_val"]["mae"], res["val"]["mae"]
    assert math.isfinite(before) and math.isfinite(after) and 0 <= after < 40
    man = read_manifest(tmp_path / "with-ef", verify=True)
    assert man["components"]["head:ef"]["task"]["target"] == "ejection_fraction"
    assert manifest_sha256(str(bundle_dir)) == sha  # the starting bundle never changes
    info = json.loads((tmp_path / "with-ef" / "heads" / "ef" / "head.json").read_text())
    assert info["encoder"] == "bundle" and [h["kind"] for h in info["metrics"]["history"]][:2] == [
        "init",
        "epoch",
    ]

    # interpret answers with the head: EF in %, pooled by the left ventricle's attention.
    study = sorted((label_only_shards / "cohort" / "videos").iterdir())[0]
    got = StudyInterpreter.from_bundle(tmp_path / "with-ef", device="cpu").interpret(study)
    ef = got.tasks["ef"]
    assert 0 <= ef["value"] <= 100 and ef["unit"] == "%" and ef["pooled_by"] == "Left Ventricle"
    plain = StudyInterpreter.from_bundle(bundle_dir, device="cpu").interpret(study)
    assert plain.tasks == {} and plain.report == got.report

    # A second run of the same name needs --resume; a finished one is exported again, unchanged.
    with pytest.raises(ValueError, match="already exists.*--resume"):
        run_finetune(cfg, "ef", str(bundle_dir), shards, str(tmp_path / "again"))
    again = run_finetune(cfg, "ef", str(bundle_dir), shards, str(tmp_path / "again"), resume=True)
    assert again["already_finished"] and again["steps"] == res["steps"]
    # Bad requests are refused before training, naming what is wrong.
    with pytest.raises(ValueError, match="unknown task 'ejection'"):
        run_finetune(cfg, "ejection", str(bundle_dir), shards, str(tmp_path / "x"))
    with pytest.raises(ValueError, match="is the bundle it starts from"):
        run_finetune(cfg, "ef", str(bundle_dir), shards, str(bundle_dir))
    # An Impella is rare: a split of this small cohort without one cannot fit or score a binary head.
    with pytest.raises(ValueError, match=r"(train|val) split of .* holds only \{'0': \d+\} for 'impella'"):
        run_finetune(cfg, "impella", str(bundle_dir), shards, str(tmp_path / "y"))


def test_probe_scores_the_frozen_embeddings_and_its_head_answers_in_interpret(
    test_cfg, label_only_shards, bundle_dir, tmp_path
):
    from ray_jobs.probe import run_probe

    shards = str(label_only_shards / "shards")
    doc = run_probe(
        test_cfg, str(bundle_dir), shards, str(tmp_path / "probe"), dataset="echonet-dynamic",
        targets="ejection_fraction,ef_below_40", head_out=str(tmp_path / "with-probe"), n_boot=100,
    )  # fmt: skip
    ef = doc["targets"]["ejection_fraction"]
    assert ef["computable"] and ef["n_test"] == doc["studies"]["test"] >= 3
    for probe in ("attentive", "linear", "knn", "mean"):
        assert ef[probe]["mae_low"] <= ef[probe]["mae"] <= ef[probe]["mae_high"]
    # The attentive probe read the tower's tokens (stored under OUT while it ran, then removed).
    assert len(ef["test"]["attentive"]) == ef["n_test"] and ef["attentive"]["epochs"] >= 20
    assert not list((tmp_path / "probe").glob("tokens-*"))
    assert doc["clips"] > 3 * sum(doc["studies"].values()) - 1  # 3-4 clips per study, every split
    saved = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert saved["targets"]["ejection_fraction"]["linear"]["mae"] == pytest.approx(ef["linear"]["mae"])
    md = (tmp_path / "probe" / "report.md").read_text()
    assert "| ejection_fraction | regression |" in md and "EchoPrime (frozen attentive probe) | 4.87" in md
    assert f"| {ef['n_test']} | {ef['attentive']['mae']:.2f} (" in md
    assert (tmp_path / "probe" / "probe_ejection_fraction.png").is_file()
    # The linear probe as a head: interpretation answers with it, in the unit, pooled by the LV attention.
    study = sorted((label_only_shards / "cohort" / "videos").iterdir())[1]
    got = StudyInterpreter.from_bundle(tmp_path / "with-probe", device="cpu").interpret(study).tasks
    assert (
        0 <= got["ejection_fraction"]["value"] <= 100
        and got["ejection_fraction"]["pooled_by"] == "Left Ventricle"
    )
    with pytest.raises(ValueError, match="no train study is labelled 'IVSd'"):
        run_probe(test_cfg, str(bundle_dir), shards, str(tmp_path / "p2"), targets="IVSd")
    # The transfer protocol fits on one shard set's train and val and scores another's test: with
    # the same set on both sides it must give exactly the numbers of the own-splits protocol.
    again = run_probe(
        test_cfg, str(bundle_dir), shards, str(tmp_path / "p3"), targets="ejection_fraction",
        fit_shards=shards, n_boot=100, attentive=False,
    )  # fmt: skip
    assert again["protocol"].startswith("transfer: fitted on") and doc["protocol"] == "own splits"
    assert again["targets"]["ejection_fraction"]["linear"] == pytest.approx(ef["linear"], rel=1e-6)
    assert "Protocol: transfer" in (tmp_path / "p3" / "report.md").read_text()


def test_probe_of_a_public_dataset_folder_as_published(bundle_dir, tmp_path, capsys):
    """`echoprime probe --dataset NAME --input ROOT`: the dataset's stand-in (its exact layout),
    ingested at the bundle's preprocessing, then probed: the command the issue names."""
    from echoprime.cli import main

    assert (
        main(
            [
                "synth",
                "--as",
                "echonet-dynamic",
                "--studies",
                "40",
                "--out",
                str(tmp_path / "dyn"),
                "--no-ray",
            ]
        )
        == 0
    )
    out = tmp_path / "probe"
    rc = main([
        "probe", "--bundle", str(bundle_dir), "--dataset", "echonet-dynamic", "--input", str(tmp_path / "dyn"),
        "--out", str(out), "--targets", "ejection_fraction", "--bootstrap", "50",
    ])  # fmt: skip
    assert rc == 0
    said = capsys.readouterr().out
    assert "probe: ingested echonet-dynamic" in said and "ejection_fraction        MAE attentive" in said
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["dataset"] == "echonet-dynamic" and sum(doc["studies"].values()) == 40 == doc["clips"]
    assert (out / "shards" / "_manifest.json").is_file() and "EchoNet-Dynamic (supervised" in (
        out / "report.md"
    ).read_text()
