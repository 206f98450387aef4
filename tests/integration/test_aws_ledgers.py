"""The SQS and Kinesis ledgers against moto in server mode, through boto3 as against AWS."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from drledger.census import take_census
from drledger.events import LedgerEvent
from drledger.ledger import open_ledger
from drledger.ledger.kinesis import KinesisLedger
from drledger.ledger.sqs import SqsLedger
from tests.helpers import make_events, run_cli


def test_kinesis_read_is_complete_across_a_reshard(kinesis_url: str) -> None:
    events = make_events(900, start_ms=1_700_000_000_000)
    with open_ledger(kinesis_url, writer=True, create=True) as ledger:
        assert isinstance(ledger, KinesisLedger)
        ledger.publish(events[:300])
        ledger.client.update_shard_count(
            StreamName=ledger.stream, TargetShardCount=4, ScalingType="UNIFORM_SCALING"
        )
        ledger.publish(events[300:600])
        ledger.client.update_shard_count(
            StreamName=ledger.stream, TargetShardCount=1, ScalingType="UNIFORM_SCALING"
        )
        ledger.publish(events[600:])
        shards = ledger.shards()
    assert len(shards) > 2, "the stream was not resharded"
    with open_ledger(kinesis_url) as ledger:
        read = [r for r in ledger.read() if isinstance(r, LedgerEvent)]
    assert sorted(e.event_id for e in read) == sorted(e.event_id for e in events)


class FailSomeRecords:
    """Fault injection at the wire: on the first PutRecords/SendMessageBatch, two records are withheld
    from the request and reported back as failed (throttled), as the service does for a hot shard.
    On the second call the whole request is refused with a throttling error. Nothing is faked on the
    service side: what is reported written was written, and what is reported failed was not sent."""

    def __init__(self, items_key: str, id_key: str | None) -> None:
        self.items_key = items_key
        self.id_key = id_key
        self.calls = 0
        self.withheld: list[Any] = []

    def before(self, params: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            items = params[self.items_key]
            self.withheld = [items[1], items[3]]
            params[self.items_key] = [r for i, r in enumerate(items) if i not in (1, 3)]

    def throttle(self, **_: Any) -> None:
        if self.calls == 2:
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                "PutRecords",
            )

    def after(self, parsed: dict[str, Any], **_: Any) -> None:
        if self.calls != 1 or not self.withheld:
            return
        if self.id_key is None:  # Kinesis: results line up with the request
            records = parsed["Records"]
            for position in (1, 3):
                records.insert(
                    position,
                    {
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded for shard",
                    },
                )
            parsed["FailedRecordCount"] = 2
        else:  # SQS: failures named by entry id
            parsed.setdefault("Failed", []).extend(
                {"Id": r[self.id_key], "SenderFault": False, "Code": "InternalError"} for r in self.withheld
            )


@pytest.mark.parametrize("kind", ["kinesis", "sqs"])
def test_failed_and_throttled_records_are_retried_without_loss(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{kind}_url")
    events = make_events(40, start_ms=1_700_000_000_000)
    with open_ledger(url, writer=True, create=True) as ledger:
        operation, items, id_key = (
            ("PutRecords", "Records", None) if kind == "kinesis" else ("SendMessageBatch", "Entries", "Id")
        )
        fault = FailSomeRecords(items, id_key)
        client = ledger.client  # type: ignore[attr-defined]
        service = "kinesis" if kind == "kinesis" else "sqs"
        client.meta.events.register(f"provide-client-params.{service}.{operation}", fault.before)
        client.meta.events.register(f"before-call.{service}.{operation}", fault.throttle)
        client.meta.events.register(f"after-call.{service}.{operation}", fault.after)
        ledger.publish(events)
        assert fault.calls > 2 and len(fault.withheld) == 2
    census = take_census(open_ledger(url).read())
    assert (census.distinct, census.malformed) == (40, 0)
    assert census.duplicates == 0  # nothing reported failed had been written, so nothing came twice


def test_sqs_drain_deletes_only_what_the_index_holds(sqs_url: str) -> None:
    events = make_events(30, start_ms=1_700_000_000_000)
    with open_ledger(sqs_url, writer=True, create=True) as ledger:
        assert isinstance(ledger, SqsLedger)
        ledger.publish(events)
        assert ledger.drain() == 30
        assert ledger.drain() == 0  # the queue is empty; the index holds the ledger
        attributes = ledger.client.get_queue_attributes(QueueUrl=ledger.queue_url, AttributeNames=["All"])
        assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert take_census(open_ledger(sqs_url).read()).distinct == 30


def test_aws_errors_are_one_sentence(aws_endpoint: str, tmp_path: Path) -> None:
    for url, fragment in (
        ("sqs://no-such-queue.fifo", "does not exist; create it, or start the relay with --create"),
        ("kinesis://no-such-stream", "does not exist; create it, or start the relay with --create"),
    ):
        result = run_cli("ledger", "inspect", url)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = subprocess_without_credentials(env)
    assert result.returncode == 2 and "No AWS credentials" in result.stderr, result.stderr
    endpoint = run_cli("ledger", "inspect", "kinesis://x", "--endpoint-url", "http://127.0.0.1:1")
    assert endpoint.returncode == 2 and "Cannot reach" in endpoint.stderr, endpoint.stderr


def subprocess_without_credentials(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import sys

    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")
    }
    clean.update({k: v for k, v in env.items() if v})
    return subprocess.run(
        [sys.executable, "-m", "drledger", "ledger", "inspect", "sqs://q.fifo"],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )


def test_a_permission_error_is_one_sentence(aws_endpoint: str, sqs_url: str, kinesis_url: str) -> None:
    """moto enforcing IAM: a user allowed to find the queue and stream but not to read them."""
    import json
    import urllib.request

    import boto3

    for url in (sqs_url, kinesis_url):
        open_ledger(url, writer=True, create=True).close()
    iam = boto3.client("iam")
    iam.create_user(UserName="auditor")
    iam.put_user_policy(
        UserName="auditor",
        PolicyName="find-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": [
                            "sqs:GetQueueUrl",
                            "kinesis:DescribeStreamSummary",
                            "kinesis:DescribeStream",
                        ],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="auditor")["AccessKey"]
    env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def enforce(count: str) -> None:
        request = urllib.request.Request(
            f"{aws_endpoint}/moto-api/reset-auth",
            data=count.encode(),
            headers={"Content-Type": "text/plain"},  # moto reads the raw body, not a form
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()

    enforce("0")
    try:
        for url in (sqs_url, kinesis_url):
            result = run_cli("ledger", "inspect", url, env=env)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.returncode == 2 and len(lines) == 1, result.stderr
            assert "AWS refused" in lines[0] and "AccessDenied" in lines[0], result.stderr
            assert key["SecretAccessKey"] not in result.stderr + result.stdout
    finally:
        enforce("inf")
