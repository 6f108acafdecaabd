"""generate_report against a full-ranking oracle: best candidate having each section, widening, not assessed."""

from __future__ import annotations

import numpy as np
import pytest

from echoprime import taxonomy
from echoprime.reports import StructuredReport, decode_triples, default_vocabulary
from echoprime.retrieval.bank import CandidateBank
from echoprime.retrieval.index import build_index
from echoprime.retrieval.knn import predict_metrics_batch
from echoprime.retrieval.rai import NOT_ASSESSED, generate_report, generate_report_batch, interpret_sections
from echoprime.retrieval.synthetic import random_report_table, random_unit_embeddings

VOCAB = default_vocabulary()
D = 16
RARE = "Aorta"  # held by three candidates only, placed far from the queries
ABSENT = "Pulmonary Veins"  # held by nobody


def _oracle(section_emb: np.ndarray, bank: CandidateBank) -> list[tuple[int | None, str]]:
    """Per MIL section: rank all candidates (float64, ties to the lower row), walk the ranking,
    and take the first whose triples hold a phrase of the section."""
    out = []
    for row, section in enumerate(taxonomy.MIL_SECTIONS):
        col = VOCAB.section_index(section)
        sims = bank.embeddings.astype(np.float64) @ section_emb[row].astype(np.float64)
        for i in sorted(range(len(sims)), key=lambda i: (-sims[i], i)):
            triples = bank.triples(i)
            if any(t[0] == col for t in triples):
                run = []
                for t in triples[[t[0] for t in triples].index(col) :]:
                    if t[0] != col:
                        break
                    run.append(t)
                out.append((i, decode_triples(run, VOCAB)))
                break
        else:
            out.append((None, NOT_ASSESSED.format(section=section)))
    return out


@pytest.fixture(scope="module")
def bank_and_queries() -> tuple[CandidateBank, np.ndarray]:
    rng = np.random.default_rng(21)
    n = 1200
    queries = random_unit_embeddings(4 * 15, D, rng).reshape(4, 15, D)  # 4 studies x 15 sections x D
    table = random_report_table(
        n, VOCAB, rng, min_sections=6, max_sections=14, absent_sections=(RARE, ABSENT)
    )
    reports = [table.triples(i) for i in range(n)]
    emb = random_unit_embeddings(n, D, rng)
    # Three candidates hold the rare section; point them away from every rare-section query.
    rare_col, rare_row = VOCAB.section_index(RARE), taxonomy.MIL_SECTIONS.index(RARE)
    away = -queries[:, rare_row].mean(axis=0)
    for j, i in enumerate((100, 500, 900)):
        v = away + 0.3 * rng.standard_normal(D).astype(np.float32)
        emb[i] = v / np.linalg.norm(v)
        reports[i] = sorted(reports[i] + [(rare_col, j, float("nan"))], key=lambda t: t[0])
    return CandidateBank.build(emb, [f"s{i}" for i in range(n)], reports, None, VOCAB), queries


@pytest.mark.parametrize("top", [1, 5, 50])
def test_generate_report_equals_full_ranking_oracle(bank_and_queries, top):
    bank, queries = bank_and_queries
    for b in range(2):
        report = generate_report(queries[b], bank, top=top)
        want = _oracle(queries[b], bank)
        assert [s.section for s in report] == list(taxonomy.MIL_SECTIONS)
        for choice, (cand, text) in zip(report, want, strict=True):
            assert choice.candidate == cand and choice.text == text, choice.section
        assert report.text == " ".join(text for _, text in want)


def test_widening_finds_the_rare_section_and_reports_its_rank(bank_and_queries):
    bank, queries = bank_and_queries
    rare_row = taxonomy.MIL_SECTIONS.index(RARE)
    q = queries[0, rare_row]
    sims = bank.embeddings.astype(np.float64) @ q
    holders = (100, 500, 900)
    best = max(holders, key=lambda i: sims[i])
    rank = int((sims > sims[best]).sum())
    assert rank > 50  # the first 50 neighbours lack it: K must have doubled past them
    choice = generate_report(queries[0], bank, top=5).section(RARE)
    assert (choice.candidate, choice.rank, choice.study_id) == (best, rank, f"s{best}")
    assert choice.similarity == pytest.approx(sims[best], abs=1e-5)
    # With an approximate index, K doubles first; capped below that rank, the exact pass finds it.
    ivf = CandidateBank.build(
        bank.embeddings, bank.study_ids, [bank.triples(i) for i in range(len(bank))], None, VOCAB
    )
    ivf.set_index(build_index(ivf.embeddings, "ivfpq", nlist=4, nprobe=4, pq_m=16, pq_bits=4, use_gpu=False,
                              rng=np.random.default_rng(0)))  # fmt: skip
    for limit in (16, 4096):
        found = generate_report(queries[0], ivf, top=5, widen_limit=limit).section(RARE)
        assert (found.candidate, found.text) == (best, choice.text)
        assert found.rank == rank if limit == 16 else found.rank is not None


def test_a_section_nobody_has_is_not_assessed_and_terminates(bank_and_queries):
    bank, queries = bank_and_queries
    choice = generate_report(queries[1], bank, top=1).section(ABSENT)
    assert not choice.assessed and choice.text == "Pulmonary Veins: not assessed [SEP]"
    assert choice.candidate is None and choice.similarity is None and choice.triples == ()


def test_structured_form_and_batch(bank_and_queries):
    bank, queries = bank_and_queries
    batch = generate_report_batch(queries, bank, top=8)
    for b in range(4):
        assert batch[b].text == generate_report(queries[b], bank, top=8).text
    structured = batch[0].to_structured()
    assert isinstance(structured, StructuredReport)
    assert ABSENT not in structured.sections and len(structured.sections) == 14
    for choice in batch[0]:
        if choice.assessed:
            assert structured.section_text(choice.section) == choice.text


def test_shared_search_with_predict_metrics(bank_and_queries):
    bank, queries = bank_and_queries
    neighbours = bank.neighbours(queries, 50)
    shared = generate_report_batch(queries, bank, top=50, neighbours=neighbours)
    assert [r.text for r in shared] == [r.text for r in generate_report_batch(queries, bank, top=50)]
    assert predict_metrics_batch(queries, bank, 50, phenotype_sections={}, neighbours=neighbours) == [{}] * 4
    metrics, report = interpret_sections(queries[2], bank, 30, top=8)
    assert metrics == predict_metrics_batch(queries[2:3], bank, 30, phenotype_sections={})[0] == {}
    assert report.text == generate_report(queries[2], bank, top=8).text
    with pytest.raises(ValueError, match="need 4 studies x >= 60"):
        generate_report_batch(queries, bank, top=60, neighbours=neighbours)


def test_bad_input(bank_and_queries):
    bank, queries = bank_and_queries
    for top in (0, -2, 1.5):
        with pytest.raises(ValueError, match="top"):
            generate_report(queries[0], bank, top=top)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"15 x {D}.*\(15, 3\)"):
        generate_report(np.zeros((15, 3), dtype=np.float32), bank)
    with pytest.raises(ValueError, match="generate_report_batch"):
        generate_report(queries, bank)
