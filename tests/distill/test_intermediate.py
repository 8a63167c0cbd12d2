"""Intermediate distillation: each objective by hand, layer maps, pooling, attention maps, gradients, caching."""

import math

import pytest
import torch

from kdsearch.data.prepare import PreparedData
from kdsearch.distill.intermediate import (
    CRITIC_TEMPERATURE,
    FEATURE_LOSSES,
    FeatureProjector,
    attention_kl,
    expose_attention,
    group_heads,
    layer_map,
    mi_alpha_bound,
    pool_hidden,
)
from kdsearch.distill.trainer import Trainer, TrialConfig, train_student
from kdsearch.models import build_model
from kdsearch.spec import DistillSpec, OptimSpec
from kdsearch.teachers import TeacherPool

S = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 1.0]])
T = torch.tensor([[2.0, 1.0, 0.0], [0.0, -1.0, 3.0]])
SCORES = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.5, 0.3], [1.0, -0.5, 0.8]])


def test_mse_and_cosine_by_hand() -> None:
    sq = [(a - b) ** 2 for rs, rt in zip(S.tolist(), T.tolist()) for a, b in zip(rs, rt)]
    assert FEATURE_LOSSES["mse"](S, T, 0.5).item() == pytest.approx(sum(sq) / len(sq))

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    hand = sum(1 - cos(a, b) for a, b in zip(S.tolist(), T.tolist())) / 2
    assert FEATURE_LOSSES["cosine"](S, T, 0.5).item() == pytest.approx(hand, rel=1e-6)


def hand_bound(scores: list[list[float]], alpha: float) -> float:
    """I_alpha written out term by term (Poole et al. 2019, baseline a(y) = 1)."""
    b = len(scores)
    d = [alpha * sum(math.exp(v) for v in row) / b + (1 - alpha) for row in scores]
    joint = sum(scores[i][i] - math.log(d[i]) for i in range(b)) / b
    marginal = sum(math.exp(scores[i][j]) / d[i] for i in range(b) for j in range(b)) / b**2
    return 1 + joint - marginal


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_mi_alpha_bound_by_hand(alpha: float) -> None:
    assert mi_alpha_bound(SCORES, alpha).item() == pytest.approx(hand_bound(SCORES.tolist(), alpha), abs=1e-5)


def test_mi_alpha_ends_are_infonce_and_tuba() -> None:
    rows = SCORES.tolist()
    b = len(rows)
    infonce = sum(rows[i][i] - math.log(sum(math.exp(v) for v in rows[i]) / b) for i in range(b)) / b
    tuba = 1 + sum(rows[i][i] for i in range(b)) / b - sum(math.exp(v) for r in rows for v in r) / b**2
    assert mi_alpha_bound(SCORES, 1.0).item() == pytest.approx(infonce, abs=1e-5)
    assert mi_alpha_bound(SCORES, 0.0).item() == pytest.approx(tuba, abs=1e-5)
    # InfoNCE never exceeds log B
    assert mi_alpha_bound(SCORES * 50, 1.0).item() <= math.log(b) + 1e-5


def test_mi_alpha_loss_uses_cosine_critic() -> None:
    s = torch.nn.functional.normalize(S, dim=-1)
    t = torch.nn.functional.normalize(T, dim=-1)
    scores = (s @ t.T / CRITIC_TEMPERATURE).tolist()
    assert FEATURE_LOSSES["mi_alpha"](S, T, 0.7).item() == pytest.approx(-hand_bound(scores, 0.7), abs=1e-4)
    # matched pairs carry more information than shuffled ones
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    assert FEATURE_LOSSES["mi_alpha"](x, x, 0.5) < FEATURE_LOSSES["mi_alpha"](x, x.roll(1, 0), 0.5)


def test_layer_maps() -> None:
    assert layer_map("none", 2, 4) == []
    assert layer_map("skip", 2, 4) == [(1, 2), (2, 4)]
    assert layer_map("skip", 4, 6) == [(1, 2), (2, 3), (3, 4), (4, 6)]
    assert layer_map("last", 2, 4) == [(1, 3), (2, 4)]
    assert layer_map("skip", 4, 4) == layer_map("last", 4, 4) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert layer_map("last", 4, 2) == [(1, 1), (2, 1), (3, 1), (4, 2)]


def test_pool_hidden_ignores_padding() -> None:
    h = torch.arange(12.0).reshape(1, 2, 3, 2).unbind(1)  # two layers of [1, 3 tokens, 2]
    h = tuple(x.expand(2, 3, 2) for x in h)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = pool_hidden(h, mask)
    assert pooled.shape == (2, 2, 2)
    assert pooled[0, 0].tolist() == [1.0, 2.0]  # mean of tokens 0 and 1 of layer 0
    assert pooled[1, 1].tolist() == [8.0, 9.0]  # mean of all three tokens of layer 1


@pytest.mark.parametrize("loss", ["mse", "cosine", "mi_alpha"])
def test_gradients_reach_student_and_projection(loss: str) -> None:
    torch.manual_seed(0)
    student = build_model("xs", "classification", ["a", "b"], 100, 0, 16)
    ids = torch.randint(5, 100, (4, 10))
    mask = torch.ones_like(ids)
    out = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    pooled = pool_hidden(out.hidden_states, mask)
    teacher = torch.randn(4, 5, 256)  # 4 teacher layers + embeddings, 256 wide
    proj = FeatureProjector(layer_map("skip", 2, 4), 128, 256)
    proj(pooled, teacher, loss, 0.5).backward()
    for m in proj.maps:
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    layer_grads = [p.grad for n, p in student.named_parameters() if "encoder.layer.0." in n]
    assert any(g is not None and g.abs().sum() > 0 for g in layer_grads)
    assert student.get_input_embeddings().weight.grad.abs().sum() > 0


def test_same_width_needs_no_projection() -> None:
    proj = FeatureProjector(layer_map("skip", 2, 4), 256, 256)
    assert all(isinstance(m, torch.nn.Identity) for m in proj.maps)
    assert not list(proj.parameters())


def test_teacher_features_cached_once_and_match_a_forward(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    rec = rt_pool.select("t_ll")
    first = rt_pool.outputs(rec, features=True)
    passes = rt_pool.forward_passes
    again = rt_pool.outputs(rec, features=True)
    assert rt_pool.forward_passes == passes  # read from disk
    assert again.feature_shape() == (4, 256)
    from kdsearch.data.batching import make_batch
    from kdsearch.models import load_model

    model = load_model(rec.path, rt_data.task, rt_data.label_names).eval()
    batch = make_batch(rt_data.splits["validation"], torch.arange(5))
    with torch.inference_mode():
        out = model(**batch.model_inputs(), output_hidden_states=True)
    direct = pool_hidden(out.hidden_states, batch.attention_mask)
    assert torch.allclose(first.features("validation", batch), direct, atol=1e-4)
    assert rt_pool.outputs(rec).feature_shape() is None  # logits only unless asked


def test_trainer_updates_projection_and_resumes_it(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    teacher = rt_pool.outputs(rt_pool.select("t_ll"), features=True)
    distill = DistillSpec(alpha=0.5, inter_map="skip", inter_loss="mi_alpha", inter_weight=1.0)
    optim = OptimSpec(epochs=1, batch_size=32, learning_rate=1e-3)
    torch.manual_seed(0)
    model = build_model("xs", rt_data.task, rt_data.label_names, rt_data.vocab_size, rt_data.pad_token_id, rt_data.max_length)
    trainer = Trainer(model, rt_data, optim, 0, distill, teacher, torch.device("cpu"))
    assert trainer.projector is not None and len(trainer.projector.maps) == 2
    before = [p.detach().clone() for p in trainer.projector.parameters()]
    trainer.train_epoch()
    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.projector.parameters()))
    state = trainer.state_dict()
    other = Trainer(build_model("xs", rt_data.task, rt_data.label_names, rt_data.vocab_size, rt_data.pad_token_id, rt_data.max_length),
                    rt_data, optim, 0, distill, teacher, torch.device("cpu"))
    other.load_state_dict(state)
    for a, b in zip(trainer.projector.parameters(), other.projector.parameters()):
        assert torch.equal(a, b)


def test_intermediate_term_changes_the_student_and_needs_features(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    teacher = rt_pool.outputs(rt_pool.select("t_ll"), features=True)
    optim = OptimSpec(epochs=1, batch_size=32, learning_rate=1e-3)
    plain = train_student(TrialConfig("xs", optim, DistillSpec(), 0), rt_data, teacher, "cpu")
    inter = train_student(TrialConfig("xs", optim, DistillSpec(inter_map="last", inter_loss="cosine"), 0), rt_data, teacher, "cpu")
    assert plain.status == inter.status == "ok"
    assert plain.final["train_loss"] != inter.final["train_loss"]
    with pytest.raises(ValueError, match="hidden states"):
        train_student(TrialConfig("xs", optim, DistillSpec(inter_map="skip"), 0), rt_data, rt_pool.outputs(rt_pool.select("t_ll")), "cpu")


def softmax_rows(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention probabilities as BERT makes them: padded keys get probability 0."""
    return torch.softmax(scores.masked_fill(mask[:, None, None, :] == 0, float("-inf")), dim=-1)


def hand_kl(s: list[list[float]], t: list[list[float]], queries: int) -> float:
    """Mean over the first ``queries`` rows of sum_k t log(t / s), skipping t = 0."""
    total = 0.0
    for q in range(queries):
        total += sum(tk * math.log(tk / sk) for tk, sk in zip(t[q], s[q]) if tk > 0)
    return total / queries


def test_attention_kl_by_hand_ignores_padded_queries_and_keys() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 0]])
    s = softmax_rows(torch.randn(1, 1, 3, 3), mask)
    t = softmax_rows(torch.randn(1, 1, 3, 3), mask)
    want = hand_kl(s[0, 0].tolist(), t[0, 0].tolist(), 2)
    assert attention_kl(s, t, mask).item() == pytest.approx(want, rel=1e-5)
    assert attention_kl(t, t, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_heads_grouped_where_they_divide_else_averaged() -> None:
    torch.manual_seed(1)
    mask = torch.ones(2, 4, dtype=torch.long)
    s = softmax_rows(torch.randn(2, 2, 4, 4), mask)
    t4 = softmax_rows(torch.randn(2, 4, 4, 4), mask)
    grouped = torch.stack([t4[:, 0:2].mean(1), t4[:, 2:4].mean(1)], dim=1)
    assert torch.allclose(group_heads(t4, 2), grouped)
    want = sum(hand_kl(s[b, h].tolist(), grouped[b, h].tolist(), 4) for b in range(2) for h in range(2)) / 4
    assert attention_kl(s, t4, mask).item() == pytest.approx(want, rel=1e-5)
    t3 = softmax_rows(torch.randn(2, 3, 4, 4), mask)  # 3 heads do not divide into 2: both averaged
    sm, tm = s.mean(1), t3.mean(1)
    want = sum(hand_kl(sm[b].tolist(), tm[b].tolist(), 4) for b in range(2)) / 2
    assert attention_kl(s, t3, mask).item() == pytest.approx(want, rel=1e-5)


def test_attention_maps_are_distributions_and_gradients_reach_queries_and_keys() -> None:
    torch.manual_seed(0)
    student = build_model("xs", "classification", ["a", "b"], 100, 0, 16).train()
    ids = torch.randint(5, 100, (4, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    student.set_attn_implementation("eager")
    dropped = student(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[0]
    assert not torch.allclose(dropped.sum(-1), torch.ones(4, 2, 10))  # returned after dropout: not distributions
    assert expose_attention(student) == 2  # one attention dropout per layer
    assert student.config.attention_probs_dropout_prob == 0.0
    out = student(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(4, 2, 10), atol=1e-5)
    teacher = tuple(softmax_rows(torch.randn(4, 4, 10, 10), mask) for _ in range(4))  # 4 layers, 4 heads
    proj = FeatureProjector(layer_map("skip", 2, 4), 128, 256, project=False)
    assert not list(proj.parameters())  # attention alone needs no projection
    proj.attention(out.attentions, teacher, mask).backward()
    for name in ("query", "key"):
        grads = [p.grad for n, p in student.named_parameters() if f"layer.0.attention.self.{name}" in n]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_attention_trial_runs_the_teacher_live_once_per_step(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    teacher = rt_pool.outputs(rt_pool.select("t_ll"), with_model=True)
    asked: list[bool] = []
    hook = teacher.model.register_forward_hook(lambda m, a, kw, out: asked.append(kw.get("output_attentions")), with_kwargs=True)
    optim = OptimSpec(epochs=1, batch_size=32, learning_rate=1e-3)
    d = DistillSpec(inter_map="skip", inter_features="attention", inter_weight=1.0)
    r = train_student(TrialConfig("xs", optim, d, 0), rt_data, teacher, "cpu")
    hook.remove()
    plain = train_student(TrialConfig("xs", optim, DistillSpec(), 0), rt_data, teacher, "cpu")
    assert r.status == plain.status == "ok"
    assert asked == [True] * -(-len(rt_data.splits["train"]) // 32)
    assert r.final["train_loss"] != plain.final["train_loss"]
    both = train_student(TrialConfig("xs", optim, DistillSpec(inter_map="last", inter_features="both"), 0), rt_data, teacher, "cpu")
    assert both.status == "ok" and both.final["train_loss"] != r.final["train_loss"]
    with pytest.raises(ValueError, match="attention maps need the teacher's model"):
        train_student(TrialConfig("xs", optim, d, 0), rt_data, rt_pool.outputs(rt_pool.select("t_ll")), "cpu")
