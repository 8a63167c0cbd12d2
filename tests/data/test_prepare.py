"""Token cache and batching on the real built-in data."""

from pathlib import Path
from typing import NoReturn

import pytest
import torch

from kdsearch.data import prepare as prep
from kdsearch.data.batching import eval_order, make_batch, train_order
from kdsearch.data.prepare import IGNORE_INDEX, PreparedData, prepare_data
from tests.conftest import small_data_spec


def test_cache_is_reused_without_tokenizing(workdir: Path, rt_data: PreparedData,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> NoReturn:
        raise AssertionError("tokenized again")

    monkeypatch.setattr(prep, "encode_split", boom)
    again = prepare_data(small_data_spec(), workdir)
    assert again.key == rt_data.key
    assert torch.equal(again.splits["train"].input_ids, rt_data.splits["train"].input_ids)


def test_cache_key_follows_max_length_and_data(workdir: Path, rt_data: PreparedData) -> None:
    other = prepare_data(small_data_spec(max_length=16), workdir)
    assert other.key != rt_data.key
    assert int(other.splits["train"].lengths.max()) <= 16
    fewer = prepare_data(small_data_spec(max_train_examples=100), workdir)
    assert fewer.key not in (rt_data.key, other.key)


def test_ner_labels_only_on_first_subtoken(ner_data: PreparedData) -> None:
    train = ner_data.splits["train"]
    assert ner_data.task == "token_classification"
    raw = prep.load_raw(small_data_spec("wnut16", max_length=48))
    # every word's first sub-token carries its tag: as many labels as words, but where truncated
    words = raw.splits["train"]["tokens"].map(len).tolist()
    n_pos = train.n_positions.tolist()
    truncated = (train.lengths == 48).tolist()
    assert all(p == w for p, w, t in zip(n_pos, words, truncated) if not t)
    assert all(p <= w for p, w in zip(n_pos, words))
    assert sum(truncated) < len(words) // 2
    # [CLS] (position 0) and padding never carry a label
    assert bool((train.labels[:, 0] == IGNORE_INDEX).all())
    pad = torch.arange(train.labels.shape[1]).unsqueeze(0) >= train.lengths.unsqueeze(1)
    assert bool((train.labels[pad] == IGNORE_INDEX).all())


def test_train_batches_cover_each_example_once_and_follow_the_seed(rt_data: PreparedData) -> None:
    lengths = rt_data.splits["train"].lengths
    a = train_order(lengths, 16, torch.Generator().manual_seed(3))
    b = train_order(lengths, 16, torch.Generator().manual_seed(3))
    c = train_order(lengths, 16, torch.Generator().manual_seed(4))
    assert sorted(torch.cat(a).tolist()) == list(range(len(lengths)))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_bucketing_pads_far_less_than_max_length(workdir: Path) -> None:
    split = prepare_data(small_data_spec(max_length=128), workdir).splits["train"]
    batches = train_order(split.lengths, 32, torch.Generator().manual_seed(0))
    padded = sum(make_batch(split, i).input_ids.numel() for i in batches)
    real = int(split.lengths.sum())
    assert padded < 1.15 * real
    assert padded < 0.5 * len(split) * 128  # padding to max_length costs over twice as much


def test_batch_mask_matches_lengths(rt_data: PreparedData) -> None:
    split = rt_data.splits["validation"]
    (index, *_) = eval_order(split.lengths, 8)
    b = make_batch(split, index)
    assert b.attention_mask.sum(1).tolist() == split.lengths[index].tolist()
    assert b.input_ids.shape[1] == int(split.lengths[index].max())

