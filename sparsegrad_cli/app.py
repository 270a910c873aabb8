"""The ``sparsegrad`` command: assembles the service commands (``up``, ``keys``, ``migrate``, ``worker``, ``inference``),
the job commands over the REST client (``submit``, ``jobs``, ``watch``, ``download``, ``webhooks``, ...), the demo, and
the offline ``train``/``merge`` of ``sparsegrad_core.cli`` (imported only when they run, so that the
service commands start without torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparsegrad_contract import demo as demo_recipe

from . import job_commands, service_commands, submit, webhook_commands

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="SparseGrad fine-tuning: run the service (`up`), submit and follow jobs, or train offline.",
)

app.command(rich_help_panel="Service")(service_commands.up)
app.command(rich_help_panel="Service")(service_commands.migrate)
app.command(rich_help_panel="Service")(service_commands.worker)
app.command(rich_help_panel="Service")(service_commands.inference)
app.add_typer(service_commands.keys_app, name="keys", rich_help_panel="Service")
app.command(rich_help_panel="Jobs")(submit.submit)
app.add_typer(job_commands.jobs_app, name="jobs", rich_help_panel="Jobs")
app.add_typer(webhook_commands.webhooks_app, name="webhooks", rich_help_panel="Jobs")
for command in (job_commands.watch, job_commands.download, job_commands.cancel, job_commands.pause,
                job_commands.resume, job_commands.models):
    app.command(rich_help_panel="Jobs")(command)

FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _run_core(command: str, args: list[str]) -> None:
    from sparsegrad_core.cli import app as core_app

    core_app(args=[command, *args], prog_name="sparsegrad")


@app.command(context_settings=FORWARD, add_help_option=False, rich_help_panel="Offline")
def train(ctx: typer.Context) -> None:
    """Fine-tune a model on a dataset file on this machine, without the service (`sparsegrad train --help`)."""
    _run_core("train", ctx.args)


@app.command(context_settings=FORWARD, add_help_option=False, rich_help_panel="Offline")
def merge(ctx: typer.Context) -> None:
    """Merge an adapter into its base model (`sparsegrad merge --help`)."""
    _run_core("merge", ctx.args)


@app.command(rich_help_panel="Offline")
def demo(
    port: Annotated[int, typer.Option(help="Port of the demo service.")] = 8321,
    data_dir: Annotated[Path, typer.Option(help="Data folder of the demo service.")] = Path("runs/demo-service"),
    max_steps: Annotated[int, typer.Option(help=f"Optimizer steps (batch {demo_recipe.BATCH_SIZE}).")] = demo_recipe.MAX_STEPS,
    offline: Annotated[bool, typer.Option(help="Train in this process with sparsegrad_core, without the service.")] = False,
) -> None:
    """Fine-tune MiniLM-L6 on the bundled SST-2 sample with SparseGrad through the embedded service
    (REST API + worker), then load the downloaded adapter and print dev accuracy before and after."""
    if offline:
        _run_core("demo", ["--max-steps", str(max_steps)])
        return
    from .demo import run_service_demo, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            run_service_demo(port, data_dir, max_steps)
    except KeyboardInterrupt:
        typer.echo("demo interrupted", err=True)
        raise typer.Exit(130) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
