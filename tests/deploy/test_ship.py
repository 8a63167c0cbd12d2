"""`kdsearch export --onnx --quantize int8`: a real ONNX graph that ONNX Runtime runs like
PyTorch, int8 beside it, the folder still a transformers one; a failed check writes nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdsearch.cli import main
from kdsearch.data.prepare import PreparedData
from kdsearch.deploy import onnx
from kdsearch.deploy.ship import to_onnx
from kdsearch.errors import KDSearchError
from kdsearch.models import build_for
from tests.test_bad_input import one_line_error, run_main


@pytest.fixture(scope="module")
def exported(tiny_searches: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "student"
    # the tiny grid's students collapse: --force exports the best of them anyway
    assert main(["export", str(tiny_searches["grid"]), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force",
                 "--onnx", "--quantize", "int8"]) == 0
    return out


def test_the_onnx_graph_round_trips_through_onnxruntime_with_its_tokenizer(exported: Path) -> None:
    import onnxruntime
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    assert {"model.onnx", "model_int8.onnx", "model.safetensors", "tokenizer.json"} <= {p.name for p in exported.iterdir()}
    tok = AutoTokenizer.from_pretrained(exported)
    sess = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    texts = ["a gripping, beautiful film", "dull", "the plot is thin but the actors carry it for an hour and more"]
    enc = tok(texts, padding=True, truncation=True, return_tensors="np")  # a batch and a length it never saw
    ours = sess.run(["logits"], {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
    model = AutoModelForSequenceClassification.from_pretrained(exported).eval()
    with torch.inference_mode():
        theirs = model(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits.numpy()
    assert ours.shape == (3, 2) and np.abs(ours - theirs).max() < 1e-4
    assert len(pipeline("text-classification", model=str(exported), device=-1)(texts)) == 3  # still a transformers folder
    int8 = onnxruntime.InferenceSession(str(exported / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    assert int8.run(["logits"], {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})[0].shape == (3, 2)
    assert (exported / "model_int8.onnx").stat().st_size < 0.5 * (exported / "model.onnx").stat().st_size


def test_the_card_and_metrics_say_score_size_and_latency_before_and_after(exported: Path) -> None:
    deploy = json.loads((exported / "metrics.json").read_text())["deploy"]
    assert deploy["split"] == "test" and deploy["onnx"]["max_abs_diff"] < onnx.PARITY_MAX_ABS
    assert deploy["onnx"]["agreement"] >= onnx.PARITY_AGREEMENT
    for form in ("torch", "onnx", "int8"):
        assert deploy[form]["ms_p50"] > 0 and deploy[form]["ms_p95"] >= deploy[form]["ms_p50"] and deploy[form]["mb"] > 0
        assert 0 <= deploy[form]["score"] <= 1
    assert deploy["int8"]["delta_points"] == pytest.approx(100 * (deploy["int8"]["score"] - deploy["torch"]["score"]))
    assert deploy["machine"]["threads"] >= 1 and deploy["machine"]["onnxruntime"]
    card = (exported / "README.md").read_text()
    assert "## Serving it: PyTorch, ONNX and int8" in card and "ONNX Runtime, int8 dynamic (`model_int8.onnx`)" in card


def test_token_classification_exports_and_checks_its_positions(ner_data: PreparedData, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_for("xs", ner_data)
    d = to_onnx(model, ner_data, tmp_path, "int8", threads=1)
    assert d["onnx"]["max_abs_diff"] < 1e-4 and d["onnx"]["agreement"] == 1.0
    assert set(d) >= {"torch", "onnx", "int8"} and (tmp_path / "model_int8.onnx").is_file()


def test_a_failed_parity_check_writes_nothing(tiny_searches: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx, "PARITY_MAX_ABS", -1.0)  # no graph can pass: what a broken exporter would show
    out = tmp_path / "student"
    code, err = run_main(["export", str(tiny_searches["grid"]), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force",
                          "--onnx"], capsys)
    one_line_error(code, err, r"the ONNX graph of BertForSequenceClassification on the test split does not reproduce PyTorch: "
                              r"largest logit difference .* nothing was written")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".student")]


def test_without_onnxruntime_it_is_one_line(tiny_searches: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    out = tmp_path / "student"
    code, err = run_main(["export", str(tiny_searches["grid"]), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force",
                          "--quantize", "int8"], capsys)
    one_line_error(code, err, r"ONNX export needs ONNX Runtime and onnx \(onnxruntime is missing\): pip install onnxruntime")
    assert not out.exists()


def test_a_model_the_exporter_cannot_handle_is_one_line(rt_data: PreparedData, tmp_path: Path) -> None:
    class Opaque(torch.nn.Module):
        config = build_for("xs", rt_data).config

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:  # data-dependent Python: no graph
            if float(input_ids.float().mean()) > 0:
                raise RuntimeError("not traceable")
            return input_ids

    with pytest.raises(KDSearchError, match=r"^torch.onnx cannot export Opaque: "):
        onnx.export(Opaque(), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_int8_that_onnx_runtime_cannot_quantize_is_one_line(tmp_path: Path) -> None:
    """ONNX Runtime's quantizer failing (its shape inference did, on a GPU image's torch 2.11 export)
    is one line naming the file, so a search's costs step warns instead of ending in a traceback."""
    src = tmp_path / "model.onnx"
    src.write_bytes(b"not an onnx graph")
    with pytest.raises(KDSearchError, match=r"^ONNX Runtime [\d.]+ cannot quantize model\.onnx to int8: ") as e:
        onnx.quantize_int8(src, tmp_path / "model_int8.onnx")
    assert "\n" not in str(e.value) and not (tmp_path / "model_int8.onnx").exists()
