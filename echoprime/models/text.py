"""Text encoders: a tokenised report -> an embedding ``B x D``.

:class:`TextEncoder` holds a BERT masked-LM as ``backbone`` and a ``text_projection`` Linear; the
embedding is the projection of the last hidden state at position 0 ([CLS]). Those attribute
names are the release's, so its text-encoder state dict (keys ``backbone.*`` and
``text_projection.*``) loads strictly into ``biomedbert`` (see docs/models.md).

Pretrained BERT-family checkpoints are loaded with ``local_files_only=True``, always: these
machines have no hub access, and a missing model must be a clear error, never a hang.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from echoprime.models.registry import register_model
from echoprime.taxonomy import SECTIONS

if TYPE_CHECKING:
    from transformers import BertConfig, BertForMaskedLM

# transformers is imported where a BERT is built, not here: importing it takes seconds, and every
# process that loads any model (a Ray Data embedding actor, a Serve replica of the video tower)
# imports this module through the registry without needing BERT.

BIOMEDBERT_NAME = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"

# token_type_ids carry ``section index + 1`` per token (0 for [CLS]/[SEP]/[PAD]), see
# echoprime.models.tokenizer.ReportTokenizer.
SECTION_TYPE_VOCAB = len(SECTIONS) + 1


class TextModelNotFoundError(FileNotFoundError):
    """A BERT-family model or tokenizer is neither a local directory nor in the Hugging Face cache."""


def biomedbert_config() -> BertConfig:
    """The architecture of ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``.

    BERT-base, uncased, with BiomedBERT's own PubMed WordPiece vocabulary of 30522 entries (the
    same size as BERT's, different tokens), 2 token types, 512 positions. This lets a release
    text-encoder state dict be loaded without downloading the model.
    """
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )


def tiny_bert_config(
    vocab_size: int = 2000,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 512,
    section_type_ids: bool = True,
) -> BertConfig:
    """A small BERT for CPU training; with ``section_type_ids`` its token types hold report sections."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_positions,
        type_vocab_size=SECTION_TYPE_VOCAB if section_type_ids else 2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=0,
    )


def trim_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Drop trailing columns that no row attends to (``B x L`` -> ``B x L'``).

    Reports are padded to the tokenizer's ``max_len``, but a batch is often much shorter; the
    dropped columns are masked out everywhere, so the [CLS] state is unchanged while attention
    and feed-forward cost shrink with the batch's real length.
    """
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    used = attention_mask.bool().any(dim=0).nonzero()
    n = int(used.max()) + 1 if used.numel() else 1
    if n == input_ids.shape[1]:
        return input_ids, attention_mask, token_type_ids
    return input_ids[:, :n], attention_mask[:, :n], None if token_type_ids is None else token_type_ids[:, :n]


class TextEncoder(nn.Module):
    """BERT masked-LM backbone + a linear projection of the [CLS] state into the joint space.

    Args:
        backbone: a ``BertForMaskedLM``; its MLM head is kept (the release's state dict has it)
            but not run: the embedding uses ``backbone.bert`` only.
        embed_dim: joint-space width.
        section_type_ids: feed the caller's ``token_type_ids`` (report section of each token);
            when False they are ignored and BERT sees its single-segment zeros, as the release does.
    """

    def __init__(
        self, backbone: BertForMaskedLM, embed_dim: int = 512, section_type_ids: bool = False
    ) -> None:
        super().__init__()
        hidden = backbone.config.hidden_size
        n_types = backbone.config.type_vocab_size
        if section_type_ids and n_types < SECTION_TYPE_VOCAB:
            raise ValueError(
                f"section_type_ids needs type_vocab_size >= {SECTION_TYPE_VOCAB} (16 sections + none), the backbone has "
                f"{n_types}; use expand_token_types(backbone) first or set section_type_ids=False"
            )
        self.backbone = backbone
        self.text_projection = nn.Linear(hidden, embed_dim)
        self.section_type_ids = section_type_ids
        self.embed_dim = embed_dim

    @property
    def vocab_size(self) -> int:
        return int(self.backbone.config.vocab_size)

    @property
    def max_positions(self) -> int:
        return int(self.backbone.config.max_position_embeddings)

    def forward_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``B x L`` token ids -> the last hidden state at [CLS], ``B x hidden``."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be B x L, got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.max_positions:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens, the model holds at most {self.max_positions}"
            )
        if self.section_type_ids and token_type_ids is not None:
            n_types = self.backbone.config.type_vocab_size
            if token_type_ids.shape != input_ids.shape:
                raise ValueError(
                    f"token_type_ids shape {tuple(token_type_ids.shape)} != input_ids shape {tuple(input_ids.shape)}"
                )
            if int(token_type_ids.max()) >= n_types or int(token_type_ids.min()) < 0:
                raise ValueError(
                    f"token_type_ids must lie in [0, {n_types}), got [{int(token_type_ids.min())}, {int(token_type_ids.max())}]"
                )
        else:
            token_type_ids = None
        if attention_mask is not None:
            input_ids, attention_mask, token_type_ids = trim_padding(
                input_ids, attention_mask, token_type_ids
            )
        out = self.backbone.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.last_hidden_state[:, 0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``B x hidden`` -> ``B x D``."""
        return self.text_projection(features)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``B x L`` -> ``B x D`` (not normalised)."""
        return self.forward_head(self.forward_features(input_ids, attention_mask, token_type_ids))

    @classmethod
    def from_config(
        cls, config: BertConfig, embed_dim: int = 512, section_type_ids: bool = False
    ) -> TextEncoder:
        """A randomly initialised encoder of the given BERT architecture."""
        from transformers import BertForMaskedLM

        return cls(BertForMaskedLM(config), embed_dim=embed_dim, section_type_ids=section_type_ids)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, embed_dim: int = 512, section_type_ids: bool = False
    ) -> TextEncoder:
        """Pretrained BERT-family weights (offline only) + a fresh projection.

        Args:
            name_or_path: a Hugging Face model name present in the local HF cache, or a directory
                holding ``config.json`` and the weights (``save_pretrained`` layout).
            embed_dim: joint-space width.
            section_type_ids: expand the token-type table to the 17 section types first
                (new rows start as copies of type 0, so the pretrained behaviour is unchanged).

        Raises:
            TextModelNotFoundError: the model is not available locally; says where to put it.
        """
        from transformers import BertForMaskedLM

        backbone = _load_offline(BertForMaskedLM.from_pretrained, name_or_path, "model")
        if section_type_ids and backbone.config.type_vocab_size < SECTION_TYPE_VOCAB:
            expand_token_types(backbone, SECTION_TYPE_VOCAB)
        return cls(backbone, embed_dim=embed_dim, section_type_ids=section_type_ids)


def expand_token_types(backbone: BertForMaskedLM, n_types: int) -> None:
    """Grow BERT's token-type embedding table to ``n_types`` rows in place.

    New rows are copies of row 0 (the segment every single-segment input used), so a pretrained
    model computes exactly what it did before until the new rows are trained apart.
    """
    emb = backbone.bert.embeddings.token_type_embeddings
    old = emb.weight.shape[0]
    if n_types <= old:
        return
    new = nn.Embedding(n_types, emb.weight.shape[1]).to(emb.weight.device, emb.weight.dtype)
    with torch.no_grad():
        new.weight[:old] = emb.weight
        new.weight[old:] = emb.weight[0]
    backbone.bert.embeddings.token_type_embeddings = new
    backbone.config.type_vocab_size = n_types
    # BERT keeps a zero token_type_ids buffer for callers that pass none; its values stay valid.


def _load_offline(loader, name_or_path: str | os.PathLike, what: str):
    """Call a transformers ``from_pretrained`` with ``local_files_only=True`` and explain a miss."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    looks_like_path = s.startswith((".", "/", "~")) or os.sep in s and not _is_hub_name(s)
    if looks_like_path and not p.exists():
        raise TextModelNotFoundError(
            f"text {what} directory {p} does not exist: pass a directory holding config.json and the weights "
            "(written by save_pretrained), or a Hugging Face model name present in the local cache"
        )
    try:
        return loader(str(p) if p.exists() else s, local_files_only=True)
    except OSError as e:
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub"
        )
        raise TextModelNotFoundError(
            f"text {what} {s!r} is not available offline (these machines never download models): either copy the "
            f"Hugging Face cache entry for it into {cache} (e.g. run `huggingface-cli download {s}` on a machine with "
            "network and copy the models--* folder), or pass a local directory written by save_pretrained. "
            f"transformers said: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def _is_hub_name(s: str) -> bool:
    # "org/name" with exactly one slash and no path-like prefix.
    return s.count("/") == 1 and not s.startswith((".", "/", "~")) and not Path(s).exists()


def load_pretrained_tokenizer(name_or_path: str | os.PathLike):
    """A BERT-family tokenizer from a local directory or the HF cache, offline only.

    Raises:
        TextModelNotFoundError: not available locally; says where to put it.
    """
    from transformers import AutoTokenizer

    return _load_offline(AutoTokenizer.from_pretrained, name_or_path, "tokenizer")


@register_model("text")
def tiny_bert(
    vocab_size: int = 2000,
    embed_dim: int = 512,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 512,
    section_type_ids: bool = True,
) -> TextEncoder:
    """A 2-layer, 128-wide BERT whose token types carry the report section of each token.

    Args:
        vocab_size: size of the tokenizer trained on the report corpus (``len(tokenizer)``).
        embed_dim: joint-space width.
        hidden: BERT width.
        layers: transformer layers.
        heads: attention heads.
        max_positions: longest token sequence.
        section_type_ids: 17 token types (none + 16 sections) fed from ReportTokenizer.
    """
    cfg = tiny_bert_config(vocab_size, hidden, layers, heads, max_positions, section_type_ids)
    return TextEncoder.from_config(cfg, embed_dim=embed_dim, section_type_ids=section_type_ids)


@register_model("text")
def biomedbert(embed_dim: int = 512) -> TextEncoder:
    """BiomedBERT-base architecture, randomly initialised: the target for a release text state dict.

    For pretrained BiomedBERT weights use ``TextEncoder.from_pretrained(BIOMEDBERT_NAME)`` (offline).
    """
    return TextEncoder.from_config(biomedbert_config(), embed_dim=embed_dim, section_type_ids=False)


class SectionBagTextEncoder(nn.Module):
    """A bag of (token, section) pairs: the fast, section-aware text tower for CPU training.

    Each token is embedded jointly with its section (``token_type_ids``), so "moderate" in the
    Pericardium section and "moderate" in the Mitral Valve section are different features; the
    pair embeddings are mean-pooled over the attended tokens, then an MLP and the projection
    follow. Word order within a section is ignored, which costs little on phrase-built reports
    and makes the tower far cheaper than a transformer (docs/learning.md measures both).

    Args:
        vocab_size: tokenizer vocabulary size.
        embed_dim: joint-space width.
        hidden: width of the pair embeddings and the MLP.
        n_types: token types (17: none + 16 sections).
        token_dropout: at training, each attended token is left out of the bag with this
            probability (global torch RNG, like ``nn.Dropout``).
        dropout: dropout on the pooled features, before the projection.
        pool: ``"tokens"`` (mean over all attended tokens) or ``"sections"`` (mean per
            section, then over the sections present).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 512,
        hidden: int = 256,
        n_types: int = SECTION_TYPE_VOCAB,
        token_dropout: float = 0.0,
        dropout: float = 0.0,
        pool: str = "tokens",
    ) -> None:
        super().__init__()
        if pool not in ("tokens", "sections"):
            raise ValueError(f"pool must be 'tokens' or 'sections', got {pool!r}")
        self.pool = pool
        if vocab_size < 1 or hidden < 1 or n_types < 1:
            raise ValueError(
                f"invalid SectionBagTextEncoder settings: vocab_size={vocab_size}, hidden={hidden}, n_types={n_types}"
            )
        if not (0.0 <= token_dropout < 1.0 and 0.0 <= dropout < 1.0):
            raise ValueError(f"token_dropout and dropout must be in [0, 1), got {token_dropout}, {dropout}")
        self.token_dropout = float(token_dropout)
        self.drop = nn.Dropout(dropout)
        self.n_types = n_types
        self.vocab = vocab_size
        self.pairs = nn.Embedding(vocab_size * n_types, hidden)
        nn.init.normal_(self.pairs.weight, std=0.02)
        self.mlp = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden)
        )
        self.text_projection = nn.Linear(hidden, embed_dim)
        self.embed_dim = embed_dim
        self.section_type_ids = True

    @property
    def vocab_size(self) -> int:
        return self.vocab

    def forward_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``B x L`` tokens (+ sections) -> pooled features ``B x hidden``."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be B x L, got shape {tuple(input_ids.shape)}")
        if int(input_ids.max()) >= self.vocab or int(input_ids.min()) < 0:
            raise ValueError(
                f"input_ids must lie in [0, {self.vocab}), got [{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        if types.shape != input_ids.shape or int(types.max()) >= self.n_types or int(types.min()) < 0:
            raise ValueError(
                f"token_type_ids must be B x L in [0, {self.n_types}), got shape {tuple(types.shape)}"
            )
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if self.training and self.token_dropout > 0:
            # Drop whole (token, section) pairs from the bag, like dropout on words: a report
            # must be recognised from a random subset of its findings, not from one rare token.
            keep = torch.rand(mask.shape, device=mask.device) >= self.token_dropout
            mask = mask * keep.to(mask.dtype)
        e = self.pairs(input_ids * self.n_types + types)  # B x L x hidden: one row per (token, section)
        m = mask.to(e.dtype).unsqueeze(-1)  # B x L x 1
        if self.pool == "tokens":
            pooled = (e * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        else:
            # Mean per section, then over the sections present: a long section (many words for
            # one finding) weighs as much as a short one.
            b, _, h = e.shape
            idx = types.unsqueeze(-1).expand(-1, -1, h)  # B x L x hidden
            sums = e.new_zeros(b, self.n_types, h).scatter_add_(1, idx, e * m)  # B x types x hidden
            counts = m.new_zeros(b, self.n_types, 1).scatter_add_(1, types.unsqueeze(-1), m)  # B x types x 1
            present = (counts > 0).to(e.dtype)
            pooled = (sums / counts.clamp(min=1.0)).sum(1) / present.sum(1).clamp(min=1.0)
        return self.mlp(pooled)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``B x hidden`` -> ``B x D`` (dropout, then the projection)."""
        return self.text_projection(self.drop(features))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``B x L`` -> ``B x D`` (not normalised)."""
        return self.forward_head(self.forward_features(input_ids, attention_mask, token_type_ids))


@register_model("text")
def tiny_bag(
    vocab_size: int = 2000,
    embed_dim: int = 512,
    hidden: int = 128,
    token_dropout: float = 0.0,
    dropout: float = 0.0,
    pool: str = "tokens",
) -> SectionBagTextEncoder:
    """A section-aware bag of tokens (no transformer): the fastest text tower for CPU runs.

    Args:
        vocab_size: size of the tokenizer trained on the report corpus.
        embed_dim: joint-space width.
        hidden: pair-embedding width.
        token_dropout: fraction of tokens dropped from the bag at training.
        dropout: dropout on the pooled features, before the projection.
        pool: ``"tokens"`` or ``"sections"`` (see :class:`SectionBagTextEncoder`).
    """
    return SectionBagTextEncoder(
        vocab_size=vocab_size,
        embed_dim=embed_dim,
        hidden=hidden,
        token_dropout=token_dropout,
        dropout=dropout,
        pool=pool,
    )
