"""The library half of the evaluate job (echoprime.eval.evaluation), without Ray."""

from __future__ import annotations

from echoprime.eval.evaluation import method_notes


def test_method_notes_name_the_attention_k_and_the_probe_studies():
    manifest = {"components": {"mil": {"kind": "learned", "model": "section_attention_mil"}}}
    notes = method_notes(manifest, 7)
    assert "(section_attention_mil)" in notes[0] and "the bank's 7 nearest" in notes[1]
    assert not any("stream.probe_studies" in n for n in notes)
    with_probe = method_notes({"components": {"mil": {"kind": "table"}}}, 5, n_probe=30)
    assert "(table)" in with_probe[0] and len(with_probe) == len(notes) + 1
    assert "train split and 30 rendered training studies" in with_probe[3]
