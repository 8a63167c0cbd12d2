"""The peer of ``kdsearch bench fused``: KD the usual way, ``transformers.Trainer`` with the
teacher run inside ``compute_loss``, searched by ``Trainer.hyperparameter_search`` on Ray.

Its classes live at module level: Ray pickles the trainer into each trial, and the
Trainer saves its arguments with ``torch.save``, which pickles classes by name.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers


@dataclasses.dataclass
class KDArguments(transformers.TrainingArguments):
    """TrainingArguments with the KD knobs, so ``hyperparameter_search`` sets them per trial."""

    teacher: str = "t_ll"
    kd_loss: str = "ce"
    alpha: float = 0.5
    tau_t: float = 1.0


class KDTrainer(transformers.Trainer):
    """``(1-alpha)*CE + alpha*D(teacher/tau_t, student)``, the teacher run every step."""

    def __init__(self, *args: Any, teachers: dict[str, tuple[dict, dict]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher_blobs = teachers  # config + weights: a live model does not pickle
        self.live: dict[str, Any] = {}

    def teacher(self, name: str, device: torch.device) -> Any:
        if name not in self.live:
            config, weights = self.teacher_blobs[name]
            model = transformers.AutoModelForSequenceClassification.from_config(transformers.BertConfig.from_dict(config))
            model.load_state_dict(weights)
            self.live[name] = model.to(device).eval()
        return self.live[name]

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        a = self.args
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        with torch.no_grad():
            t = self.teacher(a.teacher, outputs.logits.device)(**inputs).logits.float() / a.tau_t
        s = outputs.logits.float()
        if a.kd_loss == "mse":
            d = F.mse_loss(s, t)
        elif a.kd_loss == "kl":
            d = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
        else:
            d = -(F.softmax(t, -1) * F.log_softmax(s, -1)).sum(-1).mean()
        loss = (1 - a.alpha) * F.cross_entropy(s, labels) + a.alpha * d
        return (loss, outputs) if return_outputs else loss


def _rows(split: Any) -> Any:
    import datasets

    return datasets.Dataset.from_dict({"input_ids": [split.input_ids[i, : split.lengths[i]].tolist() for i in range(len(split))],
                                       "labels": split.labels.tolist()})


def _accuracy(p: Any) -> dict[str, float]:
    return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}


def grid_search(spec: Any, grid: dict[str, list[Any]], resources: dict[str, float]) -> dict[str, Any]:
    """The KD grid of ``grid`` (teacher, loss, alpha, tau_t) on ``spec``'s data and student."""
    from ray import tune

    from kdsearch.data.prepare import prepare_data
    from kdsearch.models import build_for
    from kdsearch.teachers import open_pool

    data = prepare_data(spec.data, spec.workdir, log=lambda s: None)
    pool = open_pool(spec.workdir, spec.data, data, spec.device)
    teachers = {}
    for sel in grid["teacher"]:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(pool.select(sel).path)
        teachers[sel] = (model.config.to_dict(), {k: v.clone() for k, v in model.state_dict().items()})
    tokenizer = transformers.AutoTokenizer.from_pretrained(data.tokenizer_dir)
    gpu = resources.get("gpu", 0) > 0
    train = spec.student.train
    with tempfile.TemporaryDirectory() as out:
        args = KDArguments(output_dir=out, per_device_train_batch_size=train.batch_size, num_train_epochs=1,
                           learning_rate=train.learning_rate, weight_decay=train.weight_decay, warmup_steps=0.1,
                           logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                           use_cpu=not gpu, bf16=gpu, seed=0)
        trainer = KDTrainer(model_init=lambda trial=None: build_for(spec.student.model, data), args=args,
                            train_dataset=_rows(data.splits["train"]), eval_dataset=_rows(data.splits["validation"]),
                            data_collator=transformers.DataCollatorWithPadding(tokenizer), compute_metrics=_accuracy,
                            teachers=teachers)
        space = {"teacher": tune.grid_search(grid["teacher"]), "kd_loss": tune.grid_search(grid["loss"]),
                 "alpha": tune.grid_search(grid["alpha"]), "tau_t": tune.grid_search(grid["tau_t"])}
        start = time.time()
        best = trainer.hyperparameter_search(hp_space=lambda _: space, backend="ray", n_trials=1, direction="maximize",
                                             resources_per_trial=resources, storage_path=str(Path(out) / "ray"),
                                             compute_objective=lambda m: m["eval_accuracy"])
        wall = time.time() - start
    configs = 1
    for values in grid.values():
        configs *= len(values)
    return {"wall_s": wall, "configs": configs, "best_val_score": float(best.objective), "resources": resources}
