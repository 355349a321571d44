"""A synthetic, learnable data set in the exact CS224N file layout, for demos and tests.

The three tasks are built from a small vocabulary (a few hundred lowercase words, all in the
`tiny` tokenizer's vocab) so that a 2-layer, 32-wide BERT trained from scratch learns each of
them well above chance in about a minute on CPU:

- sst: two sentiment words in a template; the sum of their polarities gives the 5-class label
  (8% of labels moved one class, like annotator noise).
- para: a question from (verb, object, context); a duplicate keeps the content words (with some
  replaced by synonyms) in another template, a non-duplicate changes the object (and maybe more).
- sts: a sentence from (adjective, subject, action, place); the score grows with how many of the
  four slots the second sentence shares, plus a little noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# Vocabulary

# Dense word lists read better than one word per line.
# fmt: off
_POLARITY: dict[int, tuple[str, ...]] = {
    -2: ("terrible", "awful", "horrible", "dreadful", "painful", "worthless", "disastrous",
         "unbearable"),
    -1: ("dull", "weak", "boring", "flat", "clumsy", "tedious", "bland", "messy"),
    0: ("ordinary", "average", "plain", "typical", "modest", "standard", "familiar", "routine"),
    1: ("good", "nice", "pleasant", "solid", "charming", "decent", "enjoyable", "clever"),
    2: ("brilliant", "wonderful", "superb", "masterful", "stunning", "excellent", "magnificent",
        "outstanding"),
}
_SST_NOUNS = (
    "movie", "film", "story", "plot", "script", "cast", "acting", "ending", "director",
    "soundtrack", "dialogue", "performance", "scenes", "characters", "music", "camera", "pacing",
    "humor", "drama", "comedy",
)
_SST_TEMPLATES = (
    "the {n1} is {w1} and the {n2} is {w2} .",
    "a {w1} {n1} with a {w2} {n2} .",
    "{w1} {n1} , {w2} {n2} .",
    "the {n1} feels {w1} , but the {n2} is {w2} .",
    "this {n1} is {w1} , and its {n2} is {w2} .",
    "i found the {n1} {w1} and the {n2} {w2} .",
)

_PARA_VERBS = (
    "learn", "cook", "fix", "buy", "sell", "find", "clean", "build", "paint", "grow", "train",
    "write", "play", "start", "improve", "choose", "use", "rent",
)
_PARA_OBJECTS = (
    "guitar", "bread", "car", "house", "garden", "laptop", "phone", "bike", "novel", "website",
    "business", "dog", "cat", "coffee", "chess", "piano", "language", "resume", "camera", "tent",
    "boat", "sofa", "printer", "jacket", "pizza", "soup", "violin", "drone", "blog", "podcast",
    "apartment", "watch", "kayak", "aquarium", "keyboard", "fence", "roof", "shed", "lamp",
    "backpack",
)
_PARA_CONTEXTS = (
    "at home", "quickly", "for beginners", "on a budget", "in winter", "without money",
    "in a week", "as a student", "with friends", "online", "safely", "for kids",
)
# Synonyms used to rewrite duplicates (each way round).
_SYNONYMS: dict[str, str] = {
    "learn": "study", "fix": "repair", "buy": "purchase", "start": "begin", "improve": "enhance",
    "choose": "pick", "use": "operate", "rent": "lease", "clean": "wash", "build": "construct",
    "car": "automobile", "laptop": "notebook", "phone": "smartphone", "bike": "bicycle",
    "novel": "book", "sofa": "couch", "jacket": "coat", "apartment": "flat",
    "quickly": "fast", "online": "on the internet", "for beginners": "for a beginner",
    "on a budget": "cheaply", "for kids": "for children", "safely": "without risk",
}
_PARA_TEMPLATES = (
    "how do i {v} a {o} {c} ?",
    "what is the best way to {v} a {o} {c} ?",
    "how can i {v} a {o} {c} ?",
    "what should i know to {v} a {o} {c} ?",
    "is it possible to {v} a {o} {c} ?",
    "{c} , how would you {v} a {o} ?",
)

_STS_ADJS = ("young", "old", "small", "black", "white", "happy", "tall", "brown", "little",
             "tired")
_STS_SUBJECTS = ("man", "woman", "dog", "child", "girl", "boy", "horse", "bird", "chef",
                 "student")
_STS_ACTIONS = ("running", "eating", "playing", "sleeping", "jumping", "cooking", "reading",
                "singing", "swimming", "dancing")
_STS_PLACES = ("park", "beach", "kitchen", "street", "field", "river", "stage", "garden",
               "table", "road")
# fmt: on
_STS_SLOTS = (_STS_ADJS, _STS_SUBJECTS, _STS_ACTIONS, _STS_PLACES)
_STS_TEMPLATES = (
    "a {a} {s} is {x} in the {p} .",
    "in the {p} , a {a} {s} is {x} .",
    "the {a} {s} is {x} near the {p} .",
    "there is a {a} {s} {x} in the {p} .",
)

# The files write_demo_data writes: the CS224N names, so a real data set's would be replaced.
DEMO_FILES = tuple(
    f"{prefix}-{split}.csv"
    for prefix in ("ids-sst", "quora", "sts")
    for split in ("train", "dev", "test-student")
)

_TASK_SEED = {"sst": 1, "para": 2, "sts": 3}
_SPLIT_SEED = {"train": 1, "dev": 2, "test": 3}


def demo_vocabulary() -> list[str]:
    """Every word the demo sentences use (sorted), so the tiny tokenizer can hold them whole."""
    texts: list[str] = []
    texts += [w for ws in _POLARITY.values() for w in ws]
    texts += list(_SST_NOUNS) + list(_SST_TEMPLATES) + list(_PARA_TEMPLATES)
    texts += list(_PARA_VERBS) + list(_PARA_OBJECTS) + list(_PARA_CONTEXTS)
    texts += list(_SYNONYMS) + list(_SYNONYMS.values())
    texts += [w for ws in _STS_SLOTS for w in ws] + list(_STS_TEMPLATES)
    words: set[str] = set()
    for t in texts:
        for w in t.split():
            if w.isalpha():  # template slots like "{n1}" and punctuation are not words
                words.add(w)
    return sorted(words)


# --------------------------------------------------------------------------------------------
# Generators (each returns rows of (sentence..., label))


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _sst_class(s: int) -> int:
    # Polarity sum -4..4 -> 5 classes: very negative, negative, neutral, positive, very positive.
    if s <= -3:
        return 0
    if s <= -1:
        return 1
    if s == 0:
        return 2
    return 3 if s <= 2 else 4


# For each class, the (p1, p2) polarity pairs that produce it.
_SST_PAIRS: dict[int, list[tuple[int, int]]] = {c: [] for c in range(5)}
for _p1 in range(-2, 3):
    for _p2 in range(-2, 3):
        _SST_PAIRS[_sst_class(_p1 + _p2)].append((_p1, _p2))


def _gen_sst(rng: np.random.Generator, n: int) -> list[tuple[str, float]]:
    rows = []
    for _ in range(n):
        label = int(rng.integers(5))
        pairs = _SST_PAIRS[label]
        p1, p2 = pairs[int(rng.integers(len(pairs)))]
        n1, n2 = rng.choice(len(_SST_NOUNS), size=2, replace=False)
        text = _pick(rng, _SST_TEMPLATES).format(
            n1=_SST_NOUNS[n1],
            n2=_SST_NOUNS[n2],
            w1=_pick(rng, _POLARITY[p1]),
            w2=_pick(rng, _POLARITY[p2]),
        )
        # A little label noise (as in real annotations) keeps dev accuracy below 100%, so
        # configurations can still be told apart on the demo.
        if rng.random() < 0.08:
            label = int(np.clip(label + (1 if rng.random() < 0.5 else -1), 0, 4))
        rows.append((text, label))
    return rows


def _para_question(rng: np.random.Generator, v: str, o: str, c: str, synonyms: bool) -> str:
    if synonyms:
        v, o, c = (_SYNONYMS.get(w, w) if rng.random() < 0.5 else w for w in (v, o, c))
    return _pick(rng, _PARA_TEMPLATES).format(v=v, o=o, c=c)


def _gen_para(rng: np.random.Generator, n: int) -> list[tuple[str, str, float]]:
    rows = []
    for _ in range(n):
        v, o, c = _pick(rng, _PARA_VERBS), _pick(rng, _PARA_OBJECTS), _pick(rng, _PARA_CONTEXTS)
        first = _para_question(rng, v, o, c, synonyms=False)
        dup = rng.random() < 0.4
        if not dup:
            # Always a different object; half the time a different verb too.
            o = _pick(rng, [x for x in _PARA_OBJECTS if x != o])
            if rng.random() < 0.5:
                v = _pick(rng, [x for x in _PARA_VERBS if x != v])
            if rng.random() < 0.3:
                c = _pick(rng, [x for x in _PARA_CONTEXTS if x != c])
        second = _para_question(rng, v, o, c, synonyms=True)
        if rng.random() < 0.5:
            first, second = second, first
        rows.append((first, second, 1.0 if dup else 0.0))
    return rows


def _gen_sts(rng: np.random.Generator, n: int) -> list[tuple[str, str, float]]:
    rows = []
    for _ in range(n):
        slots = [_pick(rng, words) for words in _STS_SLOTS]
        keep = int(rng.integers(5))  # how many of the 4 slots the pair shares
        kept = set(rng.choice(4, size=keep, replace=False).tolist())
        other = [
            s if i in kept else _pick(rng, [w for w in _STS_SLOTS[i] if w != s])
            for i, s in enumerate(slots)
        ]
        a = _pick(rng, _STS_TEMPLATES).format(a=slots[0], s=slots[1], x=slots[2], p=slots[3])
        b = _pick(rng, _STS_TEMPLATES).format(a=other[0], s=other[1], x=other[2], p=other[3])
        score = float(np.clip(5.0 * keep / 4 + rng.normal(0.0, 0.3), 0.0, 5.0))
        rows.append((a, b, round(score, 1)))
    return rows


# --------------------------------------------------------------------------------------------
# Writing


def _ids(seed: int, task: str, split: str, n: int) -> list[str]:
    # 25 hex digits like the real files; a hash so ids are unique and stable for a seed.
    return [hashlib.sha1(f"{seed}-{task}-{split}-{i}".encode()).hexdigest()[:25] for i in range(n)]


def _write(path: Path, header: Sequence[str], rows: list[Sequence[str]]) -> Path:
    # Written by hand, not via csv.writer: the texts hold no tabs, quotes or newlines, and the
    # malformed quora row must stay exactly as written.
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_demo_data(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: tuple[int, int, int] | int = (1200, 1200, 1200),
    n_dev: int = 300,
    n_test: int = 300,
) -> dict[str, Path]:
    """Write the 9 CS224N-layout demo files (DEMO_FILES) into `out_dir`, replacing files of
    the same names; returns file name -> path.

    n_train is the number of (valid) train rows for (sst, para, sts), or one int for all three.
    quora-train.csv gets one extra malformed row (empty label), as the real file has two.
    The output depends only on the arguments.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(n_train, int):
        n_train = (n_train, n_train, n_train)
    sizes = {
        "sst": {"train": n_train[0], "dev": n_dev, "test": n_test},
        "para": {"train": n_train[1], "dev": n_dev, "test": n_test},
        "sts": {"train": n_train[2], "dev": n_dev, "test": n_test},
    }
    gens = {"sst": _gen_sst, "para": _gen_para, "sts": _gen_sts}
    written: dict[str, Path] = {}
    for task, by_split in sizes.items():
        for split, n in by_split.items():
            rng = np.random.default_rng([seed, _TASK_SEED[task], _SPLIT_SEED[split]])
            rows = gens[task](rng, n)
            ids = _ids(seed, task, split, n)
            name, header, table = _format_rows(task, split, ids, rows)
            if task == "para" and split == "train":
                # Like the real quora-train.csv: a row whose label is empty, to be skipped. (No
                # stray quote: with csv quoting that would swallow the rest of the file.)
                bad_id = hashlib.sha1(f"{seed}-para-train-bad".encode()).hexdigest()[:25]
                first, second = rows[0][0], rows[0][1]
                table.insert(n // 2, [str(n), bad_id, str(first), str(second), ""])
            written[name] = _write(out / name, header, table)
    return written


def _format_rows(
    task: str, split: str, ids: list[str], rows: list[tuple]
) -> tuple[str, list[str], list[list[str]]]:
    """File name, header and string rows for one (task, split) in the CS224N layout."""
    test = split == "test"
    if task == "sst":
        if test:
            # The real ids-sst-test-student.csv has this odd header (a pandas index promoted
            # to a header row): `0 \t '' \t id \t sentence`, rows `i+1 \t float(i) \t id \t text`.
            table = [[str(i + 1), f"{float(i)}", ids[i], f" {r[0]}"] for i, r in enumerate(rows)]
            return "ids-sst-test-student.csv", ["0", "", "id", "sentence"], table
        table = [[str(i), ids[i], f" {r[0]}", str(r[1])] for i, r in enumerate(rows)]
        return f"ids-sst-{split}.csv", ["", "id", "sentence", "sentiment"], table
    name = {"para": "quora", "sts": "sts"}[task]
    label = {"para": "is_duplicate", "sts": "similarity"}[task]
    if test:
        table = [[str(i), ids[i], r[0], r[1]] for i, r in enumerate(rows)]
        return f"{name}-test-student.csv", ["", "id", "sentence1", "sentence2"], table
    # quora labels are written "0.0"/"1.0", sts scores with one decimal, as in the real files.
    table = [[str(i), ids[i], r[0], r[1], f"{r[2]:.1f}"] for i, r in enumerate(rows)]
    return f"{name}-{split}.csv", ["", "id", "sentence1", "sentence2", label], table
