"""What ``registry certs show`` reports about certificates, and what it warns about.

A report is data (facts and warnings) so that the command line only formats
it and tests can assert on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tools.certs_hosts import describe_name, name_matches
from tools.certs_x509 import (
    CertificateError,
    describe_key,
    extended_key_usages,
    is_ca_certificate,
    is_encrypted_key_file,
    is_issued_by,
    key_matches,
    load_certificates,
    load_private_key,
    subject_alternative_names,
)

# `show` warns when a certificate has less than this left.
WARN_BEFORE = timedelta(days=30)
CERTIFICATE_SUFFIXES = (".crt", ".cert")
CA_CERT = "ca.crt"


@dataclass(frozen=True, slots=True)
class CertificateReport:
    """One certificate of one file: what it is and what is wrong with it."""

    path: Path
    position: int  # 1-based place in its file (a file may hold a chain)
    count: int
    cert: x509.Certificate
    facts: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Inspection:
    """Every certificate found under a path, plus warnings about the whole set."""

    reports: tuple[CertificateReport, ...]
    warnings: tuple[str, ...]
    ca_path: Path | None

    @property
    def all_warnings(self) -> tuple[str, ...]:
        """Warnings of the set and of every certificate."""
        return self.warnings + tuple(w for report in self.reports for w in report.warnings)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as ``AB:CD:...``, as ``openssl x509 -fingerprint`` prints."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def certificate_files(path: Path) -> list[Path]:
    """The files ``show PATH`` looks at: the file itself, or a folder's ``*.crt`` and ``*.cert``."""
    if not path.is_dir():
        if not path.exists():
            raise CertificateError(f"{path}: not found")
        return [path]
    files = sorted(
        entry
        for entry in path.iterdir()
        if entry.suffix in CERTIFICATE_SUFFIXES and entry.is_file()
    )
    if not files:
        raise CertificateError(f"{path}: no .crt or .cert files in this folder")
    return files


def _purpose(cert: x509.Certificate) -> str:
    if is_ca_certificate(cert):
        return "CA"
    usages = extended_key_usages(cert)
    if not usages:
        return "any (no Extended Key Usage)"
    named = {ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}
    return ", ".join(named.get(oid, oid.dotted_string) for oid in usages)


def _serves_tls(cert: x509.Certificate) -> bool:
    usages = extended_key_usages(cert)
    return not is_ca_certificate(cert) and (not usages or ExtendedKeyUsageOID.SERVER_AUTH in usages)


def _key_file(path: Path) -> Path | None:
    candidate = path.with_suffix(".key")
    return candidate if candidate != path and candidate.exists() else None


def _validity(cert: x509.Certificate, now: datetime) -> tuple[list[tuple[str, str]], list[str]]:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    left = end - now
    facts = [("not before", f"{start:%Y-%m-%d %H:%M:%S} UTC")]
    warnings: list[str] = []
    if left <= timedelta(0):
        facts.append(
            ("not after", f"{end:%Y-%m-%d %H:%M:%S} UTC (expired {(-left).days} days ago)")
        )
        warnings.append(f"expired on {end:%Y-%m-%d}")
    else:
        facts.append(("not after", f"{end:%Y-%m-%d %H:%M:%S} UTC ({left.days} days left)"))
        if left < WARN_BEFORE:
            warnings.append(f"expires in {left.days} days, on {end:%Y-%m-%d}")
    if start > now:
        warnings.append(f"not valid before {start:%Y-%m-%d %H:%M} UTC (check the clock)")
    return facts, warnings


def _key_pair(path: Path, cert: x509.Certificate) -> tuple[list[tuple[str, str]], list[str]]:
    key_path = _key_file(path)
    if key_path is None:
        return [], []
    if is_encrypted_key_file(key_path):
        return [("key file", f"{key_path} (encrypted, not checked)")], []
    try:
        key = load_private_key(key_path)
    except CertificateError as error:
        return [("key file", str(key_path))], [str(error)]
    if key_matches(cert, key):
        return [("key file", f"{key_path} (matches)")], []
    return [("key file", f"{key_path} (does NOT match)")], [f"{key_path} does not match {path}"]


def _report_file(
    path: Path,
    *,
    ca: x509.Certificate | None,
    ca_path: Path | None,
    hosts: Sequence[str],
    now: datetime,
) -> list[CertificateReport]:
    certs = load_certificates(path)
    reports: list[CertificateReport] = []
    for position, cert in enumerate(certs, start=1):
        sans = subject_alternative_names(cert)
        facts: list[tuple[str, str]] = [
            ("subject", cert.subject.rfc4514_string() or "(empty)"),
            ("issuer", cert.issuer.rfc4514_string() or "(empty)"),
            ("names", ", ".join(describe_name(name) for name in sans) or "(no SAN)"),
            ("purpose", _purpose(cert)),
            ("key", describe_key(cert.public_key())),
        ]
        validity_facts, warnings = _validity(cert, now)
        facts.extend(validity_facts)
        facts.append(("serial", f"{cert.serial_number:X}"))
        facts.append(("SHA-256", fingerprint(cert)))

        # A self-signed leaf (``registry certs token``'s token.crt) is its own trust
        # anchor: no CA signs it and it serves no TLS, so neither check applies.
        own_anchor = not is_ca_certificate(cert) and is_issued_by(cert, cert)
        if own_anchor:
            facts.append(("chain", "self-signed, its own trust anchor (a token signer)"))
        elif position == 1 and ca is not None and ca_path is not None:
            if cert == ca:
                facts.append(("chain", f"is the CA in {ca_path}"))
            elif is_issued_by(cert, ca):
                facts.append(("chain", f"signed by {ca_path}"))
            else:
                facts.append(("chain", f"NOT signed by {ca_path}"))
                warnings.append(
                    f"not signed by the CA in {ca_path} ({ca.subject.rfc4514_string()})"
                )
        if position > 1 and not is_issued_by(certs[position - 2], cert):
            warnings.append(f"does not sign certificate {position - 1} before it in the file")
        if position == 1:
            key_facts, key_warnings = _key_pair(path, cert)
            facts.extend(key_facts)
            warnings.extend(key_warnings)
        if hosts and _serves_tls(cert) and not own_anchor:
            missing = [host for host in hosts if not name_matches(host, sans)]
            if missing:
                warnings.append(f"no Subject Alternative Name for {', '.join(missing)}")
        reports.append(
            CertificateReport(path, position, len(certs), cert, tuple(facts), tuple(warnings))
        )
    return reports


def inspect(
    path: Path,
    *,
    ca_path: Path | None = None,
    hosts: Sequence[str] = (),
    now: datetime | None = None,
) -> Inspection:
    """Report on the certificate file ``path``, or every certificate file in the folder ``path``.

    Certificates are checked against ``ca_path``, else against the ``ca.crt``
    in the folder (or beside the file). ``hosts`` are checked against every
    certificate a TLS server could use (not a CA, server or no Extended Key Usage).
    """
    moment = datetime.now(UTC) if now is None else now.astimezone(UTC)
    files = certificate_files(path)
    if ca_path is None:
        beside = (path if path.is_dir() else path.parent) / CA_CERT
        ca_path = beside if beside.is_file() else None
    ca = load_certificates(ca_path)[0] if ca_path is not None else None
    reports: list[CertificateReport] = []
    for file in files:
        reports.extend(_report_file(file, ca=ca, ca_path=ca_path, hosts=hosts, now=moment))
    warnings: list[str] = []
    if hosts and not any(_serves_tls(report.cert) for report in reports):
        warnings.append(f"{path}: no server certificate to check {', '.join(hosts)} against")
    return Inspection(tuple(reports), tuple(warnings), ca_path)


def format_inspection(inspection: Inspection) -> str:
    """The text ``show`` prints: one block per certificate, warnings last in each block."""
    blocks: list[str] = []
    for report in inspection.reports:
        title = str(report.path)
        if report.count > 1:
            title += f" (certificate {report.position} of {report.count})"
        width = max(len(label) for label, _ in report.facts)
        lines = [title]
        lines.extend(f"  {label + ':':<{width + 1}} {value}" for label, value in report.facts)
        lines.extend(f"  WARNING: {warning}" for warning in report.warnings)
        blocks.append("\n".join(lines))
    blocks.extend(f"WARNING: {warning}" for warning in inspection.warnings)
    return "\n\n".join(blocks) + "\n"
