"""Tokenizers: a WordPiece tokenizer trained on the train split, or a pretrained one."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from kdsearch import atomic, cache
from kdsearch.data.sources import RawData
from kdsearch.errors import DataError
from kdsearch.spec import TokenizerSpec
from kdsearch.tasks import TASKS

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXT_ROLES = ("text", "text_pair", "question", "context")  # the columns of running text a tokenizer learns from


def tokenizer_key(spec: TokenizerSpec, raw: RawData) -> str:
    """What identifies a tokenizer: a trained one depends on the train split, a pretrained one
    on its content (vocabulary, normalisation, special tokens), never on its name or folder:
    a model fetched again, or changed, never reuses tokens another tokenizer made."""
    if spec.kind == "pretrained":
        assert spec.name is not None
        ident = ["pretrained", 2, pretrained_fingerprint(spec.name)]
    else:
        ident = ["wordpiece", 2, spec.vocab_size, spec.lowercase, raw.fingerprint]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


_FINGERPRINTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def pretrained_fingerprint(name: str) -> str:
    """A hash of what the pretrained tokenizer ``name`` does: its whole serialised fast
    tokenizer and its special tokens (remembered per process while its files are unchanged)."""
    folder = Path(name).expanduser()
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    stamp = (str(folder.resolve()) if files else name, tuple((f.name, *_size_time(f)) for f in files if f.is_file()))
    if stamp not in _FINGERPRINTS:
        tok = load_pretrained_tokenizer(name)
        content = [type(tok).__name__, tok.backend_tokenizer.to_str(), tok.special_tokens_map, tok.model_max_length]
        _FINGERPRINTS[stamp] = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return _FINGERPRINTS[stamp]


def _size_time(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


# WordPiece's trainer slows down with the square of a word's length (50,000 letters: 1 s; a
# million: hours), and encoding turns any word over 100 characters into [UNK] anyway
MAX_TRAIN_WORD = 1000
_LONG_WORD = re.compile(rf"\w{{{MAX_TRAIN_WORD + 1},}}")


def _train_texts(raw: RawData) -> Iterator[str]:
    """The train split's texts as the tokenizer trainer sees them: words past ``MAX_TRAIN_WORD`` dropped."""
    df = raw.splits["train"]
    if TASKS[raw.task].per_token:
        texts: Iterator[str] = (" ".join(map(str, tokens)) for tokens in df[raw.columns["tokens"]])
    else:
        texts = (str(t) for col in TEXT_ROLES if col in raw.columns and raw.columns[col] in df.columns
                 for t in df[raw.columns[col]])
    for text in texts:
        yield _LONG_WORD.sub(" ", text)


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


def get_tokenizer(
    spec: TokenizerSpec, raw: RawData, cache_root: Path, log: Callable[[str], None] = print
) -> tuple[PreTrainedTokenizerBase, Path]:
    """The tokenizer for ``raw`` and the folder it is saved in (trained once, then cached)."""
    folder = cache_root / "tokenizers" / tokenizer_key(spec, raw)
    if cache.usable(folder, "tokenizer", required=["tokenizer.json"]):
        return AutoTokenizer.from_pretrained(folder), folder
    start = time.perf_counter()
    if spec.kind == "pretrained":
        assert spec.name is not None
        log(f"  loading tokenizer {spec.name}")
        tok = load_pretrained_tokenizer(spec.name)
    else:
        log(f"  training a WordPiece tokenizer ({spec.vocab_size} tokens) on {len(raw.splits['train'])} train examples")
        tok = train_wordpiece(raw, spec.vocab_size, spec.lowercase)
    with atomic.new_dir(folder) as tmp:
        tok.save_pretrained(tmp)
        cache.seal(tmp)
    log(f"  tokenizer ready in {time.perf_counter() - start:.1f} s")
    return tok, folder
