"""Zero-shot prompts: every phrase is in the vocabulary, and the scores are the stated formula."""

from __future__ import annotations

import re

import numpy as np
import pytest

from echoprime.eval.zeroshot import PROMPTS, VALUE_PROMPTS, Prompt, zero_shot_scores, zero_shot_values
from echoprime.reports import default_vocabulary
from echoprime.taxonomy import BINARY_PHENOTYPES, MIL_SECTIONS, PHENOTYPE_BY_NAME


def test_every_binary_phenotype_has_prompts_from_the_vocabulary_of_its_section():
    vocab = default_vocabulary()
    assert set(PROMPTS) == set(BINARY_PHENOTYPES)
    for name, p in PROMPTS.items():
        assert p.section == PHENOTYPE_BY_NAME[name].section and p.positive and p.negative
        for phrases in (*p.positive, *p.negative):
            for phrase in phrases:
                vocab.phrase_index(p.section, phrase)  # raises for a phrase outside the vocabulary
    for section, template, _ in VALUE_PROMPTS.values():
        vocab.phrase_index(section, template.replace("{v}", "<numerical>"))
    pos, neg = PROMPTS["aortic_regurgitation"].texts()
    assert "Aortic Valve: Severe aortic regurgitation. [SEP]" in pos
    assert "Aortic Valve: No aortic regurgitation is seen. [SEP]" in neg


def test_scores_are_similarity_to_positive_minus_negative_prompts():
    rng = np.random.default_rng(0)
    table = {}

    def embed(texts):
        for t in texts:
            table.setdefault(t, rng.standard_normal(6))
        return np.stack([table[t] for t in texts])

    prompts = {"x": Prompt("Aortic Valve", (("a",), ("b",)), (("c",),))}
    secs = rng.standard_normal((4, len(MIL_SECTIONS), 6))
    got = zero_shot_scores(secs, embed, prompts)["x"]
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    a, b, c = (unit(table[f"Aortic Valve: {t} [SEP]"]) for t in "abc")
    want = secs[:, MIL_SECTIONS.index("Aortic Valve")] @ ((a + b) / 2 - c)
    assert got == pytest.approx(want)


def test_values_are_the_mean_of_the_nearest_prompts():
    d = 3
    section, template, values = VALUE_PROMPTS["ejection_fraction"]

    def embed(texts):  # the prompt of value v points at angle v (degrees)
        out = []
        for t in texts:
            v = float(re.search(r"estimated at (\d+)", t).group(1))
            out.append([np.cos(np.radians(v)), np.sin(np.radians(v)), 0.0])
        return np.array(out)

    secs = np.zeros((1, len(MIL_SECTIONS), d))
    secs[0, MIL_SECTIONS.index(section)] = [np.cos(np.radians(41.4)), np.sin(np.radians(41.4)), 0]
    got = zero_shot_values(secs, embed, top=3)["ejection_fraction"]
    assert got[0] == pytest.approx(np.mean([42, 40, 44]))  # 0.6, 1.4 and 2.6 degrees away
