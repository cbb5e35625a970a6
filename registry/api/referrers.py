"""``/v2/<name>/referrers/<digest>``: the manifests whose ``subject`` is that digest."""

from __future__ import annotations

from quart import Response, request

from ..manifests import OCI_INDEX
from ..storage.manifests import referrers_index
from .repository import digest_param, repository
from .responses import json_body, respond


async def list_referrers(name: str, digest: str) -> Response:
    subject = digest_param(digest)
    repo = repository(name)
    artifact_type = request.args.get("artifactType") or None
    descriptors = await repo.manifests.referrers(subject, artifact_type)
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    return respond(200, headers, json_body(referrers_index(descriptors)))
