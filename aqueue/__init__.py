"""aqueue: asyncio-native background jobs on PostgreSQL.

The public API is what this module exports; everything else is private.
"""

from .app import App
from .cluster import ClusterStatus, Drift, LeaseInfo, NodeInfo
from .control import QueueStats
from .definition import ConfiguredJob, JobDefinition, JobRequest
from .errors import (
    AppNotOpen,
    AqueueError,
    Cancel,
    ConfigurationError,
    DatabaseError,
    Discard,
    DuplicateJobKind,
    InvalidJobArgs,
    InvalidOption,
    JobStateError,
    SchemaNotMigrated,
    Snooze,
    UnknownJobKind,
    UnknownQueue,
)
from .jobs import Job, JobContext, JobState, Outcome
from .options import Backoff
from .unique import Unique
from .worker.persistent import PersistentContext
from .worker.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppNotOpen",
    "AqueueError",
    "Backoff",
    "Cancel",
    "ClusterStatus",
    "ConfigurationError",
    "ConfiguredJob",
    "DatabaseError",
    "Discard",
    "Drift",
    "DuplicateJobKind",
    "InvalidJobArgs",
    "InvalidOption",
    "Job",
    "JobContext",
    "JobDefinition",
    "JobRequest",
    "JobState",
    "JobStateError",
    "LeaseInfo",
    "NodeInfo",
    "Outcome",
    "PersistentContext",
    "QueueStats",
    "SchemaNotMigrated",
    "Snooze",
    "Unique",
    "UnknownJobKind",
    "UnknownQueue",
    "Worker",
    "__version__",
]
