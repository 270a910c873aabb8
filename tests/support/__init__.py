"""What the whole test suite shares, each written once.

* :mod:`support.endpoints`: the local PostgreSQL and Redis servers, a free TCP port, waiting until a
  server answers ``/readyz`` and polling for any condition.
* :mod:`support.inference_deployment`: the API and an inference server serving fine-tuned models (the session's
  ``inference_deployment`` fixture).
* :mod:`support.sse`: reading a Server-Sent Events stream (with the client package's parser).
* :mod:`support.tiny`: tiny random transformers (BERT, RoBERTa, GPT-2, LLaMA), saving one as a model
  folder, and chat records.

``tests/`` is on ``sys.path`` (pytest puts it there for ``tests/conftest.py``; the service benchmarks add
it), so test modules import ``from support.tiny import tiny_bert``.
"""
