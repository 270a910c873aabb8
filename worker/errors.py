"""Expected job failures: problems with what the user submitted, reported with an error code."""

from __future__ import annotations


class JobError(Exception):
    """The job cannot run as submitted. ``code`` and ``param`` go into ``Job.error`` next to the message
    (``invalid_training_file``, ``invalid_validation_file``, ``model_not_available``,
    ``invalid_hyperparameters``)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    def as_error(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "param": self.param}
