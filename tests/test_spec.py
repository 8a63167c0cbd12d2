from pathlib import Path

import pytest

from kdsearch.errors import SpecError
from kdsearch.spec import dump_spec, load_spec

GOOD = """
data: {dataset: rotten_tomatoes, max_length: 32}
student: {model: xs, train: {epochs: 1, learning_rate: 1e-3}}
distill: {teacher: t_ll, loss: ce, alpha: 0.5, tau_t: 2, tau_s: same}
workdir: wd
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def test_good_spec_loads_with_types_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KDSEARCH_WORKDIR", raising=False)
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.student.train.learning_rate == pytest.approx(1e-3)  # "1e-3" is a YAML string
    assert spec.distill.student_temperature == 2.0
    assert Path(spec.workdir) == tmp_path / "wd"


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD), ["distill.alpha=1.0", "student.model=s"])
    assert spec.distill.alpha == 1.0 and spec.student.model == "s"
    with pytest.raises(SpecError, match="distill.alpha"):
        load_spec(write(tmp_path, GOOD), ["distill.alpha=2"])


@pytest.mark.parametrize(
    "patch, field",
    [
        ("distill: {loss: hinge}", "distill.loss"),
        ("distill: {alpha: -0.1}", "distill.alpha"),
        ("distill: {tau_t: 0}", "distill.tau_t"),
        ("distill: {tau_s: hot}", "distill.tau_s"),
        ("distill: {inter_features: values}", "distill.inter_features"),
        ("data: {max_length: 0}", "data.max_length"),
        ("data: {task: qa}", "data.task"),
        ("data: {columns: {txt: a}}", "data.columns"),
        ("student: {train: {epochs: 0}}", "student.train.epochs"),
        ("student: {train: {batch_size: two}}", "student.train.batch_size"),
        ("teachers: {seeds: [], register: []}", "teachers"),
        ("studnet: {model: xs}", "studnet"),
        ("device: tpu", "device"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, patch: str, field: str) -> None:
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, patch))
    assert str(e.value).startswith(field)
    assert "\n" not in str(e.value)


def test_a_study_runs_a_dataset_at_a_time(tmp_path: Path) -> None:
    """``run --dataset``: the spec's own entry for that dataset (its overrides kept), as a
    search named after it, the same spec as writing that one entry out by hand."""
    (tmp_path / "data" / "tweets").mkdir(parents=True)
    entries = ("search: {datasets: [{dataset: bbc_news, max_length: 16}, rotten_tomatoes, "
               "{dataset: ./data/tweets, max_train_examples: 7}, {dataset: bbc_news, max_length: 24}]}\n")
    spec = load_spec(write(tmp_path, GOOD + "name: study\n" + entries))
    one = spec.only_datasets(["tweets"])
    assert one.name == "study-tweets" and [d.max_train_examples for d in one.data_specs] == [7]
    assert one.data_specs[0].dataset == str(tmp_path / "data" / "tweets")
    by_hand = load_spec(write(tmp_path, GOOD + "name: study-tweets\nsearch: {datasets: [{dataset: ./data/tweets, max_train_examples: 7}]}\n"))
    assert dump_spec(one, tmp_path) == dump_spec(by_hand, tmp_path)
    # several: the spec's order and entries, whatever the order asked; a name twice is both entries
    two = spec.only_datasets(["rotten_tomatoes", "bbc_news"])
    assert two.name == "study-bbc_news-rotten_tomatoes"
    assert [(d.dataset, d.max_length) for d in two.data_specs] == [("bbc_news", 16), ("rotten_tomatoes", 32), ("bbc_news", 24)]
    with pytest.raises(SpecError, match=r"--dataset imdb: not a dataset of this spec \(its datasets: bbc_news, rotten_tomatoes, tweets"):
        spec.only_datasets(["tweets", "imdb"])
    with pytest.raises(SpecError, match="name: 1.. characters; it names the result folder"):
        load_spec(write(tmp_path, GOOD + "name: " + "s" * 95 + "\n" + entries)).only_datasets(["rotten_tomatoes"])


def test_a_reader_takes_registry_names_as_recorded_and_training_looks_them_up(tmp_path: Path) -> None:
    """A stored spec read by `results` or `compare` (registries=False) keeps a loss name the
    registries no longer hold, and still checks its types; read for training it is refused."""
    from kdsearch.spec import parse_raw, spec_from_raw

    path = write(tmp_path, GOOD.replace("loss: ce", "loss: retired_distance"))
    spec = spec_from_raw(parse_raw(path.read_text(), path), path, stored=True, registries=False)
    assert spec.distill.loss == "retired_distance"
    with pytest.raises(SpecError, match=r"^distill\.loss: unknown loss 'retired_distance'"):
        spec_from_raw(parse_raw(path.read_text(), path), path, stored=True)
    path = write(tmp_path, GOOD.replace("loss: ce", "loss: ''"))
    with pytest.raises(SpecError, match=r"^distill\.loss: expected a name"):
        spec_from_raw(parse_raw(path.read_text(), path), path, stored=True, registries=False)


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(write(tmp_path, "data: {dataset: [unclosed"))
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(write(tmp_path, "- a\n- b\n"))


def test_unknown_model_preset_and_missing_model_folder(tmp_path: Path) -> None:
    from kdsearch.preflight import resolve_models

    with pytest.raises(SpecError, match=r"^student.model: unknown model 'xxl': not a preset"):
        load_spec(write(tmp_path, "student: {model: xxl}"))
    with pytest.raises(SpecError, match=r"^student.model: model 'minilm-l6:first0': :first0 keeps 0 layers; a cut keeps K >= 1"):
        load_spec(write(tmp_path, "student: {model: 'minilm-l6:first0'}"))
    # a spec is a record: a folder that is not here reads; what trains finds it missing, by field
    spec = load_spec(write(tmp_path, "teachers: {model: ./my-teacher}"))
    assert spec.teachers.model == str(tmp_path / "my-teacher")
    with pytest.raises(SpecError, match=r"^teachers.model: model folder .* does not exist"):
        resolve_models(spec)
    assert load_spec(write(tmp_path, "teachers: {model: google-bert/bert-base-uncased}")).teachers.model.startswith("google-bert")


def test_intermediate_term_described_and_teacher_needs_follow_the_features() -> None:
    from kdsearch.spec import DistillSpec

    assert DistillSpec().describe_intermediate() == "not distilled"
    hidden = DistillSpec(inter_map="skip", inter_loss="mi_alpha", mi_alpha=0.3)
    assert hidden.describe_intermediate() == "1.0 x (mi_alpha (alpha 0.3) on hidden states), layers mapped by skip"
    assert hidden.hidden_term and not hidden.attention_term and not hidden.live_teacher
    attention = DistillSpec(inter_map="last", inter_features="attention", inter_weight=0.1)
    assert attention.describe_intermediate() == "0.1 x (KL on attention maps), layers mapped by last"
    assert attention.live_teacher and not attention.hidden_term
    both = DistillSpec(inter_map="skip", inter_features="both")
    assert both.hidden_term and both.attention_term and "mse on hidden states + KL on attention maps" in both.describe_intermediate()
    assert not DistillSpec(inter_map="skip", inter_features="attention", inter_weight=0.0).live_teacher
