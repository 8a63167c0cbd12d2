"""One trial: train one student with one config, evaluate after every epoch.

A trial is a plain function of (config, prepared data, teacher signal) and knows nothing
of Ray; the search wraps it. Teachers are trained by the same loop with ``alpha = 0``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from kdsearch.data.batching import Batch, make_batch, train_order
from kdsearch.data.prepare import IGNORE_INDEX, PreparedData
from kdsearch.distill.augment import AugmentContext, augment
from kdsearch.distill.intermediate import FeatureProjector, expose_attention, layer_map, pool_hidden
from kdsearch.distill.losses import annealed, kd_objective
from kdsearch.distill.metrics import fidelity
from kdsearch.distill.teacher_signal import TeacherSignal, autocast, predict
from kdsearch.errors import SpecError
from kdsearch.models import build_for
from kdsearch.spec import DistillSpec, OptimSpec, Spec
from kdsearch.tasks import get_task

NO_DISTILL = DistillSpec(alpha=0.0)


@dataclass
class TrialConfig:
    """Everything one trial varies: the student, its training, the KD knobs, the seed."""

    student: str = "xs"
    train: OptimSpec = field(default_factory=OptimSpec)
    distill: DistillSpec = field(default_factory=DistillSpec)
    seed: int = 0
    dropout: float | None = None

    @classmethod
    def from_spec(cls, spec: Spec) -> TrialConfig:
        return cls(spec.student.model, spec.student.train, spec.distill, spec.student.seed, spec.student.dropout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrialResult:
    """What a trial returns. ``status`` is ``ok`` or ``diverged`` (a NaN/inf loss)."""

    status: str
    epochs: list[dict[str, float]]
    final: dict[str, float]
    best: dict[str, float]
    test: dict[str, float]
    wall_s: float
    error: str | None = None
    model: PreTrainedModel | None = field(default=None, repr=False)


class Diverged(Exception):
    """The training loss became NaN or infinite, at optimiser step ``step``."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else CPU. ``cuda`` without one is a one-line error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device: cuda asked, but torch {torch.__version__} sees no CUDA device here; use device: auto or cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass(frozen=True)
class Schedule:
    """How long training runs: steps per epoch, total steps, epochs; and the LR factor per step."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup: int

    @classmethod
    def of(cls, optim: OptimSpec, n_train: int) -> Schedule:
        per_epoch = math.ceil(n_train / optim.batch_size)
        total = optim.max_steps or optim.epochs * per_epoch
        return cls(per_epoch, total, math.ceil(total / per_epoch), int(optim.warmup_ratio * total))

    def factor(self) -> Callable[[int], float]:
        """Linear warm-up then linear decay to 0 at the last step."""
        return linear_schedule(self.warmup, self.total_steps)


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def make_optimizer(model: torch.nn.Module, optim: OptimSpec) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # the fused kernel does the whole update in one pass: the embedding's update dominates
    # a tiny student's step, so this is where CPU time goes
    return torch.optim.AdamW(groups, lr=optim.learning_rate, fused=True)


def majority_label(data: PreparedData) -> int:
    """The train split's most frequent label (of the positions that count)."""
    labels = data.splits["train"].labels
    return int(labels[labels != IGNORE_INDEX].bincount().argmax())


def logit_scores(data: PreparedData, split: str, logits: torch.Tensor) -> dict[str, Any]:
    """A split's task metrics, loss and collapse flag from flat per-position logits.

    ``collapsed``: the predictions are one class, or no better than always predicting the
    train split's most frequent label (``majority`` is that score): no finding.
    """
    task = get_task(data.task)
    enc = data.splits[split]
    if task.extractive:  # SQuAD's F1 over questions, from the spans read back out of the windows
        from kdsearch.data.qa import constant_position, qa_scores

        return qa_scores(logits, enc.labels, data.qa[split], constant_position(data.splits["train"].labels))
    gold = enc.labels if enc.labels.dim() == 1 else enc.labels[enc.labels != IGNORE_INDEX]
    pred = logits.argmax(-1)
    scores: dict[str, Any] = task.scores(pred, gold, enc.offsets, data.label_names)
    scores["loss"] = float(F.cross_entropy(logits.float(), gold))
    scores["score"] = scores[task.primary_metric]
    constant = torch.full_like(gold, majority_label(data))
    scores["majority"] = task.scores(constant, gold, enc.offsets, data.label_names)[task.primary_metric]
    scores["collapsed"] = bool(pred.unique().numel() <= 1 or scores["score"] <= scores["majority"])
    return scores


def split_fidelity(data: PreparedData, split: str, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, float]:
    """Agreement and KL of a split's flat logits (QA: over positions inside the context)."""
    if get_task(data.task).extractive:
        from kdsearch.data.qa import context_only

        student, teacher = context_only(student, data.qa[split]), context_only(teacher, data.qa[split])
    return fidelity(student, teacher)


def teacher_traits(data: PreparedData, best: torch.Tensor, other: torch.Tensor | None, split: str = "validation") -> dict[str, float]:
    """What a teacher pool says about a dataset before any student trains (recommender features):
    ``teacher_ece``, the calibration error of ``best``'s ``split`` logits (QA: start and end rows
    of the windows that hold the answer, over context positions), and ``teacher_agreement``,
    the top-1 agreement of ``best`` with ``other`` (t_hs with t_ll; 1 when they are one checkpoint)."""
    from kdsearch.distill.metrics import calibration_error

    enc = data.splits[split]
    rows, gold = best, enc.labels.reshape(-1)
    if get_task(data.task).extractive:
        from kdsearch.data.qa import context_only

        rows = context_only(best, data.qa[split])
        holds = gold != 0  # a window without the whole answer points at [CLS], outside the context
        rows, gold = rows[holds], gold[holds]
    else:
        gold = gold[gold != IGNORE_INDEX]
    out = {"teacher_ece": calibration_error(rows, gold)}
    if other is not None:
        out["teacher_agreement"] = split_fidelity(data, split, best, other)["agreement"]
    return out


class Trainer:
    """Trains ``model`` on ``data``'s train split, evaluating on validation each epoch."""

    def __init__(
        self,
        model: PreTrainedModel,
        data: PreparedData,
        optim: OptimSpec,
        seed: int,
        distill: DistillSpec = NO_DISTILL,
        teacher: TeacherSignal | None = None,
        device: torch.device | None = None,
        max_grad_norm: float = 1.0,
        progress: Callable[[int, int, int], None] | None = None,
    ) -> None:
        if (distill.alpha > 0 or distill.intermediate) and teacher is None:
            raise ValueError("distillation (alpha > 0 or an intermediate term) needs a teacher")
        self.device = device or resolve_device()
        self.model = model.to(self.device)
        self.data = data
        self.task = get_task(data.task)
        self.optim = optim
        self.seed = seed
        self.distill = distill
        self.teacher = teacher
        self.max_grad_norm = max_grad_norm
        self.progress = progress
        train = data.splits["train"]
        schedule = Schedule.of(optim, len(train))
        self.steps_per_epoch, self.total_steps, self.epochs = schedule.steps_per_epoch, schedule.total_steps, schedule.epochs
        if distill.live_teacher and getattr(teacher, "model", None) is not None:
            teacher.model.to(self.device)  # type: ignore[union-attr]
        if distill.attention_term:
            if getattr(teacher, "model", None) is None:
                raise ValueError("attention maps need the teacher's model in the trial (too large to cache)")
            expose_attention(self.model)
            expose_attention(teacher.model)  # type: ignore[union-attr]
        self.projector = self._projector() if distill.intermediate else None
        trained = self.model if self.projector is None else torch.nn.ModuleList([self.model, self.projector])
        self.optimizer = make_optimizer(trained, optim)
        self.params = [p for p in trained.parameters() if p.requires_grad]
        self.augmenter: AugmentContext | None = None
        if distill.augmenting:
            self.augmenter = AugmentContext(
                torch.tensor(data.special_ids, dtype=torch.long),
                data.mask_token_id,
                data.pad_token_id,
                # its own stream, seeded like the batch order: paired across configs
                torch.Generator().manual_seed(seed + 1_000_003),
                self.task.per_token,
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule.factor())
        # batch order depends on the seed alone, so configs are compared seed by seed
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        self.epoch = 0

    def _projector(self) -> FeatureProjector:
        """Maps student layers to teacher layers; sized from the teacher's cached features (or model)."""
        shape = self.teacher.feature_shape() if self.teacher is not None else None  # type: ignore[union-attr]
        if shape is None:
            raise ValueError("an intermediate term needs the teacher's hidden states (cached features)")
        t_layers, t_width = shape
        cfg = self.model.config
        pairs = layer_map(self.distill.inter_map, cfg.num_hidden_layers, t_layers, cfg)
        return FeatureProjector(pairs, cfg.hidden_size, t_width, project=self.distill.hidden_term).to(self.device)

    def _loss(self, split: str, batch: Batch) -> torch.Tensor:
        d = self.distill
        aug = None
        if self.augmenter is not None and split == "train":
            aug = augment(d.augment, batch, d.augment_p, self.augmenter)
            batch = aug.batch.to(self.device)
        inputs = aug.model_inputs(self.model) if aug is not None else batch.model_inputs()
        hidden, attention = d.hidden_term, d.attention_term
        with autocast(self.device):
            out = self.model(**inputs, output_hidden_states=hidden, output_attentions=attention)
        s, y = self.task.select(self.task.logits(out, inputs["attention_mask"]), batch.labels)
        classes = self.task.class_mask(inputs["attention_mask"], batch.labels)
        t = t_features = t_attention = None
        if attention or (aug is not None and bool(aug.rows.any()) and (d.alpha > 0 or hidden)):
            assert self.teacher is not None
            t_inputs = aug.model_inputs(self.teacher.model) if aug is not None else inputs  # type: ignore[union-attr]
            t, t_features, t_attention = self.teacher.run(t_inputs, batch.labels, self.data.task, hidden, attention)  # type: ignore[union-attr]
        else:
            if d.alpha > 0:
                assert self.teacher is not None
                t = self.teacher.logits(split, batch).to(self.device, non_blocking=True)
            if hidden:
                t_features = self.teacher.features(split, batch).to(self.device, non_blocking=True)  # type: ignore[union-attr]
        soft = weight = None
        if aug is not None:
            soft = aug.soft_labels(self.data.num_labels)
            if not bool(aug.label_ok.all()):
                ok = aug.label_ok.to(self.device)
                weight = ok if batch.labels.dim() == 1 else ok[:, None].expand_as(batch.labels)[batch.labels != IGNORE_INDEX]
        tau_t, tau_s = self.temperatures()
        loss = kd_objective(
            s, y, t, alpha=d.alpha, loss=d.loss, tau_t=tau_t, tau_s=tau_s,
            tau2_scaling=d.tau2_scaling, soft_labels=soft, gold_weight=weight,
            logit_std=d.logit_std, dist_beta=d.dist_beta, dist_gamma=d.dist_gamma, classes=classes,
        )
        if hidden:
            assert self.projector is not None
            pooled = pool_hidden(out.hidden_states, inputs["attention_mask"])
            loss = loss + d.inter_weight * self.projector(pooled, t_features, d.inter_loss, d.mi_alpha)
        if attention:
            assert self.projector is not None and t_attention is not None
            loss = loss + d.inter_weight * self.projector.attention(out.attentions, t_attention, inputs["attention_mask"])
        return loss

    def temperatures(self) -> tuple[float, float]:
        """tau_t and tau_s at this step: the config's, or annealed towards 1 (``tau_schedule``)."""
        d = self.distill
        if d.tau_schedule != "anneal":
            return d.tau_t, d.student_temperature
        tau_t = float(annealed(d.tau_t, self.step, self.total_steps))
        return tau_t, tau_t if d.tau_s_same else d.student_temperature

    def train_epoch(self) -> dict[str, float]:
        """One pass over the train split (or up to ``max_steps``). Raises Diverged."""
        self.model.train()
        split = self.data.splits["train"]
        order = train_order(split.lengths, self.optim.batch_size, self.generator)
        check_every = 1 if self.device.type == "cpu" else 25  # .item() syncs a GPU
        loss_sum = torch.zeros((), device=self.device)
        steps = examples = 0
        start = time.perf_counter()
        n_steps = min(len(order), self.total_steps - self.step)
        for index in order:
            if self.step >= self.total_steps:
                break
            batch = make_batch(split, index).to(self.device)
            loss = self._loss("train", batch)
            if steps % check_every == 0 and not bool(torch.isfinite(loss)):
                raise Diverged(f"loss is {float(loss.detach())} at step {self.step}", self.step)
            loss.backward()
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            steps += 1
            examples += len(index)
            self.step += 1
            if self.progress is not None:
                self.progress(self.epoch + 1, steps, n_steps)
        mean_loss = float(loss_sum) / max(1, steps)
        if not math.isfinite(mean_loss):
            raise Diverged(f"mean training loss is {mean_loss} in epoch {self.epoch + 1}", self.step)
        self.epoch += 1
        elapsed = time.perf_counter() - start
        return {"epoch": self.epoch, "step": self.step, "train_loss": mean_loss, "train_examples_per_s": examples / elapsed}

    def evaluate(self, split: str = "validation", prefix: str | None = None) -> dict[str, float]:
        """Task metric, loss against gold labels and, with a teacher, fidelity."""
        logits = predict(self.model, self.data, self.data.splits[split], device=self.device).logits
        scores = logit_scores(self.data, split, logits)
        teacher_logits = self.teacher.split_logits(split) if self.teacher is not None else None
        if teacher_logits is not None:
            scores.update(split_fidelity(self.data, split, logits, teacher_logits))
        p = f"{prefix or split}_"
        return {p + k: v for k, v in scores.items()}

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs or self.step >= self.total_steps

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where training stopped."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "projector": None if self.projector is None else self.projector.state_dict(),
            "augment_generator": None if self.augmenter is None else self.augmenter.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        if self.projector is not None and state.get("projector") is not None:
            self.projector.load_state_dict(state["projector"])
        if self.augmenter is not None and state.get("augment_generator") is not None:
            self.augmenter.generator.set_state(state["augment_generator"])

    def run(self) -> Iterator[dict[str, float]]:
        """Train epoch by epoch, yielding each epoch's train and validation metrics."""
        while not self.finished:
            metrics = self.train_epoch()
            metrics.update(self.evaluate("validation", "val"))
            yield metrics


def train_student(
    config: TrialConfig,
    data: PreparedData,
    teacher: TeacherSignal | None = None,
    device: torch.device | str | None = None,
    on_epoch: Callable[[dict[str, float], Trainer], None] | None = None,
    model: PreTrainedModel | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> TrialResult:
    """Run one trial to the end and return its metrics; a NaN/inf loss gives ``diverged``.

    The seed fixes the student's initialisation and the batch order, so two configs with
    the same seed differ only in what the config changes.
    """
    start = time.perf_counter()
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    torch.manual_seed(config.seed)
    if model is None:
        model = build_for(config.student, data, config.dropout)
    trainer = Trainer(model, data, config.train, config.seed, config.distill, teacher, dev, progress=progress)
    epochs: list[dict[str, float]] = []
    try:
        for metrics in trainer.run():
            metrics["elapsed_s"] = time.perf_counter() - start
            epochs.append(metrics)
            if on_epoch is not None:
                on_epoch(metrics, trainer)
    except Diverged as e:
        return TrialResult("diverged", epochs, epochs[-1] if epochs else {}, _best(epochs), {}, time.perf_counter() - start, str(e), trainer.model)
    test = trainer.evaluate("test") if "test" in data.splits else {}
    return TrialResult("ok", epochs, epochs[-1], _best(epochs), test, time.perf_counter() - start, None, trainer.model)


def _best(epochs: list[dict[str, float]]) -> dict[str, float]:
    return max(epochs, key=lambda m: m["val_score"]) if epochs else {}
