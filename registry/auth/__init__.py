"""Access control: who the caller is (htpasswd or token), and what they may do (the policy).

One layer between the route table and the handlers (``guard.py``) asks a
controller (``controllers.py``) whether the caller has what the route needs
(``api/routes.py`` names it per method); the controller authenticates with
Basic credentials against an htpasswd file (``users.py``) or a bearer token
(``tokens.py``), and the policy (``policy.py``) decides. The registry can issue
those tokens itself (``issuer.py``).

Importing this package loads nothing heavy: the app builds access control only
when ``auth`` is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..config import Config, ConfigError

if TYPE_CHECKING:
    from .controllers import AccessController
    from .issuer import TokenIssuer

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AccessControl:
    controller: AccessController
    issuer: TokenIssuer | None = None
    token_path: str | None = None
    """Where the built-in token service answers."""


def _loaded(key: str, load: Callable[[], T]) -> T:
    """``load()``, with a problem in a file it reads reported under the config key naming it."""
    from .htpasswd import HtpasswdError
    from .keys import KeyFileError

    try:
        return load()
    except (HtpasswdError, KeyFileError) as error:
        raise ConfigError(f"{key}: {error}") from None


def build_access_control(config: Config) -> AccessControl | None:
    """Access control as configured, every file read and checked; None when ``auth`` is off.

    A file that cannot be used is a ConfigError naming the key, so the start
    stops with a message rather than serving an open (or closed) registry.
    """
    auth = config.auth
    if not auth.enabled:
        return None
    from .controllers import BasicAccess, TokenAccess
    from .issuer import TokenIssuer
    from .keys import libtrust_key_id, trusted_keys
    from .logins import Logins
    from .policy import Policy
    from .throttle import LoginThrottle
    from .tokens import TokenVerifier
    from .users import UserFile

    throttle = LoginThrottle(config.access.logins)
    rules = config.access.policy
    basic = auth.htpasswd
    if basic is not None:
        users = _loaded("auth.htpasswd.path", lambda: UserFile(basic.path))
        logins = Logins(users, throttle)
        return AccessControl(BasicAccess(basic.realm, logins, Policy(rules)))
    token = auth.token
    assert token is not None
    where = "auth.token.rootcertbundle" if token.rootcertbundle else "auth.token.jwks"
    keys = _loaded(where, lambda: trusted_keys(token.rootcertbundle, token.jwks))
    if not keys.by_id:
        raise ConfigError(f"{where}: holds no key tokens could be signed with")
    verifier = TokenVerifier(
        keys, issuer=token.issuer, service=token.service, algorithms=token.signingalgorithms
    )
    service = config.access.tokenservice
    policy = Policy(rules) if rules is not None or service is not None else None
    controller = TokenAccess(token, verifier, policy)
    if service is None:
        return AccessControl(controller)
    assert policy is not None
    users = _loaded("access.tokenservice.htpasswd", lambda: UserFile(service.htpasswd))
    issuer = _loaded(
        "access.tokenservice.key",
        lambda: TokenIssuer(service, token, users, Logins(users, throttle), policy),
    )
    if libtrust_key_id(issuer.key.public_key()) not in keys.by_id:
        raise ConfigError(
            f"access.tokenservice.key: {service.key} is not among the keys of {where}, so "
            "the registry would refuse its own tokens; `registry certs token` writes the "
            "certificate to give there (token.crt)"
        )
    return AccessControl(controller, issuer, controller.token_path)
