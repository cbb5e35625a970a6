"""``registry certs`` in-process: command forms, output, exit codes, and what OpenSSL says."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tools import certs, certs_cli
from tools.certs_x509 import CA, load_certificates, load_private_key

main = certs_cli.main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("openssl"), "these tests check certificates with the openssl command"
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sans(path: Path) -> list[str]:
    cert = load_certificates(path)[0]
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in ext]


@pytest.fixture
def d(tmp_path: Path) -> Path:
    return tmp_path / "certs"


def test_both_entry_points_are_the_same_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert certs.main(["init", "--dir", str(tmp_path)]) == 0
    assert "created CA" in capsys.readouterr().out
    assert (tmp_path / "ca.crt").exists()


def test_help_names_the_program(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert out.startswith("usage: registry certs")
    for command in ("init", "server", "client", "bundle", "show", "trust"):
        assert command in out


def test_default_folder_is_certs_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "init")[0] == 0
    assert (tmp_path / "certs" / "ca.crt").exists() and (tmp_path / "certs" / "ca.key").exists()


def test_init_twice(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "init", "--dir", str(d))
    assert code == 0 and out.startswith(f"created CA {d / 'ca.crt'}")
    before = (d / "ca.key").read_bytes()
    code, out, _ = run(capsys, "init", "--dir", str(d))
    assert code == 0
    assert out.startswith("CA exists already") and "nothing done" in out
    assert (d / "ca.key").read_bytes() == before


def test_init_force_replaces(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init", "--dir", str(d))
    before = (d / "ca.key").read_bytes()
    code, out, _ = run(capsys, "init", "--dir", str(d), "--force")
    assert code == 0 and out.startswith("replaced CA")
    assert (d / "ca.key").read_bytes() != before


@pytest.mark.parametrize(
    ("key_type", "check"),
    [
        (
            "ecdsa-p256",
            lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1",
        ),
        (
            "ecdsa-p384",
            lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp384r1",
        ),
        ("rsa3072", lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 3072),
        ("rsa4096", lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 4096),
    ],
)
def test_init_key_types(
    d: Path, capsys: pytest.CaptureFixture[str], key_type: str, check: object
) -> None:
    assert run(capsys, "init", "--dir", str(d), "--key-type", key_type)[0] == 0
    assert check(load_private_key(d / "ca.key"))  # type: ignore[operator]


def test_init_with_passphrase_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    code, out, _ = run(
        capsys, "init", "--dir", str(tmp_path / "a"), "--passphrase-file", str(secret)
    )
    assert code == 0 and "(encrypted)" in out
    assert (
        openssl(
            "pkey", "-in", str(tmp_path / "a/ca.key"), "-passin", "pass:from-file", "-noout"
        ).returncode
        == 0
    )

    monkeypatch.setenv("REGISTRY_CA_PASSPHRASE", "from-env")
    assert run(capsys, "init", "--dir", str(tmp_path / "b"))[0] == 0
    assert (
        openssl(
            "pkey", "-in", str(tmp_path / "b/ca.key"), "-passin", "pass:from-env", "-noout"
        ).returncode
        == 0
    )

    # server needs it: missing, wrong, right.
    monkeypatch.delenv("REGISTRY_CA_PASSPHRASE")
    code, _, err = run(
        capsys, "server", "--dir", str(tmp_path / "b"), "--no-default-hosts", "--host", "a.example"
    )
    assert code == 1
    assert "ca.key: the key is encrypted and no passphrase was given" in err
    assert "--passphrase-file FILE or $REGISTRY_CA_PASSPHRASE" in err
    assert "Traceback" not in err
    monkeypatch.setenv("REGISTRY_CA_PASSPHRASE", "nope")
    code, _, err = run(
        capsys, "server", "--dir", str(tmp_path / "b"), "--no-default-hosts", "--host", "a.example"
    )
    assert code == 1 and "wrong passphrase" in err
    monkeypatch.setenv("REGISTRY_CA_PASSPHRASE", "from-env")
    assert (
        run(
            capsys,
            "server",
            "--dir",
            str(tmp_path / "b"),
            "--no-default-hosts",
            "--host",
            "a.example",
        )[0]
        == 0
    )


def test_server_without_init_makes_the_ca(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "server", "--dir", str(d), "--host", "registry.example.com", "--host", "10.9.8.7"
    )
    assert code == 0
    assert f"created CA {d / 'ca.crt'}" in out
    assert f"created server certificate {d / 'server.crt'}" in out
    names = sans(d / "server.crt")
    assert names[:2] == ["registry.example.com", "10.9.8.7"]
    assert {"localhost", "127.0.0.1", "::1"} <= set(names)
    cert = load_certificates(d / "server.crt")[0]
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert x509.IPAddress(__import__("ipaddress").ip_address("10.9.8.7")) in list(ext)
    assert x509.DNSName("registry.example.com") in list(ext)
    assert mode(d / "server.key") == 0o600 and mode(d / "ca.key") == 0o600


def test_server_no_default_hosts(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "server", "--dir", str(d), "--no-default-hosts", "--host", "::1")[0] == 0
    assert sans(d / "server.crt") == ["::1"]
    code, _, err = run(capsys, "server", "--dir", str(d / "x"), "--no-default-hosts")
    assert code == 2 and "at least one host" in err


def test_server_rerun_reissue_and_force(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("server", "--dir", str(d), "--no-default-hosts")
    run(capsys, *base, "--host", "a.example")
    key = (d / "server.key").read_bytes()
    code, out, _ = run(capsys, *base, "--host", "a.example")
    assert code == 0 and "still fits" in out and "nothing done" in out
    code, out, _ = run(capsys, *base, "--host", "b.example")
    assert code == 0
    assert f"reissued {d / 'server.crt'} for the existing key {d / 'server.key'}" in out
    assert "does not name b.example" in out
    assert (d / "server.key").read_bytes() == key
    assert sans(d / "server.crt") == ["b.example", "a.example"]
    run(capsys, *base, "--host", "b.example", "--reissue")
    assert sans(d / "server.crt") == ["b.example"]
    code, out, _ = run(capsys, *base, "--host", "b.example", "--force")
    assert code == 0 and out.startswith("replaced server certificate")
    assert (d / "server.key").read_bytes() != key


def test_server_key_type_change_needs_force(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("server", "--dir", str(d), "--no-default-hosts", "--host", "a.example")
    run(capsys, *base)
    code, _, err = run(capsys, *base, "--key-type", "rsa3072")
    assert code == 1 and "--force" in err
    assert run(capsys, *base, "--key-type", "rsa3072", "--force")[0] == 0
    key = load_private_key(d / "server.key")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072


def test_openssl_verifies_the_chain_and_purposes(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "server", "--dir", str(d), "--host", "registry.example.com")
    run(capsys, "client", "alice", "--dir", str(d))
    ca, server, client = str(d / "ca.crt"), str(d / "server.crt"), str(d / "client-alice.crt")
    done = openssl("verify", "-CAfile", ca, "-purpose", "sslserver", server)
    assert done.returncode == 0 and done.stdout.strip() == f"{server}: OK", done.stderr
    done = openssl("verify", "-CAfile", ca, "-purpose", "sslclient", client)
    assert done.returncode == 0 and done.stdout.strip() == f"{client}: OK", done.stderr
    # The purposes are real restrictions.
    assert openssl("verify", "-CAfile", ca, "-purpose", "sslclient", server).returncode != 0
    assert openssl("verify", "-CAfile", ca, "-purpose", "sslserver", client).returncode != 0
    # OpenSSL matches the names too.
    assert (
        openssl(
            "verify", "-CAfile", ca, "-verify_hostname", "registry.example.com", server
        ).returncode
        == 0
    )
    assert openssl("verify", "-CAfile", ca, "-verify_ip", "127.0.0.1", server).returncode == 0
    assert (
        openssl("verify", "-CAfile", ca, "-verify_hostname", "other.example", server).returncode
        != 0
    )
    # And another CA does not vouch for it.
    other = d.parent / "other"
    run(capsys, "init", "--dir", str(other))
    assert openssl("verify", "-CAfile", str(other / "ca.crt"), server).returncode != 0


def test_openssl_verifies_rsa_certificates(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(
        capsys,
        "server",
        "--dir",
        str(d),
        "--no-default-hosts",
        "--host",
        "a.example",
        "--ca-key-type",
        "rsa3072",
        "--key-type",
        "rsa2048",
    )
    done = openssl(
        "verify", "-CAfile", str(d / "ca.crt"), "-purpose", "sslserver", str(d / "server.crt")
    )
    assert done.returncode == 0, done.stderr
    text = openssl("x509", "-in", str(d / "server.crt"), "-noout", "-text").stdout
    assert "Digital Signature, Key Encipherment" in text
    assert "sha256WithRSAEncryption" in text


def test_openssl_reads_the_extensions(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(
        capsys,
        "server",
        "--dir",
        str(d),
        "--no-default-hosts",
        "--host",
        "a.example",
        "--host",
        "::1",
    )
    ca_text = openssl("x509", "-in", str(d / "ca.crt"), "-noout", "-text").stdout
    assert "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0" in ca_text
    assert "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign" in ca_text
    text = openssl("x509", "-in", str(d / "server.crt"), "-noout", "-text").stdout
    assert "X509v3 Basic Constraints: critical\n                CA:FALSE" in text
    assert "X509v3 Key Usage: critical\n                Digital Signature\n" in text
    assert "TLS Web Server Authentication" in text
    assert "DNS:a.example, IP Address:0:0:0:0:0:0:0:1" in text
    assert "X509v3 Subject Key Identifier" in text and "X509v3 Authority Key Identifier" in text
    assert "ecdsa-with-SHA256" in text


def test_client_command(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "client", "alice", "--dir", str(d))
    assert code == 0
    assert f"created client certificate CN=alice {d / 'client-alice.crt'}" in out
    assert mode(d / "client-alice.key") == 0o600
    code, out, _ = run(capsys, "client", "alice", "--dir", str(d))
    assert code == 0 and "nothing done" in out
    code, _, err = run(capsys, "client", "../evil", "--dir", str(d))
    assert code == 2 and "client name" in err
    assert not (d.parent / "evil.crt").exists()


def test_bundle_command(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "server", "--dir", str(d), "--host", "registry.example.com")
    code, out, err = run(
        capsys, "bundle", "registry.example.com:5000", "--dir", str(d), "--client", "ci"
    )
    assert code == 0, err
    folder = d / "certs.d" / "registry.example.com:5000"
    assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "client.cert", "client.key"]
    assert mode(folder / "client.key") == 0o600
    assert "created client certificate CN=ci" in out
    assert "/etc/docker/certs.d/registry.example.com:5000/" in out
    assert f"wrote {folder / 'client.key'} (mode 0600)" in out
    done = openssl(
        "verify",
        "-CAfile",
        str(folder / "ca.crt"),
        "-purpose",
        "sslclient",
        str(folder / "client.cert"),
    )
    assert done.returncode == 0, done.stderr


def test_bundle_ipv6_and_bad_host_port(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "server", "--dir", str(d), "--no-default-hosts", "--host", "::1")
    code, out, _ = run(capsys, "bundle", "[::1]:5000", "--dir", str(d))
    assert code == 0
    assert (d / "certs.d" / "[::1]:5000" / "ca.crt").exists()
    assert "WARNING" not in out
    for bad in ("::1:5000", "registry:99999", "registry:5000/path", "a b:1"):
        code, _, err = run(capsys, "bundle", bad, "--dir", str(d))
        assert code == 2, bad
        assert "HOST:PORT" in err or "port" in err or "label" in err


def test_bundle_warns_about_a_host_the_server_does_not_name(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "server", "--dir", str(d), "--no-default-hosts", "--host", "a.example")
    code, out, _ = run(capsys, "bundle", "b.example:5000", "--dir", str(d))
    assert code == 0
    assert "WARNING:" in out and "does not name b.example" in out


def test_bundle_without_ca_fails_clearly(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bundle", "a.example:5000", "--dir", str(d))
    assert code == 1 and "ca.crt: certificate not found" in err


def test_trust_command(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init", "--dir", str(d))
    code, out, _ = run(capsys, "trust", "a.example:5000", "--dir", str(d))
    assert code == 0
    assert out == certs.trust_instructions(d / "ca.crt", "a.example:5000")


def test_bring_your_own_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    company = CA.create("Company Root")
    (tmp_path / "root.crt").write_bytes(company.cert_pem())
    (tmp_path / "root.key").write_bytes(company.private_key_pem(b"pw"))
    (tmp_path / "pw").write_text("pw\n")
    byo = ("--ca-cert", str(tmp_path / "root.crt"), "--ca-key", str(tmp_path / "root.key"))
    d = tmp_path / "certs"
    code, _, err = run(
        capsys,
        "server",
        "--dir",
        str(d),
        "--host",
        "a.example",
        *byo,
        "--passphrase-file",
        str(tmp_path / "pw"),
    )
    assert code == 0, err
    assert (
        openssl("verify", "-CAfile", str(tmp_path / "root.crt"), str(d / "server.crt")).returncode
        == 0
    )
    code, _, err = run(
        capsys, "client", "bob", "--dir", str(d), *byo, "--passphrase-file", str(tmp_path / "pw")
    )
    assert code == 0, err
    assert (
        openssl(
            "verify",
            "-CAfile",
            str(tmp_path / "root.crt"),
            "-purpose",
            "sslclient",
            str(d / "client-bob.crt"),
        ).returncode
        == 0
    )
    assert not (d / "ca.key").exists()
    code, _, err = run(capsys, "server", "--dir", str(d), "--ca-cert", str(tmp_path / "root.crt"))
    assert code == 2 and "--ca-cert and --ca-key go together" in err


# --- show ------------------------------------------------------------------------------


def test_show_a_healthy_folder(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "server", "--dir", str(d), "--host", "registry.example.com")
    run(capsys, "client", "alice", "--dir", str(d))
    code, out, _ = run(
        capsys, "show", str(d), "--host", "registry.example.com", "--host", "127.0.0.1"
    )
    assert code == 0, out
    assert "WARNING" not in out
    for name in ("ca.crt", "server.crt", "client-alice.crt"):
        assert str(d / name) in out
    cert = load_certificates(d / "server.crt")[0]
    fingerprint = openssl(
        "x509", "-in", str(d / "server.crt"), "-noout", "-fingerprint", "-sha256"
    ).stdout
    assert fingerprint.strip().split("=", 1)[1] in out
    assert "DNS:registry.example.com" in out and "IP:127.0.0.1" in out
    assert "ECDSA P-256" in out
    assert f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC (396 days left)" in out
    assert f"signed by {d / 'ca.crt'}" in out
    assert f"{d / 'server.key'} (matches)" in out


def test_show_a_single_file_checks_against_the_ca_beside_it(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "server", "--dir", str(d), "--no-default-hosts", "--host", "a.example")
    code, out, _ = run(capsys, "show", str(d / "server.crt"))
    assert code == 0
    assert out.count("subject:") == 1 and f"signed by {d / 'ca.crt'}" in out


def test_show_warns_about_a_missing_san(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "server", "--dir", str(d), "--no-default-hosts", "--host", "a.example")
    code, out, _ = run(capsys, "show", str(d), "--host", "b.example")
    assert code == 3
    assert "WARNING: no Subject Alternative Name for b.example" in out
    # Only the server certificate is held to --host: one warning, not one per file.
    assert out.count("WARNING") == 1


def test_show_warns_about_another_ca(
    tmp_path: Path, d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "server", "--dir", str(d), "--no-default-hosts", "--host", "a.example")
    run(capsys, "init", "--dir", str(tmp_path / "other"))
    code, out, _ = run(
        capsys, "show", str(d / "server.crt"), "--ca", str(tmp_path / "other" / "ca.crt")
    )
    assert code == 3
    assert f"WARNING: not signed by the CA in {tmp_path / 'other' / 'ca.crt'}" in out


def test_show_warns_about_expired_and_expiring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    ca = CA.create(now=now - timedelta(days=100))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    expired = ca.issue_cert(
        "a.example", not_before=now - timedelta(days=50), not_after=now - timedelta(days=2)
    )
    (tmp_path / "expired.crt").write_bytes(expired.cert_chain_pem())
    code, out, _ = run(capsys, "show", str(tmp_path / "expired.crt"))
    assert code == 3
    assert f"WARNING: expired on {expired.cert.not_valid_after_utc:%Y-%m-%d}" in out
    assert "(expired 2 days ago)" in out

    soon = ca.issue_cert("a.example", days=10)
    (tmp_path / "soon.crt").write_bytes(soon.cert_chain_pem())
    code, out, _ = run(capsys, "show", str(tmp_path / "soon.crt"))
    assert code == 3 and "WARNING: expires in 9 days" in out

    fine = ca.issue_cert("a.example", days=31)
    (tmp_path / "fine.crt").write_bytes(fine.cert_chain_pem())
    assert run(capsys, "show", str(tmp_path / "fine.crt"))[0] == 0


def test_show_warns_about_a_key_that_does_not_match(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "server", "--dir", str(d), "--no-default-hosts", "--host", "a.example")
    run(capsys, "client", "x", "--dir", str(d))
    shutil.copy(d / "client-x.key", d / "server.key")
    code, out, _ = run(capsys, "show", str(d / "server.crt"))
    assert code == 3 and "does not match" in out


def test_show_a_bundle_folder(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "server", "--dir", str(d), "--no-default-hosts", "--host", "a.example")
    run(capsys, "bundle", "a.example:5000", "--dir", str(d), "--client", "ci")
    folder = d / "certs.d" / "a.example:5000"
    code, out, _ = run(capsys, "show", str(folder))
    assert code == 0, out
    assert str(folder / "client.cert") in out and f"signed by {folder / 'ca.crt'}" in out


def test_show_failures_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", str(tmp_path / "missing.crt"))
    assert code == 1 and "missing.crt: not found" in err
    (tmp_path / "junk.crt").write_text("junk")
    code, _, err = run(capsys, "show", str(tmp_path / "junk.crt"))
    assert code == 1 and "junk.crt: not a PEM certificate" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "show", str(empty))
    assert code == 1 and "no .crt or .cert files" in err
    code, _, err = run(capsys, "show", str(tmp_path / "junk.crt"), "--host", "bad host")
    assert code == 2 and "not a valid DNS label" in err


def test_usage_errors_exit_2(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys)[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    code, _, err = run(capsys, "server", "--dir", str(d), "--host", "exa mple")
    assert code == 2 and "not a valid DNS label" in err
    code, _, err = run(capsys, "server", "--dir", str(d), "--days", "398")
    assert code == 2 and "days must be 1 to 397" in err
    code, _, err = run(capsys, "init", "--dir", str(d), "--key-type", "dsa")
    assert code == 2 and "choose one of ecdsa-p256" in err
    code, _, err = run(capsys, "server", "--dir", str(d), "--host", "fe80::1%eth0")
    assert code == 2 and "zone id" in err
    assert not d.exists()


def test_unwritable_folder_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "init", "--dir", str(blocker / "certs"))
    assert code == 1 and str(blocker / "certs") in err and "Traceback" not in err


def test_init_refuses_an_expired_ca(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs.ensure_ca(d, days=1, now=datetime.now(UTC) - timedelta(days=5))
    code, _, err = run(capsys, "init", "--dir", str(d))
    assert code == 1 and "the CA expired on" in err and "init --force" in err
