"""Starting a pretraining run from an existing model instead of from scratch (issue 26).

``echoprime pretrain --init BUNDLE`` continues contrastive training from a bundle's towers: our
own bundle, or a published release converted with ``echoprime import-release`` (its video
encoder, and its text encoder where the conversion had one). What the bundle fixes, the config
must agree with, and a difference is an error that names both sides: the preprocessing spec of
the clips (the shards'), the towers' registry names and the joint embedding width. The bundle's
tokenizer is used as it is (a new one would renumber the text tower's vocabulary).

Options a fine-tune needs, all in ``train.*``:

* ``text_trainable_layers``: None trains the whole text tower; 0 freezes it (a small archive of
  reports overfits a large text tower quickly, the published release's users found); ``n``
  trains only its last ``n`` layers and what sits above them (pooler, projection).
* ``layer_decay``: layer-wise learning-rate decay: the parameters of a tower's layer ``i`` of
  ``L`` learn at ``lr * layer_decay ** (L - i)``, its embeddings at ``lr * layer_decay ** (L + 1)``,
  everything above the layers (heads, projections, the logit scale) at ``lr``. 1.0: off.
* ``early_stop_patience``: stop after that many epochs without a better validation retrieval
  (``early_stop_metric``, default study-level video->text R@10 on the val split), on every worker
  together; the model exported is the last one.
* the validation numbers of the starting model are logged at step 0 (``kind: "init"`` in the
  run's history), so the gain of the fine-tune is visible.

Layers are found by name: a parameter whose name holds ``.layer.N.``, ``.layers.N.`` or
``.blocks.N.`` (BERT's encoder, our tiny towers, torchvision's mViT) belongs to layer ``N``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echoprime.bundle import fetch, load_module, read_manifest
from echoprime.models.tokenizer import ReportTokenizer

_LAYER = re.compile(r"\.(?:layer|layers|blocks)\.(\d+)\.")
TOWERS = ("video_encoder", "text_encoder")
SPEC_KEYS = ("size", "frames", "stride", "mean", "std", "crop_fraction", "mask")


class InitError(ValueError):
    """A bundle that cannot start this run; the message names the bundle's and the config's side."""


@dataclass
class InitModel:
    """What a run takes from the bundle it starts from.

    Attributes:
        source: the bundle's URI.
        state: ``{"video_encoder.<key>": tensor, "text_encoder.<key>": tensor}`` of the towers the
            bundle holds (CPU tensors).
        towers: which towers those are.
        tokenizer_dir: the bundle's tokenizer (None when it has no text tower).
        vocab_size: that tokenizer's vocabulary size.
    """

    source: str
    state: dict[str, torch.Tensor]
    towers: tuple[str, ...]
    tokenizer_dir: Path | None
    vocab_size: int | None = None
    notes: list[str] = field(default_factory=list)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    return a == b


def check_compatible(
    bundle: str, manifest: Mapping[str, Any], model_cfg: Mapping[str, Any], shard_spec: Mapping[str, Any]
) -> None:
    """Refuse a bundle whose spec, towers or embedding width differ from the config and shards.

    Raises:
        InitError: naming each difference, the bundle's value and the config's (or the shards').
    """
    diffs = _spec_diffs(manifest, shard_spec)
    comps = manifest.get("components", {})
    for tower in TOWERS:
        info = comps.get(tower)
        if info is None:
            continue
        if info.get("model") != model_cfg.get(tower):
            diffs.append(f"model.{tower}: bundle {info.get('model')!r}, config {model_cfg.get(tower)!r}")
        dim = (info.get("overrides") or {}).get("embed_dim")
        if dim is not None and int(dim) != int(model_cfg["embed_dim"]):
            diffs.append(f"model.embed_dim ({tower}): bundle {dim}, config {model_cfg['embed_dim']}")
    if "video_encoder" not in comps:
        diffs.append("the bundle has no video encoder")
    if diffs:
        raise InitError(
            f"cannot start from bundle {bundle}: " + "; ".join(diffs)
            + " (set the config to the bundle's values, or ingest the archive with the bundle's "
            "preprocess.json)"
        )  # fmt: skip


def _spec_diffs(manifest: Mapping[str, Any], shard_spec: Mapping[str, Any]) -> list[str]:
    spec = manifest.get("spec", {})
    return [
        f"preprocessing {k}: bundle {spec.get(k)!r}, shards {shard_spec.get(k)!r}"
        for k in SPEC_KEYS
        if (k in spec or k in shard_spec) and not _same(spec.get(k), shard_spec.get(k))
    ]


def check_spec(bundle: str, manifest: Mapping[str, Any], shard_spec: Mapping[str, Any]) -> None:
    """Refuse shards whose clips were not made with the bundle's preprocessing (a head reads the
    bundle's tower on them).

    Raises:
        InitError: naming each difference, the bundle's value and the shards'.
    """
    if diffs := _spec_diffs(manifest, shard_spec):
        raise InitError(
            f"the shards were not preprocessed as bundle {bundle} expects: " + "; ".join(diffs)
            + " (ingest the archive with the bundle's preprocess.json)"
        )  # fmt: skip


def load_init(bundle: str, model_cfg: Mapping[str, Any], shard_spec: Mapping[str, Any]) -> InitModel:
    """Read the towers and tokenizer of ``bundle`` after :func:`check_compatible`.

    Raises:
        InitError: incompatible (see :func:`check_compatible`).
        echoprime.bundle.BundleError: an unusable bundle.
    """
    root = fetch(bundle)
    manifest = read_manifest(root, verify=True)
    check_compatible(bundle, manifest, model_cfg, shard_spec)
    comps = manifest["components"]
    want = [t for t in TOWERS if t in comps]
    state: dict[str, torch.Tensor] = {}
    for tower in want:
        module = load_module(root, comps[tower])
        state.update({f"{tower}.{k}": v.detach().cpu().clone() for k, v in module.state_dict().items()})
    notes = []
    tok_dir = None
    vocab = None
    if "text_encoder" in comps:
        tok_dir = root / comps["text_encoder"].get("tokenizer", "tokenizer")
        vocab = ReportTokenizer.from_pretrained(tok_dir).vocab_size
    else:
        notes.append("the bundle has no text encoder: the text tower starts from the config's initialisation")
    return InitModel(bundle, state, tuple(want), tok_dir, vocab, notes)


def apply_init(model: nn.Module, state: Mapping[str, torch.Tensor], towers: Iterable[str]) -> None:
    """Load the towers' weights into an EchoClip; every key of those towers must match.

    Raises:
        InitError: a tower key missing on either side or of another shape (names the first few).
    """
    towers = tuple(towers)
    own = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in towers}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        raise InitError(
            f"the bundle's towers do not fit the configured model: missing {missing[:4]}, unexpected "
            f"{extra[:4]}, other shapes {sorted(shapes)[:4]}"
        )
    model.load_state_dict(dict(state), strict=False)


def layer_of(name: str) -> int | None:
    """The layer index a parameter name holds (``...layers.3.attn...`` -> 3), or None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def freeze_text(model: nn.Module, trainable_layers: int | None) -> int:
    """Freeze the text tower, or all of it but its last ``trainable_layers`` layers and what sits
    above them; returns the number of parameters left trainable in it. None: nothing frozen."""
    return freeze_layers(model.text_encoder, trainable_layers)


def freeze_layers(tower: nn.Module, trainable_layers: int | None) -> int:
    """Freeze a tower, or all of it but its last ``trainable_layers`` layers and what sits above
    them (embeddings below the layers stay frozen); returns the number of parameters left
    trainable. None: nothing frozen."""
    text = tower
    if trainable_layers is None:
        for p in text.parameters():
            p.requires_grad_(True)
        return sum(p.numel() for p in text.parameters())
    layers = [layer_of("." + n) for n, _ in text.named_parameters()]
    top = max((x for x in layers if x is not None), default=-1)
    first_trainable = top + 1 - trainable_layers
    kept = 0
    for (name, p), layer in zip(text.named_parameters(), layers, strict=True):
        if trainable_layers == 0:
            train = False
        elif layer is not None:
            train = layer >= first_trainable
        else:  # embeddings below the layers stay frozen; pooler / projection above them train
            train = not _is_embedding(name)
        p.requires_grad_(train)
        kept += p.numel() if train else 0
    return kept


def _is_embedding(name: str) -> bool:
    return "embed" in name.split(".")[0] or name.startswith("embeddings") or "word_embeddings" in name


def param_groups(model: nn.Module, decay: float) -> list[dict[str, Any]]:
    """Trainable parameters grouped by learning-rate scale (module docstring); ``decay`` 1: one group."""
    if decay == 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
    depth: dict[str, int] = {}
    for name, _ in model.named_parameters():
        tower = name.split(".", 1)[0]
        if (i := layer_of(name)) is not None:
            depth[tower] = max(depth.get(tower, -1), i + 1)
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tower, rest = (name.split(".", 1) + [""])[:2]
        n_layers = depth.get(tower, 0)
        i = layer_of(name)
        if i is not None:
            scale = decay ** (n_layers - i)
        elif n_layers and _is_embedding(rest):
            scale = decay ** (n_layers + 1)
        else:
            scale = 1.0
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr_scale": s} for s, ps in sorted(groups.items(), reverse=True)]


def should_stop(history: list[Mapping[str, Any]], metric: str, patience: int | None) -> bool:
    """True when the last ``patience`` epochs gave no ``metric`` above the best before them (the
    starting model's ``init`` entry counts as the first)."""
    if not patience:
        return False
    values = [
        h[metric]
        for h in history
        if h.get("kind") in ("init", "epoch") and h.get(metric) is not None and h[metric] == h[metric]
    ]
    if len(values) <= patience:
        return False
    return max(values[-patience:]) <= max(values[:-patience])
