"""The phrase vocabulary: the packaged file's content and the validation of any vocabulary."""

from __future__ import annotations

import json

import pytest

from echoprime.reports import Vocabulary, VocabularyError, default_vocabulary, slot_count
from echoprime.synth.report import WORDINGS
from echoprime.taxonomy import SECTIONS


def test_packaged_vocabulary_covers_the_taxonomy_in_order():
    vocab = default_vocabulary()
    assert vocab.sections == SECTIONS
    assert [vocab.section_index(s) for s in SECTIONS] == list(range(16))
    assert default_vocabulary() is vocab  # cached


def test_packaged_vocabulary_is_well_formed():
    vocab = default_vocabulary()
    for section in vocab.sections:
        phrases = vocab.phrases(section)
        assert len(phrases) == len(set(phrases)), f"duplicate phrase in {section}"
        assert all(slot_count(p) <= 1 for p in phrases), section
        # every section can say "nothing abnormal" or "could not be seen"
        assert any(
            ("not well visualized" in p or "not be assessed" in p or p.startswith("No ")) for p in phrases
        ), section
        # the phrase list is the concatenation of the sub-heading lists, in file order
        assert phrases == [p for plist in vocab.sub_headings(section).values() for p in plist]
        assert all(vocab.phrase_index(section, p) == i for i, p in enumerate(phrases))
    text = json.dumps(vocab.to_dict()).lower()
    for hidden in ("amyloid", "stemi", "infarct", "ischemi"):
        assert hidden not in text


def test_every_composer_wording_is_in_its_section():
    vocab = default_vocabulary()
    for section, statements in WORDINGS.items():
        for grades in statements.values():
            for options in grades:
                assert options, (section, grades)
                for template in options:
                    assert template in vocab.phrases(section), (section, template)


def test_from_json_reads_a_file_and_a_dict_alike(tmp_path):
    layout = {"B": {"x": ["b1.", "b2 <numerical> cm."]}, "A": {"y": ["a1."], "z": ["a2.", "a1."]}}
    path = tmp_path / "all_phr.json"
    path.write_text(json.dumps(layout))
    from_file, from_dict = Vocabulary.from_json(path), Vocabulary.from_json(layout)
    for vocab in (from_file, from_dict):
        assert vocab.sections == ("B", "A")  # file order, not sorted
        assert vocab.phrases("A") == ["a1.", "a2.", "a1."]
        assert vocab.phrase_index("A", "a1.") == 0  # a repeated phrase resolves to its first index
        assert vocab.phrase(1, 2) == ("A", "a1.")
        assert len(vocab) == 5
    assert str(path) in from_file.source


@pytest.mark.parametrize(
    "layout, message",
    [
        (["Left Ventricle"], "expected a JSON object"),
        ({}, "no sections"),
        ({"LV": ["a."]}, "must map sub-headings"),
        ({"LV": {"Size": "normal."}}, "must be a list of phrases"),
        ({"LV": {"Size": ["ok.", 3]}}, "expected non-empty strings"),
        ({"LV": {"Size": ["  "]}}, "expected non-empty strings"),
        ({"LV": {"Size": ["a [SEP] b"]}}, "may not contain '\\[SEP\\]'"),
        ({"LV: x": {"Size": ["a."]}}, "may not contain ':'"),
        ({"": {"Size": ["a."]}}, "non-empty strings"),
    ],
)
def test_bad_layouts_raise_naming_the_problem(layout, message):
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_json(layout)


def test_bad_files_raise_naming_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(VocabularyError, match="cannot read.*nope.json"):
        Vocabulary.from_json(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(VocabularyError, match="broken.json.*not valid JSON"):
        Vocabulary.from_json(broken)


def test_lookups_fail_clearly():
    vocab = default_vocabulary()
    with pytest.raises(VocabularyError, match="unknown section 'Left ventricle'"):
        vocab.phrases("Left ventricle")
    with pytest.raises(VocabularyError, match="closest.*There is moderate mitral regurgitation"):
        vocab.phrase_index("Mitral Valve", "There is moderate mitral regurgitation")  # no full stop
    with pytest.raises(VocabularyError, match="section index 16 out of range"):
        vocab.phrase(16, 0)
    with pytest.raises(VocabularyError, match="phrase index -1 out of range"):
        vocab.phrase(0, -1)
    assert isinstance(VocabularyError("x"), ValueError)
