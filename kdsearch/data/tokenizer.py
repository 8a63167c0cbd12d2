"""Tokenizers: a WordPiece tokenizer trained on the train split, or a pretrained one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from kdsearch import atomic
from kdsearch.data.sources import RawData
from kdsearch.errors import DataError
from kdsearch.spec import TokenizerSpec

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokenizer_key(spec: TokenizerSpec, raw: RawData) -> str:
    """What identifies a tokenizer: a trained one depends on the train split."""
    if spec.kind == "pretrained":
        ident = ["pretrained", spec.name]
    else:
        ident = ["wordpiece", 2, spec.vocab_size, spec.lowercase, raw.fingerprint]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def _train_texts(raw: RawData) -> Iterator[str]:
    df = raw.splits["train"]
    if raw.task == "token_classification":
        for tokens in df[raw.columns["tokens"]]:
            yield " ".join(map(str, tokens))
        return
    for col in ("text", "text_pair"):
        if col in raw.columns and raw.columns[col] in df.columns:
            yield from (str(t) for t in df[raw.columns[col]])


def train_wordpiece(raw: RawData, vocab_size: int, lowercase: bool) -> PreTrainedTokenizerBase:
    """A BERT-style WordPiece tokenizer trained on the train split only."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(_train_texts(raw), trainer=trainer)
    # the trainer numbers tokens of equal frequency differently from run to run (a Rust
    # HashMap), and may even keep different ones at the vocabulary's cutoff: renumber
    # them in a fixed order. The trained tokenizer is cached per data key, so every
    # teacher and trial of a workdir shares one.
    vocab = tok.get_vocab()
    ordered = SPECIAL_TOKENS + sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    tok.model = models.WordPiece({t: i for i, t in enumerate(ordered)}, unk_token="[UNK]")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def load_pretrained_tokenizer(name: str) -> PreTrainedTokenizerBase:
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # OSError, ValueError, hub errors: one line for the user
        raise DataError(f"cannot load tokenizer {name!r}: {str(e).splitlines()[0]}") from None
    if getattr(tok, "backend_tokenizer", None) is None:
        raise DataError(f"tokenizer {name!r} has no fast (Rust) version; kdsearch needs one")
    return tok


def get_tokenizer(spec: TokenizerSpec, raw: RawData, cache_root: Path) -> tuple[PreTrainedTokenizerBase, Path]:
    """The tokenizer for ``raw`` and the folder it is saved in (trained once, then cached)."""
    folder = cache_root / "tokenizers" / tokenizer_key(spec, raw)
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder), folder
    if spec.kind == "pretrained":
        assert spec.name is not None
        tok = load_pretrained_tokenizer(spec.name)
    else:
        tok = train_wordpiece(raw, spec.vocab_size, spec.lowercase)
    with atomic.new_dir(folder) as tmp:
        tok.save_pretrained(tmp)
    return tok, folder
