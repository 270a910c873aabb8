"""The job contract every layer shares: method names, settings and every default of a fine-tuning job,
each written once (:mod:`sparsegrad_contract.defaults`).

Torch-free and free of every other package of this project, so that the library (``sparsegrad_core``),
the service layer, the API, the worker and the client CLI can all import it.
"""
