"""Augmentation: what each op may change, labels kept only where valid, the teacher run live."""

from pathlib import Path

import pytest
import torch

from kdsearch.data.batching import Batch, make_batch
from kdsearch.data.prepare import IGNORE_INDEX, PreparedData
from kdsearch.distill.augment import AugmentContext, augment, beta_sample
from kdsearch.distill.losses import kd_objective
from kdsearch.distill.trainer import TrialConfig, train_student
from kdsearch.models import build_model
from kdsearch.spec import DistillSpec, OptimSpec
from kdsearch.teachers import TeacherPool


def ctx(data: PreparedData, seed: int = 0) -> AugmentContext:
    return AugmentContext(
        torch.tensor(data.special_ids), data.mask_token_id, data.pad_token_id, torch.Generator().manual_seed(seed),
        data.task == "token_classification",
    )


def batch_of(data: PreparedData, n: int = 16) -> Batch:
    return make_batch(data.splits["train"], torch.arange(n))


def test_p_zero_changes_nothing(rt_data: PreparedData) -> None:
    b = batch_of(rt_data)
    for name in ("swap", "delete", "mask", "mixup"):
        out = augment(name, b, 0.0, ctx(rt_data))
        assert torch.equal(out.batch.input_ids, b.input_ids) and not out.rows.any() and out.partner is None


def test_mask_changes_only_real_non_special_tokens(rt_data: PreparedData) -> None:
    b = batch_of(rt_data)
    out = augment("mask", b, 1.0, ctx(rt_data))
    changed = out.batch.input_ids != b.input_ids
    assert changed.any(1).all()  # every row augmented at p = 1
    assert (out.batch.input_ids[changed] == rt_data.mask_token_id).all()
    special = torch.isin(b.input_ids, torch.tensor(rt_data.special_ids))
    assert not (changed & special).any() and not (changed & ~b.attention_mask.bool()).any()
    assert out.label_ok.all()  # a class survives masking


def test_swap_keeps_each_rows_tokens(rt_data: PreparedData) -> None:
    b = batch_of(rt_data)
    out = augment("swap", b, 1.0, ctx(rt_data))
    assert not torch.equal(out.batch.input_ids, b.input_ids)
    for r in range(len(b.index)):
        assert sorted(out.batch.input_ids[r].tolist()) == sorted(b.input_ids[r].tolist())
        assert out.batch.input_ids[r, 0] == b.input_ids[r, 0]  # [CLS] stays first


def test_delete_shortens_and_moves_ner_tags_with_their_tokens(ner_data: PreparedData) -> None:
    b = batch_of(ner_data)
    out = augment("delete", b, 1.0, ctx(ner_data))
    assert (out.batch.attention_mask.sum(1) < b.attention_mask.sum(1)).all()
    for r in range(len(b.index)):
        n = int(out.batch.attention_mask[r].sum())
        kept = out.batch.input_ids[r, :n].tolist()
        pairs = list(zip(b.input_ids[r].tolist(), b.labels[r].tolist()))
        # every kept (token, tag) pair existed in the original row, in order
        it = iter(pairs)
        assert all(any(p == q for q in it) for p in zip(kept, out.batch.labels[r, :n].tolist()))
    assert not out.label_ok.any()  # NER tags do not survive token edits: teacher only


def test_mixup_mixes_embeddings_and_class_labels(rt_data: PreparedData) -> None:
    b = batch_of(rt_data)
    out = augment("mixup", b, 0.5, ctx(rt_data, 3))
    assert out.rows.any() and (~out.rows).any()
    assert torch.equal(out.lam[~out.rows], torch.ones(int((~out.rows).sum())))
    model = build_model("xs", rt_data.task, rt_data.label_names, rt_data.vocab_size, rt_data.pad_token_id, rt_data.max_length)
    inputs = out.model_inputs(model)
    e = model.get_input_embeddings()
    lam = out.lam[:, None, None]
    assert torch.allclose(inputs["inputs_embeds"], lam * e(b.input_ids) + (1 - lam) * e(b.input_ids[out.partner]))
    soft = out.soft_labels(rt_data.num_labels)
    assert torch.allclose(soft.sum(1), torch.ones(len(b.index)))
    r = int(out.rows.nonzero()[0])
    y, yp = int(b.labels[r]), int(b.labels[out.partner[r]])
    assert soft[r, y] == pytest.approx(float(out.lam[r]) + (1 - float(out.lam[r])) * (y == yp), abs=1e-6)


def test_same_seed_same_augmentation(rt_data: PreparedData) -> None:
    b = batch_of(rt_data)
    a1, a2 = augment("swap", b, 0.5, ctx(rt_data, 7)), augment("swap", b, 0.5, ctx(rt_data, 7))
    assert torch.equal(a1.batch.input_ids, a2.batch.input_ids)
    assert not torch.equal(a1.batch.input_ids, augment("swap", b, 0.5, ctx(rt_data, 8)).batch.input_ids)


def test_beta_sample_is_symmetric_and_u_shaped() -> None:
    x = beta_sample(torch.rand(20000, generator=torch.Generator().manual_seed(0)), 0.4)
    assert abs(float(x.mean()) - 0.5) < 0.01
    assert float(((x < 0.1) | (x > 0.9)).float().mean()) > 0.4  # Beta(0.4, 0.4) piles up at the ends


def test_gold_weight_and_soft_labels_by_hand() -> None:
    z = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]])
    y = torch.tensor([1, 0, 0])
    logp = torch.log_softmax(z, -1)
    w = torch.tensor([1.0, 0.0, 1.0])
    hand = -(logp[0, 1] + logp[2, 0]) / 2
    assert kd_objective(z, y, None, alpha=0.0, gold_weight=w).item() == pytest.approx(hand.item())
    soft = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]])
    hand = -(soft * logp).sum(-1).mean()
    assert kd_objective(z, y, None, alpha=0.0, soft_labels=soft).item() == pytest.approx(hand.item())
    # no weights, no soft labels: the plain mean
    assert kd_objective(z, y, None, alpha=0.0).item() == pytest.approx(-logp[[0, 1, 2], y].mean().item())


def test_augmenting_trial_runs_the_teacher_live_on_augmented_batches(rt_data: PreparedData,
                                                                     rt_pool: TeacherPool) -> None:
    teacher = rt_pool.outputs(rt_pool.select("t_ll"), with_model=True)
    seen: list[torch.Tensor] = []
    hook = teacher.model.register_forward_hook(lambda m, args, kw, out: seen.append(kw.get("input_ids")), with_kwargs=True)
    optim = OptimSpec(epochs=1, batch_size=32, learning_rate=1e-3)
    r = train_student(TrialConfig("xs", optim, DistillSpec(augment="mask", augment_p=1.0), 0), rt_data, teacher, "cpu")
    hook.remove()
    assert r.status == "ok"
    steps = -(-len(rt_data.splits["train"]) // 32)
    assert len(seen) == steps  # once per step, in the step
    assert all((ids == rt_data.mask_token_id).any() for ids in seen)  # on the augmented inputs
    assert "val_agreement" in r.final  # fidelity still measured on the clean split


def test_augmenting_without_the_teacher_model_is_a_clear_error(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    teacher = rt_pool.outputs(rt_pool.select("t_ll"))
    optim = OptimSpec(epochs=1, batch_size=32, learning_rate=1e-3)
    with pytest.raises(ValueError, match="without its model"):
        train_student(TrialConfig("xs", optim, DistillSpec(augment="swap", augment_p=1.0), 0), rt_data, teacher, "cpu")


def test_ner_mixup_trial_learns_from_teacher_only_on_mixed_rows(ner_data: PreparedData, workdir: Path) -> None:
    from kdsearch.spec import TeacherSpec
    from kdsearch.teachers import TeacherPool

    pool = TeacherPool(workdir, ner_data, "cpu")
    pool.train(TeacherSpec(model="xs", seeds=[0], train=OptimSpec(epochs=1, batch_size=32, learning_rate=2e-3)), log=lambda s: None)
    teacher = pool.outputs(pool.select("t_ll"), features=True, with_model=True)
    optim = OptimSpec(epochs=1, batch_size=32, learning_rate=1e-3)
    d = DistillSpec(augment="mixup", augment_p=0.5, inter_map="skip", inter_loss="mse")
    r = train_student(TrialConfig("xs", optim, d, 0), ner_data, teacher, "cpu")
    assert r.status == "ok" and r.final["train_loss"] > 0
    assert IGNORE_INDEX == -100


def test_teacher_with_model_survives_pickling_for_the_object_store(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    import pickle

    teacher = rt_pool.outputs(rt_pool.select("t_ll"), features=True, with_model=True)
    copy = pickle.loads(pickle.dumps(teacher))
    batch = make_batch(rt_data.splits["validation"], torch.arange(8))
    a, fa, _ = teacher.run(batch.model_inputs(), batch.labels, rt_data.task, True)
    b, fb, _ = copy.run(batch.model_inputs(), batch.labels, rt_data.task, True)
    assert torch.allclose(a, b) and torch.allclose(fa, fb)
    assert torch.allclose(a, teacher.logits("validation", batch), atol=1e-4)  # live == cached
    assert torch.equal(copy.features("validation", batch), teacher.features("validation", batch))
