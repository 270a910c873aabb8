"""Names of fine-tuned models, in OpenAI's format: ``ft:{base}:{org}:{suffix}:{job id}``.

``org`` is the organization id of the tenant whose job made the model (``org-…``), ``suffix`` the job's
``suffix`` (empty when it has none, as OpenAI writes it: ``ft:minilm-l6:org-…::ftjob-…``) and the last
part the job's id, so a name leads back to its job. A suffix may only hold :data:`SUFFIX_CHARACTERS`, so the
parts split on ``:`` again. Jobs that succeeded before this format keep the name they were given
(``{base}:ft:{suffix}:{job id}``); it also ends with the job id.
"""

from __future__ import annotations

import string

SUFFIX_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")
"""What a job's ``suffix`` may contain: ASCII letters, digits, ``-``, ``_`` and ``.``."""


def fine_tuned_model_name(base: str, org_id: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{org_id}:{suffix or ''}:{job_id}"


def job_id_of(name: str) -> str:
    """The id of the job that made the fine-tuned model ``name`` (its last ``:`` part), in either format."""
    return name.rpartition(":")[2]
