"""The quality benchmark's plan, resumability and report aggregation (no training: a fake train_one)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

QUALITY = Path(__file__).resolve().parents[2] / "bench" / "quality"
sys.path.insert(0, str(QUALITY))

import quality_plan as qp  # noqa: E402
import report  # noqa: E402
import run as quality_run  # noqa: E402


def _opts(**kw):
    return qp.PlanOptions(profile=qp.PROFILES[kw.pop("profile", "quick")], **kw)


def test_quick_plan_size_and_budget() -> None:
    opts = _opts()
    sel = qp.selection_runs(opts)
    # 3 tasks x (5 methods + full once) x 2 learning rates, seed 0, paper setting
    assert len(sel) == 3 * 6 * 2
    assert {r.phase for r in sel} == {"select"} and {r.seed for r in sel} == {0}
    assert {r.lr for r in sel} == set(qp.PROFILES["quick"].lr_grid)
    assert qp.planned_final_count(opts) == 3 * 6 * 3
    n_sel, n_fin, est = qp.estimate_plan(opts)
    assert (n_sel, n_fin) == (36, 54)
    assert est < 75 * 60, "the quick profile (six methods) must fit in about an hour"
    assert all(r.train_size == qp.PROFILES["quick"].train_size[r.task] for r in sel)


def test_full_profile_has_both_settings_and_full_runs_once() -> None:
    sel = qp.selection_runs(_opts(profile="full"))
    assert {r.setting for r in sel if r.method == "lora"} == {"paper", "peft"}
    assert {r.setting for r in sel if r.method == "full"} == {"paper"}
    assert len(sel) == 3 * (5 * 2 + 1) * 4


def test_final_runs_use_chosen_lr_and_sweep_shares_default_point() -> None:
    opts = _opts(tasks=["sst2"], methods=["sparsegrad"], sweep_density=True)
    sel = qp.selection_runs(opts)
    assert qp.final_runs(opts, {}) == []  # nothing chosen yet
    chosen = {sel[0].group: 4e-4}
    fin = qp.final_runs(opts, chosen)
    assert {r.lr for r in fin} == {4e-4}
    assert sorted({r.density for r in fin}) == list(qp.SWEEP_DENSITIES)
    assert len(fin) == len({r.key for r in fin}) == 4 * 3


def test_available_rows_cap_subsample_and_steps_override() -> None:
    opts = _opts(tasks=["mrpc"], methods=["lora"], available={"mrpc": 800}, steps=10)
    run = qp.selection_runs(opts)[0]
    assert run.train_size == 800 and run.steps == 10
    assert "steps=10" in run.key


def test_decoder_runs() -> None:
    opts = _opts(tasks=[], decoder=True)
    sel = qp.selection_runs(opts)
    assert {r.method for r in sel} == set(qp.DECODER_METHODS)
    assert {r.model for r in sel} == {"smollm2-135m"} and {r.task for r in sel} == {"chat"}


def _metrics(task: str, score: float) -> dict[str, float]:
    return {"eval_accuracy": score, "eval_f1": score, "eval_mcc": score, "eval_loss": 1 - score}


def fake_trainer(calls: list[str], fail_key: str | None = None):
    def run_all(runs):
        for r in runs:
            if r.key == fail_key:
                raise RuntimeError("boom")
            calls.append(r.key)
            yield r, {"metrics": _metrics(r.task, 0.5 + r.lr * 100 + r.seed * 0.01), "s_per_step": 0.1,
                      "trainable_params": 1000}
    return run_all


def test_resumable_restart_skips_finished_runs(tmp_path: Path) -> None:
    argv = ["--profile", "quick", "--tasks", "sst2", "--methods", "sparsegrad,lora", "--out", str(tmp_path),
            "--no-report"]
    calls: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(calls)) == 0
    rows = qp.RunLog(tmp_path).rows()
    assert len(rows) == len(calls) == 2 * 2 + 2 * 3
    finals = [r for r in rows if r["phase"] == "final"]
    assert {r["lr"] for r in finals} == {4e-4}  # the better grid point under the fake
    again: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(again)) == 0
    assert again == [] and len(qp.RunLog(tmp_path).rows()) == len(rows)


def test_failed_run_is_logged_and_retried(tmp_path: Path) -> None:
    argv = ["--tasks", "sst2", "--methods", "lora", "--out", str(tmp_path), "--no-report"]
    opts = quality_run.build_options(quality_run.parse_args(argv))
    bad = qp.selection_runs(opts)[0].key
    calls: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(calls, fail_key=bad)) == 1
    assert bad not in qp.RunLog(tmp_path).done()
    assert json.loads((tmp_path / "errors.jsonl").read_text().splitlines()[0])["key"] == bad
    retry: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(retry)) == 0
    assert retry[0] == bad


def test_truncated_line_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text('{"key": "a", "phase": "final"}\n{"key": "b", "pha')
    assert qp.RunLog(tmp_path).done() == {"a"}


def _row(task, method, seed, score, phase="final", lr=1e-4, density=0.01, setting="paper"):
    run = qp.Run(phase=phase, task=task, method=method, setting=setting, seed=seed, lr=lr, density=density,
                 train_size=100, steps=10, batch_size=16, max_seq_length=64, calibration_steps=10,
                 val_fraction=0.2, data="glue")
    return {**run.to_dict(), "metrics": _metrics(task, score), "s_per_step": 0.2, "trainable_params": 50}


def test_report_aggregation(tmp_path: Path) -> None:
    rows = [_row("sst2", "lora", 0, 0.7, "select", lr=1e-4), _row("sst2", "lora", 0, 0.8, "select", lr=4e-4)]
    scores = {"sst2": [0.80, 0.82, 0.84], "mrpc": [0.70, 0.72, 0.74], "cola": [0.30, 0.32, 0.34]}
    rows += [_row(t, "lora", s, v, lr=4e-4) for t, vals in scores.items() for s, v in enumerate(vals)]
    agg = report.aggregate(rows)
    sst2 = next(e for e in agg["results"] if e["task"] == "sst2")
    assert sst2["metrics"]["eval_accuracy"]["mean"] == pytest.approx(0.82)
    assert sst2["metrics"]["eval_accuracy"]["std"] == pytest.approx(0.02)  # sample std
    assert sst2["lr"] == 4e-4 and sst2["seeds"] == [0, 1, 2]
    assert sst2["seed_scores"] == pytest.approx(scores["sst2"])  # the plot's dots, in seed order
    (glue,) = agg["glue_average"]
    assert glue["mean"] == pytest.approx((0.82 + 0.72 + 0.32) / 3) and glue["n"] == 3
    assert [s["chosen"] for s in agg["selection"]] == [False, True]
    md = report.markdown(agg)
    assert "82.0 ± 2.0" in md and "| sst2 | lora | paper | 0.0001: 70.0, 0.0004: 80.0 | 0.0004 |" in md
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report.write_report(tmp_path)
    assert (tmp_path / "quality.png").stat().st_size > 1000
    assert not (tmp_path / "quality_decoder.png").exists()  # no decoder rows, no decoder plot
    assert json.loads((tmp_path / "results.json").read_text())["n_rows"] == len(rows)


def test_report_shows_the_decoder_loss_and_plots_it(tmp_path: Path) -> None:
    losses = {"lora": [3.40, 3.44, 3.42], "sparsegrad": [3.38, 3.39, 3.43]}
    rows = [_row("chat", m, 0, 0.0, "select", lr=1e-3, setting="peft") for m in losses]
    rows += [_row("chat", m, s, 1 - loss, lr=1e-3, setting="peft") for m, ls in losses.items()
             for s, loss in enumerate(ls)]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    agg = report.write_report(tmp_path)
    md = (tmp_path / "RESULTS_TABLE.md").read_text()
    assert "| sparsegrad | peft | 50 | 3.400 ± 0.026 | 0.001 |" in md
    assert "| chat | sparsegrad | peft | 0.001: 1.000 | 0.001 |" in md  # the grid's selection loss, not ×100
    pair = next(p for p in agg["paired"] if p["method"] == "sparsegrad" and p["task"] == "chat")
    assert pair["diffs"] == pytest.approx([0.02, 0.05, -0.01])  # -loss: positive where SparseGrad's loss is lower
    assert (tmp_path / "quality_decoder.png").stat().st_size > 1000


def test_choose_lrs_ties_and_nan() -> None:
    rows = [_row("cola", "full", 0, 0.3, "select", lr=4e-4), _row("cola", "full", 0, 0.3, "select", lr=1e-4),
            _row("sst2", "full", 0, math.nan, "select", lr=1e-4), _row("sst2", "full", 0, 0.6, "select", lr=4e-4)]
    chosen = qp.choose_lrs(rows)
    assert chosen[("cola", "full", "paper", "minilm-l6", 0.01)] == 1e-4
    assert chosen[("sst2", "full", "paper", "minilm-l6", 0.01)] == 4e-4


def test_report_leaves_out_finals_at_an_lr_no_longer_chosen() -> None:
    """The grid grew (2e-4 added) and 2e-4 won: the finals run earlier at 4e-4 are not averaged in."""
    rows = [_row("sst2", "lora", 0, v, "select", lr=lr) for lr, v in ((1e-4, 0.7), (2e-4, 0.9), (4e-4, 0.8))]
    rows += [_row("sst2", "lora", s, 0.5, lr=4e-4) for s in range(3)]  # chosen before 2e-4 existed
    rows += [_row("sst2", "lora", s, 0.9, lr=2e-4) for s in range(3)]
    agg = report.aggregate(rows)
    (sst2,) = agg["results"]
    assert sst2["lr"] == 2e-4 and sst2["seeds"] == [0, 1, 2]
    assert sst2["metrics"]["eval_accuracy"]["mean"] == pytest.approx(0.9)
    (glue,) = agg["glue_average"]
    assert glue["mean"] == pytest.approx(0.9) and glue["n"] == 3


# ---------------------------------------------------------------------- protocol 2 and later (current: 3)

CURRENT = f"v{qp.CURRENT_PROTOCOL}"


def _v2(**kw):
    """Options of the current protocol (the staged, early-stopping protocol that version 2 introduced)."""
    return qp.PlanOptions(profile=qp.PROFILES[CURRENT], **kw)


def _grid(setting: str = "peft") -> list[float]:
    return list(qp.protocol()["lr_grid"][setting])


@pytest.mark.parametrize("version", range(2, qp.CURRENT_PROTOCOL + 1))
def test_each_profile_is_its_protocol_file(version: int) -> None:
    p, prof = qp.protocol(version), qp.PROFILES[f"v{version}"]
    assert prof.protocol == p["version"] == version and prof.name == f"v{version}"
    assert prof.seeds == tuple(p["seeds"])
    enc = p["encoder"]
    for task, spec in enc["tasks"].items():
        assert prof.cap(task) == spec.get("max_steps", enc.get("max_steps"))
        assert (prof.train_size[task], prof.max_seq_length[task]) == (spec["train_size"], spec["max_seq_length"])
        for setting in enc["settings"]:
            grid = p["lr_grid"][setting] if isinstance(p["lr_grid"], dict) else p["lr_grid"]
            assert prof.grid(task, setting) == tuple(grid)
    assert prof.eval_every == enc["eval_every"]
    assert prof.patience == enc["patience"] and prof.val_fraction == enc["selection_fraction"]
    assert (prof.lr_scheduler, prof.warmup_ratio, prof.max_grad_norm, prof.weight_decay) == tuple(
        p["schedule"][k] for k in ("lr_scheduler", "warmup_ratio", "max_grad_norm", "weight_decay"))
    # every run carries the schedule and its task's cap into the library's TrainingArguments
    opts = qp.PlanOptions(profile=prof, methods=["lora"], settings=["peft"])
    for run in qp.selection_runs(opts):
        hp = qp.hyperparameters(run)
        assert hp["lr_scheduler"] == "linear" and hp["warmup_ratio"] == p["schedule"]["warmup_ratio"]
        assert hp["max_grad_norm"] == 1.0 and hp["weight_decay"] == 0.01 and hp["eval_every"] == 100
        assert hp["max_steps"] == prof.cap(run.task) and hp["batch_size"] == 32
        assert run.key.startswith(f"v{version}|")


def test_protocol_4_budget_per_task_and_grid_per_setting() -> None:
    prof = qp.PROFILES["v4"]
    sel = qp.selection_runs(qp.PlanOptions(profile=prof, decoder=True))
    caps = {r.task: r.steps for r in sel if r.task != "chat"}
    assert caps == {"sst2": 1000, "mrpc": 600, "cola": 800}
    assert {r.task: r.val_fraction for r in sel} == {"sst2": 0.05, "mrpc": 0.1, "cola": 0.1, "chat": 0.1}
    grids: dict[tuple[str, str], set[float]] = {}
    for r in sel:
        grids.setdefault((r.task, r.setting), set()).add(r.lr)
    # within a setting the grid is the same for every task and method (full FT and the decoder's full FT: paper)
    assert {frozenset(g) for (_, s), g in grids.items() if s == "paper"} == {frozenset(_grid("paper"))}
    assert {frozenset(g) for (_, s), g in grids.items() if s == "peft"} == {frozenset(_grid("peft"))}
    assert {r.lr for r in sel if r.method == "full"} == set(_grid("paper"))
    assert [qp.PROFILES[f"v{v}"].train_size["sst2"] for v in (2, 3, 4)] == [4000, 30000, 20000]
    # a version's runs never share a key or a learning-rate group with another version's
    v3 = qp.selection_runs(qp.PlanOptions(profile=qp.PROFILES["v3"], decoder=True))
    assert not {r.key for r in v3} & {r.key for r in sel} and not {r.group for r in v3} & {r.group for r in sel}


def test_v2_plan_count_and_order() -> None:
    opts = _v2(decoder=True)
    enc, dec = qp.protocol()["encoder"], qp.protocol()["decoder"]
    n_lr, n_tasks = len(_grid("paper")), len(enc["tasks"])
    assert len(_grid("peft")) == n_lr
    enc_groups = n_tasks * (1 + (len(enc["methods"]) - 1) * len(enc["settings"]))  # full FT once
    sel = qp.selection_runs(opts)
    assert len(sel) == (enc_groups + len(dec["methods"])) * n_lr
    # order: full FT first (the sanity bar), then paper, then peft, then the decoder
    stages = [r.stage for r in sel]
    assert stages == sorted(stages, key=qp.STAGES.index)
    assert stages[0] == "full" and set(stages) == set(qp.STAGES)
    assert {r.method for r in sel if r.stage == "full"} == {"full"}
    assert {r.setting for r in sel if r.stage == "peft"} == {"peft"}
    assert {r.model for r in sel if r.stage == "decoder"} == {"smollm2-135m"}
    # finals: seed 0 is the selection run (reused), seeds 1 and 2 are new
    n_sel, n_fin, _ = qp.estimate_plan(opts)
    assert (n_sel, n_fin) == (len(sel), len(sel) // n_lr * 2)
    assert qp.estimate_plan(opts, upper=True)[2] > qp.estimate_plan(opts)[2] > 0
    only_full = qp.selection_runs(_v2(stages=["full"]))
    assert {r.method for r in only_full} == {"full"} and len(only_full) == n_tasks * n_lr


def test_v2_key_has_the_version_and_never_matches_protocol_1() -> None:
    v2 = qp.selection_runs(_v2(tasks=["sst2"], methods=["sparsegrad"]))
    assert all(r.key.startswith(f"{CURRENT}|") for r in v2)
    v1 = qp.selection_runs(_opts(profile="full", tasks=["sst2"], methods=["sparsegrad"]))
    assert not {r.key for r in v1} & {r.key for r in v2}
    # a protocol-1 row in the same log never takes part in a protocol-2 choice
    row_v1 = {**v1[0].to_dict(), "metrics": _metrics("sst2", 0.99)}
    assert v2[0].group not in qp.choose_lrs([row_v1])
    # rows written before protocol 2 existed have no "protocol" field: they read as protocol 1
    old = {k: v for k, v in row_v1.items() if k not in {"protocol", "eval_every", "patience", "heldout"}}
    assert qp.Run.from_dict(old).protocol == 1 and qp.Run.from_dict(old).key == v1[0].key


def _v2_row(run: qp.Run, sel: float, dev: float) -> dict:
    return {**run.to_dict(), "selection_metrics": _metrics(run.task, sel), "metrics": _metrics(run.task, dev)}


def test_v2_lr_choice_reads_the_selection_split_only() -> None:
    sel = qp.selection_runs(_v2(tasks=["sst2"], methods=["lora"], settings=["peft"]))
    assert [r.lr for r in sel] == _grid("peft") == [1e-4, 3e-4, 1e-3]
    # 3e-4 is best on the selection split; 1e-3 has by far the best dev score: the dev score must not matter
    scores = {1e-4: (0.80, 0.80), 3e-4: (0.90, 0.70), 1e-3: (0.60, 0.99)}
    rows = [_v2_row(r, *scores[r.lr]) for r in sel]
    assert qp.choose_lrs(rows) == {sel[0].group: 3e-4}
    flipped = [{**row, "metrics": _metrics("sst2", 1.0 - row["metrics"]["eval_accuracy"])} for row in rows]
    assert qp.choose_lrs(flipped) == {sel[0].group: 3e-4}
    # a diverged run loses, whatever its dev metric; a tie goes to the smaller lr
    rows[1] = {**rows[1], "selection_metrics": _metrics("sst2", math.nan)}
    assert qp.choose_lrs(rows) == {sel[0].group: 1e-4}
    rows[2] = {**rows[2], "selection_metrics": _metrics("sst2", 0.80)}
    assert qp.choose_lrs(rows) == {sel[0].group: 1e-4}
    rows[0] = {**rows[0], "diverged": True, "selection_metrics": None}
    assert qp.choose_lrs(rows) == {sel[0].group: 1e-3}
    # a seed-1 row (or a final row) never takes part in the choice
    extra = qp.final_runs(_v2(tasks=["sst2"], methods=["lora"], settings=["peft"]), {sel[0].group: 1e-4})[1]
    assert qp.choose_lrs([*rows, _v2_row(extra, 1.0, 1.0)]) == {sel[0].group: 1e-3}


def test_no_choice_is_made_on_part_of_a_grid() -> None:
    opts = _v2(tasks=["sst2"], methods=["lora"], settings=["peft"])
    sel = qp.selection_runs(opts)
    rows = [_v2_row(r, 0.5 + r.lr, 0.5) for r in sel]
    assert qp.chosen_for(opts, rows) == {sel[0].group: 1e-3}
    # the best learning rate's run failed (no row): nothing is chosen, so no final run starts
    assert qp.choose_lrs(rows[:-1]) == {sel[0].group: 3e-4}
    assert qp.chosen_for(opts, rows[:-1]) == {}
    assert qp.final_runs(opts, qp.chosen_for(opts, rows[:-1])) == []


def test_v2_seed0_final_is_the_selection_run(tmp_path: Path) -> None:
    opts = _v2(tasks=["sst2"], methods=["lora"], settings=["peft"])
    sel = qp.selection_runs(opts)
    fin = qp.final_runs(opts, {sel[0].group: 3e-4})
    assert [r.seed for r in fin] == [0, 1, 2] and {r.lr for r in fin} == {3e-4}
    assert fin[0] == next(r for r in sel if r.lr == 3e-4) and fin[0].key in {r.key for r in sel}
    assert fin[1].key not in {r.key for r in sel} and fin[1].phase == "final"
    # end to end through run.main with a fake trainer: 4 selection runs + 2 new seeds, seed 0 trained once
    calls: list[str] = []

    def fake(runs):
        for r in runs:
            calls.append(r.key)
            s = {1e-4: 0.6, 3e-4: 0.7, 1e-3: 0.4}[r.lr]
            yield r, {"selection_metrics": _metrics(r.task, s), "metrics": _metrics(r.task, s - 0.1 + r.seed / 100),
                      "s_per_step": 0.1, "trainable_params": 10}
    argv = ["--profile", CURRENT, "--tasks", "sst2", "--methods", "lora", "--settings", "peft", "--out", str(tmp_path),
            "--no-report"]
    assert quality_run.main(argv, trainer=fake) == 0
    assert len(calls) == len(set(calls)) == 3 + 2
    rows = qp.RunLog(tmp_path).rows()
    chosen = qp.choose_lrs(rows)
    reported = sorted((r["seed"], r["lr"]) for r in rows if qp.is_reported(r, chosen))
    assert reported == [(0, 3e-4), (1, 3e-4), (2, 3e-4)]
    (entry,) = report.aggregate(rows)["results"]
    assert entry["seeds"] == [0, 1, 2] and entry["lr"] == 3e-4
    assert entry["metrics"]["eval_accuracy"]["mean"] == pytest.approx(0.61)
    again: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(again)) == 0 and again == []


def test_v2_selection_split_is_disjoint_fixed_and_stratified() -> None:
    import quality_data

    opts = _v2(tasks=["sst2"], data="bundled", methods=["lora", "sparsegrad"], available={"sst2": 400})
    runs = qp.selection_runs(opts) + qp.final_runs(opts, {g: 1e-4 for g in {r.group for r in qp.selection_runs(opts)}})
    assert len({(r.method, r.seed, r.lr) for r in runs}) >= 6
    splits = [quality_data.protocol_datasets(r, None, None, Path("unused")) for r in runs]
    def key(ds):
        return [(e.text, e.label) for e in ds.examples]

    train0, sel0, dev0 = (key(d) for d in splits[0])
    for train, selection, dev in splits[1:]:  # the same rows for every method, seed and learning rate
        assert key(train) == train0 and key(selection) == sel0 and key(dev) == dev0
    pool = quality_data.stratified_subsample(quality_data._load_glue("sst2", None)[0], runs[0].train_size)
    assert sorted(train0 + sel0) == sorted((e.text, e.label) for e in pool.examples)  # a partition of the pool
    assert len(sel0) == round(len(pool.examples) * qp.PROFILES[CURRENT].selection_fraction("sst2"))
    idx_train = {id(e) for e in splits[0][0].examples}
    assert not any(id(e) in idx_train for e in splits[0][1].examples)
    labels = [e.label for e in pool.examples]
    share = sum(1 for _, lab in sel0 if lab == labels[0]) / len(sel0)
    assert share == pytest.approx(labels.count(labels[0]) / len(labels), abs=0.02)  # stratified by label
    assert not set(sel0) & set(dev0)


def test_v2_sanity_bar_stops_the_plan_after_full_ft(tmp_path: Path) -> None:
    bar = qp.protocol()["sanity_bar"]["sst2"]["eval_accuracy"]

    def trainer(dev: float):
        def run_all(runs):
            for r in runs:
                yield r, {"selection_metrics": _metrics(r.task, 0.5 + r.lr), "metrics": _metrics(r.task, dev),
                          "s_per_step": 0.1, "trainable_params": 10}
        return run_all
    argv = ["--profile", CURRENT, "--tasks", "sst2", "--methods", "full,lora", "--out", str(tmp_path), "--no-report"]
    assert quality_run.main(argv, trainer=trainer(bar - 0.05)) == 2  # below the bar: nothing after full FT
    rows = qp.RunLog(tmp_path).rows()
    assert {r["method"] for r in rows} == {"full"} and len(rows) == len(_grid("paper")) + 2
    assert qp.sanity_bar(rows)["sst2"]["ok"] is False
    ok_dir = tmp_path / "ok"
    assert quality_run.main([*argv[:-3], "--out", str(ok_dir), "--no-report"], trainer=trainer(bar + 0.01)) == 0
    ok_rows = qp.RunLog(ok_dir).rows()
    assert qp.sanity_bar(ok_rows)["sst2"]["ok"] is True and {r["method"] for r in ok_rows} == {"full", "lora"}


def test_v2_protocol_cannot_be_changed_from_the_command_line_and_smokes_never_mix() -> None:
    with pytest.raises(SystemExit, match="bump the protocol"):
        quality_run.build_options(quality_run.parse_args(["--profile", CURRENT, "--lr-grid", "1e-2"]))
    with pytest.raises(SystemExit, match="bump the protocol"):
        quality_run.build_options(quality_run.parse_args(["--profile", CURRENT, "--max-grad-norm", "5"]))
    real = qp.selection_runs(_v2(tasks=["sst2"], methods=["lora"], settings=["peft"]))[0]
    smoke = qp.selection_runs(_v2(tasks=["sst2"], methods=["lora"], settings=["peft"], steps=6))[0]
    assert smoke.eval_every == 6 and smoke.key != real.key and smoke.group != real.group
    assert qp.choose_lrs([_v2_row(smoke, 0.9, 0.9)]).get(real.group) is None


def test_protocol_md_quotes_the_plan_file() -> None:
    """Every value PROTOCOL.md's tables give next to a plan-file key is that key's value (one source of truth)."""
    import re

    text = (QUALITY / "PROTOCOL.md").read_text()
    assert f"version {qp.CURRENT_PROTOCOL} (2026-12-03)" in text.splitlines()[0] and "bump the version" in text
    assert qp.protocol()["date"] == "2026-12-03"

    def lookup(path: str):
        node = qp.protocol()
        for part in path.split("."):
            node = node[part]
        return node

    def flat(v):
        if isinstance(v, dict | list | tuple):
            return [x for item in (v.values() if isinstance(v, dict) else v) for x in flat(item)]
        return [v]

    def numbers(cell: str) -> list[float]:
        return [float(x) for x in re.findall(r"(?<![\w.-])\d+(?:\.\d+)?(?:e-?\d+)?", cell)]

    checked = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[3].startswith("`"):
            continue
        keys = re.findall(r"`([\w.\-]+)`", cells[3])
        values = [x for k in keys for x in flat(lookup(k))]
        want_numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        assert numbers(cells[2].replace("SST-2", "").replace("CoLA", "").replace("MRPC", "")) == want_numbers, line
        for word in (v for v in values if isinstance(v, str) and " " not in v):
            assert word in cells[2], line
        checked += 1
    assert checked >= 20


def test_report_pairs_each_seed_with_lora_full_ft_and_the_exact_method(tmp_path: Path) -> None:
    dev = {("full", "paper"): [0.90, 0.91, 0.92], ("lora", "peft"): [0.85, 0.87, 0.86],
           ("sparsegrad", "peft"): [0.86, 0.86, 0.90], ("sparsegrad-recal", "peft"): [0.88, 0.85, 0.90]}

    def trainer(runs):
        for r in runs:
            yield r, {"selection_metrics": _metrics(r.task, 0.5 + r.lr), "s_per_step": 0.1, "trainable_params": 10,
                      "metrics": _metrics(r.task, dev[(r.method, r.setting)][r.seed])}
    for methods, settings in (("full", "paper"), ("lora,sparsegrad,sparsegrad-recal", "peft")):
        argv = ["--profile", CURRENT, "--tasks", "sst2", "--methods", methods, "--settings", settings,
                "--out", str(tmp_path), "--no-report"]
        assert quality_run.main(argv, trainer=trainer) == 0
    agg = report.aggregate(qp.RunLog(tmp_path).rows())
    pairs = {(p["task"], p["method"], p["reference"]): p for p in agg["paired"]}
    vs_lora, vs_full = pairs[("sst2", "sparsegrad", "lora")], pairs[("sst2", "sparsegrad", "full")]
    assert vs_lora["seeds"] == [0, 1, 2] and vs_lora["diffs"] == pytest.approx([0.01, -0.01, 0.04])
    assert vs_lora["mean"] == pytest.approx(0.04 / 3) and vs_lora["std"] == pytest.approx(0.025166, abs=1e-5)
    assert vs_full["diffs"] == pytest.approx([-0.04, -0.05, -0.02])
    assert pairs[("sst2", "lora", "full")]["diffs"] == pytest.approx([-0.05, -0.04, -0.06])
    assert ("sst2", "lora", "lora") not in pairs and ("sst2", "full", "full") not in pairs
    # SparseGrad's variants are also paired with the exact method; nothing else is
    assert pairs[("sst2", "sparsegrad-recal", "sparsegrad")]["diffs"] == pytest.approx([0.02, -0.01, 0.0])
    assert {k for k in pairs if k[2] == "sparsegrad"} == {("sst2", "sparsegrad-recal", "sparsegrad")}
    text = report.markdown(agg)
    assert "| sparsegrad | peft | +1.3 ± 2.5 (n=3: +1.0, -1.0, +4.0) |" in text
    assert "| sparsegrad | peft | -3.7 ± 1.5 (n=3: -4.0, -5.0, -2.0) |" in text
    against_exact = text.split("### against SparseGrad exact")[1]
    assert "| sparsegrad-recal | peft | +0.3 ± 1.5 (n=3: +2.0, -1.0, +0.0) |" in against_exact
    assert "| full | 91.0 ± 1.0 (" in text and "| (paper only) |" in text  # the table of every cell
    assert "paper, BERT-base (Table 4) | 82.5 | 81.6 | 82.6 | 82.1 |" in text


def test_the_report_shows_no_choice_from_part_of_a_grid_and_no_std_from_one_seed(tmp_path: Path) -> None:
    def trainer(runs):
        for r in runs:
            yield r, {"selection_metrics": _metrics(r.task, 0.5 + r.lr), "s_per_step": 0.1, "trainable_params": 10,
                      "metrics": _metrics(r.task, 0.8)}
    argv = ["--profile", CURRENT, "--tasks", "sst2", "--methods", "lora", "--settings", "peft", "--out", str(tmp_path),
            "--no-report"]
    assert quality_run.main(argv, trainer=trainer) == 0
    rows = qp.RunLog(tmp_path).rows()
    seed0 = [r for r in rows if r["seed"] == 0]
    best = max(seed0, key=lambda r: r["lr"])
    # the grid's best learning rate has not run yet: no choice, nothing reported (not the best of the rest)
    partial = [r for r in seed0 if r is not best]
    assert qp.choose_lrs(partial) and not qp.settled_choices(partial)
    assert report.aggregate(partial)["results"] == []
    # the whole grid at seed 0 only: reported, with no standard deviation from one seed
    (entry,) = report.aggregate(seed0)["results"]
    assert entry["lr"] == best["lr"] and entry["seeds"] == [0]
    assert "| lora | 10 | 80.0 (n=1) |" in report.markdown(report.aggregate(seed0))


def test_the_estimate_scales_to_the_logged_runs_measured_time(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dataclasses import replace

    opts = _v2(tasks=["sst2"], methods=["lora", "sparsegrad"], settings=["peft"])
    sel = qp.selection_runs(opts)
    assert qp.measured_time_scale([], qp.CURRENT_PROTOCOL) is None

    def logged(run: qp.Run, steps_done: int, factor: float) -> dict:
        expected = qp.estimate_seconds(replace(run, steps=steps_done), upper=True)
        return {**_v2_row(run, 0.5, 0.5), "steps_done": steps_done, "wall_s": factor * expected}

    rows = [logged(sel[0], 300, 2.0), logged(sel[1], run_steps := sel[1].steps, 3.0), logged(sel[3], 100, 5.0)]
    assert run_steps > 300
    older = {**logged(sel[2], 200, 50.0), "protocol": qp.CURRENT_PROTOCOL - 1}  # another protocol: not counted
    assert qp.measured_time_scale([*rows, older], qp.CURRENT_PROTOCOL) == pytest.approx((3.0, 3))
    # run.py prints the plan's total at that speed too
    for row in rows:
        with open(tmp_path / "runs.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    argv = ["--profile", CURRENT, "--tasks", "sst2", "--methods", "lora,sparsegrad", "--settings", "peft",
            "--out", str(tmp_path), "--dry-run"]
    assert quality_run.main(argv) == 0
    out = capsys.readouterr().out
    total = float(out.split("total: ")[1].split("~")[1].split(" h")[0])
    measured = float(out.split("at the measured speed of the 3 runs in runs.jsonl (3.0x the estimate per run): ~")[1]
                     .split(" h")[0])
    assert measured == pytest.approx(3 * total, abs=0.15)


def test_the_dry_run_says_what_is_done_and_what_is_left(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--profile", CURRENT, "--tasks", "sst2", "--methods", "lora,sparsegrad", "--settings", "peft",
            "--out", str(tmp_path), "--dry-run"]
    sel = qp.selection_runs(quality_run.build_options(quality_run.parse_args(argv)))
    assert quality_run.main(argv) == 0
    first = capsys.readouterr().out
    assert "; 0 of 10 done" in first and "left:" not in first  # nothing logged yet: the plan is the estimate
    # LoRA's whole grid (1e-3 best on the selection split) and one of SparseGrad's rates: 4 of 10 runs
    lora = [r for r in sel if r.method == "lora"]
    rows = [_v2_row(r, 0.5 + r.lr, 0.8) for r in lora] + [_v2_row(next(r for r in sel if r.method == "sparsegrad"),
                                                                   0.5, 0.8)]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert quality_run.main(argv) == 0
    out = capsys.readouterr().out
    assert "; 4 of 10 done" in out and "left: 6 of 10 runs, ~" in out
    left = qp.runs_left(quality_run.build_options(quality_run.parse_args(argv)), rows)[1]
    # LoRA's other seeds run at its chosen rate; SparseGrad's two other rates and, at a rate still to be chosen,
    # its two other seeds
    assert sorted((r.method, r.phase, r.seed, r.lr) for r in left if r.method == "lora") == [
        ("lora", "final", 1, 1e-3), ("lora", "final", 2, 1e-3)]
    assert sum(r.method == "sparsegrad" for r in left) == 4


def test_beside_the_paper_names_the_tasks_of_a_partial_average() -> None:
    """A GLUE average over fewer tasks than another method's is labelled, never set beside it as if comparable."""
    ms = {"mean": 0.8, "std": 0.01, "n": 3}
    agg = {"glue_average": [{"method": "full", "setting": "paper", "tasks": ["cola", "mrpc", "sst2"], **ms},
                            {"method": "sparsegrad", "setting": "paper", "tasks": ["mrpc", "sst2"], **ms}],
           "results": []}
    (line,) = [row for row in report.paper_markdown(agg) if row.startswith("| this run")]
    assert line == "| this run, MiniLM-L6 | 80.0 ± 1.0 | – | 80.0 ± 1.0 (only mrpc, sst2) | – |"


def test_the_report_counts_runs_that_stopped_early_and_runs_best_at_the_cap() -> None:
    rows = [{**_row("cola", "lora", s, 0.3), "best_step": best, "early_stopped": stopped}
            for s, (best, stopped) in enumerate([(10, False), (6, True), (8, False)])]
    rows += [{**_row("sst2", "lora", 0, 0.8), "best_step": 4, "early_stopped": True}, _row("mrpc", "lora", 0, 0.7)]
    agg = report.aggregate(rows)
    assert agg["convergence"] == [
        {"task": "cola", "runs": 3, "cap": 10, "early_stopped": 1, "best_at_cap": 1},
        {"task": "sst2", "runs": 1, "cap": 10, "early_stopped": 1, "best_at_cap": 0}]  # mrpc: no best_step, not counted
    assert "| cola | 3 | 10 | 1 | 1 |" in report.markdown(agg)
