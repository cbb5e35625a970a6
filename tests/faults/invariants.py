"""What must hold after any crash: found by walking the storage tree, asked over HTTP.

Whatever answers is whole: a blob has its digest's bytes, a manifest has every
blob and child it names, a listed tag names such a manifest, an upload session
reports its length or is cleanly unknown. And whatever was acknowledged before
the crash still answers. Content by digest never changes, so what was checked
once is not asked again (``verified``), which keeps hundreds of rounds fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from registry.storage.driver.filesystem import TEMPORARY_MARK
from tests.faults.clients import ACCEPT, InvariantError, Ledger, error_code, expect
from tests.pushing import digest_of


class StoreChecker:
    def __init__(self, root: Path, ledger: Ledger) -> None:
        self.v2 = root / "docker" / "registry" / "v2"
        self.ledger = ledger
        self.verified: set[tuple[str, ...]] = set()

    # After a crash: everything acknowledged before it

    def check_acknowledged(self, client: httpx.Client) -> list[str]:
        violations = []
        for kind, repo, reference in self.ledger.take_fresh():
            try:
                if kind == "blob":
                    self._blob(client, repo, reference, linked=True)
                elif kind == "manifest":
                    self._manifest(client, repo, reference, linked=True)
                else:
                    answered = self._tag(client, repo, reference)
                    if answered not in self.ledger.tag_digests[(repo, reference)]:
                        raise InvariantError(f"tag {repo}:{reference} names {answered}, never put")
            except InvariantError as violation:
                violations.append(f"acknowledged {kind} {repo} {reference}: {violation}")
        return violations

    # After a crash: everything in storage

    def check_store(self, client: httpx.Client) -> list[str]:
        violations: list[str] = []
        repositories = self._repositories()
        for repo in repositories:
            base = self.v2 / "repositories" / repo
            checks = [
                *((self._blob, hex_dir) for hex_dir in _children(base / "_layers" / "sha256")),
                *(
                    (self._manifest, hex_dir)
                    for hex_dir in _children(base / "_manifests" / "revisions" / "sha256")
                ),
            ]
            for check, hex_dir in checks:
                try:
                    linked = (hex_dir / "link").exists()
                    check(client, repo, f"sha256:{hex_dir.name}", linked=linked)
                except InvariantError as violation:
                    violations.append(str(violation))
            for tag in self._listed_tags(client, repo, violations):
                # A tag whose link has not changed since it was checked still names the same
                # (immutable) manifest: not asked again.
                link = base / "_manifests" / "tags" / tag / "current" / "link"
                try:
                    key = ("tag", repo, tag, link.read_text(), str(link.stat().st_mtime_ns))
                except FileNotFoundError:
                    key = ("tag", repo, tag)
                if key in self.verified:
                    continue
                try:
                    self._tag(client, repo, tag)
                except InvariantError as violation:
                    violations.append(str(violation))
                else:
                    self.verified.add(key)
            for session in _children(base / "_uploads"):
                try:
                    self._session(client, repo, session.name)
                except InvariantError as violation:
                    violations.append(str(violation))
        catalog = client.get("/v2/_catalog", params={"n": 100})
        if catalog.status_code != 200:
            violations.append(f"catalog answered {catalog.status_code} {catalog.text[:200]}")
        self.ledger.stats["temporary files left"] = sum(
            1 for _, _, files in os.walk(self.v2) for name in files if TEMPORARY_MARK in name
        )
        return violations

    def _repositories(self) -> list[str]:
        top = self.v2 / "repositories"
        found = []
        for directory, subdirectories, _ in os.walk(top):
            if any(name in ("_layers", "_manifests", "_uploads") for name in subdirectories):
                found.append(os.path.relpath(directory, top))
            subdirectories[:] = [name for name in subdirectories if not name.startswith("_")]
        return sorted(found)

    def _listed_tags(self, client: httpx.Client, repo: str, violations: list[str]) -> list[str]:
        tags: list[str] = []
        url: str | None = f"/v2/{repo}/tags/list?n=1000"
        while url is not None:
            response = client.get(url)
            if response.status_code == 404 and error_code(response) == "NAME_UNKNOWN":
                return tags  # Only sessions or blobs so far: not a repository yet.
            if response.status_code != 200:
                violations.append(f"tags/list of {repo}: {response.status_code} {response.text}")
                return tags
            tags += response.json().get("tags") or []
            link = response.links.get("next")
            url = link["url"] if link else None
        return tags

    def _blob(self, client: httpx.Client, repo: str, digest: str, *, linked: bool) -> None:
        if ("blob", repo, digest) in self.verified:
            return
        response = client.get(f"/v2/{repo}/blobs/{digest}")
        if response.status_code == 404 and not linked:
            return  # Cut before its link was written: not in the repository, and says so.
        expect(response, 200, what=f"blob {repo}@{digest}")
        if digest_of(response.content) != digest:
            raise InvariantError(
                f"blob {repo}@{digest}: {len(response.content)} bytes of another digest"
            )
        head = client.head(f"/v2/{repo}/blobs/{digest}")
        if head.headers.get("Content-Length") != str(len(response.content)):
            raise InvariantError(f"blob {repo}@{digest}: HEAD says {head.headers}")
        self.verified.add(("blob", repo, digest))
        self.ledger.stats["blobs verified"] += 1

    def _manifest(self, client: httpx.Client, repo: str, digest: str, *, linked: bool) -> None:
        """A manifest that answers is whole: every blob, every child answers in ``repo``."""
        if ("manifest", repo, digest) in self.verified:
            return
        response = client.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT})
        if response.status_code == 404 and not linked:
            return
        expect(response, 200, what=f"manifest {repo}@{digest}")
        if digest_of(response.content) != digest:
            raise InvariantError(f"manifest {repo}@{digest}: the bytes of another digest")
        document = json.loads(response.content)
        for child in document.get("manifests", []):
            self._manifest(client, repo, child["digest"], linked=True)
        for blob in (document["config"], *document["layers"]) if "config" in document else ():
            head = client.head(f"/v2/{repo}/blobs/{blob['digest']}")
            expect(head, 200, what=f"blob {blob['digest']} of manifest {repo}@{digest}")
            if head.headers.get("Content-Length") != str(blob["size"]):
                raise InvariantError(f"blob {blob['digest']} of {repo}@{digest}: {head.headers}")
            self._blob(client, repo, blob["digest"], linked=True)
        self.verified.add(("manifest", repo, digest))
        self.ledger.stats["manifests verified"] += 1

    def _tag(self, client: httpx.Client, repo: str, tag: str) -> str:
        """A listed tag answers, with a whole manifest; its digest."""
        response = client.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
        expect(response, 200, what=f"tag {repo}:{tag}")
        digest = response.headers["Docker-Content-Digest"]
        self._manifest(client, repo, digest, linked=True)
        return digest

    def _session(self, client: httpx.Client, repo: str, upload_id: str) -> None:
        """A session no client holds (a monolithic push cut short) reports itself, or is unknown."""
        with self.ledger.lock:
            if upload_id in self.ledger.sessions:
                return  # Its client resumes it.
        if ("session", repo, upload_id) in self.verified:
            return
        response = client.get(f"/v2/{repo}/blobs/uploads/{upload_id}")
        if response.status_code == 404 and error_code(response) == "BLOB_UPLOAD_UNKNOWN":
            self.ledger.stats["sessions left unknown"] += 1
        else:
            expect(response, 204, what=f"status of left-over session {repo} {upload_id}")
            self.ledger.stats["sessions left open"] += 1
        self.verified.add(("session", repo, upload_id))


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(entry for entry in directory.iterdir() if TEMPORARY_MARK not in entry.name)
    except FileNotFoundError:
        return []
