"""The frozen attentive probe (echoprime.eval.attentive_probe) and the towers' tokens it reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from echoprime.eval import attentive_probe as ap
from echoprime.eval import dataset_probe as dp
from echoprime.models.video import echoprime_mvit_tiny, echoprime_tiny


def test_the_towers_tokens_are_what_their_embedding_is_made_of():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 32, 32)
    mvit = echoprime_mvit_tiny(embed_dim=16).eval()
    with torch.no_grad():
        tok = mvit.forward_tokens(x)
        emb, tok2 = mvit.forward_with_tokens(x)
        assert tok.shape == (2, 1 + 2 * 4 * 4, 64)  # the class token, then a 2 x 4 x 4 grid
        torch.testing.assert_close(tok[:, 0], mvit.forward_features(x))
        torch.testing.assert_close(emb, mvit(x))
        torch.testing.assert_close(tok2, tok)
    conv = echoprime_tiny(embed_dim=16, frames=16, size=32, width=4).eval()
    x = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        emb, tok = conv.forward_with_tokens(x)
        assert tok.shape == (2, 4 * 4 * 4, 24)  # one token per cell of the last 4 x 4 x 4 map
        torch.testing.assert_close(tok.mean(1), conv.forward_features(x))  # pool="avg": their mean
        torch.testing.assert_close(emb, conv(x))
        torch.testing.assert_close(conv.forward_tokens(x), tok)


def _hidden_token_split(rng, n_studies, clips=2, length=16, dim=8):
    """Clips whose label sits in one token at a random place, marked by channel 1; every other
    token is noise. The tokens' mean holds the label diluted 16-fold in noise; attention finds it."""
    tokens, ids, labels = [], [], []
    for i in range(n_studies):
        y = float(rng.normal())
        for _ in range(clips):
            t = rng.normal(0, 1, (length, dim))
            t[:, 1] = -2.0
            j = rng.integers(length)
            t[j, 0], t[j, 1] = 2 * y, 2.0
            tokens.append(t)
            ids.append(f"s{i:03d}")
            labels.append(json.dumps({"score": 50 + 10 * y}))
    return np.array(tokens, np.float16), ids, labels


def test_the_attentive_probe_finds_what_the_pooled_embedding_dilutes():
    rng = np.random.default_rng(0)
    parts = {s: _hidden_token_split(rng, n) for s, n in (("train", 160), ("val", 40), ("test", 60))}
    store = np.concatenate([p[0] for p in parts.values()])  # one array for every split, as the job keeps it
    studies, tokens, start = {}, {}, 0
    for s, (tok, ids, labels) in parts.items():
        studies[s] = dp.study_features(tok.astype(np.float64).mean(1), ids, labels)
        rows = np.arange(start, start + len(tok))[::-1].copy()  # rows need not be in study order
        order = rows - start
        tokens[s] = ap.ClipTokens(store, rows, ap.study_index([ids[i] for i in order], studies[s].ids))
        start += len(tok)
    r = dp.probe_target("score", "regression", studies["train"], studies["val"], studies["test"], n_boot=100)
    att, preds = dp.attentive_target("score", "regression", studies, tokens, n_boot=100, epochs=15)
    assert r["mean"]["mae"] > 6 and r["linear"]["mae"] > 0.8 * r["mean"]["mae"]  # the mean token hides it
    assert att["mae"] < 0.35 * r["linear"]["mae"] and att["r2"] > 0.8, (att, r["linear"])
    assert att["mae_low"] <= att["mae"] <= att["mae_high"] and att["weight_decay"] in ap.WEIGHT_DECAYS
    # 320 clips are 5 steps an epoch: the fit runs MIN_STEPS steps, more than the 15 epochs asked.
    assert len(preds) == r["n_test"] == 60 and att["epochs"] == ap.MIN_STEPS // 5 and 1 <= att["epoch"] <= 120
    # It learned where to look: the query's attention on the marked token.
    tok, ids, _ = parts["test"]
    model = ap.AttentivePooler(8)
    assert model.attention(torch.from_numpy(tok[:4].astype(np.float32)))[1].shape == (4, 16)
    with pytest.raises(ValueError, match="which the split's studies do not hold"):
        ap.study_index(["nope"], studies["test"].ids)


def test_a_binary_target_and_a_report_with_the_attentive_column():
    rng = np.random.default_rng(1)
    parts = {s: _hidden_token_split(rng, n) for s, n in (("train", 120), ("val", 40), ("test", 40))}
    store = np.concatenate([p[0] for p in parts.values()])
    studies, tokens, start = {}, {}, 0
    for s, (tok, ids, labels) in parts.items():
        labels = [json.dumps({"high": float(json.loads(c)["score"] > 50)}) for c in labels]
        studies[s] = dp.study_features(tok.astype(np.float64).mean(1), ids, labels)
        rows = np.arange(start, start + len(tok))
        tokens[s] = ap.ClipTokens(store, rows, ap.study_index(ids, studies[s].ids))
        start += len(tok)
    metrics, _ = dp.run_all(
        studies["train"],
        studies["val"],
        studies["test"],
        {"high": "binary"},
        n_boot=50,
        tokens=tokens,
        epochs=10,
    )
    att = metrics["high"]["attentive"]
    assert att["computable"] and att["auc"] > 0.9 > metrics["high"]["linear"]["auc"]
    assert all(0 <= p <= 1 for p in metrics["high"]["test"]["attentive"])  # probabilities
    doc = {"shards": "s", "bundle_name": "b", "bundle_sha256": "0" * 64, "studies": {"train": 120, "val": 40, "test": 40},
           "clips": 400, "seed": 0, "n_boot": 50, "targets": metrics}  # fmt: skip
    md = dp.report_markdown(doc)
    assert "| target | kind | n test | attentive | linear |" in md and "learned query attends" in md
    assert f"| high | binary | 40 | {att['auc']:.3f}" in md


def test_the_token_store_takes_batches_as_they_come_and_splits_them(tmp_path):
    store = ap.TokenStore(tmp_path, rows=5)
    rng = np.random.default_rng(2)
    first, second = rng.normal(size=(3, 4, 2)), rng.normal(size=(2, 4, 2))
    store.append(first)
    store.append(second)
    assert (tmp_path / "tokens.npy").is_file() and store.array.dtype == np.float16
    split = np.array(["train", "test", "train", "val", "test"])
    study = np.array(["b", "x", "a", "v", "x"])
    got = store.splits(split, study, {"train": ["a", "b"], "val": ["v"], "test": ["x"]})
    assert got["train"].rows.tolist() == [0, 2] and got["train"].study.tolist() == [1, 0]
    np.testing.assert_allclose(got["train"].batch(np.array([1, 0])), np.float16(first[[2, 0]]))
    assert got["test"].study.tolist() == [0, 0] and got["val"].rows.tolist() == [3]
    with pytest.raises(ValueError, match="after 5 of 5 clips"):
        store.append(first[:1])
    other = ap.TokenStore(tmp_path / "o", rows=4)
    (tmp_path / "o").mkdir()
    other.append(first)
    with pytest.raises(ValueError, match=r"clips of \(4, 2\) each"):
        other.append(rng.normal(size=(1, 3, 2)))
