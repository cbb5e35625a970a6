"""Configuration: registry:2's ``config.yml`` keys, ``REGISTRY_*`` overrides, typed and frozen.

Precedence, lowest first: built-in defaults, the YAML file, ``REGISTRY_SECTION_KEY``
environment variables, command-line flags. Every value is checked at start:
a bad value stops the start with a message that names the key; a key
registry:2 knows but this registry does not support yet is a warning (so an
existing ``config.yml`` starts); a key nobody knows (a typo) is an error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

log = logging.getLogger(__name__)

ENV_PREFIX = "REGISTRY_"
DEFAULT_ROOT = "data"
DEFAULT_ADDR = "localhost:5000"
LOG_LEVELS = ("error", "warn", "info", "debug")
TLS_VERSIONS = ("tls1.2", "tls1.3")


class ConfigError(ValueError):
    """A configuration problem, worded for the person who wrote the file."""


class Secret:
    """A credential from the configuration: it prints as stars (in ``check-config``'s
    output, a log line, a traceback), and only :meth:`reveal` gives it to a client."""

    __slots__ = ("_value",)
    HIDDEN = "********"

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.HIDDEN!r})"

    def __str__(self) -> str:
        return self.HIDDEN

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self  # Immutable; ``dataclasses.asdict`` deep-copies what it does not know.


@dataclass(frozen=True, slots=True)
class UploadPurging:
    enabled: bool = True
    age: float = 168 * 3600.0
    interval: float = 24 * 3600.0
    dryrun: bool = False


@dataclass(frozen=True, slots=True)
class GarbageCollection:
    """``storage.maintenance.gc`` (this registry's own): the collector inside the server."""

    enabled: bool = False
    interval: float = 3600.0
    grace: float = 3600.0
    """Nothing younger is removed; also ``registry garbage-collect``'s default."""
    deleteuntagged: bool = False


#: ``storage.cache.blobdescriptorsize`` by default (distribution 3's): answers kept per worker.
CACHE_SIZE = 10_000
#: How long a worker's own (``inmemory``) cache keeps an answer: with several workers,
#: the longest another worker may still find what one of them deleted.
INMEMORY_TTL = 5.0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """``storage.cache``: ``stat`` answers for content that never changes (blobs, and the
    links that put them in a repository), cached in each worker or in Redis, shared."""

    blobdescriptor: str | None = None
    """``inmemory``, ``redis`` or None (no cache)."""
    blobdescriptorsize: int = CACHE_SIZE
    """Answers an ``inmemory`` cache keeps (distribution 3's key)."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    driver: str = "filesystem"
    parameters: Mapping[str, object] = field(
        default_factory=lambda: {"rootdirectory": DEFAULT_ROOT}
    )
    delete_enabled: bool = False
    readonly: bool = False
    redirect: bool = True
    """Blob GETs answer 307 to the driver's own URL where it has one (S3), unless
    ``storage.redirect.disable``: then the registry streams the bytes itself."""
    upload_purging: UploadPurging = field(default_factory=UploadPurging)
    gc: GarbageCollection = field(default_factory=GarbageCollection)
    cache: CacheConfig = field(default_factory=CacheConfig)


#: Redis timeouts when the configuration gives none (or 0, which registry:2 reads as
#: none): a cache that waits longer than the storage it saves a trip to is no cache.
REDIS_DIALTIMEOUT = 1.0
REDIS_IOTIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class RedisPool:
    """``redis.pool``: the connections to Redis (each worker has its own)."""

    maxidle: int = 0
    """Accepted for registry:2's files; redis-py keeps every connection it opened."""
    maxactive: int = 0
    """Connections at most, a caller then waits up to the read timeout; 0: no limit."""
    idletimeout: float = 0.0
    """Accepted for registry:2's files, not applied (as ``maxidle``)."""


@dataclass(frozen=True, slots=True)
class RedisTLS:
    """``redis.tls``: TLS to Redis; the files (distribution 3's keys) are optional."""

    enabled: bool = False
    certificate: str | None = None
    """A client certificate, with ``key``, for a Redis that asks for one."""
    key: str | None = None
    clientcas: tuple[str, ...] = ()
    """CA certificates Redis's own certificate is checked against; none: the system's."""


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """registry:2's ``redis`` section: the server ``storage.cache.blobdescriptor: redis``
    keeps its answers in, shared by every worker and instance on the same storage."""

    addrs: tuple[str, ...] = ()
    """``redis.addr``, or distribution 3's ``redis.addrs``: the first that answers is used."""
    username: str | None = None
    password: Secret | None = None
    db: int = 0
    dialtimeout: float = REDIS_DIALTIMEOUT
    readtimeout: float = REDIS_IOTIMEOUT
    writetimeout: float = REDIS_IOTIMEOUT
    pool: RedisPool = field(default_factory=RedisPool)
    tls: RedisTLS = field(default_factory=RedisTLS)

    @property
    def enabled(self) -> bool:
        return bool(self.addrs)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    certificate: str | None = None
    key: str | None = None
    clientcas: tuple[str, ...] = ()
    minimumtls: str = "tls1.2"
    ciphersuites: tuple[str, ...] = ()
    auto: bool = False
    """``serve --tls``: generate a CA and server certificate on first start."""
    directory: str = "certs"
    """Where ``auto`` keeps what it generates."""

    @property
    def enabled(self) -> bool:
        return self.auto or self.certificate is not None


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    """``http.debug.prometheus``: metrics at ``path`` on the debug listener."""

    enabled: bool = False
    path: str = "/metrics"


@dataclass(frozen=True, slots=True)
class DebugConfig:
    """``http.debug``: a second listener for metrics and health, never the public one.

    Like registry:2's, it has no access control: bind it to localhost or a
    private network.
    """

    addr: str | None = None
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)

    @property
    def metrics(self) -> bool:
        """Metrics are recorded and served (they need the listener to be seen)."""
        return self.addr is not None and self.prometheus.enabled


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    addr: str = DEFAULT_ADDR
    net: str = "tcp"
    prefix: str = ""
    host: str | None = None
    relativeurls: bool = False
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tls: TLSConfig = field(default_factory=TLSConfig)
    http2_disabled: bool = False
    draintimeout: float = 0.0
    workers: int = 0
    """Server processes; 0 means one per CPU."""
    debug: DebugConfig = field(default_factory=DebugConfig)
    secret: Secret | None = None
    """Signs the web pages' session cookies; without it each start makes one (its workers
    share it), so sessions end at a restart and differ between instances."""


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    formatter: str = "text"
    accesslog: bool = True
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HtpasswdAuth:
    """registry:2's ``auth.htpasswd``: Basic authentication against a bcrypt htpasswd file."""

    realm: str
    path: str


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """registry:2's ``auth.token``: bearer JWTs from a token service."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: str | None = None
    jwks: str | None = None
    signingalgorithms: tuple[str, ...] = ()
    """Empty: every algorithm the key allows (never ``none``)."""
    autoredirect: bool = False
    autoredirectpath: str = "/auth/token"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    htpasswd: HtpasswdAuth | None = None
    token: TokenAuth | None = None

    @property
    def enabled(self) -> bool:
        return self.htpasswd is not None or self.token is not None


@dataclass(frozen=True, slots=True)
class AccessRule:
    """Callers (users, groups, anonymous) allowed ``actions`` on repositories matching a glob."""

    repositories: tuple[str, ...]
    actions: frozenset[str]
    users: tuple[str, ...] = ()
    """User names; ``*`` is every signed-in user."""
    groups: tuple[str, ...] = ()
    anonymous: bool = False


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """``access``'s rules. Without any, registry:2's: a signed-in user may do everything."""

    admins: tuple[str, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    anonymous: frozenset[str] = frozenset()
    """Actions allowed on every repository to callers without credentials."""
    authenticated: frozenset[str] = frozenset()
    """Actions allowed on every repository to every signed-in user."""
    rules: tuple[AccessRule, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenService:
    """``access.tokenservice``: this registry issues the tokens ``auth.token`` asks for."""

    key: str
    htpasswd: str
    expiration: float = 300.0
    refreshexpiration: float = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """After ``failures`` failed logins within ``window``, a client is refused for ``window``."""

    failures: int = 10
    window: float = 300.0
    delay: float = 1.0
    """Added to every failed login's answer."""


@dataclass(frozen=True, slots=True)
class AccessConfig:
    """The ``access`` section (this registry's own): per-repository rules and a token service."""

    policy: PolicyConfig | None = None
    tokenservice: TokenService | None = None
    logins: LoginLimits = field(default_factory=LoginLimits)


#: registry:2's interval when a health check names none.
HEALTH_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class StorageDriverCheck:
    """``health.storagedriver``: the storage answers (a missing tree is an answer)."""

    enabled: bool = False
    interval: float = HEALTH_INTERVAL
    threshold: int = 0
    """Failures in a row before it counts; 0 or 1: the first one."""


@dataclass(frozen=True, slots=True)
class FileCheck:
    """``health.file[]``: unhealthy while ``file`` exists (a drain switch)."""

    file: str
    interval: float = HEALTH_INTERVAL


@dataclass(frozen=True, slots=True)
class HTTPCheck:
    """``health.http[]``: a HEAD of ``uri`` answers ``statuscode``."""

    uri: str
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    statuscode: int = 200
    timeout: float | None = None
    """None: the interval, so a check never overlaps the next."""
    interval: float = HEALTH_INTERVAL
    threshold: int = 0


@dataclass(frozen=True, slots=True)
class TCPCheck:
    """``health.tcp[]``: a TCP connection to ``addr`` opens."""

    addr: str
    timeout: float | None = None
    interval: float = HEALTH_INTERVAL
    threshold: int = 0


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """registry:2's ``health`` section: while a check fails, every public request is a 503."""

    storagedriver: StorageDriverCheck = field(default_factory=StorageDriverCheck)
    file: tuple[FileCheck, ...] = ()
    http: tuple[HTTPCheck, ...] = ()
    tcp: tuple[TCPCheck, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.storagedriver.enabled or bool(self.file or self.http or self.tcp)


@dataclass(frozen=True, slots=True)
class NotificationEndpoint:
    """registry:2's ``notifications.endpoints[]``: where events are POSTed, and how."""

    name: str
    url: str
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    timeout: float = 1.0
    threshold: int = 10
    """Failures in a row after which each retry waits ``backoff``."""
    backoff: float = 1.0
    ignoredmediatypes: frozenset[str] = frozenset()
    """``ignoredmediatypes`` and ``ignore.mediatypes`` together, as registry:2 merges them."""
    ignoredactions: frozenset[str] = frozenset()
    """``ignore.actions``."""
    disabled: bool = False
    batch: int = 1
    """Events per request at most (this registry's own; registry:2 sends one)."""

    def accepts(self, action: str, media_type: str) -> bool:
        return action not in self.ignoredactions and media_type not in self.ignoredmediatypes


#: ``notifications.queue.maxsize`` by default: about two million events.
QUEUE_MAXSIZE = 1 << 30
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
               "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "ki": 1 << 10,
               "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30,
               "ti": 1 << 40, "tib": 1 << 40}  # fmt: skip


def _byte_size(key: str, value: object) -> int:
    """A size: bytes, or a number with a unit (``512MiB``, ``2GB``, ``10g``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = found.group(2).lower() if found else ""
        if found is None or isinstance(value, bool) or unit not in _SIZE_UNITS:
            raise ConfigError(f"{key}: expected a size such as 1GiB or 500MB, got {value!r}")
        size = int(float(found.group(1)) * _SIZE_UNITS[unit])
    if size < 64 * 1024:
        raise ConfigError(f"{key}: must be at least 64KiB, got {value!r}")
    return size


@dataclass(frozen=True, slots=True)
class NotificationsConfig:
    endpoints: tuple[NotificationEndpoint, ...] = ()
    includereferences: bool = False
    queue_directory: str | None = None
    """Where events wait for delivery; None: beside the storage (registry.notifications.queue)."""
    queue_fsync: bool | None = None
    """Flush push and delete events to disk before answering; None: as storage.filesystem.fsync."""
    queue_maxsize: int = QUEUE_MAXSIZE
    """Bytes the queue may take on disk; beyond, the oldest undelivered events are dropped."""

    @property
    def enabled(self) -> bool:
        return any(not endpoint.disabled for endpoint in self.endpoints)


#: How long a tag pulled through is trusted before the upstream is asked again: 0, as
#: registry:2 (which asks on every pull of a tag).
PROXY_TTL = 0.0
#: How long a repository pulled through stays cached after its last pull: 7 days, as
#: registry:2's proxy keeps content (distribution 3's ``proxy.ttl`` default). 0: forever.
PROXY_EXPIRE = 7 * 24 * 3600.0
#: The shortest ``expire`` (above 0): a repository is never removed while it is pulled.
PROXY_EXPIRE_MIN = 60.0


@dataclass(frozen=True, slots=True)
class ProxyUpstream:
    """A registry repositories are pulled through from: registry:2's ``proxy`` section
    (``prefix`` empty: every repository), or one entry of ``proxy.upstreams``."""

    remoteurl: str
    prefix: str = ""
    """Repository names under this prefix come from this upstream, the prefix taken off."""
    username: str | None = None
    password: Secret | None = None
    ttl: float = PROXY_TTL
    """Seconds a tag is served from storage before the upstream is asked (HEAD) again."""
    expire: float = PROXY_EXPIRE
    """Seconds after its last pull a cached repository is removed (0: never)."""


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The pull-through cache: repositories that match an upstream are read through it
    and refuse pushes; the others are this registry's own."""

    upstreams: tuple[ProxyUpstream, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.upstreams)


@dataclass(frozen=True, slots=True)
class UIConfig:
    """The web pages (not in registry:2): served under ``{http.prefix}/ui/``."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    version: str = "0.1"
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    catalog_maxentries: int = 1000
    tags_maxtags: int = 1000
    auth: AuthConfig = field(default_factory=AuthConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    warnings: tuple[str, ...] = ()
    """What the loader warned about, kept for ``registry check-config``."""


# --- value parsers: each takes (key, value) and raises ConfigError naming the key ---

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(key: str, value: object) -> float:
    """A Go duration (``168h``, ``1h30m``, ``500ms``) in seconds."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a duration such as '24h' or '90s', got {value!r}")
    text = value.strip()
    if text == "0":
        return 0.0
    position = 0
    total = 0.0
    while position < len(text):
        match = _DURATION_RE.match(text, position)
        if match is None:
            raise ConfigError(f"{key}: {value!r} is not a duration (examples: '24h', '45m', '10s')")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return total


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _string(key: str, value: object) -> str:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}: expected a string, got {value!r}")


def _positive_int(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    raise ConfigError(f"{key}: expected a positive integer, got {value!r}")


def _count(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ConfigError(f"{key}: expected a whole number (0 for one per CPU), got {value!r}")


def _choice(*choices: str) -> Callable[[str, object], str]:
    def parse(key: str, value: object) -> str:
        text = _string(key, value).lower()
        if text not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _string_list(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"{key}: expected a list of strings, got {value!r}")


def _headers(key: str, value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a map of header names to lists of values")
    return {str(name): _string_list(f"{key}.{name}", values) for name, values in value.items()}


def _string_map(key: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a map of names to values")
    return {str(name): _string(f"{key}.{name}", item) for name, item in value.items()}


def _version(key: str, value: object) -> str:
    text = _string(key, value)
    if text != "0.1":
        raise ConfigError(f"{key}: only configuration version 0.1 exists, got {value!r}")
    return text


def _addr(key: str, value: object) -> str:
    text = _string(key, value)
    if text.startswith("/") or text.startswith("unix:"):
        return text
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT or :PORT, got {value!r}")
    if host.startswith("[") != host.endswith("]"):
        raise ConfigError(f"{key}: an IPv6 address goes in brackets, as [::1]:5000; got {value!r}")
    return text


def _host(key: str, value: object) -> str:
    text = _string(key, value).rstrip("/")
    if not re.fullmatch(r"https?://[^/\s]+", text):
        raise ConfigError(
            f"{key}: expected a URL such as https://registry.example.com:5000, got {value!r}"
        )
    return text


def _tls_version(key: str, value: object) -> str:
    text = _string(key, value).lower()
    if text in ("tls1.0", "tls1.1"):
        raise ConfigError(f"{key}: {value} is not offered; the floor is tls1.2")
    if text not in TLS_VERSIONS:
        raise ConfigError(f"{key}: expected one of {', '.join(TLS_VERSIONS)}, got {value!r}")
    return text


#: registry:2 names cipher suites as Go's crypto/tls does; OpenSSL has its own names.
GO_CIPHER_SUITES: dict[str, str] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
#: TLS 1.3's suites: always on in OpenSSL, nothing to choose.
TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
#: Broken ciphers a registry:2 file may still name: refused, never offered.
BROKEN_CIPHER_MARKS = ("RC4", "3DES", "DES-CBC3", "NULL", "EXPORT")


def _cipher_suites(key: str, value: object) -> tuple[str, ...]:
    """Cipher names as registry:2 (Go) or OpenSSL spell them, as OpenSSL names."""
    chosen: list[str] = []
    for name in _string_list(key, value):
        if any(mark in name.upper() for mark in BROKEN_CIPHER_MARKS):
            raise ConfigError(f"{key}: {name} is broken and never offered")
        if name in TLS13_SUITES:
            continue
        chosen.append(GO_CIPHER_SUITES.get(name, name))
    return tuple(chosen)


def _prefix(key: str, value: object) -> str:
    text = _string(key, value).strip()
    if not text or text == "/":
        return ""
    if not text.startswith("/"):
        raise ConfigError(f"{key}: a prefix starts with '/', got {value!r}")
    return text.rstrip("/")


ACTIONS = ("pull", "push", "delete")
SIGNING_ALGORITHMS = (
    "EdDSA", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
    "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
)  # fmt: skip
_GLOB_RE = re.compile(r"[a-z0-9._/*?-]+")
_RULE_KEYS = ("repositories", "actions", "users", "groups", "anonymous")


def _required_string(key: str, value: object) -> str:
    text = _string(key, value).strip()
    if not text:
        raise ConfigError(f"{key}: must not be empty")
    return text


def _algorithms(key: str, value: object) -> tuple[str, ...]:
    names = _string_list(key, value)
    for name in names:
        if name not in SIGNING_ALGORITHMS:
            known = ", ".join(SIGNING_ALGORITHMS)
            raise ConfigError(f"{key}: unknown signing algorithm {name!r} (known: {known})")
    return names


def _url_path(key: str, value: object) -> str:
    text = _required_string(key, value)
    if not text.startswith("/"):
        raise ConfigError(f"{key}: a path starts with '/', got {value!r}")
    return text


def _actions(key: str, value: object) -> frozenset[str]:
    """``[pull, push]``, ``[*]`` or ``"*"``: the actions a rule grants."""
    chosen: set[str] = set()
    for name in _string_list(key, value):
        if name == "*":
            chosen.update(ACTIONS)
        elif name in ACTIONS:
            chosen.add(name)
        else:
            raise ConfigError(f"{key}: unknown action {name!r} (pull, push, delete or *)")
    return frozenset(chosen)


def _names(key: str, value: object) -> tuple[str, ...]:
    names = _string_list(key, value)
    for name in names:
        if not name or ":" in name or any(ch.isspace() for ch in name):
            raise ConfigError(f"{key}: {name!r} is not a user or group name")
    return names


def _groups(key: str, value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a map of group names to lists of users")
    return {str(name): _names(f"{key}.{name}", users) for name, users in value.items()}


def _glob(key: str, value: object) -> str:
    text = _required_string(key, value)
    if not _GLOB_RE.fullmatch(text):
        raise ConfigError(
            f"{key}: {text!r} is not a repository pattern (lower-case names, '/', "
            "'*' within a path component, '**' across them)"
        )
    return text


def _rules(key: str, value: object) -> tuple[AccessRule, ...]:
    rules = []
    for index, entry in enumerate(_entries(key, value, _RULE_KEYS, "rules")):
        where = f"{key}[{index}]"
        for required in ("repositories", "actions"):
            if required not in entry:
                raise ConfigError(f"{where}.{required}: required")
        patterns = _string_list(f"{where}.repositories", entry["repositories"])
        rule = AccessRule(
            repositories=tuple(_glob(f"{where}.repositories", p) for p in patterns),
            actions=_actions(f"{where}.actions", entry["actions"]),
            users=_names(f"{where}.users", entry.get("users", [])),
            groups=_names(f"{where}.groups", entry.get("groups", [])),
            anonymous=_bool(f"{where}.anonymous", entry.get("anonymous", False)),
        )
        if not (rule.users or rule.groups or rule.anonymous):
            raise ConfigError(f"{where}: names nobody; give users, groups or anonymous: true")
        rules.append(rule)
    return tuple(rules)


def _interval(key: str, value: object) -> float:
    """A health check's duration: a Go duration, or registry:2's bare integer of nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value / 1e9
    else:
        seconds = parse_duration(key, value)
    if seconds <= 0:
        raise ConfigError(f"{key}: must be more than 0, got {value!r}")
    return seconds


def _threshold(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ConfigError(f"{key}: expected a whole number of failures, got {value!r}")


def _tcp_addr(key: str, value: object) -> str:
    text = _addr(key, value)
    if text.startswith("/") or text.startswith("unix:"):
        raise ConfigError(f"{key}: expected HOST:PORT (TCP), got {value!r}")
    return text


def _status_code(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    raise ConfigError(f"{key}: expected an HTTP status code such as 200, got {value!r}")


def _entries(
    key: str, value: object, known: tuple[str, ...], what: str = "checks"
) -> list[dict[str, object]]:
    """A list of maps (``access.rules``, ``health.file``, ...), keys checked and lower-cased."""
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of {what} ({', '.join(known)})")
    entries = []
    for index, entry in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a map with {', '.join(known)}")
        for name in entry:
            if str(name).lower() not in known:
                raise ConfigError(f"{where}.{name}: unknown key (known: {', '.join(known)})")
        entries.append({str(name).lower(): item for name, item in entry.items()})
    return entries


def _optional(
    entry: Mapping[str, object], where: str, name: str, parse: Callable[[str, object], Any]
) -> Any:
    return parse(f"{where}.{name}", entry[name]) if entry.get(name) is not None else None


def _required(entry: Mapping[str, object], where: str, name: str) -> object:
    if entry.get(name) in (None, ""):
        raise ConfigError(f"{where}.{name}: required")
    return entry[name]


def _file_checks(key: str, value: object) -> tuple[FileCheck, ...]:
    checks = []
    for index, entry in enumerate(_entries(key, value, ("file", "interval"))):
        where = f"{key}[{index}]"
        path = _string(f"{where}.file", _required(entry, where, "file"))
        interval = _optional(entry, where, "interval", _interval)
        checks.append(FileCheck(path, interval or HEALTH_INTERVAL))
    return tuple(checks)


def _http_checks(key: str, value: object) -> tuple[HTTPCheck, ...]:
    known = ("uri", "headers", "statuscode", "timeout", "interval", "threshold")
    checks = []
    for index, entry in enumerate(_entries(key, value, known)):
        where = f"{key}[{index}]"
        uri = _string(f"{where}.uri", _required(entry, where, "uri"))
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", uri):
            raise ConfigError(f"{where}.uri: expected an http(s) URL, got {uri!r}")
        checks.append(
            HTTPCheck(
                uri=uri,
                headers=_optional(entry, where, "headers", _headers) or {},
                statuscode=_optional(entry, where, "statuscode", _status_code) or 200,
                timeout=_optional(entry, where, "timeout", _interval),
                interval=_optional(entry, where, "interval", _interval) or HEALTH_INTERVAL,
                threshold=_optional(entry, where, "threshold", _threshold) or 0,
            )
        )
    return tuple(checks)


def _tcp_checks(key: str, value: object) -> tuple[TCPCheck, ...]:
    checks = []
    for index, entry in enumerate(
        _entries(key, value, ("addr", "timeout", "interval", "threshold"))
    ):
        where = f"{key}[{index}]"
        checks.append(
            TCPCheck(
                addr=_tcp_addr(f"{where}.addr", _required(entry, where, "addr")),
                timeout=_optional(entry, where, "timeout", _interval),
                interval=_optional(entry, where, "interval", _interval) or HEALTH_INTERVAL,
                threshold=_optional(entry, where, "threshold", _threshold) or 0,
            )
        )
    return tuple(checks)


def _go_duration(key: str, value: object) -> float:
    """A duration as registry:2 reads it: a Go duration string, or a bare number of nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value / 1e9
    return parse_duration(key, value)


_ENDPOINT_KEYS = (
    "name", "disabled", "url", "headers", "timeout", "threshold", "backoff",
    "ignoredmediatypes", "ignore", "batch",
)  # fmt: skip
_IGNORE_KEYS = ("mediatypes", "actions")
_EVENT_ACTIONS = ("push", "pull", "mount", "delete")


def _event_actions(key: str, value: object) -> frozenset[str]:
    names = _string_list(key, value)
    for name in names:
        if name not in _EVENT_ACTIONS:
            raise ConfigError(f"{key}: unknown action {name!r} ({', '.join(_EVENT_ACTIONS)})")
    return frozenset(names)


def _whole(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: expected a whole number, got {value!r}")


def _endpoint(where: str, entry: object) -> NotificationEndpoint:
    """One endpoint; timeout, threshold and backoff of zero or less take the default, as in
    registry:2."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a map with name, url, headers, timeout, ...")
    entry = {str(name).lower(): item for name, item in entry.items()}
    for name in entry:
        if name not in _ENDPOINT_KEYS:
            raise ConfigError(f"{where}.{name}: unknown key (known: {', '.join(_ENDPOINT_KEYS)})")
    for required in ("name", "url"):
        if required not in entry:
            raise ConfigError(f"{where}.{required}: required")
    url = _required_string(f"{where}.url", entry["url"])
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
        raise ConfigError(f"{where}.url: expected an http(s) URL, got {url!r}")
    ignore = entry.get("ignore") or {}
    if not isinstance(ignore, dict):
        raise ConfigError(f"{where}.ignore: expected a map with mediatypes and actions")
    ignore = {str(name).lower(): item for name, item in ignore.items()}
    for name in ignore:
        if name not in _IGNORE_KEYS:
            raise ConfigError(f"{where}.ignore.{name}: unknown key (mediatypes or actions)")
    media_types = _string_list(f"{where}.ignoredmediatypes", entry.get("ignoredmediatypes") or [])
    media_types += _string_list(f"{where}.ignore.mediatypes", ignore.get("mediatypes") or [])

    def positive(name: str, parse: Parser, default: Any) -> Any:
        value = entry.get(name)
        parsed = default if value is None else parse(f"{where}.{name}", value)
        return parsed if parsed > 0 else default

    return NotificationEndpoint(
        name=_required_string(f"{where}.name", entry["name"]),
        url=url,
        headers=_headers(f"{where}.headers", entry.get("headers") or {}),
        timeout=positive("timeout", _go_duration, 1.0),
        threshold=positive("threshold", _whole, 10),
        backoff=positive("backoff", _go_duration, 1.0),
        ignoredmediatypes=frozenset(media_types),
        ignoredactions=_event_actions(f"{where}.ignore.actions", ignore.get("actions") or []),
        disabled=_bool(f"{where}.disabled", entry.get("disabled", False)),
        batch=_positive_int(f"{where}.batch", entry.get("batch", 1)),
    )


def _endpoints(key: str, value: object) -> tuple[NotificationEndpoint, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of endpoints (name, url, ...)")
    endpoints = tuple(_endpoint(f"{key}[{index}]", entry) for index, entry in enumerate(value))
    names = [endpoint.name for endpoint in endpoints]
    for index, name in enumerate(names):
        if name in names[:index]:
            # The name keys the endpoint's place in the queue on disk.
            raise ConfigError(f"{key}[{index}].name: {name!r} names another endpoint too")
    return endpoints


def _section(key: str, value: object) -> object:
    """A section written empty (``htpasswd: {}``): its required keys are reported later."""
    if value not in (None, {}):
        raise ConfigError(f"{key}: expected a map of settings")
    return value


#: registry:2's S3 storage classes (the driver checks the same list); NONE sends none.
S3_STORAGE_CLASSES = (
    "NONE", "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
    "INTELLIGENT_TIERING", "OUTPOSTS", "GLACIER_IR", "EXPRESS_ONEZONE",
)  # fmt: skip
_MIB = 1 << 20
#: S3's smallest part (registry:2's smallest chunk) and its largest.
S3_MIN_PART = 5 * _MIB
S3_MAX_PART = 5 << 30


def _whole_between(low: int, high: int, unit: str = "") -> Callable[[str, object], int]:
    """A whole number in a range, as registry:2 reads its S3 sizes (no units: bytes)."""
    what = f"a whole number of {unit}" if unit else "a whole number"

    def parse(key: str, value: object) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"{key}: expected {what} from {low} to {high}, got {value!r}")
        return value

    return parse


def _secret(key: str, value: object) -> Secret:
    return Secret(_string(key, value))


def _storage_class(key: str, value: object) -> str:
    text = _string(key, value).upper()
    if text not in S3_STORAGE_CLASSES:
        raise ConfigError(f"{key}: expected one of {', '.join(S3_STORAGE_CLASSES)}, got {value!r}")
    return text


def _bucket(key: str, value: object) -> str:
    text = _required_string(key, value)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", text):
        raise ConfigError(f"{key}: {text!r} is not a bucket name")
    return text


def _endpoint_url(key: str, value: object) -> str:
    """``https://host:port``, or ``host:port`` (the scheme then follows ``secure``)."""
    text = _string(key, value).strip()
    if text and not re.fullmatch(r"(https?://)?[^/\s?#:]+(:\d+)?(/[^\s?#]*)?", text):
        raise ConfigError(
            f"{key}: expected a URL such as https://s3.example.com or http://127.0.0.1:7480, "
            f"got {value!r}"
        )
    return text


def _cache_kind(key: str, value: object) -> str | None:
    """registry:2's cache types; empty is none, as registry:2 reads it."""
    if value is None or value == "":
        return None
    return _choice("inmemory", "redis")(key, value)


def _redis_addr(key: str, value: object) -> str:
    text = _tcp_addr(key, value)
    if text.startswith(":"):
        return f"localhost{text}"  # As Go dials ":6379".
    return text


def _redis_addrs(key: str, value: object) -> tuple[str, ...]:
    addrs = tuple(_redis_addr(key, item) for item in _string_list(key, value))
    if not addrs:
        raise ConfigError(f"{key}: expected at least one HOST:PORT")
    return addrs


def _redis_timeout(key: str, value: object) -> float | None:
    """A Go duration (or nanoseconds); 0 is registry:2's "none": None here, the default."""
    seconds = _go_duration(key, value)
    if seconds < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return seconds or None


def _non_negative(key: str, value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(f"{key}: expected a whole number (0 or more), got {value!r}")


_PROXY_URL_RE = re.compile(r"https?://[^/\s?#@]+(/[^\s?#]*)?")
_NAME_PREFIX_RE = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_UPSTREAM_KEYS = ("prefix", "remoteurl", "username", "password", "ttl", "expire")


def _remote_url(key: str, value: object) -> str:
    """An upstream registry's URL, without credentials (those go in username/password)."""
    text = _required_string(key, value)
    if "@" in text.split("//", 1)[-1].split("/", 1)[0]:
        raise ConfigError(f"{key}: put credentials in username and password, not in the URL")
    if not _PROXY_URL_RE.fullmatch(text):
        raise ConfigError(
            f"{key}: expected an http(s) URL such as https://registry-1.docker.io, got {value!r}"
        )
    return text.rstrip("/")


def _proxy_ttl(key: str, value: object) -> float:
    seconds = _go_duration(key, value)
    if seconds < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return seconds


def _proxy_expire(key: str, value: object) -> float:
    seconds = _go_duration(key, value)
    if seconds != 0 and seconds < PROXY_EXPIRE_MIN:
        raise ConfigError(
            f"{key}: must be 0 (never) or at least {PROXY_EXPIRE_MIN:g}s, got {value!r}"
        )
    return seconds


def _name_prefix(key: str, value: object) -> str:
    """Leading components of repository names (``docker.io``, ``ghcr.io/team``)."""
    text = _required_string(key, value).strip("/")
    if len(text) > 200 or not _NAME_PREFIX_RE.fullmatch(text):
        raise ConfigError(
            f"{key}: {value!r} is not a repository name prefix (lower-case components "
            "separated by '/', such as docker.io or ghcr.io/team)"
        )
    return text


def _credentials(where: str, username: str | None, password: Secret | None) -> None:
    if (username is None) != (password is None):
        missing = "password" if password is None else "username"
        raise ConfigError(
            f"{where}.{missing}: required with {where}."
            f"{'username' if missing == 'password' else 'password'}"
        )


def _upstreams(key: str, value: object) -> tuple[ProxyUpstream, ...]:
    upstreams: list[ProxyUpstream] = []
    for index, entry in enumerate(_entries(key, value, _UPSTREAM_KEYS, "upstreams")):
        where = f"{key}[{index}]"
        expire = _optional(entry, where, "expire", _proxy_expire)
        upstream = ProxyUpstream(
            prefix=_name_prefix(f"{where}.prefix", _required(entry, where, "prefix")),
            remoteurl=_remote_url(f"{where}.remoteurl", _required(entry, where, "remoteurl")),
            username=_optional(entry, where, "username", _required_string),
            password=_optional(entry, where, "password", _secret),
            ttl=_optional(entry, where, "ttl", _proxy_ttl) or PROXY_TTL,
            expire=PROXY_EXPIRE if expire is None else expire,
        )
        _credentials(where, upstream.username, upstream.password)
        if any(other.prefix == upstream.prefix for other in upstreams):
            raise ConfigError(f"{where}.prefix: {upstream.prefix!r} names another upstream too")
        upstreams.append(upstream)
    return tuple(upstreams)


Parser = Callable[[str, object], Any]

#: Keys this registry reads, with their parser.
SUPPORTED: dict[str, Parser] = {
    "version": _version,
    "log.level": _choice(*LOG_LEVELS),
    "log.formatter": _choice("text", "json"),
    "log.fields": _string_map,
    "log.accesslog.disabled": _bool,
    "loglevel": _choice(*LOG_LEVELS),
    "storage.filesystem.rootdirectory": _string,
    "storage.filesystem.fsync": _bool,
    "storage.inmemory": lambda key, value: value,
    "storage.s3": _section,
    "storage.s3.region": _required_string,
    "storage.s3.regionendpoint": _endpoint_url,
    "storage.s3.bucket": _bucket,
    "storage.s3.rootdirectory": _string,
    "storage.s3.accesskey": _string,
    "storage.s3.secretkey": _secret,
    "storage.s3.sessiontoken": _secret,
    "storage.s3.secure": _bool,
    "storage.s3.skipverify": _bool,
    "storage.s3.v4auth": _bool,
    "storage.s3.chunksize": _whole_between(S3_MIN_PART, S3_MAX_PART, "bytes"),
    "storage.s3.multipartcopychunksize": _whole_between(S3_MIN_PART, S3_MAX_PART, "bytes"),
    "storage.s3.multipartcopymaxconcurrency": _whole_between(1, 10_000),
    "storage.s3.multipartcopythresholdsize": _whole_between(0, S3_MAX_PART, "bytes"),
    "storage.s3.forcepathstyle": _bool,
    "storage.s3.encrypt": _bool,
    "storage.s3.keyid": _required_string,
    "storage.s3.storageclass": _storage_class,
    "storage.delete.enabled": _bool,
    "storage.cache": _section,
    "storage.cache.blobdescriptor": _cache_kind,
    "storage.cache.layerinfo": _cache_kind,
    "storage.cache.blobdescriptorsize": _positive_int,
    "redis": _section,
    "redis.addr": _redis_addr,
    "redis.addrs": _redis_addrs,
    "redis.username": _required_string,
    "redis.password": _secret,
    "redis.db": _non_negative,
    "redis.dialtimeout": _redis_timeout,
    "redis.readtimeout": _redis_timeout,
    "redis.writetimeout": _redis_timeout,
    "redis.pool": _section,
    "redis.pool.maxidle": _non_negative,
    "redis.pool.maxactive": _non_negative,
    "redis.pool.idletimeout": _redis_timeout,
    "redis.tls": _section,
    "redis.tls.enabled": _bool,
    "redis.tls.certificate": _required_string,
    "redis.tls.key": _required_string,
    "redis.tls.clientcas": _string_list,
    "storage.redirect.disable": _bool,
    "storage.maintenance.uploadpurging.enabled": _bool,
    "storage.maintenance.uploadpurging.age": parse_duration,
    "storage.maintenance.uploadpurging.interval": parse_duration,
    "storage.maintenance.uploadpurging.dryrun": _bool,
    "storage.maintenance.gc.enabled": _bool,
    "storage.maintenance.gc.interval": parse_duration,
    "storage.maintenance.gc.grace": parse_duration,
    "storage.maintenance.gc.deleteuntagged": _bool,
    "storage.maintenance.readonly.enabled": _bool,
    "http.addr": _addr,
    "http.net": _choice("tcp", "unix"),
    "http.prefix": _prefix,
    "http.host": _host,
    "http.secret": _secret,  # Signs the web pages' session cookies.
    "http.relativeurls": _bool,
    "http.draintimeout": parse_duration,
    "http.headers": _headers,
    "http.http2.disabled": _bool,
    "http.tls.certificate": _string,
    "http.tls.key": _string,
    "http.tls.clientcas": _string_list,
    "http.tls.minimumtls": _tls_version,
    "http.tls.ciphersuites": _cipher_suites,
    "http.workers": _count,
    "http.debug": _section,
    "http.debug.addr": _tcp_addr,
    "http.debug.prometheus": _section,
    "http.debug.prometheus.enabled": _bool,
    "http.debug.prometheus.path": _url_path,
    "catalog.maxentries": _positive_int,
    "tags.maxtags": _positive_int,
    "auth.htpasswd": _section,
    "auth.htpasswd.realm": _required_string,
    "auth.htpasswd.path": _required_string,
    "auth.token": _section,
    "auth.token.realm": _required_string,
    "auth.token.service": _required_string,
    "auth.token.issuer": _required_string,
    "auth.token.rootcertbundle": _required_string,
    "auth.token.jwks": _required_string,
    "auth.token.signingalgorithms": _algorithms,
    "auth.token.autoredirect": _bool,
    "auth.token.autoredirectpath": _url_path,
    "access.admins": _names,
    "access.groups": _groups,
    "access.default.anonymous": _actions,
    "access.default.authenticated": _actions,
    "access.rules": _rules,
    "access.tokenservice.key": _required_string,
    "access.tokenservice.htpasswd": _required_string,
    "access.tokenservice.expiration": parse_duration,
    "access.tokenservice.refreshexpiration": parse_duration,
    "access.failedlogins.limit": _positive_int,
    "access.failedlogins.window": parse_duration,
    "access.failedlogins.delay": parse_duration,
    "notifications": _section,
    "notifications.endpoints": _endpoints,
    "notifications.events.includereferences": _bool,
    "notifications.queue.directory": _required_string,
    "notifications.queue.fsync": _bool,
    "notifications.queue.maxsize": _byte_size,
    "proxy": _section,
    "proxy.remoteurl": _remote_url,
    "proxy.username": _required_string,
    "proxy.password": _secret,
    "proxy.ttl": _proxy_ttl,
    "proxy.expire": _proxy_expire,
    "proxy.upstreams": _upstreams,
    "ui": _section,
    "ui.enabled": _bool,
    "health": _section,
    "health.storagedriver": _section,
    "health.storagedriver.enabled": _bool,
    "health.storagedriver.interval": _interval,
    "health.storagedriver.threshold": _threshold,
    "health.file": _file_checks,
    "health.http": _http_checks,
    "health.tcp": _tcp_checks,
}

#: Sections registry:2 knows that this registry does not implement yet: a warning each.
KNOWN_UNSUPPORTED: tuple[str, ...] = (
    "log.hooks",
    "storage.filesystem.maxthreads",
    "storage.s3.objectacl",
    "storage.s3.useragent",
    "storage.s3.usedualstack",
    "storage.s3.accelerate",
    "storage.s3.usefipsendpoint",
    "storage.s3.loglevel",
    "storage.tag",
    "middleware",
    "reporting",
    "http.tls.letsencrypt",
    "http.h2c",
    "proxy.exec",
    "compatibility",
    "validation",
    "policy",
)

#: registry:2's authentication schemes this registry refuses, and why.
REFUSED_AUTH: dict[str, str] = {
    "silly": "a test-only scheme that lets in anyone who sends any Authorization header; "
    "use auth.htpasswd or auth.token",
}

#: Storage drivers this registry has: exactly one is configured (filesystem by default).
STORAGE_DRIVERS = ("filesystem", "inmemory", "s3")
#: Storage drivers registry:2 has and this registry does not (yet): an error, no storage.
OTHER_DRIVERS = ("azure", "gcs", "swift", "oss")

#: Maps whose keys are the user's own (header names, log fields).
_OPEN_MAPS = ("log.fields", "http.headers", "storage.inmemory", "access.groups")


def _flatten(tree: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for raw_key, value in tree.items():
        key = f"{prefix}{str(raw_key).lower()}"
        if key in _OPEN_MAPS or not isinstance(value, dict) or not value:
            flat[key] = value
        else:
            flat.update(_flatten(value, f"{key}."))
    return flat


def _covered(key: str, sections: tuple[str, ...]) -> bool:
    return any(key == section or key.startswith(section + ".") for section in sections)


def read_yaml(path: str) -> dict[str, object]:
    """Load a config file; a syntax error names the file, line and column."""
    try:
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the configuration file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason})") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = error.problem or error.context or "invalid YAML"
        raise ConfigError(f"{where}: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path}: the top level must be a map of sections (version, storage, http, ...)"
        )
    return document


def env_overrides(environ: Mapping[str, str]) -> dict[str, object]:
    """Map ``REGISTRY_HTTP_ADDR=:5000`` to ``{"http.addr": ":5000"}``, values read as YAML."""
    overrides: dict[str, object] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("_", ".")
        try:
            value = yaml.safe_load(text) if text else text
        except yaml.YAMLError:
            value = text
        # A value that parses as a map replaces the whole section, as in registry:2.
        if isinstance(value, dict):
            overrides.update(_flatten(value, f"{key}."))
        else:
            overrides[key] = value if value is not None else text
    return overrides


def _check_keys(flat: Mapping[str, object], origin: Mapping[str, str], warnings: list[str]) -> None:
    for key in flat:
        if key in SUPPORTED or _covered(key, _OPEN_MAPS):
            continue
        if key.startswith("auth.") or key == "auth":
            scheme = key.split(".")[1] if "." in key else ""
            reason = REFUSED_AUTH.get(
                scheme, "unknown authentication scheme; registry:2's are htpasswd and token"
            )
            raise ConfigError(f"auth.{scheme}: {reason}" if scheme else f"auth: {reason}")
        if _covered(key, KNOWN_UNSUPPORTED):
            warnings.append(f"{key}: known to registry:2 but not supported yet; ignored")
            continue
        driver = key.split(".")[1] if key.startswith("storage.") and "." in key else ""
        if driver in OTHER_DRIVERS:
            raise ConfigError(
                f"storage.{driver}: the {driver} storage driver is not supported yet; "
                "use storage.filesystem or storage.s3"
            )
        source = origin.get(key, "")
        if source.startswith("environment"):
            warnings.append(f"{source}: no configuration key {key}; ignored")
            continue
        raise ConfigError(f"{key}: unknown configuration key{f' ({source})' if source else ''}")


def _scheme_by_name(flat: dict[str, object], origin: dict[str, str]) -> None:
    """``REGISTRY_AUTH=htpasswd`` (registry:2's deployment recipe) names the scheme whose
    settings the other variables give: the same as an empty ``auth.htpasswd`` section."""
    scheme = flat.get("auth")
    if isinstance(scheme, str) and re.fullmatch(r"[a-z]+", scheme):
        source = origin.pop("auth", "")
        del flat["auth"]
        if not any(key.startswith(f"auth.{scheme}.") for key in flat):
            flat[f"auth.{scheme}"] = {}
            origin[f"auth.{scheme}"] = source


def _rank(source: str) -> int:
    """The precedence of where a value came from (``origin``'s words): file, environment,
    command line."""
    if source == "command line":
        return 2
    return 1 if source.startswith("environment") else 0


def _driver_by_name(flat: dict[str, object], origin: dict[str, str]) -> None:
    """``storage: s3`` or ``REGISTRY_STORAGE=s3`` names the driver, as registry:2 reads a
    storage section given as a word: its settings come from ``storage.s3.*``, and the
    other drivers' sections from a lower source (the image's file) are dropped, so the
    environment can move a stock ``config.yml`` to S3. Other storage settings stay."""
    name = flat.get("storage")
    if not isinstance(name, str):
        return
    source = origin.pop("storage", "")
    del flat["storage"]
    if name in OTHER_DRIVERS:
        raise ConfigError(
            f"storage: the {name} storage driver is not supported yet; use filesystem or s3"
        )
    if name not in STORAGE_DRIVERS:
        known = ", ".join(STORAGE_DRIVERS)
        raise ConfigError(f"storage: unknown storage driver {name!r} ({known})")
    for key in list(flat):
        parts = key.split(".")
        if (
            len(parts) > 1
            and parts[0] == "storage"
            and parts[1] in STORAGE_DRIVERS
            and parts[1] != name
            and _rank(origin.get(key, "")) < _rank(source)
        ):
            del flat[key]
            origin.pop(key, None)
    if not any(key == f"storage.{name}" or key.startswith(f"storage.{name}.") for key in flat):
        flat[f"storage.{name}"] = None
        origin[f"storage.{name}"] = source


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Config:
    """Build the configuration from file, environment and flags (highest wins)."""
    flat: dict[str, object] = {}
    origin: dict[str, str] = {}
    if path is not None:
        for key, value in _flatten(read_yaml(path)).items():
            flat[key] = value
            origin[key] = path
    environment = os.environ if environ is None else environ
    for key, value in env_overrides(environment).items():
        flat[key] = value
        origin[key] = f"environment {ENV_PREFIX}{key.replace('.', '_').upper()}"
    for key, value in (flags or {}).items():
        flat[key] = value
        origin[key] = "command line"
    _scheme_by_name(flat, origin)
    _driver_by_name(flat, origin)
    warnings: list[str] = []
    _check_keys(flat, origin, warnings)
    values: dict[str, Any] = {}
    for key, value in flat.items():
        parser = SUPPORTED.get(key)
        if parser is None:
            continue
        try:
            values[key] = parser(key, value)
        except ConfigError as error:
            where = origin.get(key, "")
            raise ConfigError(f"{error} ({where})" if where else str(error)) from None
    return _build(values, tuple(warnings))


def _storage_driver(values: Mapping[str, Any]) -> str:
    configured = sorted(
        {
            key.split(".")[1]
            for key in values
            if key.startswith("storage.") and key.split(".")[1] in STORAGE_DRIVERS
        }
    )
    if len(configured) > 1:
        raise ConfigError(
            f"storage: configure exactly one driver, not both {' and '.join(configured)}"
        )
    return configured[0] if configured else "filesystem"


#: ``storage.s3`` keys, as the S3 driver's parameters (named alike), required ones first.
_S3_KEYS = (
    "region", "bucket", "regionendpoint", "rootdirectory", "accesskey", "secretkey",
    "sessiontoken", "secure", "skipverify", "v4auth", "chunksize", "multipartcopychunksize",
    "multipartcopymaxconcurrency", "multipartcopythresholdsize", "forcepathstyle", "encrypt",
    "keyid", "storageclass",
)  # fmt: skip


def _s3_parameters(values: Mapping[str, Any], warnings: list[str]) -> dict[str, object]:
    _require(values, "storage.s3", "region", "bucket")
    parameters: dict[str, object] = {
        name: values[f"storage.s3.{name}"] for name in _S3_KEYS if f"storage.s3.{name}" in values
    }
    # registry:2 reads an empty key as none: the default credential chain, AWS's endpoint.
    for name in ("regionendpoint", "accesskey", "secretkey", "sessiontoken"):
        value = parameters.get(name)
        if value == "" or (isinstance(value, Secret) and not value.reveal()):
            del parameters[name]
    if ("accesskey" in parameters) != ("secretkey" in parameters):
        missing = "secretkey" if "accesskey" in parameters else "accesskey"
        raise ConfigError(
            f"storage.s3.{missing}: required with storage.s3."
            f"{'accesskey' if missing == 'secretkey' else 'secretkey'} (or leave out both for "
            "the AWS credential chain: AWS_* variables, ~/.aws files, instance roles)"
        )
    if "sessiontoken" in parameters and "accesskey" not in parameters:
        raise ConfigError("storage.s3.sessiontoken: needs storage.s3.accesskey and secretkey")
    if parameters.get("v4auth") is False and "regionendpoint" not in parameters:
        raise ConfigError(
            "storage.s3.v4auth: signature version 2 needs storage.s3.regionendpoint "
            "(AWS S3 accepts only version 4)"
        )
    if "keyid" in parameters and not parameters.get("encrypt"):
        warnings.append("storage.s3.keyid: ignored without storage.s3.encrypt: true")
        del parameters["keyid"]
    return parameters


def _build(values: Mapping[str, Any], warnings: tuple[str, ...]) -> Config:
    get = values.get
    driver = _storage_driver(values)
    parameters: dict[str, object] = {}
    if driver == "filesystem":
        parameters = {"rootdirectory": get("storage.filesystem.rootdirectory", DEFAULT_ROOT)}
        if get("storage.filesystem.fsync"):
            parameters["fsync"] = True
    elif driver == "s3":
        found: list[str] = []
        parameters = _s3_parameters(values, found)
        warnings += tuple(found)
    storage = StorageConfig(
        driver=driver,
        parameters=parameters,
        delete_enabled=get("storage.delete.enabled", False),
        readonly=get("storage.maintenance.readonly.enabled", False),
        redirect=not get("storage.redirect.disable", False),
        upload_purging=UploadPurging(
            enabled=get("storage.maintenance.uploadpurging.enabled", True),
            age=get("storage.maintenance.uploadpurging.age", 168 * 3600.0),
            interval=get("storage.maintenance.uploadpurging.interval", 24 * 3600.0),
            dryrun=get("storage.maintenance.uploadpurging.dryrun", False),
        ),
        gc=GarbageCollection(
            enabled=get("storage.maintenance.gc.enabled", False),
            interval=get("storage.maintenance.gc.interval", 3600.0),
            grace=get("storage.maintenance.gc.grace", 3600.0),
            deleteuntagged=get("storage.maintenance.gc.deleteuntagged", False),
        ),
        cache=CacheConfig(
            # registry:2 reads its old name, ``layerinfo``, when ``blobdescriptor`` is absent.
            blobdescriptor=(
                get("storage.cache.blobdescriptor")
                if "storage.cache.blobdescriptor" in values
                else get("storage.cache.layerinfo")
            ),
            blobdescriptorsize=get("storage.cache.blobdescriptorsize", CACHE_SIZE),
        ),
    )
    if storage.upload_purging.enabled and storage.upload_purging.interval <= 0:
        raise ConfigError("storage.maintenance.uploadpurging.interval: must be more than 0")
    for setting in ("interval", "grace"):
        if storage.gc.enabled and getattr(storage.gc, setting) <= 0:
            # A grace of 0 would take a blob between its upload and its manifest's push.
            raise ConfigError(f"storage.maintenance.gc.{setting}: must be more than 0")
    certificate, key = get("http.tls.certificate"), get("http.tls.key")
    if (certificate is None) != (key is None):
        missing = "http.tls.key" if key is None else "http.tls.certificate"
        raise ConfigError(f"{missing}: required when the other of http.tls.certificate/key is set")
    tls = TLSConfig(
        certificate=certificate,
        key=key,
        clientcas=get("http.tls.clientcas", ()),
        minimumtls=get("http.tls.minimumtls", "tls1.2"),
        ciphersuites=get("http.tls.ciphersuites", ()),
    )
    if tls.clientcas and not tls.enabled:
        raise ConfigError("http.tls.clientcas: needs http.tls.certificate and http.tls.key")
    net = get("http.net", "tcp")
    addr = get("http.addr", DEFAULT_ADDR)
    if net == "unix" and not addr.startswith("/"):
        raise ConfigError(f"http.addr: with http.net unix, expected a socket path, got {addr!r}")
    http = HTTPConfig(
        addr=addr,
        net=net,
        prefix=get("http.prefix", ""),
        host=get("http.host"),
        relativeurls=get("http.relativeurls", False),
        headers=get("http.headers", {}),
        tls=tls,
        http2_disabled=get("http.http2.disabled", False),
        draintimeout=get("http.draintimeout", 0.0),
        workers=get("http.workers", 0),
        secret=get("http.secret"),
        debug=DebugConfig(
            addr=get("http.debug.addr"),
            prometheus=PrometheusConfig(
                enabled=get("http.debug.prometheus.enabled", False),
                path=get("http.debug.prometheus.path", "/metrics"),
            ),
        ),
    )
    if http.debug.prometheus.enabled and http.debug.addr is None:
        warnings += (
            "http.debug.prometheus: needs http.debug.addr (the listener it is served on); "
            "no metrics are recorded",
        )
    level = get("log.level") or get("loglevel") or "info"
    auth = _build_auth(values)
    notes: list[str] = []
    redis = _build_redis(values, storage, notes)
    if (
        storage.cache.blobdescriptor == "inmemory"
        and http.workers != 1
        and (storage.delete_enabled or storage.gc.enabled)
    ):
        notes.append(
            "storage.cache.blobdescriptor: inmemory keeps one cache per worker: a blob or "
            "manifest deleted through one worker may still be found by the others for "
            f"{INMEMORY_TTL:g} s; use redis (shared), or http.workers: 1"
        )
    warnings += tuple(notes)
    return Config(
        version=get("version", "0.1"),
        log=LogConfig(
            level=level,
            formatter=get("log.formatter", "text"),
            accesslog=not get("log.accesslog.disabled", False),
            fields=get("log.fields", {}),
        ),
        storage=storage,
        http=http,
        catalog_maxentries=get("catalog.maxentries", 1000),
        tags_maxtags=get("tags.maxtags", 1000),
        auth=auth,
        access=_build_access(values, auth),
        notifications=NotificationsConfig(
            endpoints=get("notifications.endpoints", ()),
            includereferences=get("notifications.events.includereferences", False),
            queue_directory=get("notifications.queue.directory"),
            queue_fsync=get("notifications.queue.fsync"),
            queue_maxsize=get("notifications.queue.maxsize", QUEUE_MAXSIZE),
        ),
        health=HealthConfig(
            storagedriver=StorageDriverCheck(
                enabled=get("health.storagedriver.enabled", False),
                interval=get("health.storagedriver.interval", HEALTH_INTERVAL),
                threshold=get("health.storagedriver.threshold", 0),
            ),
            file=get("health.file", ()),
            http=get("health.http", ()),
            tcp=get("health.tcp", ()),
        ),
        redis=redis,
        proxy=_build_proxy(values),
        ui=UIConfig(enabled=get("ui.enabled", True)),
        warnings=warnings,
    )


def _build_redis(
    values: Mapping[str, Any], storage: StorageConfig, warnings: list[str]
) -> RedisConfig:
    get = values.get
    if "redis.addr" in values and "redis.addrs" in values:
        raise ConfigError("redis.addrs: give redis.addr or redis.addrs, not both")
    addrs: tuple[str, ...] = (
        (values["redis.addr"],) if "redis.addr" in values else get("redis.addrs", ())
    )
    certificate, key = get("redis.tls.certificate"), get("redis.tls.key")
    if (certificate is None) != (key is None):
        missing = "redis.tls.key" if key is None else "redis.tls.certificate"
        raise ConfigError(f"{missing}: required when the other of redis.tls.certificate/key is set")
    files = certificate is not None or "redis.tls.clientcas" in values
    if files and get("redis.tls.enabled") is False:
        raise ConfigError(
            "redis.tls.enabled: false, but redis.tls names certificate files; "
            "remove them or enable TLS"
        )
    pool = RedisPool(
        maxidle=get("redis.pool.maxidle", 0),
        maxactive=get("redis.pool.maxactive", 0),
        idletimeout=get("redis.pool.idletimeout") or 0.0,
    )
    redis = RedisConfig(
        addrs=addrs,
        username=get("redis.username"),
        password=get("redis.password"),
        db=get("redis.db", 0),
        dialtimeout=get("redis.dialtimeout") or REDIS_DIALTIMEOUT,
        readtimeout=get("redis.readtimeout") or REDIS_IOTIMEOUT,
        writetimeout=get("redis.writetimeout") or REDIS_IOTIMEOUT,
        pool=pool,
        tls=RedisTLS(
            enabled=bool(get("redis.tls.enabled", False)) or files,
            certificate=certificate,
            key=key,
            clientcas=get("redis.tls.clientcas", ()),
        ),
    )
    if storage.cache.blobdescriptor == "redis":
        if not redis.enabled:
            raise ConfigError(
                "storage.cache.blobdescriptor: redis needs redis.addr (or redis.addrs)"
            )
        ignored = [name for name in ("maxidle", "idletimeout") if f"redis.pool.{name}" in values]
        if ignored:
            warnings.append(
                f"redis.pool.{' and '.join(ignored)}: not applied (each worker keeps the "
                "connections it opened, up to redis.pool.maxactive)"
            )
    elif any(_covered(key, ("redis",)) for key in values):
        warnings.append(
            "redis: unused; only storage.cache.blobdescriptor: redis uses it (no connection made)"
        )
    return redis


def _build_proxy(values: Mapping[str, Any]) -> ProxyConfig:
    """registry:2's ``proxy`` (every repository, when ``remoteurl`` is set) and
    ``proxy.upstreams`` (repositories by name prefix): one list, longest prefix first."""
    get = values.get
    upstreams = list(get("proxy.upstreams", ()))
    single = ("username", "password", "ttl", "expire")
    if "proxy.remoteurl" in values:
        upstream = ProxyUpstream(
            remoteurl=values["proxy.remoteurl"],
            username=get("proxy.username"),
            password=get("proxy.password"),
            ttl=get("proxy.ttl", PROXY_TTL),
            expire=get("proxy.expire", PROXY_EXPIRE),
        )
        _credentials("proxy", upstream.username, upstream.password)
        upstreams.append(upstream)
    else:
        for name in single:
            if f"proxy.{name}" in values:
                raise ConfigError(f"proxy.{name}: needs proxy.remoteurl")
    upstreams.sort(key=lambda upstream: -len(upstream.prefix))
    return ProxyConfig(upstreams=tuple(upstreams))


def _require(values: Mapping[str, Any], section: str, *names: str) -> list[Any]:
    found = []
    for name in names:
        key = f"{section}.{name}"
        if key not in values:
            raise ConfigError(f"{key}: required in {section}")
        found.append(values[key])
    return found


def _build_auth(values: Mapping[str, Any]) -> AuthConfig:
    schemes = sorted({key.split(".")[1] for key in values if key.startswith("auth.")})
    if len(schemes) > 1:
        raise ConfigError(f"auth: configure one scheme, not {' and '.join(schemes)}")
    if schemes == ["htpasswd"]:
        realm, path = _require(values, "auth.htpasswd", "realm", "path")
        return AuthConfig(htpasswd=HtpasswdAuth(realm=realm, path=path))
    if schemes == ["token"]:
        realm, service, issuer = _require(values, "auth.token", "realm", "service", "issuer")
        bundle = values.get("auth.token.rootcertbundle")
        jwks = values.get("auth.token.jwks")
        if bundle is None and jwks is None:
            raise ConfigError(
                "auth.token.rootcertbundle: required (or auth.token.jwks): the keys tokens "
                "are signed with"
            )
        if not re.fullmatch(r"https?://[^/\s\"]+(/[^\s\"]*)?", realm):
            raise ConfigError(f"auth.token.realm: expected an http(s) URL, got {realm!r}")
        token = TokenAuth(
            realm=realm,
            service=service,
            issuer=issuer,
            rootcertbundle=bundle,
            jwks=jwks,
            signingalgorithms=values.get("auth.token.signingalgorithms", ()),
            autoredirect=values.get("auth.token.autoredirect", False),
            autoredirectpath=values.get("auth.token.autoredirectpath", "/auth/token"),
        )
        return AuthConfig(token=token)
    return AuthConfig()


def _build_access(values: Mapping[str, Any], auth: AuthConfig) -> AccessConfig:
    get = values.get
    policy = None
    if any(_covered(key, ("access.admins", "access.groups", "access.default", "access.rules"))
           for key in values):  # fmt: skip
        policy = PolicyConfig(
            admins=get("access.admins", ()),
            groups=get("access.groups", {}),
            anonymous=get("access.default.anonymous", frozenset()),
            authenticated=get("access.default.authenticated", frozenset()),
            rules=get("access.rules", ()),
        )
        for index, rule in enumerate(policy.rules):
            for group in rule.groups:
                if group not in policy.groups:
                    raise ConfigError(
                        f"access.rules[{index}].groups: no group {group!r} in access.groups"
                    )
    service = None
    if any(key.startswith("access.tokenservice.") for key in values):
        if auth.token is None:
            raise ConfigError(
                "access.tokenservice: needs auth.token, whose realm is where the service answers"
            )
        key, htpasswd = _require(values, "access.tokenservice", "key", "htpasswd")
        service = TokenService(
            key=key,
            htpasswd=htpasswd,
            expiration=get("access.tokenservice.expiration", 300.0),
            refreshexpiration=get("access.tokenservice.refreshexpiration", 30 * 24 * 3600.0),
        )
        if service.expiration <= 0:
            raise ConfigError("access.tokenservice.expiration: must be more than 0")
    logins = LoginLimits(
        failures=get("access.failedlogins.limit", 10),
        window=get("access.failedlogins.window", 300.0),
        delay=get("access.failedlogins.delay", 1.0),
    )
    if (policy is not None or any(k.startswith("access.failedlogins.") for k in values)) and (
        not auth.enabled
    ):
        raise ConfigError(
            "access: needs auth.htpasswd or auth.token; without authentication every caller "
            "is anonymous and these rules would not hold"
        )
    return AccessConfig(policy=policy, tokenservice=service, logins=logins)
