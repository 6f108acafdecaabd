"""Anatomical attention: learned gated MIL, the release's table form, and table export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from echoprime.models import create_model
from echoprime.models.mil import SectionAttentionMIL, TableMIL, export_table, table_weights


@pytest.fixture(autouse=True)
def _seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _study_batch(b=3, n=6, d=16):
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(b, n, d, generator=g), dim=-1)
    views = torch.randint(0, 11, (b, n), generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    if b >= 3:
        mask[1, 4:] = False
        mask[2, 1:] = False
    return emb, views, mask


def test_attention_shapes_softmax_and_padding():
    mil = create_model("section_attention_mil", embed_dim=16, hidden=8).eval()
    emb, views, mask = _study_batch()
    out = mil(emb, views, mask)
    w, s = out["weights"], out["section_embeddings"]
    assert w.shape == (3, 15, 6) and s.shape == (3, 15, 16)
    assert torch.allclose(w.sum(-1), torch.ones(3, 15))
    assert (w[1, :, 4:] == 0).all() and (w[2, :, 1:] == 0).all()
    assert torch.allclose(s.norm(dim=-1), torch.ones(3, 15), atol=1e-5)
    # one valid video: every section embedding is that video
    assert torch.allclose(s[2], emb[2, 0].expand(15, -1), atol=1e-5)
    # what sits in padding (embedding and view id) never matters
    emb2, views2 = emb.clone(), views.clone()
    emb2[1, 4:] = 100.0
    views2[1, 4:] = -1
    assert torch.allclose(mil(emb2, views2, mask)["section_embeddings"], s, atol=1e-6)


def test_attention_is_permutation_equivariant_and_view_conditioned():
    mil = SectionAttentionMIL(embed_dim=16, hidden=8).eval()
    emb, views, _ = _study_batch(b=1)
    out = mil(emb[0], views[0])  # one study, no batch dim
    perm = torch.randperm(6)
    out_p = mil(emb[0, perm], views[0, perm])
    assert torch.allclose(out_p["weights"], out["weights"][:, perm], atol=1e-6)
    assert torch.allclose(out_p["section_embeddings"], out["section_embeddings"], atol=1e-5)
    other = mil(emb[0], (views[0] + 1) % 11)
    assert not torch.allclose(other["weights"], out["weights"])


def test_attention_rejects_empty_studies_and_bad_views():
    mil = SectionAttentionMIL(embed_dim=16, hidden=8)
    emb, views, mask = _study_batch()
    mask[0] = False
    with pytest.raises(ValueError, match=r"studies \[0\].*no valid video"):
        mil(emb, views, mask)
    with pytest.raises(ValueError, match=r"view ids must lie in \[0, 11\)"):
        mil(emb, torch.full_like(views, 11))
    with pytest.raises(ValueError, match="width 16, the module expects 32"):
        SectionAttentionMIL(embed_dim=32)(emb, views)


def test_table_form_matches_the_release_formula():
    g = torch.Generator().manual_seed(3)
    table = torch.rand(15, 11, generator=g)
    emb, views, _ = _study_batch(b=1, n=5)
    emb, views = emb[0], views[0]
    w = table_weights(table, views)
    assert w.shape == (15, 5)
    expected = torch.stack(
        [F.normalize(sum(table[s, int(views[i])] * emb[i] for i in range(5)), dim=0) for s in range(15)]
    )
    out = TableMIL(table)(emb, views)
    assert torch.allclose(out["weights"], w) and torch.allclose(
        out["section_embeddings"], expected, atol=1e-6
    )
    # batched, with padding that must not contribute
    embb, viewsb, maskb = _study_batch(b=3, n=6)
    outb = TableMIL(table)(embb, viewsb, maskb)
    for b in range(3):
        n = int(maskb[b].sum())
        single = TableMIL(table)(embb[b, :n], viewsb[b, :n])
        assert torch.allclose(outb["section_embeddings"][b], single["section_embeddings"], atol=1e-6)
    assert table_weights(table, viewsb).shape == (3, 15, 6)
    with pytest.raises(ValueError, match="view ids"):
        table_weights(table, torch.tensor([11]))


def test_export_table_recovers_view_preferences():
    mil = SectionAttentionMIL(embed_dim=16, hidden=8).eval()
    with torch.no_grad():
        # make the scores depend on the view only: zero the embedding columns
        mil.attention_v.weight[:, :16] = 0
        mil.attention_u.weight[:, :16] = 0
    g = torch.Generator().manual_seed(1)
    # every study shows views 0..9 once, in its own order; view 10 is never seen
    views = torch.stack([torch.randperm(10, generator=g) for _ in range(4)])
    emb = F.normalize(torch.randn(4, 10, 16, generator=g), dim=-1)
    table = export_table(mil, [(emb[:2], views[:2], None), (emb[2:], views[2:], None)])
    assert table.shape == (15, 11)
    assert (table[:, 10] == 0).all()
    with torch.no_grad():
        z = torch.cat([torch.zeros(10, 16), F.one_hot(torch.arange(10), 11).float()], dim=1)
        h = torch.tanh(mil.attention_v(z)) * torch.sigmoid(mil.attention_u(z))
        score = mil.score(h).T  # 15 x 10
    # same views in every study: relative weight ~ exp(score), so row-normalised = exp(score - row max)
    expected = torch.exp(score - score.max(dim=1, keepdim=True).values)
    assert torch.allclose(table[:, :10], expected, atol=1e-5)


def _bags(n_studies=80, d=16, seed=0):
    """Studies of 3-7 videos of distinct views; section s's text is the video of view s % 11
    (absent when the study lacks that view), so the right table is one view per section."""
    import numpy as np

    from echoprime.training.mil_fit import StudyBag

    rng = np.random.default_rng(seed)
    bags = []
    for i in range(n_studies):
        n = int(rng.integers(3, 8))
        views = rng.choice(11, size=n, replace=False)
        video = rng.standard_normal((n, d)).astype(np.float32)
        video /= np.linalg.norm(video, axis=1, keepdims=True)
        sections = np.zeros((15, d), np.float32)
        present = np.zeros(15, bool)
        for s in range(15):
            hit = np.flatnonzero(views == s % 11)
            if hit.size:
                sections[s], present[s] = video[hit[0]], True
        bags.append(StudyBag(f"s{i}", video, views.astype(np.int64), sections, present))
    return bags


def test_fit_mil_learns_which_view_shows_each_section_and_repeats_for_a_seed():
    from echoprime.training.mil_fit import fit_mil, section_retrieval

    bags = _bags()
    runs = []
    for _ in range(2):
        mil = create_model("view_table_mil")
        history = fit_mil(mil, bags, epochs=15, lr=0.05, batch_size=16, seed=3)
        runs.append((history, mil.table().clone()))
    (history, table), (history2, table2) = runs
    assert history == history2 and torch.equal(table, table2)  # same seed, same fit
    assert history[-1] < history[0]
    assert (table.argmax(dim=1) == torch.arange(15) % 11).all()
    assert section_retrieval(mil, _bags(40, seed=1))["r@1"] > 0.9  # held-out studies
