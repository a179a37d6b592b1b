"""AWS at the edge: one boto3 client builder and the ECS / CloudWatch read helpers.

    clients   ``client(service)``: standard retries and bounded timeouts, endpoint from boto3's
              usual chain (``AWS_ENDPOINT_URL`` is how tests and the sandbox reach moto)
    ecs       ``describe_services`` in batches of 10, ``services_of_tasks`` in batches of 100
    metrics   ``read_utilization``: AWS/ECS memory and CPU in one GetMetricData per 500 queries
"""

from toolkit.aws.clients import client

__all__ = ["client"]
