"""The teacher pool: training, selection, registration and the output cache."""

from collections.abc import Callable
from pathlib import Path

import pytest

from kdsearch.data.prepare import PreparedData, prepare_data
from kdsearch.errors import KDSearchError, ModelError
from kdsearch.models import load_model
from kdsearch.spec import OptimSpec, TeacherSpec
from kdsearch.teachers import TeacherPool, TeacherRecord
from tests.conftest import SharedRay


def test_pool_has_a_checkpoint_per_epoch_with_metrics(rt_pool: TeacherPool) -> None:
    trained = [r for r in rt_pool.records if r.source == "trained"]
    assert sorted(r.epoch for r in trained) == [1, 2, 3]
    for r in trained:
        assert (Path(r.path) / "config.json").is_file() and (Path(r.path) / "tokenizer.json").is_file()
        assert 0 < r.val_score <= 1 and r.val_loss > 0


def test_selection_on_the_real_pool(rt_pool: TeacherPool) -> None:
    trained = [r for r in rt_pool.records if r.source == "trained"]
    assert rt_pool.select("t_hs").val_score == max(r.val_score for r in trained)
    assert rt_pool.select("t_ll").val_loss == min(r.val_loss for r in trained)


def test_t_hs_and_t_ll_differ_when_best_score_and_lowest_loss_differ(workdir: Path, rt_data: PreparedData) -> None:
    pool = TeacherPool(workdir / "synthetic", rt_data, "cpu")
    pool.records = [
        TeacherRecord("e1", "-", val_score=0.70, val_loss=0.55, source="trained", epoch=1),
        TeacherRecord("e2", "-", val_score=0.74, val_loss=0.52, source="trained", epoch=2),
        TeacherRecord("e3", "-", val_score=0.76, val_loss=0.61, source="trained", epoch=3),  # overfit
        TeacherRecord("e4", "-", val_score=0.76, val_loss=0.70, source="trained", epoch=4),
    ]
    assert pool.select("t_hs").name == "e3"  # tie on score -> lower loss
    assert pool.select("t_ll").name == "e2"
    assert pool.select("e4").name == "e4"
    with pytest.raises(KDSearchError, match="no teacher 'e9'"):
        pool.select("e9")


def test_retraining_skips_seeds_already_in_the_pool(rt_pool: TeacherPool) -> None:
    from kdsearch.spec import OptimSpec, TeacherSpec

    logs: list[str] = []
    new = rt_pool.train(TeacherSpec(model="s", seeds=[0], train=OptimSpec(epochs=3, batch_size=32, learning_rate=2e-3)), log=logs.append)
    assert new == [] and "skipped" in logs[0]


def test_register_existing_checkpoint_and_missing_folder(workdir: Path, rt_data: PreparedData,
                                                         rt_pool: TeacherPool) -> None:
    pool = TeacherPool(workdir / "registered", rt_data, "cpu")
    src = rt_pool.select("t_ll")
    rec = pool.register(src.path, name="mine")
    assert rec.source == "registered" and rec.val_loss == pytest.approx(src.val_loss, rel=1e-4)
    with pytest.raises(ModelError, match="teacher folder .* does not exist"):
        pool.register(workdir / "no-such-teacher")


def test_outputs_computed_once_then_read(rt_data: PreparedData, rt_pool: TeacherPool) -> None:
    pool = TeacherPool(rt_pool.workdir, rt_data, "cpu")  # a fresh process would start like this
    rec = pool.select("t_hs")
    pool.outputs(rec)
    first = pool.forward_passes
    pool.outputs(rec)
    assert pool.forward_passes == first
    assert first in (0, len(rt_data.splits))  # 0 when another test cached it already


def test_empty_pool_selection_is_a_clear_error(workdir: Path, rt_data: PreparedData) -> None:
    pool = TeacherPool(workdir / "empty", rt_data, "cpu")
    with pytest.raises(KDSearchError, match="teacher pool .* is empty"):
        pool.select("t_ll")


def test_an_ensemble_teacher_is_the_mean_logits_of_the_lowest_loss_checkpoints(rt_data: PreparedData,
                                                                               rt_pool: TeacherPool) -> None:
    import torch

    from kdsearch.knobs import key, teacher_key

    trained = sorted((r for r in rt_pool.records if r.source == "trained"), key=lambda r: r.val_loss)
    signal, rec = rt_pool.signal(teacher_key({"teacher": "ensemble", "ensemble_k": 2}))
    assert rec.name == f"ensemble:2 ({trained[0].name} + {trained[1].name})" and rec.source == "ensemble"
    for split in rt_data.splits:
        members = [rt_pool.outputs(r).split_logits(split) for r in trained[:2]]
        assert torch.allclose(signal.split_logits(split), (members[0] + members[1]) / 2)
    assert 0 < rec.val_score <= 1 and rec.val_loss > 0  # scored on its own mean logits
    with pytest.raises(KDSearchError, match="distill.ensemble_k: 9 checkpoints asked for the ensemble, but the pool .* has 3"):
        rt_pool.signal("ensemble:9")
    with pytest.raises(KDSearchError, match="augmentation and attention maps need one teacher model"):
        rt_pool.signal("ensemble:2", with_model=True)
    # ensemble_k changes what trains only when the teacher is the ensemble
    assert key({"teacher": "ensemble", "ensemble_k": 2}) != key({"teacher": "ensemble", "ensemble_k": 3})
    assert key({"teacher": "t_ll", "ensemble_k": 2}) == key({"teacher": "t_ll", "ensemble_k": 3})


def test_a_search_over_ensembles_records_the_knob(local_ray: SharedRay, tiny_spec: Callable[..., Path],
                                                  tmp_path: Path) -> None:
    import pandas as pd

    from kdsearch.search.runner import run_search
    from kdsearch.spec import load_spec
    spec = load_spec(tiny_spec(name="ens", seeds="[0]", train=128),
                     ["search.space={teacher: [t_ll, ensemble], ensemble_k: [2, 3]}", "teachers.train.epochs=3"])
    folder = run_search(spec, log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    kd = trials[trials.stage != "baseline"]
    assert trials.ensemble_k.dtype == "int64" and (trials.status == "ok").all()
    # stage 0: t_ll and ensemble (k = 3, the default); stage 1 only if the ensemble won
    assert set(kd[kd.stage == "0"].teacher) == {"t_ll", "ensemble"}
    ens = kd[kd.teacher == "ensemble"]
    assert ens.teacher_name.str.startswith("ensemble:").all() and set(ens.ensemble_k) <= {2, 3}
    assert kd.config_key.nunique() == len(kd)


def test_teachers_train_on_a_larger_sample_that_holds_the_students(tmp_path: Path) -> None:
    """data.teacher_train_examples: the pool trains on more of train than the students read, and
    serves its outputs on the students' own examples (which its sample holds)."""
    import torch

    from kdsearch.distill.teacher_signal import predict
    from kdsearch.spec import TokenizerSpec
    from kdsearch.teachers import open_pool
    from tests.conftest import small_data_spec, tiny_bert_folder

    tok = TokenizerSpec(kind="pretrained", name=str(tiny_bert_folder(tmp_path / "bert")))
    dspec = small_data_spec(max_train_examples=96, teacher_train_examples=256, tokenizer=tok)
    dspec.check("data")
    work = tmp_path / "work"
    data = prepare_data(dspec, work, log=lambda s: None)
    pool = open_pool(work, dspec, data, "cpu", log=lambda s: None)
    assert len(pool.data.splits["train"]) == 256 and len(data.splits["train"]) == 96
    assert pool.data.key != data.key and len(pool.data.splits["validation"]) == len(data.splits["validation"])
    pool.train(TeacherSpec(model="xs", seeds=[0], train=OptimSpec(epochs=1, batch_size=32, learning_rate=2e-3)), log=lambda s: None)
    rec = pool.select("t_ll")
    served = pool.outputs(rec)
    assert served.split_logits("train").shape == (96, 2)
    # the students' examples are rows of the teachers' sample, and their cached logits are the
    # teacher's own predictions on those rows
    model = load_model(rec.path, data.task, data.label_names)
    own, _, _ = predict(model, pool.data, pool.data.splits["train"])
    rows = {tuple(r[:n].tolist()): i for i, (r, n) in enumerate(zip(pool.data.splits["train"].input_ids, pool.data.splits["train"].lengths))}
    student = data.splits["train"]
    at = [rows[tuple(r[:n].tolist())] for r, n in zip(student.input_ids, student.lengths)]
    assert torch.allclose(served.split_logits("train"), own[at], atol=1e-5)
    # the same pool is found again, untrained, by a second open
    again = open_pool(work, dspec, data, "cpu", log=lambda s: None)
    assert [r.name for r in again.records] == [r.name for r in pool.records]


@pytest.mark.parametrize("fields, message", [
    ({"max_train_examples": 96, "teacher_train_examples": 96}, "must be above max_train_examples"),
    ({"max_train_examples": None, "teacher_train_examples": 500}, "students read all of train"),
    ({"max_train_examples": 96, "teacher_train_examples": 500, "pretrained": False}, "needs a pretrained tokenizer"),
])
def test_a_teachers_sample_that_cannot_hold_the_students_is_refused(fields: dict, message: str) -> None:
    from kdsearch.errors import SpecError
    from kdsearch.spec import TokenizerSpec
    from tests.conftest import small_data_spec

    tok = TokenizerSpec(kind="pretrained", name="minilm-l6") if fields.pop("pretrained", True) else TokenizerSpec(vocab_size=1000)
    with pytest.raises(SpecError, match=f"data.teacher_train_examples: .*{message}"):
        small_data_spec(tokenizer=tok, **fields).check("data")


def test_a_datasets_own_teacher_learning_rate(tmp_path: Path) -> None:
    from kdsearch.errors import SpecError
    from kdsearch.spec import spec_from_text

    text = """
teachers: {model: xs, train: {epochs: 3, learning_rate: 1.0e-4}}
search:
  datasets: [rotten_tomatoes, {dataset: wnut16, teacher_learning_rate: 2.0e-4}]
"""
    spec = spec_from_text(text, tmp_path / "s.yaml")
    rt, ner = spec.data_specs
    assert spec.teachers.for_data(rt).train.learning_rate == 1.0e-4
    mine = spec.teachers.for_data(ner).train
    assert mine.learning_rate == 2.0e-4 and mine.epochs == 3  # only the rate is the dataset's
    with pytest.raises(SpecError, match=r"search.datasets\[1\].teacher_learning_rate: must be > 0"):
        spec_from_text(text.replace("2.0e-4", "0.0"), tmp_path / "s.yaml")
