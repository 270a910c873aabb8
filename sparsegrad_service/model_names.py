"""Names of fine-tuned models and of their checkpoints, in OpenAI's format.

A fine-tuned model is ``ft:{base}:{org}:{suffix}:{job id}``: ``org`` is the organization id of the tenant whose
job made the model (``org-…``), ``suffix`` the job's ``suffix`` (empty when it has none, as OpenAI writes it:
``ft:minilm-l6:org-…::ftjob-…``) and the last part the job's id, so a name leads back to its job. ``base`` is
the root base model of the registry, also for a model trained from another fine-tuned model. A suffix may only
hold :data:`SUFFIX_CHARACTERS`, so the parts split on ``:`` again. Jobs that succeeded before this format keep
the name they were given (``{base}:ft:{suffix}:{job id}``); it also ends with the job id.

A checkpoint of a fine-tuned model is ``{fine-tuned model}:ckpt-step-{step}``, as OpenAI names them.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

SUFFIX_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")
"""What a job's ``suffix`` may contain: ASCII letters, digits, ``-``, ``_`` and ``.``."""

JOB_ID_PREFIX = "ftjob-"
"""How a fine-tuning job's id begins (``Job.id``)."""

_CHECKPOINT = re.compile(r"^(?P<model>.+):ckpt-step-(?P<step>[0-9]{1,10})$")


def fine_tuned_model_name(base: str, org_id: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{org_id}:{suffix or ''}:{job_id}"


def checkpoint_model_name(fine_tuned_model: str, step: int) -> str:
    """The name of the checkpoint at ``step`` of the fine-tuned model ``fine_tuned_model``."""
    return f"{fine_tuned_model}:ckpt-step-{step}"


@dataclass(frozen=True)
class ModelName:
    """A model name taken apart: the fine-tuned model it names (itself, or the model a checkpoint belongs to),
    that model's job id, and the checkpoint's step (None for the model itself)."""

    fine_tuned_model: str
    job_id: str
    step: int | None = None


def parse_model_name(name: str) -> ModelName | None:
    """``name`` as a fine-tuned model's or a checkpoint's name, or None when it is neither (a base model's name,
    or nothing): its last ``:`` part, once a checkpoint's ``:ckpt-step-{step}`` is taken off, is a job id."""
    step = None
    match = _CHECKPOINT.match(name)
    if match is not None:
        name, step = match["model"], int(match["step"])
    job_id = name.rpartition(":")[2]
    if ":" not in name or not job_id.startswith(JOB_ID_PREFIX):
        return None
    return ModelName(name, job_id, step)


def job_id_of(name: str) -> str:
    """The id of the job that made the fine-tuned model (or checkpoint) ``name``, in either format."""
    parsed = parse_model_name(name)
    return parsed.job_id if parsed is not None else name.rpartition(":")[2]
