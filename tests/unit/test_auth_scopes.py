"""Scopes as they travel in challenges and token requests: ``repository:team/app:pull,push``."""

from __future__ import annotations

import pytest

from registry.auth.access import (
    CATALOG,
    DELETE,
    MAX_SCOPE_LENGTH,
    MAX_SCOPES,
    PULL,
    PUSH,
    REPOSITORY,
    Access,
    Need,
    Scope,
    format_scope,
    parse_scopes,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:team/app:pull", [Scope("repository", "team/app", ("pull",))]),
        ("repository:team/app:pull,push", [Scope("repository", "team/app", ("pull", "push"))]),
        ("repository:app:*", [Scope("repository", "app", ("*",))]),
        ("registry:catalog:*", [Scope("registry", "catalog", ("*",))]),
        # The name may hold colons: type before the first, actions after the last.
        (
            "repository:localhost:5000/team/app:pull",
            [Scope("repository", "localhost:5000/team/app", ("pull",))],
        ),
        (
            "repository:[::1]:5000/app:push",
            [Scope("repository", "[::1]:5000/app", ("push",))],
        ),
        # A class in parentheses is dropped.
        ("repository(plugin):vieux/sshfs:pull", [Scope("repository", "vieux/sshfs", ("pull",))]),
        # Repeated and empty actions: each once, in the order first given.
        ("repository:app:push,pull,push,,pull", [Scope("repository", "app", ("push", "pull"))]),
        # Several in one string, any whitespace between.
        (
            "repository:a:pull  repository:b:push\trepository:a:delete",
            [
                Scope("repository", "a", ("pull",)),
                Scope("repository", "b", ("push",)),
                Scope("repository", "a", ("delete",)),
            ],
        ),
        ("", []),
        ("   ", []),
    ],
)
def test_parse(text: str, expected: list[Scope]) -> None:
    assert parse_scopes([text]) == expected


@pytest.mark.parametrize(
    "malformed",
    [
        "repository",
        "repository:app",
        "repository:app:",
        ":app:pull",
        "repository::pull",
        "(plugin):app:pull",
        ":::",
    ],
)
def test_malformed_entries_are_skipped_and_the_rest_kept(malformed: str) -> None:
    text = f"repository:a:pull {malformed} repository:b:push"
    assert parse_scopes([text]) == [
        Scope("repository", "a", ("pull",)),
        Scope("repository", "b", ("push",)),
    ]


def test_several_texts_one_list_in_order() -> None:
    # Docker sends one scope parameter per resource (?scope=...&scope=...).
    assert parse_scopes(["repository:a:pull", "repository:b:pull,push"]) == [
        Scope("repository", "a", ("pull",)),
        Scope("repository", "b", ("pull", "push")),
    ]


def test_each_text_is_cut_at_the_length_limit() -> None:
    name = "x" * (MAX_SCOPE_LENGTH - len("repository::pull") - 1)
    filler = f"repository:{name}:pull"
    assert len(filler) == MAX_SCOPE_LENGTH - 1
    beyond = filler + " repository:late:pull"
    assert parse_scopes([beyond]) == [Scope("repository", name, ("pull",))]
    # The limit is per text: the next text is read whole.
    assert parse_scopes([beyond, "repository:next:push"])[-1] == Scope(
        "repository", "next", ("push",)
    )


def test_an_entry_cut_by_the_length_limit_asks_for_nothing_more() -> None:
    name = "a" * (MAX_SCOPE_LENGTH - len("repository:") - len(":pu"))
    scopes = parse_scopes([f"repository:{name}:pull,push,delete"])
    # Cut inside the actions: what remains is a prefix of what was asked, never more.
    assert scopes == [Scope("repository", name, ("pu",))]


def test_at_most_max_scopes() -> None:
    many = " ".join(f"repository:r{index}:pull" for index in range(MAX_SCOPES + 10))
    scopes = parse_scopes([many[:MAX_SCOPE_LENGTH], many[MAX_SCOPE_LENGTH:]])
    assert len(scopes) == MAX_SCOPES
    assert scopes[0] == Scope("repository", "r0", ("pull",))
    texts = [f"repository:r{index}:pull" for index in range(MAX_SCOPES * 2)]
    capped = parse_scopes(texts)
    assert [scope.name for scope in capped] == [f"r{index}" for index in range(MAX_SCOPES)]


def test_format_groups_actions_per_resource_in_order() -> None:
    accesses = [
        Access(REPOSITORY, "team/app", PULL),
        Access(REPOSITORY, "base", PULL),
        Access(REPOSITORY, "team/app", PUSH),
        Access(REPOSITORY, "team/app", PULL),
    ]
    assert format_scope(accesses) == "repository:team/app:pull,push repository:base:pull"


def test_format_keeps_types_apart_and_host_port_names() -> None:
    accesses = [
        CATALOG,
        Access(REPOSITORY, "localhost:5000/app", DELETE),
        Access("registry", "catalog", PULL),
    ]
    assert format_scope(accesses) == (
        "registry:catalog:pull,* repository:localhost:5000/app:delete"
    )
    assert format_scope([]) == ""


def test_format_then_parse_round_trips() -> None:
    accesses = [
        Access(REPOSITORY, "localhost:5000/team/app", PULL),
        Access(REPOSITORY, "localhost:5000/team/app", PUSH),
        Access(REPOSITORY, "source", PULL),
    ]
    assert parse_scopes([format_scope(accesses)]) == [
        Scope(REPOSITORY, "localhost:5000/team/app", (PULL, PUSH)),
        Scope(REPOSITORY, "source", (PULL,)),
    ]


def test_need_wants_the_required_then_the_optional() -> None:
    mount = Need(
        required=(Access(REPOSITORY, "target", PUSH), Access(REPOSITORY, "target", PULL)),
        optional=(Access(REPOSITORY, "source", PULL),),
    )
    assert mount.wanted == mount.required + mount.optional
    # Actions in the usual order, whatever order they were needed in.
    assert format_scope(mount.wanted) == "repository:target:pull,push repository:source:pull"
    assert Need(login=True).wanted == ()
