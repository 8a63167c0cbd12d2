import pytest
import torch

from kdsearch.distill.metrics import entity_f1, entity_spans, fidelity, macro_f1

NAMES = ["O", "B-per", "I-per", "B-loc", "I-loc"]


def test_entity_spans_conlleval_rules() -> None:
    assert entity_spans(["B-per", "I-per", "O", "B-loc"]) == {(0, 2, "per"), (3, 4, "loc")}
    assert entity_spans(["I-per", "I-loc"]) == {(0, 1, "per"), (1, 2, "loc")}  # stray I- opens a chunk
    assert entity_spans(["B-per", "B-per"]) == {(0, 1, "per"), (1, 2, "per")}


def test_entity_f1_by_hand() -> None:
    # example 1: gold per[0:2], loc[3:4]; pred per[0:2] right, loc missed
    # example 2: gold none; pred loc[0:1] wrong
    gold = torch.tensor([1, 2, 0, 3, 0])
    pred = torch.tensor([1, 2, 0, 0, 3])
    offsets = torch.tensor([0, 4, 5])
    m = entity_f1(pred, gold, offsets, NAMES)
    assert m["precision"] == pytest.approx(1 / 2) and m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(0.5)


def test_entities_do_not_cross_example_boundaries() -> None:
    gold = torch.tensor([1, 2])  # per in ex 1 continues into ex 2 only if offsets are ignored
    m = entity_f1(gold, gold, torch.tensor([0, 1, 2]), NAMES)
    assert m["f1"] == 1.0
    assert len(entity_spans(["B-per"])) + len(entity_spans(["I-per"])) == 2


def test_macro_f1_by_hand() -> None:
    pred, gold = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    # class 0: tp1 fp1 fn0 -> 2/3 ; class 1: tp2 fp0 fn1 -> 4/5
    assert macro_f1(pred, gold, 2) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_fidelity_agreement_and_kl() -> None:
    t = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert fidelity(t, t) == {"agreement": 1.0, "kl": pytest.approx(0.0, abs=1e-7)}
    s = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    f = fidelity(s, t)
    pt, ps = torch.softmax(t, -1), torch.softmax(s, -1)
    assert f["agreement"] == 0.5
    assert f["kl"] == pytest.approx(float((pt * (pt.log() - ps.log())).sum(-1).mean()), rel=1e-5)
