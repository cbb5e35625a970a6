"""Configuration: registry:2 keys, environment overrides, flags, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from registry.config import (
    DEFAULT_ADDR,
    Config,
    ConfigError,
    env_overrides,
    load_config,
    parse_duration,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"

# registry:2's own image ships this file as /etc/docker/registry/config.yml.
REGISTRY2_IMAGE_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_no_file_gives_the_documented_defaults() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.storage.driver == "filesystem"
    assert config.storage.parameters == {"rootdirectory": "data"}
    assert config.http.addr == DEFAULT_ADDR == "localhost:5000"
    assert config.storage.delete_enabled is False
    assert config.storage.upload_purging.age == 168 * 3600
    assert config.catalog_maxentries == 1000


def test_redirects_are_on_unless_disabled(tmp_path: Path) -> None:
    assert load_config(None, environ={}).storage.redirect is True
    path = write(tmp_path, "version: 0.1\nstorage:\n  redirect:\n    disable: true\n")
    assert load_config(path, environ={}).storage.redirect is False
    environ = {"REGISTRY_STORAGE_REDIRECT_DISABLE": "true"}
    assert load_config(None, environ=environ).storage.redirect is False
    with pytest.raises(ConfigError, match=r"storage\.redirect\.disable"):
        load_config(None, environ={"REGISTRY_STORAGE_REDIRECT_DISABLE": "maybe"})


def test_example_loads_without_warnings_and_matches_the_defaults() -> None:
    config = load_config(str(EXAMPLE), environ={})
    assert config.warnings == ()
    defaults = Config()
    assert config.storage == defaults.storage
    assert config.http.addr == defaults.http.addr
    assert config.http.headers == {"X-Content-Type-Options": ("nosniff",)}
    assert config.log.fields == {"service": "registry"}
    assert config.http.draintimeout == 5.0


def test_registry2_image_config_starts_with_warnings_for_what_is_ignored(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, REGISTRY2_IMAGE_CONFIG), environ={})
    assert config.http.addr == ":5000"
    assert config.storage.parameters == {"rootdirectory": "/var/lib/registry"}
    warned = " ".join(config.warnings)
    assert config.storage.cache.blobdescriptor == "inmemory"  # Supported now: no warning.
    assert "storage.cache" not in warned
    assert "health" not in warned  # Supported: the image's storage check runs.
    assert config.health.storagedriver.enabled is True
    assert config.health.storagedriver.interval == 10.0
    assert config.health.storagedriver.threshold == 3


def test_environment_overrides_file_and_flags_override_both(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version: 0.1\nhttp:\n  addr: :5000\nstorage:\n  filesystem:\n    rootdirectory: /a\n",
    )
    environ = {
        "REGISTRY_HTTP_ADDR": "127.0.0.1:6000",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/b",
        "REGISTRY_CATALOG_MAXENTRIES": "50",
    }
    config = load_config(path, environ=environ)
    assert config.http.addr == "127.0.0.1:6000"
    assert config.storage.delete_enabled is True
    assert config.storage.parameters == {"rootdirectory": "/b"}
    assert config.catalog_maxentries == 50
    flagged = load_config(path, environ=environ, flags={"http.addr": "[::1]:7000"})
    assert flagged.http.addr == "[::1]:7000"


def test_environment_map_value_sets_a_whole_section() -> None:
    assert env_overrides({"REGISTRY_STORAGE_DELETE": "{enabled: true}"}) == {
        "storage.delete.enabled": True
    }
    assert env_overrides({"OTHER": "x", "REGISTRY_LOG_LEVEL": "debug"}) == {"log.level": "debug"}


def test_unknown_environment_variable_warns_instead_of_failing() -> None:
    config = load_config(None, environ={"REGISTRY_NOTHING_HERE": "1"})
    assert any("REGISTRY_NOTHING_HERE" in warning for warning in config.warnings)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("http:\n  adr: :5000\n", r"http\.adr: unknown configuration key"),
        (
            "storage:\n  delete:\n    enabled: yes please\n",
            r"storage\.delete\.enabled: expected true or false",
        ),
        (
            "storage:\n  maintenance:\n    uploadpurging:\n      age: 10\n",
            r"uploadpurging\.age: expected a duration",
        ),
        (
            "storage:\n  maintenance:\n    uploadpurging:\n      age: 10 days\n",
            r"uploadpurging\.age: '10 days' is not",
        ),
        ("http:\n  addr: nope\n", r"http\.addr: expected HOST:PORT"),
        ("http:\n  addr: localhost:99999\n", r"http\.addr: expected HOST:PORT"),
        ("log:\n  level: loud\n", r"log\.level: expected one of error, warn, info, debug"),
        ("version: 0.2\n", r"version: only configuration version 0\.1"),
        ("catalog:\n  maxentries: 0\n", r"catalog\.maxentries: expected a positive integer"),
        (
            "storage:\n  azure:\n    accountname: a\n",
            r"storage\.azure: the azure storage driver is not supported yet",
        ),
        ("http:\n  tls:\n    certificate: /c.pem\n", r"http\.tls\.key: required"),
        (
            "http:\n  tls:\n    minimumtls: tls1.1\n",
            r"http\.tls\.minimumtls: tls1\.1 is not offered",
        ),
        ("http:\n  host: registry.example.com\n", r"http\.host: expected a URL"),
        (
            "storage:\n  inmemory:\n  filesystem:\n    rootdirectory: /x\n",
            r"configure exactly one driver",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(
            write(
                tmp_path, "version: 0.1\n" + yaml_text if "version" not in yaml_text else yaml_text
            ),
            environ={},
        )


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match=r"storage\.delete\.enabled.*REGISTRY_STORAGE_DELETE_ENABLED"
    ):
        load_config(None, environ={"REGISTRY_STORAGE_DELETE_ENABLED": "maybe"})


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 0.1\nhttp:\n  addr: [unclosed\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert str(raised.value).startswith(f"{path}:4:1:") or str(raised.value).startswith(
        f"{path}:3:"
    )


def test_top_level_must_be_a_map(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a map"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(str(tmp_path / "absent.yml"), environ={})


def test_inmemory_driver(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "version: 0.1\nstorage:\n  inmemory:\n"), environ={})
    assert config.storage.driver == "inmemory"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("168h", 168 * 3600.0),
        ("1h30m", 5400.0),
        ("45m", 2700.0),
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("0", 0.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration("k", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "10", "10d", "1h 30m", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^k: "):
        parse_duration("k", text)


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 0.1\nhttp:\n  adr: :5000\n")
    result = subprocess.run(
        [sys.executable, "-m", "registry", "serve", "--config", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "http.adr: unknown configuration key" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_check_config_prints_the_merged_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "registry", "check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"addr": "localhost:5000"' in result.stdout


def test_cipher_suites_in_registry2_go_names_become_openssl_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version: 0.1\nhttp:\n  tls:\n    ciphersuites:\n"
        "      - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
        "      - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256\n"
        "      - TLS_AES_128_GCM_SHA256\n"
        "      - ECDHE-ECDSA-AES256-GCM-SHA384\n",
    )
    assert load_config(path, environ={}).http.tls.ciphersuites == (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    )


@pytest.mark.parametrize(
    "name", ["TLS_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"]
)
def test_broken_cipher_suites_are_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"version: 0.1\nhttp:\n  tls:\n    ciphersuites: [{name}]\n")
    with pytest.raises(ConfigError, match=rf"http\.tls\.ciphersuites: {name} is broken"):
        load_config(path, environ={})


def _uncommented(text: str, start: str, stop: str | None = None) -> str:
    """The commented block from the line ``start`` to before ``stop``, as YAML."""
    lines = text.splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith(start))
    last = next(
        (n for n, line in enumerate(lines) if stop and n > first and line.startswith(stop)),
        len(lines),
    )
    return "\n".join(line[2:] for line in lines[first:last] if line.startswith("# ")) + "\n"


def test_example_access_sections_load_as_documented(tmp_path: Path) -> None:
    """The commented auth and access sections of config.example.yaml are valid as written."""
    text = EXAMPLE.read_text()
    basic = _uncommented(text, "# auth:", "#   token:")
    rules = _uncommented(text, "# access:", "#   tokenservice:")
    config = load_config(write(tmp_path, "version: 0.1\n" + basic + rules), environ={})
    assert config.auth.htpasswd is not None
    assert config.access.policy is not None
    assert config.access.policy.groups == {"developers": ("alice", "bob")}
    token = _uncommented(text, "#   token:", "# access:")
    service = _uncommented(text, "#   tokenservice:")
    document = "version: 0.1\nauth:\n" + token + "access:\n" + service
    config = load_config(write(tmp_path, document), environ={})
    assert config.auth.token is not None and config.auth.token.autoredirect is False
    assert config.access.tokenservice is not None
    assert config.access.tokenservice.refreshexpiration == 720 * 3600
    assert config.access.logins.delay == 1.0
