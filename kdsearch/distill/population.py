"""A population: many students of one architecture trained as one vectorised model.

K members share the student's architecture, the data, the max length, the batch size and
the schedule's length; each has its own seed (initialisation and batch order), teacher
signal, loss, alpha, temperatures, learning rate and weight decay, all as tensors of size
K. Parameters are stacked (``torch.func.stack_module_state``) and one ``functional_call``
runs under ``torch.vmap`` (the torch.func model-ensembling recipe), so a GPU sees one large
model instead of K small ones.

What keeps a member equal to the single-trial :class:`~kdsearch.distill.trainer.Trainer`
of the same config and seed (dropout off; dropout draws differ under vmap):

- the same initialisation and batch order (the seed, its own generator);
- the batches of one step padded to a common length and batch size: padded rows and
  positions are out of the loss and get no attention (a 4D additive mask, which vmap
  takes where transformers' 2D-mask code does not), and attention is eager (SDPA's
  backward fails under vmap);
- the same objective, from the same loss registry, averaged over the member's own positions;
- AdamW written out per member (decoupled weight decay, none on biases and LayerNorm),
  the same linear warm-up and decay, and gradient clipping by each member's own norm (a
  global norm would couple them).

A member whose loss becomes NaN or infinite is marked diverged and frozen (no gradient, no
update); the others go on unchanged. Shapes follow the device: on a GPU the common length
is rounded up to a multiple of ``GPU_LENGTH_STEP`` so each shape's kernel set-up is paid
once per process; on CPU the bucketed lengths stay as they are.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state
from transformers import PreTrainedModel

from kdsearch import knobs
from kdsearch.data.batching import eval_order, make_batch, train_order
from kdsearch.data.prepare import IGNORE_INDEX, PreparedData
from kdsearch.distill.losses import LOSSES, LossOptions, StudentLogits, annealed, standardize
from kdsearch.distill.teacher_signal import TeacherSignal, autocast, positions_index
from kdsearch.distill.trainer import Schedule, logit_scores, resolve_device, split_fidelity
from kdsearch.tasks import MASKED_LOGIT, get_task

GPU_LENGTH_STEP = 16
BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, as the single trial uses them
EPS = 1e-8
NEG = -1e4  # additive mask for padding: exp() of it is 0 in fp32 and bf16 alike


@dataclass
class Member:
    """One (config, seed) of a population: its distillation config, training and teacher."""

    distill: Any  # DistillSpec
    optim: Any  # OptimSpec
    seed: int
    teacher: TeacherSignal | None = None


def unfusable(config: dict[str, Any]) -> str | None:
    """Why a config cannot train inside a population yet (None when it can)."""
    if knobs.intermediate(config):
        return "intermediate-layer terms need a projector per member and the teacher's features, not stacked yet"
    if knobs.augmenting(config):
        return "augmentation runs the teacher on each member's edited batch inside the step"
    return None


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A [K] tensor shaped to multiply a [K, ...] one."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def clip_per_member(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each member's gradients (dim 0) to at most ``max_norm``, as ``clip_grad_norm_``
    does for one model; returns the members' norms before clipping."""
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(_bcast(scale, g))
    return norms


class Population:
    """Trains ``models`` (one per member, already initialised) together on ``data``.

    Args:
        models: the members' students, same architecture; built with each member's seed.
        data: the prepared dataset all members train on.
        members: each model's config, seed and teacher.
        device: where the stacked model trains (default: CUDA if present).
        max_grad_norm: each member's clipping norm.
        progress: ``progress(epoch, step_in_epoch, steps_in_epoch)``, as the Trainer takes.
        fixed_shapes: round lengths up to ``GPU_LENGTH_STEP`` (default: on CUDA only).
    """

    def __init__(
        self,
        models: list[PreTrainedModel],
        data: PreparedData,
        members: list[Member],
        device: torch.device | None = None,
        max_grad_norm: float = 1.0,
        progress: Callable[[int, int, int], None] | None = None,
        fixed_shapes: bool | None = None,
    ) -> None:
        if not members or len(models) != len(members):
            raise ValueError("a population needs one model per member")
        optim = members[0].optim
        shared = ("epochs", "batch_size", "max_steps", "warmup_ratio")
        for m in members:
            differ = [f for f in shared if getattr(m.optim, f) != getattr(optim, f)]
            if differ:
                raise ValueError(f"members of a population share {', '.join(differ)}")
            why = unfusable(m.distill.config())
            if why:
                raise ValueError(f"a member cannot join a population: {why}")
        self.device = device or resolve_device()
        self.data = data
        self.task = get_task(data.task)
        self.members = members
        self.k = len(members)
        self.max_grad_norm = max_grad_norm
        self.progress = progress
        self.fixed_shapes = self.device.type == "cuda" if fixed_shapes is None else fixed_shapes
        self.optim = optim
        for model in models:
            model.set_attn_implementation("eager")  # SDPA's backward fails under vmap
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.params = [params[n].detach().to(self.device).requires_grad_(True) for n in self.names]
        self.buffers = {n: b.to(self.device) for n, b in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")
        # AdamW without weight decay on biases and LayerNorm (one dimension per member)
        self.decay = [p.dim() > 2 for p in self.params]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.opt_steps = 0

        def per_member(fn: Callable[[Member], float]) -> torch.Tensor:
            return torch.tensor([float(fn(m)) for m in members], device=self.device)

        self.lr = per_member(lambda m: m.optim.learning_rate)
        self.weight_decay = per_member(lambda m: m.optim.weight_decay)
        self.alpha = per_member(lambda m: m.distill.alpha)
        self.tau_t = per_member(lambda m: m.distill.tau_t)
        self.tau_s = per_member(lambda m: m.distill.student_temperature)
        self.tau2 = per_member(lambda m: m.distill.tau2_scaling)
        self.tau_same = per_member(lambda m: m.distill.tau_s_same).bool()
        self.anneal = per_member(lambda m: m.distill.tau_schedule == "anneal").bool()
        self.logit_std = per_member(lambda m: m.distill.logit_std).bool()
        self.dist_beta = per_member(lambda m: m.distill.dist_beta)
        self.dist_gamma = per_member(lambda m: m.distill.dist_gamma)
        self.loss_names = sorted({m.distill.loss for m in members if m.distill.alpha > 0})
        self.loss_id = per_member(lambda m: self.loss_names.index(m.distill.loss) if m.distill.alpha > 0 else -1)

        schedule = Schedule.of(optim, len(data.splits["train"]))
        self.steps_per_epoch, self.total_steps, self.epochs = schedule.steps_per_epoch, schedule.total_steps, schedule.epochs
        self.schedule = schedule.factor()
        # batch order depends on each member's seed alone, as in its single trial
        self.generators = [torch.Generator().manual_seed(m.seed) for m in members]
        self.active = torch.ones(self.k, dtype=torch.bool, device=self.device)
        self.training = [True] * self.k  # the host's view of ``active``, refreshed each epoch (no sync per step)
        self.diverged_at = torch.full((self.k,), -1, dtype=torch.long, device=self.device)
        self.stopped_at = [0] * self.k  # epoch a member was frozen at by successive halving (0: not)
        self.step = 0
        self.epoch = 0
        self._train_tensors()

    # -- the model -----------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None, per_member: bool) -> torch.Tensor:
        """Logits ``[K, B, (L,) C]``; inputs ``[K, ...]`` when ``per_member``, else shared ``[...]``."""
        names, base, task = self.names, self.base, self.task

        def f(params: list[torch.Tensor], buffers: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor,
              types: torch.Tensor | None) -> torch.Tensor:
            inputs = {"input_ids": ids, "attention_mask": mask}
            if types is not None:
                inputs["token_type_ids"] = types
            # QA: [2, L] rows (start, end); their padding is masked after vmap, where the 2D mask is known
            return task.logits(functional_call(base, ({**dict(zip(names, params)), **buffers},), (), inputs))

        d = 0 if per_member else None
        with autocast(self.device):
            dims = (0, 0, d, d, None if types is None else d)
            return torch.vmap(f, in_dims=dims, randomness="different")(self.params, self.buffers, ids, mask, types)

    def _length(self, width: int) -> int:
        if self.data.splits["train"].fixed_width:
            return self.data.max_length  # QA: a window's positions are its classes, one width for all
        if not self.fixed_shapes:
            return width
        return min(self.data.max_length, -(-width // GPU_LENGTH_STEP) * GPU_LENGTH_STEP)

    # -- a training step -------------------------------------------------------------------------
    def _train_tensors(self) -> None:
        """The train split and every member's teacher logits on the device, once: a step
        gathers its batches there instead of building K batches on the host."""
        split = self.data.splits["train"]
        self.train_ids = split.input_ids.to(self.device)
        self.train_lengths = split.lengths.to(self.device)
        self.train_labels = split.labels.to(self.device)
        self.train_types = None if split.token_type_ids is None else split.token_type_ids.to(self.device)
        # each member's teacher logits laid out like the labels: [N, C] or [N, L, C]
        every = torch.arange(len(split))
        dense = []
        for m in self.members:
            t = torch.zeros((*split.labels.shape, self.data.num_classes))
            if m.teacher is not None and m.distill.alpha > 0:
                flat = m.teacher.logits("train", make_batch(split, every))
                if split.labels.dim() == 2:
                    full = make_batch(split, every).labels
                    t[:, : full.shape[1]][full != IGNORE_INDEX] = flat
                else:
                    t[:] = flat
            dense.append(t)
        self.train_teacher = torch.stack(dense).to(self.device)  # [K, N, (L,) C]

    def _batches(self, orders: list[list[torch.Tensor]], i: int) -> dict[str, Any]:
        """Step ``i`` of every member, gathered on the device and padded to one ``[K, B, L]``."""
        split = self.data.splits["train"]
        rows = self.optim.batch_size
        index = torch.full((self.k, rows), -1, dtype=torch.long)
        for k, order in enumerate(orders):
            index[k, : len(order[i])] = order[i]
        real = index >= 0
        lengths = torch.where(real, split.lengths[index.clamp(min=0)], 0)
        # the members still training set the width (host-side flags: no device sync per step)
        width = int(lengths[torch.tensor(self.training)].max()) if any(self.training) else 1
        length = self._length(max(width, 1))
        where = index.clamp(min=0).to(self.device)
        real_d = real.to(self.device)
        ids = self.train_ids[where, :length]
        keep = torch.arange(length, device=self.device) < torch.where(real_d, self.train_lengths[where], 0)[..., None]
        ids = torch.where(keep, ids, self.data.pad_token_id)
        labels = self.train_labels[where]
        teacher = self.train_teacher[torch.arange(self.k, device=self.device)[:, None], where]
        classes = None
        if self.task.extractive:  # [K, B, 2] start/end rows over [K, B, 2, L] positions, padding masked
            labels = torch.where(real_d[..., None], labels, IGNORE_INDEX)
            classes = keep[:, :, None, :].expand(*labels.shape, length)
        elif labels.dim() == 3:  # per token: cut to the width; padding and cut-off rows count nowhere
            labels, teacher = labels[:, :, :length], teacher[:, :, :length]
            labels = torch.where(keep, labels, IGNORE_INDEX)
        else:
            labels = torch.where(real_d, labels, IGNORE_INDEX)
        types = None if self.train_types is None else torch.where(keep, self.train_types[where, :length], 0)
        additive = torch.where(keep, 0.0, NEG)[:, :, None, None, :]  # [K, B, 1, 1, L]
        return {"ids": ids, "mask": additive, "labels": labels, "types": types, "teacher": teacher, "classes": classes,
                "examples": [len(order[i]) for order in orders]}

    def _losses(self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor,
                classes: torch.Tensor | None = None) -> torch.Tensor:
        """Each member's objective, ``(1-alpha)*CE(y, p_s) + alpha*D``, over its own positions: [K].
        ``classes``: which classes exist, shaped like the logits (QA's window positions; None: all)."""
        k, c = self.k, logits.shape[-1]
        s = logits.float().reshape(k, -1, c)
        y = labels.reshape(k, -1)
        valid = (y != IGNORE_INDEX).float()
        count = valid.sum(1).clamp(min=1.0)
        cls = None if classes is None else classes.reshape(k, -1, c)
        student = StudentLogits(s, cls)
        gold = -student.log_probs(1.0).gather(-1, y.clamp(min=0)[..., None]).squeeze(-1)
        hard = (gold * valid).sum(1) / count
        loss = torch.where(self.alpha < 1.0, (1.0 - self.alpha) * hard, torch.zeros_like(hard))
        if self.loss_names:
            t = teacher.reshape(k, -1, c)
            tau_t, tau_s = self.temperatures()
            if bool(self.logit_std.any()):  # z-scored where a member asks for it, as it is elsewhere
                std = self.logit_std[:, None, None]
                student_d = StudentLogits(torch.where(std, standardize(s, cls), s), cls)
                t = torch.where(std, standardize(t, cls), t.float())
            else:
                student_d = student
            options = LossOptions(valid, self.dist_beta[:, None], self.dist_gamma[:, None], cls)
            d = torch.zeros_like(hard)
            for i, name in enumerate(self.loss_names):  # each member reads its own loss's value
                per_position = LOSSES[name](student_d, t, tau_t[:, None, None], tau_s[:, None, None], options)
                d = torch.where(self.loss_id == i, (per_position * valid).sum(1) / count, d)
            d = torch.where(self.tau2 > 0, d * tau_s**2, d)
            loss = loss + torch.where(self.alpha > 0, self.alpha * d, torch.zeros_like(d))
        return loss

    def temperatures(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's tau_t and tau_s at this step: its own, or annealed towards 1."""
        tau_t = torch.where(self.anneal, annealed(self.tau_t, self.step, self.total_steps), self.tau_t)
        tau_s = torch.where(self.anneal & self.tau_same, tau_t, self.tau_s)
        return tau_t, tau_s

    def _step(self, batch: dict[str, Any]) -> torch.Tensor:
        logits = self._forward(batch["ids"], batch["mask"], batch["types"], per_member=True)
        if batch["classes"] is not None:
            logits = logits.masked_fill(~batch["classes"], MASKED_LOGIT)
        loss = self._losses(logits, batch["labels"], batch["teacher"], batch["classes"])
        # a member whose loss is not finite is frozen from this step on; the others go on
        finite = torch.isfinite(loss.detach())
        newly = self.active & ~finite
        self.diverged_at = torch.where(newly, torch.full_like(self.diverged_at, self.step), self.diverged_at)
        self.active &= finite
        grads = list(torch.autograd.grad(torch.where(self.active, loss, 0.0).sum(), self.params))
        grads = [torch.where(_bcast(self.active, g), g, 0.0) for g in grads]
        if self.max_grad_norm:
            clip_per_member(grads, self.max_grad_norm)
        self._adamw(grads)
        return torch.where(self.active, loss.detach(), torch.full_like(loss, math.nan))

    @torch.no_grad()
    def _adamw(self, grads: list[torch.Tensor]) -> None:
        """One AdamW step per member, its own learning rate (on the shared schedule) and decay."""
        b1, b2 = BETAS
        self.opt_steps += 1
        bc1, bc2 = 1 - b1**self.opt_steps, math.sqrt(1 - b2**self.opt_steps)
        lr = self.lr * self.schedule(self.opt_steps - 1) * self.active
        for p, g, m, v, decay in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, self.decay):
            step = _bcast(lr, p)
            if decay:
                p.mul_(1 - step * _bcast(self.weight_decay, p))
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(step / bc1 * m / (v.sqrt() / bc2 + EPS))

    def train_epoch(self) -> list[dict[str, float]]:
        """One pass over the train split for every member (or up to ``max_steps``)."""
        self.base.train()
        split = self.data.splits["train"]
        orders = [train_order(split.lengths, self.optim.batch_size, g) for g in self.generators]
        loss_sum = torch.zeros(self.k, device=self.device)
        steps = examples = 0
        start = time.perf_counter()
        n_steps = min(len(orders[0]), self.total_steps - self.step)
        for i in range(n_steps):
            batch = self._batches(orders, i)
            loss_sum += self._step(batch)
            steps += 1
            examples += batch["examples"][0]
            self.step += 1
            if self.progress is not None:
                self.progress(self.epoch + 1, steps, n_steps)
        self.epoch += 1
        elapsed = time.perf_counter() - start
        self.training = self.active.tolist()
        means = (loss_sum / max(1, steps)).tolist()
        return [{"epoch": self.epoch, "step": self.step, "train_loss": means[k], "train_examples_per_s": examples / elapsed}
                for k in range(self.k)]

    # -- evaluation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, split: str, batch_size: int = 128) -> torch.Tensor:
        """Every member's flat per-position logits on ``split``: ``[K, positions, C]`` (float32, CPU)."""
        enc = self.data.splits[split]
        was_training = self.base.training
        self.base.eval()
        out = torch.empty(self.k, int(enc.offsets[-1]), self.data.num_classes)
        for index in eval_order(enc.lengths, batch_size):
            b = make_batch(enc, index)
            length = self._length(b.input_ids.shape[1])
            grow = length - b.input_ids.shape[1]
            ids = F.pad(b.input_ids, (0, grow), value=self.data.pad_token_id).to(self.device)
            mask = torch.where(F.pad(b.attention_mask, (0, grow)).bool(), 0.0, NEG)[:, None, None, :].to(self.device)
            types = None if b.token_type_ids is None else F.pad(b.token_type_ids, (0, grow)).to(self.device)
            logits = self._forward(ids, mask, types, per_member=False).float()
            if self.task.extractive:
                present = F.pad(b.attention_mask, (0, grow)).bool().to(self.device)
                logits = logits.masked_fill(~present[None, :, None, :], MASKED_LOGIT)
            if logits.dim() == 4:  # per token: the labelled positions, in the order Task.select gives
                labels = F.pad(b.labels, (0, grow), value=IGNORE_INDEX).to(self.device)
                logits = logits[:, labels != IGNORE_INDEX]
            out[:, positions_index(enc.offsets, index)] = logits.cpu()
        self.base.train(was_training)
        return out

    def evaluate(self, split: str = "validation", prefix: str | None = None) -> list[dict[str, Any]]:
        """Each member's task metric, loss, collapse flag and fidelity to its own teacher."""
        logits = self.predict(split)
        p = f"{prefix or split}_"
        out = []
        for k, member in enumerate(self.members):
            scores = logit_scores(self.data, split, logits[k])
            teacher = member.teacher.split_logits(split) if member.teacher is not None else None
            if teacher is not None:
                scores.update(split_fidelity(self.data, split, logits[k], teacher))
            out.append({p + key: v for key, v in scores.items()})
        return out

    # -- status ------------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs or self.step >= self.total_steps

    def diverged(self) -> dict[int, int]:
        """Member -> the step its loss stopped being finite."""
        return {k: int(s) for k, s in enumerate(self.diverged_at.tolist()) if s >= 0}

    def freeze(self, members: list[int]) -> None:
        """Stop training these members (successive halving); their results stand as they are."""
        for k in members:
            self.active[k] = False
            self.training[k] = False
            self.stopped_at[k] = self.stopped_at[k] or self.epoch

    def run(self) -> Iterator[list[dict[str, Any]]]:
        """Train epoch by epoch, yielding each member's train and validation metrics."""
        while not self.finished and bool(self.active.any()):
            metrics = self.train_epoch()
            for m, val in zip(metrics, self.evaluate("validation", "val")):
                m.update(val)
            yield metrics

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue every member exactly where training stopped."""
        return {
            "params": [p.detach().cpu() for p in self.params],
            "buffers": {n: b.cpu() for n, b in self.buffers.items()},
            "exp_avg": [m.cpu() for m in self.exp_avg],
            "exp_avg_sq": [v.cpu() for v in self.exp_avg_sq],
            "opt_steps": self.opt_steps,
            "generators": [g.get_state() for g in self.generators],
            "torch_rng": torch.get_rng_state(),
            "active": self.active.cpu(),
            "diverged_at": self.diverged_at.cpu(),
            "stopped_at": list(self.stopped_at),
            "step": self.step,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, state["params"]):
                p.copy_(saved)
        self.buffers = {n: b.to(self.device) for n, b in state["buffers"].items()}
        self.exp_avg = [m.to(self.device) for m in state["exp_avg"]]
        self.exp_avg_sq = [v.to(self.device) for v in state["exp_avg_sq"]]
        self.opt_steps = int(state["opt_steps"])
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
        torch.set_rng_state(state["torch_rng"])
        self.active = state["active"].to(self.device)
        self.training = self.active.tolist()
        self.diverged_at = state["diverged_at"].to(self.device)
        self.stopped_at = list(state["stopped_at"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])

    def member_model(self, k: int, like: PreTrainedModel) -> PreTrainedModel:
        """Member ``k`` as a plain model (``like``: a model of the same architecture, overwritten)."""
        with torch.no_grad():
            state = {n: p[k].detach().cpu() for n, p in zip(self.names, self.params)}
            like.load_state_dict({**state, **{n: b[k].cpu() for n, b in self.buffers.items()}}, strict=False)
        return like
