"""AWS at the edge: one boto3 client builder and the ECS read helpers the features share.

    clients   ``client(service)``: standard retries and bounded timeouts, endpoint from boto3's
              usual chain (``AWS_ENDPOINT_URL`` is how tests and the sandbox reach moto)
    ecs       ``describe_services`` in batches of 10, ``ServiceView`` snapshots
"""

from toolkit.aws.clients import client

__all__ = ["client"]
