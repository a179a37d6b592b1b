"""The collector: read the broker, judge, publish to CloudWatch.

    brokers/    one reader per broker (Redis, RabbitMQ) behind the same few primitives
    cycle       one collection cycle (``run_cycle``) and the loop that repeats it
    publisher   ``Sample`` and batched ``PutMetricData``
    render      a cycle as the CLI table or JSON
    beat        the collector as a Celery beat task (public path ``toolkit.beat``)
"""

from toolkit.collector.brokers import BrokerReader, open_reader
from toolkit.collector.cycle import CycleResult, Loop, QueueSource, QueueStatus, run_cycle
from toolkit.collector.publisher import CloudWatchPublisher, PublishReport, Sample

__all__ = [
    "BrokerReader",
    "CloudWatchPublisher",
    "CycleResult",
    "Loop",
    "PublishReport",
    "QueueSource",
    "QueueStatus",
    "Sample",
    "open_reader",
    "run_cycle",
]
