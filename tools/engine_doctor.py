"""Explain why a container engine on this host cannot pull from or push to a registry.

Each check says what it saw; each problem says what Docker would print for it and the one
command that fixes it. The checks follow the order an engine goes through: resolve the
name, connect, speak TLS or plain HTTP, verify the certificate, ask ``/v2/``, and read its
own configuration (``insecure-registries``, ``certs.d``).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import os
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from cryptography import x509

from tools import engine_host
from tools.engine_host import EnginePaths, Registry

API_VERSION_HEADER = "Docker-Distribution-API-Version"
EXPIRY_WARNING = timedelta(days=14)
DEFAULT_CA = "certs/ca.crt"

# OpenSSL verify codes, and what Go's crypto/x509 (so Docker) prints for each.
X509_UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"
VERIFY_EXPIRED = {9, 10}


@dataclass(frozen=True)
class Finding:
    """One check: what was seen, and for a problem what Docker says and what fixes it."""

    ok: bool
    seen: str
    docker_says: str = ""
    explain: str = ""
    fix: str = ""


@dataclass
class Probe:
    """What the network checks learned about the registry."""

    addresses: list[str] = field(default_factory=list)
    tls: bool | None = None
    certificate: x509.Certificate | None = None
    verify_error: ssl.SSLCertVerificationError | None = None
    trusted_by: str = ""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = subparsers.add_parser(
        "doctor",
        allow_abbrev=False,
        help="explain why an engine cannot pull from or push to a registry",
        description="Check a registry the way this host's container engine sees it and print "
        "the command that fixes each problem. Exit code 0: nothing wrong; 1: problems found.",
    )
    doctor.add_argument("registry", metavar="HOST:PORT")
    doctor.add_argument(
        "--ca",
        metavar="FILE",
        help=f"a CA that should verify the registry (suggested fixes name it; default "
        f"{DEFAULT_CA} if it exists)",
    )
    doctor.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="network timeout"
    )
    doctor.add_argument("--root", metavar="DIR", help="prefix of every system path")
    doctor.add_argument("--daemon-json", metavar="PATH", help="Docker's daemon.json")
    doctor.add_argument("--docker-certs-dir", metavar="DIR", help="Docker's certs.d")
    mode = doctor.add_mutually_exclusive_group()
    mode.add_argument("--rootless", dest="rootless", action="store_const", const=True)
    mode.add_argument("--rootful", dest="rootless", action="store_const", const=False)
    doctor.add_argument("--docker-host", metavar="URL", help="the engine `docker info` asks")
    doctor.add_argument("--docker", metavar="CLIENT", default="docker", help="docker client")
    doctor.set_defaults(containerd_certs_dir=None, containers_dir=None, pidfile=None)


def split_host(registry: Registry) -> tuple[str, int]:
    return registry.host.strip("[]"), registry.port or 443


def resolve(registry: Registry, probe: Probe) -> Finding:
    host, port = split_host(registry)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return Finding(
            False,
            f"cannot resolve {host}: {exc.strerror}",
            docker_says=f"dial tcp: lookup {host}: no such host",
            fix=f"add {host} to DNS or /etc/hosts on this host, or use its IP address",
        )
    probe.addresses = sorted({str(info[4][0]) for info in infos})
    return Finding(True, f"{host} resolves to {', '.join(probe.addresses)}")


def connect(registry: Registry, timeout: float) -> Finding:
    host, port = split_host(registry)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return Finding(
            False,
            f"cannot connect to {registry}: {exc.strerror or exc}",
            docker_says=f"dial tcp {host}:{port}: connect: connection refused",
            explain="nothing listens there, or a firewall drops the connection",
            fix=f"start the registry listening on {registry} (`registry serve`), then open "
            "the port in the firewall",
        )
    return Finding(True, f"{registry} accepts TCP connections")


def tls_handshake(registry: Registry, context: ssl.SSLContext, timeout: float) -> bytes:
    """The server's certificate (DER) after a handshake under ``context``."""
    host, port = split_host(registry)
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


def probe_tls(registry: Registry, timeout: float, probe: Probe) -> Finding:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        der = tls_handshake(registry, context, timeout)
    except (ssl.SSLError, ConnectionResetError) as exc:
        if speaks_plain_http(registry, timeout):
            probe.tls = False
            return Finding(True, f"{registry} speaks plain HTTP, not TLS")
        return client_certificate_finding(registry, "the TLS handshake", exc)
    except OSError as exc:
        return Finding(False, f"TLS handshake with {registry} failed: {exc}")
    probe.tls = True
    probe.certificate = x509.load_der_x509_certificate(der)
    return Finding(True, f"{registry} speaks HTTPS")


def client_certificate_finding(registry: Registry, what: str, exc: Exception) -> Finding:
    """TLS that breaks off once the handshake is done: the registry wants a client certificate.

    With TLS 1.3 the server judges the client's certificate after the client has finished
    its handshake, so the refusal shows up at the first request.
    """
    return Finding(
        False,
        f"{what} fails: {getattr(exc, 'reason', None) or exc}",
        docker_says="remote error: tls: certificate required",
        explain="most likely the registry refuses clients without a certificate (mutual "
        "TLS); Docker sends certs.d/HOST:PORT/client.cert and client.key",
        fix=f"registry engine trust {registry} --ca {DEFAULT_CA} --client-cert FILE "
        "--client-key FILE",
    )


def speaks_plain_http(registry: Registry, timeout: float) -> bool:
    host, port = split_host(registry)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/v2/")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def verifying_context(cafiles: Sequence[Path], system: bool) -> ssl.SSLContext:
    """Verifies the chain only: names are judged from the SANs, to name the problem."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if system:
        context.load_default_certs()
    for cafile in cafiles:
        context.load_verify_locations(cafile=str(cafile))
    return context


def verify_certificate(
    registry: Registry, timeout: float, engine_ca: Path, candidate: Path | None, probe: Probe
) -> list[Finding]:
    """Verify as Docker does (system store plus certs.d/HOST:PORT/*.crt) and judge the leaf."""
    findings = certificate_findings(registry, probe)
    sources: list[tuple[str, list[Path], bool]] = [("the system trust store", [], True)]
    if engine_ca.is_file():
        sources.append((str(engine_ca), [engine_ca], True))
    for name, cafiles, system in sources:
        try:
            tls_handshake(registry, verifying_context(cafiles, system), timeout)
        except ssl.SSLCertVerificationError as exc:
            probe.verify_error = exc
            continue
        except (ssl.SSLError, OSError) as exc:
            findings.append(Finding(False, f"TLS handshake failed while verifying: {exc}"))
            return findings
        probe.trusted_by = name
        probe.verify_error = None
        findings.append(Finding(True, f"the certificate verifies with {name}"))
        return findings
    code = probe.verify_error.verify_code if probe.verify_error is not None else 0
    already_explained = any(not finding.ok for finding in findings)
    if not (already_explained and code in VERIFY_EXPIRED):
        findings.append(verify_failure(registry, engine_ca, candidate, probe, timeout))
    return findings


def certificate_findings(registry: Registry, probe: Probe) -> list[Finding]:
    certificate = probe.certificate
    if certificate is None:
        return []
    findings = []
    subject = certificate.subject.rfc4514_string() or "(empty)"
    issuer = certificate.issuer.rfc4514_string() or "(empty)"
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in names.get_values_for_type(x509.DNSName)] + [
            str(v) for v in names.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        sans = []
    findings.append(
        Finding(True, f"certificate: subject {subject}, issuer {issuer}, SANs {sans or 'none'}")
    )
    host = registry.host.strip("[]")
    if not sans:
        findings.append(
            Finding(
                False,
                "the certificate has no subjectAltName: Docker ignores the Common Name",
                docker_says="x509: certificate relies on legacy Common Name field, use SANs "
                "instead",
                fix=f"issue the registry a certificate whose SANs include {host} "
                "(`registry certs --help`)",
            )
        )
    elif not san_matches(host, sans):
        findings.append(
            Finding(
                False,
                f"the certificate's SANs {sans} do not include {host}",
                docker_says=f"x509: certificate is valid for {', '.join(sans)}, not {host}",
                fix=f"issue the registry a certificate whose SANs include {host} "
                "(`registry certs --help`), or reach it by one of its names",
            )
        )
    now = datetime.now(UTC)
    after, before = certificate.not_valid_after_utc, certificate.not_valid_before_utc
    if now > after or now < before:
        findings.append(
            Finding(
                False,
                f"the certificate is valid from {before:%Y-%m-%d} to {after:%Y-%m-%d}, not now",
                docker_says="x509: certificate has expired or is not yet valid",
                fix="issue the registry a new certificate (`registry certs --help`) and check "
                "this host's clock",
            )
        )
    elif after - now < EXPIRY_WARNING:
        findings.append(Finding(True, f"the certificate expires soon: {after:%Y-%m-%d %H:%M} UTC"))
    else:
        findings.append(Finding(True, f"the certificate is valid until {after:%Y-%m-%d}"))
    return findings


def san_matches(host: str, sans: Sequence[str]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for san in sans:
        if address is not None:
            try:
                if ipaddress.ip_address(san) == address:
                    return True
            except ValueError:
                continue
        elif san.lower() == host.lower() or (
            san.startswith("*.") and host.lower().partition(".")[2] == san[2:].lower()
        ):
            return True
    return False


def verify_failure(
    registry: Registry, engine_ca: Path, candidate: Path | None, probe: Probe, timeout: float
) -> Finding:
    error = probe.verify_error
    code = error.verify_code if error is not None else 0
    message = error.verify_message if error is not None else "unknown"
    if code in VERIFY_EXPIRED:
        return Finding(False, f"certificate verification fails: {message}")
    fix_ca = str(candidate) if candidate is not None else DEFAULT_CA
    verified_by_candidate = False
    if candidate is not None and candidate.is_file():
        try:
            tls_handshake(registry, verifying_context([candidate], False), timeout)
            verified_by_candidate = True
        except (ssl.SSLError, OSError):
            pass
    if candidate is not None and not verified_by_candidate:
        explain = (
            f"{candidate} does not verify it either: find the CA that signed the registry's "
            "certificate"
        )
    elif verified_by_candidate:
        explain = f"{candidate} verifies it, but the engine does not know that CA yet"
    else:
        explain = f"no CA in the system store or in {engine_ca} signed it"
    return Finding(
        False,
        f"the engine cannot verify the certificate ({message})",
        docker_says=X509_UNKNOWN_AUTHORITY,
        explain=explain,
        fix=f"registry engine trust {registry} --ca {fix_ca}",
    )


def ask_v2(registry: Registry, tls: bool, timeout: float) -> Finding:
    host, port = split_host(registry)
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    scheme = "https" if tls else "http"
    try:
        connection.request("GET", "/v2/", headers={"User-Agent": "registry-engine-doctor"})
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        closed = (ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)
        if tls and isinstance(exc, closed):
            return client_certificate_finding(registry, f"GET {scheme}://{registry}/v2/", exc)
        return Finding(False, f"GET {scheme}://{registry}/v2/ failed: {exc}")
    finally:
        connection.close()
    version = response.getheader(API_VERSION_HEADER)
    seen = f"GET {scheme}://{registry}/v2/ answers {response.status}"
    if response.status not in (200, 401):
        return Finding(
            False,
            f"{seen}: a registry answers 200 or 401",
            explain="something else listens at this address (a web server, a proxy without "
            "the /v2/ route)",
            fix="point the engine at the registry's own address, or route /v2/ to it",
        )
    if version != "registry/2.0":
        return Finding(
            False,
            f"{seen} without {API_VERSION_HEADER}: registry/2.0",
            explain="a proxy in front of the registry may drop the header",
            fix=f"let the proxy pass the {API_VERSION_HEADER} header",
        )
    auth = " (authentication required)" if response.status == 401 else ""
    return Finding(True, f"{seen}{auth} with {API_VERSION_HEADER}: {version}")


def insecure_in_daemon_json(
    registry: Registry, paths: EnginePaths, probe: Probe
) -> tuple[str, Finding]:
    """The daemon.json entry that declares the registry insecure (its name or a CIDR), or ""."""
    try:
        _raw, config, _indent = engine_host.read_daemon_json(paths.daemon_json)
        entries = engine_host.daemon_json_list(config, "insecure-registries", paths.daemon_json)
    except engine_host.EngineConfigError as exc:
        return "", Finding(
            False,
            str(exc),
            explain="dockerd does not start, or ignores a reload, with a broken daemon.json",
            fix=f"fix {paths.daemon_json} by hand (its backup is {paths.daemon_json}.bak)",
        )
    except PermissionError:
        return "", Finding(True, f"cannot read {paths.daemon_json} (run as root to check it)")
    name = str(registry).lower()
    for entry in entries:
        if entry.strip().lower() == name:
            return entry, Finding(True, f"{paths.daemon_json} lists {entry} in insecure-registries")
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            for address in probe.addresses:
                if ipaddress.ip_address(address.split("%")[0]) in network:
                    return entry, Finding(
                        True,
                        f"{paths.daemon_json} declares {entry} insecure, which holds {address}",
                    )
    return "", Finding(True, f"{paths.daemon_json} does not list {registry} as insecure")


def engine_reloaded(args: argparse.Namespace, entry: str) -> Finding | None:
    """When dockerd answers, whether it runs with the insecure entry the file has."""
    config = engine_host.run_docker_info(args, "{{json .RegistryConfig}}")
    if config is None:
        return None
    if engine_host.insecure_listed(config, entry):
        return Finding(True, f"the running dockerd treats {entry} as insecure")
    return Finding(
        False,
        f"daemon.json lists {entry}, but the running dockerd does not (not reloaded yet)",
        fix=f"registry engine insecure add {entry} --reload",
    )


def plain_http_findings(
    args: argparse.Namespace, registry: Registry, paths: EnginePaths, probe: Probe
) -> list[Finding]:
    if engine_host.is_implicitly_insecure(registry) or any(
        ipaddress.ip_address(a.split("%")[0]).is_loopback for a in probe.addresses
    ):
        return [Finding(True, f"Docker treats {registry} as insecure (a loopback address)")]
    listed, finding = insecure_in_daemon_json(registry, paths, probe)
    findings = [finding]
    if not finding.ok:
        return findings
    if listed:
        reloaded = engine_reloaded(args, listed)
        if reloaded is not None:
            findings.append(reloaded)
        return findings
    findings.append(
        Finding(
            False,
            f"the registry speaks plain HTTP, and the engine will use HTTPS for {registry}",
            docker_says="http: server gave HTTP response to HTTPS client",
            explain="Docker uses plain HTTP only for registries in insecure-registries (and "
            "loopback addresses); or give the registry a certificate and use `trust`",
            fix=f"registry engine insecure add {registry} --reload",
        )
    )
    return findings


def diagnose(args: argparse.Namespace, registry: Registry, paths: EnginePaths) -> list[Finding]:
    probe = Probe()
    findings = [resolve(registry, probe)]
    if not findings[-1].ok:
        return findings
    findings.append(connect(registry, args.timeout))
    if not findings[-1].ok:
        return findings
    findings.append(probe_tls(registry, args.timeout, probe))
    if probe.tls is None:
        return findings
    findings.append(ask_v2(registry, probe.tls, args.timeout))
    if not probe.tls:
        return findings + plain_http_findings(args, registry, paths, probe)
    engine_ca = paths.docker_certs / str(registry) / "ca.crt"
    candidate = Path(args.ca) if args.ca else None
    if candidate is None and Path(DEFAULT_CA).is_file():
        candidate = Path(DEFAULT_CA)
    verified = verify_certificate(registry, args.timeout, engine_ca, candidate, probe)
    listed, _finding = insecure_in_daemon_json(registry, paths, probe)
    if listed and not probe.trusted_by:
        verified = [f for f in verified if f.ok] + [
            Finding(
                True,
                f"{registry} is in insecure-registries, so Docker accepts this certificate "
                "unverified (other clients will not)",
            )
        ]
    findings += verified
    folder = paths.docker_certs / str(registry)
    if folder.is_dir():
        names = sorted(p.name for p in folder.iterdir())
        findings.append(Finding(True, f"{folder} holds {', '.join(names) or 'nothing'}"))
    return findings


def print_report(registry: Registry, findings: Sequence[Finding], out: TextIO) -> None:
    print(f"registry engine doctor {registry}", file=out)
    for finding in findings:
        print(f"  {'ok  ' if finding.ok else 'FAIL'} {finding.seen}", file=out)
        if finding.docker_says:
            print(f'       Docker says: "{finding.docker_says}"', file=out)
        if finding.explain:
            print(f"       why: {finding.explain}", file=out)
        if finding.fix:
            print(f"       fix: {finding.fix}", file=out)
    problems = sum(not finding.ok for finding in findings)
    print(f"{problems} problem{'s' if problems != 1 else ''} found", file=out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        registry = engine_host.parse_registry(args.registry)
    except engine_host.UsageError as exc:
        print(f"{engine_host.PROG}: error: {exc}", file=sys.stderr)
        return engine_host.EXIT_USAGE
    paths = engine_host.choose_paths(args, os.environ)
    findings = diagnose(args, registry, paths)
    print_report(registry, findings, out)
    return engine_host.EXIT_OK if all(f.ok for f in findings) else engine_host.EXIT_FAILURE
