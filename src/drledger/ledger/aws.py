"""What the AWS ledgers share: a boto3 client from the standard chain, and errors said in one sentence."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qs

from drledger.errors import AwsFailure, DrledgerError, LedgerUnavailable
from drledger.masking import mask_url
from drledger.retry import backoff

T = TypeVar("T")

# Throttling answers that mean "slow down and try again", not "this will never work".
RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "KMSThrottlingException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
    "LimitExceededException",
}
ATTEMPTS = 8


@dataclass(frozen=True)
class AwsAddress:
    """A queue or stream name (or an SQS queue URL) and the URL's query options (region, index, …)."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    def settings(self, config: Mapping[str, str]) -> dict[str, str]:
        """region, endpoint_url and profile: from the URL, else --ledger-config / --endpoint-url."""
        merged = {**dict(self.options), **config}
        return {k: v for k, v in merged.items() if k in ("region", "endpoint_url", "profile")}

    def option(self, name: str, config: Mapping[str, str], default: str | None = None) -> str | None:
        return dict(self.options).get(name) or config.get(name) or default


def parse_aws_url(url: str, parts: SplitResult, scheme: str) -> AwsAddress:
    if "@" in parts.netloc:
        raise DrledgerError(
            f"The ledger URL '{mask_url(url)}' carries credentials; AWS clients take theirs from "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role, never from a URL."
        )
    name = (parts.netloc + parts.path).strip("/")
    if not name:
        raise DrledgerError(
            f"The ledger URL '{mask_url(url)}' names no {scheme} resource; write {scheme}://name?region=…."
        )
    return AwsAddress(name, tuple((k, v[0]) for k, v in sorted(parse_qs(parts.query).items())))


def aws_client(service: str, config: Mapping[str, str]) -> Any:
    """A boto3 client: credentials and region from the standard chain (env, profile, role);
    `region` and `endpoint_url` from the URL or --ledger-config, else boto3's own AWS_* variables."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise DrledgerError("The SQS and Kinesis ledgers need boto3: pip install 'drledger[aws]'.") from None
    endpoint = config.get("endpoint_url") or ""
    if "@" in endpoint.partition("://")[2].partition("/")[0]:
        raise DrledgerError(
            f"The endpoint URL '{mask_url(endpoint)}' carries credentials; AWS clients sign with AWS credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role), never a URL's."
        )
    session = boto3.session.Session(profile_name=config.get("profile"))
    region = config.get("region") or session.region_name
    if not region:
        raise DrledgerError(
            f"No AWS region for the {service} ledger; add ?region=… to the URL or set AWS_DEFAULT_REGION."
        )
    return session.client(
        service,
        region_name=region,
        endpoint_url=config.get("endpoint_url") or None,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )


def call(what: str, function: Callable[[], T]) -> T:
    """Run one AWS call, turning the failures an operator can act on into one clear sentence."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        WaiterError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        return function()
    except (NoCredentialsError, PartialCredentialsError):
        raise DrledgerError(
            f"No AWS credentials for {what}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role."
        ) from None
    except NoRegionError:
        raise DrledgerError(
            f"No AWS region for {what}; set AWS_DEFAULT_REGION or add ?region=… to the URL."
        ) from None
    except BotoConnectionError as exc:  # refused, timed out, read timeout: the relay retries these
        raise LedgerUnavailable(f"Cannot reach {what}: {exc}.") from None
    except WaiterError as exc:
        raise LedgerUnavailable(
            f"{what} did not finish: {exc.last_response.get('Error', {}).get('Message', exc)}."
        ) from None
    except ClientError as exc:
        code, message = _error_parts(exc.response, str(exc))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 403 or code in (
            "AccessDenied",
            "AccessDeniedException",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
        ):
            raise DrledgerError(f"AWS refused {what}: {message} ({code}).") from None
        if code in RETRYABLE:
            raise
        raise AwsFailure(f"{what} failed: {message} ({code}).", code) from None


def _error_parts(response: Mapping[str, Any], fallback: str) -> tuple[str, str]:
    """The error's code and message. An answer botocore could not parse (an XML error where JSON was
    expected, a proxy's page) arrives as the HTTP status and the raw body: read the code and message
    out of it rather than print the body."""
    error = response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", fallback))
    if "<" in message:
        found_code = re.search(r"<Code>([^<]+)</Code>", message)
        found_message = re.search(r"<Message>([^<]+)</Message>", message)
        code = found_code.group(1) if found_code else code
        message = found_message.group(1) if found_message else f"HTTP {code}"
    return code, " ".join(message.split())


def with_backoff(what: str, function: Callable[[], T]) -> T:
    """`call`, retrying throttling with exponential backoff before giving up."""
    from botocore.exceptions import ClientError

    for attempt, delay in zip(range(ATTEMPTS), backoff(), strict=False):
        try:
            return call(what, function)
        except ClientError:
            if attempt == ATTEMPTS - 1:
                break
            time.sleep(delay)
    raise LedgerUnavailable(f"{what} was throttled {ATTEMPTS} times in a row.")
