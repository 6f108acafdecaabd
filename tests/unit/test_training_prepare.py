"""The driver's checks and summaries around a training run (echoprime.training.prepare and
finish), without Ray: they refuse a bad run before a worker starts and say what a run did."""

from __future__ import annotations

import pytest

from echoprime.training.finish import describe_metrics, history_ends, val_numbers
from echoprime.training.heads import resolve_task
from echoprime.training.prepare import check_clip_shape, parse_unfreeze
from echoprime.training.resume import run_folder
from echoprime.training.rows import check_labelled


def test_unfreeze_takes_a_layer_count_or_all():
    assert parse_unfreeze("all") is None and parse_unfreeze(None) is None
    assert parse_unfreeze("2") == 2 and parse_unfreeze(0) == 0
    for bad in ("-1", "some"):
        with pytest.raises(ValueError, match="--unfreeze takes a number of layers"):
            parse_unfreeze(bad)


def test_a_head_needs_labelled_rows_and_both_classes():
    task = resolve_task("aortic_stenosis")
    check_labelled("sh", task, {"train": (5, {"no": 3, "yes": 2}), "val": (2, {"no": 1, "yes": 1})})
    with pytest.raises(ValueError, match="the val split of sh has no row labelled"):
        check_labelled("sh", task, {"train": (5, {"no": 3, "yes": 2}), "val": (0, {})})
    with pytest.raises(ValueError, match="a binary head needs both classes"):
        check_labelled("sh", task, {"train": (5, {"no": 5})})


def test_clip_shape_and_run_folder_are_checked(tmp_path):
    check_clip_shape("sh", {"frames": 4, "size": 16}, 4, 16)
    with pytest.raises(ValueError, match="hold 4 x 16 px clips but the config asks for data.frames=8"):
        check_clip_shape("sh", {"frames": 4, "size": 16}, 8, 16)
    storage_uri, run_uri = run_folder(str(tmp_path / "runs"), "r", resume=False, rename_hint="--run-name X")
    assert run_uri == str(tmp_path / "runs" / "r") and storage_uri == str(tmp_path / "runs")
    (tmp_path / "runs" / "r").mkdir()
    with pytest.raises(ValueError, match="already exists .* or --run-name X"):
        run_folder(str(tmp_path / "runs"), "r", resume=False, rename_hint="--run-name X")
    assert run_folder(str(tmp_path / "runs"), "r", resume=True, rename_hint="")[1] == run_uri


def test_history_ends_and_metric_lines():
    hist = [
        {"kind": "init", "val_score": 0.5},
        {"kind": "epoch", "loss": 2.0, "val_mae": 9.0},
        {"kind": "resume", "step": 3},
        {"kind": "epoch", "loss": 1.0, "val_mae": 7.5},
    ]
    started, first, last, n = history_ends(hist)
    assert (started["val_score"], first["loss"], last["loss"], n) == (0.5, 2.0, 1.0, 2)
    assert history_ends([]) == ({}, {}, {}, 0)
    assert val_numbers(last) == {"mae": 7.5}
    assert describe_metrics({"mae": 7.5}, "regression", "%") == "MAE 7.50 %"
    assert describe_metrics({"auc": 0.75}, "binary") == "AUC 0.750"
    assert describe_metrics({"accuracy": 0.5, "kappa": 0.25}, "graded") == "accuracy 0.500, kappa 0.25"
    assert describe_metrics({}, "binary") == "n/a"
