"""The library half of the probe job (echoprime.eval.probing), without Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from echoprime.eval.probing import count_rows, study_sets, summary_lines, train_targets


def _shard(path, ids, efs):
    labels = [json.dumps({"ejection_fraction": ef}) for ef in efs]
    pq.write_table(pa.table({"study_id": ids, "labels": labels}), path)
    return str(path)


def test_targets_come_from_the_train_labels_and_a_wrong_name_fails(tmp_path):
    files = [
        _shard(tmp_path / f"{i}.parquet", [f"s{i}-{j}" for j in range(6)], range(30, 36)) for i in range(2)
    ]
    assert train_targets(files, "auto") == {"ejection_fraction": "regression", "ef_below_40": "binary"}
    assert train_targets(files, " ejection_fraction, ") == {"ejection_fraction": "regression"}
    with pytest.raises(ValueError, match="no train study is labelled 'LVEF'"):
        train_targets(files, "LVEF")
    assert count_rows({"train": files, "test": files[:1]}) == 18


def test_study_sets_divide_clips_by_split_and_average_per_study():
    cols = {
        "study_id": np.array(["a", "a", "b", "c"]),
        "labels": np.array(['{"x": 1}'] * 4),
        "split": np.array(["train", "train", "val", "test"]),
        "emb": np.array([[0.0], [2.0], [5.0], [7.0]]),
    }
    sets = study_sets(cols)
    assert {s: v.ids for s, v in sets.items()} == {"train": ["a"], "val": ["b"], "test": ["c"]}
    assert sets["train"].x.tolist() == [[1.0]] and sets["train"].clips.tolist() == [2]


def test_summary_prints_each_target_the_head_and_the_report(tmp_path):
    doc = {
        "clips": 9, "studies": {"train": 3, "val": 2, "test": 1}, "embed_s": 1.0, "fit_s": 2.0, "wall_s": 4.0,
        "targets": {
            "ejection_fraction": {
                "computable": True, "kind": "regression", "n_test": 1, "attentive": {"mae": 4.0},
                "linear": {"mae": 5.0, "r2": 0.5}, "knn": {"mae": 6.0}, "mean": {"mae": 7.0},
            },
            "ef_below_40": {"computable": False, "reason": "too few"},
        },
        "head": {"target": "ejection_fraction", "bundle": "B2"},
    }  # fmt: skip
    lines = summary_lines(doc, str(tmp_path))
    assert (
        lines[0] == "probe: 9 clips, studies train/val/test 3/2/1 (embedded in 1.0 s, probes fitted in 2.0 s)"
    )
    assert "MAE attentive 4.00 / linear 5.00 / kNN 6.00 / train mean 7.00" in lines[1]
    assert lines[2].strip() == "ef_below_40              n/a: too few"
    assert lines[3] == "probe: the linear ejection_fraction probe is a head of B2"
    assert lines[4] == f"probe: report in {tmp_path / 'report.md'} (4.0 s)"
