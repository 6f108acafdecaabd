"""CandidateBank: build, save/load round trip (no pickles), lazy reports, labels, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from echoprime import taxonomy
from echoprime.reports import StructuredReport, decode_triples, default_vocabulary
from echoprime.retrieval.bank import CandidateBank, as_section_batch
from echoprime.retrieval.index import build_index
from echoprime.retrieval.synthetic import random_labels, random_report_table, random_unit_embeddings
from echoprime.retrieval.table import ROW_GROUP_ROWS, BankFormatError, ParquetReports, ReportTable

VOCAB = default_vocabulary()
EF = VOCAB.phrases("Left Ventricle").index("LVEF is <numerical>%.")
HYPO = VOCAB.phrases("Resting Segmental Wall Motion Analysis").index("The <string> segments are hypokinetic.")
NORMAL_RV = 0  # first Right Ventricle phrase (no slot)


def _triples() -> list[list[tuple]]:
    """Hand-made reports whose values exercise every stored kind."""
    return [
        [(0, EF, 55), (1, HYPO, "basal inferior"), (2, NORMAL_RV, math.nan)],
        [(0, EF, 57.5), (2, NORMAL_RV, None)],
        [(0, EF, np.float32(61.1)), (0, 0, math.nan), (12, 0, math.nan)],
        [(2, NORMAL_RV, math.nan), (0, EF, np.int64(40)), (2, 1, math.nan)],  # RV split in two runs
    ]


def _same(a: list[tuple], b: list[tuple]) -> bool:
    """Triple lists equal, NaN equal to NaN and kinds (int / float / str / None) kept."""

    def norm(t: tuple) -> tuple:
        v = t[2]
        return (t[0], t[1], "NaN" if isinstance(v, float) and math.isnan(v) else (type(v).__name__, v))

    return [norm(t) for t in a] == [norm(t) for t in b]


def _small_bank() -> CandidateBank:
    emb = random_unit_embeddings(4, 8, np.random.default_rng(0))
    labels = {
        "ejection_fraction": {"s0": 55.0, "s1": 57.5, 2: 61.1},  # key 2 matches study id "2" as a string
        "pericardial_effusion": {"s1": 1, "s3": 0, "not-in-bank": 1},
    }
    return CandidateBank.build(emb, ["s0", "s1", 2, "s3"], _triples(), labels, VOCAB)


def test_build_decodes_like_the_release_decoder():
    bank = _small_bank()
    for i, triples in enumerate(_triples()):
        assert bank.report_text(i) == decode_triples(triples, VOCAB)
    assert "LVEF is 61.1%" in bank.report_text(2)  # numpy float32 keeps its short rendering
    assert "LVEF is 57.5%" in bank.report_text(1) and "LVEF is 55%" in bank.report_text(0)
    assert bank.section_text(0, "Resting Segmental Wall Motion Analysis") == (
        "Resting Segmental Wall Motion Analysis: The basal inferior segments are hypokinetic. [SEP]"
    )
    # The first contiguous run of a section is what a reader of the decoded text meets first.
    assert bank.section_triples(3, "Right Ventricle") == [(2, NORMAL_RV, bank.triples(3)[0][2])]
    with pytest.raises(KeyError, match="no section 'IVC'"):
        bank.section_text(0, "IVC")
    assert isinstance(bank.structured(0), StructuredReport)


def test_presence_and_labels():
    bank = _small_bank()
    want = np.zeros((4, 16), dtype=bool)
    want[0, [0, 1, 2]] = want[1, [0, 2]] = want[2, [0, 12]] = want[3, [0, 2]] = True
    np.testing.assert_array_equal(bank.presence, want)
    assert bank.phenotypes == ("ejection_fraction", "pericardial_effusion")
    np.testing.assert_array_equal(bank.labels[:, 0], np.array([55.0, 57.5, 61.1, np.nan], dtype=np.float32))
    np.testing.assert_array_equal(bank.labels[:, 1], np.array([np.nan, 1, np.nan, 0], dtype=np.float32))
    assert bank.study_id(2) == "2"


def test_duplicate_study_ids_share_labels():
    emb = random_unit_embeddings(3, 8, np.random.default_rng(0))
    bank = CandidateBank.build(emb, ["a", "b", "a"], [[], [], []], {"ejection_fraction": {"a": 30}}, VOCAB)
    np.testing.assert_array_equal(bank.labels[:, 0], [30, np.nan, 30])


def test_save_load_round_trip_without_pickles(tmp_path):
    rng = np.random.default_rng(3)
    n = 2500  # > one Parquet row group
    table = random_report_table(n, VOCAB, rng)
    labels = random_labels(n, rng)
    bank = CandidateBank.build(random_unit_embeddings(n, 16, rng), [f"st{i}" for i in range(n)], table, labels,
                               VOCAB, phenotypes=taxonomy.PHENOTYPE_NAMES)  # fmt: skip
    root = bank.save(tmp_path / "bank")
    with pytest.raises(FileExistsError):
        bank.save(root)
    # Every array reads with allow_pickle=False; nothing pickled anywhere.
    for name in ("embeddings", "study_ids", "presence", "labels"):
        np.load(root / f"{name}.npy", allow_pickle=False)
    assert not list(root.glob("*.pkl")) and not list(root.glob("*.pt"))
    loaded = CandidateBank.load(root)
    assert isinstance(loaded.embeddings, np.memmap)
    assert loaded.embeddings.flags.f_contiguous  # an exact bank is stored column-major for its scan
    assert isinstance(loaded._reports, ParquetReports) and not loaded._reports._cache  # nothing decoded yet
    np.testing.assert_array_equal(loaded.embeddings, bank.embeddings)
    np.testing.assert_array_equal(loaded.labels, bank.labels)
    np.testing.assert_array_equal(loaded.presence, bank.presence)
    assert loaded.phenotypes == bank.phenotypes and loaded.vocab.to_dict() == VOCAB.to_dict()
    for i in (0, 1023, 1024, 2499, 7):
        assert loaded.report_text(i) == bank.report_text(i)
        assert _same(loaded.triples(i), bank.triples(i))
        assert loaded.study_id(i) == f"st{i}"
    shown_groups = {i // ROW_GROUP_ROWS for i in (0, 1023, 1024, 2499, 7)}
    assert set(loaded._reports._cache) == shown_groups  # only the row groups of the candidates shown
    # A loaded bank saves again (reports copied from its Parquet file).
    again = CandidateBank.load(loaded.save(tmp_path / "copy"))
    assert again.report_text(2499) == bank.report_text(2499)


def test_round_trip_keeps_value_kinds(tmp_path):
    bank = _small_bank()
    loaded = CandidateBank.load(bank.save(tmp_path / "b"))
    for i in range(4):
        assert loaded.report_text(i) == bank.report_text(i)
    assert loaded.triples(0)[0] == (0, EF, 55) and isinstance(loaded.triples(0)[0][2], int)
    assert loaded.triples(1)[1][2] is None and math.isnan(loaded.triples(0)[2][2])
    assert loaded.triples(1)[0][2] == 57.5


def test_saved_approximate_index_is_used_after_load(tmp_path):
    rng = np.random.default_rng(4)
    n = 600
    bank = CandidateBank.build(
        random_unit_embeddings(n, 16, rng), list(range(n)), random_report_table(n, VOCAB, rng)
    )
    bank.set_index(
        build_index(bank.embeddings, "ivfpq", nlist=8, nprobe=8, pq_m=16, pq_bits=4, use_gpu=False, rng=rng)
    )
    loaded = CandidateBank.load(bank.save(tmp_path / "b"))
    assert type(loaded.index).__name__ == "IndexIVFPQ"
    assert loaded.embeddings.flags.c_contiguous  # row-major: re-ranking gathers rows
    q = random_unit_embeddings(3, 16, rng)
    np.testing.assert_array_equal(loaded.search(q, 5)[1], bank.search(q, 5)[1])
    with pytest.raises(BankFormatError, match="index holds"):
        bank.set_index(build_index(bank.embeddings[:100], "flat"))


def test_build_rejects_bad_input():
    emb = random_unit_embeddings(2, 8, np.random.default_rng(0))
    with pytest.raises(BankFormatError, match=r"candidate 1, triple 0: \(section 40"):
        CandidateBank.build(emb, ["a", "b"], [[], [(40, 0, None)]], None, VOCAB)
    with pytest.raises(BankFormatError, match=r"candidate 0, triple 1: \(section 0, phrase 999"):
        CandidateBank.build(emb, ["a", "b"], [[(0, 0, None), (0, 999, None)], []], None, VOCAB)
    with pytest.raises(BankFormatError, match="candidate 0, triple 0"):
        CandidateBank.build(emb, ["a", "b"], [[(0, 0)], []], None, VOCAB)
    with pytest.raises(BankFormatError, match="3 reports for 2 embeddings"):
        CandidateBank.build(emb, ["a", "b"], [[], [], []], None, VOCAB)
    with pytest.raises(BankFormatError, match="1 study ids for 2"):
        CandidateBank.build(emb, ["a"], [[], []], None, VOCAB)
    with pytest.raises(
        BankFormatError, match=r"label 'mitral_stenosis' of study 'b' is 2.0; expected 0 or 1"
    ):
        CandidateBank.build(emb, ["a", "b"], [[], []], {"mitral_stenosis": {"b": 2}}, VOCAB)
    with pytest.raises(BankFormatError, match="not a number"):
        CandidateBank.build(emb, ["a", "b"], [[], []], {"ejection_fraction": {"b": "high"}}, VOCAB)
    with pytest.raises(BankFormatError, match="N x P = 2 x 1"):
        CandidateBank.build(emb, ["a", "b"], [[], []], np.zeros((2, 3)), VOCAB, phenotypes=["tavr"])
    bad = emb.copy()
    bad[1, 3] = np.nan
    with pytest.raises(BankFormatError, match="NaN or inf"):
        CandidateBank.build(bad, ["a", "b"], [[], []], None, VOCAB)


def test_load_rejects_broken_banks(tmp_path):
    with pytest.raises(BankFormatError, match="not a candidate bank"):
        CandidateBank.load(tmp_path)
    root = _small_bank().save(tmp_path / "b")
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(BankFormatError, match="version 99"):
        CandidateBank.load(root)
    (root / "manifest.json").write_text(json.dumps(manifest))
    np.save(root / "labels.npy", np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(BankFormatError, match=r"labels.npy.*expected shape \(4, 2\)"):
        CandidateBank.load(root)


def test_section_batch_validation_names_both_shapes():
    with pytest.raises(ValueError, match=r"15 x 8 or B x 15 x 8.*\(15, 7\)"):
        as_section_batch(np.zeros((15, 7)), 8)
    with pytest.raises(ValueError, match=r"\(14, 8\)"):
        as_section_batch(np.zeros((14, 8)), 8)
    emb, batched = as_section_batch(np.zeros((2, 15, 8)), 8)
    assert emb.shape == (2, 15, 8) and batched and emb.dtype == np.float32
    with pytest.raises(ValueError, match="NaN"):
        as_section_batch(np.full((15, 8), np.nan), 8)
    import torch

    tensor = torch.ones(15, 8, requires_grad=True)  # straight from a model: detached here, not by the caller
    emb, batched = as_section_batch(tensor, 8)
    assert emb.shape == (1, 15, 8) and not batched


def test_report_table_from_triples_matches_columns():
    table = ReportTable.from_triples(_triples())
    assert table.offsets.tolist() == [0, 3, 5, 8, 11]
    got = [table.triples(i) for i in range(4)]
    assert _same(got[0], _triples()[0]) and _same(got[1], _triples()[1])
    assert got[2][0] == (0, EF, "61.1")  # numpy float32 kept as its text, so it renders unchanged
    assert got[3][1] == (0, EF, 40) and type(got[3][1][2]) is int
