"""Who may do what: the ``access`` rules as configured, and the grant a request carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registry.auth.access import CATALOG, DELETE, PULL, PUSH, REPOSITORY, Access
from registry.auth.grant import Grant, attach, grant_of, name, user_of
from registry.auth.policy import EVERYTHING, Policy
from registry.config import AccessRule, ConfigError, PolicyConfig, load_config

ALL = {PULL, PUSH, DELETE}


def rule(
    *repositories: str,
    actions: set[str],
    users: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
    anonymous: bool = False,
) -> AccessRule:
    return AccessRule(repositories, frozenset(actions), users, groups, anonymous)


def repo(name: str, action: str = PULL) -> Access:
    return Access(REPOSITORY, name, action)


# --- patterns ---

GLOBS = [
    ("library/ubuntu", "library/ubuntu", True),
    ("library/ubuntu", "library/ubuntu2", False),
    ("library/ubuntu", "library", False),
    ("a.b", "a.b", True),
    ("a.b", "axb", False),
    ("*", "app", True),
    ("*", "team/app", False),
    ("**", "app", True),
    ("**", "team/app", True),
    ("**", "a/b/c/d", True),
    ("team/*", "team/app", True),
    ("team/*", "team", False),
    ("team/*", "team/a/b", False),
    ("team/*", "teamx/app", False),
    ("team/**", "team", True),
    ("team/**", "team/app", True),
    ("team/**", "team/a/b/c", True),
    ("team/**", "teamx", False),
    ("team/**", "teamx/app", False),
    ("team/**", "other/team/app", False),
    ("*/app", "team/app", True),
    ("*/app", "a/b/app", False),
    ("**/app", "a/b/app", True),
    ("*-dev", "app-dev", True),
    ("*-dev", "team/app-dev", False),
    ("app?", "app1", True),
    ("app?", "app", False),
    ("app?", "app12", False),
    ("a?c", "a/c", False),
    ("team/*/cache", "team/x/cache", True),
    ("team/*/cache", "team/x/y/cache", False),
]


@pytest.mark.parametrize(("glob", "repository", "matches"), GLOBS)
def test_glob(glob: str, repository: str, matches: bool) -> None:
    policy = Policy(PolicyConfig(rules=(rule(glob, actions={PULL}, users=("alice",)),)))
    assert policy.allows("alice", repo(repository)) is matches


def test_several_patterns_in_one_rule() -> None:
    policy = Policy(PolicyConfig(rules=(rule("a", "b/*", actions={PULL}, users=("alice",)),)))
    assert policy.allows("alice", repo("a"))
    assert policy.allows("alice", repo("b/x"))
    assert not policy.allows("alice", repo("c"))
    assert not policy.allows("alice", repo("ab"))  # The alternatives are each anchored.


# --- who gets what ---

POLICY = PolicyConfig(
    admins=("root",),
    groups={"ops": ("olivia", "oscar"), "devs": ("dan", "olivia")},
    anonymous=frozenset(),
    authenticated=frozenset({PULL}),
    rules=(
        rule("team/**", actions={PUSH}, users=("alice",)),
        rule("team/app", actions={DELETE}, groups=("ops",)),
        rule("dev/*", actions={PUSH, DELETE}, groups=("devs",)),
        rule("scratch/**", actions={PUSH}, users=("*",)),
        rule("public/**", actions={PULL}, anonymous=True),
    ),
)


@pytest.mark.parametrize(
    ("user", "repository", "actions"),
    [
        # Defaults: every signed-in user pulls everything; rules add to that.
        ("alice", "team/app", {PULL, PUSH}),
        ("alice", "team", {PULL, PUSH}),
        ("alice", "other", {PULL}),
        ("bob", "team/app", {PULL}),
        # Groups: olivia is in both, so she gets both groups' rules.
        ("oscar", "team/app", {PULL, DELETE}),
        ("oscar", "dev/x", {PULL}),
        ("olivia", "team/app", {PULL, DELETE}),
        ("olivia", "dev/x", {PULL, PUSH, DELETE}),
        ("dan", "dev/x", {PULL, PUSH, DELETE}),
        ("dan", "dev/x/y", {PULL}),
        # users: ["*"] is every signed-in user, never the anonymous caller.
        ("bob", "scratch/a/b", {PULL, PUSH}),
        (None, "scratch/a/b", set()),
        # Admins get everything, everywhere.
        ("root", "anything/at/all", ALL),
        # Anonymous: only what the anonymous rule gives.
        (None, "public/base", {PULL}),
        (None, "team/app", set()),
    ],
)
def test_actions_are_the_union_of_defaults_and_matching_rules(
    user: str | None, repository: str, actions: set[str]
) -> None:
    policy = Policy(POLICY)
    assert policy.actions(user, repository) == actions
    for action in ALL:
        assert policy.allows(user, repo(repository, action)) is (action in actions)


def test_a_group_name_is_not_a_user_name() -> None:
    policy = Policy(POLICY)
    assert policy.actions("ops", "team/app") == {PULL}
    assert policy.actions("devs", "dev/x") == {PULL}


def test_rule_order_does_not_matter() -> None:
    reverse = PolicyConfig(
        admins=POLICY.admins,
        groups=POLICY.groups,
        anonymous=POLICY.anonymous,
        authenticated=POLICY.authenticated,
        rules=tuple(reversed(POLICY.rules)),
    )
    forward, backward = Policy(POLICY), Policy(reverse)
    for user in ("alice", "bob", "olivia", "dan", "root", None):
        for repository in ("team/app", "dev/x", "scratch/a", "public/base", "x"):
            assert forward.actions(user, repository) == backward.actions(user, repository)


def test_anonymous_default_applies_everywhere_an_anonymous_rule_only_where_it_matches() -> None:
    by_rule = Policy(PolicyConfig(rules=(rule("public/**", actions={PULL}, anonymous=True),)))
    by_default = Policy(PolicyConfig(anonymous=frozenset({PULL})))
    assert by_rule.allows(None, repo("public/x"))
    assert not by_rule.allows(None, repo("private/x"))
    assert by_default.allows(None, repo("public/x"))
    assert by_default.allows(None, repo("private/x"))
    assert not by_default.allows(None, repo("private/x", PUSH))
    # Signing in never takes a right away: what anonymous callers may do, users may too.
    assert by_default.allows("alice", repo("private/x"))
    assert by_rule.allows("alice", repo("public/x"))
    assert not by_rule.allows("alice", repo("private/x"))


def test_a_rule_naming_users_does_not_name_the_anonymous_caller() -> None:
    policy = Policy(PolicyConfig(rules=(rule("**", actions=ALL, users=("alice",)),)))
    assert policy.actions(None, "x") == set()
    assert policy.actions("alice", "x") == ALL
    assert policy.actions("bob", "x") == set()


def test_without_configuration_the_policy_is_registry2s() -> None:
    policy = Policy(None)
    assert policy.configured is False
    assert policy.actions("anyone", "any/repo") == EVERYTHING
    assert policy.actions(None, "any/repo") == frozenset()
    assert policy.allows("anyone", CATALOG)
    assert not policy.allows(None, CATALOG)
    assert Policy(PolicyConfig()).configured is True


def test_an_empty_configuration_allows_nothing_but_admins() -> None:
    policy = Policy(PolicyConfig(admins=("root",)))
    assert policy.actions("alice", "x") == frozenset()
    assert policy.actions("root", "x") == EVERYTHING


def test_catalog_for_signed_in_users_and_anonymous_only_when_they_pull_something() -> None:
    nobody_anonymous = Policy(PolicyConfig(authenticated=frozenset()))
    assert nobody_anonymous.allows("alice", CATALOG)  # Even a user who may pull nothing.
    assert not nobody_anonymous.allows(None, CATALOG)
    anonymous_rule = Policy(PolicyConfig(rules=(rule("pub/*", actions={PULL}, anonymous=True),)))
    assert anonymous_rule.allows(None, CATALOG)
    assert Policy(PolicyConfig(anonymous=frozenset({PULL}))).allows(None, CATALOG)
    push_only = Policy(PolicyConfig(rules=(rule("drop/*", actions={PUSH}, anonymous=True),)))
    assert not push_only.allows(None, CATALOG)


def test_other_resource_types_are_refused() -> None:
    policy = Policy(PolicyConfig(admins=("root",)))
    assert not policy.allows("root", Access("registry", "other", "*"))
    assert not policy.allows("root", Access("repository(plugin)", "x", PULL))
    assert not Policy(None).allows("alice", Access("registry", "catalog", PULL))


# --- the grant: token claims and the policy together ---


def claims(**entries: set[str]) -> dict[tuple[str, str], frozenset[str]]:
    return {(REPOSITORY, name.replace("__", "/")): frozenset(a) for name, a in entries.items()}


def test_grant_of_claims_without_policy_is_exactly_the_claims() -> None:
    grant = Grant("alice", None, claims(team__app={PULL}))
    assert grant.allows(repo("team/app", PULL))
    assert not grant.allows(repo("team/app", PUSH))
    assert not grant.allows(repo("team/other", PULL))
    assert not grant.allows(CATALOG)
    assert grant.lists("anything")  # Without rules, the token service decided.


def test_grant_policy_cuts_down_the_claims() -> None:
    policy = Policy(PolicyConfig(rules=(rule("team/*", actions={PULL}, users=("alice",)),)))
    grant = Grant("alice", policy, claims(team__app={PULL, PUSH, DELETE}))
    assert grant.allows(repo("team/app", PULL))
    assert not grant.allows(repo("team/app", PUSH))
    assert not grant.allows(repo("team/app", DELETE))
    # The policy alone gives nothing the claims do not name.
    assert not grant.allows(repo("team/other", PULL))


def test_grant_star_action_in_claims_means_every_action() -> None:
    grant = Grant(
        "alice",
        None,
        {(REPOSITORY, "a"): frozenset({"*"}), ("registry", "catalog"): frozenset({"*"})},
    )
    for action in ALL:
        assert grant.allows(repo("a", action))
        assert not grant.allows(repo("b", action))
    assert grant.allows(CATALOG)
    cut = Grant("bob", Policy(None), {(REPOSITORY, "a"): frozenset({"*"})})
    assert cut.allows(repo("a", DELETE))
    assert not Grant(None, Policy(None), {(REPOSITORY, "a"): frozenset({"*"})}).allows(repo("a"))


def test_grant_without_claims_is_the_policy() -> None:
    policy = Policy(POLICY)
    for user in ("alice", "bob", None):
        grant = Grant(user, policy)
        for action in ALL:
            access = repo("team/app", action)
            assert grant.allows(access) is policy.allows(user, access)
    assert Grant(None, policy).allows(CATALOG)  # Anonymous may pull public/**.


def test_grant_lists_what_the_caller_may_pull() -> None:
    policy = Policy(POLICY)
    bob = Grant("bob", policy)
    assert bob.lists("team/app") and bob.lists("anything")
    anonymous = Grant(None, policy)
    assert anonymous.lists("public/base")
    assert not anonymous.lists("team/app")
    # Claims do not hide repositories from the catalog; the rules do.
    tokened = Grant(None, policy, claims(team__app={PULL}))
    assert not tokened.lists("team/app")
    assert tokened.lists("public/base")


def test_grant_travels_in_the_asgi_scope() -> None:
    scope: dict[str, Any] = {"type": "http"}
    assert grant_of(scope) is None
    assert user_of(scope) is None
    grant = Grant("alice", Policy(None))
    attach(scope, grant)
    assert grant_of(scope) is grant
    assert user_of(scope) == "alice"
    name(scope, "mallory")  # A refused request names who tried.
    assert user_of(scope) == "mallory"
    name(scope, None)
    assert user_of(scope) is None
    assert grant_of({"registry.grant": "not a grant"}) is None


# --- from config.yml ---

HTPASSWD_AUTH = """\
auth:
  htpasswd:
    realm: Registry
    path: /etc/registry/htpasswd
"""

ACCESS = (
    HTPASSWD_AUTH
    + """\
access:
  admins: [root]
  groups:
    ops: [olivia]
  default:
    anonymous: []
    authenticated: [pull]
  rules:
    - repositories: ["team/**", "shared/*"]
      actions: [pull, push]
      users: [alice]
    - repositories: [team/app]
      actions: "*"
      groups: [ops]
    - repositories: ["public/**"]
      actions: [pull]
      anonymous: true
"""
)


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_access_section_gives_the_policy(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, ACCESS), environ={})
    rules = config.access.policy
    assert rules is not None
    assert rules.admins == ("root",)
    assert rules.groups == {"ops": ("olivia",)}
    assert rules.rules[1].actions == EVERYTHING
    policy = Policy(rules)
    assert policy.actions("alice", "team") == {PULL, PUSH}
    assert policy.actions("alice", "team/a/b") == {PULL, PUSH}
    assert policy.actions("alice", "shared/x") == {PULL, PUSH}
    assert policy.actions("alice", "shared/x/y") == {PULL}
    assert policy.actions("olivia", "team/app") == EVERYTHING
    assert policy.actions("olivia", "team/other") == {PULL}
    assert policy.actions("root", "x") == EVERYTHING
    assert policy.actions(None, "public/a") == {PULL}
    assert policy.actions(None, "team/app") == frozenset()
    assert policy.allows(None, CATALOG)


def test_no_access_section_gives_no_policy_config(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, HTPASSWD_AUTH), environ={})
    assert config.access.policy is None
    assert Policy(config.access.policy).actions("anyone", "x") == EVERYTHING


TOKEN_AUTH = """\
auth:
  token:
    realm: https://auth.example.com/token
    service: registry
    issuer: issuer
    rootcertbundle: /etc/registry/token.crt
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HTPASSWD_AUTH + "access:\n  rules:\n    - {repositories: [x], actions: [write], "
            "users: [a]}\n",
            "access.rules[0].actions: unknown action 'write'",
        ),
        (
            HTPASSWD_AUTH + "access:\n  rules:\n    - {repositories: [Team/X], actions: [pull], "
            "users: [a]}\n",
            "access.rules[0].repositories: 'Team/X' is not a repository pattern",
        ),
        (
            HTPASSWD_AUTH + "access:\n  rules:\n    - {repositories: [x], actions: [pull], "
            "users: [a]}\n    - {repositories: [y], actions: [pull], groups: [ops]}\n",
            "access.rules[1].groups: no group 'ops' in access.groups",
        ),
        (
            HTPASSWD_AUTH + "access:\n  rules:\n    - {repositories: [x], actions: [pull]}\n",
            "access.rules[0]: names nobody",
        ),
        (
            HTPASSWD_AUTH + "access:\n  rules:\n    - {repositories: [x], actions: [pull], "
            "user: [a]}\n",
            "access.rules[0].user: unknown key",
        ),
        (
            HTPASSWD_AUTH + "access:\n  rules:\n    - {actions: [pull], users: [a]}\n",
            "access.rules[0].repositories: required",
        ),
        (
            HTPASSWD_AUTH + "access:\n  admins: ['bad:name']\n",
            "access.admins: 'bad:name' is not a user or group name",
        ),
        (
            "access:\n  default:\n    authenticated: [pull]\n",
            "access: needs auth.htpasswd or auth.token",
        ),
        (
            "access:\n  failedlogins:\n    limit: 5\n",
            "access: needs auth.htpasswd or auth.token",
        ),
        (
            HTPASSWD_AUTH + "access:\n  tokenservice:\n    key: k.pem\n    htpasswd: h\n",
            "access.tokenservice: needs auth.token",
        ),
        (
            TOKEN_AUTH + "access:\n  tokenservice:\n    key: k.pem\n",
            "access.tokenservice.htpasswd: required",
        ),
        (
            HTPASSWD_AUTH + "  token:\n    realm: https://a/b\n    service: s\n    issuer: i\n"
            "    rootcertbundle: b\n",
            "auth: configure one scheme, not htpasswd and token",
        ),
        (
            "auth:\n  silly:\n    realm: x\n    service: y\n",
            "auth.silly: a test-only scheme that lets in anyone",
        ),
        (
            "auth:\n  ldap:\n    url: x\n",
            "auth.ldap: unknown authentication scheme",
        ),
        (
            "auth:\n  htpasswd:\n    path: /etc/htpasswd\n",
            "auth.htpasswd.realm: required",
        ),
        (
            "auth:\n  htpasswd: {}\n",
            "auth.htpasswd.realm: required",
        ),
        (
            "auth:\n  token:\n    realm: https://a/b\n    service: s\n    issuer: i\n",
            "auth.token.rootcertbundle: required (or auth.token.jwks)",
        ),
        (
            "auth:\n  token:\n    realm: not-a-url\n    service: s\n    issuer: i\n"
            "    jwks: k.json\n",
            "auth.token.realm: expected an http(s) URL",
        ),
        (
            TOKEN_AUTH + "    signingalgorithms: [RS256, none]\n",
            "auth.token.signingalgorithms: unknown signing algorithm 'none'",
        ),
    ],
    ids=[
        "unknown-action",
        "bad-glob",
        "undefined-group",
        "names-nobody",
        "unknown-rule-key",
        "rule-without-repositories",
        "bad-admin-name",
        "access-without-auth",
        "failedlogins-without-auth",
        "tokenservice-without-token",
        "tokenservice-incomplete",
        "two-schemes",
        "silly",
        "unknown-scheme",
        "htpasswd-without-realm",
        "htpasswd-empty",
        "token-without-keys",
        "token-realm-not-url",
        "alg-none",
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_file(tmp_path, text), environ={})
    assert message in str(caught.value)


def test_environment_overrides_the_htpasswd_path(tmp_path: Path) -> None:
    path = config_file(tmp_path, HTPASSWD_AUTH)
    config = load_config(path, environ={"REGISTRY_AUTH_HTPASSWD_PATH": "/run/secrets/htpasswd"})
    assert config.auth.htpasswd is not None
    assert config.auth.htpasswd.path == "/run/secrets/htpasswd"
    assert config.auth.htpasswd.realm == "Registry"


def test_environment_alone_configures_htpasswd() -> None:
    config = load_config(
        None,
        environ={
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
            "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
        },
    )
    assert config.auth.htpasswd is not None
    assert (config.auth.htpasswd.realm, config.auth.htpasswd.path) == (
        "Registry Realm",
        "/auth/htpasswd",
    )
