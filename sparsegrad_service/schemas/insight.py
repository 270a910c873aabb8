"""What a job's method shows of itself (``GET /v1/fine_tuning/jobs/{id}/insight``): SparseGrad's calibration
spectra and chosen block sizes, and the trained model's reference outputs. Too large for the job object
(the spectra of one MiniLM job are about 100 KB), so the job's ``summary`` leaves them out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class MethodInsight(BaseModel):
    """The parts of a job's stored results that only this route shows (each null until the job has it)."""

    spectra: dict[str, dict[str, list[float]]] | None = Field(
        default=None, description="SparseGrad, once calibrated: per projection kind (`intermediate.dense`...), the "
        "eigenvalues of the calibration gradients' Gram matrices, `out` (G·Gᵀ) and `in` (Gᵀ·G), largest first.")
    block: dict[str, Any] | None = Field(
        default=None, description="SparseGrad with block selection: the rule and, per projection kind, the block "
        "chosen at calibration (`r_out`, `r_in`, `kept_share` of the top-k gradient energy, `cost`...).")
    probe: dict[str, Any] | None = Field(
        default=None, description="Once succeeded (classification and regression): the trained model's logits on a "
        "few training examples (`texts`, `text_pairs`, `max_seq_length`, `logits`), to check a downloaded adapter.")


INSIGHT_KEYS: tuple[str, ...] = tuple(MethodInsight.model_fields)
"""The keys of a job's stored results (``Job.summary``) that the job object leaves out."""


class JobInsight(MethodInsight):
    object: Literal["fine_tuning.job.insight"] = "fine_tuning.job.insight"
    fine_tuning_job_id: str
    method: str = Field(description="The job's method type (`sparsegrad`, `lora`, `meprop`, `full`).")
