"""Populations on CPU: each member is the single-trial Trainer of its config and seed."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
import torch

from kdsearch.data.prepare import PreparedData
from kdsearch.distill.population import Member, Population, clip_per_member
from kdsearch.distill.teacher_signal import predict
from kdsearch.distill.trainer import Trainer
from kdsearch.models import build_model
from kdsearch.spec import DistillSpec, OptimSpec
from kdsearch.teachers import TeacherPool

OPTIM = OptimSpec(epochs=2, batch_size=32, learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.01)
CONFIGS = [  # every per-member knob differs somewhere: teacher, loss, alpha, temperatures, lr, decay, seed
    ("t_ll", DistillSpec(teacher="t_ll", loss="ce", alpha=0.5, tau_t=2.0, tau_s=1.0), {}, 0),
    ("t_hs", DistillSpec(teacher="t_hs", loss="kl", alpha=1.0, tau_t=4.0, tau_s="same"), {"learning_rate": 2e-3}, 1),
    ("t_ll", DistillSpec(teacher="t_ll", loss="mse", alpha=0.3, tau_t=1.0, tau2_scaling=False), {"learning_rate": 5e-4, "weight_decay": 0.1}, 2),
    ("t_ll", DistillSpec(alpha=0.0), {}, 0),  # the no-KD baseline, seed 0 like the first
    ("t_hs", DistillSpec(teacher="t_hs", loss="ce", alpha=0.7, tau_t=2.0, tau_s=2.0), {"learning_rate": 3e-3}, 3),
]


def student(data: PreparedData, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("xs", data.task, data.label_names, data.vocab_size, data.pad_token_id, data.max_length)
    for m in model.modules():  # dropout off: vmap draws its masks differently from one model
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def members(data: PreparedData, pool: TeacherPool, configs: list[tuple] = CONFIGS) -> list[Member]:
    out = []
    for teacher, distill, optim, seed in configs:
        distill = dataclasses.replace(distill)
        distill.check("distill")
        out.append(Member(distill, dataclasses.replace(OPTIM, **optim), seed, pool.outputs(pool.select(teacher))))
    return out


def population(data: PreparedData, pool: TeacherPool, configs: list[tuple] = CONFIGS) -> Population:
    ms = members(data, pool, configs)
    return Population([student(data, m.seed) for m in ms], data, ms, torch.device("cpu"))


def test_each_member_is_its_single_trial(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    pop = population(rt_data, rt_pool)
    reports = list(pop.run())
    assert len(reports) == 2 and pop.diverged() == {}
    logits = pop.predict("validation")
    for k, m in enumerate(pop.members):
        single = Trainer(student(rt_data, m.seed), rt_data, m.optim, m.seed, m.distill, m.teacher, torch.device("cpu"))
        for epoch, metrics in enumerate(single.run()):
            assert reports[epoch][k]["train_loss"] == pytest.approx(metrics["train_loss"], abs=1e-4)
            assert reports[epoch][k]["val_score"] == metrics["val_score"]
            assert reports[epoch][k]["val_agreement"] == metrics["val_agreement"]
        alone = predict(single.model, rt_data, rt_data.splits["validation"]).logits
        assert (logits[k] - alone).abs().max() < 1e-4, k
    # the members really differ (not one model K times)
    assert len({round(float(logits[k].sum()), 3) for k in range(len(CONFIGS))}) == len(CONFIGS)


def test_clipping_is_per_member() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(3, 4, 5) * torch.tensor([0.01, 1.0, 30.0])[:, None, None], torch.randn(3, 7) * 3]
    alone = [[torch.nn.Parameter(torch.zeros_like(g[k])) for g in grads] for k in range(3)]
    for k in range(3):  # each member clipped on its own, as its single trial does
        for p, g in zip(alone[k], grads):
            p.grad = g[k].clone()
        torch.nn.utils.clip_grad_norm_(alone[k], 1.0)
    clip_per_member(grads, 1.0)
    for k in range(3):
        for g, a in zip(grads, alone[k]):
            assert torch.allclose(g[k], a.grad, atol=1e-7)
    assert grads[0][0].norm() < 0.05  # a small member is not scaled up by a large one


def test_a_diverging_member_is_frozen_and_the_others_go_on_as_without_it(rt_data: PreparedData,
                                                                         rt_pool: TeacherPool) -> None:
    wild = ("t_ll", DistillSpec(teacher="t_ll", loss="ce", alpha=0.5), {"learning_rate": 1e9}, 5)
    configs = [CONFIGS[0], wild, CONFIGS[2]]
    pop = population(rt_data, rt_pool, configs)
    reports = list(pop.run())
    (step,) = pop.diverged().values()
    assert list(pop.diverged()) == [1] and 0 <= step < pop.steps_per_epoch
    assert not bool(pop.active[1]) and reports[-1][1]["train_loss"] != reports[-1][1]["train_loss"]  # NaN
    without = population(rt_data, rt_pool, [CONFIGS[0], CONFIGS[2]])
    list(without.run())
    ours, theirs = pop.predict("validation"), without.predict("validation")
    assert (ours[0] - theirs[0]).abs().max() < 1e-4 and (ours[2] - theirs[1]).abs().max() < 1e-4


def test_a_population_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(rt_data: PreparedData,
                                                                                       rt_pool: TeacherPool) -> None:
    whole = population(rt_data, rt_pool, CONFIGS[:3])
    list(whole.run())
    first = population(rt_data, rt_pool, CONFIGS[:3])
    first.train_epoch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = population(rt_data, rt_pool, CONFIGS[:3])  # a new process: fresh models, then the checkpoint
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.epoch == 1
    list(resumed.run())
    assert torch.equal(resumed.predict("validation"), whole.predict("validation"))


def test_members_must_share_their_schedule_and_fit_a_population(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    ms = members(rt_data, rt_pool, CONFIGS[:2])
    ms[1].optim = dataclasses.replace(ms[1].optim, batch_size=16)
    with pytest.raises(ValueError, match="members of a population share batch_size"):
        Population([student(rt_data, m.seed) for m in ms], rt_data, ms, torch.device("cpu"))
    ms = members(rt_data, rt_pool, CONFIGS[:1])
    ms[0].distill = DistillSpec(inter_map="skip")
    with pytest.raises(ValueError, match="intermediate-layer terms need a projector per member"):
        Population([student(rt_data, 0)], rt_data, ms, torch.device("cpu"))


def test_token_classification_members(ner_data: PreparedData, workdir: Path) -> None:
    from kdsearch.spec import TeacherSpec
    from kdsearch.teachers import TeacherPool

    pool = TeacherPool(workdir / "ner_pool", ner_data, "cpu")
    pool.train(TeacherSpec(model="xs", seeds=[0], train=OptimSpec(epochs=1, batch_size=32, learning_rate=2e-3)), log=lambda s: None)
    configs = [CONFIGS[0], CONFIGS[2]]
    pop = population(ner_data, pool, configs)
    list(pop.run())
    logits = pop.predict("validation")
    for k, m in enumerate(pop.members):
        single = Trainer(student(ner_data, m.seed), ner_data, m.optim, m.seed, m.distill, m.teacher, torch.device("cpu"))
        last = list(single.run())[-1]
        assert (logits[k] - predict(single.model, ner_data, ner_data.splits["validation"]).logits).abs().max() < 1e-4
        assert pop.evaluate("validation", "val")[k]["val_f1"] == last["val_f1"]
