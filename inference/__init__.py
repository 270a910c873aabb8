"""The inference server: OpenAI-compatible generation and classification on base and fine-tuned models.

Its own process family behind HTTP, as the training workers are behind the queue: the API authenticates the
tenant, resolves the model name to what to load (:class:`~sparsegrad_service.schemas.inference.ServedModel`: a
registered base model and the job's stored artifacts with their SHA-256) and forwards the request here with the
worker token. The server fetches and verifies the artifacts, loads them with ``sparsegrad_core``'s loaders and
answers through a :class:`~inference.backend.Backend`:

* :class:`~inference.transformers_backend.TransformersBackend` (CPU, the default): base models loaded once,
  fine-tuned models merged into copies of them, the least recently used evicted per base model;
* :class:`~inference.vllm_backend.VllmBackend` (GPU): a vLLM engine per base model, block SparseGrad adapters as
  LoRA adapters hot-loaded by name, other fine-tuned models served merged.

Run it with ``python -m inference`` or ``sparsegrad inference`` (``sparsegrad up`` starts it).
"""
