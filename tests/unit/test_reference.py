"""Repository names, tags and digests: the spec's grammar, as tables and as properties."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.reference import (
    NAME_MAX_LENGTH,
    Digest,
    InvalidReferenceError,
    is_digest,
    validate_name,
    validate_tag,
)

# The OCI Distribution Spec's own patterns, copied verbatim: an oracle written
# independently of the named parts registry/reference.py builds its patterns from.
SPEC_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
SPEC_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

NO_DATABASE = settings(database=None, max_examples=500)

# Names

VALID_NAMES = [
    "a",
    "0",
    "library/ubuntu",
    "a/b/c/d/e/f",
    "a.b",
    "a_b",
    "a__b",
    "a-b",
    "a--b",
    "a---------b",
    "a.b_c-d__e--f",
    "foo/bar.baz/qux_1",
    "123/456",
    "my-registry.example.com/team/app",
    "a" * NAME_MAX_LENGTH,
    "/".join(["ab"] * 85),  # 254 characters in many components
]

INVALID_NAMES = [
    "",
    "A",
    "Library/ubuntu",
    "a___b",
    "a..b",
    "a.-b",
    "a-.b",
    "a._b",
    "a_.b",
    "a_-b",
    "-a",
    "a-",
    ".a",
    "a.",
    "_a",
    "a_",
    "/a",
    "a/",
    "a//b",
    "..",
    ".",
    "a/..",
    "a/../b",
    "../a",
    "a/./b",
    "a b",
    "a\nb",
    "a\n",
    "a:b",
    "a@b",
    "a\\b",
    "localhost:5000/a",
    "\u00e4",
    "a\u0301",
    "\uff41",
    "\u0661",
    "a" * (NAME_MAX_LENGTH + 1),
    "/".join(["ab"] * 86),  # 257 characters, every component valid
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidReferenceError):
        validate_name(name)


def test_name_length_limit_is_255() -> None:
    assert validate_name("a" * 255)
    with pytest.raises(InvalidReferenceError):
        validate_name("a" * 256)
    assert validate_name("a/" * 126 + "abc")  # 255
    with pytest.raises(InvalidReferenceError):
        validate_name("a/" * 126 + "abcd")  # 256


@NO_DATABASE
@given(st.text(alphabet="ab09._-/A:", max_size=24))
def test_names_match_the_spec_pattern(name: str) -> None:
    expected = SPEC_NAME.fullmatch(name) is not None
    try:
        validate_name(name)
    except InvalidReferenceError:
        accepted = False
    else:
        accepted = True
    assert accepted == expected


@NO_DATABASE
@given(st.text(max_size=12))
def test_names_refuse_anything_outside_the_grammar(name: str) -> None:
    try:
        validate_name(name)
    except InvalidReferenceError:
        return
    assert SPEC_NAME.fullmatch(name)
    assert ".." not in name.split("/")
    assert not name.startswith("/")


# Tags

VALID_TAGS = [
    "latest",
    "v1",
    "V1.2.3",
    "1.0.0-rc.1",
    "_",
    "_private",
    "0",
    "a" * 128,
    "A-b_c.D",
    "a..b",
    "a--",
    "sha256-" + "a" * 64,
]

INVALID_TAGS = [
    "",
    ".hidden",
    "-dash",
    "a" * 129,
    "a:b",
    "sha256:" + "a" * 64,
    "a/b",
    "a b",
    "a\n",
    "a+b",
    "a@b",
    "\u00e4",
    "\u0661",
    "..",
]


@pytest.mark.parametrize("tag", VALID_TAGS)
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag
    assert not is_digest(tag)


@pytest.mark.parametrize("tag", INVALID_TAGS)
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(InvalidReferenceError):
        validate_tag(tag)


def test_tag_length_limit_is_128() -> None:
    assert validate_tag("x" * 128)
    with pytest.raises(InvalidReferenceError):
        validate_tag("x" * 129)


@NO_DATABASE
@given(st.text(alphabet="aZ09._-:/+", max_size=140))
def test_tags_match_the_spec_pattern(tag: str) -> None:
    expected = SPEC_TAG.fullmatch(tag) is not None
    try:
        validate_tag(tag)
    except InvalidReferenceError:
        accepted = False
    else:
        accepted = True
    assert accepted == expected


# Digests

SHA256 = hashlib.sha256(b"x").hexdigest()
SHA384 = hashlib.sha384(b"x").hexdigest()
SHA512 = hashlib.sha512(b"x").hexdigest()


@pytest.mark.parametrize(
    ("value", "algorithm", "hex_"),
    [
        (f"sha256:{SHA256}", "sha256", SHA256),
        (f"sha384:{SHA384}", "sha384", SHA384),
        (f"sha512:{SHA512}", "sha512", SHA512),
    ],
)
def test_digest_parse(value: str, algorithm: str, hex_: str) -> None:
    digest = Digest.parse(value)
    assert digest.algorithm == algorithm
    assert digest.hex == hex_
    assert str(digest) == value
    assert is_digest(value)
    assert Digest.parse(value) == digest
    assert hash(Digest.parse(value)) == hash(digest)


INVALID_DIGESTS = [
    "",
    "sha256",
    "sha256:",
    ":" + SHA256,
    SHA256,
    f"sha256:{SHA256[:-1]}",
    f"sha256:{SHA256}0",
    f"sha256:{SHA512}",
    f"sha512:{SHA256}",
    f"sha384:{SHA512}",
    f"sha512:{SHA512[:-1]}",
    f"sha256:{SHA256.upper()}",
    f"sha256:{SHA256[:-1]}A",
    f"SHA256:{SHA256}",
    f"sha256:{SHA256[:-1]}g",
    f"sha256:{SHA256[:-1]}=",
    f"sha256:{SHA256[:-1]}_",
    f"sha256 :{SHA256}",
    f"sha256: {SHA256[1:]}",
    f"sha256:{SHA256}\n",
    f"sha256:{SHA256[:-2]}/x",
    f"md5:{hashlib.md5(b'x').hexdigest()}",
    f"sha1:{hashlib.sha1(b'x').hexdigest()}",
    f"sha3_256:{hashlib.sha3_256(b'x').hexdigest()}",
    f"sha256+b64u:{SHA256}",
    f"blake3:{SHA256}",
    f"sha256:sha256:{SHA256}",
    f"sha256:{SHA256[:-1]}\u0661",
]


@pytest.mark.parametrize("value", INVALID_DIGESTS)
def test_digest_parse_refuses(value: str) -> None:
    with pytest.raises(InvalidReferenceError):
        Digest.parse(value)


def test_digest_of() -> None:
    assert str(Digest.of(b"")) == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert Digest.of(b"x", "sha512") == Digest("sha512", SHA512)
    assert Digest.of(b"x", "sha384") == Digest("sha384", SHA384)


@NO_DATABASE
@given(st.binary(max_size=256), st.sampled_from(["sha256", "sha384", "sha512"]))
def test_digest_round_trip(data: bytes, algorithm: str) -> None:
    digest = Digest.of(data, algorithm)
    assert Digest.parse(str(digest)) == digest
    assert digest.hex == hashlib.new(algorithm, data).hexdigest()


def test_invalid_reference_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Digest.parse("nope")
