"""Parse and validate fine-tuning datasets (JSONL, CSV, TSV) without importing torch.

Typical use::

    from sparsegrad_data import glue_mapping, load_dataset, sample_path

    task, mapping = glue_mapping("sst2")
    train = load_dataset(sample_path("sst2_train"), task, mapping)
    dev = load_dataset(sample_path("sst2_dev"), task, mapping, label_names=train.label_names)

Every problem in a file is reported at once, with its line and field, in a DatasetError.
"""

from .dataset import Dataset, HoldOut, hold_out
from .formats import detect_format
from .glue import glue_mapping
from .issues import DatasetError, DatasetIssue
from .labels import infer_task_type
from .loader import load_dataset, parse_dataset_bytes
from .sample_files import sample_path
from .schema import ColumnMapping, DatasetFormat, Example, TaskType

__all__ = [
    "ColumnMapping",
    "Dataset",
    "DatasetError",
    "DatasetFormat",
    "DatasetIssue",
    "Example",
    "HoldOut",
    "TaskType",
    "detect_format",
    "glue_mapping",
    "hold_out",
    "infer_task_type",
    "load_dataset",
    "parse_dataset_bytes",
    "sample_path",
]
