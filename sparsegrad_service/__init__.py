"""The service layer shared by the API and the workers: settings, SQL models and sessions, the queue,
the artifact store, the model registry, API keys, job transitions, the worker's job store and the reaper,
the typed job spec, and the REST API's request/response models (:mod:`.schemas`, which ``sparsegrad_client``
also reads). Torch-free (the API image has no torch), and it knows neither ``api`` nor ``worker``. This
``__init__`` imports nothing, so the client's ``sparsegrad_service.schemas`` comes without SQLAlchemy."""
