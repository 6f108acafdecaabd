"""Release compatibility: a fake release in the exact file formats, against an independent
straightforward computation of the stated algorithm (docs/release-compat.md).

The reference below reads the release files with plain csv/json/pickle/torch, runs plain
torchvision networks, and implements the algorithm with loops; it calls nothing of
``echoprime``. The whole module shares one fake release, one loaded ``EchoPrime`` and one
imported bundle (full-size MViT on CPU costs seconds per clip, so 2 clips).
"""

from __future__ import annotations

import csv
import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.fixtures_release import (
    IVC_PHRASE,
    PUBLISHED_ROC_BINARIES,
    PUBLISHED_ROC_EXTRA,
    PUBLISHED_ROC_FEATURES,
    PUBLISHED_ROC_MISSING,
    SPARSE_PHENOTYPE,
    cached_fake_release,
    write_roc_thresholds,
)

pytestmark = pytest.mark.slow

# Straight from the format page, not from echoprime.taxonomy.
VIEWS = ["A2C", "A3C", "A4C", "A5C", "Apical_Doppler", "Doppler_Parasternal_Long", "Doppler_Parasternal_Short",
         "Parasternal_Long", "Parasternal_Short", "SSN", "Subcostal"]  # fmt: skip
MEAN = (29.110628, 28.076836, 29.096405)
STD = (47.989223, 46.456997, 47.20083)


# ------------------------------------------------------------------------------ the reference
class Reference:
    """The release's inference written out plainly from the format page."""

    def __init__(self, md, assets):
        cd = md / "candidates_data"
        with open(cd / "candidate_studies.csv", newline="") as f:
            self.ids = [int(r["Study"]) for r in csv.DictReader(f)]  # as pandas would read them
        self.bank = torch.cat(
            [torch.load(cd / "candidate_embeddings_p1.pt"), torch.load(cd / "candidate_embeddings_p2.pt")],
            dim=0,
        )
        with open(cd / "candidate_reports.pkl", "rb") as f:
            self.reports = pickle.load(f)
        with open(cd / "candidate_labels.pkl", "rb") as f:
            self.labels = pickle.load(f)
        with open(assets / "section_to_phenotypes.pkl", "rb") as f:
            self.s2p = pickle.load(f)
        layout = json.loads((assets / "all_phr.json").read_text())
        self.sections = list(layout)
        self.phrases = {s: [p for sub in layout[s].values() for p in sub] for s in layout}
        with open(assets / "MIL_weights.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        self.mil_rows = [r["Section"] for r in rows]
        self.w = torch.tensor([[float(r[v]) for v in VIEWS] for r in rows])  # 15 x 11
        self.md = md

    def models(self):
        from torchvision.models import convnext_base
        from torchvision.models.video import mvit_v2_s

        with torch.device("meta"):
            enc = mvit_v2_s()
            enc.head[-1] = nn.Linear(768, 512)
            views = convnext_base()
            views.classifier[-1] = nn.Linear(1024, 11)
        enc.load_state_dict(torch.load(self.md / "weights/echo_prime_encoder.pt"), assign=True)
        views.load_state_dict(torch.load(self.md / "weights/view_classifier.pt"), assign=True)
        return enc.eval(), views.eval()

    @torch.no_grad()
    def encode_study(self, clips):
        enc, views = self.models()
        emb = torch.cat([enc(clips[i : i + 50]) for i in range(0, len(clips), 50)])
        view = torch.cat([views(clips[i : i + 50, :, 0]) for i in range(0, len(clips), 50)]).argmax(dim=1)
        return torch.cat([emb, F.one_hot(view, 11).float()], dim=1)

    def section_embeddings(self, encoding):
        emb, view = encoding[:, :512], encoding[:, 512:].argmax(dim=1)
        out = {}
        for s, name in enumerate(self.mil_rows):
            total = torch.zeros(512)
            for i in range(len(emb)):
                total = total + self.w[s, view[i]] * emb[i]
            out[name] = F.normalize(total, dim=0)
        return out

    def predict_metrics(self, encoding, k=50, positional=False):
        sec = self.section_embeddings(encoding)
        out = {}
        for n, (section, phenotypes) in enumerate(self.s2p.items()):
            row = self.mil_rows[n] if positional else section
            top = torch.topk(self.bank @ sec[row], k).indices.tolist()
            for p in phenotypes:
                vals = [self.labels[p][self.ids[j]] for j in top if self.ids[j] in self.labels[p]]
                out[p] = sum(vals) / len(vals) if vals else math.nan
        return out

    def decode(self, section, triples):
        words = "".join(
            self.phrases[section][p].replace("<numerical>", str(v)).replace("<string>", str(v)) + " "
            for _, p, v in triples
        )
        return f"{section}: {words}[SEP]"

    def report_sections(self, encoding):
        """Per section, the text of the most similar candidate whose triples hold that section."""
        sec = self.section_embeddings(encoding)
        out = []
        for section in self.mil_rows:
            s_idx = self.sections.index(section)
            order = torch.argsort(self.bank @ sec[section], descending=True, stable=True).tolist()
            text = f"{section}: not assessed [SEP]"
            for j in order:
                mine = [t for t in self.reports[j] if t[0] == s_idx]
                if mine:
                    text = self.decode(section, mine)
                    break
            out.append(text)
        return out


def split_sections(report: str) -> list[str]:
    return [piece.strip() + " [SEP]" for piece in report.split("[SEP]") if piece.strip()]


def assert_identical(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for p in want:
        assert got[p] == want[p] or (math.isnan(got[p]) and math.isnan(want[p])), (p, got[p], want[p])


def assert_same_metrics(got: dict, want: dict, tol: float = 1e-4) -> None:
    assert list(got) == list(want)
    for p in want:
        if math.isnan(want[p]):
            assert math.isnan(got[p]), p
        else:
            assert abs(got[p] - want[p]) <= tol, (p, got[p], want[p])


def random_encodings(seed: int, n_studies: int, weights: torch.Tensor) -> list[torch.Tensor]:
    """Studies of 1-9 clips with embeddings of unequal norms (so per-clip normalising would show)
    and random views, drawn again until every section gets some weight from some clip.

    (A section whose clips all weigh 0 has a zero embedding: every candidate ties, and which
    ones the release takes is torch.topk's tie order; see test_section_without_weight.)
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n_studies:
        n = int(torch.randint(1, 10, (1,), generator=g))
        emb = torch.randn(n, 512, generator=g) * (0.2 + 3 * torch.rand(n, 1, generator=g))
        views = torch.randint(0, 11, (n,), generator=g)
        if (weights[:, views].sum(dim=1) > 0).all():
            out.append(torch.cat([emb, F.one_hot(views, 11).float()], dim=1))
    return out


# -------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def release(tmp_path_factory):
    torch.set_num_threads(1)  # 2 shared cores: one thread each for the test runs
    return cached_fake_release(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(release):
    return Reference(release.model_data, release.assets)


@pytest.fixture(scope="module")
def tokenizer_dir(release, tmp_path_factory):
    """A WordPiece tokenizer of our own, standing in for BiomedBERT's (not shipped, not downloadable)."""
    from echoprime.models.tokenizer import train_wordpiece_tokenizer
    from echoprime.reports import Vocabulary, decode_triples

    vocab = Vocabulary.from_json(release.assets / "all_phr.json")
    texts = [decode_triples(r, vocab) for r in release.reports[:300]]
    d = tmp_path_factory.mktemp("biomedbert-stand-in")
    train_wordpiece_tokenizer(texts, vocab_size=600).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def ep(release, tokenizer_dir):
    from echoprime.release import EchoPrime

    return EchoPrime(
        release.model_data, release.assets, trust_pickles=True, device="cpu", text_tokenizer=tokenizer_dir
    )


@pytest.fixture(scope="module")
def clips():
    return torch.randn(2, 3, 16, 224, 224, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def encoding(ep, clips):
    return ep.encode_study(clips)


@pytest.fixture(scope="module")
def bundle(release, tokenizer_dir, tmp_path_factory):
    from echoprime.cli import main

    out = tmp_path_factory.mktemp("imported") / "bundle"
    argv = ["import-release", "--model-data", str(release.model_data), "--assets", str(release.assets),
            "--out", str(out), "--trust-pickles", "--tokenizer", str(tokenizer_dir),
            "--id-map", str(out.parent / "id-map.json")]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def ep_bundle(bundle):
    from echoprime.release import EchoPrime

    return EchoPrime.from_bundle(bundle, device="cpu")


# ----------------------------------------------------------------------------------- tests
def test_encode_study_matches_reference(ep, reference, clips, encoding):
    want = reference.encode_study(clips)
    assert encoding.shape == (2, 523) and encoding.dtype == torch.float32
    torch.testing.assert_close(encoding, want, rtol=1e-5, atol=1e-5)
    # raw encoder outputs (not unit norm), exactly one view per clip
    assert not torch.allclose(encoding[:, :512].norm(dim=1), torch.ones(2))
    assert torch.equal(encoding[:, 512:].sum(dim=1), torch.ones(2))
    onehot, names = ep.get_views(clips, return_view_list=True)
    assert torch.equal(onehot, encoding[:, 512:]) and names == [VIEWS[int(i)] for i in onehot.argmax(1)]


def test_predictions_and_report_of_real_encoding_match_reference(ep, reference, encoding):
    assert (reference.w[:, encoding[:, 512:].argmax(1)].sum(dim=1) > 0).all()  # no all-tie section
    assert_same_metrics(ep.predict_metrics(encoding), reference.predict_metrics(encoding))
    got = ep.generate_report(encoding)
    want = reference.report_sections(encoding)
    assert split_sections(got) == want
    assert got == " ".join(want)


def test_many_studies_match_reference_by_name_and_positional(ep, reference):
    seen_nan = 0
    for i, enc in enumerate(random_encodings(1, 12, reference.w)):
        k = 50 if i % 3 else 9
        want = reference.predict_metrics(enc, k=k)
        assert_same_metrics(ep.predict_metrics(enc, k=k), want)
        assert_same_metrics(
            ep.predict_metrics(enc, k=k, compat_positional=True),
            reference.predict_metrics(enc, k=k, positional=True),
        )
        assert split_sections(ep.generate_report(enc)) == reference.report_sections(enc)
        seen_nan += math.isnan(want[SPARSE_PHENOTYPE])
    assert seen_nan > 0  # the sparse phenotype did produce NaN (no labelled neighbour)


def test_positional_pairing_differs_from_by_name(ep, reference):
    # Several views, so that the section embeddings differ (one clip gives 15 equal rows).
    enc = next(
        e for e in random_encodings(2, 50, reference.w) if len(set(e[:, 512:].argmax(1).tolist())) >= 4
    )
    by_name, positional = ep.predict_metrics(enc), ep.predict_metrics(enc, compat_positional=True)
    # Only Left Ventricle (first key, first row) lines up.
    assert by_name["ejection_fraction"] == positional["ejection_fraction"]
    assert by_name["impella"] == positional["impella"]
    others = [p for p in by_name if p not in ("impella", "ejection_fraction")]
    assert sum(by_name[p] != positional[p] for p in others) >= len(others) // 2


def test_report_sections_come_from_structure_and_always_end(ep, reference, release):
    """A candidate whose Pericardium phrase names the IVC, and which has no IVC section, ranks
    first for the IVC: a header-string search would take its Pericardium phrase as the IVC
    section; the report must take the next candidate that HAS an IVC section. Pulmonic Valve is
    in no report: it reads "not assessed" (the published search would not end)."""
    ivc_col = reference.sections.index("IVC")
    c = next(
        j for j, r in enumerate(release.reports)
        if tuple(release.ivc_phrase) in {(s, p) for s, p, _ in r} and all(t[0] != ivc_col for t in r)
    )  # fmt: skip
    view = next(v for v in range(11) if reference.w[reference.mil_rows.index("IVC"), v] > 0)
    enc = torch.cat([reference.bank[c][None] * 2.0, F.one_hot(torch.tensor([view]), 11).float()], dim=1)
    report = ep.generate_report(enc)
    sections = split_sections(report)
    assert sections == reference.report_sections(enc)
    ivc = sections[reference.mil_rows.index("IVC")]
    assert ivc.startswith("IVC: ") and IVC_PHRASE not in ivc
    assert "Pulmonic Valve: not assessed [SEP]" in sections
    # c is the best IVC candidate, and its text names the IVC outside an IVC section
    assert int(torch.argmax(reference.bank @ reference.bank[c])) == c
    assert "IVC" in reference.decode(
        "Pericardium", [t for t in release.reports[c] if t[0] == release.ivc_phrase[0]]
    )


def test_section_without_weight(ep, reference):
    """Every clip of the study has weight 0 for a section: its embedding is the zero vector and
    all candidates tie. The published code then takes torch.topk's tie order (arbitrary, and
    another on a GPU); here ties go to the lowest bank rows, the same on every run and device."""
    row = next(s for s in range(15) if (reference.w[s] == 0).any() and reference.mil_rows[s] in reference.s2p)
    view = int(torch.nonzero(reference.w[row] == 0)[0])
    enc = torch.cat([torch.randn(2, 512), F.one_hot(torch.tensor([view, view]), 11).float()], dim=1)
    assert torch.equal(ep.section_embeddings(enc)[row], torch.zeros(512))
    section = reference.mil_rows[row]
    k = 20
    for p in reference.s2p.get(section, []):
        vals = [reference.labels[p][i] for i in reference.ids[:k] if i in reference.labels[p]]
        want = sum(vals) / len(vals) if vals else math.nan
        got = ep.predict_metrics(enc, k=k)[p]
        assert got == pytest.approx(want, abs=1e-6, nan_ok=True)
    s_idx = reference.sections.index(section)
    first = next((j for j, r in enumerate(reference.reports) if any(t[0] == s_idx for t in r)), None)
    want_text = (
        f"{section}: not assessed [SEP]" if first is None
        else reference.decode(section, [t for t in reference.reports[first] if t[0] == s_idx])
    )  # fmt: skip
    assert split_sections(ep.generate_report(enc))[row] == want_text


def test_process_dicoms_matches_release_steps(ep, tmp_path):
    """Content inside the sector, uncompressed DICOM: steps 3-5 of the format page within 1e-3;
    a still image and a non-DICOM file are skipped."""
    import cv2

    from echoprime.io.writers import write_dicom

    rng = np.random.default_rng(3)
    shapes = [(34, 480, 640), (17, 300, 301)]
    frames = []
    for n, h, w in shapes:
        yy, xx = np.mgrid[0:h, 0:w]
        fan = (np.hypot(xx - w / 2, yy) <= 0.9 * h) & (np.abs(np.degrees(np.arctan2(xx - w / 2, yy))) <= 40)
        f = rng.integers(1, 256, (n, h, w), dtype=np.uint8) * fan
        g = (f.astype(np.uint16) * 230 >> 8).astype(np.uint8)
        frames.append(np.stack([f, g, f // 2 + (f > 0)], axis=-1))  # n x h x w x 3, channels differ
    write_dicom(frames[0], tmp_path / "a.dcm")
    write_dicom(frames[1], tmp_path / "b")  # DICOM files often have no suffix
    write_dicom(frames[0][:1], tmp_path / "still.dcm")
    (tmp_path / "notes.txt").write_text("not a video")
    got = ep.process_dicoms(tmp_path)
    assert got.shape == (2, 3, 16, 224, 224)
    for clip, fr in zip(got.numpy(), frames, strict=True):
        out = []
        for f in fr:
            h, w = f.shape[:2]
            side = min(h, w)
            f = f[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
            c = int(side * 0.1)
            out.append(cv2.resize(f[c : side - c, c : side - c], (224, 224), interpolation=cv2.INTER_CUBIC))
        x = np.stack(out).astype(np.float32).transpose(3, 0, 1, 2)  # F x S x S x 3 -> 3 x F x S x S
        mean, std = (np.array(v, np.float32)[:, None, None, None] for v in (MEAN, STD))
        x = (x - mean) / std
        pad = np.zeros((3, max(0, 32 - x.shape[1]), 224, 224), np.float32)  # zeros after normalising
        x = np.concatenate([x, pad], axis=1)[:, 0:32:2]
        assert np.abs(clip - x).max() <= 1e-3


def test_process_mp4s(ep, tmp_path):
    from echoprime.io import read_video
    from echoprime.io.writers import write_video
    from echoprime.preprocess import PreprocessSpec, preprocess_video

    rng = np.random.default_rng(4)
    write_video(rng.integers(0, 255, (20, 96, 128, 3), dtype=np.uint8), tmp_path / "x.mp4", threads=1)
    (tmp_path / "readme.md").write_text("skipped")
    got = ep.process_mp4s(tmp_path)
    want = preprocess_video(read_video(tmp_path / "x.mp4").frames, PreprocessSpec.release())
    assert got.shape == (1, 3, 16, 224, 224) and np.array_equal(got[0].numpy(), want)


def test_text_encoder_matches_reference(ep, reference, release):
    from transformers import BertForMaskedLM

    from echoprime.models.text import biomedbert_config

    text = (
        "Left Ventricle: The left ventricular ejection fraction is estimated at 55%. [SEP] IVC: Normal. [SEP]"
    )
    got = ep.interpreter.embed_text([text])
    tok = ep.parts.tokenizer([text])
    with torch.device("meta"):
        bert, proj = BertForMaskedLM(biomedbert_config()), nn.Linear(768, 512)
    sd = torch.load(release.model_data / "weights/echo_prime_text_encoder.pt")
    bert.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}, assign=True)
    proj.load_state_dict({k[16:]: v for k, v in sd.items() if k.startswith("text_projection.")}, assign=True)
    bert.bert.embeddings.position_ids = torch.arange(512)[None]  # non-persistent buffers: rebuilt
    bert.bert.embeddings.token_type_ids = torch.zeros(1, 512, dtype=torch.long)
    assert not [n for n, t in [*bert.named_parameters(), *bert.named_buffers()] if t.is_meta]
    bert.eval()
    with torch.no_grad():
        h = bert.bert(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        want = F.normalize(proj(h[:, 0]), dim=-1).numpy()  # projection of [CLS]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_text_features_off_without_tokenizer(release):
    from echoprime.release.files import locate
    from echoprime.release.load import load_release_text

    text, tok, reason = load_release_text(locate(release.model_data, release.assets), None)
    assert text is None and tok is None
    assert reason.startswith("unavailable") and "tokenizer" in reason and "--tokenizer" in reason


def test_imported_bundle_is_pickle_free_and_records_provenance(bundle, release):
    from safetensors.torch import load_file

    from echoprime.bundle import read_manifest, sha256_file

    man = read_manifest(bundle)  # verifies every hash
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".pkl", ".pickle", ".pt", ".pth", ".bin"}]
    for p in files:
        if p.suffix == ".npy":
            np.load(p, allow_pickle=False)
        if p.suffix == ".safetensors":
            load_file(str(p))
    assert set(man["components"]) == {"video_encoder", "view_classifier", "mil", "text_encoder"}
    extra = man["extra"]
    assert extra["text_features"] == "available"
    assert list(extra["section_to_phenotypes"]) == list(reference_s2p(release))
    rel = extra["release_files"]
    assert len(rel) == 12
    assert rel["assets/MIL_weights.csv"]["sha256"] == sha256_file(release.assets / "MIL_weights.csv")


def test_imported_bundle_names_the_release_studies_by_pseudonym_only(bundle, release, ep, ep_bundle):
    """The converted bank stores keyed pseudonyms of the release's candidate studies; the map
    written with --id-map leads back row for row; no file of the bundle holds a release id."""
    from echoprime.retrieval.pseudonyms import PREFIX, read_id_map
    from tests.leaks import files_under, leaks

    ids = [str(s) for s in ep.parts.bank.study_ids]
    got = [str(s) for s in ep_bundle.parts.bank.study_ids]
    assert all(g.startswith(PREFIX) for g in got)
    id_map = read_id_map(bundle.parent / "id-map.json")
    assert [id_map[g] for g in got] == ids
    assert leaks(files_under(bundle), ids) == {}
    assert ep_bundle.parts.manifest["extra"]["study_ids"]["secret"] == "one-off"


def reference_s2p(release):
    with open(release.assets / "section_to_phenotypes.pkl", "rb") as f:
        return pickle.load(f)


def test_bundle_gives_identical_answers(ep, ep_bundle, reference, clips, encoding):
    # Same modules, same weights: compared tensor by tensor, then run on one clip (seconds each).
    for a, b in [
        (ep.parts.video_encoder, ep_bundle.parts.video_encoder),
        (ep.parts.view_classifier, ep_bundle.parts.view_classifier),
    ]:
        sa, sb = a.state_dict(), b.state_dict()
        assert type(a) is type(b) and list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    # (one clip alone, not in a batch of two, so GEMM blocking may move the last bits)
    one = ep_bundle.encode_study(clips[:1])
    torch.testing.assert_close(one, encoding[:1], rtol=1e-5, atol=1e-5)
    assert torch.equal(one[:, 512:], encoding[:1, 512:])
    for enc in [encoding, *random_encodings(3, 4, reference.w)]:
        assert_identical(ep_bundle.predict_metrics(enc), ep.predict_metrics(enc))
        assert_identical(
            ep_bundle.predict_metrics(enc, compat_positional=True),
            ep.predict_metrics(enc, compat_positional=True),
        )
        assert ep_bundle.generate_report(enc) == ep.generate_report(enc)
        # the interpreter's attention on both sides
        torch.testing.assert_close(
            ep_bundle.section_embeddings(enc), ep.section_embeddings(enc), rtol=0, atol=0
        )
    assert dict(ep_bundle.parts.thresholds) == dict(ep.parts.thresholds)
    text = ["Aorta: Normal aortic root dimension. [SEP]"]
    np.testing.assert_array_equal(ep_bundle.interpreter.embed_text(text), ep.interpreter.embed_text(text))


def test_a_study_interpreter_on_the_release_parts(release, ep, encoding):
    from echoprime.inference import StudyInterpreter
    from echoprime.release import EchoPrime, UntrustedPickleError, load_release_parts

    with pytest.raises(UntrustedPickleError, match="--trust-pickles"):
        load_release_parts(release.model_data, release.assets)
    interp = StudyInterpreter(
        load_release_parts(release.model_data, release.assets, trust_pickles=True), device="cpu"
    )
    assert interp.parts.manifest["format"] == "echoprime-release"
    again = EchoPrime.from_interpreter(interp)
    assert_identical(again.predict_metrics(encoding), ep.predict_metrics(encoding))
    assert again.generate_report(encoding) == ep.generate_report(encoding)


def test_decisions_use_release_thresholds(ep, reference, encoding):
    """The published file's 13 binary rows decide at their thresholds; the six binaries without
    a row at the default 0.5; the three rows that name no phenotype decide nothing."""
    metrics = ep.predict_metrics(encoding)
    decisions = ep.decisions(metrics)
    with open(reference.md.parent / "assets" / "roc_thresholds.csv", newline="") as f:
        thr = {r["feature"]: float(r["threshold"]) for r in csv.DictReader(f)}
    assert list(thr) == list(PUBLISHED_ROC_FEATURES)  # the fixture is the published file's rows
    binaries = [
        p
        for p, v in metrics.items()
        if p not in ("ejection_fraction", "pulmonary_artery_pressure_continuous")
    ]
    assert set(decisions) == set(binaries) and len(binaries) == 19
    for p, d in decisions.items():
        t = thr[p] if p in PUBLISHED_ROC_BINARIES else 0.5
        assert d == (None if math.isnan(metrics[p]) else metrics[p] >= t), p


def test_published_threshold_rows_load_as_they_are(ep, ep_bundle, release, caplog, tmp_path):
    """16 rows, not one per binary: loaded, each decision's source stated, the rows without a
    phenotype kept and named in one warning, not per study."""
    import logging

    from echoprime.release.files import locate
    from echoprime.release.load import read_release_tables

    thr = ep.parts.thresholds
    assert [thr.source(p) for p in PUBLISHED_ROC_BINARIES] == ["release"] * 13
    assert [thr.source(p) for p in PUBLISHED_ROC_MISSING] == ["default"] * 6
    assert all(thr[p] == 0.5 and "no row" in thr.fits[p].reason for p in PUBLISHED_ROC_MISSING)
    assert not set(PUBLISHED_ROC_EXTRA) & set(thr)
    info = ep.parts.manifest["thresholds"]
    assert info["from_file"] == [p for p in thr if p in PUBLISHED_ROC_BINARIES]
    assert sorted(info["default"]) == sorted(PUBLISHED_ROC_MISSING)
    assert info["rows_without_phenotype"]["atrial_septum_hypertrophy"] == 1.06
    assert set(info["rows_without_phenotype"]) == set(PUBLISHED_ROC_EXTRA)
    # The converted bundle keeps values and sources, and records the file's coverage.
    assert {p: (f.threshold, f.source) for p, f in ep_bundle.parts.thresholds.fits.items()} == {
        p: (f.threshold, f.source) for p, f in thr.fits.items()
    }
    assert ep_bundle.parts.manifest["extra"]["release_thresholds"] == info

    with caplog.at_level(logging.WARNING, logger="echoprime.release.load"):
        read_release_tables(locate(release.model_data, release.assets), trust_pickles=True)
    warned = [r.getMessage() for r in caplog.records if "roc_thresholds.csv" in r.getMessage()]
    assert len(warned) == 1
    assert all(p in warned[0] for p in (*PUBLISHED_ROC_MISSING, *PUBLISHED_ROC_EXTRA))


def test_interpret_states_threshold_sources_and_pools_raw_embeddings(ep, ep_bundle, clips, encoding, caplog):
    """``interpret`` on release parts pools the raw clip embeddings (``normalize_embeddings``
    False), so its findings are the release's ``predict_metrics(encode_study(...))``; each binary
    says where its threshold came from; no threshold warning per study."""
    import logging

    want = ep.predict_metrics(encoding)
    assert encoding[:, :512].norm(dim=1).sub(1).abs().max() > 0.01  # raw, unequal norms
    for e in (ep, ep_bundle):
        assert e.parts.normalize_embeddings is False
        with caplog.at_level(logging.WARNING):
            res = e.interpret(clips, k=50).to_dict()
        assert not [r for r in caplog.records if "roc_thresholds" in r.getMessage()]
        got = {p: m["value"] for p, m in res["metrics"].items()}
        assert_same_metrics({p: math.nan if v is None else v for p, v in got.items()}, want)
        for p, m in res["metrics"].items():
            if p in PUBLISHED_ROC_BINARIES:
                assert m["threshold_source"] == "release" and m["threshold"] == e.parts.thresholds[p]
            elif p in PUBLISHED_ROC_MISSING:
                assert m["threshold_source"] == "default" and m["threshold"] == 0.5
            else:
                assert m["threshold_source"] is None and m["decision"] is None


def test_same_findings_as_with_a_row_for_every_binary(ep, release, encoding, tmp_path):
    """Where the published file has a row, values and decisions are what a file with a row for
    every binary gave before; only the six without a row change (to the default 0.5)."""
    from echoprime.retrieval import predict_metrics, read_release_thresholds

    with open(release.assets / "roc_thresholds.csv", newline="") as f:
        published = {r["feature"]: float(r["threshold"]) for r in csv.DictReader(f)}
    complete = {p: published.get(p, 0.3) for p in (*PUBLISHED_ROC_BINARIES, *PUBLISHED_ROC_MISSING)}
    write_roc_thresholds(tmp_path / "complete.csv", np.random.default_rng(0), complete)
    sec = ep.section_embeddings(encoding).numpy()
    before = predict_metrics(
        sec, ep.parts.bank, 50, thresholds=read_release_thresholds(tmp_path / "complete.csv")
    )
    now = predict_metrics(sec, ep.parts.bank, 50, thresholds=ep.parts.thresholds)
    assert list(before) == list(now)
    for p in now:
        assert now[p].value == before[p].value or (math.isnan(now[p].value) and math.isnan(before[p].value))
        if p in PUBLISHED_ROC_BINARIES:
            assert now[p].decision == before[p].decision, p


def test_fixture_mirrors_the_published_shapes(release):
    """The fake release holds the published files' shapes as the release has them
    (docs/release-compat.md), quirks included; a fixture tidier than the real files hides bugs (the
    roc_thresholds.csv one did). Constants here are the release's, not echoprime's."""
    a, cd = release.assets, release.model_data / "candidates_data"
    with open(a / "roc_thresholds.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["", "feature", "threshold"] and [r[0] for r in rows[1:]] == [str(i) for i in range(16)]
    assert [r[1] for r in rows[1:]] == list(PUBLISHED_ROC_FEATURES) and rows[-1][2] == "1.06"
    with open(a / "MIL_weights.csv", newline="") as f:
        mil = list(csv.reader(f))
    assert mil[0] == ["Section", *VIEWS] and len(mil) == 16
    assert "Postoperative Findings" not in [r[0] for r in mil[1:]]
    assert all(0.0 <= float(x) <= 1.0 for r in mil[1:] for x in r[1:])
    with open(a / "section_to_phenotypes.pkl", "rb") as f:
        s2p = pickle.load(f)
    assert list(s2p) == ["Left Ventricle", "Right Ventricle", "Left Atrium", "Right Atrium", "Mitral Valve",
                         "Aortic Valve", "Tricuspid Valve", "Pericardium", "Aorta", "IVC", "Pulmonary Artery"]  # fmt: skip
    assert s2p["Left Ventricle"] == ["impella", "ejection_fraction"] and sum(map(len, s2p.values())) == 21
    layout = json.loads((a / "all_phr.json").read_text())
    assert len(layout) == 16 and list(layout)[-1] == "Postoperative Findings"
    assert all(
        isinstance(sub, dict) and all(isinstance(v, list) for v in sub.values()) for sub in layout.values()
    )
    assert (cd / "candidate_studies.csv").read_text().splitlines()[0] == "Study"
    with open(cd / "candidate_reports.pkl", "rb") as f:
        reports = pickle.load(f)
    assert isinstance(reports, list) and all(isinstance(r, list) for r in reports)
    assert all(isinstance(t, tuple) and len(t) == 3 for r in reports[:50] for t in r)
    with open(cd / "candidate_labels.pkl", "rb") as f:
        labels = pickle.load(f)
    assert set(labels) == {p for ps in s2p.values() for p in ps}
    assert all(isinstance(v, dict) for v in labels.values())
    p1 = torch.load(cd / "candidate_embeddings_p1.pt")
    p2 = torch.load(cd / "candidate_embeddings_p2.pt")
    assert p1.ndim == p2.ndim == 2 and p1.shape[1] == p2.shape[1] == 512 and p1.dtype == torch.float32
    enc = torch.load(release.model_data / "weights/echo_prime_encoder.pt")
    assert tuple(enc["head.1.weight"].shape) == (512, 768) and "conv_proj.weight" in enc
    views = torch.load(release.model_data / "weights/view_classifier.pt")
    assert tuple(views["classifier.2.weight"].shape) == (11, 1024)
    text = torch.load(release.model_data / "weights/echo_prime_text_encoder.pt")
    assert tuple(text["text_projection.weight"].shape) == (512, 768)
    assert any(k.startswith("backbone.bert.") for k in text) and any(
        k.startswith("backbone.cls.") for k in text
    )


def test_a_converted_release_starts_a_fine_tune(bundle):
    """issue 26: the published shapes (mViT v2 S, the release's text tower) load into the
    training model through pretrain --init's code, start at the release's own embeddings, and
    take an optimizer step of the contrastive loss."""
    import json

    from echoprime.inference import load_bundle_parts
    from echoprime.losses import ClipLoss
    from echoprime.training.finetune import apply_init, freeze_text, load_init, param_groups
    from echoprime.training.setup import build_clip

    manifest = json.loads((bundle / "manifest.json").read_text())
    comps = manifest["components"]
    cfg = {
        "video_encoder": comps["video_encoder"]["model"],
        "text_encoder": comps["text_encoder"]["model"],
        "embed_dim": 512,
        "init_logit_scale": 2.659,
        "max_logit_scale": 4.605,
        "label_heads": "none",
    }
    init = load_init(str(bundle), cfg, manifest["spec"])
    assert init.towers == ("video_encoder", "text_encoder")
    model = build_clip(cfg, manifest["spec"], init.vocab_size)
    apply_init(model, init.state, init.towers)
    parts = load_bundle_parts(str(bundle))
    x = torch.randn(2, 3, 16, 224, 224, generator=torch.Generator().manual_seed(3))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.video_encoder(x), parts.video_encoder(x))
    model.train()
    freeze_text(model, 0)
    opt = torch.optim.AdamW(param_groups(model, 0.8), lr=1e-5)
    enc = parts.tokenizer(
        ["Left Ventricle: LVEF is 55%. [SEP]", "Pericardium: No pericardial effusion. [SEP]"]
    )
    out = model(x, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    loss = ClipLoss()(**out)["contrastive_loss"]
    loss.backward()
    assert torch.isfinite(loss)
    params = dict(model.video_encoder.named_parameters())
    moved = [n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0]
    assert moved and all(p.grad is None for p in model.text_encoder.parameters())  # the text tower is frozen
    before = params[moved[-1]].detach().clone()
    opt.step()
    assert not torch.equal(before, params[moved[-1]])
