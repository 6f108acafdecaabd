"""Fine-tuning heads (echoprime.training.heads): tasks and targets, the loss and the metrics, the
training loop without text, and a bundle with a head that interpretation answers with."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from echoprime.bundle import manifest_sha256, read_manifest
from echoprime.inference import StudyInterpreter, load_bundle_parts
from echoprime.taxonomy import MIL_SECTIONS, VIEWS
from echoprime.training.finetune import freeze_layers
from echoprime.training.heads import (
    Task,
    TaskLoss,
    TaskModel,
    answer,
    head_tasks,
    pool_study,
    resolve_task,
    task_metrics,
    task_targets,
    write_bundle_with_head,
)
from echoprime.training.loop import train_one_epoch
from tests.fixtures_bundle import make_random_bundle


def test_task_names():
    ef = resolve_task("ef")
    assert (ef.kind, ef.target, ef.centre, ef.scale, ef.unit, ef.section) == (
        "regression", "ejection_fraction", 50.0, 15.0, "%", "Left Ventricle",
    )  # fmt: skip
    assert resolve_task("pasp").target == "pulmonary_artery_pressure_continuous"
    assert resolve_task("heart_rate").kind == "regression"
    a = resolve_task("aortic_stenosis")
    assert (a.kind, a.outputs, a.section) == ("binary", 1, "Aortic Valve")
    g = resolve_task("mitral_regurgitation:grade")
    assert g.kind == "graded" and g.classes == ("none", "trace", "mild", "moderate", "severe")
    assert g.folder == "mitral_regurgitation-grade" and g.outputs == 5
    v = resolve_task("views")
    assert v.classes == VIEWS and v.section is None
    assert Task.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    for bad in ("ejection", "impella:grade", "views:grade", ""):
        with pytest.raises(ValueError, match="unknown task .*known tasks: .*ef"):
            resolve_task(bad)


def test_targets_from_labels_reports_and_views():
    ef = resolve_task("ef")
    cells = [json.dumps({"ejection_fraction": 65.0}), json.dumps({"ejection_fraction": None}), None]
    y = task_targets(ef, cells, [None] * 3, [""] * 3)
    assert y.shape == (3, 1) and y[0, 0] == pytest.approx(1.0) and np.isnan(y[1:, 0]).all()
    with pytest.raises(ValueError, match=r"row 0: ejection_fraction = 140.0 is outside 0.0-100.0"):
        task_targets(ef, [json.dumps({"ejection_fraction": 140.0})], [None], [""])
    b = resolve_task("aortic_stenosis")
    assert task_targets(b, [json.dumps({"aortic_stenosis": 1})], [None], [""])[0, 0] == 1.0
    with pytest.raises(ValueError, match="a binary label is 0 or 1"):
        task_targets(b, [json.dumps({"aortic_stenosis": 0.5})], [None], [""])
    # A grade from the labels (a label-only archive), else from the report's words.
    g = resolve_task("mitral_regurgitation:grade")
    report = "MITRAL VALVE: Moderate mitral regurgitation."
    y = task_targets(
        g, [json.dumps({"mitral_regurgitation_grade": 4}), "{}", "{}"], [None] * 3, ["", report, ""]
    )
    assert y[0, 0] == 4 and y[1, 0] == 3 and np.isnan(y[2, 0])
    with pytest.raises(ValueError, match=r"row 0: mitral_regurgitation_grade = 7.0 is not a grade index 0-4"):
        task_targets(g, [json.dumps({"mitral_regurgitation_grade": 7})], [None], [""])
    v = resolve_task("views")
    y = task_targets(v, ["{}"] * 3, ["A4C", None, "Subcostal"], [""] * 3)
    assert y[0, 0] == VIEWS.index("A4C") and np.isnan(y[1, 0]) and y[2, 0] == VIEWS.index("Subcostal")
    with pytest.raises(ValueError, match="row 0: unknown view 'sideways'"):
        task_targets(v, ["{}"], ["sideways"], [""])


def test_loss_ignores_rows_without_a_target():
    z = torch.tensor([[0.5], [2.0], [-1.0]], requires_grad=True)
    y = torch.tensor([[1.0], [float("nan")], [0.0]])
    got = TaskLoss(resolve_task("ef"))(task_logits=z, labels=y)["task_loss"]
    assert got.item() == pytest.approx(((0.5 - 1.0) ** 2 + 1.0) / 2)
    got = TaskLoss(resolve_task("aortic_stenosis"))(task_logits=z, labels=y)["task_loss"]
    assert got.item() == pytest.approx(F.binary_cross_entropy_with_logits(z[[0, 2], 0], y[[0, 2], 0]).item())
    zz = torch.randn(3, 5, requires_grad=True)
    g = TaskLoss(resolve_task("mitral_regurgitation:grade"))(
        task_logits=zz, labels=torch.tensor([[4.0], [0], [float("nan")]])
    )
    assert g["task_loss"].item() == pytest.approx(F.cross_entropy(zz[:2], torch.tensor([4, 0])).item())
    none = TaskLoss(resolve_task("ef"))(task_logits=z, labels=torch.full((3, 1), float("nan")))["task_loss"]
    none.backward()  # a batch without labels still reaches every parameter (DDP), with zero gradient
    assert none.item() == 0 and torch.equal(z.grad, torch.zeros_like(z))


def test_metrics_are_per_study_in_the_task_unit():
    ef = resolve_task("ef")
    # two studies of two clips: mean logits 1.0 and -1.0 against 1.0 and 0.0: errors 0 and 15 points
    logits = np.array([[0.8], [1.2], [-1.0], [-1.0]])
    targets = np.array([1.0, 1.0, 0.0, 0.0])
    m = task_metrics(ef, logits, targets, np.array([7, 7, 9, 9]))
    assert m["n"] == 2 and m["mae"] == pytest.approx(7.5) and m["score"] == pytest.approx(-7.5)
    b = resolve_task("aortic_stenosis")
    m = task_metrics(b, np.array([[2.0], [-1.0], [0.5]]), np.array([1.0, 0.0, 0.0]), np.arange(3))
    assert m["auc"] == 1.0 and m["n"] == 3
    assert math.isnan(task_metrics(b, np.zeros((2, 1)), np.ones(2), np.arange(2))["auc"])
    g = resolve_task("mitral_regurgitation:grade")
    z = np.eye(5)[[0, 1, 3, 3]]
    m = task_metrics(g, z, np.array([0, 1, 3, 4.0]), np.arange(4))
    assert m["accuracy"] == 0.75 and 0 < m["kappa"] < 1
    v = resolve_task("views")
    m = task_metrics(v, np.eye(11)[[2, 2, 5]], np.array([2, 2, 4.0]), np.array([1, 1, 1]))  # per clip
    assert m["n"] == 3 and m["accuracy"] == pytest.approx(2 / 3)


def test_pooling_with_attention_equals_the_head_on_the_section_embedding():
    """For a linear head the attention-weighted mean of the clips' outputs is the head applied to
    the section's embedding (the weighted mean of the clips' embeddings)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 1)
    emb = F.normalize(torch.randn(5, 8), dim=-1)
    weights = torch.softmax(torch.randn(len(MIL_SECTIONS), 5), dim=1).numpy()
    s = MIL_SECTIONS.index("Left Ventricle")
    with torch.no_grad():
        clip_logits = head(emb).numpy()
        section = head(torch.tensor(weights[s], dtype=torch.float32) @ emb).numpy()
    pooled = pool_study(resolve_task("ef"), clip_logits, weights)
    np.testing.assert_allclose(pooled, section, rtol=1e-5, atol=1e-6)
    assert answer(resolve_task("ef"), pooled)["value"] == pytest.approx(section[0] * 15 + 50, rel=1e-5)
    np.testing.assert_allclose(
        pool_study(resolve_task("ef"), clip_logits, None), clip_logits.mean(0), rtol=1e-6
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("heads") / "bundle", n_bank=40)


def _batches(n_batches, spec, seed=0):
    """Clips whose brightness says the target: the head can learn it from any tower."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_batches):
        y = torch.randint(0, 2, (8,), generator=g).float()
        base = (40 + 160 * y).to(torch.uint8)
        clip = base[:, None, None, None, None].expand(8, spec.frames, spec.size, spec.size, 3).contiguous()
        out.append({"clip": clip, "study_idx": torch.arange(8) + 8 * i, "labels": y[:, None]})
    return out


def test_training_loop_fits_a_head_with_the_tower_frozen_or_tuned(bundle):
    parts = load_bundle_parts(str(bundle), components=["video_encoder"])
    spec = parts.spec.to_dict()
    for unfreeze in (0, None):
        torch.manual_seed(0)
        enc = load_bundle_parts(str(bundle), components=["video_encoder"]).video_encoder
        model = TaskModel(enc, resolve_task("aortic_stenosis"), 512)
        kept = freeze_layers(model.video_encoder, unfreeze)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        loss_fn = TaskLoss(model.task)
        first = train_one_epoch(model, loss_fn, opt, None, _batches(3, parts.spec), "cpu", spec=spec)
        for _ in range(4):
            last = train_one_epoch(model, loss_fn, opt, None, _batches(3, parts.spec), "cpu", spec=spec)
        assert last.loss < first.loss and first.steps == 3
        after = model.state_dict()
        tower_changed = any(
            not torch.equal(before[k], after[k]) for k in before if k.startswith("video_encoder.")
        )
        assert not torch.equal(before["head.weight"], after["head.weight"])
        assert tower_changed == (unfreeze is None) and (kept == 0) == (unfreeze == 0)


def _fitted(bundle, task_name, seed=1, tune=False):
    enc = load_bundle_parts(str(bundle), components=["video_encoder"]).video_encoder
    torch.manual_seed(seed)
    model = TaskModel(enc, resolve_task(task_name), 512)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
        if tune:  # a tuned tower: any change of its weights
            for p in model.video_encoder.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model


def test_a_bundle_with_heads_answers_in_interpretation(bundle, tmp_path):
    sha = manifest_sha256(str(bundle))
    ef = _fitted(bundle, "ef")
    one = write_bundle_with_head(
        bundle, str(tmp_path / "b1"), ef, encoder_trained=False, metrics={"mae": 5.0}
    )
    grade = _fitted(bundle, "mitral_regurgitation:grade", seed=2, tune=True)
    two = write_bundle_with_head(one, str(tmp_path / "b2"), grade, encoder_trained=True, metrics={})
    views = _fitted(bundle, "views", seed=3)
    three = write_bundle_with_head(two, str(tmp_path / "b3"), views, encoder_trained=False, metrics={})
    assert manifest_sha256(str(bundle)) == sha  # the bundle it started from never changes
    man = read_manifest(tmp_path / "b3", verify=True)
    assert [t.name for t in head_tasks(man)] == ["ef", "mitral_regurgitation:grade", "views"]
    assert (tmp_path / "b3" / "heads" / "mitral_regurgitation-grade" / "encoder.safetensors").is_file()
    assert not (tmp_path / "b3" / "heads" / "ef" / "encoder.safetensors").exists()
    assert json.loads((tmp_path / "b3" / "heads" / "ef" / "head.json").read_text())["metrics"] == {"mae": 5.0}

    interp = StudyInterpreter.from_bundle(three, device="cpu")
    plain = StudyInterpreter.from_bundle(bundle, device="cpu")
    torch.manual_seed(5)
    clips = torch.randn(4, 3, interp.spec.frames, interp.spec.size, interp.spec.size)
    res = interp.interpret(clips)
    base = plain.interpret(clips)
    assert (
        base.tasks == {} and res.report == base.report and res.metrics == base.metrics
    )  # retrieval as it was
    assert set(res.tasks) == {"ef", "mitral_regurgitation:grade", "views"}
    # By hand: the bundle's embeddings (or the tuned tower's), the head, the LV section's weights.
    emb, probs = plain.embed_and_classify(clips)
    _, weights = plain.attend(emb, probs.argmax(1))
    with torch.no_grad():
        z = ef.head(emb).numpy()
        want = answer(ef.task, pool_study(ef.task, z, weights))["value"]
        zg = grade.head(F.normalize(grade.video_encoder(clips), dim=-1)).numpy()
        zv = views.head(emb).numpy()
    got = res.tasks["ef"]
    assert (
        got["value"] == pytest.approx(want, rel=1e-4)
        and got["unit"] == "%"
        and got["pooled_by"] == "Left Ventricle"
    )
    g = res.tasks["mitral_regurgitation:grade"]
    want_g = answer(grade.task, pool_study(grade.task, zg, weights))
    assert g["grade"] == want_g["grade"] and sum(g["probabilities"].values()) == pytest.approx(1.0)
    for k, p in want_g["probabilities"].items():
        assert g["probabilities"][k] == pytest.approx(p, abs=1e-4)
    assert [v["view"] for v in res.tasks["views"]["videos"]] == [VIEWS[int(i)] for i in zv.argmax(1)]
    # the uint8 path (Serve, batch) gives the same answers
    u8 = np.clip(
        torch.rand(3, interp.spec.frames, interp.spec.size, interp.spec.size, 3).numpy() * 255, 0, 255
    ).astype(np.uint8)
    n_valid = np.full(3, interp.spec.frames)
    from echoprime.inference import StudyClips
    from echoprime.io.types import FileReport

    files = [FileReport(f"v{i}.mp4", "used") for i in range(3)]
    a = interp.interpret(StudyClips(u8, n_valid, files))
    b = interp.interpret(interp.normalise_clips(u8, n_valid))
    assert a.tasks["ef"]["value"] == pytest.approx(b.tasks["ef"]["value"], rel=1e-5)
    assert a.tasks["views"]["videos"][0]["file"] == "v0.mp4"
    from echoprime.batch_interpret import result_row
    from echoprime.interpret_cli import format_result

    assert json.loads(result_row("s1", a, files)["tasks"]) == a.to_dict()["tasks"]  # batch-interpret's column

    text = format_result(res.to_dict())
    assert "fine-tuned heads:" in text and "% (pooled by the Left Ventricle attention)" in text
    # the result validates against the HTTP schema
    from echoprime.api.schemas import StudyResultModel

    StudyResultModel.model_validate(res.to_dict())
    assert StudyResultModel.model_validate(base.to_dict()).tasks == {}


def test_refitting_a_task_replaces_its_head(bundle, tmp_path):
    one = write_bundle_with_head(
        bundle, str(tmp_path / "a"), _fitted(bundle, "ef", 1), encoder_trained=False, metrics={}
    )
    again = write_bundle_with_head(
        one, str(tmp_path / "b"), _fitted(bundle, "ef", 2), encoder_trained=False, metrics={}
    )
    parts = load_bundle_parts(again, components=["heads"])
    assert [h.task.name for h in parts.heads] == ["ef"]
    assert not torch.equal(
        parts.heads[0].linear.weight, load_bundle_parts(one, components=["heads"]).heads[0].linear.weight
    )
