"""A trained student as ONNX (fp32, and int8 on request), checked, scored and timed.

What ``kdsearch export --onnx --quantize int8`` adds to an export folder: ``model.onnx``
(written only after ONNX Runtime reproduced PyTorch on the test split) and
``model_int8.onnx``, with the test score, size and latency of each next to PyTorch's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdsearch.data.prepare import PreparedData
from kdsearch.deploy import onnx, timing
from kdsearch.deploy.costs import _inputs, default_threads, machine, median_length
from kdsearch.distill.teacher_signal import predict
from kdsearch.distill.trainer import logit_scores
from kdsearch.errors import KDSearchError

QUANTIZE = ("int8",)


def to_onnx(model: torch.nn.Module, data: PreparedData, folder: Path, quantize: str | None = None,
            threads: int | None = None) -> dict[str, Any]:
    """Write ``folder/model.onnx`` (and ``model_int8.onnx``) for ``model``; what each scores and costs.

    The split checked and scored is the test split (validation where there is none). A graph
    that does not reproduce PyTorch raises :class:`KDSearchError` before the caller's folder
    is kept.
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise KDSearchError(f"--quantize: {quantize!r} is not a quantisation kdsearch makes (known: {', '.join(QUANTIZE)})")
    threads = threads or default_threads()
    split = "test" if "test" in data.splits else "validation"
    model = model.eval().cpu()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reference = predict(model, data, data.splits[split], device=torch.device("cpu")).logits
        one = _inputs(data, 1, median_length(data))
        with torch.inference_mode():
            eager = timing.latency(lambda: model(**one))
        fp32 = folder / "model.onnx"
        onnx.export(model, fp32)
        out: dict[str, Any] = {"split": split, "seq_len": median_length(data), "machine": machine(threads),
                               "outputs": onnx.output_names(model),
                               "torch": {"score": _score(data, split, reference), "ms_p50": eager["p50_ms"],
                                         "ms_p95": eager["p95_ms"], "mb": _weights_mb(model)}}
        out["onnx"] = _variant(fp32, data, split, reference, one, threads)
        onnx.check_parity(out["onnx"], f"the ONNX graph of {type(model).__name__} on the {split} split")
        if quantize:
            int8 = folder / "model_int8.onnx"
            onnx.quantize_int8(fp32, int8)
            out["int8"] = _variant(int8, data, split, reference, one, threads)
            out["int8"]["delta_points"] = 100 * (out["int8"]["score"] - out["torch"]["score"])
    finally:
        torch.set_num_threads(saved)
    return out


def _variant(path: Path, data: PreparedData, split: str, reference: torch.Tensor, one: dict[str, torch.Tensor],
             threads: int) -> dict[str, Any]:
    sess = onnx.session(path, threads)
    logits = onnx.predict(sess, data, split)
    feed = {k: v.numpy() for k, v in one.items()}
    timed = timing.latency(lambda: sess.run(None, feed))
    return {"score": _score(data, split, logits), **onnx.parity(logits, reference), "ms_p50": timed["p50_ms"],
            "ms_p95": timed["p95_ms"], "mb": path.stat().st_size / 1e6}


def _score(data: PreparedData, split: str, logits: torch.Tensor) -> float:
    return float(logit_scores(data, split, logits)["score"])


def _weights_mb(model: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.state_dict().values()) / 1e6


def card_table(d: dict[str, Any], metric: str) -> str:
    """The model card's before/after table: score, size, latency of each form of the student."""
    rows = [("PyTorch (safetensors, fp32)", d["torch"]), ("ONNX Runtime, fp32 (`model.onnx`)", d["onnx"])]
    if "int8" in d:
        rows.append(("ONNX Runtime, int8 dynamic (`model_int8.onnx`)", d["int8"]))
    lines = [f"| form | {d['split']} {metric} | vs PyTorch | size (MB) | latency p50 / p95 (ms) |", "|---|---|---|---|---|"]
    for name, v in rows:
        vs = "" if "agreement" not in v else f"agreement {v['agreement']:.2%}, largest logit diff {v['max_abs_diff']:.2g}"
        lines.append(f"| {name} | {v['score']:.4f} | {vs} | {v['mb']:.1f} | {v['ms_p50']:.2f} / {v['ms_p95']:.2f} |")
    m = d["machine"]
    note = (f"\nLatency: batch 1 at the data's median length ({d['seq_len']} tokens), p50 and p95 over {timing.RUNS} runs "
            f"after warm-up, {m['threads']} thread(s), on {m['cpu']} ({m['cores']} cores; torch {m['torch']}, onnxruntime "
            f"{m['onnxruntime']}): a figure of that machine.")
    return "\n".join(lines) + "\n" + note + "\n"


