"""Export a search's best config and student: a rerunnable spec and a Hugging Face folder.

The student is retrained from the config with the seed that scored best (trials drop
their weights; the same seed gives the same student). The folder holds the weights
(``save_pretrained``), the tokenizer, the label names in the model config, the spec
(``kdsearch.yaml``, which ``kdsearch distill --config`` reruns) and a model card.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from kdsearch import atomic
from kdsearch.errors import KDSearchError
from kdsearch.results.store import open_store
from kdsearch.results.summary import config_table
from kdsearch.search.space import BASELINE_STAGE, KNOBS, apply
from kdsearch.spec import Spec, dump_spec, load_spec

SPEC_NAME = "kdsearch.yaml"


def best_trial(folder: Path, cell: str) -> tuple[Spec, dict[str, Any], dict[str, Any]]:
    """The search's spec, the cell's best config (mean over seeds) and its best seed's row."""
    store = open_store(folder)
    spec = load_spec(folder / "spec.yaml")
    trials = store.trials()
    cells = sorted(trials["cell"].unique())
    if cell not in cells:
        raise KDSearchError(f"no cell {cell!r} in {folder} (cells: {', '.join(cells)})")
    table = config_table(trials, spec.search.metric)
    table = table[(table["cell"] == cell) & (table["failed"] == 0) & (table["seeds"] > 0) & (table["stage"] != BASELINE_STAGE)]
    if table.empty:
        raise KDSearchError(f"cell {cell!r} has no finished distillation config to export")
    best = table.loc[table["mean"].idxmax() if spec.search.mode == "max" else table["mean"].idxmin()]
    rows = trials[(trials["cell"] == cell) & (trials["config_key"] == best["config_key"]) & (trials["status"] == "ok")]
    row = rows.loc[rows[spec.search.metric].idxmax() if spec.search.mode == "max" else rows[spec.search.metric].idxmin()]
    return spec, row.to_dict(), best.to_dict()


def export_spec(spec: Spec, row: dict[str, Any]) -> Spec:
    """A complete single-config spec: the cell's data and student, the best knobs and seed."""
    from kdsearch.search.runner import cell_id

    cell_data = next(d for d in spec.data_specs if cell_id(d, row["student"]) == row["cell"])
    knobs = {k: row[k] for k in KNOBS if k in row and row[k] is not None and row[k] == row[k]}
    if "tau_s" in knobs and knobs["tau_s"] != "same":
        knobs["tau_s"] = float(knobs["tau_s"])
    distill, train = apply(knobs, spec.distill, spec.student.train)
    student = dataclasses.replace(spec.student, model=row["student"], train=train, seed=int(row["seed"]))
    return dataclasses.replace(spec, name=f"{spec.name}-best", data=cell_data, student=student, distill=distill,
                               search=dataclasses.replace(spec.search, datasets=[], students=[]))


def export(folder: str | Path, cell: str, out: str | Path, log: Any = print) -> dict[str, Any]:
    """Write the best config and the retrained student of ``cell`` to ``out``."""
    from kdsearch.data.prepare import prepare_data
    from kdsearch.distill.trainer import TrialConfig, train_student
    from kdsearch.teachers import TeacherPool

    folder, out = Path(folder), Path(out)
    spec, row, best = best_trial(folder, cell)
    exported = export_spec(spec, row)
    metric = spec.search.metric
    log(f"best config of {cell}: {metric} {best['mean']:.4f} ± {best['std']:.4f} over {best['seeds']} seed(s); retraining seed {row['seed']}")
    data = prepare_data(exported.data, exported.workdir)
    pool = TeacherPool(exported.workdir, data, exported.device)
    record = pool.select(exported.distill.teacher)
    teacher = pool.outputs(record, features=exported.distill.hidden_term, with_model=exported.distill.live_teacher)
    result = train_student(TrialConfig.from_spec(exported), data, teacher, exported.device)
    if result.status != "ok":
        raise KDSearchError(f"retraining the best config diverged: {result.error}")
    metrics = {**result.final, **result.test}
    with atomic.new_dir(out) as tmp:
        result.model.save_pretrained(tmp)
        for f in data.tokenizer_dir.iterdir():
            shutil.copy(f, tmp / f.name)
        tok_config = tmp / "tokenizer_config.json"
        if tok_config.is_file():  # pipelines truncate as the student was trained
            cfg = json.loads(tok_config.read_text())
            cfg["model_max_length"] = data.max_length
            tok_config.write_text(json.dumps(cfg, indent=1))
        (tmp / SPEC_NAME).write_text(dump_spec(exported))
        (tmp / "README.md").write_text(model_card(exported, cell, record.name, row, best, metrics, folder, metric))
        (tmp / "metrics.json").write_text(json.dumps({"search_row": _plain(row), "retrained": metrics}, indent=1, default=str))
    log(f"written: {out} (retrained {metric} {metrics.get(metric, float('nan')):.4f}, search row {row[metric]:.4f})")
    return {"retrained": metrics, "search_row": row}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def model_card(spec: Spec, cell: str, teacher: str, row: dict, best: dict, metrics: dict, folder: Path, metric: str) -> str:
    d = spec.distill
    fmt = lambda k: f"{metrics[k]:.4f}" if k in metrics else "n/a"  # noqa: E731
    return f"""---
library_name: transformers
tags: [knowledge-distillation, kdsearch]
---
# {cell}: a distilled student

- **Data:** `{spec.data.dataset}` (max length {spec.data.max_length}, tokenizer {spec.data.tokenizer.kind}), labels in `config.id2label`.
- **Student:** `{spec.student.model}`, {spec.student.train.epochs} epoch(s), lr {spec.student.train.learning_rate}, batch {spec.student.train.batch_size}, seed {spec.student.seed}.
- **Teacher:** `{teacher}` (picked by `{d.teacher}`).
- **Distillation:** L = (1-α)·CE(y, p_s) + α·{d.loss}(teacher/τt, student/τs) with α = {d.alpha}, τt = {d.tau_t}, τs = {d.tau_s}, τ² scaling {'on' if d.tau2_scaling else 'off'}.
- **Intermediate layers:** {d.describe_intermediate()}.
- **Augmentation:** {f"`{d.augment}` on each example with probability {d.augment_p}" if d.augmenting else "none"}.

| metric | this model | the search (mean ± std over {best['seeds']} seeds) |
|---|---|---|
| validation {metric} | {fmt(metric)} | {best['mean']:.4f} ± {best['std']:.4f} |
| validation agreement with the teacher | {fmt('val_agreement')} | |
| validation KL(teacher ‖ student) | {fmt('val_kl')} | |
| test {metric.replace('val_', '')} | {fmt('test_' + metric.replace('val_', ''))} | |

**How it was found:** a `{spec.search.method}` search by kdsearch ({folder.name}); this is the
cell's best config by mean validation {metric} over paired seeds, retrained with its best seed.
Rerun it with `kdsearch distill --config {SPEC_NAME}`.
"""

