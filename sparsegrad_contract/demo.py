"""The demo's recipe, written once: ``sparsegrad demo`` submits it as a job to the embedded service, ``sparsegrad
demo --offline`` runs it in-process. Everything not named here is the job default (:mod:`.defaults`)."""

from __future__ import annotations

MODEL = "minilm-l6"
GLUE_TASK = "sst2"
"""The bundled SST-2 sample (4,000 train / 872 dev sentences)."""
TEXT_COLUMN = "sentence"
LABEL_COLUMN = "label"
# Larger batches of shorter rows than a job's defaults: SST-2 sentences are short.
BATCH_SIZE = 32
MAX_SEQ_LENGTH = 64
MAX_STEPS = 200
"""1.6 epochs of the sample at batch 32, with the job defaults (the exact selection in the PEFT-pure setting): on 2
quiet cores of an AMD EPYC, 57 s of training and 93 s in all under the worker's bf16 autocast (79 s and 122 s in
float32), dev accuracy 0.47 → 0.83 (2026-12-05)."""
