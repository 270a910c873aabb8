"""Request and response bodies of the REST API (pydantic), named like the resources: ``FileObject``,
``JobCreate``, ``JobPublic``, ``JobsPublic``...

The public contract of ``/v1``: the API validates requests with these models and answers with them, and
``sparsegrad_client`` parses the answers into them. Torch-free and free of the SQL layer, so that a client
imports them with pydantic alone."""

from .common import ErrorDetail, ErrorResponse
from .defaults import JobDefaults
from .files import FileDeleted, FileObject, FilesPublic
from .insight import JobInsight, MethodInsight
from .job_create import Hyperparameters, JobCreate, MethodIn, TaskIn
from .jobs import (
    ArtifactPublic,
    ArtifactsPublic,
    CheckpointPublic,
    CheckpointsPublic,
    JobDeleted,
    JobError,
    JobEventPublic,
    JobEventsPublic,
    JobPublic,
    JobsPublic,
    MetricPointPublic,
    MetricsPublic,
)
from .models import ModelDeleted, ModelObject, ModelsPublic
from .storage import StorageCategory, StorageUsage

__all__ = [
    "ArtifactPublic",
    "ArtifactsPublic",
    "CheckpointPublic",
    "CheckpointsPublic",
    "ErrorDetail",
    "ErrorResponse",
    "FileDeleted",
    "FileObject",
    "FilesPublic",
    "Hyperparameters",
    "JobCreate",
    "JobDefaults",
    "JobDeleted",
    "JobError",
    "JobEventPublic",
    "JobEventsPublic",
    "JobInsight",
    "JobPublic",
    "JobsPublic",
    "MethodIn",
    "MethodInsight",
    "MetricPointPublic",
    "MetricsPublic",
    "ModelDeleted",
    "ModelObject",
    "ModelsPublic",
    "StorageCategory",
    "StorageUsage",
    "TaskIn",
]
