"""Per-task counts, shared by the worker that counts them and the collector that publishes them.

    model   task names as dimension values, runtime buckets, fields, totals per task and minute
    store   the Redis keys and scripts: workers flush per minute, collectors claim and commit
"""

from toolkit.taskcounts.model import (
    BUCKETS,
    OTHER,
    MinuteCounts,
    TaskClaim,
    TaskTotals,
    bucket_bounds,
    bucket_of,
    task_dimension,
)
from toolkit.taskcounts.store import (
    TaskRequest,
    claim_counts,
    commit_claim,
    flush_counts,
    parse_claim,
)

__all__ = [
    "BUCKETS",
    "OTHER",
    "MinuteCounts",
    "TaskClaim",
    "TaskRequest",
    "TaskTotals",
    "bucket_bounds",
    "bucket_of",
    "claim_counts",
    "commit_claim",
    "flush_counts",
    "parse_claim",
    "task_dimension",
]
