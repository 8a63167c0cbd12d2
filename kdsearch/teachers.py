"""The teacher pool: train or register checkpoints, select one, cache its outputs.

Sultan et al. (2024) select a teacher among checkpoints by the highest validation score
(``t_hs``) or the lowest validation loss (``t_ll``). Training keeps one checkpoint per
epoch and seed, because the best-scoring and the lowest-loss epochs often differ (a
teacher that memorises the train split keeps its score while its loss climbs).

Each teacher's logits on every split are computed once and cached (safetensors) under a
key of data + checkpoint content; trials read the cache and never run the teacher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from kdsearch import atomic, cache
from kdsearch.data.prepare import PreparedData
from kdsearch.distill.teacher_signal import FEATURES_SUFFIX, CachedTeacher, predict
from kdsearch.distill.trainer import Trainer, TrialConfig, logit_scores, resolve_device, train_student
from kdsearch.errors import KDSearchError, ModelError
from kdsearch.fetch import label
from kdsearch.knobs import ENSEMBLE
from kdsearch.models import load_model
from kdsearch.spec import DataSpec, DistillSpec, TeacherSpec

SELECTORS: dict[str, Callable[[list[TeacherRecord]], TeacherRecord]] = {
    # ties break toward the other criterion, then the earlier checkpoint
    "t_hs": lambda pool: max(pool, key=lambda r: (r.val_score, -r.val_loss)),
    "t_ll": lambda pool: min(pool, key=lambda r: (r.val_loss, -r.val_score)),
}


@dataclass
class TeacherRecord:
    name: str
    path: str
    val_score: float
    val_loss: float
    source: str  # "trained", "registered" (or "ensemble": several checkpoints, never in pool.json)
    seed: int | None = None
    epoch: int | None = None
    collapsed: bool = False  # its validation predictions are one class, or no better than the majority class


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def checkpoint_hash(folder: Path) -> str:
    """Content hash of a checkpoint's weights: the output cache follows the weights."""
    h = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise ModelError(f"teacher folder {str(folder)!r} has no weights (*.safetensors or *.bin)")
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()[:16]


def pool_index(workdir: str | Path, data_key: str) -> Path:
    """Where the pool of the data with ``data_key`` lists its checkpoints (``pool.json``)."""
    return Path(workdir) / "teachers" / data_key / "pool.json"


class TeacherPool:
    """The checkpoints available as teachers for one prepared dataset.

    ``data`` is what they train and are selected on; ``serves`` (default: ``data``) is the
    data whose students read their outputs: the same splits but a smaller sample of train
    (``data.teacher_train_examples``).
    """

    def __init__(self, workdir: str | Path, data: PreparedData, device: str = "auto", serves: PreparedData | None = None) -> None:
        self.workdir = Path(workdir)
        self.data = data
        self.serves = serves if serves is not None else data
        self.device = resolve_device(device)
        self.index = pool_index(self.workdir, data.key)
        self.root = self.index.parent
        self.records: list[TeacherRecord] = []
        self._reload()
        self.forward_passes = 0  # teacher passes over a split, for tests and reports

    def _reload(self) -> None:
        if not self.index.is_file():
            return
        try:
            self.records = [TeacherRecord(**r) for r in json.loads(self.index.read_text())]
        except (OSError, ValueError, TypeError) as e:
            raise KDSearchError(
                f"{self.index}: the teacher pool's index is damaged ({str(e)[:80]}); delete it to retrain the pool"
            ) from None

    @contextlib.contextmanager
    def _locked(self, log: Callable[[str], None]) -> Iterator[None]:
        """This pool, for this process alone: two searches of one spec train its teachers once."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for another kdsearch process to finish with the teacher pool {self.root}")
                fcntl.flock(f, fcntl.LOCK_EX)
            self._reload()  # what the other process added
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _save(self) -> None:
        atomic.write_text(self.index, json.dumps([dataclasses.asdict(r) for r in self.records], indent=1))

    def _add(self, record: TeacherRecord) -> None:
        self.records = [r for r in self.records if r.name != record.name] + [record]
        self._save()

    def get(self, name: str) -> TeacherRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise KDSearchError(f"no teacher {name!r} in the pool (have: {', '.join(r.name for r in self.records) or 'none'})")

    def train(
        self,
        spec: TeacherSpec,
        log: Callable[[str], None] = print,
        progress: Callable[[str], Callable[[int, int, int], None]] | None = None,
    ) -> list[TeacherRecord]:
        """Train each seed, keeping a checkpoint per epoch; seeds already trained are kept."""
        with self._locked(log):
            return self._train(spec, log, progress)

    def _train(
        self,
        spec: TeacherSpec,
        log: Callable[[str], None],
        progress: Callable[[str], Callable[[int, int, int], None]] | None,
    ) -> list[TeacherRecord]:
        # by the model's name (a fetched model's, not its folder's): the same pool on every machine
        model = label(spec.model)
        run_key = _hash([model, dataclasses.asdict(spec.train)])
        new = []
        for seed in spec.seeds:
            prefix = f"{Path(model).name}-{run_key[:6]}-seed{seed}"
            done = [r for r in self.records if r.name.startswith(prefix + "-")]
            if len(done) >= spec.train.epochs:
                log(f"teacher {prefix}: {len(done)} checkpoints already in the pool, skipped")
                continue

            def save_epoch(metrics: dict[str, float], trainer: Trainer, prefix: str = prefix, seed: int = seed) -> None:
                epoch = int(metrics["epoch"])
                name = f"{prefix}-epoch{epoch}"
                folder = self.root / name
                if folder.exists():
                    shutil.rmtree(folder)
                with atomic.new_dir(folder) as tmp:
                    trainer.model.save_pretrained(tmp)
                    for f in self.data.tokenizer_dir.iterdir():
                        shutil.copy(f, tmp / f.name)
                rec = TeacherRecord(name, str(folder), metrics["val_score"], metrics["val_loss"], "trained", seed, epoch,
                                    bool(metrics["val_collapsed"]))
                self._add(rec)
                new.append(rec)
                log(
                    f"teacher {name}: val {metrics['val_score']:.4f} loss {metrics['val_loss']:.4f} "
                    f"train loss {metrics['train_loss']:.4f} ({metrics['train_examples_per_s']:.0f} ex/s)"
                )

            config = TrialConfig(spec.model, spec.train, DistillSpec(alpha=0.0), seed)
            bar = progress(f"teacher {prefix}") if progress else None
            result = train_student(config, self.data, None, self.device, on_epoch=save_epoch, progress=bar)
            if result.status != "ok":
                raise KDSearchError(f"teacher {prefix} diverged: {result.error}; lower teachers.train.learning_rate")
        return new

    def register(self, folder: str | Path, name: str | None = None) -> TeacherRecord:
        """Add an existing ``save_pretrained`` folder, evaluated on validation now."""
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ModelError(f"teacher folder {str(folder)!r} does not exist")
        with self._locked(print):
            return self._register(path, name)

    def _register(self, path: Path, name: str | None) -> TeacherRecord:
        model = load_model(str(path), self.data.task, self.data.label_names)
        config = TrialConfig(str(path), distill=DistillSpec(alpha=0.0))
        trainer = Trainer(model, self.data, config.train, 0, device=self.device)
        metrics = trainer.evaluate("validation", "val")
        self.forward_passes += 1
        rec = TeacherRecord(name or f"registered-{path.name}", str(path), metrics["val_score"], metrics["val_loss"], "registered",
                            collapsed=bool(metrics["val_collapsed"]))
        self._add(rec)
        return rec

    def select(self, strategy: str) -> TeacherRecord:
        """``t_hs``, ``t_ll``, or a checkpoint's name."""
        if not self.records:
            raise KDSearchError(f"the teacher pool for {self.data.source!r} is empty: run `kdsearch teachers train` first")
        if strategy in SELECTORS:
            return SELECTORS[strategy](self.records)
        return self.get(strategy)

    def members(self, key: str) -> list[TeacherRecord]:
        """The checkpoints behind a teacher key (see ``knobs.teacher_key``): ``t_hs``, ``t_ll``
        or a name give one; ``ensemble:k`` the k lowest-loss checkpoints."""
        if not key.startswith(f"{ENSEMBLE}:"):
            return [self.select(key)]
        k = int(key.partition(":")[2])
        ranked = sorted(self.records, key=lambda r: (r.val_loss, -r.val_score))
        if k > len(ranked):
            raise KDSearchError(
                f"distill.ensemble_k: {k} checkpoints asked for the ensemble, but the pool for {self.data.source!r} has "
                f"{len(ranked)} (train more seeds or epochs, or lower ensemble_k)"
            )
        return ranked[:k]

    def signal(self, key: str, features: bool = False, with_model: bool = False) -> tuple[CachedTeacher, TeacherRecord]:
        """What trials read for a teacher key, and its record (an ensemble's: scored on its mean logits)."""
        members = self.members(key)
        if len(members) == 1 and not key.startswith(f"{ENSEMBLE}:"):
            return self.outputs(members[0], features, with_model), members[0]
        if with_model:
            raise KDSearchError(
                "distill.teacher: an ensemble averages cached logits, but augmentation and attention maps need one "
                "teacher model running in the trial"
            )
        name = f"{key} ({' + '.join(r.name for r in members)})"
        teacher = CachedTeacher.mean([self.outputs(r, features) for r in members], name)
        val = logit_scores(self.serves, "validation", teacher.split_logits("validation"))  # type: ignore[arg-type]
        return teacher, TeacherRecord(name, "", val["score"], val["loss"], "ensemble", collapsed=val["collapsed"])

    def outputs(self, record: TeacherRecord, features: bool = False, with_model: bool = False) -> CachedTeacher:
        """The teacher's logits on every split, computed on first use and cached on disk.

        ``features`` adds its pooled hidden states (cached beside the logits, computed the
        first time they are asked for); ``with_model`` ships the model itself, which
        augmentation and attention maps need: the teacher then runs in the trial.
        """
        data = self.serves
        folder = self._output_folder(record)
        logit_files = [f"{s}.safetensors" for s in data.splits]
        new = not cache.usable(folder, "teacher output", required=logit_files)
        missing_features = features and (new or any(f"{s}{FEATURES_SUFFIX}" not in cache.listed(folder) for s in data.splits))
        model = None
        if new or missing_features or with_model:
            model = load_model(record.path, data.task, data.label_names).to(self.device)
        if new or missing_features:
            # a new folder appears whole; features added to an old one are written file by
            # file, and the manifest, rewritten last, vouches for them once all are there
            with atomic.new_dir(folder) if new else contextlib.nullcontext(folder) as out:
                for split, enc in data.splits.items():
                    logits, feats, _ = predict(model, data, enc, device=self.device, features=features)
                    self.forward_passes += 1
                    if new:
                        save_file({"logits": logits.contiguous(), "offsets": enc.offsets}, out / f"{split}.safetensors")
                    if feats is not None:
                        atomic.write_bytes(out / f"{split}{FEATURES_SUFFIX}", save({"features": feats.contiguous()}))
                cache.seal(out)
        return CachedTeacher.load(folder, record.name, features=features, model=model.cpu() if with_model and model is not None else None)

    def _output_folder(self, record: TeacherRecord) -> Path:
        """Where a checkpoint's outputs on the served data are cached (they follow its weights)."""
        return self.workdir / "cache" / "teacher_outputs" / f"{self.serves.key}-{checkpoint_hash(Path(record.path))}"

    def split_logits(self, record: TeacherRecord, split: str) -> torch.Tensor:
        """One split's logits of a checkpoint on the served data: from the output cache when the
        search cached them, else one pass over that split alone (nothing cached: a feature that
        needs one split is not worth a pass over train)."""
        folder = self._output_folder(record)
        if cache.usable(folder, "teacher output", required=[f"{s}.safetensors" for s in self.serves.splits]):
            return CachedTeacher.load(folder, record.name).split_logits(split)  # type: ignore[return-value]
        model = load_model(record.path, self.serves.task, self.serves.label_names).to(self.device)
        self.forward_passes += 1
        return predict(model, self.serves, self.serves.splits[split], device=self.device).logits

    def traits(self) -> dict[str, float]:
        """What the pool says of its data before any student trains (the recommender's teacher
        features, ``distill.trainer.teacher_traits``): t_hs against t_ll on validation."""
        from kdsearch.distill.trainer import teacher_traits

        if not self.records:
            return {}
        best, lowest = self.select("t_hs"), self.select("t_ll")
        logits = self.split_logits(best, "validation")
        other = logits if lowest.name == best.name else self.split_logits(lowest, "validation")
        return teacher_traits(self.serves, logits, other)

    def table(self) -> list[dict[str, object]]:
        picks = {s: SELECTORS[s](self.records).name for s in SELECTORS} if self.records else {}
        return [
            {
                "name": r.name,
                "seed": r.seed,
                "epoch": r.epoch,
                "val_score": round(r.val_score, 4),
                "val_loss": round(r.val_loss, 4),
                "collapsed": r.collapsed,
                "selected_by": ",".join(s for s, n in picks.items() if n == r.name),
            }
            for r in self.records
        ]


def open_pool(workdir: str | Path, dspec: DataSpec, data: PreparedData, device: str = "auto",
              log: Callable[[str], None] = print) -> TeacherPool:
    """The teacher pool whose outputs ``data`` (prepared from ``dspec``) reads: trained on the
    same data, or on the larger sample ``dspec.teacher_train_examples`` names."""
    if dspec.teacher_train_examples is None:
        return TeacherPool(workdir, data, device)
    from kdsearch.data.prepare import prepare_data

    teaching = prepare_data(dspec.for_teachers(), workdir, log=log)
    if teaching.label_names != data.label_names:
        # a label the students' sample lacks would give the teacher a head of another width
        raise KDSearchError(f"data.teacher_train_examples: the teachers' sample of {data.source!r} has the labels "
                            f"{teaching.label_names}, the students' {data.label_names}; raise max_train_examples")
    return TeacherPool(workdir, teaching, device, serves=data)

