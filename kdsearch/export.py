"""Export a search's best config and student: a rerunnable spec and a Hugging Face folder.

The student is retrained from the config with the seed that scored best (trials drop
their weights; the same seed gives the same student). A student that trained inside a
population is retrained inside the same population (the same members, in the same order),
since its dropout draws depend on its companions: either way the export is the student
that was searched, and its validation score is checked against the search's row. The
folder holds the weights (``save_pretrained``), the tokenizer, the label names in the model
config, the spec (``kdsearch.yaml``, which ``kdsearch distill --config`` reruns) and a
model card.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from kdsearch import atomic, knobs
from kdsearch.errors import KDSearchError
from kdsearch.fetch import label
from kdsearch.knobs import BASELINE_STAGE, KNOBS
from kdsearch.owned import check_not_owned, known
from kdsearch.results.store import ResultStore, open_store
from kdsearch.results.summary import best_per_cell, config_table
from kdsearch.search.planning import CellPlan, population_members
from kdsearch.spec import Spec, cell_id, dump_spec, with_knobs

SPEC_NAME = "kdsearch.yaml"
REPRODUCE_TOL = 1e-5  # how far a retrained validation score or loss may sit from its search row


@dataclasses.dataclass
class Retrained:
    """A student trained again from its search row: the model, its metrics, how it was trained."""

    model: Any
    metrics: dict[str, float]
    how: str  # "alone", or "in its population of K"
    teacher: str
    data: Any  # the PreparedData it trained on (its tokenizer goes with it)


def best_trial(store: ResultStore, cell: str, force: bool = False,
               baseline: bool = False) -> tuple[Spec, dict[str, Any], dict[str, Any], bool]:
    """The search's spec, the cell's best config (mean over seeds; with ``baseline``, its no-KD
    config), its best seed's row, and whether every config of the cell collapsed (refused
    unless ``force``)."""
    spec = store.spec()
    trials = store.trials()
    cells = sorted(trials["cell"].unique())
    if cell not in cells:
        raise KDSearchError(f"no cell {cell!r} in {store.folder} (cells: {', '.join(cells)})")
    metric = spec.search.metric
    table = config_table(trials, metric)
    if not table.empty:
        stage = (table["stage"] == BASELINE_STAGE) if baseline else (table["stage"] != BASELINE_STAGE)
        table = table[(table["cell"] == cell) & (table["failed"] == 0) & (table["seeds"] > 0) & stage]
    if table.empty:
        what = "no-KD baseline" if baseline else "distillation config"
        raise KDSearchError(f"cell {cell!r} has no finished {what} to export (every one failed or diverged)")
    collapsed = best_per_cell(trials[trials["cell"] == cell], metric, spec.search.mode).get(cell, {}).get("status") == "every config collapsed"
    if collapsed and not force:
        raise KDSearchError(f"cell {cell!r}: every config collapsed (no better than predicting one class), so no student is "
                            "worth exporting; pass --force to export the best of them anyway, marked as collapsed")
    best = table.loc[table["mean"].idxmax() if spec.search.mode == "max" else table["mean"].idxmin()]
    rows = trials[(trials["cell"] == cell) & (trials["config_key"] == best["config_key"]) & (trials["status"] == "ok")]
    row = rows.loc[rows[metric].idxmax() if spec.search.mode == "max" else rows[metric].idxmin()]
    return spec, row.to_dict(), best.to_dict(), collapsed


def best_set_of(store: ResultStore, cell: str) -> list[dict[str, Any]]:
    """The cell's best set (:func:`kdsearch.results.summary.best_per_cell`): the leader first."""
    spec = store.spec()
    trials = store.trials()
    return best_per_cell(trials[trials["cell"] == cell], spec.search.metric, spec.search.mode).get(cell, {}).get("best_set", [])


def _cell_student(spec: Spec, row: dict[str, Any]) -> Any:
    return next((st for st in spec.student_specs if label(st.model) == row["student"]), spec.student)


def _cell_data(spec: Spec, row: dict[str, Any]) -> Any:
    return next(d for d in spec.data_specs if cell_id(d, row["student"]) == row["cell"])


def export_spec(spec: Spec, row: dict[str, Any]) -> Spec:
    """A complete single-config spec: the cell's data and student, the best knobs and seed."""
    cell_student = _cell_student(spec, row)
    distill, train = with_knobs(spec.distill, cell_student.train, knobs.from_row(row))
    student = dataclasses.replace(cell_student, train=train, seed=int(row["seed"]))
    return dataclasses.replace(spec, name=f"{spec.name}-best", data=_cell_data(spec, row), student=student, distill=distill,
                               search=dataclasses.replace(spec.search, datasets=[], students=[]))


def check_out(out: Path, store: ResultStore, spec: Spec, force: bool) -> None:
    """Refuse an ``--out`` that would hide or lose something, before anything is trained.

    Never, even with ``--force``: a folder kdsearch owns (see :mod:`kdsearch.owned`: a
    workdir, a search folder, a folder of searches, or one holding any of them). An existing
    folder that is not empty needs ``--force``, and is then replaced whole once the new one is
    complete.
    """
    if out.exists() and not out.is_dir():
        raise KDSearchError(f"--out {out}: exists and is not a folder")
    check_not_owned(out, known(spec.workdir, [store.folder], [spec.search.storage]), [spec.search.storage])
    if out.is_dir() and any(out.iterdir()) and not force:
        raise KDSearchError(f"--out {out}: exists and is not empty; pass --force to replace it")


def _member_index(trial_id: str) -> int:
    """A member's place in its population (see ``populations.member_id``)."""
    return int(str(trial_id).rpartition("-")[2])


def _trained_row(row: dict[str, Any]) -> str:
    """The trial id of the training a row records: its own, or for a copy (``duplicate_of``,
    a config that trained as another) the original's."""
    dup = row.get("duplicate_of")
    return str(dup) if isinstance(dup, str) and dup else str(row["trial_id"])


def _population_points(store: ResultStore, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The points of the row's population, in the order its trial built them (copies of a
    member, recorded for a config that trained as it, are not members)."""
    trials = store.trials()
    mine = trials[trials["population"] == row["population"]].copy()
    if "duplicate_of" in mine:
        mine = mine[mine["duplicate_of"].isna()]
    mine["index"] = mine["trial_id"].map(_member_index)
    return [{**knobs.from_row(r), "cell": r["cell"], "seed": int(r["seed"])} for r in mine.sort_values("index").to_dict("records")]


def retrain(store: ResultStore, spec: Spec, exported: Spec, row: dict[str, Any], log: Any = print) -> Retrained:
    """Train the row's student again, as the search trained it: alone, or in its population.

    ``spec`` and ``exported`` have their models' folders (see :mod:`kdsearch.preflight`).
    """
    import torch

    from kdsearch.data.prepare import prepare_data
    from kdsearch.distill.trainer import TrialConfig, resolve_device, train_student
    from kdsearch.teachers import open_pool

    torch.set_num_threads(max(1, int(spec.search.resources.cpu)))  # as its trial ran: sums in the same order
    data = prepare_data(exported.data, exported.workdir, log=log)
    pool = open_pool(exported.workdir, exported.data, data, exported.device, log)
    for teacher_folder in exported.teachers.register:
        pool.register(teacher_folder)
    if not pool.records:  # a search read on another machine, or moved away from its workdir: say so
        log(f"warning: no teacher pool for {data.source} in {exported.workdir}, where this search's spec.yaml puts its workdir "
            "(a copied or moved search?): training one as the search did, so the student may not reproduce its row; "
            "KDSEARCH_WORKDIR=DIR points kdsearch at the pool it used")
    pool.train(exported.teachers.for_data(exported.data), log=log)  # the search's own recipe; checkpoints already there are kept
    d = exported.distill
    members = row.get("members")
    if members is None or members != members or int(members) <= 1:  # alone (or a search from before populations)
        teacher, record = pool.signal(knobs.teacher_key(d.config()), features=d.hidden_term, with_model=d.live_teacher)
        result = train_student(TrialConfig.from_spec(exported), data, teacher, exported.device)
        if result.status != "ok":
            raise KDSearchError(f"retraining the best config diverged: {result.error}")
        return Retrained(result.model, {**result.final, **result.test}, "alone", record.name, data)
    from kdsearch.distill.population import Population

    points = _population_points(store, row)
    index = _member_index(_trained_row(row))
    student = _cell_student(spec, row)
    cell = CellPlan(row["cell"], data.source, data.key, student.model, spec.distill, student.train, student.dropout)
    keys = {knobs.teacher_key(with_knobs(spec.distill, student.train, p)[0].config()) for p in points}
    signals = {k: pool.signal(k)[0] for k in keys}
    log(f"retraining it in its population of {len(points)} (its dropout draws depend on its companions)")
    models, fused = population_members(points, cell, data, signals)
    pop = Population(models, data, fused, resolve_device(exported.device))
    epochs = int(row.get("epochs_run") or exported.student.train.epochs)
    metrics: dict[str, Any] = {}
    for epoch_metrics in pop.run():
        metrics = epoch_metrics[index]
        if pop.epoch >= epochs:
            break
    metrics = {**metrics, **pop.evaluate("test")[index]} if "test" in data.splits else metrics
    teacher = pool.members(knobs.teacher_key(d.config()))[0].name
    return Retrained(pop.member_model(index, models[index]), metrics, f"in its population of {len(points)}", teacher, data)


def export(folder: str | Path, cell: str, out: str | Path, log: Any = print, force: bool = False, onnx: bool = False,
           quantize: str | None = None) -> dict[str, Any]:
    """Write the best config and the retrained student of ``cell`` to ``out`` (with ``onnx``,
    ONNX graphs too: fp32, and ``quantize`` int8).

    An ``out`` that exists and is not empty is refused unless ``force``; then it is replaced
    as a whole, in one step, once the new folder is complete. Folders kdsearch owns are
    always refused (see :func:`check_out`). A failed check writes nothing.
    """
    folder, out = Path(folder), Path(out)
    store = open_store(folder)
    check_out(out, store, store.spec(), force)
    with atomic.new_dir(out, replace=True) as tmp:
        done = write_export(store, cell, tmp, log, force, onnx or quantize is not None, quantize)
    log(f"written: {out} ({done['summary']})")
    return done


def export_front(folder: str | Path, out: str | Path, log: Any = print, force: bool = False, onnx: bool = False,
                 quantize: str | None = None) -> list[dict[str, Any]]:
    """Every student on a dataset's Pareto front (test score against ONNX latency, from the
    search's ``costs.parquet``), each exported into ``out/DATASET/MODEL`` (``-nokd`` when its
    no-KD baseline is the point on the front), and ``out/front.md`` listing them."""
    from kdsearch.reports import tradeoff

    folder, out = Path(folder), Path(out)
    store = open_store(folder)
    spec = store.spec()
    check_out(out, store, spec, force)
    costs = store.costs()
    if costs.empty:
        raise KDSearchError(f"{folder} has no costs.parquet (the search measured no costs): run `kdsearch costs {folder}` first")
    trials = store.trials()
    # with --force a collapsed student may be on the front (its card says it collapsed), as export --cell --force allows
    served = tradeoff.table(trials, costs, spec.search.metric, spec.search.mode, collapsed_on_front=force)
    front = served[served["on_front"] & (served["config"] != "teacher")] if not served.empty else served
    if front.empty:
        fell = int(served["collapsed"].sum()) if not served.empty else 0
        why = (f"; {fell} of its students collapsed to one class on every seed and are left off (--force counts them)"
               if fell else "")
        raise KDSearchError(f"no student of {folder} is on a front (every dataset's front is its teacher alone{why})")
    done = []
    with atomic.new_dir(out, replace=True) as tmp:
        for r in front.itertuples():
            cell = str(trials[(trials["dataset"] == r.dataset) & (trials["student"] == r.model)]["cell"].iloc[0])
            sub = tmp / _safe(r.dataset) / (_safe(r.model) + ("-nokd" if r.config == "no KD" else ""))
            sub.mkdir(parents=True)
            log(f"== {cell} ({r.config}): on the front at test {r.test:.4f}, {getattr(r, tradeoff.LATENCY):.2f} ms")
            result = write_export(store, cell, sub, log, force, onnx or quantize is not None, quantize, r.config == "no KD")
            done.append({"dataset": r.dataset, "model": r.model, "config": r.config, "test": r.test,
                         "onnx_ms_p50": getattr(r, tradeoff.LATENCY), "params": r.params,
                         "folder": str(sub.relative_to(tmp)), "summary": result["summary"]})
        lines = ["# Students on the front (test score against ONNX latency)\n", f"From `{folder.name}`. "
                 + tradeoff.machine_line(costs) + "\n", "| dataset | student | config | test | ONNX ms | params (M) | folder |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {d['dataset']} | {d['model']} | {d['config']} | {d['test']:.4f} | {d['onnx_ms_p50']:.2f} | "
                  f"{d['params'] / 1e6:.1f} | `{d['folder']}` |" for d in done]
        (tmp / "front.md").write_text("\n".join(lines) + "\n")
    log(f"written: {out} ({len(done)} student(s) on the front; see {out / 'front.md'})")
    return done


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_export(store: ResultStore, cell: str, tmp: Path, log: Any, force: bool, onnx: bool, quantize: str | None,
                 baseline: bool = False) -> dict[str, Any]:
    """Retrain the cell's best config (or its no-KD baseline) and write its export into ``tmp``."""
    from kdsearch.preflight import resolve_models

    spec, row, best, collapsed = best_trial(store, cell, force, baseline)
    tied = [] if baseline else best_set_of(store, cell)
    if len(tied) > 1:
        log(f"note: {cell}'s best set holds {len(tied)} configs that a paired test cannot separate from the leader; "
            "exporting the leader (kdsearch results lists them; more seeds, or search.race, can tell them apart)")
    exported = export_spec(spec, row)
    trained_spec, trained_exported = resolve_models(spec), resolve_models(exported)
    metric = spec.search.metric
    which = "no-KD baseline" if baseline else "best config"
    log(f"{which} of {cell}: {metric} {best['mean']:.4f} ± {best['std']:.4f} over {best['seeds']} seed(s); retraining seed {row['seed']}")
    student = retrain(store, trained_spec, trained_exported, row, log)
    metrics, data = student.metrics, student.data
    again = float(metrics.get(metric, math.nan))
    # the loss as well as the score: a score (accuracy) can agree while the students differ
    checked = {k: (float(metrics.get(k, math.nan)), float(row[k])) for k in (metric, "val_loss") if k in row and row[k] == row[k]}
    reproduced = all(abs(now - then) <= REPRODUCE_TOL for now, then in checked.values())
    differences = "; ".join(f"{k} {now:.6f} against its row's {then:.6f} ({now - then:+.2e})" for k, (now, then) in checked.items())
    if not reproduced:
        log(f"warning: the retrained student does not reproduce the searched one beyond {REPRODUCE_TOL:g}: {differences} "
            "(another device, library version, or fetched model?); the model card says so")
    student.model.save_pretrained(tmp)
    for f in data.tokenizer_dir.iterdir():
        if f.name != "manifest.json":
            shutil.copy(f, tmp / f.name)
    tok_config = tmp / "tokenizer_config.json"
    if tok_config.is_file():  # pipelines truncate as the student was trained
        cfg = json.loads(tok_config.read_text())
        cfg["model_max_length"] = data.max_length
        tok_config.write_text(json.dumps(cfg, indent=1))
    deployed = None
    if onnx:
        from kdsearch.deploy.ship import to_onnx

        log("exporting to ONNX (torch.onnx), checking it against PyTorch" + (f", quantising to {quantize}" if quantize else ""))
        deployed = to_onnx(student.model, data, tmp, quantize)
    (tmp / SPEC_NAME).write_text(dump_spec(exported))
    notes = _notes(collapsed, reproduced, differences, student.how)
    if len(tied) > 1:
        notes.append(f"**One of {len(tied)} the seeds cannot tell apart.** A paired test cannot separate {len(tied) - 1} other "
                     "config(s) from this one (the leader by mean validation score); `kdsearch results` lists them.")
    (tmp / "README.md").write_text(model_card(exported, cell, student.teacher, row, best, metrics, store.folder, metric, notes,
                                              deployed))
    (tmp / "metrics.json").write_text(json.dumps({"search_row": _plain(row), "retrained": metrics, "trained": student.how,
                                                  "reproduces_search_row": reproduced, "collapsed": collapsed,
                                                  "deploy": deployed}, indent=1, default=str))
    summary = f"retrained {metric} {again:.4f}, search row {row[metric]:.4f}; trained {student.how}"
    if deployed:
        summary += f"; ONNX agrees on {deployed['onnx']['agreement']:.2%} of {deployed['split']}"
        if "int8" in deployed:
            summary += f", int8 {deployed['int8']['delta_points']:+.2f} points"
    return {"retrained": metrics, "search_row": row, "reproduced": reproduced, "deploy": deployed, "summary": summary}


def _notes(collapsed: bool, reproduced: bool, differences: str, how: str) -> list[str]:
    notes = []
    if collapsed:
        notes.append("**Collapsed.** Every config of this cell collapsed: its predictions are one class, or no better than the "
                     "majority class. It was exported with `--force`; do not ship it.")
    if not reproduced:
        notes.append(f"**Does not reproduce its search row** (beyond {REPRODUCE_TOL:g}). Retrained ({how}): {differences}. The "
                     "device, the library versions or a fetched model differ from the search's.")
    return notes


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def model_card(spec: Spec, cell: str, teacher: str, row: dict, best: dict, metrics: dict, folder: Path, metric: str,
               notes: list[str] | None = None, deployed: dict[str, Any] | None = None) -> str:
    d = spec.distill
    fmt = lambda k: f"{metrics[k]:.4f}" if k in metrics else "n/a"  # noqa: E731
    config = {**d.config(), **{k.name: getattr(spec.student.train, k.name) for k in knobs.section("train")}}
    applies = knobs.effective(config)
    if knobs.uses_teacher(config):
        teacher_line = f"`{teacher}` (picked by `{d.teacher}`)"
        objective = ("L = (1-α)·CE(y, p_s) + α·D(teacher/τt, student/τs)"
                     + (" + an intermediate term: " + d.describe_intermediate() if d.intermediate else ""))
        found = "the cell's best config by mean validation {metric} over paired seeds, retrained with its best seed"
    else:  # the no-KD baseline: no teacher shaped it
        teacher_line = "none: this is the cell's no-KD baseline (α = 0), trained on the labels alone"
        objective = "L = CE(y, p_s), the labels alone (no distillation)"
        found = "the cell's no-KD baseline (every search trains it beside its configs), retrained with its best seed"
    found = found.format(metric=metric)
    rows = "\n".join(f"| `{k}` | {config[k]} | {KNOBS[k].help} |" for k in KNOBS if k in applies)
    warnings = "".join(f"{n}\n\n" for n in notes or [])
    return f"""---
library_name: transformers
tags: [knowledge-distillation, kdsearch]
---
# {cell}: a distilled student

{warnings}- **Data:** `{spec.data.dataset}` (max length {spec.data.max_length}, tokenizer {spec.data.tokenizer.kind}), labels in `config.id2label`.
- **Student:** `{label(spec.student.model)}`, seed {spec.student.seed}.
- **Teacher:** {teacher_line}.
- **Objective:** {objective}.

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

**How it was found:** a `{spec.search.method}` search by kdsearch ({folder.name}); this is
{found}. Rerun it with `kdsearch distill --config {SPEC_NAME}`.
{_usage(row, spec.data)}{_deploy_section(deployed, metric)}"""


def _usage(row: dict[str, Any], data: Any) -> str:
    """How to run it with transformers alone, cutting inputs as it was trained (``data``: the spec's DataSpec)."""
    from kdsearch.tasks import TASKS

    task = TASKS.get(str(row.get("task") or "classification"), TASKS["classification"])
    max_length = data.max_length
    if task.extractive:
        return _qa_usage(max_length, data.stride)
    if task.name == "pair_classification":
        return f"""
## Using it

```python
from transformers import pipeline
student = pipeline("text-classification", model="THIS_FOLDER")
student({{"text": "the evidence or premise", "text_pair": "the claim or hypothesis"}}, truncation="only_first")
```

`truncation="only_first"` cuts the first text (the evidence) to fit the {max_length} tokens it trained on
(`model_max_length` in `tokenizer_config.json`) and keeps the second (the claim) whole, as in training
(a claim too long to leave the evidence a token was cut from both there). This pipeline does not truncate
unless told (huggingface/transformers#4501).
"""
    if task.pipeline_truncates:
        call, why = (f'pipeline("{task.pipeline}", model="THIS_FOLDER")',
                     f"cuts an input to the {max_length} tokens it trained on (`model_max_length` in `tokenizer_config.json`)")
    else:
        call, why = (f'pipeline("{task.pipeline}", model="THIS_FOLDER", truncation=True)',
                     f"`truncation=True` cuts an input to the {max_length} tokens it trained on (`model_max_length` in "
                     f"`tokenizer_config.json`); this pipeline does not truncate unless told (huggingface/transformers#4501), "
                     "and a longer input fails past the model's positions")
    return f"""
## Using it

```python
from transformers import pipeline
student = {call}
```

The pipeline {why}.
"""


def _qa_usage(max_length: int, stride: int) -> str:
    """The extractive-QA reader as the student was scored: windows, best span over them (transformers 5.3
    removed the ``question-answering`` pipeline: huggingface/transformers#43325)."""
    from kdsearch.data.qa import MAX_ANSWER_TOKENS

    return f"""
## Using it

transformers 5.3 removed the `question-answering` pipeline (huggingface/transformers#43325), so this is
the reader written out, as kdsearch scored the student: the question and the context cut into windows of
{max_length} tokens overlapping by {stride}, and the best span (start logit + end logit, inside the context,
at most {MAX_ANSWER_TOKENS} tokens) over all windows.

```python
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")
model = AutoModelForQuestionAnswering.from_pretrained("THIS_FOLDER").eval()


def answer(question: str, context: str, max_answer_tokens: int = {MAX_ANSWER_TOKENS}) -> str:
    enc = tokenizer(question.lstrip(), context, truncation="only_second", max_length={max_length}, stride={stride},
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")
    enc.pop("overflow_to_sample_mapping")
    with torch.no_grad():
        out = model(**enc)
    best, text = -float("inf"), ""
    for w in range(len(offsets)):
        in_context = torch.tensor([s == 1 for s in enc.sequence_ids(w)])
        score = out.start_logits[w][:, None] + out.end_logits[w][None, :]
        ok = torch.ones_like(score, dtype=torch.bool).triu().tril(max_answer_tokens - 1)
        score = score.masked_fill(~(ok & in_context[:, None] & in_context[None, :]), -float("inf"))
        s, e = divmod(int(score.argmax()), score.shape[1])
        if score[s, e] > best:
            best, text = float(score[s, e]), context[int(offsets[w][s][0]) : int(offsets[w][e][1])]
    return text
```
"""


def _deploy_section(deployed: dict[str, Any] | None, metric: str) -> str:
    if not deployed:
        return ""
    names = deployed.get("outputs", ["logits"])
    outputs = ("outputs " if len(names) > 1 else "output ") + " and ".join(f"`{n}`" for n in names)
    from kdsearch.deploy.ship import card_table

    return f"""
## Serving it: PyTorch, ONNX and int8

{card_table(deployed, metric.replace('val_', ''))}
`model.onnx` loads in `onnxruntime.InferenceSession` (inputs `input_ids`, `attention_mask`,
`token_type_ids` from the tokenizer in this folder, batch and length dynamic; {outputs}); it
was kept only after ONNX Runtime reproduced PyTorch on the {deployed['split']} split.
"""
