"""Extractive QA end to end: windows and offsets, SQuAD's scores, a search (greedy, fused),
and an export that ONNX Runtime reproduces and whose card's reader answers a question."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdsearch.data.prepare import PreparedData, prepare_data
from kdsearch.data.qa import QAWindows, best_spans, squad_scores
from kdsearch.distill.losses import kd_objective
from kdsearch.spec import DataSpec, DistillSpec, TokenizerSpec
from kdsearch.tasks import MASKED_LOGIT
from tests.conftest import SharedRay
from tests.qa.handmade import qa_folder


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # long contexts (4 people, 10 filler sentences: ~170 tokens) against 48-token windows
    return qa_folder(tmp_path_factory.mktemp("qa") / "handmade", train=120, eval_=40, people=4, filler=10)


@pytest.fixture(scope="module")
def qa_data(qa_dir: Path, workdir: Path) -> PreparedData:
    spec = DataSpec(dataset=str(qa_dir), max_length=48, doc_stride=16, tokenizer=TokenizerSpec(vocab_size=300))
    return prepare_data(spec, workdir, log=lambda s: None)


def test_the_task_is_read_from_squads_columns(qa_data: PreparedData) -> None:
    assert qa_data.task == "question_answering" and qa_data.label_names == ["start", "end"]
    assert qa_data.num_classes == 48  # a window's positions are its classes


def test_windows_map_known_answers_back_to_their_characters(qa_data: PreparedData, qa_dir: Path) -> None:
    train = pd.read_parquet(qa_dir / "train.parquet")
    enc, windows = qa_data.splits["train"], qa_data.qa["train"]
    assert enc.input_ids.shape[1] == 48 and enc.fixed_width
    per_question = windows.example.bincount()
    assert int(per_question.min()) >= 3  # every context is longer than a window: it is cut into several
    holding = 0
    for w in range(len(windows.example)):
        q = int(windows.example[w])
        s, e = enc.labels[w].tolist()
        if s == 0:
            assert e == 0  # a window without the whole answer points at [CLS]
            continue
        holding += 1
        context, answer = train.context[q], train.answers[q]
        start = int(windows.char_start[w, s])
        assert context[start : int(windows.char_end[w, e])] == answer["text"][0]
        assert start == answer["answer_start"][0]
    assert holding >= len(train)  # every answer is whole in at least one window
    # consecutive windows of one context overlap by the stride: the first 16 context tokens of
    # a window are the last 16 of the one before
    for w in range(len(windows.example) - 1):
        if windows.example[w] == windows.example[w + 1]:
            prev = windows.char_start[w][windows.char_start[w] >= 0]
            nxt = windows.char_start[w + 1][windows.char_start[w + 1] >= 0]
            assert torch.equal(prev[-16:], nxt[:16])


def test_squad_scores_of_hand_made_predictions() -> None:
    preds = ["the Eiffel Tower!", "Tower", "in Paris, France", "", "An apple a day"]
    golds = [["Eiffel Tower"], ["Eiffel Tower", "the tower"], ["Paris"], ["Rome"], ["apple day"]]
    # EM: articles and punctuation go, the best gold counts: 1, 1, 0, 0, 1
    # F1: 1, 1, {in, paris, france} vs {paris}: P 1/3, R 1 -> 0.5, 0, 1
    got = squad_scores(preds, golds)
    assert got["exact_match"] == pytest.approx(3 / 5) and got["f1"] == pytest.approx(3.5 / 5)


def test_the_best_span_is_inside_the_context_ordered_and_capped() -> None:
    # one question in two windows of 6 positions; positions 0-1 are the question, 2-5 the context
    starts = torch.full((2, 6), -1, dtype=torch.int32)
    starts[:, 2:] = torch.tensor([0, 5, 10, 15], dtype=torch.int32)
    windows = QAWindows(torch.tensor([0, 0]), starts, starts + 4, ["aaaa bbbb cccc dddd"], [["cccc"]])
    logits = torch.zeros(4, 6)
    logits[0, 0] = logits[1, 0] = 50.0  # the question's own token: never an answer
    logits[0, 5], logits[1, 2] = 9.0, 9.0  # window 0: start after end (18): never an answer; alone 9
    logits[2, 4], logits[3, 4] = 6.0, 6.0  # window 1: the span 'cccc' (12)
    spans = best_spans(logits, windows)
    assert spans.texts == ["cccc"] and int(spans.window[0]) == 1
    long_span = torch.zeros(4, 6)
    long_span[2, 2], long_span[3, 5] = 5.0, 5.0  # 'aaaa ... dddd': 4 tokens
    assert best_spans(long_span, windows, max_answer_tokens=3).texts != ["aaaa bbbb cccc dddd"]
    assert best_spans(long_span, windows, max_answer_tokens=4).texts == ["aaaa bbbb cccc dddd"]


@pytest.mark.parametrize("loss", ["ce", "kl", "mse", "dist"])
@pytest.mark.parametrize("logit_std", [False, True])
def test_padding_positions_move_no_loss(loss: str, logit_std: bool) -> None:
    """What the padding of a window holds changes no distance, at any temperature."""
    torch.manual_seed(0)
    classes = torch.ones(4, 8, dtype=torch.bool)
    classes[:, 6:] = False
    s, t = torch.randn(4, 8), torch.randn(4, 8)
    y = torch.tensor([1, 2, 3, 0])
    kw = dict(alpha=0.7, loss=loss, tau_t=3.0, tau_s=0.5, logit_std=logit_std, classes=classes)
    base = kd_objective(s.masked_fill(~classes, MASKED_LOGIT), y, t.masked_fill(~classes, MASKED_LOGIT), **kw)
    other = kd_objective(s.masked_fill(~classes, 7.0), y, t.masked_fill(~classes, -3.0), **kw)
    cut = kd_objective(s[:, :6], y, t[:, :6], **{**kw, "classes": None})
    assert torch.isfinite(base) and float(base) == pytest.approx(float(other), rel=1e-5)
    if loss != "dist":  # DIST's intra term reads the padding columns as classes no row has (1 - r = 1)
        assert float(base) == pytest.approx(float(cut), rel=1e-5)


QA_SPEC = """
name: qa
data: {{dataset: {data}, max_length: 48, doc_stride: 16, tokenizer: {{vocab_size: 300}}}}
teachers: {{model: xs, seeds: [0], train: {{epochs: 4, batch_size: 16, learning_rate: 3.0e-3}}}}
student: {{model: xxs, train: {{epochs: 1, batch_size: 16, learning_rate: 3.0e-3}}}}
distill: {{teacher: t_ll, loss: ce, alpha: 0.5, tau_t: 2.0, tau_s: 1.0}}
workdir: {workdir}
search:
  method: greedy
  space: {{loss: [ce, mse, dist]}}
  seeds: [0, 1]
  fuse: {fuse}
  storage: {storage}
  confirm_seeds: 0
"""


@pytest.fixture(scope="module")
def qa_search(qa_dir: Path, workdir: Path, tmp_path_factory: pytest.TempPathFactory, shared_ray: SharedRay) -> Path:
    from kdsearch.search.runner import run_search
    from kdsearch.spec import load_spec

    shared_ray.ensure()
    tmp = tmp_path_factory.mktemp("qa-search")
    spec = tmp / "qa.yaml"
    spec.write_text(QA_SPEC.format(data=qa_dir, workdir=workdir, storage=tmp / "searches", fuse=8))
    return run_search(load_spec(spec, ["student.dropout=0.0"]), log=lambda *a, **k: None)


def test_teacher_traits_of_qa_read_the_answer_windows_over_the_context(qa_data: PreparedData) -> None:
    """Calibration over the start/end rows of windows that hold the answer (a window without it
    points at [CLS], outside the context); agreement over context positions, as fidelity."""
    from kdsearch.distill.trainer import teacher_traits

    enc = qa_data.splits["validation"]
    gold = enc.labels.reshape(-1)
    width = qa_data.num_classes
    sure = torch.full((len(gold), width), -8.0).scatter(1, gold.unsqueeze(1), 8.0)  # certain, and right
    traits = teacher_traits(qa_data, sure, sure.clone())
    assert traits["teacher_ece"] < 1e-3 and traits["teacher_agreement"] == pytest.approx(1.0)
    # half as sure on the answer rows: confidence ~0.5 at 100% accuracy, an ECE of ~0.5
    holds = gold != 0
    assert 0 < int(holds.sum()) < len(gold)  # some windows miss the answer
    half = sure.clone()
    rows = holds.nonzero().squeeze(1)
    half[rows, (gold[rows] + 1) % width] = 8.0  # a second position as likely as the gold one
    assert teacher_traits(qa_data, half, None)["teacher_ece"] == pytest.approx(0.5, abs=0.05)


def test_a_qa_search_runs_greedy_in_populations_and_writes_rows(qa_search: Path) -> None:
    trials = pd.read_parquet(qa_search / "trials.parquet")
    assert (trials.status == "ok").all() and set(trials.loss.dropna()) >= {"ce", "mse", "dist"}
    assert trials.members.max() > 1  # fused: several (config, seed) points trained as one model
    assert trials.val_f1.between(0, 1).all() and trials.val_exact_match.between(0, 1).all()
    assert (trials.val_score == trials.val_f1).all() and (trials.val_exact_match <= trials.val_f1 + 1e-9).all()
    assert trials.val_agreement.between(0, 1).all() and (trials.val_kl >= 0).all()
    assert "test_f1" in trials.columns and trials.test_f1.notna().all()
    search = json.loads((qa_search / "search.json").read_text())
    assert "question_answering" in json.dumps(search)
    features = next(iter(search["datasets"].values()))  # what the recommender reads of it
    assert 0 < features["vocab_overlap"] <= 1 and 0 <= features["teacher_ece"] <= 1 and 0 <= features["teacher_agreement"] <= 1


def test_a_qa_export_matches_pytorch_in_onnx_and_its_reader_answers(qa_search: Path, tmp_path: Path, qa_dir: Path,
                                                                    qa_data: PreparedData) -> None:
    from kdsearch.export import export

    out = tmp_path / "export"
    export(qa_search, "handmade/xxs", out, log=lambda *a: None, onnx=True)
    metrics = json.loads((out / "metrics.json").read_text())["deploy"]
    assert metrics["onnx"]["agreement"] >= 0.999 and metrics["onnx"]["max_abs_diff"] < 1e-3
    assert metrics["outputs"] == ["start_logits", "end_logits"]
    card = (out / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", card, re.S)[0].replace("THIS_FOLDER", str(out))
    reader: dict = {}
    exec(compile(code, "card", "exec"), reader)  # the card's own code, as a user copies it
    test = pd.read_parquet(qa_dir / "test.parquet")
    # kdsearch's own answers for the same student: the reader must give the same span
    from transformers import AutoModelForQuestionAnswering

    from kdsearch.distill.teacher_signal import predict

    model = AutoModelForQuestionAnswering.from_pretrained(out)
    ours = best_spans(predict(model, qa_data, qa_data.splits["test"]).logits, qa_data.qa["test"]).texts
    for q in range(3):
        got = reader["answer"](test.question[q], test.context[q])
        assert got == ours[q] and got in test.context[q]


def test_intermediate_terms_train_a_qa_student(qa_search: Path, qa_data: PreparedData, workdir: Path) -> None:
    """Pooled hidden states and attention maps have the same shapes in QA: both terms apply."""
    from kdsearch.distill.trainer import TrialConfig, train_student
    from kdsearch.spec import OptimSpec
    from kdsearch.teachers import TeacherPool

    pool = TeacherPool(workdir, qa_data, "cpu")  # the search's pool (same data, same teacher spec)
    teacher, _ = pool.signal("t_ll", features=True, with_model=True)
    for features in ("hidden", "attention"):
        distill = DistillSpec(alpha=0.5, inter_map="skip", inter_features=features)
        config = TrialConfig("xxs", OptimSpec(epochs=1, batch_size=16, learning_rate=3e-3, max_steps=6), distill, 0)
        result = train_student(config, qa_data, teacher, device="cpu")
        assert result.status == "ok" and 0 <= result.final["val_f1"] <= 1 and result.final["train_loss"] > 0


def test_qa_population_members_are_their_single_trials(qa_search: Path, qa_data: PreparedData, workdir: Path) -> None:
    """Each member of a QA population (CE, MSE with z-scored logits, DIST, no KD) equals its
    single trial: the masked padding and the start/end rows are the same in both."""
    from kdsearch.distill.teacher_signal import predict
    from kdsearch.distill.trainer import Trainer
    from kdsearch.teachers import TeacherPool
    from tests.distill.test_population import OPTIM, Member, Population, student

    pool = TeacherPool(workdir, qa_data, "cpu")
    teacher = pool.outputs(pool.select("t_ll"))
    configs = [DistillSpec(loss="ce", alpha=0.5, tau_t=2.0), DistillSpec(loss="mse", alpha=0.7, tau_t=3.0, logit_std=True),
               DistillSpec(loss="dist", alpha=1.0, tau_t=2.0), DistillSpec(alpha=0.0)]
    optim = dataclasses.replace(OPTIM, max_steps=4)
    members = []
    for i, d in enumerate(configs):
        d.check("distill")
        members.append(Member(d, optim, i, teacher))
    pop = Population([student(qa_data, m.seed) for m in members], qa_data, members, torch.device("cpu"))
    list(pop.run())
    logits = pop.predict("validation")
    for k, m in enumerate(members):
        single = Trainer(student(qa_data, m.seed), qa_data, m.optim, m.seed, m.distill, m.teacher, torch.device("cpu"))
        last = list(single.run())[-1]
        # the forward passes agree to 2e-7 (measured); 4 AdamW steps, whose first moves every weight
        # by about the learning rate whatever its gradient's size, leave logits up to ~1e-3 apart
        assert (logits[k] - predict(single.model, qa_data, qa_data.splits["validation"]).logits).abs().max() < 2e-3
        assert pop.evaluate("validation", "val")[k]["val_f1"] == pytest.approx(last["val_f1"], abs=0.05)
