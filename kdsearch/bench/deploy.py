"""``kdsearch bench deploy``: what distillation buys at serving time, side by side in one run.

On one dataset of a spec (default: the pretrained space's Rotten Tomatoes, MiniLM-L6 as
teacher), the teacher pool's t_hs checkpoint and each student of the spec trained once with
the spec's own distillation config (one seed) are timed in PyTorch eager, in ONNX Runtime
(fp32) and after its dynamic int8 quantisation, one example at a time at the dataset's
median token length, and scored on test before and after int8. Ratios, all in this run:
``onnx_vs_torch`` (the teacher, batch 1, PyTorch over ONNX), ``teacher_vs_first2`` (teacher
over the 2-layer cut, both ONNX) and ``teacher_torch_vs_first2_int8`` (the teacher as people
run it today, PyTorch eager, over the int8 2-layer cut).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from kdsearch.bench import bench_spec, portable, write_result
from kdsearch.display import format_table
from kdsearch.fetch import label

TARGETS = {"onnx_vs_torch": 1.8, "teacher_vs_first2": 2.5, "teacher_torch_vs_first2_int8": 10.0, "int8_loss_points": 1.0}
FIRST2 = "first2"  # the student the ratios are about: the 2-layer cut of the teacher


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kdsearch.data.prepare import prepare_data
    from kdsearch.deploy.costs import check_threads, machine
    from kdsearch.deploy.ship import to_onnx
    from kdsearch.distill.trainer import TrialConfig, train_student
    from kdsearch.knobs import teacher_key
    from kdsearch.models import count_parameters, load_model
    from kdsearch.preflight import resolve_models
    from kdsearch.spec import load_spec
    from kdsearch.teachers import open_pool

    spec_file = bench_spec(args.spec, "pretrained")
    threads = check_threads(args.threads)
    named = load_spec(spec_file, args.set)
    spec = resolve_models(named)
    dspec = spec.data_specs[0]
    data = prepare_data(dspec, spec.workdir)
    print(f"== bench deploy: {data.source}, {threads} thread(s); teacher pool first (trained once, then reused)", flush=True)
    pool = open_pool(spec.workdir, dspec, data, spec.device)
    pool.train(spec.teachers.for_data(dspec))
    record = pool.select("t_hs")
    signal = pool.outputs(record)
    models: list[tuple[str, str, Any]] = [("teacher", label(spec.teachers.model), load_model(record.path, data.task, data.label_names))]
    for st in spec.student_specs:
        start = time.perf_counter()
        distill = named.distill
        config = TrialConfig(st.model, st.train, distill, 0, st.dropout)
        result = train_student(config, data, pool.signal(teacher_key(distill.config()))[0] if distill.alpha > 0 else None, "cpu")
        print(f"  trained {label(st.model)} in {time.perf_counter() - start:.0f} s: val {result.final.get('val_score', float('nan')):.4f}",
              flush=True)
        models.append(("student", label(st.model), result.model))
    del signal
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdsearch-bench-deploy-") as tmp:
        for role, name, model in models:
            folder = Path(tmp) / name.replace(":", "_")
            folder.mkdir()
            d = to_onnx(model, data, folder, "int8", threads)
            params = count_parameters(model)
            rows.append({"model": name, "role": role, "params": params["total"], "params_embedding": params["embedding"],
                         "torch_ms_p50": d["torch"]["ms_p50"], "torch_ms_p95": d["torch"]["ms_p95"],
                         "onnx_ms_p50": d["onnx"]["ms_p50"], "onnx_ms_p95": d["onnx"]["ms_p95"],
                         "int8_ms_p50": d["int8"]["ms_p50"], "int8_ms_p95": d["int8"]["ms_p95"],
                         "test_score": d["torch"]["score"], "onnx_test_score": d["onnx"]["score"],
                         "int8_test_score": d["int8"]["score"], "int8_test_delta_points": d["int8"]["delta_points"],
                         "onnx_max_abs_diff": d["onnx"]["max_abs_diff"], "int8_agreement": d["int8"]["agreement"],
                         "torch_mb": d["torch"]["mb"], "onnx_mb": d["onnx"]["mb"], "int8_mb": d["int8"]["mb"]})
            print(f"  {name}: torch {rows[-1]['torch_ms_p50']:.2f} ms, ONNX {rows[-1]['onnx_ms_p50']:.2f} ms, int8 "
                  f"{rows[-1]['int8_ms_p50']:.2f} ms; test {rows[-1]['test_score']:.4f}, int8 {rows[-1]['int8_test_delta_points']:+.2f} points",
                  flush=True)
            seq_len = d["seq_len"]
    teacher = rows[0]
    first2 = next((r for r in rows if r["model"].endswith(FIRST2)), None)
    ratios = {"onnx_vs_torch": teacher["torch_ms_p50"] / teacher["onnx_ms_p50"]}
    if first2 is not None:
        ratios["teacher_vs_first2"] = teacher["onnx_ms_p50"] / first2["onnx_ms_p50"]
        ratios["teacher_torch_vs_first2_int8"] = teacher["torch_ms_p50"] / first2["int8_ms_p50"]
    classification = data.task != "token_classification"
    worst = min(r["int8_test_delta_points"] for r in rows)
    return {
        **ratios,
        "int8_worst_delta_points": worst,
        "targets": TARGETS,
        "meets": {**{k: v >= TARGETS[k] for k, v in ratios.items()},
                  "int8_loss_points": (-worst <= TARGETS["int8_loss_points"]) if classification else None},
        "models": {r["model"]: r for r in rows},
        "setup": {"spec": portable(spec_file), "overrides": args.set, "dataset": data.source, "task": data.task,
                  "seq_len": seq_len, "teacher_checkpoint": record.name, "date": time.strftime("%Y-%m-%d"),
                  "machine": machine(threads), "student_config": dataclasses.asdict(named.distill)},
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    result = run(args)
    cols = ("params", "torch_ms_p50", "onnx_ms_p50", "int8_ms_p50", "test_score", "int8_test_delta_points")
    print(format_table([{"model": m, **{c: r[c] for c in cols}} for m, r in result["models"].items()]))
    for k, target in TARGETS.items():
        if k in result:
            print(f"{k}: {result[k]:.2f} (target >= {target})")
    print(f"int8 worst change: {result['int8_worst_delta_points']:+.2f} points (target: loses at most {TARGETS['int8_loss_points']})")
    write_result(args.out or "results/bench/deploy.json", result)
    return result
