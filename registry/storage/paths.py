"""Where everything lives: registry:2's on-disk layout, mapped in this one place.

    /docker/registry/v2/
      blobs/<algorithm>/<first 2 hex>/<hex>/data        content, addressed by digest
      repositories/<name>/
        _layers/<algorithm>/<hex>/link                   blob is in the repository
        _manifests/revisions/<algorithm>/<hex>/link      manifest is in the repository
        _manifests/tags/<tag>/current/link               digest the tag points at
        _manifests/tags/<tag>/index/<algorithm>/<hex>/link   every digest it has pointed at
        _uploads/<id>/data                               upload in progress
        _uploads/<id>/startedat                          RFC 3339 start time
        _referrers/<algorithm>/<subject hex>/<algorithm>/<hex>/link
                                                         manifest whose subject is that digest
      _proxy/<name>/_pulled                              when a repository pulled through
                                                         was last pulled (registry.proxy.expiry)

A link file holds a digest (``sha256:...``) and nothing else. registry:2 reads
and writes the same tree, and ignores ``_referrers`` (it skips every folder
whose name starts with ``_`` that it does not know).
"""

from __future__ import annotations

from ..reference import Digest

ROOT = "/docker/registry/v2"
BLOBS = f"{ROOT}/blobs"
REPOSITORIES = f"{ROOT}/repositories"
PROXY = f"{ROOT}/_proxy"


def blob_data(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def blob_dir(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_layers/{digest.algorithm}/{digest.hex}/link"


def layers(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_layers"


def manifests(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests"


def revision_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}/link"


def revision_dir(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}"


def tags(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags"


def tag_dir(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}"


def tag_current_link(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}/current/link"


def tag_index_link(name: str, tag: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}/index/{digest.algorithm}/{digest.hex}/link"


def uploads(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads"


def upload_dir(name: str, upload_id: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads/{upload_id}/data"


def upload_started_at(name: str, upload_id: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads/{upload_id}/startedat"


def all_referrers(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_referrers"


def referrers(name: str, subject: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_referrers/{subject.algorithm}/{subject.hex}"


def referrer_link(name: str, subject: Digest, digest: Digest) -> str:
    return (
        f"{REPOSITORIES}/{name}/_referrers/{subject.algorithm}/{subject.hex}/"
        f"{digest.algorithm}/{digest.hex}/link"
    )


def proxy_pulled(name: str) -> str:
    """Beside ``repositories/``, where registry:2 never looks; ``_pulled`` cannot clash
    with a deeper repository's folder (name components never start with ``_``)."""
    return f"{PROXY}/{name}/_pulled"
