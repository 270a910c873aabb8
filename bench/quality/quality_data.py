"""Datasets of a run, built the same way in-process and for the service (no torch here).

GLUE: ``<data_dir>/{SST-2,MRPC,CoLA}/{train,dev}.tsv`` (``--data-dir``), else the bundled samples.
A run trains on a fixed subsample of the training file (``random.Random(0)``, file order kept); the
``select`` phase evaluates on ``Dataset.split(val_fraction, seed=0)`` of that subsample and trains on the
rest, the ``final`` phase trains on all of it and evaluates on the dev file.

Chat (decoder): the Chit Chat Challenge conversations of the PyPI package ``chitchat-dataset``
(MIT, BYU PCC lab; installed, or its wheel given with ``--chat-source``), converted to
``{"messages": [...]}`` JSONL (speaker 1 = user, speaker 2 = assistant, first 6 turns); else the bundled
``chat_sample.jsonl`` (61 short conversations written for the project).
"""

from __future__ import annotations

import json
import random
import zipfile
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from sparsegrad_data import Dataset, TaskType, glue_mapping, load_dataset, sample_path

GLUE_DIRS = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA"}
CHAT_TURNS = 6


def glue_files(task: str, data_dir: Path | None) -> tuple[Path, Path, str]:
    """(train, dev, label): ``glue`` when ``data_dir`` has the task, else the bundled sample."""
    if data_dir is not None:
        folder = Path(data_dir) / GLUE_DIRS[task]
        if (folder / "train.tsv").is_file() and (folder / "dev.tsv").is_file():
            return folder / "train.tsv", folder / "dev.tsv", "glue"
    return sample_path(f"{task}_train"), sample_path(f"{task}_dev"), "bundled"


@lru_cache(maxsize=16)
def _load_glue(task: str, data_dir: Path | None) -> tuple[Dataset, Dataset]:
    train_path, dev_path, _ = glue_files(task, data_dir)
    task_type, mapping = glue_mapping(task)
    train = load_dataset(train_path, task_type, mapping)
    return train, load_dataset(dev_path, task_type, mapping, label_names=train.label_names)


def subsample(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """``n`` examples drawn with ``random.Random(seed)``, in file order (all of them if ``n >= len``)."""
    if n >= len(ds):
        return ds
    keep = sorted(random.Random(seed).sample(range(len(ds)), n))
    return replace(ds, examples=[ds.examples[i] for i in keep])


def chat_conversations(source: str | None) -> tuple[list[dict[str, Any]], str]:
    """Conversations as ``{"messages": [...]}`` and a label of where they came from."""
    raw: dict[str, Any] | None = None
    if source and source.endswith(".whl"):
        with zipfile.ZipFile(source) as z:
            raw = json.loads(z.read("chitchat_dataset/dataset.json"))
    elif source and source.endswith(".json"):
        raw = json.loads(Path(source).read_text())
    else:
        try:
            import chitchat_dataset  # type: ignore[import-not-found]

            raw = dict(chitchat_dataset.Dataset())
        except ImportError:
            raw = None
    if raw is None:
        rows = [json.loads(line) for line in sample_path("chat_sample").read_text().splitlines() if line.strip()]
        return rows, "bundled-chat"
    out = []
    for key in sorted(raw):
        turns = [" ".join(u["text"].strip() for u in group if u.get("text", "").strip())
                 for group in raw[key]["messages"]]
        turns = [t for t in turns if t][:CHAT_TURNS]
        if len(turns) % 2:
            turns = turns[:-1]
        if len(turns) >= 2:
            roles = ["user", "assistant"] * (len(turns) // 2)
            out.append({"messages": [{"role": r, "content": t} for r, t in zip(roles, turns, strict=True)]})
    return out, "chitchat"


def chat_files(source: str | None, n_train: int, n_eval: int, workdir: Path) -> tuple[Path, Path, str]:
    """Train and held-out JSONL files (shuffled with ``Random(0)``; held-out conversations come last)."""
    convs, label = chat_conversations(source)
    order = list(range(len(convs)))
    random.Random(0).shuffle(order)
    n_eval = min(n_eval, max(1, len(convs) // 4))
    held, rest = order[-n_eval:], order[:-n_eval][:n_train]
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, idx in (("train", rest), ("eval", held)):
        path = workdir / f"{label}_{name}_{len(idx)}.jsonl"
        if not path.is_file():
            path.write_text("".join(json.dumps(convs[i], ensure_ascii=False) + "\n" for i in idx))
        paths.append(path)
    return paths[0], paths[1], label


def run_datasets(run: Any, data_dir: Path | None, chat_source: str | None,
                 workdir: Path) -> tuple[Dataset, Dataset]:
    """(train, eval) datasets of a run: the ``select`` phase's carved split, or the subsample and dev set."""
    if run.task == "chat":
        train_path, eval_path, _ = chat_files(chat_source, run.train_size, _chat_eval(run), workdir)
        train = load_dataset(train_path, TaskType.CAUSAL_LM)
        held = load_dataset(eval_path, TaskType.CAUSAL_LM)
    else:
        full, held = _load_glue(run.task, None if data_dir is None else Path(data_dir))
        train = subsample(full, run.train_size)
    if run.phase == "select":
        return train.split(run.val_fraction, seed=0)
    return train, held


def stratified_subsample(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """``n`` examples, stratified by label (``Dataset.split``'s rule), file order kept; all when ``n >= len``."""
    if n >= len(ds):
        return ds
    return ds.split(n / len(ds), seed=seed)[1]


def protocol_datasets(run: Any, data_dir: Path | None, chat_source: str | None,
                      workdir: Path) -> tuple[Dataset, Dataset, Dataset]:
    """Protocol 2: (train, selection split, dev). The selection split is carved once from the training
    subsample, stratified by label, with seed 0 whatever the run's seed or method: every run of a task sees
    the same rows. The dev set (held-out conversations) is only ever used for the reported numbers."""
    if run.task == "chat":
        train_path, eval_path, _ = chat_files(chat_source, run.train_size, _chat_eval(run), workdir)
        pool, dev = load_dataset(train_path, TaskType.CAUSAL_LM), load_dataset(eval_path, TaskType.CAUSAL_LM)
    else:
        full, dev = _load_glue(run.task, None if data_dir is None else Path(data_dir))
        pool = stratified_subsample(full, run.train_size, seed=0)
    train, selection = pool.split(run.val_fraction, seed=0)
    return train, selection, dev


def _chat_eval(run: Any) -> int:
    """Held-out conversations: the protocol's count, else a quarter of the training count, 20 to 300."""
    if getattr(run, "heldout", None):
        return int(run.heldout)
    return min(300, max(20, run.train_size // 4))


def write_jsonl(ds: Dataset, path: Path) -> Path:
    """The dataset as JSONL the service validates (``text``/``text_pair``/``label`` or ``messages``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for ex in ds.examples:
            if ex.messages is not None:
                row: dict[str, Any] = {"messages": [dict(m) for m in ex.messages]}
            else:
                row = {"text": ex.text, "label": ex.label}
                if ex.text_pair is not None:
                    row["text_pair"] = ex.text_pair
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
