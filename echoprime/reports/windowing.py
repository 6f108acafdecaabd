"""Fit a tokenised report into a text encoder's length by whole sections.

A report is ``[CLS] <section> [SEP] <section> [SEP] ...``; cutting it anywhere else would feed
the encoder half a phrase, so a report longer than the encoder's ``max_len`` is cut at
``[SEP]`` boundaries: a random window of consecutive whole sections during training (every
section gets seen across epochs), the first window at inference (deterministic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def window_token_ids(
    token_ids: Sequence[int],
    sep_id: int,
    max_len: int,
    rng: np.random.Generator | None = None,
    *,
    cls_id: int | None = None,
) -> list[int]:
    """Cut a tokenised report to at most ``max_len`` tokens at section boundaries.

    The ids after an optional leading ``cls_id`` are split into sections, each ending with
    its ``sep_id`` (consecutive separators, e.g. a tokenizer's own final ``[SEP]`` after the
    report's, stay with the section before them; unterminated trailing tokens get a
    ``sep_id`` appended). A report that fits is returned unchanged.

    With ``rng`` (training), a start section is drawn uniformly, sections are taken forward
    while they fit, then backward from the start while they still fit, so the window is
    maximal. Without ``rng`` (inference), the window starts at the first section. The
    result keeps the leading ``cls_id`` and ends with ``sep_id``.

    Last resort: when the chosen start section alone does not fit, it is truncated to
    ``max_len - 1`` tokens (with the ``[CLS]``, ``max_len - 2``) and closed with ``sep_id``;
    this is the only case where a section is cut.

    Args:
        token_ids: the report's ids, unpadded (strip padding first).
        sep_id: the ``[SEP]`` id that ends each section.
        max_len: the encoder's maximum sequence length.
        rng: random window when given, first window when ``None``.
        cls_id: the ``[CLS]`` id, kept in front when the report starts with it.

    Returns:
        The windowed ids as plain Python ints.

    Raises:
        ValueError: ``max_len`` leaves no room for a token and its ``[SEP]``.
    """
    ids = [int(t) for t in token_ids]
    prefix = ids[:1] if (cls_id is not None and ids and ids[0] == cls_id) else []
    if max_len < len(prefix) + 2:
        raise ValueError(f"max_len={max_len} is too small: need room for [CLS] (if any), one token and [SEP]")
    if len(ids) <= max_len:
        return ids
    budget = max_len - len(prefix)
    units = _sections(ids[len(prefix) :], sep_id)
    lengths = [len(u) for u in units]

    start = 0 if rng is None else int(rng.integers(len(units)))
    if lengths[start] > budget:
        return prefix + units[start][: budget - 1] + [sep_id]
    stop, used = start, 0
    while stop < len(units) and used + lengths[stop] <= budget:
        used += lengths[stop]
        stop += 1
    if rng is not None:
        # Grow backwards too, so that a start near the end still fills the window.
        while start > 0 and used + lengths[start - 1] <= budget:
            start -= 1
            used += lengths[start]
    return prefix + [t for u in units[start:stop] for t in u]


def _sections(body: list[int], sep_id: int) -> list[list[int]]:
    """Split ids into sections that each end with ``sep_id``."""
    units: list[list[int]] = []
    current: list[int] = []
    for t in body:
        current.append(t)
        if t == sep_id:
            if len(current) == 1 and units:
                units[-1].append(t)  # a bare [SEP] belongs to the section before it
            else:
                units.append(current)
            current = []
    if current:
        units.append(current + [sep_id])
    return units
