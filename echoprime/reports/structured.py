"""Structured reports: sections of phrases, their text form and their phrase-id triples.

Text form (the release decoder's): for each section, ``"<Section>: "`` then every phrase
(slot filled with ``str(value)``) followed by a space; sections are separated by ``"[SEP] "``
and the report ends with ``"[SEP]"``::

    Left Ventricle: p1 p2 [SEP] Right Ventricle: p3 [SEP]

Triple form (the release bank's ``candidate_reports``): a list of ``(section_index,
phrase_index, value)`` where the indices address a :class:`Vocabulary` and ``value`` is the
slot value of a phrase that has a slot and ``float("nan")`` for one that has none (a bank stores
the triples as a table whose value column must hold a number for every row; NaN is the
missing value there, and decoding ignores it because such a phrase has nothing to fill).
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from echoprime.reports.vocabulary import NUMERICAL_SLOT, SLOT_RE, STRING_SLOT, Vocabulary, slot_count
from echoprime.taxonomy import SECTION_INDEX

Value = int | float | str
Triple = tuple[int, int, Any]

SEP = "[SEP]"


class ReportParseError(ValueError):
    """A report text or triple list does not fit the structured-report format or vocabulary."""


@dataclass(frozen=True)
class Phrase:
    """One phrase of a report: a vocabulary template and the value of its slot.

    Attributes:
        template: the phrase as the vocabulary spells it, slots unfilled.
        value: the slot's value (store ``int`` for integers so that they render without
            ``.0``); ``None`` exactly when the template has no slot.
    """

    template: str
    value: Value | None = None

    def __post_init__(self) -> None:
        n_slots = slot_count(self.template)
        if n_slots and self.value is None:
            raise ValueError(f"phrase {self.template!r} has a slot but no value was given")
        if not n_slots and self.value is not None:
            raise ValueError(f"phrase {self.template!r} has no slot, yet a value {self.value!r} was given")

    def render(self) -> str:
        """The phrase text with every slot replaced by ``str(value)``."""
        if self.value is None:
            return self.template
        text = str(self.value)
        return self.template.replace(NUMERICAL_SLOT, text).replace(STRING_SLOT, text)


class StructuredReport:
    """A report as ordered phrases per section.

    Sections are kept in taxonomy order (``echoprime.taxonomy.SECTIONS``); a section name
    outside the taxonomy (from a user's vocabulary) sorts after them, in insertion order.

    Args:
        sections: optional initial content, ``{section: [Phrase, ...]}``.
    """

    def __init__(self, sections: Mapping[str, Iterable[Phrase]] | None = None) -> None:
        self._sections: dict[str, list[Phrase]] = {}
        self._arrival: dict[str, int] = {}
        for section, phrases in (sections or {}).items():
            plist = list(phrases)
            if not plist:
                raise ValueError(f"section {section!r} has no phrases; leave it out instead")
            for p in plist:
                self.add_phrase(section, p)

    # -- building ------------------------------------------------------------------
    def add(self, section: str, template: str, value: Value | None = None) -> StructuredReport:
        """Append a phrase to a section (created on first use); returns ``self`` to chain."""
        return self.add_phrase(section, Phrase(template, value))

    def add_phrase(self, section: str, phrase: Phrase) -> StructuredReport:
        """Append a :class:`Phrase` to a section; returns ``self``."""
        if not isinstance(phrase, Phrase):
            raise TypeError(f"expected a Phrase for section {section!r}, got {type(phrase).__name__}")
        if section not in self._sections:
            self._sections[section] = []
            self._arrival[section] = len(self._arrival)
        self._sections[section].append(phrase)
        return self

    # -- reading -------------------------------------------------------------------
    @property
    def sections(self) -> tuple[str, ...]:
        """The sections present, in taxonomy order."""
        return tuple(sorted(self._sections, key=self._order_key))

    def phrases(self, section: str) -> tuple[Phrase, ...]:
        """The phrases of a present section, in order.

        Raises:
            KeyError: the section is not in this report.
        """
        if section not in self._sections:
            raise KeyError(f"section {section!r} is not in this report (present: {list(self.sections)})")
        return tuple(self._sections[section])

    def items(self) -> Iterator[tuple[str, tuple[Phrase, ...]]]:
        """``(section, phrases)`` pairs in taxonomy order."""
        for s in self.sections:
            yield s, tuple(self._sections[s])

    def section_body(self, section: str) -> str:
        """The section's rendered phrases joined by single spaces (no header, no [SEP])."""
        return " ".join(p.render() for p in self.phrases(section))

    def section_text(self, section: str) -> str:
        """One section in the release's text form: ``"<Section>: p1 p2 [SEP]"``."""
        rendered = "".join(p.render() + " " for p in self.phrases(section))
        return f"{section}: {rendered}{SEP}"

    def to_text(self) -> str:
        """The whole report in the release's text form (an empty report is ``"[SEP]"``)."""
        if not self._sections:
            return SEP  # what the release decoder produces for an empty triple list
        return " ".join(self.section_text(s) for s in self.sections)

    def to_triples(self, vocab: Vocabulary) -> list[Triple]:
        """Phrase-id encoding against ``vocab``: ``(section_index, phrase_index, value)``.

        ``value`` is the slot value, or ``float("nan")`` for a phrase without a slot.

        Raises:
            VocabularyError: a section or phrase is not in ``vocab``.
        """
        out: list[Triple] = []
        for section, phrases in self.items():
            s_idx = vocab.section_index(section)
            for p in phrases:
                value = p.value if p.value is not None else math.nan
                out.append((s_idx, vocab.phrase_index(section, p.template), value))
        return out

    @classmethod
    def from_triples(cls, triples: Iterable[Sequence[Any]], vocab: Vocabulary) -> StructuredReport:
        """Build a report from phrase-id triples.

        A section whose triples are not contiguous is merged into one section (phrases in
        the order met), and sections are put in taxonomy order, so ``to_text`` equals
        :func:`decode_triples` whenever the triples come in that order, as a bank's do.
        A slot value is kept as given (a float ``55.0`` renders ``55.0``, as the release
        decoder would render it).

        Raises:
            ReportParseError: a triple is malformed or a slotted phrase has no value.
            VocabularyError: an index is out of range for ``vocab``.
        """
        report = cls()
        for n, triple in enumerate(triples):
            s_idx, p_idx, value = _unpack_triple(triple, n)
            section, template = vocab.phrase(s_idx, p_idx)
            if slot_count(template):
                if value is None:
                    raise ReportParseError(
                        f"triple {n} {tuple(triple)!r}: phrase {template!r} needs a slot value"
                    )
                report.add(section, template, value)
            else:
                report.add(section, template)
        return report

    @classmethod
    def from_text(cls, text: str, vocab: Vocabulary) -> StructuredReport:
        """Parse the release's text form back into a report.

        The text is split on ``[SEP]``; each piece must start with a section header of
        ``vocab`` followed by ``":"`` (headers are taken from this structure only, never
        searched for inside phrases). The rest of the piece is segmented into phrases of
        that section, slots included. Numbers parse to ``int`` when written without a
        decimal point, else ``float``.

        Raises:
            ReportParseError: naming the piece or fragment that cannot be parsed.
        """
        if not isinstance(text, str):
            raise ReportParseError(f"report text must be a str, got {type(text).__name__}")
        headers = sorted(vocab.sections, key=len, reverse=True)
        report = cls()
        for piece in text.split(SEP):
            piece = piece.strip()
            if not piece:
                continue
            section = next((h for h in headers if piece.startswith(h + ":")), None)
            if section is None:
                raise ReportParseError(
                    f"report fragment {piece[:80]!r} does not start with a section header "
                    f"'<Section>:' of vocabulary {vocab.source}"
                )
            body = piece[len(section) + 1 :].strip()
            for template, value in _segment(body, section, vocab):
                report.add(section, template, value)
        return report

    # -- dunder ------------------------------------------------------------------------
    def __contains__(self, section: object) -> bool:
        return section in self._sections

    def __len__(self) -> int:
        return len(self._sections)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StructuredReport):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"StructuredReport({self.to_text()!r})"

    def _order_key(self, section: str) -> tuple[int, int]:
        return (SECTION_INDEX.get(section, len(SECTION_INDEX)), self._arrival[section])


def decode_triples(triples: Iterable[Sequence[Any]], vocab: Vocabulary) -> str:
    """Render phrase-id triples as text, exactly as the release decodes its bank.

    Walk the triples in order; when the section index changes, close the open section with
    ``"[SEP] "`` and open the new one with ``"<Section>: "``; append each phrase with its
    slots replaced by ``str(value)`` and a space; end with ``"[SEP]"``. Works with any
    vocabulary of the release's JSON shape.

    Raises:
        ReportParseError: a triple is malformed.
        VocabularyError: an index is out of range for ``vocab``.
    """
    parts: list[str] = []
    open_section: int | None = None
    for n, triple in enumerate(triples):
        s_idx, p_idx, value = _unpack_triple(triple, n)
        section, template = vocab.phrase(s_idx, p_idx)
        if s_idx != open_section:
            if open_section is not None:
                parts.append(SEP + " ")
            parts.append(section + ": ")
            open_section = s_idx
        text = str(value)
        parts.append(template.replace(NUMERICAL_SLOT, text).replace(STRING_SLOT, text) + " ")
    parts.append(SEP)
    return "".join(parts)


# -- helpers ---------------------------------------------------------------------------
def _unpack_triple(triple: Sequence[Any], n: int) -> tuple[int, int, Any]:
    try:
        s_idx, p_idx, value = triple
    except (TypeError, ValueError):
        raise ReportParseError(
            f"triple {n} is {triple!r}: expected (section_index, phrase_index, value)"
        ) from None
    return _as_index(s_idx, n, "section_index"), _as_index(p_idx, n, "phrase_index"), value


def _as_index(x: Any, n: int, what: str) -> int:
    # Banks stored through pandas may hold indices as integral floats (3.0); accept those,
    # reject anything that is not a whole number.
    try:
        return operator.index(x)
    except TypeError:
        if isinstance(x, float) and x.is_integer():
            return int(x)
    raise ReportParseError(f"triple {n}: {what} {x!r} is not an integer")


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_INT_RE = re.compile(r"[-+]?\d+")


def _parse_number(text: str) -> int | float:
    return int(text) if _INT_RE.fullmatch(text) else float(text)


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex for a slotted template; the first slot captures, later ones must repeat it
    (the release fills every slot of a phrase with the same value)."""
    parts: list[str] = []
    first_kind: str | None = None
    pos = 0
    for m in SLOT_RE.finditer(template):
        parts.append(re.escape(template[pos : m.start()]))
        if first_kind is None:
            first_kind = m.group()
            inner = _NUMBER if first_kind == NUMERICAL_SLOT else r".+?"
            parts.append(f"(?P<v>{inner})")
        else:
            parts.append("(?P=v)")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    # The phrase must end at whitespace or at the end of the body.
    return re.compile("".join(parts) + r"(?=\s|$)")


@functools.lru_cache(maxsize=64)
def _matchers(vocab: Vocabulary, section: str) -> tuple[tuple[str, re.Pattern[str] | None, bool], ...]:
    """Per phrase of a section: (template, regex or None for a literal, slot is numerical)."""
    out = []
    for template in vocab.phrases(section):
        if slot_count(template):
            first = SLOT_RE.search(template)
            assert first is not None
            out.append((template, _template_regex(template), first.group() == NUMERICAL_SLOT))
        else:
            out.append((template, None, False))
    return tuple(out)


def _segment(body: str, section: str, vocab: Vocabulary) -> list[tuple[str, Value | None]]:
    """Split a section body into vocabulary phrases (longest match first, with backtracking)."""
    matchers = _matchers(vocab, section)
    failed: set[int] = set()
    furthest = 0

    def walk(pos: int) -> list[tuple[str, Value | None]] | None:
        nonlocal furthest
        if pos == len(body):
            return []
        if pos in failed:
            return None
        furthest = max(furthest, pos)
        candidates: list[tuple[int, str, Value | None]] = []
        for template, rx, numerical in matchers:
            if rx is None:
                end = pos + len(template)
                if not body.startswith(template, pos) or (end < len(body) and not body[end].isspace()):
                    continue
                candidates.append((end, template, None))
            else:
                m = rx.match(body, pos)
                if m is None:
                    continue
                raw = m.group("v")
                candidates.append((m.end(), template, _parse_number(raw) if numerical else raw))
        # Longest phrase first; the stable sort keeps vocabulary order among equals.
        candidates.sort(key=lambda c: -c[0])
        for end, template, value in candidates:
            nxt = end
            while nxt < len(body) and body[nxt].isspace():
                nxt += 1
            rest = walk(nxt)
            if rest is not None:
                return [(template, value), *rest]
        failed.add(pos)
        return None

    result = walk(0)
    if result is None:
        raise ReportParseError(
            f"section {section!r}: no phrase of vocabulary {vocab.source} matches at "
            f"{body[furthest : furthest + 80]!r} (section text {body[:120]!r})"
        )
    return result
