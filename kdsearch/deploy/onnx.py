"""A student as ONNX: torch.onnx's exporter, a parity check, int8 by ONNX Runtime.

The graph comes from ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based
exporter, torch's default since 2.9; the TorchScript one is deprecated), with batch and
sequence length as dynamic axes: the graph is traced from the very module that trained, so
nothing is written by hand and no second library (Optimum) has to know the architecture.
A graph is kept only after ONNX Runtime's CPU provider reproduces PyTorch on a split
(largest absolute logit difference, prediction agreement). int8 is ONNX Runtime's dynamic
quantisation (weights int8, activations quantised on the fly): no calibration data needed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from kdsearch.data.batching import eval_order, make_batch
from kdsearch.data.prepare import PreparedData
from kdsearch.distill.teacher_signal import positions_index
from kdsearch.errors import KDSearchError
from kdsearch.tasks import get_task

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PARITY_MAX_ABS = 1e-3  # fp32 ONNX against PyTorch: the largest logit difference a graph may show
PARITY_AGREEMENT = 0.999  # and the share of predictions that must agree (a near-tie may flip)


def require_onnxruntime() -> Any:
    """ONNX Runtime, or one line saying how to install it."""
    try:
        import onnx  # noqa: F401 - quantisation needs it
        import onnxruntime

        return onnxruntime
    except ImportError as e:
        raise KDSearchError(f"ONNX export needs ONNX Runtime and onnx ({e.name} is missing): "
                            "pip install onnxruntime onnx onnxscript") from None


def export(model: torch.nn.Module, path: Path, length: int = 16) -> None:
    """Write ``model`` (a transformers classifier) as ONNX with dynamic batch and length.

    One line, naming the model, when the exporter cannot handle it.
    """
    require_onnxruntime()
    model = model.eval().cpu()
    ids = torch.full((2, length), 5, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence", max=int(getattr(model.config, "max_position_embeddings", 512)))
    shapes = {name: {0: batch, 1: seq} for name in INPUTS}
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    try:
        # the exporter narrates every pass on stdout, logs what it skips (torchvision's ops) and
        # warns about internals: none of it is the user's
        quiet.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (), kwargs=inputs, dynamic_shapes=shapes, input_names=list(INPUTS),
                                        output_names=output_names(model), dynamo=True, verbose=False)
            program.save(str(path))
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; the user needs one line
        raise KDSearchError(f"torch.onnx cannot export {type(model).__name__}: {str(e).splitlines()[0][:200]}") from None
    finally:
        quiet.setLevel(level)


def output_names(model: torch.nn.Module) -> list[str]:
    """The graph's outputs, named as transformers names them (and Optimum's ORT models read them)."""
    if type(model).__name__.endswith("ForQuestionAnswering"):
        return ["start_logits", "end_logits"]
    return ["logits"]


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session on the CPU provider with ``threads`` intra-op threads."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed(batch: Any) -> dict[str, np.ndarray]:
    ids = batch.input_ids.cpu().numpy()
    types = batch.token_type_ids.cpu().numpy() if batch.token_type_ids is not None else np.zeros_like(ids)
    return {"input_ids": ids, "attention_mask": batch.attention_mask.cpu().numpy(), "token_type_ids": types}


def predict(sess: Any, data: PreparedData, split: str, batch_size: int = 64) -> torch.Tensor:
    """Flat per-position logits of an ONNX session on a split, as :func:`~kdsearch.distill.teacher_signal.predict` gives."""
    enc = data.splits[split]
    task = get_task(data.task)
    offsets = enc.offsets
    out: torch.Tensor | None = None
    for index in eval_order(enc.lengths, batch_size):
        batch = make_batch(enc, index)
        outputs = {o.name: torch.from_numpy(v) for o, v in zip(sess.get_outputs(), sess.run(None, feed(batch)))}
        rows = task.select(task.logits(SimpleNamespace(**outputs), batch.attention_mask), batch.labels)[0]
        if out is None:
            out = torch.empty(int(offsets[-1]), rows.shape[-1])
        out[positions_index(offsets, index)] = rows.float()
    assert out is not None
    return out


def parity(onnx_logits: torch.Tensor, torch_logits: torch.Tensor) -> dict[str, float]:
    """How far ONNX Runtime's logits are from PyTorch's: the largest difference, the agreement."""
    return {"max_abs_diff": float((onnx_logits - torch_logits).abs().max()),
            "agreement": float((onnx_logits.argmax(-1) == torch_logits.argmax(-1)).float().mean())}


def check_parity(p: dict[str, float], what: str) -> None:
    """One line when a graph does not reproduce PyTorch closely enough to be written."""
    if p["max_abs_diff"] > PARITY_MAX_ABS or p["agreement"] < PARITY_AGREEMENT:
        raise KDSearchError(
            f"{what} does not reproduce PyTorch: largest logit difference {p['max_abs_diff']:.2g} (at most {PARITY_MAX_ABS:g}), "
            f"predictions agree on {p['agreement']:.2%} (at least {PARITY_AGREEMENT:.1%}); nothing was written")


def quantize_int8(src: Path, dst: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of ``src`` into ``dst``."""
    ort = require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process, on the root logger, every time
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    except Exception as e:  # noqa: BLE001 - its shape inference fails on some exporter/onnx pairs (torch 2.11 on an H200 image)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise KDSearchError(f"ONNX Runtime {ort.__version__} cannot quantize {src.name} to int8: {first}") from None
    finally:
        root.setLevel(level)
