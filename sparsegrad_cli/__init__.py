"""The ``sparsegrad`` command line: run the service on this machine (``up``, ``worker``, ``migrate``,
``keys``), submit and follow jobs through :class:`sparsegrad_client.SparseGradClient` (``submit``, ``jobs``,
``watch``, ``download``...), the demo, and the offline ``train``/``merge`` of ``sparsegrad_core``.

:mod:`.app` assembles the commands; :mod:`.launcher` starts the API (uvicorn) and the Celery workers as
child processes by module path, so this package imports neither ``api`` nor ``worker`` (an import-linter
contract). Torch is imported only by the commands that train or evaluate here.
"""
