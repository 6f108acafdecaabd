"""Loading the published release's state dicts into this package's modules, strictly.

The release stores plain torchvision / transformers state dicts (see
docs/release-compat.md, "The files"): the video encoder's keys are those of a bare
``torchvision.models.video.mvit_v2_s`` (``conv_proj.weight``, ``blocks.0...``, ``head.1.weight``),
the view classifier's those of a bare ``convnext_base``. Our wrappers keep the torchvision module
as an attribute (``backbone``) so that they can add ``forward_features``/``forward_head``; a module
that wraps a release network declares the prefix of that attribute as ``release_prefix`` and
these helpers add or strip it. Loading is always ``strict=True``: a release file that does not
match the architecture exactly is an error, never a silently half-loaded model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

# Buffers that some library versions persist in state dicts and others do not; they hold no
# learned values (BERT's ``position_ids`` is ``arange(max_positions)``), so a release file written
# with an older transformers that still contains them loads into a newer one that does not.
_NON_LEARNED_SUFFIXES: tuple[str, ...] = ("embeddings.position_ids",)


def release_prefix(module: nn.Module) -> str:
    """The key prefix under which ``module`` holds the release network (``""`` when keys match as-is)."""
    return getattr(module, "release_prefix", "")


def load_release_state_dict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "<state dict>"
) -> None:
    """Load a release state dict into ``module`` with ``strict=True``.

    Args:
        module: a wrapper that declares ``release_prefix`` (video encoder, view classifier) or a
            module whose keys are the release's (the text encoder).
        state_dict: the release's tensors, e.g. from ``torch.load(path, weights_only=True)``.
        source: name of the file, used in error messages.

    Raises:
        ValueError: missing or unexpected keys, or a tensor of the wrong shape; the message
            names up to ten of each and the source.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"{source}: expected a state dict (mapping of name -> tensor), got {type(state_dict).__name__}"
        )
    prefix = release_prefix(module)
    own = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        key = prefix + k
        if key not in own and k.endswith(_NON_LEARNED_SUFFIXES):
            continue
        mapped[key] = v
    missing = [k for k in own if k not in mapped and not k.endswith(_NON_LEARNED_SUFFIXES)]
    unexpected = [k[len(prefix) :] for k in mapped if k not in own]
    shape_bad = [
        f"{k[len(prefix) :]}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shape_bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {[k[len(prefix) :] for k in missing[:10]]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:10]})")
        if shape_bad:
            parts.append(f"{len(shape_bad)} shape mismatches (e.g. {shape_bad[:10]})")
        raise ValueError(
            f"{source} does not match {type(module).__name__}: " + "; ".join(parts) + ". "
            "Is it the right file for this model (encoder / view classifier / text encoder)?"
        )
    # Buffers missing from the file but not learned (position_ids) keep their constructed values.
    for k in own:
        if k not in mapped:
            mapped[k] = own[k]
    module.load_state_dict(mapped, strict=True)


def release_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``module`` in the release's key layout (the inverse of the loader)."""
    prefix = release_prefix(module)
    sd = module.state_dict()
    if not prefix:
        return dict(sd)
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if len(out) != len(sd):
        extra = [k for k in sd if not k.startswith(prefix)]
        raise ValueError(
            f"{type(module).__name__} has tensors outside {prefix!r} that the release format cannot hold: {extra[:10]}"
        )
    return out
