"""Aggregate ``<out>/runs.jsonl`` into ``results.json``, ``RESULTS_TABLE.md``, ``quality.png`` and (with decoder
rows) ``quality_decoder.png``.

    python bench/quality/report.py --out bench/results/quality

Final-phase rows are grouped by (task, method, setting, density): mean ± sample std over seeds of the
paper's metrics (SST-2 accuracy; MRPC accuracy and F1; CoLA Matthews correlation; chat eval loss). The
GLUE average per (method, setting) is the mean of SST-2 accuracy, MRPC mean(accuracy, F1) and CoLA MCC,
computed per seed and then averaged. The chosen learning rates come from the selection rows.

Paired differences: for every (task, method, setting) and each seed both runs have, the method's score minus
LoRA's in the same setting and minus full FT's (same task, seed and data; full FT runs once, in the paper setting);
mean ± sample std of those per-seed differences (also of the per-seed GLUE averages). The paper's GLUE averages
(``PAPER_GLUE_AVERAGE``) are printed beside the table: other models and the full GLUE suite, so compare the
order and the gaps, not the scores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_plan as qp

TASK_METRICS = {"sst2": ("eval_accuracy",), "mrpc": ("eval_accuracy", "eval_f1"), "cola": ("eval_mcc",),
                "chat": ("eval_loss",)}
SHORT = {"eval_accuracy": "acc", "eval_f1": "F1", "eval_mcc": "MCC", "eval_loss": "eval loss"}
REFERENCES = {"lora": "LoRA (same setting)", "full": "full FT",
              "sparsegrad": "SparseGrad exact (same setting; its other variants only)"}
"""What the paired differences are taken against, with their table titles: LoRA in the same setting, full FT (which
has one setting), and the exact method, against which SparseGrad's other variants (block, fixed, re-calibrated)
are judged."""


def _paired_with(reference: str, method: str) -> bool:
    if reference == "sparsegrad":
        return method in qp.SPARSEGRAD_VARIANTS and method != reference
    return method != reference
PAPER_GLUE_AVERAGE = {
    "BERT-base (Table 4)": {"full": 82.5, "lora": 81.6, "sparsegrad": 82.6, "meprop": 82.1},
    "RoBERTa-base (Table 4)": {"full": 84.2, "lora": 83.1, "sparsegrad": 83.6, "meprop": 82.5},
    "RoBERTa-large (Table 5)": {"full": 85.6, "lora": 83.7, "sparsegrad": 85.4, "meprop": 84.3},
}
"""The SparseGrad paper's GLUE averages (paper setting, all GLUE tasks); LLaMA-2-7B chat valid loss below."""
PAPER_DECODER_LOSS = {"LLaMA-2-7B, OpenAssistant (Table 6)": {"full": 1.250, "lora": 1.249, "sparsegrad": 1.247,
                                                                "meprop": 1.259}}


def mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values) if values else float("nan"),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def aggregate(rows: list[dict[str, Any]], default_density: float = 0.01) -> dict[str, Any]:
    """The content of results.json (see the module docstring)."""
    chosen = qp.settled_choices(rows)
    # Final rows at a learning rate that is no longer the chosen one (the grid grew since), and every row of a group
    # whose grid is not complete yet, are left out.
    finals = [r for r in rows if qp.is_reported(r, chosen)]
    if len({r.get("protocol", 1) for r in finals}) > 1:
        raise ValueError("runs.jsonl mixes protocol versions; report each version's folder on its own")
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in finals:
        groups[(row["task"], row["method"], row["setting"], row["density"])].append(row)
    results = []
    for (task, method, setting, density), grp in sorted(groups.items()):
        grp = sorted(grp, key=lambda r: r["seed"])
        entry = {
            "task": task, "method": method, "setting": setting, "density": density, "model": grp[0]["model"],
            "lr": grp[0]["lr"], "seeds": [r["seed"] for r in grp], "train_size": grp[0]["train_size"],
            "steps": grp[0]["steps"], "batch_size": grp[0]["batch_size"], "max_seq_length": grp[0]["max_seq_length"],
            "data": grp[0]["data"], "trainable_params": grp[0].get("trainable_params"),
            "lora_rank": grp[0].get("lora_rank"),
            "s_per_step": mean_std([r["s_per_step"] for r in grp if r.get("s_per_step") is not None])["mean"],
            "score": mean_std([qp.task_score(task, r["metrics"]) for r in grp]),
            "seed_scores": [qp.task_score(task, r["metrics"]) for r in grp],
            "metrics": {m: mean_std([float(r["metrics"][m]) for r in grp]) for m in TASK_METRICS.get(task, ())},
        }
        results.append(entry)
    glue = []
    combos = {(e["method"], e["setting"]) for e in results if e["task"] in qp.GLUE_TASKS}
    for method, setting in sorted(combos):
        per_seed: dict[int, dict[str, float]] = defaultdict(dict)
        for row in finals:
            if (row["task"] in qp.GLUE_TASKS and row["method"] == method
                    and row["setting"] == setting and row["density"] == default_density):
                per_seed[row["seed"]][row["task"]] = qp.task_score(row["task"], row["metrics"])
        tasks = sorted({t for s in per_seed.values() for t in s})
        complete = [statistics.fmean(s.values()) for s in per_seed.values() if sorted(s) == tasks]
        glue.append({"method": method, "setting": setting, "tasks": tasks, **mean_std(complete)})
    selection = [
        {"task": r["task"], "method": r["method"], "setting": r["setting"], "density": r["density"], "lr": r["lr"],
         "val_score": qp.selection_score(r),
         "chosen": chosen.get(qp.Run.from_dict(r).group) == r["lr"]}
        for r in rows if r.get("phase") == "select"
    ]
    versions = {int(r.get("protocol", 1)) for r in rows}
    return {"results": results, "glue_average": glue, "paired": paired_differences(finals, default_density),
            "selection": selection, "convergence": convergence(rows), "n_rows": len(rows),
            "protocol": max(versions, default=1)}


def convergence(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task, how many runs (every phase and method) stopped early and how many had their best at the step cap.

    A run whose best selection score came at its last allowed step had not reached a plateau: more steps might have
    helped it. Rows without a ``best_step`` (protocol 1 trained a fixed number of steps) are not counted.
    """
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("best_step") is not None:
            by_task[r["task"]].append(r)
    return [{"task": task, "runs": len(rs), "cap": max(r["steps"] for r in rs),
             "early_stopped": sum(bool(r.get("early_stopped")) for r in rs),
             "best_at_cap": sum(r["best_step"] >= r["steps"] for r in rs)}
            for task, rs in sorted(by_task.items())]


def convergence_markdown(agg: dict[str, Any]) -> list[str]:
    if not agg.get("convergence"):
        return []
    lines = ["## Did the runs reach a plateau?", "",
             "Every run of every method and phase: stopped early (the selection score stopped improving for the "
             "protocol's patience), and best selection score at the step cap (no plateau within the budget).", "",
             "| task | runs | step cap | stopped early | best at the cap |", "|---|---|---|---|---|"]
    lines += [f"| {c['task']} | {c['runs']} | {c['cap']} | {c['early_stopped']} | {c['best_at_cap']} |"
              for c in agg["convergence"]]
    return [*lines, ""]


def _reference_setting(reference: str, setting: str) -> str:
    return "paper" if reference == "full" else setting


def paired_differences(finals: list[dict[str, Any]], default_density: float = 0.01) -> list[dict[str, Any]]:
    """Per (task or ``glue``, method, setting, reference): the per-seed differences of the task score (GLUE: of
    the per-seed average over the tasks both have for that seed), with their mean ± sample std."""
    score: dict[tuple[str, str, str, int], float] = {}
    for row in finals:
        if row["density"] == default_density:
            score[(row["task"], row["method"], row["setting"], row["seed"])] = qp.task_score(row["task"], row["metrics"])
    out = []
    methods = sorted({(k[1], k[2]) for k in score})
    for reference in REFERENCES:
        for method, setting in methods:
            if not _paired_with(reference, method):
                continue
            ref_setting = _reference_setting(reference, setting)
            glue: dict[int, list[float]] = defaultdict(list)
            tasks = sorted({k[0] for k in score if k[1] == method and k[2] == setting},
                           key=lambda t: (t not in qp.GLUE_TASKS, t))
            for task in tasks:
                diffs = {}
                for (t, m, st, seed), value in score.items():
                    ref = score.get((task, reference, ref_setting, seed))
                    if (t, m, st) == (task, method, setting) and ref is not None:
                        diffs[seed] = value - ref
                        if task in qp.GLUE_TASKS:
                            glue[seed].append(diffs[seed])
                if diffs:
                    seeds = sorted(diffs)
                    out.append({"task": task, "method": method, "setting": setting, "reference": reference,
                                "seeds": seeds, "diffs": [diffs[s] for s in seeds],
                                **mean_std([diffs[s] for s in seeds])})
            n_glue = {len(v) for v in glue.values()}
            complete = [statistics.fmean(v) for v in glue.values() if len(v) == max(n_glue, default=0)]
            if glue and max(n_glue) > 1:
                out.append({"task": "glue", "method": method, "setting": setting, "reference": reference,
                            "seeds": sorted(s for s, v in glue.items() if len(v) == max(n_glue)),
                            "diffs": complete, "tasks": max(n_glue), **mean_std(complete)})
    return out


def _fmt(ms: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std``; with fewer than three seeds also ``(n=…)``, and no std from one seed."""
    if ms["n"] == 1:
        return f"{ms['mean'] * scale:.{digits}f} (n=1)"
    text = f"{ms['mean'] * scale:.{digits}f} ± {ms['std'] * scale:.{digits}f}"
    return text if ms["n"] >= 3 else f"{text} (n={ms['n']})"


def markdown(agg: dict[str, Any], default_density: float = 0.01) -> str:
    lines = ["# Quality benchmark results", "",
             "Mean ± sample std over seeds (n given when fewer than 3), GLUE dev sets (×100; chat: held-out eval loss). "
             "Learning rate chosen per (task, method, setting) on a validation split carved from the training "
             "subsample, seed 0; a group whose learning-rate grid is not complete yet is not shown.", ""]
    lines += cells_markdown(agg, default_density)
    main = [e for e in agg["results"] if e["density"] == default_density or e["task"] == "chat"]
    glue = {(g["method"], g["setting"]): g for g in agg["glue_average"]}
    for setting in sorted({e["setting"] for e in main if e["task"] != "chat"}):
        rows = [e for e in main if e["setting"] == setting and e["task"] != "chat"]
        tasks = [t for t in qp.GLUE_TASKS if any(e["task"] == t for e in rows)]
        header = ["method", "trainable"] + [f"{t} {SHORT[m]}" for t in tasks for m in TASK_METRICS[t]] + ["GLUE avg"]
        lines += [f"## {setting} setting", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in qp.METHODS:
            mine = {e["task"]: e for e in rows if e["method"] == method}
            if not mine:
                continue
            params = next(iter(mine.values())).get("trainable_params")
            cells = [method, f"{params:,}" if params else "?"]
            for t in tasks:
                for m in TASK_METRICS[t]:
                    cells.append(_fmt(mine[t]["metrics"][m]) if t in mine else "–")
            g = glue.get((method, setting))
            cells.append(_fmt(g) + (f" ({len(g['tasks'])} tasks)" if len(g["tasks"]) < 3 else "") if g and g["n"] else "–")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    chat = [e for e in main if e["task"] == "chat"]
    if chat:
        lines += ["## Decoder: SmolLM2-135M chat SFT (held-out eval loss, lower is better)", "",
                  "| method | setting | trainable | eval loss | lr | data |", "|---|---|---|---|---|---|"]
        lines += [f"| {e['method']} | {e['setting']} | {e['trainable_params'] or 0:,} | "
                  f"{_fmt(e['metrics']['eval_loss'], 1.0, 3)} | {e['lr']:g} | {e['data']} |" for e in chat]
        lines.append("")
    sweep = [e for e in agg["results"] if e["method"] == "sparsegrad" and e["setting"] == "paper" and e["task"] != "chat"]
    if len({e["density"] for e in sweep}) > 1:
        tasks = [t for t in qp.GLUE_TASKS if any(e["task"] == t for e in sweep)]
        lines += ["## Density sweep: SparseGrad dynamic, paper setting (task score ×100)", "",
                  "| density | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for d in sorted({e["density"] for e in sweep}):
            by = {e["task"]: e for e in sweep if e["density"] == d}
            lines.append(f"| {d * 100:g}% | " + " | ".join(_fmt(by[t]["score"]) if t in by else "–" for t in tasks) + " |")
        lines.append("")
    lines += paired_markdown(agg)
    lines += paper_markdown(agg)
    lines += convergence_markdown(agg)
    lines += ["## Chosen learning rates and run sizes", "",
              "| task | method | setting | lr grid (selection score ×100; chat: selection loss) | chosen lr | train subsample | steps | batch | max len |",
              "|---|---|---|---|---|---|---|---|---|"]
    sel: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for s in agg["selection"]:
        if s["density"] == default_density:
            sel[(s["task"], s["method"], s["setting"])].append(s)
    for e in main:
        grid = sorted(sel.get((e["task"], e["method"], e["setting"]), []), key=lambda s: s["lr"])
        grid_txt = ", ".join(f"{s['lr']:g}: {-s['val_score']:.3f}" if e["task"] == "chat"
                             else f"{s['lr']:g}: {s['val_score'] * 100:.1f}" for s in grid) or "–"
        lines.append(f"| {e['task']} | {e['method']} | {e['setting']} | {grid_txt} | {e['lr']:g} | {e['train_size']} "
                     f"| {e['steps']} | {e['batch_size']} | {e['max_seq_length']} |")
    return "\n".join(lines) + "\n"


def _fmt_pair(p: dict[str, Any], task: str) -> str:
    """``mean ± std (n=…)`` of paired differences, then each seed's difference (×100; chat: -eval loss, so positive is
    a lower loss)."""
    scale, digits = (1, 3) if task == "chat" else (100, 1)
    seeds = ", ".join(f"{d * scale:+.{digits}f}" for d in p["diffs"])
    return f"{p['mean'] * scale:+.{digits}f} ± {p['std'] * scale:.{digits}f} (n={p['n']}: {seeds})"


CELL_ORDER = ("full", "lora", "galore", "meprop", *qp.SPARSEGRAD_VARIANTS)
"""The rows of the table of every cell: the references first, then the other baselines, then SparseGrad's variants."""


def cells_markdown(agg: dict[str, Any], default_density: float = 0.01) -> list[str]:
    """One table of every (method, task, setting) cell: the task's first metric ×100 as mean ± std and the chosen
    learning rate; ``…`` where the cell is still to run, with the seeds done where some are. A row per method of the
    protocol (protocol 2 on) and per method with results."""
    main = [e for e in agg["results"] if e["density"] == default_density and e["task"] in qp.GLUE_TASKS]
    if not main:
        return []
    seeds = max(len(e["seeds"]) for e in main)
    settings = [st for st in qp.SETTINGS if any(e["setting"] == st for e in main)]
    tasks = [t for t in qp.GLUE_TASKS if any(e["task"] == t for e in main)]
    planned = set(qp.protocol(agg["protocol"])["encoder"]["methods"]) if agg.get("protocol", 1) >= 2 else set()
    methods = [m for m in CELL_ORDER if m in planned or any(e["method"] == m for e in agg["results"])]
    by = {(e["method"], e["task"], e["setting"]): e for e in main}
    cols = [(t, st) for st in settings for t in tasks]
    lines = ["## Every cell", "",
             f"{', '.join(f'{t} {SHORT[TASK_METRICS[t][0]]}' for t in tasks)} ×100, mean ± std over {seeds} seeds, "
             "with the chosen learning rate; … : still to run. Full FT trains in the paper setting only.", "",
             "| method | " + " | ".join(f"{t} {st}" for t, st in cols) + " |", "|---|" + "---|" * len(cols)]
    for method in methods:
        cells = []
        for t, st in cols:
            e = by.get((method, t, st))
            if method == "full" and st != "paper":
                cells.append("(paper only)")
            elif e is None:
                cells.append("…")
            elif len(e["seeds"]) < seeds:
                cells.append(f"… ({len(e['seeds'])} of {seeds} seeds)")
            else:
                cells.append(f"{_fmt(e['metrics'][TASK_METRICS[t][0]])} ({e['lr']:g})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def paired_markdown(agg: dict[str, Any]) -> list[str]:
    """Tables of the per-seed paired differences (×100; chat: of -eval loss, so positive is a lower loss)."""
    pairs = agg.get("paired") or []
    if not pairs:
        return []
    lines = ["## Paired differences (same task and seed; mean ± std over seeds of method − reference)", "",
             "Positive: the method is better (chat: the difference is in -loss, so its held-out loss is lower). Full FT "
             "runs once, in the paper setting; it is the reference for both settings.", ""]
    for reference, label in REFERENCES.items():
        rows = [p for p in pairs if p["reference"] == reference]
        if not rows:
            continue
        tasks = [t for t in (*qp.GLUE_TASKS, "glue", "chat") if any(p["task"] == t for p in rows)]
        lines += [f"### against {label}", "", "| method | setting | " + " | ".join(tasks) + " |",
                  "|---|---|" + "---|" * len(tasks)]
        for method in qp.METHODS:
            for setting in qp.SETTINGS:
                mine = {p["task"]: p for p in rows if p["method"] == method and p["setting"] == setting}
                if mine:
                    cells = [_fmt_pair(p, t) if (p := mine.get(t)) else "–" for t in tasks]
                    lines.append(f"| {method} | {setting} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def paper_markdown(agg: dict[str, Any]) -> list[str]:
    """The paper's GLUE averages and decoder losses beside ours (paper setting)."""
    ours = {g["method"]: g for g in agg["glue_average"] if g["setting"] == "paper" and g["n"]}
    methods = ["full", "lora", "sparsegrad", "meprop"]
    every_task = sorted({t for g in ours.values() for t in g["tasks"]})
    lines = ["## Beside the paper (paper setting)", "",
             "The paper's numbers are GLUE averages over all GLUE tasks on BERT/RoBERTa; ours are over "
             + (", ".join(every_task) or "no task yet")
             + " on MiniLM-L6 (an average over fewer tasks names its tasks: it is not comparable with the others). "
             "Compare the order and the gaps, not the values.", "",
             "| source | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for source, values in PAPER_GLUE_AVERAGE.items():
        lines.append(f"| paper, {source} | " + " | ".join(f"{values[m]:.1f}" for m in methods) + " |")

    def cell(g: dict[str, Any]) -> str:
        return _fmt(g) + ("" if sorted(g["tasks"]) == every_task else f" (only {', '.join(sorted(g['tasks']))})")

    if ours:
        lines.append("| this run, MiniLM-L6 | " + " | ".join(cell(ours[m]) if m in ours else "–" for m in methods) + " |")
    chat = {e["method"]: e for e in agg["results"] if e["task"] == "chat"}
    if chat:
        lines += ["", "| decoder (held-out loss) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for source, values in PAPER_DECODER_LOSS.items():
            lines.append(f"| paper, {source} | " + " | ".join(f"{values[m]:.3f}" for m in methods) + " |")
        lines.append("| this run, SmolLM2-135M chat | " + " | ".join(
            _fmt(chat[m]["metrics"]["eval_loss"], 1.0, 3) if m in chat else "–" for m in methods) + " |")
    return [*lines, ""]


def _dot_panel(ax, cells: dict[str, dict[str, Any]], colour: dict[str, str], value) -> None:
    """Each method's per-seed values (``value`` of a seed score) as dots and their mean ± std as a bar."""
    methods = [m for m in qp.METHODS if m in cells]
    for x, m in enumerate(methods):
        values = [value(v) for v in cells[m]["seed_scores"]]
        ms = mean_std(values)
        ax.errorbar([x], [ms["mean"]], yerr=[ms["std"]], fmt="_", ms=14, capsize=4, color=colour[m])
        ax.scatter([x] * len(values), values, s=12, color=colour[m], alpha=0.6)
    ax.set_xticks(range(len(methods)), [m.replace("sparsegrad", "sg") for m in methods], rotation=45, ha="right",
                  fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if not methods:
        ax.text(0.5, 0.5, "still to run", ha="center", va="center", transform=ax.transAxes)


def plot(agg: dict[str, Any], path: Path, default_density: float = 0.01) -> list[Path]:
    """One panel per (setting, task): each method's per-seed task scores as dots and their mean ± std as a bar, on
    an axis fitted to the scores (a bar chart from zero hides the one-point gaps the comparison is about). A cell
    whose other seeds are still to run is not drawn; a method keeps its colour in every panel. The decoder's
    held-out losses, once a method has every seed, go the same way into ``<path stem>_decoder.png``. Returns the
    files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def complete(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seeds = max((len(e["seeds"]) for e in entries), default=0)
        return [e for e in entries if len(e["seeds"]) == seeds]

    colour = {m: f"C{i}" for i, m in enumerate(qp.METHODS)}
    main = [e for e in agg["results"] if e["density"] == default_density and e["task"] in qp.GLUE_TASKS]
    seeds = max((len(e["seeds"]) for e in main), default=0)
    main = complete(main)
    settings = sorted({e["setting"] for e in main}) or ["paper"]
    tasks = [t for t in qp.GLUE_TASKS if any(e["task"] == t for e in main)] or ["sst2"]
    fig, axes = plt.subplots(len(settings), len(tasks), figsize=(3.6 * len(tasks), 3.2 * len(settings)),
                             squeeze=False)
    for row, setting in zip(axes, settings, strict=True):
        for ax, task in zip(row, tasks, strict=True):
            _dot_panel(ax, {e["method"]: e for e in main if e["setting"] == setting and e["task"] == task}, colour,
                       lambda v: v * 100)
            ax.set_title(f"{task}, {setting} setting", fontsize=9)
        row[0].set_ylabel("task score ×100")
    fig.suptitle(f"MiniLM-L6 on GLUE dev: per-seed task score (dots), mean ± std over {seeds} seeds "
                 "(SST-2 acc, MRPC mean of acc and F1, CoLA MCC)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written = [path]
    chat = complete([e for e in agg["results"] if e["task"] == "chat"])
    if chat:
        fig, ax = plt.subplots(figsize=(4.2, 3.4))
        _dot_panel(ax, {e["method"]: e for e in chat}, colour, lambda v: -v)  # the task score is -loss
        ax.set_ylabel("held-out eval loss (lower is better)")
        ax.set_title(f"SmolLM2-135M chat SFT: per-seed loss, mean ± std over {len(chat[0]['seeds'])} seeds",
                     fontsize=8)
        fig.tight_layout()
        written.append(path.with_name(f"{path.stem}_decoder{path.suffix}"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def write_report(out: Path, default_density: float = 0.01) -> dict[str, Any]:
    out = Path(out)
    agg = aggregate(qp.RunLog(out).rows(), default_density)
    (out / "results.json").write_text(json.dumps(agg, indent=2, default=str))
    (out / "RESULTS_TABLE.md").write_text(markdown(agg, default_density))
    plots = plot(agg, out / "quality.png", default_density)
    print(f"wrote {out / 'results.json'}, {out / 'RESULTS_TABLE.md'}, " + ", ".join(str(p) for p in plots))
    return agg


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality"))
    parser.add_argument("--density", type=float, default=0.01)
    a = parser.parse_args()
    write_report(a.out, a.density)
