"""Benchmark the Slack actions Lambda: cold import, and the acknowledgement Slack waits for.

    .venv/bin/python benchmarks/slack_actions.py [--runs 7] [--containers 5] [--presses 30]

Targets: importing the handler module under 300 ms; answering a press under 1 s (Slack gives up
after 3 s), the first request of a cold container included. The acknowledgement is measured the
way Lambda runs it: a fresh interpreter (nothing imported but the handler module), moto as a
server on 127.0.0.1 (Secrets Manager holding the signing secret, the state table, the function
the job is handed to with an asynchronous self-invocation), a signed request as Slack sends it.
The first request of each container pays boto3's import, the secret read, slack_sdk's import
and the Lambda client; the rest are warm. Medians over several cold containers (the machine is
shared: single runs vary by a factor of two).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.handler import cold_import_ms  # noqa: E402

IMPORT_TARGET_MS = 300.0
ACK_TARGET_MS = 1000.0
MODULE = "lambdas.slack_actions.handler"
SECRET = "bench-signing-secret-3a1b"
ONCALL = "U0BENCH"

# The cold container: import the handler, then answer the presses read from stdin, timing each.
_CONTAINER = """
import json, sys, time
events = json.load(sys.stdin)
t = time.perf_counter()
import lambdas.slack_actions.handler as module
imported = (time.perf_counter() - t) * 1000
acks = []
for event in events:
    t = time.perf_counter()
    answer = module.handler(event, None)
    acks.append(((time.perf_counter() - t) * 1000, answer["statusCode"]))
print(json.dumps({"import_ms": imported, "acks": acks}))
"""


def _moto_server() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _world(endpoint: str) -> dict[str, str]:
    """The secret, the table and the function, as the template makes them; the environment."""
    import io
    import zipfile

    import boto3

    kw: dict[str, Any] = dict(region_name="eu-west-1", endpoint_url=endpoint,
                              aws_access_key_id="bench", aws_secret_access_key="bench")
    request = urllib.request.Request(f"{endpoint}/moto-api/config", method="POST",
                                     data=b'{"lambda": {"use_docker": false}}',
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - loopback only
    arn = boto3.client("secretsmanager", **kw).create_secret(
        Name="bench/slack", SecretString=json.dumps({
            "SLACK_SIGNING_SECRET": SECRET, "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_CHANNEL": "C0BENCH"}))["ARN"]
    boto3.client("dynamodb", **kw).create_table(
        TableName="bench-celery-ecs-state", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    role = boto3.client("iam", **kw).create_role(RoleName="bench", AssumeRolePolicyDocument="{}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return {}\n")
    boto3.client("lambda", **kw).create_function(
        FunctionName="bench-celery-ecs-slack-actions", Runtime="python3.12", Handler="h.h",
        Role=role["Role"]["Arn"], Code={"ZipFile": buffer.getvalue()})
    return {
        "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_LAMBDA_FUNCTION_NAME": "bench-celery-ecs-slack-actions",
        "ENVIRONMENT": "bench", "REMEDIATION": "off", "STATE_TABLE": "bench-celery-ecs-state",
        "SLACK_SECRET_ARN": arn, "SLACK_ALLOWED_USERS": ONCALL,
    }


def _presses(n: int) -> list[dict[str, Any]]:
    from toolkit.alarms.buttons import ACTION_REDEPLOY, ButtonValue
    from toolkit.sandbox.press import block_actions, function_url_event

    value = ButtonValue("bench-worker-WorkerStuck", "bench-cluster", "worker").encode()
    events = []
    for i in range(n):
        payload = block_actions({"action_id": ACTION_REDEPLOY, "value": value}, user=ONCALL,
                                channel="C0BENCH", message_ts="1700000001.000100",
                                response_url="https://hooks.slack.com/actions/T/1/x",
                                action_ts=f"{time.time():.6f}{i}")
        events.append(function_url_event(payload, SECRET, encode=i % 2 == 0))
    return events


def acknowledgements(containers: int, presses: int) -> dict[str, Any]:
    server, endpoint = _moto_server()
    cold: list[float] = []
    imported: list[float] = []
    warm: list[float] = []
    statuses: set[int] = set()
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
               **_world(endpoint)}
        for _ in range(containers):
            proc = subprocess.run([sys.executable, "-c", _CONTAINER], cwd=ROOT, env=env,
                                  input=json.dumps(_presses(presses)), capture_output=True,
                                  text=True, check=True, timeout=120)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            acks = [ms for ms, _ in result["acks"]]
            statuses |= {status for _, status in result["acks"]}
            imported.append(result["import_ms"])
            cold.append(acks[0])
            warm.extend(acks[1:])
    finally:
        server.stop()
    warm.sort()
    return {"import_ms": round(statistics.median(imported), 1),
            "cold_ack_ms": {"median": round(statistics.median(cold), 1),
                            "runs": [round(x, 1) for x in cold]},
            "warm_ack_ms": {"median": round(statistics.median(warm), 1),
                            "p95": round(warm[int(len(warm) * 0.95)], 1),
                            "max": round(warm[-1], 1)},
            "statuses": sorted(statuses)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--containers", type=int, default=5)
    parser.add_argument("--presses", type=int, default=30)
    args = parser.parse_args()

    imports = cold_import_ms(MODULE, args.runs)
    acks = acknowledgements(args.containers, args.presses)
    median_import = statistics.median(imports)
    report = {
        "import_handler_ms": {"median": round(median_import, 1),
                              "runs": [round(x, 1) for x in imports]},
        "acknowledgement_with_moto": acks,
        "python": sys.version.split()[0],
    }
    print(json.dumps(report, indent=2))
    cold = acks["cold_ack_ms"]["median"]
    ok = (median_import < IMPORT_TARGET_MS and max(cold, acks["warm_ack_ms"]["p95"])
          < ACK_TARGET_MS and acks["statuses"] == [200])
    print(f"import {median_import:.1f} ms (target < {IMPORT_TARGET_MS:.0f}), acknowledgement "
          f"cold {cold:.0f} ms (median of {args.containers} containers), warm median "
          f"{acks['warm_ack_ms']['median']:.0f} ms, p95 {acks['warm_ack_ms']['p95']:.0f} ms "
          f"(target < {ACK_TARGET_MS:.0f}): {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
