"""A bundle being built by the training pipeline, stage by stage, then committed.

Each stage writes its own folder inside the bundle directory and a ``component.json`` saying how
to rebuild its model (registry name, builder overrides, weights file, key prefix)::

    BUNDLE/pretrained/   ray_jobs.pretrain   clip.safetensors (both towers), tokenizer/, config.yaml, ...
    BUNDLE/views/        ray_jobs.train_views view_classifier.safetensors, metrics.json
    BUNDLE/mil/          ray_jobs.fit_mil     mil.safetensors, mil_table.csv, metrics.json
    BUNDLE/bank/         ray_jobs.build_bank  the candidate bank; then thresholds.json and the manifest

Until ``build_bank`` commits the manifest (:func:`commit`), ``StudyInterpreter.from_bundle``
refuses the folder; :func:`load_parts` reads the stages written so far, for the later stages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from echoprime.bundle import BundleError, BundleWriter, load_module
from echoprime.preprocess import PreprocessSpec

COMPONENT_FILE = "component.json"


def write_component(stage_dir: str | os.PathLike, name: str, info: dict[str, Any]) -> None:
    """Record how a stage's model is rebuilt (paths relative to the bundle root)."""
    d = Path(stage_dir)
    d.mkdir(parents=True, exist_ok=True)
    existing = json.loads((d / COMPONENT_FILE).read_text()) if (d / COMPONENT_FILE).is_file() else {}
    existing[name] = info
    (d / COMPONENT_FILE).write_text(json.dumps(existing, indent=2))


def pretrained_components(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Component infos of the two towers in ``BUNDLE/pretrained`` (from its config and tokenizer)."""
    from echoprime.models.tokenizer import ReportTokenizer
    from echoprime.training.setup import _builder_takes

    root = Path(root)
    pre = root / "pretrained"
    if not (pre / "clip.safetensors").is_file():
        raise BundleError(
            f"bundle {root}: no pretrained model (pretrained/clip.safetensors); run `echoprime pretrain --out {root}/pretrained` first"
        )
    cfg = yaml.safe_load((pre / "config.yaml").read_text())
    spec = json.loads((pre / "preprocess.json").read_text())
    mcfg = cfg["model"]
    video, text = mcfg["video_encoder"], mcfg["text_encoder"]
    vo = {
        "embed_dim": int(mcfg["embed_dim"]),
        **{k: int(spec[k]) for k in ("frames", "size") if _builder_takes(video, k)},
    }
    vo.update(mcfg.get("video_options") or {})  # the architecture options pretraining used
    to: dict[str, Any] = {"embed_dim": int(mcfg["embed_dim"]), **(mcfg.get("text_options") or {})}
    vocab = ReportTokenizer.from_pretrained(pre / "tokenizer").vocab_size
    if _builder_takes(text, "vocab_size"):
        to["vocab_size"] = vocab
    if _builder_takes(text, "section_type_ids"):
        to["section_type_ids"] = bool(mcfg.get("section_type_ids", False))
    return {
        "video_encoder": {
            "model": video,
            "overrides": vo,
            "file": "pretrained/clip.safetensors",
            "prefix": "video_encoder.",
        },
        "text_encoder": {
            "model": text,
            "overrides": to,
            "file": "pretrained/clip.safetensors",
            "prefix": "text_encoder.",
            "tokenizer": "pretrained/tokenizer",
        },
    }


def staged_components(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every component written so far (pretrained towers + views + mil)."""
    root = Path(root)
    comps = pretrained_components(root)
    for stage in ("views", "mil"):
        f = root / stage / COMPONENT_FILE
        if f.is_file():
            comps.update(json.loads(f.read_text()))
    return comps


def spec_of(root: str | os.PathLike) -> PreprocessSpec:
    return PreprocessSpec.from_dict(json.loads((Path(root) / "pretrained" / "preprocess.json").read_text()))


def load_component(root: str | os.PathLike, name: str) -> torch.nn.Module:
    """Rebuild one staged component by name.

    Raises:
        BundleError: its stage has not run yet (names the command that makes it).
    """
    comps = staged_components(root)
    if name not in comps:
        cmd = {"view_classifier": "train-views", "mil": "fit-mil"}.get(name, "pretrain")
        raise BundleError(f"bundle {root}: no {name} yet; run `echoprime {cmd} ... --bundle {root}` first")
    info = comps[name]
    if name == "mil" and info.get("kind") != "learned":
        from echoprime.bundle import read_mil_table
        from echoprime.models.mil import TableMIL

        return TableMIL(torch.from_numpy(read_mil_table(Path(root) / info["table"])))
    return load_module(Path(root), info)


def commit(
    root: str | os.PathLike,
    config: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
    required: Sequence[str] = ("video_encoder", "text_encoder", "view_classifier", "mil"),
) -> dict[str, Any]:
    """Write the manifest over the staged bundle (hashing every file); returns it.

    Raises:
        BundleError: a required component or the bank is missing.
    """
    root = Path(root)
    comps = staged_components(root)
    missing = [c for c in required if c not in comps]
    if missing:
        raise BundleError(f"bundle {root}: cannot commit without {missing}")
    if not (root / "bank" / "manifest.json").is_file():
        raise BundleError(f"bundle {root}: cannot commit without a bank (run `echoprime build-bank`)")
    w = BundleWriter(root)
    w.components = comps
    spec = json.loads((root / "pretrained" / "preprocess.json").read_text())
    w.commit(spec=spec, config=config, extra=extra)
    return json.loads((root / "manifest.json").read_text())
