"""Building what a pretraining run needs from the config, and exporting what it produced.

Kept apart from the Ray job so that the same model, tokenizer and export code runs in a unit
test, in a Ray Train worker, and when a bundle is assembled.

The pretrained output directory (``PRETRAINED_FILES``)::

    clip.safetensors       EchoClip weights (video_encoder.*, text_encoder.*, logit_scale)
    tokenizer/             the report tokenizer (Hugging Face files + report_tokenizer.json)
    config.yaml            the resolved run config
    preprocess.json        the preprocessing spec of the clips the model was trained on
    metrics.json           per-epoch training and validation numbers
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_model, save_model

CLIP_FILE = "clip.safetensors"
TOKENIZER_DIR = "tokenizer"
PREPROCESS_FILE = "preprocess.json"
METRICS_FILE = "metrics.json"


def study_index(study_id: str) -> int:
    """A stable int64 per study id, so clips of one study are positives of each other in a batch."""
    return int.from_bytes(hashlib.blake2b(study_id.encode(), digest_size=8).digest(), "big") >> 1


def _builder_takes(name: str, key: str) -> bool:
    from echoprime.models.registry import get_entry, is_registered

    if not is_registered(name):
        return False
    return key in inspect.signature(get_entry(name).builder).parameters


def build_clip(model_cfg: Mapping[str, Any], spec: Mapping[str, Any], vocab_size: int | None) -> nn.Module:
    """The EchoClip of a config's ``model`` section for clips of ``spec`` (frames, size).

    Tiny encoders are built for the spec's clip shape; a tokenizer trained on the corpus sets the
    tiny text tower's vocabulary size.
    """
    from echoprime.models import create_clip
    from echoprime.training.labels import LABEL_NAMES

    video, text = model_cfg["video_encoder"], model_cfg["text_encoder"]
    vo = {k: int(spec[k]) for k in ("frames", "size") if _builder_takes(video, k)}
    vo.update(model_cfg.get("video_options") or {})
    to: dict[str, Any] = dict(model_cfg.get("text_options") or {})
    if vocab_size is not None and _builder_takes(text, "vocab_size"):
        to["vocab_size"] = int(vocab_size)
    from echoprime.models.registry import is_registered

    if _builder_takes(text, "section_type_ids") or not is_registered(text):  # pretrained BERTs take it too
        to["section_type_ids"] = bool(model_cfg.get("section_type_ids", False))
    return create_clip(
        video,
        text,
        embed_dim=int(model_cfg["embed_dim"]),
        video_overrides=vo,
        text_overrides=to,
        init_logit_scale=float(model_cfg["init_logit_scale"]),
        max_logit_scale=float(model_cfg["max_logit_scale"]),
        label_outputs=len(LABEL_NAMES) if model_cfg.get("label_heads", "none") != "none" else 0,
        shared_label_head=model_cfg.get("label_heads") == "shared",
    )


def uses_trained_tokenizer(model_cfg: Mapping[str, Any]) -> bool:
    """Registry text towers (tiny_bert, tiny_bag) learn a WordPiece vocabulary from the reports;
    a pretrained BERT brings its own tokenizer."""
    from echoprime.models.registry import is_registered

    name = model_cfg["text_encoder"]
    return is_registered(name) and name != "biomedbert"


def build_tokenizer(model_cfg: Mapping[str, Any], reports: Iterable[str], out_dir: str | os.PathLike) -> Path:
    """Train (tiny towers) or load (BERT-family, offline) the report tokenizer; save it to ``out_dir``.

    Raises:
        echoprime.models.text.TextModelNotFoundError: a named BERT tokenizer is not available locally.
    """
    from echoprime.models.text import load_pretrained_tokenizer
    from echoprime.models.tokenizer import ReportTokenizer, quantise_numbers, train_wordpiece_tokenizer

    max_len = int(model_cfg["max_tokens"])
    step = float(model_cfg.get("number_step", 0.0))
    if uses_trained_tokenizer(model_cfg):
        hf = train_wordpiece_tokenizer(
            (quantise_numbers(r, step) for r in reports),
            vocab_size=int(model_cfg["tokenizer_vocab"]),
            model_max_length=max_len,
        )
    else:
        name = model_cfg["text_encoder"]
        hf = load_pretrained_tokenizer(
            "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract" if name == "biomedbert" else name
        )
    tok = ReportTokenizer(
        hf,
        max_len=max_len,
        section_type_ids=bool(model_cfg.get("section_type_ids", False)),
        number_step=step,
    )
    return tok.save_pretrained(out_dir)


def export_pretrained(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike,
    config_yaml: str,
    spec: Mapping[str, Any],
    metrics: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the pretrained model in the bundle layout (see module doc); returns the directory."""
    from echoprime.training.checkpoint import unwrap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_model(unwrap(model), str(out / CLIP_FILE))
    tdir = out / TOKENIZER_DIR
    if Path(tokenizer_dir).resolve() != tdir.resolve():
        shutil.rmtree(tdir, ignore_errors=True)
        shutil.copytree(tokenizer_dir, tdir)
    (out / "config.yaml").write_text(config_yaml)
    (out / PREPROCESS_FILE).write_text(json.dumps(dict(spec), indent=2))
    (out / METRICS_FILE).write_text(json.dumps(metrics or [], indent=2, default=float))
    return out


def load_pretrained(pretrained_dir: str | os.PathLike, model_cfg: Mapping[str, Any] | None = None):
    """Rebuild the EchoClip, its tokenizer and spec from :func:`export_pretrained` output.

    Returns:
        ``(model, tokenizer, spec, config)``; the model is in eval mode on the CPU.
    """
    import yaml

    from echoprime.models.tokenizer import ReportTokenizer

    d = Path(pretrained_dir)
    for f in (CLIP_FILE, "config.yaml", PREPROCESS_FILE):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d} is not a pretrained model: {f} is missing")
    config = yaml.safe_load((d / "config.yaml").read_text())
    spec = json.loads((d / PREPROCESS_FILE).read_text())
    tok = ReportTokenizer.from_pretrained(d / TOKENIZER_DIR)
    model = build_clip(model_cfg or config["model"], spec, tok.vocab_size)
    missing, unexpected = load_model(model, str(d / CLIP_FILE), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{d / CLIP_FILE} does not match the configured model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.eval()
    return model, tok, spec, config


def prepare_tokenizer(
    model_cfg: Mapping[str, Any],
    reports: Iterable[str],
    out_dir: str | os.PathLike,
    init_tokenizer: str | os.PathLike | None = None,
) -> Path:
    """The run's tokenizer in ``out_dir``: a copy of the ``--init`` bundle's (its towers read
    those tokens), else :func:`build_tokenizer` on the training reports."""
    if init_tokenizer is not None:
        return Path(shutil.copytree(init_tokenizer, out_dir))
    return build_tokenizer(model_cfg, reports, out_dir)


def set_threads(n: float) -> None:
    """Intra-op threads for a worker given its CPU share (at least 1)."""
    torch.set_num_threads(max(1, int(n)))
