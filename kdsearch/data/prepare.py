"""Tokenized splits, cached on disk by a hash of data + tokenizer + max length.

A prepared split is a handful of tensors: token ids padded once to the split's longest
example, the true lengths (so batches are cut to their own longest example), and labels.
Trials load these tensors and never tokenize.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from kdsearch import atomic, cache
from kdsearch.data.qa import QAWindows, encode_windows
from kdsearch.data.sources import RawData, label_names, load_raw
from kdsearch.data.stats import train_stats
from kdsearch.data.tokenizer import get_tokenizer, tokenizer_key
from kdsearch.errors import DataError
from kdsearch.spec import DataSpec
from kdsearch.tasks import IGNORE_INDEX, TASKS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

FORMAT_VERSION = 4  # 4: pretrained tokenizers keyed by content; train statistics in meta.json


@dataclass
class EncodedSplit:
    """One tokenized split. ``labels`` is [N] for sequence tasks, [N, L] (-100 = ignored)
    for token tasks; ``offsets[i]:offsets[i+1]`` are example i's labelled positions in any
    flat per-position tensor (teacher logits, predictions)."""

    input_ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    # batches keep the split's whole width (QA: a window's positions are its classes, and
    # cached teacher rows have one width), instead of cutting to their longest example
    fixed_width: bool = False

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n_positions(self) -> torch.Tensor:
        if self.labels.dim() == 1:
            return torch.ones_like(self.lengths)
        return (self.labels != IGNORE_INDEX).sum(1)

    @property
    def offsets(self) -> torch.Tensor:
        return torch.cat([torch.zeros(1, dtype=torch.long), self.n_positions.cumsum(0)])

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "lengths": self.lengths, "labels": self.labels}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out


@dataclass
class PreparedData:
    """Everything a trial needs from the data, loadable from ``folder`` alone."""

    key: str
    task: str
    label_names: list[str]
    splits: dict[str, EncodedSplit]
    tokenizer_dir: Path
    folder: Path
    source: str
    pad_token_id: int
    vocab_size: int
    max_length: int
    mask_token_id: int | None = None
    special_ids: list[int] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # the train split's (see kdsearch.data.stats)
    qa: dict[str, QAWindows] = field(default_factory=dict)  # extractive QA: each split's windows and texts

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def num_classes(self) -> int:
        """The width of a flat logit row: the labels, or for QA a window's positions."""
        return self.max_length if TASKS[self.task].extractive else self.num_labels

    @classmethod
    def load(cls, folder: Path) -> PreparedData:
        meta = json.loads((folder / "meta.json").read_text())
        extractive = TASKS[meta["task"]].extractive
        splits, qa = {}, {}
        for s in meta["splits"]:
            t = load_file(folder / f"{s}.safetensors")
            splits[s] = EncodedSplit(t["input_ids"], t["lengths"], t["labels"], t.get("token_type_ids"), extractive)
            if extractive:
                qa[s] = QAWindows.load(folder, s)
        return cls(
            key=meta["key"],
            task=meta["task"],
            label_names=meta["label_names"],
            splits=splits,
            tokenizer_dir=Path(meta["tokenizer_dir"]),
            folder=folder,
            source=meta["source"],
            pad_token_id=meta["pad_token_id"],
            vocab_size=meta["vocab_size"],
            max_length=meta["max_length"],
            mask_token_id=meta["mask_token_id"],
            special_ids=meta["special_ids"],
            stats=meta.get("stats", {}),
            qa=qa,
        )


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _label_ids(values: list, names: list[str], split: str, raw: RawData) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    out = []
    for v in values:
        key = str(v)
        if key not in index:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise DataError(f"{split} split of {raw.source!r} has label {key!r}, not among train's labels ({shown}){raw.subsampled}")
        out.append(index[key])
    return out


def encode_split(raw: RawData, split: str, tokenizer: PreTrainedTokenizerFast, names: list[str], max_length: int,
                 stride: int = 0) -> tuple[EncodedSplit, QAWindows | None]:
    """Tokenize one split with the tokenizer's Rust backend (fast, gives word ids); QA
    splits become windows of ``max_length`` overlapping by ``stride`` (:mod:`kdsearch.data.qa`)."""
    if TASKS[raw.task].extractive:
        t, windows = encode_windows(raw.splits[split], raw.columns, tokenizer, max_length, stride, split, raw.source)
        return EncodedSplit(t["input_ids"], t["lengths"], t["labels"], t["token_type_ids"], fixed_width=True), windows
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_length)
    df = raw.splits[split]
    cols = raw.columns
    if TASKS[raw.task].per_token:
        words = [[str(w) for w in ws] for ws in df[cols["tokens"]]]
        tags = [list(t) for t in df[cols["tags"]]]
        for i, (w, t) in enumerate(zip(words, tags)):
            if len(w) != len(t):
                raise DataError(f"{split} row {i} of {raw.source!r} has {len(w)} tokens but {len(t)} tags")
        encs = backend.encode_batch(words, is_pretokenized=True)
        label_rows = []
        for enc, t in zip(encs, tags):
            ids = _label_ids(t, names, split, raw)
            row, seen = [], set()
            for wid in enc.word_ids:
                # only a word's first sub-token carries its tag; the rest and specials are ignored
                if wid is None or wid in seen:
                    row.append(IGNORE_INDEX)
                else:
                    seen.add(wid)
                    row.append(ids[wid])
            label_rows.append(row)
        labels = _pad(label_rows, IGNORE_INDEX)
    else:
        texts = [str(t) for t in df[cols["text"]]]
        if raw.task == "pair_classification":
            encs = _encode_pairs(backend, texts, [str(t) for t in df[cols["text_pair"]]], max_length)
        else:
            encs = backend.encode_batch(texts)
        labels = torch.tensor(_label_ids(df[cols["label"]].tolist(), names, split, raw))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = _pad([e.ids for e in encs], pad_id)
    lengths = torch.tensor([len(e.ids) for e in encs], dtype=torch.long)
    type_ids = _pad([e.type_ids for e in encs], 0) if raw.task == "pair_classification" else None
    if labels.dim() == 2:
        labels = labels[:, : input_ids.shape[1]]
    return EncodedSplit(input_ids, lengths, labels, type_ids), None


def _encode_pairs(backend: Any, texts: list[str], pairs: list[str], max_length: int) -> list[Any]:
    """(text, text_pair) encodings cut from the first text only, so the second (a claim, a
    hypothesis: short, and what the label is about) stays whole; a pair whose second text
    alone leaves no room is cut from both (longest first)."""
    backend.no_truncation()
    room = max_length - backend.num_special_tokens_to_add(True)
    second = [len(e.ids) for e in backend.encode_batch(pairs, add_special_tokens=False)]
    fits = [n < room for n in second]
    out: list[Any] = [None] * len(texts)
    for strategy, keep in (("only_first", True), ("longest_first", False)):
        rows = [i for i, f in enumerate(fits) if f is keep]
        if rows:
            backend.enable_truncation(max_length=max_length, strategy=strategy)
            for i, e in zip(rows, backend.encode_batch([(texts[i], pairs[i]) for i in rows])):
                out[i] = e
    return out


def data_key(spec: DataSpec, raw: RawData, names: list[str] | None = None) -> str:
    """The cache key of ``spec``'s prepared data (and of its teacher pool)."""
    names = names if names is not None else label_names(raw)
    ident: list[Any] = [FORMAT_VERSION, raw.fingerprint, tokenizer_key(spec.tokenizer, raw), spec.max_length, names]
    # how windows and pairs are cut, in the key of the tasks it changes (older keys stay valid)
    if TASKS[raw.task].extractive:
        ident.append(["windows", spec.stride])
    elif raw.task == "pair_classification":
        ident.append(["pairs", "only_first"])
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def prepare_data(spec: DataSpec, workdir: str | Path, log: Callable[[str], None] = print) -> PreparedData:
    """Load, tokenize and cache the splits of ``spec``; reuse the cache when it is whole.

    ``log`` hears what takes time when the cache is built (training a tokenizer, tokenizing).
    """
    raw = load_raw(spec)
    cache_root = Path(workdir) / "cache"
    names = label_names(raw)
    if len(names) < 2:
        raise DataError(f"train split of {raw.source!r} has {len(names)} label(s); need at least 2{raw.subsampled}")
    key = data_key(spec, raw, names)
    folder = cache_root / "data" / key
    if cache.usable(folder, "tokenized data", required=["meta.json"]):
        data = PreparedData.load(folder)
        if not cache.usable(data.tokenizer_dir, "tokenizer", required=["tokenizer.json"]):
            get_tokenizer(spec.tokenizer, raw, cache_root, log)  # teachers and exports copy it
        if "vocab_overlap" not in data.stats:
            # a cache made before the statistic existed: worked out here (~1 s), not rewritten (it is sealed)
            data.stats = train_stats(raw, get_tokenizer(spec.tokenizer, raw, cache_root, log)[0])
        return data
    log(f"preparing {raw.source} (cached under {folder})")
    tokenizer, tok_dir = get_tokenizer(spec.tokenizer, raw, cache_root, log)
    specials = tokenizer.num_special_tokens_to_add(pair=raw.task in ("pair_classification", "question_answering"))
    if spec.max_length <= specials:
        raise DataError(f"data.max_length: {spec.max_length} token(s) leave no room for text: the tokenizer adds {specials} "
                        f"special tokens to every example; use at least {specials + 1}")
    with atomic.new_dir(folder) as tmp:
        for split in raw.splits:
            start = time.perf_counter()
            enc, windows = encode_split(raw, split, tokenizer, names, spec.max_length, spec.stride)
            save_file(enc.tensors(), tmp / f"{split}.safetensors")
            if windows is not None:
                windows.save(tmp, split)
            what = f"{len(windows.contexts)} questions in {len(enc)} windows" if windows is not None else f"{len(enc)} examples"
            log(f"  tokenized {split}: {what} in {time.perf_counter() - start:.1f} s")
        meta = {
            "key": key,
            "task": raw.task,
            "label_names": names,
            "splits": list(raw.splits),
            "tokenizer_dir": str(tok_dir),
            "source": raw.source,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            "vocab_size": len(tokenizer),
            "max_length": spec.max_length,
            "mask_token_id": tokenizer.mask_token_id,
            "special_ids": sorted(set(tokenizer.all_special_ids)),
            "stats": train_stats(raw, tokenizer),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        cache.seal(tmp)
    return PreparedData.load(folder)
