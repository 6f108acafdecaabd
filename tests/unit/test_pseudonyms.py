"""The bank's study ids are keyed pseudonyms: results, the bank, the bundle and the logs hold no
original id of another patient's study, and the operator's map file leads back exactly."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import stat

import pyarrow.parquet as pq
import pytest
import torch

from echoprime.inference import StudyInterpreter
from echoprime.retrieval import pseudonyms as ps
from tests.fixtures_bundle import TEST_SECRET, make_random_bundle, original_ids

N_BANK = 40


def test_pseudonym_is_the_keyed_hmac():
    want = "p-" + hmac.new(b"k" * 16, b"1.2.840.113619.2.55", hashlib.sha256).hexdigest()[:24]
    assert ps.pseudonym("1.2.840.113619.2.55", b"k" * 16) == want
    assert ps.pseudonym("1.2.840.113619.2.55", b"j" * 16) != want  # another site, another pseudonym
    with pytest.raises(ValueError, match="empty"):
        ps.pseudonym("a", b"")


def test_site_secret_from_the_environment_or_one_off():
    secret, source = ps.site_secret({ps.SECRET_ENV: "x" * 16})
    assert (secret, source) == (b"x" * 16, "site")
    a, src_a = ps.site_secret({})
    b, _ = ps.site_secret({ps.SECRET_ENV: ""})
    assert src_a == "one-off" and len(a) == 32 and a != b  # drawn afresh for every build
    with pytest.raises(ValueError, match=f"{ps.SECRET_ENV} holds 5 characters"):
        ps.site_secret({ps.SECRET_ENV: "short"})


def test_pseudonymise_keeps_order_and_refuses_a_collision(monkeypatch):
    got = ps.pseudonymise(["b", "a", "b", 7], b"s" * 16)
    assert list(got) == ["b", "a", "7"] and got["7"] == ps.pseudonym("7", b"s" * 16)
    monkeypatch.setattr(ps, "pseudonym", lambda sid, secret: "p-same")
    with pytest.raises(ValueError, match="share the pseudonym"):
        ps.pseudonymise(["a", "b"], b"s" * 16)


def test_id_map_round_trip_is_owner_only(tmp_path):
    pseudo = ps.pseudonymise(["1.2.3", "study-7"], b"s" * 16)
    path = ps.write_id_map(tmp_path / "ops" / "ids.json", pseudo, source="site")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ps.read_id_map(path) == {p: sid for sid, p in pseudo.items()}
    assert json.loads(path.read_text())["scheme"] == "hmac-sha256/96"
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="expected format"):
        ps.read_id_map(tmp_path / "other.json")


@pytest.fixture(scope="module")
def bundle_and_map(tmp_path_factory):
    root = tmp_path_factory.mktemp("pseud")
    bundle = make_random_bundle(root / "bundle", n_bank=N_BANK, id_map=root / "ids.json")
    return bundle, root / "ids.json"


def test_the_bundle_holds_no_original_id(bundle_and_map):
    bundle, _ = bundle_and_map
    originals = [s.encode() for s in original_ids(N_BANK)]
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert any(p.name == "study_ids.npy" for p in files) and any(p.suffix == ".parquet" for p in files)
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".parquet":  # compressed: search what it decodes to
            data += json.dumps(pq.read_table(p).to_pylist()).encode()
        # .npy stores unicode as UTF-32: search that spelling too.
        hits = [s for s in originals if s in data or s.decode().encode("utf-32-le") in data]
        assert not hits, f"{p.relative_to(bundle)} holds {hits[:3]}"


def test_results_name_neighbours_by_pseudonym_and_the_map_leads_back(bundle_and_map, caplog):
    bundle, map_path = bundle_and_map
    id_map = ps.read_id_map(map_path)
    assert sorted(id_map.values()) == original_ids(N_BANK)  # exactly the bank's studies, one each
    assert all(p == ps.pseudonym(sid, TEST_SECRET) for p, sid in id_map.items())
    interp = StudyInterpreter.from_bundle(bundle, device="cpu")
    assert set(map(str, interp.parts.bank.study_ids)) == set(id_map)
    torch.manual_seed(0)
    clips = torch.randn(3, 3, interp.spec.frames, interp.spec.size, interp.spec.size)  # N x C x T x S x S
    with caplog.at_level(logging.INFO):
        r = interp.interpret(clips).to_dict()
    assert r["status"] == "ok"
    sources = {s["source_study"] for s in r["report"]} - {None}
    named = {n["study_id"] for ns in r["neighbours"].values() for n in ns}
    assert sources and named and sources | named <= set(id_map)
    text = json.dumps(r)
    assert not [s for s in original_ids(N_BANK) if s in text]
    # The operator's local view: every pseudonym maps back to the bank row's original study.
    back = ps.reidentify(r, id_map)
    assert {n["study_id"] for ns in back["neighbours"].values() for n in ns} <= set(original_ids(N_BANK))
    assert [s["text"] for s in back["report"]] == [s["text"] for s in r["report"]]
    assert back["metrics"] == r["metrics"]
    # Logs at INFO and above: no id of the bank (either spelling) and no report text.
    logged = "\n".join(rec.getMessage() for rec in caplog.records if rec.levelno >= logging.INFO)
    assert not [s for s in [*id_map, *id_map.values()] if s in logged]
    assert not [s["text"] for s in r["report"] if s["text"] and s["text"] in logged]


def test_build_bank_refuses_a_map_inside_the_bundle(tmp_path):
    from echoprime.commands.build_bank import add_arguments
    from echoprime.retrieval.pseudonyms import check_map_outside

    def _check_outside(path: str, bundle: str) -> None:
        check_map_outside(path, bundle, "the bundle")

    bundle = tmp_path / "bundle"
    for inside in (
        bundle / "ids.json",
        bundle / "bank" / "ids.json",
        tmp_path / "x" / ".." / "bundle" / "m.json",
    ):
        with pytest.raises(ValueError, match="inside the bundle"):
            _check_outside(str(inside), str(bundle))
    with pytest.raises(ValueError, match="local path"):
        _check_outside("s3://ops/ids.json", str(bundle))
    _check_outside(str(tmp_path / "bundle-ids.json"), str(bundle))  # beside it, not in it: accepted
    p = __import__("argparse").ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--shards", "s", "--bundle", "b", "--id-map", "/ops/ids.json"])
    assert args.id_map == "/ops/ids.json"


def test_the_bank_map_and_the_ingest_map_chain_to_the_archive_ids(tmp_path):
    """A bank pseudonym leads to a shard key (bank map), the shard key to the archive's id
    (ingest map); an id the ingest map does not hold (a stream study) stays as the bank map says."""
    secret = b"s" * 32
    shard = {"1.2.840.99.1": "s-aaa", "1.2.840.99.2": "s-bbb"}  # archive id -> shard key
    bank = ps.pseudonymise([*shard.values(), "s1_000007"], secret)  # shard key -> bank pseudonym
    ps.write_id_map(tmp_path / "bank.json", bank, source="site")
    ps.write_id_map(tmp_path / "ingest.json", shard, source="site")
    chained = ps.chain_id_maps(
        ps.read_id_map(tmp_path / "bank.json"), ps.read_id_map(tmp_path / "ingest.json")
    )
    assert chained == {
        bank["s-aaa"]: "1.2.840.99.1",
        bank["s-bbb"]: "1.2.840.99.2",
        bank["s1_000007"]: "s1_000007",
    }
    assert ps.chain_id_maps() == {}
