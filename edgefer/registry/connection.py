"""How every EdgeFER process connects to Redis: URL, ACL user and password, optional TLS."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import redis


@dataclass(frozen=True)
class RegistryAccess:
    """Where a fleet's registry lives and how to log in; every process that talks to it inherits these fields."""

    redis_url: str = "redis://127.0.0.1:6379/0"  # rediss:// turns TLS on
    redis_username: str = ""  # a Redis ACL user; empty means the default user
    redis_password: str = ""  # the Redis password (requirepass, or the ACL user's)
    redis_tls_ca: Path | None = None  # CA certificate that verifies Redis (rediss:// only)
    redis_tls_cert: Path | None = None  # client certificate, for Redis with tls-auth-clients
    redis_tls_key: Path | None = None  # the client certificate's private key
    redis_timeout_s: float = 5.0  # per Redis command; a slower answer counts as Redis unreachable
    fleet: str = "default"  # the fleet's name: its registry keys, versions and nodes


def connect(access: RegistryAccess) -> redis.Redis:
    """A client that fails fast (timeouts) so callers can fall back to their own reconnect policy."""
    options: dict = {
        "username": access.redis_username or None,
        "password": access.redis_password or None,
        "socket_timeout": access.redis_timeout_s,
        "socket_connect_timeout": min(access.redis_timeout_s, 2.0),
        "health_check_interval": 10,
    }
    if access.redis_url.startswith("rediss://"):
        options.update(
            ssl_ca_certs=str(access.redis_tls_ca) if access.redis_tls_ca else None,
            ssl_certfile=str(access.redis_tls_cert) if access.redis_tls_cert else None,
            ssl_keyfile=str(access.redis_tls_key) if access.redis_tls_key else None,
        )
    elif access.redis_tls_ca or access.redis_tls_cert:
        raise ValueError(f"Redis TLS files are set but the URL {access.redis_url!r} is not rediss://")
    return redis.Redis.from_url(access.redis_url, **options)


SCRAPE_REDIS_TIMEOUT_S = 2.0  # well inside the scrape timeout (4 s in the shipped Prometheus configs)


def connect_for_scrapes(access: RegistryAccess) -> redis.Redis:
    """A client for the reads a /metrics collector makes while Prometheus waits: a hung Redis fails them within
    SCRAPE_REDIS_TIMEOUT_S, so the scrape still answers (with registry_up 0) instead of timing out as a whole
    and taking the process's other metrics, and the alerts that explain the outage, with it."""
    return connect(replace(access, redis_timeout_s=min(access.redis_timeout_s, SCRAPE_REDIS_TIMEOUT_S)))


def connect_reader(access: RegistryAccess, read_url: str) -> redis.Redis | None:
    """A client for a read replica (same login and TLS), or None to read from the primary. A fleet past what
    one Redis serves reads from replicas: every node's downloads and pub/sub go there, only its status writes
    go to the primary."""
    return connect(replace(access, redis_url=read_url)) if read_url else None


def describe_redis_error(exc: redis.RedisError) -> str:
    """One readable line for an operator: what Redis said, never the command's arguments (model bytes)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if " caused error: " in text:  # a pipeline error quotes the whole command, blob included
        text = text.split(" caused error: ", 1)[1]
    text = text[:200]
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
        return ("Redis is full (maxmemory reached, eviction off): nothing was stored; free memory by removing "
                f"old versions or raise maxmemory ({text})")
    if isinstance(exc, (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError)):
        return f"Redis refused the login or the command ({text}): check --redis-username/--redis-password and the ACL"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return f"Redis is a read-only replica ({text}): point --redis-url at the primary to write"
    if isinstance(exc, redis.exceptions.ResponseError):
        return f"Redis refused the request ({text})"
    return f"registry unreachable ({text})"
