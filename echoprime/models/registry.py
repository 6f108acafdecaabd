"""The model registry: every buildable model is a named builder function.

A builder is registered with :func:`register_model` (the timm habit); :func:`echoprime.models.create_model`
looks it up by name and calls it with the caller's overrides. Builders live next to the modules
they build (``video.py``, ``text.py``, ``views.py``, ``mil.py``); those modules are imported on the
first registry query so that ``import echoprime.models`` stays cheap (no transformers import
until a text model is asked for).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch.nn as nn

ModelKind = Literal["video", "text", "views", "mil"]
_KINDS: tuple[str, ...] = ("video", "text", "views", "mil")

# Modules whose import registers the built-in models.
_BUILTIN_MODULES: tuple[str, ...] = (
    "echoprime.models.video",
    "echoprime.models.text",
    "echoprime.models.views",
    "echoprime.models.mil",
)


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: registry name (``echoprime_tiny``).
        kind: what the model does (``video``, ``text``, ``views``, ``mil``).
        builder: function returning the module; keyword arguments are the overridable settings.
        doc: first line of the builder's docstring.
    """

    name: str
    kind: str
    builder: Callable[..., nn.Module]
    doc: str


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(kind: ModelKind, name: str | None = None) -> Callable[[F], F]:
    """Decorator registering a model builder under ``name`` (default: the function's name).

    Args:
        kind: one of ``video``, ``text``, ``views``, ``mil``.
        name: registry name; defaults to the decorated function's ``__name__``.

    Raises:
        ValueError: unknown kind, or a name registered twice by different functions.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}: expected one of {list(_KINDS)}")

    def deco(fn: F) -> F:
        key = name or fn.__name__
        old = _REGISTRY.get(key)
        # Re-registering the same function (module reloaded) is harmless; two different
        # builders under one name would make create_model ambiguous.
        if old is not None and old.builder.__qualname__ != fn.__qualname__:
            raise ValueError(
                f"model name {key!r} is already registered by {old.builder.__module__}.{old.builder.__qualname__}"
            )
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[key] = ModelEntry(key, kind, fn, doc)
        return fn

    return deco


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)
    _loaded = True


def list_models(kind: ModelKind | None = None, pattern: str | None = None) -> list[str]:
    """Registered model names, sorted.

    Args:
        kind: only models of this kind.
        pattern: shell-style filter, e.g. ``"*tiny*"``.
    """
    _ensure_loaded()
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}: expected one of {list(_KINDS)}")
    names = [e.name for e in _REGISTRY.values() if kind is None or e.kind == kind]
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    return sorted(names)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``.

    Raises:
        ValueError: unknown name; the message lists the known names and the closest matches.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    known = sorted(_REGISTRY)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(known)}") from None


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registry name (a text encoder may instead be a Hugging Face name/path)."""
    _ensure_loaded()
    return name in _REGISTRY
