"""aqueue: asyncio-native background jobs on PostgreSQL.

The public API is what this module exports; everything else is private.
"""

from .app import App
from .backoff import Backoff
from .chunk import Chunk
from .cluster import ClusterStatus, Drift, LeaseInfo, NodeInfo
from .context import JobContext, PersistentContext
from .control import QueueStats
from .definition import ConfiguredJob, JobDefinition, JobRequest
from .errors import (
    AppNotOpen,
    AqueueError,
    Cancel,
    ConfigurationError,
    DatabaseError,
    DependencyFailed,
    Discard,
    DuplicateJobKind,
    EmbeddedPostgresError,
    InvalidJobArgs,
    InvalidOption,
    InvalidWorkflow,
    JobNotFound,
    JobStateError,
    JobTimeout,
    ResultNotJSON,
    SchemaNotMigrated,
    Snooze,
    UnknownJobKind,
    UnknownQueue,
    WorkflowNotFound,
)
from .flow import Partition, Queue, Rate
from .hosting import lifespan
from .jobs import Job, JobState, Outcome
from .registry import EnqueueCall
from .steps import BatchInfo
from .unique import Unique
from .worker.worker import Worker
from .workflow import Batch, Workflow, WorkflowInfo, WorkflowRun, WorkflowStatus

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppNotOpen",
    "AqueueError",
    "Backoff",
    "Batch",
    "BatchInfo",
    "Cancel",
    "Chunk",
    "ClusterStatus",
    "ConfigurationError",
    "ConfiguredJob",
    "DatabaseError",
    "DependencyFailed",
    "Discard",
    "Drift",
    "DuplicateJobKind",
    "EmbeddedPostgresError",
    "EnqueueCall",
    "InvalidJobArgs",
    "InvalidOption",
    "InvalidWorkflow",
    "Job",
    "JobContext",
    "JobDefinition",
    "JobNotFound",
    "JobRequest",
    "JobState",
    "JobStateError",
    "JobTimeout",
    "LeaseInfo",
    "NodeInfo",
    "Outcome",
    "Partition",
    "PersistentContext",
    "Queue",
    "QueueStats",
    "Rate",
    "ResultNotJSON",
    "SchemaNotMigrated",
    "Snooze",
    "Unique",
    "UnknownJobKind",
    "UnknownQueue",
    "Worker",
    "Workflow",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowRun",
    "WorkflowStatus",
    "__version__",
    "lifespan",
]
