"""The quality benchmark's plan: profiles, runs, learning-rate selection, the resumable results log.

Pure Python (no torch): the tests import it directly. A *run* is one training of one
(task, method, setting, density, learning rate, seed); its ``key`` names it in ``runs.jsonl``, so a
restart skips every run whose row is already there.

Protocol (the same for every method, so the comparison is fair):

1. ``select`` phase: for each (task, method, setting) every learning rate of the profile's grid
   trains on seed 0 on the training subsample minus a validation split carved from it
   (``Dataset.split(val_fraction, seed=0)``), and is scored on that split by the task metric.
2. ``final`` phase: the best learning rate trains on the whole subsample with every seed and is
   evaluated on the GLUE dev set (the decoder: on held-out conversations).

Every method gets the same grid, steps, batch size, sequence length and subsample.

Protocol 2 (``protocol_v2.json``, written out in ``PROTOCOL.md``; profile ``v2``) replaces the fixed-step
budget: every run trains on the training subsample minus a stratified selection split (the same rows for every
method and seed), evaluates on that split every ``eval_every`` steps, stops after ``patience`` evaluations
without improvement or at the step cap, restores the best selection-split weights and is then evaluated once
on the GLUE dev set. The learning rate is chosen on seed 0 from the selection-split score only, and the
final seed-0 run *is* that selection run (same key: the phase is not part of a protocol-2 key).

Protocols 3 and 4 (``protocol_v3.json``, ``protocol_v4.json``; profile ``v4`` is the current one) keep protocol 2's
rules and change its budget: a larger SST-2 pool, a step cap per task, a learning-rate grid per setting and (4) a
selection-split share per task (``PROTOCOL.md`` says why).
"""

from __future__ import annotations

import fcntl
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

GLUE_TASKS = ("sst2", "mrpc", "cola")
SPARSEGRAD_VARIANTS: dict[str, dict[str, Any]] = {
    "sparsegrad": {"selection": "dynamic", "recalibrate_every": 0}, "sparsegrad-fixed": {"selection": "fixed"},
    "sparsegrad-block": {"selection": "block"},
    "sparsegrad-recal": {"selection": "dynamic", "recalibrate_every": 100},
}
"""Benchmark method name -> its ``SparseGradConfig`` options (the paper's exact method is plain ``sparsegrad``;
``sparsegrad-recal`` re-calibrates it every 100 steps, the interval ``bench/basis_drift.py`` measured; the plain arm
says 0 because a service job with dynamic selection re-calibrates by default)."""
METHODS = (*SPARSEGRAD_VARIANTS, "lora", "meprop", "full", "galore")
DECODER_METHODS = ("sparsegrad", "lora", "meprop")
SETTINGS = ("paper", "peft")
SWEEP_DENSITIES = (0.005, 0.01, 0.02, 0.04)
DEV_SIZES = {"sst2": 872, "mrpc": 408, "cola": 1043}
"""Rows of the GLUE dev sets (what the final runs evaluate on)."""

# Seconds per optimizer step of the real MiniLM-L6 at batch 32 x 64 tokens, paper setting, 2 vCPUs: SparseGrad
# and LoRA scaled from the smoke run (0.38 and 0.19 s/step at batch 16 x 64, group_by_length on SST-2);
# full/MeProp from the step-time ratios of docs/BENCHMARKS.md (not measured here yet).
STEP_S_MINILM = {"sparsegrad": 0.76, "sparsegrad-fixed": 0.76, "sparsegrad-block": 0.6, "sparsegrad-recal": 0.84,
                 "lora": 0.38, "meprop": 0.68, "full": 0.65}
# Rough guesses for SmolLM2-135M at batch 8 x 256 tokens (not measured yet; refine from runs.jsonl).
STEP_S_SMOLLM = {"sparsegrad": 3.0, "lora": 1.5, "meprop": 2.5}
PEFT_FACTOR = 0.8
RUN_OVERHEAD_S = 4.0


@dataclass(frozen=True)
class Profile:
    """Explicit sizes: training subsample per task, steps, batch, lengths, learning-rate grid."""

    name: str
    train_size: dict[str, int]
    max_seq_length: dict[str, int]
    steps: int
    batch_size: int
    lr_grid: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[str, ...] = ("paper",)
    val_fraction: float = 0.2
    calibration_steps: int = 10
    # decoder (SmolLM2-135M chat SFT)
    chat_train: int = 400
    chat_steps: int = 40
    chat_batch: int = 8
    chat_seq_length: int = 256
    chat_lr_grid: tuple[float, ...] = (2e-4, 1e-3)
    chat_setting: str = "peft"
    chat_seeds: tuple[int, ...] = (0, 1, 2)
    chat_methods: tuple[str, ...] = DECODER_METHODS
    # protocol 2: early stopping on the selection split, schedule and clipping (protocol 1: none of these)
    protocol: int = 1
    density: float = 0.01
    """The density every method is compared at (``--density`` overrides it outside protocol 2)."""
    methods: tuple[str, ...] = tuple(m for m in METHODS if m not in ("galore", "sparsegrad-recal"))  # protocol 1's
    eval_every: int | None = None
    patience: int | None = None
    chat_eval_every: int | None = None
    chat_patience: int | None = None
    chat_heldout: int | None = None
    """Held-out conversations (None: protocol 1's rule, a quarter of the training count, 20 to 300)."""
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    weight_decay: float | None = None
    """None: the library's default."""
    max_grad_norm: float | None = None
    task_steps: dict[str, int] | None = None
    """Protocol 3: a step cap per task (None: ``steps`` for every task)."""
    task_val_fraction: dict[str, float] | None = None
    """Protocol 4: a selection-split share per task (None: ``val_fraction`` for every task)."""
    setting_lr_grid: dict[str, tuple[float, ...]] | None = None
    """Protocol 3: a learning-rate grid per setting, the same for every method, task and model of that setting
    (None: ``lr_grid`` for the encoder and ``chat_lr_grid`` for the decoder)."""

    def cap(self, task: str) -> int:
        """The step cap of an encoder task."""
        return (self.task_steps or {}).get(task, self.steps)

    def selection_fraction(self, task: str) -> float:
        """The share of an encoder task's pool carved out as its selection split."""
        return (self.task_val_fraction or {}).get(task, self.val_fraction)

    def grid(self, task: str, setting: str) -> tuple[float, ...]:
        """The learning rates a (task, setting) group is selected from."""
        if self.setting_lr_grid is not None:
            return self.setting_lr_grid[setting]
        return self.chat_lr_grid if task == "chat" else self.lr_grid


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        train_size={"sst2": 2000, "mrpc": 1000, "cola": 1500},
        max_seq_length={"sst2": 64, "mrpc": 96, "cola": 64},
        steps=80, batch_size=16, lr_grid=(1e-4, 4e-4),
        chat_batch=4, chat_seq_length=128,  # SmolLM2 steps are ~4x MiniLM's: keep the decoder part ~20 min
    ),
    "full": Profile(
        name="full",
        train_size={"sst2": 20000, "mrpc": 3668, "cola": 8551},
        max_seq_length={"sst2": 64, "mrpc": 128, "cola": 64},
        steps=1000, batch_size=32, lr_grid=(5e-5, 1e-4, 3e-4, 1e-3), settings=SETTINGS, val_fraction=0.1,
        chat_train=3000, chat_steps=300, chat_lr_grid=(1e-4, 3e-4, 1e-3),
    ),
}

CURRENT_PROTOCOL = 4
"""The protocol every new quality number is measured under; earlier versions stay readable (their archive)."""
STAGES = ("full", "paper", "peft", "decoder")
"""Protocol 2's run order: full FT first (the sanity bar), then the paper setting, PEFT-pure, the decoder."""


def protocol_file(version: int = CURRENT_PROTOCOL) -> Path:
    return Path(__file__).resolve().parent / f"protocol_v{version}.json"


@cache
def protocol(version: int = CURRENT_PROTOCOL) -> dict[str, Any]:
    """The machine-readable protocol ``protocol_v<version>.json``: the one source of every number of that version."""
    data = dict(json.loads(protocol_file(version).read_text()))
    if data.get("version") != version:
        raise ValueError(f"{protocol_file(version)} says version {data.get('version')}, not {version}")
    return data


def profile_from_protocol(p: dict[str, Any]) -> Profile:
    """The harness profile of a protocol file (``v<version>``)."""
    enc, dec, sched = p["encoder"], p["decoder"], p["schedule"]
    tasks = enc["tasks"]
    grid = p["lr_grid"]
    per_setting = isinstance(grid, dict)  # protocol 3 on: one grid per setting
    flat = tuple(grid[SETTINGS[0]] if per_setting else grid)
    caps = {t: int(v.get("max_steps", enc.get("max_steps", 0))) for t, v in tasks.items()}
    fractions = {t: float(v.get("selection_fraction", enc["selection_fraction"])) for t, v in tasks.items()}
    return Profile(
        name=f"v{p['version']}", protocol=int(p["version"]),
        train_size={t: int(v["train_size"]) for t, v in tasks.items()},
        max_seq_length={t: int(v["max_seq_length"]) for t, v in tasks.items()},
        steps=max(caps.values()), task_steps=caps, task_val_fraction=fractions, batch_size=int(enc["batch_size"]), lr_grid=flat,
        setting_lr_grid={s: tuple(g) for s, g in grid.items()} if per_setting else None,
        seeds=tuple(p["seeds"]), settings=tuple(enc["settings"]), val_fraction=float(enc["selection_fraction"]),
        calibration_steps=int(enc["calibration_steps"]), methods=tuple(enc["methods"]), density=float(enc["density"]),
        eval_every=int(enc["eval_every"]), patience=int(enc["patience"]),
        chat_train=int(dec["train_conversations"]), chat_steps=int(dec["max_steps"]),
        chat_batch=int(dec["batch_size"]), chat_seq_length=int(dec["max_seq_length"]),
        chat_lr_grid=flat, chat_setting=dec["setting"], chat_seeds=tuple(p["seeds"]),
        chat_methods=tuple(dec["methods"]), chat_eval_every=int(dec["eval_every"]),
        chat_patience=int(dec["patience"]), chat_heldout=int(dec["heldout_conversations"]),
        lr_scheduler=sched["lr_scheduler"], warmup_ratio=float(sched["warmup_ratio"]),
        weight_decay=float(sched["weight_decay"]), max_grad_norm=float(sched["max_grad_norm"]),
    )


for _version in range(2, CURRENT_PROTOCOL + 1):
    PROFILES[f"v{_version}"] = profile_from_protocol(protocol(_version))


@dataclass(frozen=True)
class Run:
    """One training. ``data`` is ``glue`` (``--data-dir``), ``bundled`` (package samples) or a chat source."""

    phase: str  # "select" | "final"
    task: str  # sst2 | mrpc | cola | chat
    method: str
    setting: str
    seed: int
    lr: float
    density: float
    train_size: int
    steps: int
    batch_size: int
    max_seq_length: int
    calibration_steps: int
    val_fraction: float
    data: str
    model: str = "minilm-l6"
    max_grad_norm: float | None = None
    """Gradient clipping for every method (None: none, the profiles' default)."""
    protocol: int = 1
    """Protocol version; from 2 on it leads the key, and the schedule, clipping, evaluation and stopping
    below come from that version's protocol file."""
    eval_every: int | None = None
    patience: int | None = None
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    weight_decay: float | None = None
    heldout: int | None = None
    """Held-out conversations of a chat run (None: protocol 1's rule)."""

    @property
    def key(self) -> str:
        if self.protocol >= 2:
            # No phase: the final seed-0 run is the selection run at the chosen learning rate.
            return (f"v{self.protocol}|{self.model}|{self.data}|{self.task}|{self.method}|{self.setting}"
                    f"|d={self.density:g}|lr={self.lr:g}|seed={self.seed}|n={self.train_size}|cap={self.steps}"
                    f"|bs={self.batch_size}|len={self.max_seq_length}|cal={self.calibration_steps}"
                    f"|sel={self.val_fraction:g}")
        clip = "" if self.max_grad_norm is None else f"|clip={self.max_grad_norm:g}"
        return (f"{self.phase}|{self.model}|{self.data}|{self.task}|{self.method}|{self.setting}|d={self.density:g}"
                f"|lr={self.lr:g}|seed={self.seed}|n={self.train_size}|steps={self.steps}|bs={self.batch_size}"
                f"|len={self.max_seq_length}|cal={self.calibration_steps}|val={self.val_fraction:g}{clip}")

    @property
    def group(self) -> tuple[Any, ...]:
        """What one learning-rate choice is shared by (protocol 2 and later: also the version, data and budget,
        so a smoke run with fewer steps never takes part in a real choice)."""
        base = (self.task, self.method, self.setting, self.model, self.density)
        if self.protocol < 2:
            return base
        return (*base, self.protocol, self.data, self.train_size, self.steps)

    @property
    def stage(self) -> str:
        """Where the run falls in protocol 2's order (:data:`STAGES`)."""
        if self.task == "chat":
            return "decoder"
        return "full" if self.method == "full" else self.setting

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class PlanOptions:
    profile: Profile
    tasks: Sequence[str] = GLUE_TASKS
    methods: Sequence[str] | None = None
    """None: the profile's methods."""
    settings: Sequence[str] | None = None
    seeds: Sequence[int] | None = None
    density: float = 0.01
    data: str = "glue"
    sweep_density: bool = False
    decoder: bool = False
    decoder_data: str = "chitchat"
    steps: int | None = None
    """Override of the profile's steps (smoke checks); part of the run key, so it never mixes."""
    available: dict[str, int] = field(default_factory=dict)
    """Training rows available per task (caps the subsample when the data is smaller)."""
    max_grad_norm: float | None = None
    """Gradient clipping for every method; part of the run key (protocol 2: the protocol's, always)."""
    stages: Sequence[str] | None = None
    """Protocol 2: only these stages of :data:`STAGES` (None: all, in that order)."""

    @property
    def method_list(self) -> list[str]:
        return list(self.profile.methods if self.methods is None else self.methods)


def _settings_for(method: str, settings: Sequence[str]) -> list[str]:
    # Full fine-tuning trains every parameter whatever the setting: run it once, under "paper".
    if method == "full":
        return ["paper"] if settings else []
    return list(settings)


def _run(opts: PlanOptions, phase: str, task: str, method: str, setting: str, seed: int, lr: float,
         density: float) -> Run:
    p = opts.profile
    if task == "chat":
        size, length, batch, steps = p.chat_train, p.chat_seq_length, p.chat_batch, p.chat_steps
        model, data, every, patience = "smollm2-135m", opts.decoder_data, p.chat_eval_every, p.chat_patience
    else:
        size, length, batch, steps = p.train_size[task], p.max_seq_length[task], p.batch_size, p.cap(task)
        model, data, every, patience = "minilm-l6", opts.data, p.eval_every, p.patience
    if task in opts.available:
        size = min(size, opts.available[task])
    steps = opts.steps or steps
    if every is not None:
        every = min(every, steps)
    clip = p.max_grad_norm if p.protocol >= 2 else opts.max_grad_norm
    return Run(phase=phase, task=task, method=method, setting=setting, seed=seed, lr=lr, density=density,
               train_size=size, steps=steps, batch_size=batch, max_seq_length=length,
               calibration_steps=p.calibration_steps, data=data, model=model,
               val_fraction=p.val_fraction if task == "chat" else p.selection_fraction(task),
               max_grad_norm=clip, protocol=p.protocol, eval_every=every, patience=patience,
               lr_scheduler=p.lr_scheduler, warmup_ratio=p.warmup_ratio, weight_decay=p.weight_decay,
               heldout=p.chat_heldout if task == "chat" else None)


def _groups(opts: PlanOptions) -> list[tuple[str, str, str, float]]:
    """(task, method, setting, density) groups that get their own learning-rate selection."""
    settings = opts.settings or opts.profile.settings
    methods = opts.method_list
    if opts.profile.protocol >= 2:
        # Stage order (full FT first for the sanity bar, then paper, PEFT-pure, decoder); tasks inside a stage.
        stages = [s for s in STAGES if opts.stages is None or s in opts.stages]
        out = []
        for stage in stages:
            if stage == "decoder":
                if opts.decoder:
                    out += [("chat", m, "paper" if m == "full" else opts.profile.chat_setting, opts.density)
                            for m in opts.profile.chat_methods if opts.methods is None or m in opts.methods]
                continue
            for m in methods:
                for s in _settings_for(m, settings):
                    if ("full" if m == "full" else s) == stage:
                        out += [(t, m, s, opts.density) for t in opts.tasks]
        return out
    out = [(t, m, s, opts.density) for t in opts.tasks for m in methods for s in _settings_for(m, settings)]
    if opts.decoder:
        out += [("chat", m, opts.profile.chat_setting, opts.density) for m in opts.profile.chat_methods
                if m in methods]
    return out


def selection_runs(opts: PlanOptions) -> list[Run]:
    """Seed 0, every grid learning rate, validation split carved from the training subsample."""
    runs = []
    for task, method, setting, density in _groups(opts):
        grid = opts.profile.grid(task, setting)
        runs += [_run(opts, "select", task, method, setting, 0, lr, density) for lr in grid]
    return runs


def final_runs(opts: PlanOptions, chosen: dict[tuple, float]) -> list[Run]:
    """Every seed at the chosen learning rate; groups without a choice yet are left out.

    The density sweep (SparseGrad dynamic, paper setting) reuses the learning rate chosen at the default
    density; its default-density point is the main run itself (same key).
    """
    runs: list[Run] = []
    for task, method, setting, density in _groups(opts):
        lr = chosen.get(_run(opts, "select", task, method, setting, 0, 0.0, density).group)
        if lr is None:
            continue
        seeds = opts.seeds or (opts.profile.chat_seeds if task == "chat" else opts.profile.seeds)
        if opts.profile.protocol >= 2:
            # Same data, budget and seed: the seed-0 final run is the selection run at the chosen lr (reused).
            runs += [_run(opts, "select" if s == 0 else "final", task, method, setting, s, lr, density)
                     for s in seeds]
            continue
        runs += [_run(opts, "final", task, method, setting, s, lr, density) for s in seeds]
        if opts.sweep_density and task != "chat" and method == "sparsegrad" and setting == "paper":
            for d in SWEEP_DENSITIES:
                if not math.isclose(d, density):
                    runs += [_run(opts, "final", task, method, setting, s, lr, d) for s in seeds]
    return runs


def planned_final_count(opts: PlanOptions) -> int:
    """How many final runs there will be once every learning rate is chosen."""
    return len(final_runs(opts, {_run(opts, "select", *g[:3], 0, 0.0, g[3]).group: 1.0 for g in _groups(opts)}))


# ------------------------------------------------------------------------------------ method specs

def service_method(method: str, setting: str, density: float, calibration_steps: int) -> dict[str, Any]:
    """The same spec as the body of ``POST /v1/fine_tuning/jobs`` (``method``)."""
    kind = "sparsegrad" if method in SPARSEGRAD_VARIANTS else method
    body: dict[str, Any] = {"type": kind, "setting": setting}
    if kind == "sparsegrad":
        body["sparsegrad"] = {"density": density, "calibration_steps": calibration_steps,
                              **SPARSEGRAD_VARIANTS[method]}
    elif kind == "meprop":
        body["meprop"] = {"density": density}
    elif kind == "lora":
        body["sparsegrad"] = {"density": density}  # the rank is the equal-parameter one at this density
    return body


def hyperparameters(run: Any) -> dict[str, Any]:
    """Training arguments shared by the in-process and the service path."""
    args = {"learning_rate": run.lr, "batch_size": run.batch_size, "max_steps": run.steps,
            "max_seq_length": run.max_seq_length, "lr_scheduler": "constant", "group_by_length": True}
    if getattr(run, "max_grad_norm", None) is not None:
        args["max_grad_norm"] = run.max_grad_norm
    if getattr(run, "protocol", 1) >= 2:
        # Early stopping and the best-checkpoint restore are the harness's (quality_train.BestSelection): the
        # selection score is not always one library metric (MRPC: the mean of accuracy and F1).
        args.update(lr_scheduler=run.lr_scheduler, warmup_ratio=run.warmup_ratio, eval_every=run.eval_every,
                    group_by_length=True)
        if run.weight_decay is not None:
            args["weight_decay"] = run.weight_decay
    return args



# ------------------------------------------------------------------------------------ scoring and choice

def task_score(task: str, metrics: dict[str, Any]) -> float:
    """The number a run is judged by: SST-2 accuracy, MRPC mean(accuracy, F1), CoLA Matthews, chat -loss."""
    if task == "sst2":
        return float(metrics["eval_accuracy"])
    if task == "mrpc":
        return (float(metrics["eval_accuracy"]) + float(metrics["eval_f1"])) / 2
    if task == "cola":
        return float(metrics["eval_mcc"])
    return -float(metrics["eval_loss"])


def selection_score(row: dict[str, Any]) -> float:
    """What the learning-rate choice reads: protocol 2, the best selection-split score
    (``selection_metrics``) and never the dev ``metrics``; protocol 1, the select row's ``metrics`` (which
    were the validation split's). A diverged run (NaN, or no selection metrics) scores -inf."""
    run = Run.from_dict(row)
    metrics = row.get("selection_metrics") if run.protocol >= 2 else row.get("metrics")
    if not metrics or row.get("diverged"):
        return -math.inf
    try:
        score = task_score(run.task, metrics)
    except (KeyError, TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(score) else score


def choose_lrs(rows: Iterable[dict[str, Any]]) -> dict[tuple, float]:
    """Best learning rate per group from finished seed-0 ``select`` rows (ties: the smaller lr; NaN loses)."""
    best: dict[tuple, tuple[float, float]] = {}
    for row in rows:
        if row.get("phase") != "select" or row.get("seed", 0) != 0:
            continue
        run = Run.from_dict(row)
        score = selection_score(row)
        cur = best.get(run.group)
        if cur is None or score > cur[0] or (score == cur[0] and run.lr < cur[1]):
            best[run.group] = (score, run.lr)
    return {g: lr for g, (_, lr) in best.items()}


def settled_choices(rows: Iterable[dict[str, Any]]) -> dict[tuple, float]:
    """:func:`choose_lrs` less the groups of protocol 2 and later whose seed-0 selection runs do not cover their
    protocol's grid yet: what a report may show as chosen (smoke runs, with a cap of their own, are not checked)."""
    rows = list(rows)
    tried: dict[tuple, set[float]] = {}
    runs: dict[tuple, Run] = {}
    for row in rows:
        if row.get("phase") == "select" and row.get("seed", 0) == 0:
            run = Run.from_dict(row)
            tried.setdefault(run.group, set()).add(run.lr)
            runs[run.group] = run
    settled = {}
    for group, lr in choose_lrs(rows).items():
        run = runs[group]
        profile = PROFILES.get(f"v{run.protocol}")
        if profile is not None:
            cap = profile.chat_steps if run.task == "chat" else profile.cap(run.task)
            grid = profile.grid(run.task, "paper" if run.method == "full" else run.setting)
            if run.steps == cap and not set(grid) <= tried[group]:
                continue
        settled[group] = lr
    return settled


def chosen_for(opts: PlanOptions, rows: Iterable[dict[str, Any]]) -> dict[tuple, float]:
    """:func:`choose_lrs` for the plan's groups whose selection runs have all finished: a group with a failed or
    missing selection run gets no final runs until it is complete (a choice is never made on part of a grid)."""
    rows = list(rows)
    done = {r["key"] for r in rows}
    incomplete = {r.group for r in selection_runs(opts) if r.key not in done}
    return {g: lr for g, lr in choose_lrs(rows).items() if g not in incomplete}


def is_reported(row: dict[str, Any], chosen: dict[tuple, float]) -> bool:
    """Whether a finished row is one of the reported (final) runs: at its group's chosen learning rate, a
    ``final`` row, or under protocol 2 also the seed-0 selection run (which is that seed's final run)."""
    run = Run.from_dict(row)
    if chosen.get(run.group, run.lr) != run.lr:
        return False
    return run.phase == "final" or (run.protocol >= 2 and run.seed == 0 and run.group in chosen)


def sanity_bar(rows: Iterable[dict[str, Any]], version: int = CURRENT_PROTOCOL) -> dict[str, dict[str, Any]]:
    """A protocol's check of its own budget: full FT's reported dev metric (mean over the seeds there are) per
    task against the protocol file's ``sanity_bar``, from that version's rows only. ``ok`` is None while a task
    has no reported full-FT run."""
    rows = [r for r in rows if r.get("protocol", 1) == version]
    chosen = settled_choices(rows)
    out: dict[str, dict[str, Any]] = {}
    for task, bar in protocol(version)["sanity_bar"].items():
        ((metric, need),) = bar.items()
        got = [float(r["metrics"][metric]) for r in rows if r.get("task") == task and r.get("method") == "full"
               and is_reported(r, chosen)]
        mean = sum(got) / len(got) if got else None
        out[task] = {"metric": metric, "bar": need, "mean": mean, "n": len(got),
                     "ok": None if mean is None else mean >= need}
    return out


# --------------------------------------------------------------------------------------- time estimate

def _v2_step_s(run: Run) -> float:
    """Protocol 2: seconds per step from the protocol file's measured step times (``step_time_s``)."""
    st = protocol(run.protocol)["step_time_s"]
    if run.task == "chat":
        return float(st["decoder_batch4_len128"][run.method]) * run.batch_size * run.max_seq_length / (4 * 128)
    table = st["encoder_batch16_sst2"]["paper" if run.method == "full" else run.setting]
    return float(table[run.method]) * run.batch_size / 16 * float(st["encoder_task_factor"][run.task])


def estimate_seconds(run: Run, *, upper: bool = False) -> float:
    """Seconds for one run from measured step times, scaled by batch x length (see the constants).

    Protocol 2: ``upper`` — every run goes to the step cap; otherwise early stopping ends it at the
    protocol's ``expected_stop_fraction`` of the cap. Each evaluation is a forward pass over the selection
    split; the dev set (held-out chat) is evaluated once."""
    if run.protocol >= 2:
        step = _v2_step_s(run)
        steps = run.steps if upper else run.steps * float(protocol(run.protocol)["step_time_s"]["expected_stop_fraction"])
        per_row_fwd = step / run.batch_size / 3
        if run.task == "chat":
            sel_rows, dev_rows = run.train_size * run.val_fraction, run.heldout or 0
        else:
            sel_rows, dev_rows = run.train_size * run.val_fraction, DEV_SIZES[run.task]
        n_evals = steps / (run.eval_every or run.steps) if run.task != "chat" else steps / (run.eval_every or 1)
        calib = 1.3 * run.calibration_steps * step if run.method in SPARSEGRAD_VARIANTS else 0.0
        return RUN_OVERHEAD_S + calib + steps * step + (n_evals * sel_rows + dev_rows) * per_row_fwd
    if run.task == "chat":
        step = STEP_S_SMOLLM[run.method] * run.batch_size * run.max_seq_length / (8 * 256)
        eval_rows = run.train_size * run.val_fraction if run.phase == "select" else 100
    else:
        step = STEP_S_MINILM[run.method] * run.batch_size * run.max_seq_length / (32 * 64)
        eval_rows = run.train_size * run.val_fraction if run.phase == "select" else DEV_SIZES[run.task]
    if run.setting == "peft" and run.method != "full":
        step *= PEFT_FACTOR
    per_row_fwd = step / run.batch_size / 3  # a forward pass is about a third of a training step
    calib = 1.3 * run.calibration_steps * step if run.method in SPARSEGRAD_VARIANTS else 0.0
    return RUN_OVERHEAD_S + calib + run.steps * step + eval_rows * per_row_fwd


def measured_time_scale(rows: Iterable[dict[str, Any]], version: int) -> tuple[float, int] | None:
    """How much longer this log's finished runs of protocol ``version`` took than :func:`estimate_seconds`
    says for the steps they ran: ``(median of wall_s / estimate, runs)``, None before the first run.

    The estimate's step times were measured with one process on the whole machine; the ratio carries however
    the logged runs shared it (``torch_threads`` and the processes beside them)."""
    ratios = []
    for row in rows:
        if row.get("protocol") != version or not row.get("wall_s") or not row.get("steps_done"):
            continue
        run = replace(Run.from_dict(row), steps=int(row["steps_done"]))
        ratios.append(float(row["wall_s"]) / estimate_seconds(run, upper=True))
    return (statistics.median(ratios), len(ratios)) if ratios else None


def estimate_plan(opts: PlanOptions, *, upper: bool = False) -> tuple[int, int, float]:
    """(selection runs, final runs still to train, estimated seconds), final runs at a placeholder lr.

    Protocol 2's reused seed-0 finals are selection runs already and are not counted again."""
    sel = selection_runs(opts)
    keys = {r.key for r in sel}
    fin = [r for r in final_runs(opts, {r.group: r.lr for r in sel}) if r.key not in keys]
    return len(sel), len(fin), sum(estimate_seconds(r, upper=upper) for r in (*sel, *fin))


def runs_left(opts: PlanOptions, rows: list[dict[str, Any]]) -> tuple[int, list[Run]]:
    """(runs planned, the planned runs not in ``rows`` yet): selection runs, then each group's other seeds at its
    chosen learning rate, or at a placeholder rate where the group's grid has not finished (what is left to train
    does not depend on which rate wins)."""
    sel = selection_runs(opts)
    keys = {r.key for r in sel}
    lrs = {**{r.group: r.lr for r in sel}, **settled_choices(rows)}
    planned = [*sel, *(r for r in final_runs(opts, lrs) if r.key not in keys)]
    done = {row.get("key") for row in rows}
    return len(planned), [r for r in planned if r.key not in done]


# ------------------------------------------------------------------------------------ the results log

class RunLog:
    """``runs.jsonl``: one JSON line per finished run; failures go to ``errors.jsonl`` (retried next time)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / "runs.jsonl"
        self.errors = self.out / "errors.jsonl"

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill: the run is redone
                    continue
        return rows

    def done(self) -> set[str]:
        return {r["key"] for r in self.rows()}

    def append(self, run: Run, result: dict[str, Any]) -> dict[str, Any]:
        row = {**run.to_dict(), **result}
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:  # several plan processes may share one log: one locked write per row
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps(row, default=str) + "\n")
        return row

    def error(self, run: Run, message: str) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.errors, "a") as f:
            f.write(json.dumps({**run.to_dict(), "error": message}) + "\n")


def with_steps(opts: PlanOptions, steps: int | None) -> PlanOptions:
    return replace(opts, steps=steps)
