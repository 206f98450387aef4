"""Secrets kept out of everything drledger prints or writes: DSNs, ledger URLs, and error messages.

libpq accepts a password in several spellings — `user:pw@` in a URL (with or without a user name),
`?password=` or `?sslpassword=` in a URL's query (percent-escapes allowed, in the name too), and
`password=`/`sslpassword=` in key=value form — and its error messages may echo the URI they were
given. Every spelling is masked, and `scrub` removes the secret values themselves from any text.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
# Query or client-setting names whose values are secrets (libpq's, and Kafka/AWS client settings').
_SECRET_NAME = re.compile(r"password|passwd|secret|token|credential|access_key|sasl\.", re.IGNORECASE)
# An unquoted key=value value runs to the first unescaped space: `password=S3cr3t\ PW` is one value.
_KEYVALUE_SECRET = re.compile(
    r"""((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|(?:\\.|[^\s\\])+)""", re.IGNORECASE
)
_USERINFO = re.compile(r"(://)([^/?#@]*)@")
# libpq reads userinfo up to the last '@' before the query, so a password may hold an unencoded '/'
# that urlsplit takes for the start of the path.
_LOOSE_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^?#]*)@")


def _unquote(value: str) -> str:
    """A key=value DSN's value as libpq reads it: quotes removed, backslash escapes undone."""
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def _split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """(user, password, hosts) of a URL's netloc; a multi-host netloc has its userinfo first."""
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    return user, (password if colon else None), hosts


def mask_url(url: str) -> str:
    """A URL (a DSN in URL form, a ledger URL) with its password and secret query values masked."""
    loose = _LOOSE_USERINFO.match(url)
    if loose and "/" in loose.group(2) and ":" in loose.group(2):
        user = loose.group(2).split(":", 1)[0]
        return f"{loose.group(1)}{user}:{MASK}@" + mask_url("x://" + url[loose.end() :])[4:]
    try:
        parts = urlsplit(url)
        user, password, hosts = _split_userinfo(parts.netloc)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        # Not even a URL Python can split (a bad IPv6 host, say): hide all userinfo and any query.
        return _USERINFO.sub(rf"\1{MASK}@", url.split("?", 1)[0])
    masked = url
    if password is not None:
        masked = masked.replace(f"//{parts.netloc}", f"//{user}:{MASK}@{hosts}", 1)
    if any(is_secret_name(name) for name, _value in query):
        safe_query = "&".join(
            f"{quote(name, safe='')}={MASK if is_secret_name(name) else quote(value, safe='/:,')}"
            for name, value in query
        )
        masked = masked.replace(f"?{parts.query}", f"?{safe_query}", 1)
    return masked


def mask_dsn(dsn: str) -> str:
    """The DSN with every password masked, in URL or key=value form (valid or not)."""
    if "://" in dsn:
        return mask_url(dsn)
    return _KEYVALUE_SECRET.sub(rf"\1{MASK}", dsn)


def secrets_of(text: str) -> set[str]:
    """The secret values a DSN or URL holds, as written and percent-decoded."""
    found: set[str] = set()
    loose = _LOOSE_USERINFO.match(text)
    if loose and ":" in loose.group(2):
        password = loose.group(2).split(":", 1)[1]
        found.update((password, unquote(password)))
    if "://" in text:
        try:
            parts = urlsplit(text)
            _user, password, _hosts = _split_userinfo(parts.netloc)
            if password:
                found.update((password, unquote(password)))
            found.update(value for name, value in parse_qsl(parts.query) if is_secret_name(name))
            for name, value in re.findall(r"([^?&=]+)=([^&]*)", parts.query):
                if is_secret_name(unquote(name)):
                    found.update((value, unquote(value)))
        except ValueError:
            match = _USERINFO.search(text)
            if match and ":" in match.group(2):
                found.add(match.group(2).split(":", 1)[1])
    else:
        for match in _KEYVALUE_SECRET.finditer(text):
            value = _unquote(match.group(2))
            found.update((value, re.sub(r"\\(.)", r"\1", value)))  # as written, and as libpq reads it
    return {s for s in found if s}


def scrub(message: str, *sources: str) -> str:
    """`message` with every secret value of these DSNs or URLs replaced by the mask."""
    for secret in sorted({s for source in sources for s in secrets_of(source)}, key=len, reverse=True):
        message = message.replace(secret, MASK)
    return message
