"""The recommender's dataset features, each on hand-made data whose value is known."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from kdsearch.data.sources import RawData
from kdsearch.data.stats import train_stats, vocab_overlap
from kdsearch.distill.metrics import calibration_error
from kdsearch.recommend.features import FEATURES, DatasetFeatures, difference


def wordpiece(vocab: list[str]) -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer that knows exactly ``vocab``."""
    ids = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *vocab])}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")


def raw(task: str, train: pd.DataFrame, columns: dict[str, str]) -> RawData:
    return RawData(task, columns, {"train": train}, "f", "handmade")


TOK = wordpiece(["the", "cat", "sat", "mat", "on", "##s", "a", "dog"])


def test_vocab_overlap_counts_word_occurrences_the_tokenizer_holds_whole() -> None:
    # the, cat, sat (whole, the twice); cats = cat + ##s (pieces); zebra = [UNK]; punctuation is no word
    text = raw("classification", pd.DataFrame({"text": ["The cat sat.", "the cats, zebra!"], "label": ["a", "b"]}),
               {"text": "text", "label": "label"})
    assert vocab_overlap(text, TOK) == pytest.approx(4 / 6)
    # a pair reads both texts; NER reads its tokens; QA its question and context
    pair = raw("pair_classification", pd.DataFrame({"text": ["the cat"], "text_pair": ["zebra zebra"], "label": ["a"]}),
               {"text": "text", "text_pair": "text_pair", "label": "label"})
    assert vocab_overlap(pair, TOK) == pytest.approx(2 / 4)
    ner = raw("token_classification", pd.DataFrame({"tokens": [["a", "dog", "sats"]], "tags": [["O", "O", "O"]]}),
              {"tokens": "tokens", "tags": "tags"})
    assert vocab_overlap(ner, TOK) == pytest.approx(2 / 3)
    qa = raw("question_answering", pd.DataFrame({"question": ["on the mat?"], "context": ["zebra"],
                                                 "answers": [{"text": ["zebra"], "answer_start": [0]}]}),
             {"question": "question", "context": "context", "answers": "answers"})
    assert vocab_overlap(qa, TOK) == pytest.approx(3 / 4)
    # recorded with the other statistics when the tokenizer is given, and only then
    assert train_stats(text, TOK)["vocab_overlap"] == pytest.approx(4 / 6)
    assert "vocab_overlap" not in train_stats(text)


def test_label_count_balance_and_length_of_a_handmade_split() -> None:
    df = pd.DataFrame({"text": ["a b", "a b c d", "a", "a b c"], "label": ["x", "x", "x", "y"]})
    st = train_stats(raw("classification", df, {"text": "text", "label": "label"}))
    assert st["labels"] == 2 and st["train_size"] == 4 and st["mean_length"] == pytest.approx(2.5)
    p = [0.75, 0.25]
    assert st["label_entropy"] == pytest.approx(-sum(q * math.log(q) for q in p) / math.log(2))


def test_calibration_error_by_hand() -> None:
    # two rows at confidence 0.9 (one right), two at 0.6 (both right): bins 0.9 -> |0.9 - 0.5|,
    # 0.6 -> |0.6 - 1.0|, each half the rows
    logit = lambda p: [math.log(p), math.log(1 - p)]  # noqa: E731
    logits = torch.tensor([logit(0.9), logit(0.9), logit(0.6), logit(0.6)])
    gold = torch.tensor([0, 1, 0, 0])
    assert calibration_error(logits, gold) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4, abs=1e-6)
    # confidence that matches accuracy costs nothing
    assert calibration_error(torch.tensor([logit(0.6)] * 5), torch.tensor([0, 0, 0, 1, 1])) == pytest.approx(0.0, abs=1e-6)


def test_teacher_traits_on_handmade_logits(tmp_path: Path) -> None:
    from kdsearch.data.prepare import EncodedSplit, PreparedData
    from kdsearch.distill.trainer import teacher_traits

    labels = torch.tensor([0, 1, 1, 0])
    enc = EncodedSplit(torch.zeros(4, 3, dtype=torch.long), torch.full((4,), 3), labels)
    data = PreparedData("k", "classification", ["a", "b"], {"validation": enc}, tmp_path, tmp_path, "h", 0, 10, 3)
    best = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]])  # right, right, wrong, right
    other = torch.tensor([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [4.0, 0.0]])  # agrees on rows 0, 2, 3
    traits = teacher_traits(data, best, other)
    assert traits["teacher_agreement"] == pytest.approx(0.75)
    conf = float(torch.softmax(best[0], -1).max())
    assert traits["teacher_ece"] == pytest.approx(abs(conf - 0.75), abs=1e-6)  # one bin: 3 of 4 right
    assert "teacher_agreement" not in teacher_traits(data, best, None)


def test_features_read_any_searchs_record_and_compare_on_what_both_have() -> None:
    old = {"name": "a", "task": "classification", "train_size": 100, "labels": 2, "mean_length": 10.0, "label_entropy": 1.0}
    new = {**old, "name": "b", "train_size": 1000, "vocab_overlap": 0.8, "a_feature_from_the_future": 3}
    a, b = DatasetFeatures.from_record(old), DatasetFeatures.from_record(new)
    assert a.vocab_overlap is None and b.vocab_overlap == 0.8
    assert difference("train_size", a, b) == pytest.approx(1.0)  # 10x the examples: one unit
    assert math.isnan(difference("vocab_overlap", a, b))  # one side lacks it
    c = DatasetFeatures.from_record({**old, "task": "token_classification"})
    assert difference("task", a, c) == 1.0 and difference("task", a, b) == 0.0
    assert all(f.why for f in FEATURES.values())  # every unit says why
