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

from kdsearch import atomic, knobs
from kdsearch.errors import KDSearchError
from kdsearch.fetch import label
from kdsearch.knobs import BASELINE_STAGE, KNOBS
from kdsearch.results.store import open_store
from kdsearch.results.summary import config_table
from kdsearch.search.planning import cell_id
from kdsearch.spec import Spec, dump_spec, with_knobs

SPEC_NAME = "kdsearch.yaml"


def best_trial(folder: Path, cell: str) -> tuple[Spec, dict[str, Any], dict[str, Any]]:
    """The search's spec, the cell's best config (mean over seeds) and its best seed's row."""
    store = open_store(folder)
    spec = store.spec()
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
    cell_data = next(d for d in spec.data_specs if cell_id(d, row["student"]) == row["cell"])
    values = {k: row[k] for k in KNOBS if k in row and row[k] is not None and row[k] == row[k]}
    if row.get("tau_s_same"):
        values["tau_s"] = knobs.SAME  # written back as the search had it
    cell_student = next((st for st in spec.student_specs if label(st.model) == row["student"]), spec.student)
    distill, train = with_knobs(spec.distill, cell_student.train, values)
    student = dataclasses.replace(cell_student, train=train, seed=int(row["seed"]))
    return dataclasses.replace(spec, name=f"{spec.name}-best", data=cell_data, student=student, distill=distill,
                               search=dataclasses.replace(spec.search, datasets=[], students=[]))


def check_out(out: Path, folder: Path, force: bool) -> None:
    """Refuse an ``--out`` that would hide or lose something, before anything is trained."""
    if out.exists() and not out.is_dir():
        raise KDSearchError(f"--out {out}: exists and is not a folder")
    inside = folder.resolve() == out.resolve() or folder.resolve().is_relative_to(out.resolve())
    if out.exists() and inside:
        raise KDSearchError(f"--out {out}: holds the search {folder} itself; export somewhere else")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise KDSearchError(f"--out {out}: exists and is not empty; pass --force to replace it")


def export(folder: str | Path, cell: str, out: str | Path, log: Any = print, force: bool = False) -> dict[str, Any]:
    """Write the best config and the retrained student of ``cell`` to ``out``.

    An ``out`` that exists and is not empty is refused unless ``force``; then it is replaced
    as a whole, in one step, once the new folder is complete.
    """
    from kdsearch.data.prepare import prepare_data
    from kdsearch.distill.trainer import TrialConfig, train_student
    from kdsearch.teachers import TeacherPool

    folder, out = Path(folder), Path(out)
    check_out(out, folder, force)
    spec, row, best = best_trial(folder, cell)
    exported = export_spec(spec, row)
    metric = spec.search.metric
    log(f"best config of {cell}: {metric} {best['mean']:.4f} ± {best['std']:.4f} over {best['seeds']} seed(s); retraining seed {row['seed']}")
    data = prepare_data(exported.data, exported.workdir)
    pool = TeacherPool(exported.workdir, data, exported.device)
    d = exported.distill
    teacher, record = pool.signal(knobs.teacher_key(d.config()), features=d.hidden_term, with_model=d.live_teacher)
    result = train_student(TrialConfig.from_spec(exported), data, teacher, exported.device)
    if result.status != "ok":
        raise KDSearchError(f"retraining the best config diverged: {result.error}")
    metrics = {**result.final, **result.test}
    with atomic.new_dir(out, replace=True) as tmp:
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
    config = {**d.config(), **{k.name: getattr(spec.student.train, k.name) for k in knobs.section("train")}}
    applies = knobs.effective(config)
    rows = "\n".join(f"| `{k}` | {config[k]} | {KNOBS[k].help} |" for k in KNOBS if k in applies)
    return f"""---
library_name: transformers
tags: [knowledge-distillation, kdsearch]
---
# {cell}: a distilled student

- **Data:** `{spec.data.dataset}` (max length {spec.data.max_length}, tokenizer {spec.data.tokenizer.kind}), labels in `config.id2label`.
- **Student:** `{spec.student.model}`, seed {spec.student.seed}.
- **Teacher:** `{teacher}` (picked by `{d.teacher}`).
- **Objective:** L = (1-α)·CE(y, p_s) + α·D(teacher/τt, student/τs){" + an intermediate term: " + d.describe_intermediate() if d.intermediate else ""}.

The knobs that shaped this student (the others do not apply to this config):

| knob | value | meaning |
|---|---|---|
{rows}

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
