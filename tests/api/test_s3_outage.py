"""An S3 store that cannot be reached: the client gets 503 UNAVAILABLE (it may retry, on
another instance), the log one line naming the operation, never a traceback or a key."""

from __future__ import annotations

from typing import Any

import httpx

from tests.pushing import digest_of
from tests.services.ports import free_port

SECRET = "outage-secret-key-never-shown-0123456789"


def test_a_store_that_is_down_is_503_unavailable(registry_factory: Any) -> None:
    port = free_port()  # Nothing listens there: a gateway that is down.
    registry = registry_factory(
        {
            "storage": {
                "s3": {
                    "region": "us-east-1",
                    "regionendpoint": f"http://127.0.0.1:{port}",
                    "bucket": "absent",
                    "accesskey": "OUTAGEKEY",
                    "secretkey": SECRET,
                    "secure": False,
                }
            }
        }
    )
    digest = digest_of(b"anything")
    with httpx.Client(base_url=registry.url, timeout=120) as client:
        assert client.get("/v2/").status_code == 200  # No storage behind the base check.
        for response in (
            client.get("/v2/team/app/manifests/v1"),
            client.head(f"/v2/team/app/blobs/{digest}"),
            client.post("/v2/team/app/blobs/uploads/"),
            client.get("/v2/team/app/tags/list"),
        ):
            assert response.status_code == 503, response.text
            if response.request.method != "HEAD":
                assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
                assert str(port) not in response.text
    log = registry.log_with("storage: s3")
    assert "ERROR" in log and f"127.0.0.1:{port}" in log
    assert "Traceback" not in log
    assert SECRET not in log
