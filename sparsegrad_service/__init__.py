"""The service layer shared by the API and the workers: settings, SQL models and sessions, the queue,
the artifact store, the model registry, API keys and job lifecycle rules. Torch-free (the API image has no
torch), and it knows neither ``api`` nor ``worker``."""
