"""``storage.s3``: registry:2's keys and defaults, REGISTRY_STORAGE_S3_* overrides, errors
that name the key, and credentials that never show (no gateway needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from registry.config import ConfigError, Secret, load_config
from registry.storage.driver import factory
from registry.storage.driver.s3 import DEFAULT_LOCK_LEASE, S3Driver

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

#: Every key registry:2 documents for storage.s3 that this driver reads.
FULL = f"""\
version: 0.1
storage:
  s3:
    region: eu-west-1
    regionendpoint: http://127.0.0.1:7480
    bucket: images
    rootdirectory: /registry
    accesskey: AKIAIOSFODNN7EXAMPLE
    secretkey: {SECRET}
    secure: false
    skipverify: true
    v4auth: true
    chunksize: 6291456
    multipartcopychunksize: 10485760
    multipartcopymaxconcurrency: 8
    multipartcopythresholdsize: 20971520
    forcepathstyle: true
    encrypt: true
    keyid: arn:aws:kms:eu-west-1:111122223333:key/abc
    storageclass: reduced_redundancy
  delete:
    enabled: true
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def s3(tmp_path: Path, settings: str, environ: dict[str, str] | None = None):
    text = "version: 0.1\nstorage:\n  s3:\n" + "".join(
        f"    {line}\n" for line in settings.strip().splitlines()
    )
    return load_config(write(tmp_path, text), environ=environ or {})


def test_every_registry2_key_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), environ={})
    assert config.warnings == ()
    assert config.storage.driver == "s3"
    assert config.storage.delete_enabled is True
    assert dict(config.storage.parameters) == {
        "region": "eu-west-1",
        "regionendpoint": "http://127.0.0.1:7480",
        "bucket": "images",
        "rootdirectory": "/registry",
        "accesskey": "AKIAIOSFODNN7EXAMPLE",
        "secretkey": Secret(SECRET),
        "secure": False,
        "skipverify": True,
        "v4auth": True,
        "chunksize": 6291456,
        "multipartcopychunksize": 10485760,
        "multipartcopymaxconcurrency": 8,
        "multipartcopythresholdsize": 20971520,
        "forcepathstyle": True,
        "encrypt": True,
        "keyid": "arn:aws:kms:eu-west-1:111122223333:key/abc",
        "storageclass": "REDUCED_REDUNDANCY",
    }


def test_the_factory_builds_the_driver_with_the_secret_revealed_only_to_it(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, FULL), environ={})
    driver = factory.create_driver(config.storage.driver, config.storage.parameters)
    assert isinstance(driver, S3Driver)
    assert driver.bucket == "images"
    assert driver.key("/docker/registry/v2/x") == "registry/docker/registry/v2/x"
    assert driver.chunksize == 6291456
    assert driver.copy_chunksize == 10485760
    assert driver.copy_concurrency == 8
    assert driver.copy_threshold == 20971520
    assert driver.lock_lease == DEFAULT_LOCK_LEASE
    assert driver._client_args["aws_secret_access_key"] == SECRET
    assert driver._client_args["endpoint_url"] == "http://127.0.0.1:7480"
    assert driver._client_args["verify"] is False
    assert driver._object_args == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "arn:aws:kms:eu-west-1:111122223333:key/abc",
        "StorageClass": "REDUCED_REDUNDANCY",
    }
    assert SECRET not in repr(driver)


def test_defaults_are_registry2s(tmp_path: Path) -> None:
    config = s3(tmp_path, "region: us-east-1\nbucket: b")
    assert dict(config.storage.parameters) == {"region": "us-east-1", "bucket": "b"}
    driver = factory.create_driver("s3", config.storage.parameters)
    assert isinstance(driver, S3Driver)
    assert driver.chunksize == 10 * 1024 * 1024
    assert driver.copy_chunksize == 32 * 1024 * 1024
    assert driver.copy_concurrency == 100
    assert driver.copy_threshold == 32 * 1024 * 1024
    assert driver._object_args == {"StorageClass": "STANDARD"}
    assert driver.key("/docker/registry/v2/repositories") == "docker/registry/v2/repositories"
    # No keys: botocore's own chain (AWS_* variables, ~/.aws files, instance roles).
    assert "aws_access_key_id" not in driver._client_args
    assert driver._client_args["endpoint_url"] is None
    assert driver._client_args["use_ssl"] is True
    config_of = driver._client_args["config"]
    assert config_of.signature_version == "s3v4"
    assert config_of.s3 == {"addressing_style": "auto"}


def test_an_endpoint_is_addressed_by_path_as_registry2_does(tmp_path: Path) -> None:
    driver = factory.create_driver(
        "s3",
        s3(tmp_path, "region: r\nbucket: b\nregionendpoint: ceph:7480\nsecure: false")
        .storage.parameters,
    )
    assert isinstance(driver, S3Driver)
    assert driver._client_args["endpoint_url"] == "http://ceph:7480"  # Scheme from secure.
    assert driver._client_args["config"].s3 == {"addressing_style": "path"}
    explicit = factory.create_driver(
        "s3",
        s3(
            tmp_path,
            "region: r\nbucket: b\nregionendpoint: https://s3.example\nforcepathstyle: false",
        ).storage.parameters,
    )
    assert isinstance(explicit, S3Driver)
    assert explicit._client_args["config"].s3 == {"addressing_style": "auto"}


def test_signature_v2_and_no_storage_class(tmp_path: Path) -> None:
    config = s3(
        tmp_path,
        "region: r\nbucket: b\nregionendpoint: http://h:1\nv4auth: false\nstorageclass: NONE",
    )
    driver = factory.create_driver("s3", config.storage.parameters)
    assert isinstance(driver, S3Driver)
    assert driver._client_args["config"].signature_version == "s3"
    assert driver._object_args == {}


def test_encryption_without_a_key_id_is_aes256(tmp_path: Path) -> None:
    config = s3(tmp_path, "region: r\nbucket: b\nencrypt: true")
    driver = factory.create_driver("s3", config.storage.parameters)
    assert isinstance(driver, S3Driver)
    assert driver._object_args["ServerSideEncryption"] == "AES256"


def test_environment_overrides_every_key(tmp_path: Path) -> None:
    environ = {
        "REGISTRY_STORAGE_S3_REGION": "eu-central-1",
        "REGISTRY_STORAGE_S3_BUCKET": "from-env",
        "REGISTRY_STORAGE_S3_REGIONENDPOINT": "http://127.0.0.1:9000",
        "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "/env",
        "REGISTRY_STORAGE_S3_ACCESSKEY": "ENVKEY",
        "REGISTRY_STORAGE_S3_SECRETKEY": SECRET,
        "REGISTRY_STORAGE_S3_SECURE": "false",
        "REGISTRY_STORAGE_S3_CHUNKSIZE": "5242880",
        "REGISTRY_STORAGE_S3_MULTIPARTCOPYMAXCONCURRENCY": "4",
        "REGISTRY_STORAGE_S3_STORAGECLASS": "STANDARD_IA",
        "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
    }
    config = s3(tmp_path, "region: us-east-1\nbucket: from-file\nchunksize: 6291456", environ)
    parameters = config.storage.parameters
    assert parameters["region"] == "eu-central-1"
    assert parameters["bucket"] == "from-env"
    assert parameters["rootdirectory"] == "/env"
    assert parameters["accesskey"] == "ENVKEY"
    assert parameters["secretkey"] == Secret(SECRET)
    assert parameters["secure"] is False
    assert parameters["chunksize"] == 5242880
    assert parameters["multipartcopymaxconcurrency"] == 4
    assert parameters["storageclass"] == "STANDARD_IA"
    assert parameters["forcepathstyle"] is True


def test_environment_alone_configures_s3() -> None:
    config = load_config(
        None,
        environ={"REGISTRY_STORAGE_S3_REGION": "r", "REGISTRY_STORAGE_S3_BUCKET": "b"},
    )
    assert config.storage.driver == "s3"
    assert dict(config.storage.parameters) == {"region": "r", "bucket": "b"}


def test_registry_storage_s3_moves_a_stock_config_to_s3(tmp_path: Path) -> None:
    """registry:2's recipe: its image's config.yml says filesystem; ``REGISTRY_STORAGE=s3``
    and the REGISTRY_STORAGE_S3_* variables switch it (the file's other settings stay)."""
    path = write(
        tmp_path,
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
        "  delete:\n    enabled: true\n",
    )
    environ = {
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_STORAGE_S3_REGION": "r",
        "REGISTRY_STORAGE_S3_BUCKET": "b",
    }
    config = load_config(path, environ=environ)
    assert config.storage.driver == "s3"
    assert dict(config.storage.parameters) == {"region": "r", "bucket": "b"}
    assert config.storage.delete_enabled is True
    # Named in the file itself: as registry:2 reads ``storage: s3``.
    assert load_config(write(tmp_path, "storage: inmemory\n"), environ={}).storage.driver == (
        "inmemory"
    )
    with pytest.raises(ConfigError, match=r"storage\.s3\.region: required"):
        load_config(path, environ={"REGISTRY_STORAGE": "s3"})
    with pytest.raises(ConfigError, match=r"storage: unknown storage driver 'floppy'"):
        load_config(path, environ={"REGISTRY_STORAGE": "floppy"})
    with pytest.raises(ConfigError, match=r"storage: the gcs storage driver is not supported"):
        load_config(path, environ={"REGISTRY_STORAGE": "gcs"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("bucket: b", r"storage\.s3\.region: required"),
        ("region: r", r"storage\.s3\.bucket: required"),
        ("region: r\nbucket: ''", r"storage\.s3\.bucket: must not be empty"),
        ("region: r\nbucket: a/b", r"storage\.s3\.bucket: 'a/b' is not a bucket name"),
        ("region: r\nbucket: b\nchunksize: 1024", r"storage\.s3\.chunksize: expected a whole"),
        ("region: r\nbucket: b\nchunksize: 10MiB", r"storage\.s3\.chunksize: expected a whole"),
        (
            "region: r\nbucket: b\nchunksize: 6442450944",
            r"storage\.s3\.chunksize: expected a whole number of bytes from 5242880 to 5368709120",
        ),
        (
            "region: r\nbucket: b\nmultipartcopychunksize: 5",
            r"storage\.s3\.multipartcopychunksize: expected",
        ),
        (
            "region: r\nbucket: b\nmultipartcopymaxconcurrency: 0",
            r"storage\.s3\.multipartcopymaxconcurrency: expected a whole number from 1 to",
        ),
        (
            "region: r\nbucket: b\nmultipartcopythresholdsize: -1",
            r"storage\.s3\.multipartcopythresholdsize: expected",
        ),
        ("region: r\nbucket: b\nsecure: maybe", r"storage\.s3\.secure: expected true or false"),
        ("region: r\nbucket: b\nencrypt: 1", r"storage\.s3\.encrypt: expected true or false"),
        ("region: r\nbucket: b\nstorageclass: COLD", r"storage\.s3\.storageclass: expected one"),
        (
            "region: r\nbucket: b\nregionendpoint: 'ftp://x/'",
            r"storage\.s3\.regionendpoint: expected a URL",
        ),
        ("region: r\nbucket: b\naccesskey: AK", r"storage\.s3\.secretkey: required with"),
        ("region: r\nbucket: b\nsecretkey: SK", r"storage\.s3\.accesskey: required with"),
        ("region: r\nbucket: b\nsessiontoken: T", r"storage\.s3\.sessiontoken: needs"),
        ("region: r\nbucket: b\nv4auth: false", r"storage\.s3\.v4auth: signature version 2 needs"),
        ("region: r\nbucket: b\nbukcet: typo", r"storage\.s3\.bukcet: unknown configuration key"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, settings: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        s3(tmp_path, settings)


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"storage\.s3\.chunksize.*REGISTRY_STORAGE_S3_CHUNKSIZE"
    ):
        s3(tmp_path, "region: r\nbucket: b", {"REGISTRY_STORAGE_S3_CHUNKSIZE": "tiny"})


@pytest.mark.parametrize("other", ["filesystem:\n    rootdirectory: /x", "inmemory:"])
def test_exactly_one_driver(tmp_path: Path, other: str) -> None:
    text = f"version: 0.1\nstorage:\n  s3:\n    region: r\n    bucket: b\n  {other}\n"
    with pytest.raises(ConfigError, match=r"storage: configure exactly one driver, not both"):
        load_config(write(tmp_path, text), environ={})
    with pytest.raises(ConfigError, match=r"configure exactly one driver"):
        load_config(
            write(tmp_path, "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n"),
            environ={"REGISTRY_STORAGE_S3_REGION": "r", "REGISTRY_STORAGE_S3_BUCKET": "b"},
        )


def test_registry2_keys_this_driver_does_not_read_warn(tmp_path: Path) -> None:
    config = s3(
        tmp_path, "region: r\nbucket: b\nobjectacl: private\nuseragent: me\nkeyid: k"
    )
    warned = " ".join(config.warnings)
    assert "storage.s3.objectacl" in warned
    assert "storage.s3.useragent" in warned
    assert "storage.s3.keyid: ignored without storage.s3.encrypt" in warned


def test_empty_credentials_mean_the_default_chain(tmp_path: Path) -> None:
    config = s3(tmp_path, "region: r\nbucket: b\naccesskey: ''\nsecretkey: ''")
    assert dict(config.storage.parameters) == {"region": "r", "bucket": "b"}


def test_the_secret_never_shows(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), environ={})
    assert SECRET not in repr(config)
    assert SECRET not in str(config.storage.parameters)
    secret = config.storage.parameters["secretkey"]
    assert isinstance(secret, Secret)
    assert str(secret) == "********"
    assert secret.reveal() == SECRET


def test_check_config_prints_the_secret_as_stars(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    result = subprocess.run(
        [sys.executable, "-m", "registry", "check-config", "--config", path],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert SECRET not in result.stdout + result.stderr
    shown = json.loads(result.stdout)["storage"]["parameters"]
    assert shown["secretkey"] == "********"
    assert shown["accesskey"] == "AKIAIOSFODNN7EXAMPLE"
