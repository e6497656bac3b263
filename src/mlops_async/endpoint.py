"""Which broker to talk to: explicit URL, the seed's orchestrator arguments, env, probing.

Order: an explicit ``url`` > ``orchestrator``/``orchestrator_endpoint`` >
``MLOPS_BUS_URL`` > the usual Kafka endpoints (``kafka:9092``, the
docker-compose name, then ``localhost:9092``) if aiokafka is installed and one
answers within a short timeout > the in-memory bus, with a warning.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
from urllib.parse import parse_qsl, unquote

from .errors import ConfigurationError

__all__ = [
    "ENV_VAR",
    "PROBE_ENDPOINTS",
    "Credentials",
    "redact",
    "resolve_url",
    "seed_url",
    "split_url",
]

log = logging.getLogger("mlops_async")

ENV_VAR = "MLOPS_BUS_URL"
PROBE_ENV_VAR = "MLOPS_BUS_PROBE"  # "0" disables probing
PROBE_ENDPOINTS = (("kafka", 9092), ("localhost", 9092))
PROBE_TIMEOUT = 0.25

_DEFAULT_ENDPOINTS = {
    "kafka": "kafka:9092",
    "redis": "localhost:6379/0",
    "rediss": "localhost:6379/0",
}


# scheme://user:password@ -- the password runs to the last "@" before a blank or quote.
_USERINFO = re.compile(r"""(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'"]*:)[^\s'"]*@""")
_SECRET_PARAM = re.compile(
    r"""(?P<key>[?&;][A-Za-z_.]*(?:password|passwd|secret|token)=)[^&;\s'"]*""", re.IGNORECASE
)


class Credentials:
    """``user:password`` taken out of a URL; the password never shows in a repr."""

    __slots__ = ("password", "user")

    def __init__(self, user: str, password: str | None) -> None:
        self.user = user
        self.password = password

    def __repr__(self) -> str:
        return f"Credentials({self.user!r}, {'***' if self.password else None})"


def split_url(url: str) -> tuple[str, Credentials | None, dict[str, str]]:
    """``scheme://[user[:password]@]hosts[/path][?query]`` -> (URL without the userinfo
    and query, credentials, query parameters). Percent-escapes in user and password
    are decoded (a password with ``@`` or ``:`` is written ``%40``/``%3A``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(f"not a bus URL: {redact(url)!r} (expected e.g. kafka://host:9092)")
    rest, _, query = rest.partition("?")
    creds = None
    if "@" in rest:
        # The last "@" ends the userinfo, so a password with an unescaped "/"
        # or "@" still never ends up in a host name (or an error naming one).
        userinfo, _, rest = rest.rpartition("@")
        user, colon, password = userinfo.partition(":")
        creds = Credentials(unquote(user), unquote(password) if colon else None)
    netloc, slash, path = rest.partition("/")
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return f"{scheme}://{netloc}{slash}{path}", creds, params


def redact(text: str) -> str:
    """``text`` with every URL password (userinfo or ``password=``-like parameter) as ``***``.

    Errs on the side of hiding: anything between ``user:`` and the last ``@``
    of a URL is taken for a password.
    """
    text = _USERINFO.sub(r"\g<head>***@", text)
    return _SECRET_PARAM.sub(r"\g<key>***", text)


def seed_url(orchestrator: str, endpoint: str | None) -> str:
    """The URL for the seed's ``Producer(orchestrator="kafka", orchestrator_endpoint=...)``."""
    scheme = orchestrator.lower().strip()
    if scheme == "memory":
        return f"memory://{endpoint or 'default'}"
    if not scheme.isidentifier():
        raise ConfigurationError(f"not an orchestrator name: {orchestrator!r}")
    if endpoint and "://" in endpoint:
        return endpoint
    return f"{scheme}://{endpoint or _DEFAULT_ENDPOINTS.get(scheme, 'localhost')}"


async def _answers(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        pass
    return True


async def resolve_url(
    url: str | None, orchestrator: str | None = None, orchestrator_endpoint: str | None = None
) -> str:
    """Return the bus URL to use, following the order in this module's docstring."""
    if url:
        return url
    if orchestrator:
        return seed_url(orchestrator, orchestrator_endpoint)
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    if os.environ.get(PROBE_ENV_VAR, "1") != "0" and importlib.util.find_spec("aiokafka"):
        for host, port in PROBE_ENDPOINTS:
            if await _answers(host, port):
                found = f"kafka://{host}:{port}"
                log.info("no bus URL configured; found Kafka at %s", found)
                return found
    log.warning(
        "no bus URL configured and no Kafka found at %s: using the in-memory bus, which only "
        "connects code in this process. Pass url='kafka://host:9092' or 'redis://host:6379/0', "
        "or set %s.",
        ", ".join(f"{h}:{p}" for h, p in PROBE_ENDPOINTS),
        ENV_VAR,
    )
    return "memory://default"
