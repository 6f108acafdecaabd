"""The phrase vocabulary of structured echo reports.

A vocabulary is a JSON object ``{section: {sub_heading: [phrase, ...]}}`` (the shape of the
published release's ``all_phr.json``). A section's phrase list is the concatenation of its
sub-heading lists in file order, and a phrase is addressed by ``(section_index,
phrase_index)`` into those lists: that pair is what a phrase-id encoded report stores. A
phrase may hold a ``<numerical>`` or ``<string>`` slot, filled with the triple's value when
the report is rendered.

The project ships its own vocabulary (``vocabulary.json`` next to this module, written for
this project); :class:`Vocabulary` reads it and equally a user's copy of the published one.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

NUMERICAL_SLOT = "<numerical>"
STRING_SLOT = "<string>"
SLOT_RE = re.compile(r"<numerical>|<string>")


class VocabularyError(ValueError):
    """A vocabulary file or dict does not have the expected shape, or a lookup failed."""


class Vocabulary:
    """An immutable, validated phrase vocabulary.

    Args:
        layout: ``{section: {sub_heading: [phrase, ...]}}``; key order is kept and defines the
            section indices and phrase indices.
        source: where the layout came from, quoted in error messages.

    Raises:
        VocabularyError: the layout does not have that shape.
    """

    def __init__(self, layout: Mapping[str, Any], source: str = "<dict>") -> None:
        self._source = source
        self._layout: dict[str, dict[str, tuple[str, ...]]] = _validate(layout, source)
        self._sections: tuple[str, ...] = tuple(self._layout)
        self._section_index = {s: i for i, s in enumerate(self._sections)}
        self._phrases: dict[str, tuple[str, ...]] = {
            s: tuple(p for plist in subs.values() for p in plist) for s, subs in self._layout.items()
        }
        # First occurrence wins: a published vocabulary may repeat a phrase under two
        # sub-headings, and an encoder must then pick one index deterministically.
        self._phrase_index: dict[str, dict[str, int]] = {}
        for s, plist in self._phrases.items():
            index: dict[str, int] = {}
            for i, p in enumerate(plist):
                index.setdefault(p, i)
            self._phrase_index[s] = index

    @classmethod
    def from_json(cls, path_or_dict: str | PathLike[str] | Mapping[str, Any]) -> Vocabulary:
        """Load and validate a vocabulary from a JSON file or an already-parsed dict.

        Raises:
            VocabularyError: the file cannot be read or parsed, or has the wrong shape.
        """
        if not isinstance(path_or_dict, (str, PathLike)):
            return cls(path_or_dict)  # validation names what was passed instead of a mapping
        path = Path(path_or_dict)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise VocabularyError(f"cannot read phrase vocabulary {str(path)!r}: {err}") from err
        try:
            layout = json.loads(text)
        except json.JSONDecodeError as err:
            raise VocabularyError(f"phrase vocabulary {str(path)!r} is not valid JSON: {err}") from err
        return cls(layout, source=str(path))

    # -- lookups -----------------------------------------------------------------------
    @property
    def sections(self) -> tuple[str, ...]:
        """Section names in file order (the order section indices refer to)."""
        return self._sections

    @property
    def source(self) -> str:
        """Where this vocabulary was loaded from."""
        return self._source

    def sub_headings(self, section: str) -> dict[str, tuple[str, ...]]:
        """The sub-headings of a section with their phrases, in file order."""
        return dict(self._layout[self._check_section(section)])

    def phrases(self, section: str) -> list[str]:
        """The section's phrase list (its sub-heading lists concatenated in file order)."""
        return list(self._phrases[self._check_section(section)])

    def section_index(self, section: str) -> int:
        """Position of ``section`` in :attr:`sections`.

        Raises:
            VocabularyError: the section is not in this vocabulary.
        """
        return self._section_index[self._check_section(section)]

    def phrase_index(self, section: str, phrase: str) -> int:
        """Index of ``phrase`` (a template, slots unfilled) in the section's phrase list.

        Raises:
            VocabularyError: the section or the phrase is unknown; the message suggests the
                closest phrases of that section.
        """
        index = self._phrase_index[self._check_section(section)]
        try:
            return index[phrase]
        except KeyError:
            close = difflib.get_close_matches(phrase, list(index), n=3, cutoff=0.6)
            hint = f"; closest: {close}" if close else ""
            raise VocabularyError(
                f"phrase {phrase!r} is not in section {section!r} of vocabulary {self._source}{hint}"
            ) from None

    def phrase(self, section_index: int, phrase_index: int) -> tuple[str, str]:
        """``(section name, phrase template)`` addressed by a triple's two indices.

        Raises:
            VocabularyError: an index is out of range (negative indices are rejected: they
                would silently address from the end).
        """
        if not 0 <= section_index < len(self._sections):
            raise VocabularyError(
                f"section index {section_index} out of range: vocabulary {self._source} has "
                f"{len(self._sections)} sections"
            )
        section = self._sections[section_index]
        plist = self._phrases[section]
        if not 0 <= phrase_index < len(plist):
            raise VocabularyError(
                f"phrase index {phrase_index} out of range for section {section!r} "
                f"({len(plist)} phrases) of vocabulary {self._source}"
            )
        return section, plist[phrase_index]

    def to_dict(self) -> dict[str, dict[str, list[str]]]:
        """The layout as plain JSON-ready dicts and lists."""
        return {s: {h: list(p) for h, p in subs.items()} for s, subs in self._layout.items()}

    def __contains__(self, section: object) -> bool:
        return section in self._section_index

    def __len__(self) -> int:
        """Total number of phrases over all sections."""
        return sum(len(p) for p in self._phrases.values())

    def __repr__(self) -> str:
        return f"Vocabulary({len(self._sections)} sections, {len(self)} phrases, source={self._source!r})"

    def _check_section(self, section: str) -> str:
        if section not in self._section_index:
            raise VocabularyError(
                f"unknown section {section!r} in vocabulary {self._source}: expected one of {list(self._sections)}"
            )
        return section


def slot_count(template: str) -> int:
    """How many ``<numerical>`` / ``<string>`` slots a phrase template holds."""
    return len(SLOT_RE.findall(template))


def _validate(layout: Any, source: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """Check the ``{section: {sub_heading: [phrase, ...]}}`` shape; return an immutable copy."""
    if not isinstance(layout, Mapping):
        raise VocabularyError(
            f"phrase vocabulary {source}: expected a JSON object {{section: {{sub_heading: [phrase, ...]}}}}, "
            f"got {type(layout).__name__}"
        )
    if not layout:
        raise VocabularyError(f"phrase vocabulary {source} has no sections")
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for section, subs in layout.items():
        if not isinstance(section, str) or not section.strip():
            raise VocabularyError(
                f"phrase vocabulary {source}: section names must be non-empty strings, got {section!r}"
            )
        if ":" in section or "[SEP]" in section:
            # The rendered text is "<Section>: ... [SEP]"; either would make it unparseable.
            raise VocabularyError(
                f"phrase vocabulary {source}: section name {section!r} may not contain ':' or '[SEP]'"
            )
        if not isinstance(subs, Mapping):
            raise VocabularyError(
                f"phrase vocabulary {source}: section {section!r} must map sub-headings to phrase lists, "
                f"got {type(subs).__name__}"
            )
        out_subs: dict[str, tuple[str, ...]] = {}
        for heading, plist in subs.items():
            if not isinstance(heading, str):
                raise VocabularyError(
                    f"phrase vocabulary {source}: sub-heading {heading!r} of section {section!r} must be a string"
                )
            if isinstance(plist, (str, bytes)) or not isinstance(plist, (list, tuple)):
                raise VocabularyError(
                    f"phrase vocabulary {source}: {section!r} / {heading!r} must be a list of phrases, "
                    f"got {type(plist).__name__}"
                )
            for phrase in plist:
                if not isinstance(phrase, str) or not phrase.strip():
                    raise VocabularyError(
                        f"phrase vocabulary {source}: {section!r} / {heading!r} holds {phrase!r}; "
                        "expected non-empty strings"
                    )
                if "[SEP]" in phrase:
                    raise VocabularyError(
                        f"phrase vocabulary {source}: phrase {phrase!r} of {section!r} may not contain '[SEP]'"
                    )
            out_subs[heading] = tuple(plist)
        out[section] = out_subs
    return out


@functools.lru_cache(maxsize=1)
def default_vocabulary() -> Vocabulary:
    """The project's own vocabulary (``echoprime/reports/vocabulary.json``), loaded once."""
    ref = resources.files("echoprime.reports").joinpath("vocabulary.json")
    layout = json.loads(ref.read_text(encoding="utf-8"))
    return Vocabulary(layout, source="echoprime/reports/vocabulary.json")
