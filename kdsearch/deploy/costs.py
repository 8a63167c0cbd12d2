"""What a model costs to run: parameters, weights, latency and throughput, per architecture.

People distil to ship something smaller and faster, so every architecture a search trains
(each student size or cut, and the teacher) is measured once per machine: parameters (the
embeddings apart: most of a small student), the size of its saved weights, and on this
machine one example at a time at the dataset's median token length (p50 and p95 over
``timing.RUNS`` timed runs after warm-up, a fixed thread count) and throughput at batch
``timing.BATCH``, in PyTorch eager, in ONNX Runtime's CPU provider (fp32) and after its
dynamic int8 quantisation; on a GPU also PyTorch's bf16 throughput. A measurement is cached
under the workdir by architecture, length and machine (CPU model, threads, library
versions) and lands in the search's ``costs.parquet``, which reports read without
measuring anything again. Latency never depends on the weights, so a fresh model of the
architecture is timed; scores come from the trials.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdsearch import atomic
from kdsearch.data.prepare import PreparedData
from kdsearch.deploy import onnx, timing
from kdsearch.fetch import label
from kdsearch.models import build_for, count_parameters

COSTS_VERSION = 1  # of what a measurement holds: a new one measures again


def check_threads(threads: int | None) -> int:
    """``--threads``: at least 1, at most this machine's cores (more only queue behind each
    other and time nothing a server would see); None: :func:`default_threads`."""
    if threads is None:
        return default_threads()
    cores = os.cpu_count() or 1
    if not 1 <= threads <= cores:
        from kdsearch.errors import KDSearchError

        raise KDSearchError(f"--threads: must be in 1..{cores} (this machine's cores), got {threads}")
    return threads


def default_threads() -> int:
    """The threads a measurement uses unless told: a serving process seldom gets a whole machine."""
    return max(1, min(4, os.cpu_count() or 1))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> dict[str, Any]:
    """What a latency figure depends on besides the model: recorded beside every figure."""
    import transformers

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": cpu_model(), "cores": os.cpu_count() or 1, "threads": threads,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "onnxruntime": ort_version, "transformers": transformers.__version__,
    }


def median_length(data: PreparedData) -> int:
    """The median token length of what is served: the test split (else validation)."""
    split = data.splits["test"] if "test" in data.splits else data.splits["validation"]
    return max(2, int(split.lengths.float().median().round()))


def _inputs(data: PreparedData, batch: int, length: int) -> dict[str, torch.Tensor]:
    """Token ids of the shape timed: ordinary tokens, no padding (a fixed, reproducible input)."""
    g = torch.Generator().manual_seed(0)
    low = max(data.special_ids or [0]) + 1
    ids = torch.randint(low, max(low + 1, data.vocab_size), (batch, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def _architecture(model: torch.nn.Module) -> dict[str, Any]:
    config = model.config.to_dict()
    for k in ("_name_or_path", "id2label", "label2id", "transformers_version", "torch_dtype", "dtype"):
        config.pop(k, None)
    return {**config, "num_labels": model.config.num_labels}


def measure(model: torch.nn.Module, data: PreparedData, threads: int, cache: Path | None = None,
            log: Callable[[str], None] = print, what: str = "model") -> dict[str, Any]:
    """The costs of ``model``'s architecture on ``data``'s median length (cached in ``cache``)."""
    length = median_length(data)
    where = machine(threads)
    key = hashlib.sha256(json.dumps([COSTS_VERSION, _architecture(model), data.task, length, where],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache / f"{key}.json" if cache is not None else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # a damaged entry is measured again
    start = time.perf_counter()
    log(f"  measuring {what}: {threads} thread(s), {length} tokens, batch 1 and {timing.BATCH} (PyTorch, ONNX, int8)")
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {**_measure(model.eval().cpu(), data, length, threads), **where, "seq_len": length, "measured_at": time.time()}
    finally:
        torch.set_num_threads(saved)
    out["measure_s"] = time.perf_counter() - start
    if path is not None:
        atomic.write_text(path, json.dumps(out, indent=1))
    return out


def _measure(model: torch.nn.Module, data: PreparedData, length: int, threads: int) -> dict[str, Any]:
    params = count_parameters(model)
    out: dict[str, Any] = {
        "params": params["total"], "params_embedding": params["embedding"], "params_non_embedding": params["non_embedding"],
        "embedding_share": params["embedding"] / params["total"],
    }
    one, many = _inputs(data, 1, length), _inputs(data, timing.BATCH, length)
    with torch.inference_mode():
        eager = timing.latency(lambda: model(**one))
        out.update(torch_ms_p50=eager["p50_ms"], torch_ms_p95=eager["p95_ms"],
                   torch_per_s=timing.throughput(lambda: model(**many), timing.BATCH))
    with tempfile.TemporaryDirectory(prefix="kdsearch-costs-") as tmp:
        folder = Path(tmp)
        model.save_pretrained(folder)
        out["weights_mb"] = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6
        onnx.export(model, folder / "model.onnx")
        onnx.quantize_int8(folder / "model.onnx", folder / "model_int8.onnx")
        for name, file in (("onnx", "model.onnx"), ("int8", "model_int8.onnx")):
            sess = onnx.session(folder / file, threads)
            one_np = {k: v.numpy() for k, v in one.items()}
            many_np = {k: v.numpy() for k, v in many.items()}
            timed = timing.latency(lambda: sess.run(None, one_np))
            out.update({f"{name}_ms_p50": timed["p50_ms"], f"{name}_ms_p95": timed["p95_ms"],
                        f"{name}_per_s": timing.throughput(lambda: sess.run(None, many_np), timing.BATCH),
                        f"{name}_mb": (folder / file).stat().st_size / 1e6})
    out["runs"] = timing.RUNS
    out["gpu_bf16_per_s"] = _gpu_throughput(model, many) if torch.cuda.is_available() else None
    return out


def _gpu_throughput(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    gpu = model.to("cuda")
    moved = {k: v.cuda() for k, v in inputs.items()}

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu(**moved)
        torch.cuda.synchronize()

    with torch.inference_mode():
        per_s = timing.throughput(step, timing.BATCH, runs=20, warmup=5)
    model.cpu()
    return per_s


def search_costs(spec: Any, data: dict[str, PreparedData], teachers: dict[str, dict[str, dict[str, Any]]], workdir: str,
                 threads: int | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """A row per (dataset, architecture) the search trained: its teacher and each student.

    ``spec`` has its models' folders (see :mod:`kdsearch.preflight`); ``data`` maps each
    dataset to its prepared data; ``teachers`` is what ``search.json`` records of the
    teachers (the t_hs pick's test score goes in the teacher's row).
    """
    threads = threads or default_threads()
    cache = Path(workdir) / "cache" / "costs"
    rows = []
    for dataset, prepared in data.items():
        picks = teachers.get(dataset, {})
        picked = picks.get("t_hs") or next(iter(picks.values()), {})  # the best-scoring pick, else the one used
        models = [("teacher", spec.teachers.model)] + [("student", st.model) for st in spec.student_specs]
        for role, name in dict.fromkeys(models):  # a student that is the teacher's architecture too: both rows
            torch.manual_seed(0)
            model = build_for(name, prepared)
            row = {"dataset": dataset, "role": role, "model": label(name), **measure(model, prepared, threads, cache, log,
                                                                                    f"{role} {label(name)} on {dataset}")}
            if role == "teacher":
                row["teacher"] = picked.get("name")
                row["test_score"] = picked.get("test_score")
            rows.append(row)
    return rows


def measure_stored(folder: str | Path, threads: int | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """``costs.parquet`` for a search already run (``kdsearch costs DIR``): costs are per
    architecture, so nothing is searched again. A teacher's test score the search did not
    record is measured on the pool's t_hs pick, the pool trained as the search trained it
    where it is not in the workdir."""
    from kdsearch.data.prepare import prepare_data
    from kdsearch.distill.trainer import logit_scores
    from kdsearch.preflight import resolve_models
    from kdsearch.results.store import COSTS, open_store
    from kdsearch.teachers import open_pool

    store = open_store(folder)
    trained = resolve_models(store.spec())
    teachers = {d: dict(picks) for d, picks in (store.meta().get("teachers") or {}).items()}
    data: dict[str, PreparedData] = {}
    for dspec in trained.data_specs:
        prepared = prepare_data(dspec, trained.workdir, log=log)
        data[prepared.source] = prepared
        pick = dict(teachers.get(prepared.source, {}).get("t_hs", {}))
        if "test_score" not in pick and "test" in prepared.splits:
            pool = open_pool(trained.workdir, dspec, prepared, trained.device, log)
            pool.train(trained.teachers.for_data(dspec), log=log)
            rec = pool.select("t_hs")
            if pick and abs(rec.val_score - pick.get("val_score", rec.val_score)) > 1e-4:
                log(f"warning: the pool's t_hs on {prepared.source} scores val {rec.val_score:.4f}, the search's "
                    f"{pick['val_score']:.4f}: its test score is this checkpoint's")
            logits = pool.outputs(rec).split_logits("test")
            pick = {**pick, "name": rec.name, "test_score": float(logit_scores(prepared, "test", logits)["score"])}
            teachers.setdefault(prepared.source, {})["t_hs"] = pick
    rows = search_costs(trained, data, teachers, trained.workdir, threads, log)
    store.append(COSTS, rows)
    return rows
