"""search_spaces/distiller.yaml end to end on a real local Ray (tiny data, one seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kdsearch.search.runner import run_search
from kdsearch.spec import Spec, load_spec
from tests.conftest import SharedRay

ROOT = Path(__file__).resolve().parents[2]


def tiny_distiller(workdir: Path, storage: Path, *more: str) -> Spec:
    return load_spec(
        ROOT / "search_spaces" / "distiller.yaml",
        [
            "search.datasets=[rotten_tomatoes]",
            "data.max_length=32",
            "data.max_train_examples=128",
            "data.max_eval_examples=64",
            "data.tokenizer.vocab_size=1000",
            "teachers.model=xs",
            "teachers.train.epochs=2",
            "student.train.epochs=1",
            "search.seeds=[0]",
            "search.confirm_seeds=0",  # tests/search/test_confirm.py confirms
            f"workdir={workdir}",
            f"search.storage={storage}",
            *more,
        ],
    )


def test_greedy_over_distiller_space(local_ray: SharedRay, workdir: Path, tmp_path: Path) -> None:
    spec = tiny_distiller(workdir, tmp_path)
    folder = run_search(spec, log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    assert (trials.status == "ok").all()
    assert not trials.duplicated("config_key").any()  # one seed: each behaviour once
    names = list(spec.search.space)
    stage = {n: trials[trials.stage == str(i)] for i, n in enumerate(names)}
    # the knobs reached the trials: the mappings and every augmentation were trained
    assert sorted(stage["inter_map"].inter_map) == ["last", "skip"]
    assert sorted(stage["augment"].augment) == ["delete", "mask", "mixup", "swap"]
    # conditional knobs run only where they apply
    for knob in ("inter_features", "inter_loss", "mi_alpha", "inter_weight"):
        assert (stage[knob].inter_map != "none").all()
    assert (stage["mi_alpha"].inter_loss == "mi_alpha").all()
    assert (stage["augment_p"].augment != "none").all()
    inter_won = trials.loc[trials[trials.stage.isin([str(i) for i in range(names.index("inter_map") + 1)])].val_score.idxmax()]
    if len(stage["inter_loss"]) == 0:
        # nothing new to try means the incumbent had no intermediate term
        assert (stage["augment"].inter_map == "none").all()
    assert len(trials) <= 1 + sum(len(c) for c in spec.search.space.values())
    assert inter_won is not None
    # the keys say what each trial trained: no inapplicable knob in them
    for k in trials.config_key.map(json.loads):
        if k.get("inter_map", "none") == "none":
            assert not {"inter_features", "inter_loss", "mi_alpha", "inter_weight"} & set(k)
        if k.get("inter_features") == "attention":
            assert not {"inter_loss", "mi_alpha"} & set(k)
        if k.get("augment", "none") == "none":
            assert "augment_p" not in k


@pytest.mark.parametrize(
    "overrides, needs",
    [
        ([], (True, True)),  # distiller.yaml may compare hidden states, attention maps, augment
        (["search.space.inter_features=[hidden]", "search.space.augment=[none]"], (True, False)),
        (["search.space.inter_features=[attention]", "search.space.augment=[none]"], (False, True)),
        (["search.space.inter_map=[none]", "search.space.augment=[none]"], (False, False)),
    ],
)
def test_teachers_ship_features_and_model_only_when_a_trial_may_need_them(
    workdir: Path, tmp_path: Path, overrides: list[str], needs: tuple[bool, bool]
) -> None:
    from kdsearch.search.planning import teacher_needs

    assert teacher_needs(tiny_distiller(workdir, tmp_path, *overrides)) == needs
