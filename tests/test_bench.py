"""The kd-loop benchmark runs all three variants and writes the JSON the issue names."""

import argparse
import json
from pathlib import Path

from kdsearch.bench import kd_loop


def test_kd_loop_writes_ratios(tmp_path: Path) -> None:
    out = tmp_path / "kd_loop.json"
    args = argparse.Namespace(out=str(out), student="xs", teacher="s", examples=96, batch_size=32, max_length=32)
    kd_loop.main(args)
    result = json.loads(out.read_text())
    eps = result["examples_per_s"]
    assert set(eps) == {"cached", "online_teacher", "naive_hf_trainer"} and all(v > 0 for v in eps.values())
    assert result["speedup_vs_naive"] == eps["cached"] / eps["naive_hf_trainer"]
    assert result["speedup_vs_online_teacher"] == eps["cached"] / eps["online_teacher"]
    assert 0 < result["peak_fraction"] < 1.5 and result["peak_gflops"] > 0
