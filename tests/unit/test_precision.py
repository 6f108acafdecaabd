"""``precision="bf16"`` runs the towers under bf16 autocast: float32 answers close to fp32's,
fp32 untouched by the option's existence, a typo refused."""

from __future__ import annotations

import pytest
import torch

from echoprime.inference import StudyInterpreter
from tests.fixtures_bundle import make_random_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("prec") / "bundle", n_bank=30)


def test_bf16_towers_answer_in_float32_close_to_fp32(bundle):
    fp32 = StudyInterpreter.from_bundle(bundle, device="cpu")
    bf16 = StudyInterpreter.from_bundle(bundle, device="cpu", precision="bf16")
    s = fp32.spec
    clips = torch.randn(5, 3, s.frames, s.size, s.size, generator=torch.Generator().manual_seed(0))
    e32, p32 = fp32.embed_and_classify(clips)
    e16, p16 = bf16.embed_and_classify(clips)
    assert e16.dtype == p16.dtype == torch.float32 and e16.shape == e32.shape
    assert not torch.equal(e16, e32)  # bf16 arithmetic did run
    assert torch.nn.functional.cosine_similarity(e16, e32).min() > 0.99
    assert (p16 - p32).abs().max() < 0.05
    again = StudyInterpreter.from_bundle(bundle, device="cpu", precision="fp32").towers.embed(clips)
    assert torch.equal(again, e32)


def test_an_unknown_precision_is_refused(bundle):
    with pytest.raises(ValueError, match="precision must be one of"):
        StudyInterpreter.from_bundle(bundle, device="cpu", precision="fp16")


def test_batch_interpret_takes_the_precision_from_its_config(bundle, tmp_path):
    from pydantic import ValidationError

    from echoprime.batch_interpret import BatchInterpreter
    from echoprime.config import InterpretCfg

    assert InterpretCfg().precision == "fp32" and InterpretCfg(precision="bf16").precision == "bf16"
    with pytest.raises(ValidationError):
        InterpretCfg(precision="fp16")
    actor = BatchInterpreter(str(bundle), str(tmp_path / "out"), device="cpu", precision="bf16")
    assert actor.interp.precision == "bf16"
