"""Report tokenisation: a WordPiece tokenizer trained on the report corpus and a section-aware wrapper.

Reports are written section by section, ``"Left Ventricle: p1 p2 [SEP] Right Ventricle: p3 [SEP]"``
(the release's decoded-report format). :class:`ReportTokenizer` turns such a text into
``[CLS] <section 1 tokens> [SEP] <section 2 tokens> [SEP] ... [PAD]...`` plus ``token_type_ids`` that
hold each token's section (``SECTION_INDEX + 1``; 0 for [CLS], [SEP] and [PAD]), so a small text
encoder knows which section a word such as "moderate" belongs to. A report longer than
``max_len`` is cut at [SEP] boundaries by a pluggable window function (default
:func:`echoprime.reports.window_token_ids`).
"""

from __future__ import annotations

import functools
import heapq
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from echoprime.reports import SECTION_ALIASES, window_token_ids
from echoprime.taxonomy import SECTION_INDEX, SECTIONS

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Section headers, case-insensitive, with the free-text aliases the report parser knows.
_SECTION_BY_LOWER = {s.lower(): i for i, s in enumerate(SECTIONS)} | {
    a: SECTION_INDEX[s] for a, s in SECTION_ALIASES.items()
}
_CONFIG_NAME = "report_tokenizer.json"

_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")


def quantise_numbers(text: str, step: float) -> str:
    """Every number in ``text`` rounded to the nearest multiple of ``step`` (``step <= 0``: unchanged).

    What the text tower reads, not what the report says: the exact ejection fraction, pressure
    and heart rate make each report recognisable by a number token, which a small text tower
    memorises instead of grouping reports by their findings (docs/learning.md). Rounded values
    print as integers when the step is whole (``"57%"`` -> ``"55%"`` at step 5).
    """
    if step <= 0:
        return text

    def repl(m: re.Match[str]) -> str:
        v = round(float(m.group(0)) / step) * step
        return str(int(round(v))) if float(step).is_integer() else f"{v:g}"

    return _NUMBER.sub(repl, text)


# (token_ids, sep_id, max_len, rng) -> a window of token_ids of at most max_len tokens.
WindowFn = Callable[[list[int], int, int, "np.random.Generator | None"], list[int]]


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 1, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a BERT-style uncased WordPiece tokenizer on report texts, deterministically.

    Lower-casing BERT normaliser, whitespace + punctuation pre-tokeniser, special tokens
    ``[PAD]=0, [UNK], [CLS], [SEP], [MASK]``; literal ``[SEP]`` in the texts is read as the special token.
    The vocabulary is learned by :func:`wordpiece_vocab` (the merges of the ``tokenizers``
    library's WordPiece trainer, whose ties between equally frequent pairs fall in hash order that
    changes from process to process: the same corpus gave a different vocabulary each run). Here
    ties go to the alphabetically first pair, so the same texts give the same tokenizer.

    Args:
        texts: the training corpus (report texts).
        vocab_size: target vocabulary size (a small corpus may yield fewer).
        min_frequency: pairs seen fewer times are not merged.
        model_max_length: the tokenizer's declared maximum length.

    Returns:
        A ``PreTrainedTokenizerFast``; persist it with ``save_pretrained(dir)``.

    Raises:
        ValueError: an empty corpus, or a text that is not a string.
    """
    normalizer = normalizers.BertNormalizer(
        lowercase=True, clean_text=True, handle_chinese_chars=True, strip_accents=None
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The special tokens are not text to learn: a literal "[SEP]" would teach the pieces "[",
    # "sep", "]"; strip them from the training text (encoding still maps them).
    words: Counter[str] = Counter()
    for text in texts:
        norm = normalizer.normalize_str(_strip_specials(text))
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(norm))
    vocab = wordpiece_vocab(words, vocab_size, min_frequency)
    if len(vocab) <= len(SPECIAL_TOKENS):
        raise ValueError("cannot train a tokenizer: the corpus is empty (no text beyond special tokens)")
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def wordpiece_vocab(words: Mapping[str, int], vocab_size: int, min_frequency: int = 1) -> list[str]:
    """A WordPiece vocabulary from word counts, the same for the same counts.

    The special tokens, then every character that starts a word and every ``##``-prefixed
    character that continues one, then merges: repeatedly the most frequent adjacent pair of
    pieces (weighted by word count; ties to the alphabetically first pair) becomes one piece, until
    the vocabulary holds ``vocab_size`` pieces or no pair is seen ``min_frequency`` times.

    Args:
        words: pre-tokenised words and how often each occurs.
        vocab_size: the size to stop at (the special tokens and the alphabet are always kept).
        min_frequency: pairs seen fewer times are not merged.

    Returns:
        The pieces in id order.
    """
    order = sorted(w for w in words if w)
    seqs = [[w[0], *("##" + c for c in w[1:])] for w in order]
    freq = [int(words[w]) for w in order]
    vocab = list(SPECIAL_TOKENS)
    vocab += sorted({piece for seq in seqs for piece in seq} - set(vocab))
    known = set(vocab)
    counts: Counter[tuple[str, str]] = Counter()
    holders: dict[tuple[str, str], set[int]] = {}
    for i, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:], strict=False):
            counts[pair] += freq[i]
            holders.setdefault(pair, set()).add(i)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:
            continue  # a stale entry: this pair's count has changed since it was pushed
        if -neg < min_frequency:
            break
        a, b = pair
        merged = a + b[2:]  # b continues a word, so it carries the "##" prefix
        changed: set[tuple[str, str]] = set()
        for i in sorted(holders.pop(pair, ())):
            seq, f = seqs[i], freq[i]
            out, j = [], 0
            while j < len(seq):
                if j + 1 < len(seq) and seq[j] == a and seq[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(seq[j])
                    j += 1
            if len(out) == len(seq):
                continue  # no longer holds the pair
            for p in zip(seq, seq[1:], strict=False):
                counts[p] -= f
                changed.add(p)
            for p in zip(out, out[1:], strict=False):
                counts[p] += f
                holders.setdefault(p, set()).add(i)
                changed.add(p)
            seqs[i] = out
        counts.pop(pair, None)
        for p in changed:
            if counts.get(p, 0) > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                counts.pop(p, None)
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
    return vocab


def _strip_specials(text: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"tokenizer training texts must be str, got {type(text).__name__}")
    for t in SPECIAL_TOKENS:
        text = text.replace(t, " ")
    return text


def report_chunks(text: str, strict: bool = True) -> list[tuple[int, str]]:
    """Split a report into ``(section index or -1, chunk text)`` at literal ``[SEP]`` markers.

    A chunk's section is read from its header (``"Left Ventricle: ..."``, case-insensitive).

    Args:
        text: the report.
        strict: a chunk without a known section header is an error; otherwise its index is -1.

    Raises:
        ValueError: (strict) a chunk does not start with a known ``"<Section>:"`` header.
    """
    out: list[tuple[int, str]] = []
    for chunk in text.split("[SEP]"):
        chunk = chunk.strip()
        if not chunk:
            continue
        header = chunk.split(":", 1)[0].strip().lower() if ":" in chunk else None
        idx = _SECTION_BY_LOWER.get(header, -1) if header is not None else -1
        if idx < 0 and strict:
            raise ValueError(
                f"report chunk {chunk[:60]!r} does not start with a known section header '<Section>: ...'; "
                f"known sections: {list(SECTIONS)} (pass strict_sections=False to tokenise free text)"
            )
        out.append((idx, chunk))
    return out


def _window_positions(original: list[int], windowed: list[int], sep_id: int) -> list[int]:
    """Map each token of ``windowed`` to its position in ``original`` (-1 for an added closing [SEP]).

    A window is ``[CLS]`` + a contiguous run of ``original`` that starts at a section start,
    possibly cut and closed with [SEP]. Anything else breaks the window-function contract.
    """
    if windowed == original:
        return list(range(len(original)))
    if not windowed or windowed[0] != original[0]:
        raise ValueError("window function must keep the leading [CLS]")
    body = windowed[1:]
    starts = [1] + [i + 1 for i, t in enumerate(original) if t == sep_id and i + 1 < len(original)]
    for s in starts:
        n = 0
        while n < len(body) and s + n < len(original) and original[s + n] == body[n]:
            n += 1
        if n == len(body):
            return [0] + list(range(s, s + n))
        if n == len(body) - 1 and body[-1] == sep_id:
            return [0] + list(range(s, s + n)) + [-1]
    raise ValueError(
        "window function returned tokens that are not [CLS] + a contiguous run of whole or cut sections of the report"
    )


class ReportTokenizer:
    """Section-aware tokenisation of report texts into fixed-length tensors.

    Args:
        tokenizer: any Hugging Face tokenizer with [CLS]/[SEP]/[PAD] (our WordPiece or BiomedBERT's).
        max_len: output length (pad and cut to it); 512 for the release's text encoder.
        section_type_ids: put ``section + 1`` in ``token_type_ids``; when False they are all 0
            (what a 2-type BERT such as BiomedBERT expects).
        window_fn: how a too-long report is cut, ``(token_ids, sep_id, max_len, rng) -> token_ids``;
            default :func:`echoprime.reports.window_token_ids` (first window without ``rng``,
            a random window of whole sections with it).
        strict_sections: reject text chunks without a known section header (free text otherwise).
        number_step: round every number of a report to this step before tokenising it
            (:func:`quantise_numbers`; 0: numbers as written). Saved with the tokenizer, so the
            bank, search and zero-shot read reports exactly as training did.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_len: int = 512,
        section_type_ids: bool = True,
        window_fn: WindowFn | None = None,
        strict_sections: bool = True,
        number_step: float = 0.0,
    ) -> None:
        if number_step < 0:
            raise ValueError(f"number_step must be >= 0, got {number_step}")
        for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
            if getattr(tokenizer, name, None) is None:
                raise ValueError(
                    f"tokenizer {type(tokenizer).__name__} has no {name}; ReportTokenizer needs [CLS], [SEP] and [PAD]"
                )
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3, got {max_len}")
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.section_type_ids = section_type_ids
        self.window_fn: WindowFn = window_fn or functools.partial(
            window_token_ids, cls_id=tokenizer.cls_token_id
        )
        self.strict_sections = strict_sections
        self.number_step = float(number_step)
        self.cls_id, self.sep_id, self.pad_id = (
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            tokenizer.pad_token_id,
        )

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, rng: np.random.Generator | None = None) -> tuple[list[int], list[int]]:
        """One report -> ``(token ids, token type ids)``, unpadded, at most ``max_len`` long."""
        return self._encode_many([text], rng)[0]

    def _encode_many(
        self, texts: Sequence[str], rng: np.random.Generator | None
    ) -> list[tuple[list[int], list[int]]]:
        parsed = []
        for t in texts:
            if not isinstance(t, str):
                raise ValueError(f"report texts must be str, got {type(t).__name__}")
            parsed.append(report_chunks(quantise_numbers(t, self.number_step), strict=self.strict_sections))
        chunks = [c for p in parsed for _, c in p]
        # One batched call into the Rust tokenizer for all chunks of all reports.
        pieces = self.tokenizer(chunks, add_special_tokens=False)["input_ids"] if chunks else []
        out, k = [], 0
        for p in parsed:
            ids, types = [self.cls_id], [0]
            for sec, _ in p:
                toks = pieces[k]
                k += 1
                ids += list(toks) + [self.sep_id]
                types += [sec + 1 if (self.section_type_ids and sec >= 0) else 0] * len(toks) + [0]
            if len(ids) > self.max_len:
                w = self.window_fn(ids, self.sep_id, self.max_len, rng)
                if len(w) > self.max_len:
                    raise ValueError(f"window function returned {len(w)} tokens for max_len {self.max_len}")
                pos = _window_positions(ids, list(w), self.sep_id)
                ids, types = list(w), [types[i] if i >= 0 else 0 for i in pos]
            out.append((ids, types))
        return out

    def __call__(
        self, texts: str | Sequence[str], rng: np.random.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenise reports into ``input_ids``, ``attention_mask``, ``token_type_ids`` (each ``B x max_len``, int64).

        Args:
            texts: one report or a list.
            rng: random source for the window of a too-long report (training); None is deterministic.
        """
        if isinstance(texts, str):
            texts = [texts]
        enc = self._encode_many(list(texts), rng)
        b = len(enc)
        input_ids = torch.full((b, self.max_len), self.pad_id, dtype=torch.long)
        attention = torch.zeros((b, self.max_len), dtype=torch.long)
        types = torch.zeros((b, self.max_len), dtype=torch.long)
        for i, (ids, ty) in enumerate(enc):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
            attention[i, :n] = 1
            types[i, :n] = torch.tensor(ty, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": types}

    def decode(self, input_ids: Sequence[int] | torch.Tensor) -> str:
        """Token ids -> text, with [SEP] kept and padding dropped."""
        ids = [int(i) for i in input_ids if int(i) != self.pad_id]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the Hugging Face tokenizer files plus ``report_tokenizer.json`` (max_len, section flags)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(d))
        cfg = {
            "max_len": self.max_len,
            "section_type_ids": self.section_type_ids,
            "strict_sections": self.strict_sections,
            "number_step": self.number_step,
        }
        (d / _CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
        return d

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, window_fn: WindowFn | None = None, **overrides
    ) -> ReportTokenizer:
        """Load what :meth:`save_pretrained` wrote (or any tokenizer directory, with ``overrides``).

        Raises:
            echoprime.models.text.TextModelNotFoundError: no tokenizer there.
            ValueError: an unreadable ``report_tokenizer.json`` or an unknown override.
        """
        from echoprime.models.text import load_pretrained_tokenizer

        tok = load_pretrained_tokenizer(directory)
        cfg: dict = {}
        p = Path(directory) / _CONFIG_NAME
        if p.is_file():
            try:
                cfg = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: not valid JSON: {e}") from None
        cfg.update(overrides)
        allowed = {"max_len", "section_type_ids", "strict_sections", "number_step"}
        if set(cfg) - allowed:
            raise ValueError(
                f"{p}: unknown ReportTokenizer settings {sorted(set(cfg) - allowed)}; allowed: {sorted(allowed)}"
            )
        return cls(tok, window_fn=window_fn, **cfg)
