"""Datasets: read user files in any common layout, validate, normalise and check them.

Public API: `read_dataset` / `load_dataset` (schemas), `check_dataset` (check),
`find_duplicates` (dedup) and `file_sha256` (io).
"""

from tunesmith.data.check import CheckReport, check_dataset
from tunesmith.data.dedup import find_duplicates, find_overlap
from tunesmith.data.io import file_sha256
from tunesmith.data.schemas import (
    DATASET_TYPES,
    Dataset,
    Record,
    load_dataset,
    prompt_side_text,
    read_dataset,
    record_text,
)

__all__ = [
    "DATASET_TYPES", "CheckReport", "Dataset", "Record", "check_dataset", "file_sha256",
    "find_duplicates", "find_overlap", "load_dataset", "prompt_side_text", "read_dataset", "record_text",
]
