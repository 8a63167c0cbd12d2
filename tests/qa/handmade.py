"""Hand-made data in the layouts of the shared QA and pair datasets (SQuAD's columns;
vitaminc's evidence/claim pairs), written here from word lists: no text is copied from
anywhere, so tests may write and read it freely."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jonas", "Kira", "Lena",
         "Marco", "Nadia", "Omar", "Petra", "Quinn", "Rosa", "Sven", "Tariq"]
CITIES = ["Lisbon", "Oslo", "Quito", "Hanoi", "Dakar", "Lima", "Perth", "Riga", "Tunis", "Cork", "Porto", "Bergen"]
JOBS = ["baker", "pilot", "nurse", "chemist", "tailor", "judge", "farmer", "painter", "sailor", "miner"]
FILLER = ["The weather that year was mild and the rivers ran high.", "Nobody remembers who built the old bridge.",
          "Markets opened early on most days of the week.", "The town council met twice in the spring.",
          "Trains to the coast were often late in winter."]


def passage(rng: random.Random, people: int, filler: int) -> tuple[str, list[tuple[str, str]]]:
    """A context of facts about ``people`` people among ``filler`` filler sentences, and its
    (question, answer) pairs: each answer occurs once in the context."""
    who = rng.sample(NAMES, people)
    cities = rng.sample(CITIES, people)
    jobs = rng.sample(JOBS, people)
    facts, qas = [], []
    for name, city, job in zip(who, cities, jobs):
        facts += [f"{name} moved to {city} as a child.", f"Later {name} worked as a {job}."]
        qas += [(f"Where did {name} move to as a child?", city), (f"What did {name} work as?", f"a {job}")]
    sentences = facts + [rng.choice(FILLER) for _ in range(filler)]
    rng.shuffle(sentences)
    return " ".join(sentences), qas


def qa_frame(n: int, seed: int, people: int = 3, filler: int = 4) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        context, qas = passage(rng, people, filler)
        for question, answer in qas[: n - len(rows)]:
            start = context.index(answer)
            rows.append({"id": f"q{seed}-{len(rows)}", "context": context, "question": question,
                         "answers": {"text": [answer], "answer_start": [start]}})
    return pd.DataFrame(rows)


def qa_folder(folder: Path, train: int = 60, eval_: int = 24, **kw) -> Path:
    """A SQuAD-format dataset folder (train/validation/test parquet)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate((("train", train), ("validation", eval_), ("test", eval_))):
        qa_frame(n, seed=i, **kw).to_parquet(folder / f"{split}.parquet")
    return folder


def pair_frame(n: int, seed: int) -> pd.DataFrame:
    """Evidence/claim pairs labelled as vitaminc labels them (True, False, Neither)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, city, other = rng.choice(NAMES), *rng.sample(CITIES, 2)
        evidence = f"{name} moved to {city} as a child. " + " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 6)))
        label = rng.choice(["True", "False", "Neither"])
        claim = {"True": f"{name} grew up in {city}.", "False": f"{name} grew up in {other}.",
                 "Neither": f"{name} once worked as a {rng.choice(JOBS)}."}[label]
        rows.append({"text": evidence, "text_pair": claim, "label": label})
    return pd.DataFrame(rows)


def pair_folder(folder: Path, train: int = 240, eval_: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate((("train", train), ("validation", eval_), ("test", eval_))):
        pair_frame(n, seed=i).to_parquet(folder / f"{split}.parquet")
    return folder
