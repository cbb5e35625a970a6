"""The ``redis`` section and ``storage.cache``: registry:2's keys, distribution 3's
``addrs``, environment overrides, errors naming the key, and the password kept hidden."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from registry.config import (
    CACHE_SIZE,
    REDIS_DIALTIMEOUT,
    REDIS_IOTIMEOUT,
    ConfigError,
    RedisConfig,
    Secret,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]

# registry:2's documented example, with the cache that uses it.
REGISTRY2_REDIS = """\
version: 0.1
storage:
  cache:
    blobdescriptor: redis
  filesystem:
    rootdirectory: /var/lib/registry
redis:
  addr: localhost:6379
  password: asecret
  db: 0
  dialtimeout: 10ms
  readtimeout: 10ms
  writetimeout: 10ms
  pool:
    maxidle: 16
    maxactive: 64
    idletimeout: 300s
  tls:
    enabled: false
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_no_redis_and_no_cache_by_default() -> None:
    config = load_config(None, environ={})
    assert config.redis == RedisConfig()
    assert config.redis.enabled is False
    assert config.storage.cache.blobdescriptor is None
    assert config.storage.cache.blobdescriptorsize == CACHE_SIZE


def test_registry2_example_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, REGISTRY2_REDIS), environ={})
    redis = config.redis
    assert config.storage.cache.blobdescriptor == "redis"
    assert redis.addrs == ("localhost:6379",)
    assert redis.password == Secret("asecret")
    assert redis.db == 0
    assert (redis.dialtimeout, redis.readtimeout, redis.writetimeout) == (0.01, 0.01, 0.01)
    assert (redis.pool.maxidle, redis.pool.maxactive, redis.pool.idletimeout) == (16, 64, 300.0)
    assert redis.tls.enabled is False
    # What redis-py cannot do is said, once, naming the keys.
    assert config.warnings == (
        "redis.pool.maxidle and idletimeout: not applied (each worker keeps the connections "
        "it opened, up to redis.pool.maxactive)",
    )


def test_the_stock_image_config_gets_the_inmemory_cache_without_a_warning(
    tmp_path: Path,
) -> None:
    text = "version: 0.1\nstorage:\n  cache:\n    blobdescriptor: inmemory\n"
    config = load_config(write(tmp_path, text), environ={})
    assert config.storage.cache.blobdescriptor == "inmemory"
    assert config.warnings == ()


def test_inmemory_with_deletes_and_several_workers_warns() -> None:
    environ = {
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "inmemory",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
    }
    config = load_config(None, environ=environ)
    assert any("inmemory keeps one cache per worker" in w for w in config.warnings)
    one_worker = load_config(None, environ={**environ, "REGISTRY_HTTP_WORKERS": "1"})
    assert one_worker.warnings == ()


def test_environment_overrides() -> None:
    environ = {
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis",
        "REGISTRY_REDIS_ADDR": "redis.example:6380",
        "REGISTRY_REDIS_PASSWORD": "from-env",
        "REGISTRY_REDIS_DB": "3",
        "REGISTRY_REDIS_DIALTIMEOUT": "250ms",
        "REGISTRY_REDIS_READTIMEOUT": "1s",
        "REGISTRY_REDIS_POOL_MAXACTIVE": "8",
        "REGISTRY_REDIS_TLS_ENABLED": "true",
    }
    redis = load_config(None, environ=environ).redis
    assert redis.addrs == ("redis.example:6380",)
    assert redis.password == Secret("from-env")
    assert redis.db == 3
    assert (redis.dialtimeout, redis.readtimeout, redis.writetimeout) == (0.25, 1.0, 0.5)
    assert redis.pool.maxactive == 8
    assert redis.tls.enabled is True
    addrs = load_config(
        None,
        environ={
            "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis",
            "REGISTRY_REDIS_ADDRS": "[a.example:6379, '[::1]:6379', ':6390']",
        },
    ).redis.addrs
    assert addrs == ("a.example:6379", "[::1]:6379", "localhost:6390")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, REGISTRY2_REDIS)
    config = load_config(path, environ={"REGISTRY_REDIS_ADDR": "10.0.0.9:6379"})
    assert config.redis.addrs == ("10.0.0.9:6379",)


def test_defaults_when_timeouts_are_absent_or_zero() -> None:
    environ = {"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis", "REGISTRY_REDIS_ADDR": "r:1"}
    redis = load_config(None, environ=environ).redis
    assert redis.dialtimeout == REDIS_DIALTIMEOUT
    assert redis.readtimeout == redis.writetimeout == REDIS_IOTIMEOUT
    # registry:2 reads 0 (and a bare integer of nanoseconds) as Go does.
    zero = load_config(None, environ={**environ, "REGISTRY_REDIS_READTIMEOUT": "0"}).redis
    assert zero.readtimeout == REDIS_IOTIMEOUT
    nanos = load_config(None, environ={**environ, "REGISTRY_REDIS_READTIMEOUT": "2000000"}).redis
    assert nanos.readtimeout == 0.002


def test_layerinfo_is_registry2s_old_name() -> None:
    environ = {"REGISTRY_STORAGE_CACHE_LAYERINFO": "inmemory"}
    assert load_config(None, environ=environ).storage.cache.blobdescriptor == "inmemory"
    both = {**environ, "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": ""}
    assert load_config(None, environ=both).storage.cache.blobdescriptor is None


def test_blobdescriptorsize() -> None:
    environ = {
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "inmemory",
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTORSIZE": "500",
    }
    assert load_config(None, environ=environ).storage.cache.blobdescriptorsize == 500


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis"}, r"storage\.cache\.blobdescriptor"),
        ({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "memcached"}, r"storage\.cache\.blobdescriptor"),
        ({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTORSIZE": "0"}, r"storage\.cache\.blobdescriptorsize"),
        ({"REGISTRY_REDIS_ADDR": "no-port"}, r"redis\.addr"),
        ({"REGISTRY_REDIS_ADDRS": "[a:1, b]"}, r"redis\.addrs"),
        ({"REGISTRY_REDIS_ADDRS": "[]"}, r"redis\.addrs"),
        ({"REGISTRY_REDIS_ADDR": "a:1", "REGISTRY_REDIS_ADDRS": "[b:1]"}, r"redis\.addrs"),
        ({"REGISTRY_REDIS_DB": "-1"}, r"redis\.db"),
        ({"REGISTRY_REDIS_DIALTIMEOUT": "soon"}, r"redis\.dialtimeout"),
        ({"REGISTRY_REDIS_READTIMEOUT": "-1s"}, r"redis\.readtimeout"),
        ({"REGISTRY_REDIS_POOL_MAXACTIVE": "many"}, r"redis\.pool\.maxactive"),
        ({"REGISTRY_REDIS_POOL_IDLETIMEOUT": "long"}, r"redis\.pool\.idletimeout"),
        ({"REGISTRY_REDIS_TLS_ENABLED": "yes please"}, r"redis\.tls\.enabled"),
        ({"REGISTRY_REDIS_TLS_CERTIFICATE": "/c.pem"}, r"redis\.tls\.key"),
        ({"REGISTRY_REDIS_TLS_KEY": "/k.pem"}, r"redis\.tls\.certificate"),
        (
            {"REGISTRY_REDIS_TLS_ENABLED": "false", "REGISTRY_REDIS_TLS_CLIENTCAS": "[/ca.pem]"},
            r"redis\.tls\.enabled",
        ),
    ],
)
def test_bad_values_name_their_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(None, environ=environ)


def test_a_typo_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 0.1\nredis:\n  adr: localhost:6379\n")
    with pytest.raises(ConfigError, match=r"redis\.adr: unknown configuration key"):
        load_config(path, environ={})
    path = write(tmp_path, "version: 0.1\nstorage:\n  cache:\n    blobdescripter: redis\n")
    with pytest.raises(ConfigError, match=r"storage\.cache\.blobdescripter: unknown"):
        load_config(path, environ={})


def test_tls_files_enable_tls(tmp_path: Path) -> None:
    environ = {
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis",
        "REGISTRY_REDIS_ADDR": "r:6379",
        "REGISTRY_REDIS_TLS_CERTIFICATE": "/c.pem",
        "REGISTRY_REDIS_TLS_KEY": "/k.pem",
        "REGISTRY_REDIS_TLS_CLIENTCAS": "[/ca1.pem, /ca2.pem]",
    }
    tls = load_config(None, environ=environ).redis.tls
    assert tls.enabled is True
    assert (tls.certificate, tls.key) == ("/c.pem", "/k.pem")
    assert tls.clientcas == ("/ca1.pem", "/ca2.pem")


def test_redis_without_the_cache_warns_that_it_is_unused() -> None:
    config = load_config(None, environ={"REGISTRY_REDIS_ADDR": "r:6379"})
    assert config.redis.addrs == ("r:6379",)
    assert config.warnings == (
        "redis: unused; only storage.cache.blobdescriptor: redis uses it (no connection made)",
    )


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        check=False,
        timeout=60,
    )


def test_check_config_shows_the_section_and_never_the_password(tmp_path: Path) -> None:
    path = write(tmp_path, REGISTRY2_REDIS.replace("asecret", "s3cr3t-pa55"))
    result = run_cli("check-config", "--config", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-pa55" not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["redis"]["password"] == "********"
    assert shown["redis"]["addrs"] == ["localhost:6379"]
    assert shown["storage"]["cache"] == {"blobdescriptor": "redis", "blobdescriptorsize": 10000}


def test_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    config = REGISTRY2_REDIS.replace(
        "    enabled: false\n", f"    enabled: true\n    clientcas: [{tmp_path / 'missing.pem'}]\n"
    )
    result = run_cli("check-config", "--config", write(tmp_path, config), cwd=tmp_path)
    assert result.returncode == 2
    assert "redis.tls.clientcas" in result.stderr and "missing.pem" in result.stderr
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    bad = tmp_path / "bad.pem"
    config = REGISTRY2_REDIS.replace(
        "    enabled: false\n", f"    enabled: true\n    certificate: {bad}\n    key: {bad}\n"
    )
    result = run_cli("check-config", "--config", write(tmp_path, config), cwd=tmp_path)
    assert result.returncode == 2
    assert "redis.tls.certificate" in result.stderr


PROBE = """
import sys
from registry.app import create_asgi_apps
from registry.config import load_config
from registry.server import _preload
config = load_config(None, environ=dict(arg.split("=", 1) for arg in sys.argv[1:]))
_preload(config)
create_asgi_apps(config)
print("redis" in sys.modules, "redis.asyncio" in sys.modules)
"""


@pytest.mark.parametrize(
    ("environ", "loaded"),
    [
        ([], "False False"),
        (["REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR=inmemory"], "False False"),
        (["REGISTRY_REDIS_ADDR=127.0.0.1:9"], "False False"),  # Unused: not loaded.
        (
            ["REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR=redis", "REGISTRY_REDIS_ADDR=127.0.0.1:9"],
            "True True",
        ),
    ],
)
def test_redis_py_is_imported_only_when_configured(
    tmp_path: Path, environ: list[str], loaded: str
) -> None:
    """Workers are forked from a supervisor that preloads what they run: redis-py only
    where the configuration uses it, and then before the fork (building the app makes
    no connection)."""
    root = f"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY={tmp_path}"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, root, *environ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == loaded
