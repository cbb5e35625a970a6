"""``notifications``: registry:2's keys read as registry:2 reads them, mistakes named."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import ConfigError, NotificationEndpoint, load_config

REGISTRY2_EXAMPLE = """\
version: 0.1
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.com/event
      headers:
        Authorization: [Bearer token]
      timeout: 1s
      threshold: 10
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes:
           - application/octet-stream
        actions:
           - pull
"""


def test_registry2s_documented_example_loads_without_warnings(tmp_path: Path) -> None:
    config = load_config(str(_write(tmp_path, REGISTRY2_EXAMPLE)), environ={})
    assert config.warnings == ()
    assert config.notifications.includereferences
    assert config.notifications.enabled
    (endpoint,) = config.notifications.endpoints
    assert endpoint == NotificationEndpoint(
        name="alistener",
        url="https://my.listener.com/event",
        headers={"Authorization": ("Bearer token",)},
        timeout=1.0,
        threshold=10,
        backoff=1.0,
        ignoredmediatypes=frozenset({"application/octet-stream"}),
        ignoredactions=frozenset({"pull"}),
    )
    assert not endpoint.accepts("pull", "application/vnd.oci.image.manifest.v1+json")
    assert not endpoint.accepts("push", "application/octet-stream")
    assert endpoint.accepts("push", "application/vnd.oci.image.manifest.v1+json")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_defaults_and_go_durations(tmp_path: Path) -> None:
    text = """\
notifications:
  endpoints:
    - {name: a, url: "http://127.0.0.1:9/x", timeout: 500000000, backoff: 0, threshold: -1}
    - {name: b, url: "http://127.0.0.1:9/y", disabled: true}
  queue: {directory: /var/spool/registry, fsync: true}
"""
    config = load_config(str(_write(tmp_path, text)), environ={})
    first, second = config.notifications.endpoints
    # A bare number is nanoseconds; zero or less takes registry:2's default.
    assert (first.timeout, first.backoff, first.threshold, first.batch) == (0.5, 1.0, 10, 1)
    assert second.disabled
    assert config.notifications.queue_directory == "/var/spool/registry"
    assert config.notifications.queue_fsync is True


def test_only_disabled_endpoints_means_off(tmp_path: Path) -> None:
    text = "notifications:\n  endpoints:\n    - {name: a, url: 'http://x/', disabled: true}\n"
    assert not load_config(str(_write(tmp_path, text)), environ={}).notifications.enabled
    assert not load_config(None, environ={}).notifications.enabled


def test_endpoints_from_the_environment(tmp_path: Path) -> None:
    environ = {"REGISTRY_NOTIFICATIONS_ENDPOINTS": "[{name: env, url: 'http://127.0.0.1:1/e'}]"}
    config = load_config(None, environ=environ)
    assert [e.name for e in config.notifications.endpoints] == ["env"]


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("{url: 'http://x/'}", r"notifications\.endpoints\[0\]\.name: required"),
        ("{name: a}", r"notifications\.endpoints\[0\]\.url: required"),
        ("{name: a, url: 'ftp://x/'}", r"\.url: expected an http\(s\) URL"),
        ("{name: a, url: 'http://x/', timeot: 1s}", r"\[0\]\.timeot: unknown key"),
        ("{name: a, url: 'http://x/', timeout: soon}", r"\[0\]\.timeout: 'soon' is not a duration"),
        ("{name: a, url: 'http://x/', ignore: {actions: [pul]}}", r"ignore\.actions: unknown"),
        ("{name: a, url: 'http://x/', ignore: {media: []}}", r"ignore\.media: unknown key"),
        ("{name: a, url: 'http://x/', headers: {A: 1}}", r"\.headers\.A: expected a list"),
        ("{name: a, url: 'http://x/', batch: 0}", r"\.batch: expected a positive integer"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, endpoint: str, message: str) -> None:
    text = f"notifications:\n  endpoints:\n    - {endpoint}\n"
    with pytest.raises(ConfigError, match=message):
        load_config(str(_write(tmp_path, text)), environ={})


def test_two_endpoints_of_one_name_are_refused(tmp_path: Path) -> None:
    text = """\
notifications:
  endpoints:
    - {name: a, url: "http://x/1"}
    - {name: a, url: "http://x/2"}
"""
    with pytest.raises(ConfigError, match=r"endpoints\[1\]\.name: 'a' names another endpoint"):
        load_config(str(_write(tmp_path, text)), environ={})


@pytest.mark.parametrize(
    ("value", "size"),
    [(None, 1 << 30), (65536, 65536), ("512MiB", 512 << 20), ("2GB", 2_000_000_000),
     ("1.5g", 1_500_000_000), ("100 KiB", 102400)],
)  # fmt: skip
def test_the_queue_size_cap(tmp_path: Path, value: object, size: int) -> None:
    text = "notifications:\n  endpoints:\n    - {name: a, url: 'http://x/'}\n"
    if value is not None:
        text += f"  queue: {{maxsize: {value}}}\n"
    config = load_config(str(_write(tmp_path, text)), environ={})
    assert config.notifications.queue_maxsize == size


@pytest.mark.parametrize("value", ["1000", "lots", "5 parsecs", "true", "-1"])
def test_a_bad_queue_size_is_named(tmp_path: Path, value: str) -> None:
    text = f"notifications:\n  queue: {{maxsize: {value}}}\n"
    with pytest.raises(ConfigError, match=r"notifications\.queue\.maxsize"):
        load_config(str(_write(tmp_path, text)), environ={})
