"""The training step captured in a CUDA graph and replayed (``TrainingArguments.cuda_graphs``).

A GPU step of a small model is bound by kernel launches, not arithmetic: replaying a captured graph launches the
whole step (forward, backward, clipping, both optimizers) at once. ``bench/gpu_step.py --cuda-graphs`` measures the
gain per method; this module brings it to the :class:`~sparsegrad_core.training.Trainer`.

What a replay needs, and how the trainer gives it:

- **Fixed shapes.** Batches are padded to ``max_seq_length``, and only a step of ``batch_size`` rows in each of
  ``gradient_accumulation_steps`` micro-batches is captured; another (an epoch's shorter last batch or last step)
  runs eagerly between replays.
- **State that exists before the capture.** The first :data:`WARMUP_STEPS` steps after a start, a resume or a
  re-calibration run eagerly (on a side stream, as torch asks): they create the optimizer moments and every cache
  that a capture must not allocate. Re-calibration (new bases, fresh sparse moments) drops the graph.
- **Values that change between replays live in device tensors changed in place**: the learning rate
  (``build_optimizer(capturable=True)``), the step counts used for bias correction, the micro-batches' loss weights
  and the inputs.
- **No host synchronisation inside the step**: SparseGrad's step has none (``tests/core/test_optim.py`` runs it
  under ``torch.cuda.set_sync_debug_mode("error")``). A step that cannot be captured (a model whose forward reads a
  value back, say) fails its capture: the run then trains eagerly, and :attr:`StepGraph.failed` says why.
- **Memory**: the graph keeps its step's working memory reserved; an eager step between replays needs its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

WARMUP_STEPS = 3
"""Eager steps before a capture, after a start, a resume or a re-calibration (torch's examples warm up with 3)."""

Batches = list[dict[str, torch.Tensor]]
StepWork = Callable[[Batches, list[Any]], Any]
"""``work(batches, weights)``: one step's forward, backward and optimizer step on device tensors, the micro-batches'
loss weights numbers (eager) or 0-dim device tensors (captured); returns the step's outputs (tensors)."""


def _shape(batches: Batches) -> tuple[tuple[tuple[str, tuple[int, ...], torch.dtype], ...], ...]:
    return tuple(tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(b.items())) for b in batches)


class StepGraph:
    """Runs a training step's ``work`` eagerly for the first :data:`WARMUP_STEPS` calls, then captures it on the
    next ``regular`` call (the shape most steps have) and replays it from then on; a call of another shape runs
    eagerly.

    The outputs of a replay are the tensors the capture returned, overwritten by each replay: read them before the
    next step, and return from ``work`` every tensor the caller reads after a step (a replay runs no Python, so
    host-side references that ``work`` sets point at the capture's tensors only until an eager step replaces
    them). The parameters' gradients must be None before every call (``zero_grad(set_to_none=True)`` after each
    step): the captured backward then writes them afresh.
    """

    def __init__(self, work: StepWork, device: torch.device, clear: Callable[[], None]) -> None:
        """``clear`` undoes what a failed capture left behind before the step runs eagerly (the trainer's
        ``zero_grad(set_to_none=True)``: gradients and selections the capture set but never computed)."""
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device; the model is on {device}")
        self.work, self.device, self.clear = work, device, clear
        self.eager_steps = 0
        self.replays = 0
        self.captures = 0
        self.failed: str | None = None
        """Why the capture failed (every step since ran eagerly); None while capturing works."""
        self._side: torch.cuda.Stream | None = None
        """The one side stream of the warm-up steps (the allocator caches blocks per stream: a fresh stream per step
        would strand each step's temporaries in its own cache)."""
        self.graph: torch.cuda.CUDAGraph | None = None
        self._shape: Any = None
        self._inputs: Batches = []
        self._weights: list[torch.Tensor] = []
        self._outputs: Any = None

    def __call__(self, batches: Batches, weights: list[float], regular: bool = True) -> Any:
        if self.failed is not None:
            return self.work(batches, weights)
        shape = _shape(batches)
        if self.graph is not None:
            if shape != self._shape:
                return self.work(batches, weights)
            self._copy_in(batches, weights)
            self.graph.replay()
            self.replays += 1
            return self._outputs
        if self.eager_steps < WARMUP_STEPS or not regular:
            self.eager_steps += 1
            return self._on_side_stream(lambda: self.work(batches, weights))
        return self._capture(batches, weights, shape)

    def reset(self) -> None:
        """Drop the graph (its memory goes back to the allocator); the next steps warm up and capture again."""
        self.graph, self._shape, self._inputs, self._weights, self._outputs = None, None, [], [], None
        self.eager_steps = 0

    def _on_side_stream(self, run: Callable[[], Any]) -> Any:
        current = torch.cuda.current_stream(self.device)
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        side = self._side
        side.wait_stream(current)
        with torch.cuda.stream(side):
            out = run()
        current.wait_stream(side)
        return out

    def _capture(self, batches: Batches, weights: list[float], shape: Any) -> Any:
        self._inputs = [{k: v.clone() for k, v in b.items()} for b in batches]
        self._weights = [torch.tensor(float(w), device=self.device) for w in weights]
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: a worker's other threads (heartbeat, metrics) may use CUDA while this thread captures.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._outputs = self.work(self._inputs, list(self._weights))
        except RuntimeError as exc:  # the capture recorded nothing that ran: train this step, and the rest, eagerly
            self.reset()
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            self.clear()
            return self.work(batches, weights)
        self.graph, self._shape = graph, shape
        self.captures += 1
        graph.replay()  # the capture only recorded this step: run it
        self.replays += 1
        return self._outputs

    def _copy_in(self, batches: Batches, weights: list[float]) -> None:
        for static, batch in zip(self._inputs, batches, strict=True):
            for k, v in batch.items():
                static[k].copy_(v, non_blocking=True)
        for static_w, w in zip(self._weights, weights, strict=True):
            static_w.fill_(float(w))
