"""A small real search spec: tiny slices of built-in Rotten Tomatoes, tiny real models."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = """
name: {name}
data:
  dataset: rotten_tomatoes
  max_length: 32
  max_train_examples: {train}
  max_eval_examples: 128
  tokenizer: {{vocab_size: 1000}}
teachers:
  model: xs
  seeds: [0]
  train: {{epochs: 2, batch_size: 32, learning_rate: 2.0e-3}}
student:
  model: xs
  train: {{epochs: {epochs}, batch_size: 32, learning_rate: 1.0e-3}}
distill: {{teacher: t_ll, loss: ce, alpha: 0.5, tau_t: 2.0, tau_s: 1.0}}
workdir: {workdir}
search:
  method: {method}
  space:
    teacher: [t_hs, t_ll]
    loss: [ce, mse]
    tau_s: [1.0, same]
  seeds: {seeds}
  budget: {budget}
  max_failures: 1
  storage: {storage}
"""


@pytest.fixture
def tiny_spec(tmp_path: Path, workdir: Path):
    """Write a tiny search spec; keyword arguments change its fields."""

    def make(**kw) -> Path:
        fields = dict(name="tiny", train=384, epochs=1, method="greedy", seeds="[0, 1]", budget="null")
        fields.update(kw)
        text = TINY.format(workdir=workdir, storage=tmp_path / "searches", **fields)
        p = tmp_path / f"{fields['name']}.yaml"
        p.write_text(text)
        return p

    return make
