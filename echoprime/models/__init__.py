"""Models: a registry + factory over video encoders, text encoders, view classifiers and MIL attention.

Example::

    from echoprime.models import create_model, list_models
    list_models("video")          # ['echoprime_mvit_tiny', 'echoprime_mvit_v2_s', 'echoprime_tiny']
    enc = create_model("echoprime_tiny", frames=16, size=32)

Submodules are imported on first use (PEP 562) so ``import echoprime.models`` does not pull in
transformers or torchvision until a model is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from echoprime.models.registry import list_models, register_model

_LAZY: dict[str, str] = {
    "create_model": "echoprime.models.factory",
    "create_clip": "echoprime.models.factory",
    "load_release_state_dict": "echoprime.models.state_dict",
    "release_state_dict": "echoprime.models.state_dict",
    "EchoClip": "echoprime.models.clip",
    "MViTVideoEncoder": "echoprime.models.video",
    "TinyVideoEncoder": "echoprime.models.video",
    "TextEncoder": "echoprime.models.text",
    "TextModelNotFoundError": "echoprime.models.text",
    "create_text_encoder": "echoprime.models.factory",
    "biomedbert_config": "echoprime.models.text",
    "load_pretrained_tokenizer": "echoprime.models.text",
    "ReportTokenizer": "echoprime.models.tokenizer",
    "train_wordpiece_tokenizer": "echoprime.models.tokenizer",
    "ConvNeXtViewClassifier": "echoprime.models.views",
    "TinyViewClassifier": "echoprime.models.views",
    "SectionAttentionMIL": "echoprime.models.mil",
    "TableMIL": "echoprime.models.mil",
    "table_weights": "echoprime.models.mil",
    "export_table": "echoprime.models.mil",
}

__all__ = ["list_models", "register_model", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'echoprime.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value
