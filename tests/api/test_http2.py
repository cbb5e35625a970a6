"""HTTP/2 (cleartext, prior knowledge): request bodies without Content-Length."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from tests.conftest import RegistryProcess
from tests.pushing import digest_of, with_query


def test_last_chunk_on_put_without_content_length(
    shared_registry: RegistryProcess, repo: str
) -> None:
    """An HTTP/2 body may come with neither Content-Length nor chunked encoding."""
    data = b"sent over HTTP/2 " * 4096

    def body() -> Iterator[bytes]:
        yield data[:20000]
        yield data[20000:]

    with httpx.Client(base_url=shared_registry.url, http1=False, http2=True) as client:
        started = client.post(f"/v2/{repo}/blobs/uploads/")
        assert started.http_version == "HTTP/2"
        done = client.put(
            with_query(started.headers["Location"], digest=digest_of(data)), content=body()
        )
        assert done.status_code == 201, done.text
        assert "content-length" not in done.request.headers
        fetched = client.get(f"/v2/{repo}/blobs/{digest_of(data)}")
        assert fetched.status_code == 200
        assert fetched.content == data
