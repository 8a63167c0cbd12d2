"""``kdsearch bench kd-loop``: the fused loop on cached teacher outputs vs the usual ways.

In one run, on the same teacher, student and data (a slice of built-in Rotten Tomatoes):
  (a) cached  - this trainer reading teacher logits from the cache,
  (b) online  - this trainer running the teacher every step,
  (c) naive   - ``transformers.Trainer`` with ``compute_loss`` running the teacher,
and the matmul FLOP/s that (a) achieves against a peak measured on the spot.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from kdsearch.bench import write_result
from kdsearch.display import format_table
from kdsearch.data.batching import make_batch, train_order
from kdsearch.data.prepare import PreparedData, prepare_data
from kdsearch.distill.teacher_signal import CachedTeacher, OnlineTeacher, predict
from kdsearch.distill.trainer import Trainer
from kdsearch.models import build_for, count_parameters
from kdsearch.spec import DataSpec, DistillSpec, OptimSpec

KD = DistillSpec(alpha=0.5, loss="kl", tau_t=2.0, tau_s=2.0)


def matmul_peak_gflops(sizes: tuple[int, ...] = (512, 1024, 2048), repeats: int = 10) -> float:
    """Best fp32 GEMM rate of this process's threads over a few square sizes, in GFLOP/s."""
    rates = []
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        rates.append(2 * n**3 / best / 1e9)
    return max(rates)


def _student(data: PreparedData, name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_for(name, data)


def _timed_epoch(trainer: Trainer) -> float:
    """Examples/s of one epoch of ``trainer`` (after a few untimed warm-up steps elsewhere)."""
    start = time.perf_counter()
    trainer.train_epoch()
    return len(trainer.data.splits["train"]) / (time.perf_counter() - start)


def _warm(data: PreparedData, student: str, teacher: CachedTeacher | OnlineTeacher, optim: OptimSpec) -> None:
    t = Trainer(_student(data, student), data, dataclasses.replace(optim, max_steps=5), 0, KD, teacher, torch.device("cpu"))
    t.train_epoch()


def train_flops(data: PreparedData, student: str, optim: OptimSpec, teacher: CachedTeacher, sample_batches: int = 24) -> float:
    """Matmul FLOPs of one epoch of (a): counted on sample batches, scaled by padded tokens."""
    trainer = Trainer(_student(data, student), data, optim, 0, KD, teacher, torch.device("cpu"))
    split = data.splits["train"]
    order = train_order(split.lengths, optim.batch_size, torch.Generator().manual_seed(0))
    tokens = [make_batch(split, i).input_ids.numel() for i in order]
    counter = FlopCounterMode(display=False)
    with counter:
        for index in order[:sample_batches]:
            loss = trainer._loss("train", make_batch(split, index))
            loss.backward()
    per_token = counter.get_total_flops() / sum(tokens[:sample_batches])
    return per_token * sum(tokens)


def naive_hf_trainer(data: PreparedData, student: str, teacher_model: torch.nn.Module, optim: OptimSpec) -> float:
    """Examples/s of KD done the usual way: HF Trainer, teacher run inside compute_loss."""
    import datasets
    import transformers

    split = data.splits["train"]
    rows = {
        "input_ids": [split.input_ids[i, : split.lengths[i]].tolist() for i in range(len(split))],
        "labels": split.labels.tolist(),
    }
    ds = datasets.Dataset.from_dict(rows)
    tokenizer = transformers.AutoTokenizer.from_pretrained(data.tokenizer_dir)
    teacher_model.eval()

    class KDTrainer(transformers.Trainer):
        def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: int | None = None) -> torch.Tensor | tuple[torch.Tensor, Any]:
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            with torch.no_grad():
                t_logits = teacher_model(**inputs).logits
            s = outputs.logits
            hard = F.cross_entropy(s, labels)
            soft = F.kl_div(F.log_softmax(s / KD.tau_t, -1), F.softmax(t_logits / KD.tau_t, -1), reduction="batchmean")
            loss = (1 - KD.alpha) * hard + KD.alpha * soft * KD.tau_t**2
            return (loss, outputs) if return_outputs else loss

    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=optim.batch_size,
            num_train_epochs=1,
            learning_rate=optim.learning_rate,
            weight_decay=optim.weight_decay,
            warmup_steps=0.1,
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            seed=0,
        )
        trainer = KDTrainer(
            model=_student(data, student),
            args=args,
            train_dataset=ds,
            data_collator=transformers.DataCollatorWithPadding(tokenizer),
        )
        start = time.perf_counter()
        trainer.train()
        return len(split) / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as work:
        data = prepare_data(
            DataSpec(dataset="rotten_tomatoes", max_length=args.max_length, max_train_examples=args.examples, max_eval_examples=64),
            work,
        )
        optim = OptimSpec(epochs=1, batch_size=args.batch_size, learning_rate=1e-3)
        torch.manual_seed(123)
        teacher_model = build_for(args.teacher, data)
        t0 = time.perf_counter()
        cached = CachedTeacher(
            {s: predict(teacher_model, data, e).logits for s, e in data.splits.items()},
            {s: e.offsets for s, e in data.splits.items()},
        )
        cache_s = time.perf_counter() - t0
        online = OnlineTeacher(teacher_model, data.task)
        cpu = torch.device("cpu")

        _warm(data, args.student, cached, optim)
        eps_cached = _timed_epoch(Trainer(_student(data, args.student), data, optim, 0, KD, cached, cpu))
        _warm(data, args.student, online, optim)
        eps_online = _timed_epoch(Trainer(_student(data, args.student), data, optim, 0, KD, online, cpu))
        eps_naive = naive_hf_trainer(data, args.student, teacher_model, optim)

        flops = train_flops(data, args.student, optim, cached)
        peak = matmul_peak_gflops()
        achieved = flops / (len(data.splits["train"]) / eps_cached) / 1e9
        split = data.splits["train"]
    return {
        "examples_per_s": {"cached": eps_cached, "online_teacher": eps_online, "naive_hf_trainer": eps_naive},
        "speedup_vs_naive": eps_cached / eps_naive,
        "speedup_vs_online_teacher": eps_cached / eps_online,
        "achieved_gflops": achieved,
        "peak_gflops": peak,
        "peak_fraction": achieved / peak,
        "teacher_cache_s": cache_s,
        "targets": {"speedup_vs_naive": 4.0, "peak_fraction": 0.30},
        "setup": {
            "dataset": "rotten_tomatoes (train slice)",
            "examples": len(split),
            "mean_tokens": float(split.lengths.float().mean()),
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "student": args.student,
            "teacher": args.teacher,
            "student_params": count_parameters(_student(data, args.student)),
            "teacher_params": count_parameters(teacher_model),
            "kd": dataclasses.asdict(KD),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"),
        },
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"bench kd-loop: student {args.student}, teacher {args.teacher}, {args.examples} Rotten Tomatoes examples, "
        f"batch {args.batch_size}, max length {args.max_length}, {torch.get_num_threads()} threads",
        flush=True,
    )
    result = run(args)
    eps = result["examples_per_s"]
    rows = [
        {"variant": "(a) cached teacher outputs", "examples_per_s": eps["cached"], "vs (a)": 1.0},
        {"variant": "(b) teacher run every step", "examples_per_s": eps["online_teacher"], "vs (a)": eps["online_teacher"] / eps["cached"]},
        {"variant": "(c) naive HF Trainer KD", "examples_per_s": eps["naive_hf_trainer"], "vs (a)": eps["naive_hf_trainer"] / eps["cached"]},
    ]
    print(format_table(rows))
    print(
        f"speedup vs naive {result['speedup_vs_naive']:.2f}x (target >= 4), vs online teacher "
        f"{result['speedup_vs_online_teacher']:.2f}x; (a) at {result['achieved_gflops']:.1f} GFLOP/s = "
        f"{100 * result['peak_fraction']:.1f}% of the {result['peak_gflops']:.1f} GFLOP/s matmul peak (target >= 30%)"
    )
    write_result(args.out or "results/bench/kd_loop.json", result)
    return result
