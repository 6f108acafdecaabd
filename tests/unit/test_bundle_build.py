"""The library halves of fit-mil and build-bank (echoprime.bundle_build), without Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from echoprime.bundle_build.bank import parse_reports, report_extras, summary_lines
from echoprime.bundle_build.mil import bags_from, summary_line
from echoprime.data.stream import stream_reports
from echoprime.reports import default_vocabulary
from echoprime.taxonomy import PHENOTYPE_NAMES


def test_parse_reports_keeps_readable_reports_in_order_and_counts_the_rest():
    reports = stream_reports(range(3), seed=7)
    reports["broken"] = ("not a report the vocabulary knows ~~~", "{}")
    got = parse_reports(reports, default_vocabulary(), "shards")
    assert got.keep == [s for s in reports if s != "broken"]
    assert set(got.triples) == set(got.keep) and all(len(t) for t in got.triples.values())
    assert [s for s, _ in got.unparsed] == ["broken"]


def test_parse_reports_without_one_readable_report_names_the_shards_not_a_study():
    with pytest.raises(ValueError, match="no training report of S could be read") as e:
        parse_reports({"study-123": ("~~~", "{}")}, default_vocabulary(), "S")
    assert "study-123" not in str(e.value)
    with pytest.raises(ValueError, match="first error: no reports"):
        parse_reports({}, default_vocabulary(), "S")


def test_report_extras_are_beyond_the_release_labels():
    report, _ = next(iter(stream_reports([0], seed=3).values()))
    extras = report_extras(report)
    assert extras and not set(extras) & set(PHENOTYPE_NAMES)


def test_bags_group_clips_by_study_in_a_fixed_order():
    cols = {
        "study_id": np.array(["b", "a", "b"]),
        "emb": np.arange(6, dtype=np.float64).reshape(3, 2),
        "view_probs": np.array([[0.1, 0.9], [0.8, 0.2], [0.7, 0.3]]),
    }
    sections = {s: (np.full((15, 2), i, np.float32), np.ones(15, bool)) for i, s in enumerate("ab")}
    bags = bags_from(cols, sections)
    assert [b.study_id for b in bags] == ["a", "b"]
    assert bags[1].video.dtype == np.float32 and bags[1].video.tolist() == [[0, 1], [4, 5]]
    assert bags[1].views.tolist() == [1, 0] and bags[1].views.dtype == np.int64
    assert bags[0].sections[0, 0] == 0 and bags[1].sections[0, 0] == 1
    no_views = bags_from({**cols, "view_probs": np.zeros((3, 0))}, sections)
    assert no_views[1].views.tolist() == [0, 0]


def test_summaries_print_what_the_jobs_printed():
    assert summary_line({"mode": "table", "wall_s": 1.5}) == "fit-mil: mode table, wall_s 1.5"
    res = {
        "bank_reports": 4, "index": "ExactIndex", "unparsed_reports": 0, "thresholds_fitted": 3,
        "threshold_studies": 2, "published": None, "study_id_secret": "one-off",
    }  # fmt: skip
    lines = summary_lines(res, "B")
    assert lines[0].endswith("bundle committed at B") and "one-off" in lines[1]
    assert json.loads(lines[-1]) == res
    site = summary_lines(res | {"study_id_secret": "site", "published": "s3://x"}, "B")
    assert len(site) == 2 and site[0].endswith(", published to s3://x")
