"""The trainer on real (tiny) models and slices of the built-in data."""

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers.models.bert import modeling_bert

from kdsearch.data.batching import make_batch
from kdsearch.data.prepare import PreparedData
from kdsearch.distill.teacher_signal import CachedTeacher, OnlineTeacher
from kdsearch.distill.trainer import TrialConfig, train_student
from kdsearch.models import load_model
from kdsearch.spec import DistillSpec, OptimSpec
from kdsearch.teachers import TeacherPool

FAST = OptimSpec(epochs=1, batch_size=32, learning_rate=1e-3)
KD = DistillSpec(teacher="t_ll", alpha=0.5, loss="ce", tau_t=2.0, tau_s=1.0)


def config(**kw) -> TrialConfig:
    base = dict(student="xs", train=FAST, distill=KD, seed=0)
    base.update(kw)
    return TrialConfig(**base)


def test_same_seed_same_metrics_other_seed_differs(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    teacher = rt_pool.outputs(rt_pool.select("t_ll"))
    a = train_student(config(), rt_data, teacher, "cpu")
    b = train_student(config(), rt_data, teacher, "cpu")
    c = train_student(config(seed=1), rt_data, teacher, "cpu")
    keys = ["train_loss", "val_loss", "val_accuracy", "val_agreement", "val_kl"]
    assert [a.final[k] for k in keys] == [b.final[k] for k in keys]
    assert a.test == b.test
    assert a.final["train_loss"] != c.final["train_loss"]


def test_epoch_metrics_include_task_loss_and_fidelity(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    teacher = rt_pool.outputs(rt_pool.select("t_ll"))
    r = train_student(config(train=dataclasses.replace(FAST, epochs=2)), rt_data, teacher, "cpu")
    assert r.status == "ok" and [m["epoch"] for m in r.epochs] == [1, 2]
    for key in ("val_accuracy", "val_macro_f1", "val_loss", "val_agreement", "val_kl", "train_examples_per_s"):
        assert key in r.final
    assert 0.0 <= r.final["val_agreement"] <= 1.0 and r.final["val_kl"] >= 0.0
    assert {"test_accuracy", "test_agreement"} <= set(r.test)


def test_max_steps_stops_early(rt_data: PreparedData) -> None:
    r = train_student(config(distill=DistillSpec(alpha=0.0), train=dataclasses.replace(FAST, epochs=5, max_steps=3)), rt_data, None, "cpu")
    assert r.final["step"] == 3 and len(r.epochs) == 1


def test_cached_teacher_runs_zero_times_inside_a_trial(rt_data: PreparedData, rt_pool: TeacherPool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = rt_pool.outputs(rt_pool.select("t_ll"))  # the cache exists from here on
    calls = {"teacher": 0, "student": 0}
    real = modeling_bert.BertModel.forward

    def counting(self: modeling_bert.BertModel, *a: object, **k: object) -> object:
        calls["teacher" if self.config.hidden_size == 256 else "student"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(modeling_bert.BertModel, "forward", counting)
    passes = rt_pool.forward_passes
    again = rt_pool.outputs(rt_pool.select("t_ll"))
    r = train_student(config(), rt_data, again, "cpu")
    assert r.status == "ok"
    assert calls["teacher"] == 0 and calls["student"] > 0
    assert rt_pool.forward_passes == passes
    assert torch.equal(again.split_logits("train"), teacher.split_logits("train"))


def test_online_teacher_matches_cache_and_counts_calls(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    rec = rt_pool.select("t_ll")
    cached = rt_pool.outputs(rec)
    online = OnlineTeacher(load_model(rec.path, rt_data.task, rt_data.label_names), rt_data.task)
    split = rt_data.splits["train"]
    batch = make_batch(split, torch.tensor([5, 1, 9]))
    assert torch.allclose(online.logits("train", batch), cached.logits("train", batch), atol=1e-4)
    r = train_student(config(train=dataclasses.replace(FAST, max_steps=4)), rt_data, online, "cpu")
    assert r.status == "ok" and online.calls == 1 + 4


def test_nan_loss_ends_trial_as_diverged(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    good = rt_pool.outputs(rt_pool.select("t_ll"))
    logits = {s: good.split_logits(s).clone() for s in rt_data.splits}
    logits["train"][7] = float("nan")
    offsets = {s: e.offsets for s, e in rt_data.splits.items()}
    r = train_student(config(), rt_data, CachedTeacher(logits, offsets), "cpu")
    assert r.status == "diverged"
    assert "loss is nan" in (r.error or "")


def test_ner_trial_masks_subwords_and_padding(ner_data: PreparedData, workdir: Path) -> None:
    from kdsearch.teachers import TeacherPool

    pool = TeacherPool(workdir, ner_data, "cpu")
    from kdsearch.spec import TeacherSpec

    pool.train(TeacherSpec(model="xs", seeds=[0], train=dataclasses.replace(FAST, epochs=1, learning_rate=3e-3)), log=lambda s: None)
    teacher = pool.outputs(pool.select("t_ll"))
    train = ner_data.splits["train"]
    # the cache holds one row per labelled position: sub-words and padding have none
    assert teacher.split_logits("train").shape == (int(train.n_positions.sum()), ner_data.num_labels)
    r = train_student(config(), ner_data, teacher, "cpu")
    assert r.status == "ok"
    assert {"val_f1", "val_precision", "val_recall", "val_token_accuracy", "val_agreement"} <= set(r.final)


def test_ner_loss_ignores_masked_positions(ner_data: PreparedData) -> None:
    from kdsearch.distill.trainer import Trainer
    from kdsearch.models import build_model

    torch.manual_seed(0)
    model = build_model("xs", ner_data.task, ner_data.label_names, ner_data.vocab_size, ner_data.pad_token_id, 48)
    trainer = Trainer(model, ner_data, FAST, 0, device=torch.device("cpu"))
    split = ner_data.splits["train"]
    batch = make_batch(split, torch.arange(8))
    model.eval()
    base = trainer._loss("train", batch)
    # change the input only where no label is: padding tokens behind the attention mask
    masked = batch.attention_mask == 0
    assert masked.any()
    batch.input_ids[masked] = 7
    assert torch.allclose(trainer._loss("train", batch), base)
    # but a labelled position's label does change the loss
    pos = (batch.labels != -100).nonzero()[0]
    batch.labels[pos[0], pos[1]] = (batch.labels[pos[0], pos[1]] + 1) % ner_data.num_labels
    assert not torch.allclose(trainer._loss("train", batch), base)


def test_a_model_that_predicts_one_class_is_flagged_collapsed(rt_data: PreparedData) -> None:
    from kdsearch.distill.trainer import Trainer, majority_label
    from kdsearch.models import build_model

    torch.manual_seed(0)
    model = build_model("xs", rt_data.task, rt_data.label_names, rt_data.vocab_size, rt_data.pad_token_id, rt_data.max_length)
    trainer = Trainer(model, rt_data, FAST, 0, device=torch.device("cpu"))
    gold = rt_data.splits["validation"].labels
    majority = float((gold == majority_label(rt_data)).float().mean())
    with torch.no_grad():  # every prediction the train split's most frequent label
        model.classifier.bias.copy_(torch.tensor([-50.0, -50.0]))
        model.classifier.bias[majority_label(rt_data)] = 50.0
    m = trainer.evaluate("validation", "val")
    assert m["val_collapsed"] and m["val_score"] == m["val_majority"] == majority
    with torch.no_grad():  # the other class: below the majority class, still collapsed
        model.classifier.bias.copy_(torch.tensor([50.0, 50.0]))
        model.classifier.bias[majority_label(rt_data)] = -50.0
    m = trainer.evaluate("validation", "val")
    assert m["val_collapsed"] and m["val_score"] == 1 - majority
    r = train_student(config(distill=DistillSpec(alpha=0.0), train=dataclasses.replace(FAST, epochs=3, learning_rate=3e-3)), rt_data, None, "cpu")
    assert not r.final["val_collapsed"] and r.final["val_score"] > r.final["val_majority"]
