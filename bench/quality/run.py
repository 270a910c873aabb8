"""Quality benchmark: SparseGrad vs LoRA, MeProp and full fine-tuning on GLUE (MiniLM-L6) and chat (SmolLM2).

    python bench/quality/run.py --profile quick --data-dir ../shared/data/glue
    python bench/quality/run.py --profile full --settings paper,peft --sweep-density --decoder
    python bench/quality/run.py --profile quick --service http://127.0.0.1:8000 --api-key sg-...
    python bench/quality/report.py --out bench/results/quality
    python bench/quality/run.py --profile v4 --data-dir ../shared/data/glue --decoder --out bench/results/quality_v4 --dry-run
    python bench/quality/run.py --profile v4 --data-dir ../shared/data/glue --stages full --out bench/results/quality_v4

Profile ``v4`` is protocol 4, the current one (``protocol_v4.json``, ``PROTOCOL.md``; ``v2`` and ``v3`` are its
archived predecessors): stages full, paper, peft, decoder in that order, each finished (selection, then the other seeds)
before the next, so the plan runs in resumable pieces. Several processes may share one ``--out`` (for example
one per ``--tasks`` with ``OMP_NUM_THREADS=1`` each): rows are appended under a lock.

The plan and protocol are in ``quality_plan``; each run is one ``train_one(run)`` (``quality_train``) or one
service job (``quality_service``). Finished runs are appended to ``<out>/runs.jsonl`` and skipped on a
restart. At the end ``report.py`` writes results.json, RESULTS_TABLE.md and quality.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality_plan as qp  # noqa: E402

Trainer = Callable[[list[qp.Run]], Iterator[tuple[qp.Run, dict[str, Any]]]]


def _csv(value: str | None, cast: Callable[[str], Any] = str) -> list[Any] | None:
    return None if value is None else [cast(v.strip()) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(qp.PROFILES), default="quick")
    p.add_argument("--data-dir", type=Path, default=None, help="GLUE folder (SST-2/, MRPC/, CoLA/); default: bundled samples")
    p.add_argument("--tasks", default=",".join(qp.GLUE_TASKS))
    p.add_argument("--methods", default=None, help="default: the profile's")
    p.add_argument("--stages", default=None, help=f"protocol 2 on: only these stages ({','.join(qp.STAGES)}; default all)")
    p.add_argument("--settings", default=None, help="paper,peft (default: the profile's)")
    p.add_argument("--seeds", default=None, help="final-phase seeds (default: the profile's, 0,1,2)")
    p.add_argument("--density", type=float, default=None, help="default: the profile's (0.01)")
    p.add_argument("--out", type=Path, default=Path("bench/results/quality"))
    p.add_argument("--sweep-density", action="store_true", help="SparseGrad dynamic at 0.5%%, 1%%, 2%%, 4%%")
    p.add_argument("--decoder", action="store_true", help="also SmolLM2-135M chat SFT (SparseGrad vs LoRA vs MeProp)")
    p.add_argument("--chat-source", default=None, help="chitchat-dataset wheel or dataset.json (default: the "
                   "installed package, else the bundled chat sample)")
    p.add_argument("--steps", type=int, default=None, help="override the profile's steps (smoke checks)")
    p.add_argument("--max-grad-norm", type=float, default=None, help="clip gradients at this norm in every run "
                   "(default: no clipping)")
    p.add_argument("--lr-grid", default=None, help="comma-separated learning rates replacing the profile's GLUE grid "
                   "(the same for every method)")
    p.add_argument("--service", default=None, help="service URL: submit the runs as jobs instead")
    p.add_argument("--api-key", default=os.environ.get("SPARSEGRAD_API_KEY"))
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, train nothing")
    p.add_argument("--no-report", action="store_true")
    return p.parse_args(argv)


def build_options(args: argparse.Namespace) -> qp.PlanOptions:
    from quality_data import chat_conversations, glue_files

    tasks = _csv(args.tasks) or []
    data = "bundled"
    if args.data_dir is not None and tasks:
        labels = {glue_files(t, args.data_dir)[2] for t in tasks}
        data = "glue" if labels == {"glue"} else "bundled"
        if labels != {"glue"}:
            print(f"warning: {args.data_dir} lacks some tasks; using the bundled samples for all", file=sys.stderr)
    if args.data_dir is not None and data == "bundled":
        args.data_dir = None
    available = {}
    if data == "bundled":
        from sparsegrad_data import sample_path

        available = {t: len(sample_path(f"{t}_train").read_text().splitlines()) - (t != "cola") for t in tasks}
    decoder_data = "chitchat"
    if args.decoder:
        convs, decoder_data = chat_conversations(args.chat_source)
        available["chat"] = len(convs) - min(300, max(20, len(convs) // 4))
    version = qp.PROFILES[args.profile].protocol
    if args.decoder and version >= 2 and args.steps is None and decoder_data != qp.protocol(version)["decoder"]["data"]:
        raise SystemExit(f"protocol {version}'s decoder trains on {qp.protocol(version)['decoder']['data_source']}; found "
                         f"{decoder_data} ({len(convs)} conversations): pip install chitchat-dataset or give "
                         "--chat-source")
    settings, seeds = _csv(args.settings), _csv(args.seeds, int)
    stages = _csv(args.stages)
    for name, given, allowed in (("task", tasks, qp.GLUE_TASKS), ("method", _csv(args.methods) or [], qp.METHODS),
                                 ("setting", settings or [], qp.SETTINGS), ("stage", stages or [], qp.STAGES)):
        bad = [v for v in given if v not in allowed]
        if bad:
            raise SystemExit(f"unknown {name} {', '.join(bad)}; choose from {', '.join(allowed)}")
    profile = qp.PROFILES[args.profile]
    if profile.protocol >= 2 and args.steps is None and (args.lr_grid or args.max_grad_norm is not None
                                                         or args.density not in (None, profile.density)):
        raise SystemExit(f"--lr-grid, --max-grad-norm and --density would change protocol {profile.protocol}; bump the "
                         "protocol instead (PROTOCOL.md), or add --steps for a smoke check")
    if args.lr_grid:
        grid = tuple(sorted(_csv(args.lr_grid, float) or []))
        if not grid or any(not 0 < lr < 1 for lr in grid):
            raise SystemExit(f"--lr-grid needs learning rates in (0, 1), got {args.lr_grid!r}")
        # one grid for every setting, the encoder and the decoder
        profile = dataclasses.replace(profile, lr_grid=grid, setting_lr_grid=None,
                                      **({"chat_lr_grid": grid} if profile.protocol >= 2 else {}))
    return qp.PlanOptions(
        profile=profile, tasks=tasks, methods=_csv(args.methods), settings=settings, stages=stages,
        seeds=seeds, density=profile.density if args.density is None else args.density, data=data, sweep_density=args.sweep_density, decoder=args.decoder,
        decoder_data=decoder_data, steps=args.steps, available=available, max_grad_norm=args.max_grad_norm,
    )


def inprocess_trainer(args: argparse.Namespace) -> Trainer:
    from quality_train import train_one

    def run_all(runs: list[qp.Run]) -> Iterator[tuple[qp.Run, dict[str, Any]]]:
        for run in runs:
            yield run, train_one(run, data_dir=args.data_dir, chat_source=args.chat_source,
                                 workdir=args.out / "data")
    return run_all


def execute(runs: list[qp.Run], log: qp.RunLog, trainer: Trainer, label: str, scale: float = 1.0) -> int:
    """Train the runs that ``log`` does not have yet; returns how many failed. ``scale``: the logged runs'
    measured time over the estimate (:func:`quality_plan.measured_time_scale`), applied to the estimate."""
    done = log.done()
    todo = [r for r in runs if r.key not in done]
    print(f"[{label}] {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to go "
          f"(~{sum(map(qp.estimate_seconds, todo)) * scale / 60:.0f} min estimated)", flush=True)
    failures = 0
    it: Iterable[tuple[qp.Run, dict[str, Any]]] = trainer(todo)
    t0 = time.perf_counter()
    i = 0
    while True:
        try:
            run, result = next(it)  # type: ignore[call-overload]
        except StopIteration:
            break
        except Exception as exc:  # one failed run must not stop the plan; it is retried next time
            failures += 1
            run = todo[i]
            log.error(run, "".join(traceback.format_exception_only(exc)).strip())
            print(f"  FAILED {run.key}: {exc}", file=sys.stderr, flush=True)
            i += 1
            it = trainer(todo[i:])
            continue
        i += 1
        row = log.append(run, result)
        score = qp.task_score(run.task, row["metrics"])
        stop = "" if run.protocol < 2 else (f" (selection {qp.selection_score(row):.4f}, best step "
                                            f"{row.get('best_step')} of {row.get('steps_done')})")
        print(f"  [{i}/{len(todo)}] {run.task} {run.method} {run.setting} d={run.density:g} lr={run.lr:g} "
              f"seed={run.seed}: score {score:.4f}{stop}, {row.get('s_per_step')} s/step, "
              f"{time.perf_counter() - t0:.0f} s elapsed", flush=True)
    return failures


def print_staged_plan(opts: qp.PlanOptions, measured: tuple[float, int] | None = None,
                      rows: list[dict[str, Any]] | None = None) -> None:
    """A staged protocol's plan per stage: run counts and the expected / upper-bound hours; with ``measured``
    (:func:`quality_plan.measured_time_scale`) also the total at the speed of the runs already logged; with the
    logged ``rows``, how many runs each stage has done and what is left."""
    p = qp.protocol(opts.profile.protocol)
    prof = opts.profile
    parts = []
    if opts.tasks:
        split = ", ".join(f"{t} {prof.selection_fraction(t):g}" for t in opts.tasks)
        caps = ", ".join(f"{t} {prof.cap(t)}" for t in opts.tasks)
        parts.append(f"selection split {split} of the pool, eval every {prof.eval_every} steps, patience "
                     f"{prof.patience}, cap {caps} steps")
    if opts.decoder:
        parts.append(f"decoder: {prof.chat_train} training conversations (selection split "
                     f"{prof.val_fraction:g} of them), {prof.chat_heldout} held-out ones reported, eval every "
                     f"{prof.chat_eval_every} steps, patience {prof.chat_patience}, cap {prof.chat_steps} steps")
    print(f"protocol {p['version']} ({p['date']}): {'; '.join(parts)}; {prof.lr_scheduler} decay after "
          f"{prof.warmup_ratio:g} warmup, clip {prof.max_grad_norm:g}, weight decay {prof.weight_decay:g}")
    total = [0, 0, 0.0, 0.0]
    todo: list[qp.Run] = []
    for stage in qp.STAGES:
        if opts.stages is not None and stage not in opts.stages:
            continue
        piece = dataclasses.replace(opts, stages=[stage])
        n_sel, n_fin, est = qp.estimate_plan(piece)
        up = qp.estimate_plan(piece, upper=True)[2]
        if n_sel == 0:
            continue
        planned, left = qp.runs_left(piece, rows or [])
        print(f"  stage {stage}: {n_sel} selection + {n_fin} more final runs; ~{est / 3600:.1f} h expected, "
              f"{up / 3600:.1f} h if every run reaches the cap; {planned - len(left)} of {planned} done")
        total = [total[0] + n_sel, total[1] + n_fin, total[2] + est, total[3] + up]
        todo += left
    print(f"  total: {total[0] + total[1]} runs; ~{total[2] / 3600:.1f} h expected (early stop at "
          f"{p['step_time_s']['expected_stop_fraction']:g} of the cap), {total[3] / 3600:.1f} h upper bound, "
          f"2 CPU cores", flush=True)
    scale, n = measured or (1.0, 0)
    if measured is not None:
        print(f"  at the measured speed of the {n} runs in runs.jsonl ({scale:.1f}x the estimate per run): "
              f"~{total[2] * scale / 3600:.1f} h of run time expected, {total[3] * scale / 3600:.1f} h upper "
              f"bound; processes on separate tasks run side by side", flush=True)
    if rows:
        left = [sum(qp.estimate_seconds(r, upper=u) for r in todo) * scale / 3600 for u in (False, True)]
        print(f"  left: {len(todo)} of {total[0] + total[1]} runs, ~{left[0]:.1f} h expected, {left[1]:.1f} h upper "
              f"bound{' at the measured speed' if measured else ''}", flush=True)


def sanity_bar_holds(rows: list[dict[str, Any]], tasks: Iterable[str], version: int) -> bool:
    """Print the protocol's sanity bar (full FT on dev); False when a task of this plan has runs below it."""
    ok = True
    for task, bar in qp.sanity_bar(rows, version).items():
        if task not in tasks or bar["mean"] is None:
            continue
        print(f"sanity bar {task}: full FT {bar['metric']} {bar['mean']:.4f} over {bar['n']} seed(s), needs "
              f">= {bar['bar']:g}: {'ok' if bar['ok'] else 'FAILS'}", flush=True)
        ok = ok and bool(bar["ok"])
    return ok


def print_compare_links(url: str, rows: list[dict[str, Any]]) -> None:
    """The dashboard's compare page for the final jobs of each (task, setting, seed) that ran as jobs."""
    groups: dict[tuple[str, str, int], list[str]] = {}
    for row in rows:
        if row.get("phase") == "final" and row.get("job_id"):
            groups.setdefault((row["task"], row["setting"], row["seed"]), []).append(str(row["job_id"]))
    for (task, setting, seed), ids in sorted(groups.items()):
        print(f"compare {task} ({setting}, seed {seed}): {url.rstrip('/')}/#/compare?ids={','.join(ids)}")


def main(argv: list[str] | None = None, trainer: Trainer | None = None) -> int:
    args = parse_args(argv)
    opts = build_options(args)
    n_sel, n_fin, est = qp.estimate_plan(opts)
    settings = opts.settings or opts.profile.settings
    grids = "; ".join(f"{s} {list(opts.profile.grid('sst2', s))}" for s in settings) \
        if opts.profile.setting_lr_grid else str(list(opts.profile.lr_grid))
    print(f"profile {opts.profile.name}: tasks {','.join(opts.tasks)}; methods {','.join(opts.method_list)}; settings "
          f"{','.join(opts.settings or opts.profile.settings)}; data {opts.data}"
          f"{' + decoder (' + opts.decoder_data + ')' if opts.decoder else ''}")
    print(f"plan: {n_sel} selection runs (lr grid {grids}, seed 0, validation split "
          f"{opts.profile.val_fraction:g} of train) + {n_fin} final runs = {n_sel + n_fin} runs; "
          f"estimated {est / 60:.0f} min on 2 CPU cores (from measured step times)", flush=True)
    log = qp.RunLog(args.out)
    measured = qp.measured_time_scale(log.rows(), opts.profile.protocol) if opts.profile.protocol >= 2 else None
    if opts.profile.protocol >= 2:
        print_staged_plan(opts, measured, log.rows())
    if args.dry_run:
        return 0
    if trainer is None:
        if args.service:
            if opts.profile.protocol >= 2:
                raise SystemExit(f"protocol {opts.profile.protocol} runs in process only: its early stopping and "
                                 "best-weights restore are the harness's (quality_train.BestSelection), not a job's")
            from quality_service import ServiceRunner

            if not args.api_key:
                raise SystemExit("--service needs --api-key (or SPARSEGRAD_API_KEY)")
            runner = ServiceRunner(args.service, args.api_key, args.out, args.data_dir, args.chat_source)
            trainer = runner.run_all
        else:
            trainer = inprocess_trainer(args)
    failures = 0
    # Protocol 2 on: stage by stage (full FT first: the sanity bar), each stage's finals before the next stage.
    pieces = ([dataclasses.replace(opts, stages=[s]) for s in qp.STAGES if opts.stages is None or s in opts.stages]
              if opts.profile.protocol >= 2 else [opts])
    for piece in pieces:
        label = "" if piece is opts else f"{piece.stages[0]} "  # type: ignore[index]
        scale = measured[0] if measured is not None else 1.0
        failures += execute(qp.selection_runs(piece), log, trainer, f"{label}select", scale)
        chosen = qp.chosen_for(piece, log.rows())
        failures += execute(qp.final_runs(piece, chosen), log, trainer, f"{label}final", scale)
        if piece.stages == ["full"] and not sanity_bar_holds(log.rows(), piece.tasks, opts.profile.protocol):
            print("the sanity bar fails: the budget is too small; bump the protocol (PROTOCOL.md) before "
                  "running the other methods", file=sys.stderr)
            return 2
    if args.service:
        print_compare_links(args.service, log.rows())
    if not args.no_report:
        import report

        report.write_report(args.out)
    if failures:
        print(f"{failures} run(s) failed (see {log.errors}); run again to retry them", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
