"""A throw-away Ceph cluster with a RADOS Gateway: real S3 for the S3 driver's tests.

One monitor, one OSD (BlueStore on a sparse file), no manager, cephx off inside
the cluster (S3's own signatures are still checked by the gateway), all on
loopback ports picked free at run time and all state in a temporary folder.
Started once per pytest session by the ``ceph_s3`` fixture (about 6 s), stopped
and deleted at its end; the daemons also die with the pytest process (a
parent-death signal), so a killed run leaves none behind.

Ported from ``recipes/ceph-s3-up.sh`` (plus ``tcp_nodelay`` on the gateway); the
settings that matter are commented where they are made. Debian 12 packages:
``ceph-mon ceph-osd radosgw``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import string
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.needs import require
from tests.services import ports

PACKAGES = "ceph-mon ceph-osd radosgw"
BINARIES = (
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
    "ceph",
    "ceph-authtool",
    "monmaptool",
)
#: Debian's python3 has the ``rados`` module (python3-rados, a dependency of ceph-common).
SYSTEM_PYTHON = "/usr/bin/python3"
#: Ports used from the base: the gateway, the monitor, then the OSD's messengers.
PORT_SPAN = 10
REGION = "us-east-1"
#: Made with the gateway: the storage suite's tests each keep to a root directory in it.
TEST_BUCKET = "registry-tests"
#: The gateway's pools, made up front in one librados session so the first bucket,
#: PUT and multipart upload do not each wait for one.
RGW_POOLS = (
    ".rgw.root",
    "default.rgw.log",
    "default.rgw.control",
    "default.rgw.meta",
    "default.rgw.buckets.index",
    "default.rgw.buckets.data",
    "default.rgw.buckets.non-ec",
)
_MAKE_POOLS = """
import sys, rados
cluster = rados.Rados(conffile=sys.argv[1])
cluster.connect()
for pool in sys.argv[2:]:
    if not cluster.pool_exists(pool):
        cluster.create_pool(pool)
    cluster.mon_command(
        '{"prefix": "osd pool application enable", "pool": "%s", "app": "rgw"}' % pool, b""
    )
cluster.shutdown()
"""


def _dying_with_parent(command: tuple[str, ...]) -> list[str]:
    """The command, made to get SIGTERM when pytest ends however it ends (util-linux's
    ``setpriv``; a ``preexec_fn`` could deadlock in a process with threads)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig=TERM", "--", *command] if setpriv else list(command)


def _free_port_base() -> int:
    """A base port with the PORT_SPAN ports from it free on 127.0.0.1, below Linux's
    ephemeral range (32768 and up) so no client connection takes one meanwhile, and in
    this xdist worker's own share of that range."""
    return ports.free_port_run(PORT_SPAN)


def _random_key(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


class CephS3:
    """The cluster and its gateway; :meth:`start`, then S3 at :attr:`endpoint`."""

    def __init__(self, base: Path, objectstore: str = "bluestore") -> None:
        self.base = base
        self.objectstore = objectstore
        port = _free_port_base()
        self.rgw_port = port
        self.mon_port = port + 1
        self.osd_ports = (port + 3, port + PORT_SPAN - 1)
        self.access_key = _random_key(20, string.ascii_uppercase + string.digits)
        self.secret_key = _random_key(40, string.ascii_letters + string.digits)
        self.region = REGION
        self.conf = base / "ceph.conf"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started_in = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    def _config(self, fsid: str) -> str:
        base = self.base
        low, high = self.osd_ports
        return f"""[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{self.mon_port}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
ms bind msgr1 = false
ms bind port min = {low}
ms bind port max = {high}
auth cluster required = none
auth service required = none
auth client required = none
# with auth none the default "secure" msgr2 mode cannot be negotiated (radosgw fails
# with -13): crc everywhere
ms mon client mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms cluster mode = crc
ms service mode = crc
keyring = {base}/keyring
run dir = {base}/run
admin socket = {base}/run/$name.asok
log file = {base}/log/$name.log
crash dir = {base}/crash
mon data = {base}/mon/$name
osd data = {base}/osd/$id
osd objectstore = {self.objectstore}
memstore device bytes = 4294967296
bluestore block path = {base}/osd/$id/block.file
bluestore block create = true
bluestore block size = 10737418240
osd memory target = 1073741824
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
# the big win: the default 1 s paxos batching makes OSD boot + pool creation take ~15 s
paxos propose interval = 0.05
# librados clients re-poll for a newer osdmap only every objecter tick (5 s) while the
# fresh OSD boots
objecter tick interval = 0.5
mon max pg per osd = 1000
# overwritten objects' old data stays 60 s, so reads that began before finish whole
rgw gc obj min wait = 60
rgw gc processor period = 60
[client.rgw.a]
rgw data = {base}/rgw
# tcp_nodelay: without it every response with a body (GET, LIST, DeleteObjects) waits
# about 40 ms for the client's delayed ACK (measured: a GET 45 ms, with it 7 ms)
rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port} tcp_nodelay=1
rgw dns name = localhost
"""

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CEPH_", "REGISTRY_"))}
        env["CEPH_CONF"] = str(self.conf)
        return env

    def _run(self, *command: str) -> str:
        result = subprocess.run(
            command,
            env=self._env(),
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[:2])} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}\n{self.logs()}"
            )
        return result.stdout

    def _daemon(self, name: str, *command: str) -> None:
        with (self.base / "log" / f"{name}.out").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                _dying_with_parent(command),
                env=self._env(),
                cwd=self.base,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )

    def logs(self) -> str:
        """The end of every daemon's log, for a failure's message."""
        found = []
        for path in sorted((self.base / "log").glob("*")):
            with contextlib.suppress(OSError):
                found.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(found)

    def start(self) -> CephS3:
        started = time.monotonic()
        for folder in ("mon", "osd/0", "run", "log", "rgw", "crash"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        self.conf.write_text(self._config(fsid))
        try:
            self._run(
                "ceph-authtool", "--create-keyring", str(self.base / "keyring"),
                "--gen-key", "-n", "mon.", "--cap", "mon", "allow *",
            )  # fmt: skip
            self._run(
                "monmaptool", "--create", "--fsid", fsid,
                "--addv", "a", f"[v2:127.0.0.1:{self.mon_port}]", str(self.base / "monmap"),
            )  # fmt: skip
            self._run(
                "ceph-mon", "--mkfs", "-i", "a", "--monmap", str(self.base / "monmap"),
                "--keyring", str(self.base / "keyring"),
            )  # fmt: skip
            self._daemon("mon.a", "ceph-mon", "-f", "-i", "a")
            osd_uuid = str(uuid.uuid4())
            osd_id = self._run("ceph", "osd", "new", osd_uuid).strip()
            self._run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
            self._daemon(f"osd.{osd_id}", "ceph-osd", "-f", "-i", osd_id)
            self._run(SYSTEM_PYTHON, "-c", _MAKE_POOLS, str(self.conf), *RGW_POOLS)
            self._daemon("client.rgw.a", "radosgw", "-f", "-n", "client.rgw.a")
            self._wait_for_gateway()
            # The test user's keys are random per session; radosgw-admin takes them only
            # as arguments (a test-only cluster, nothing else on it).
            self._run(
                "radosgw-admin", "user", "create", "--uid=registry-tests",
                "--display-name=registry tests",
                f"--access-key={self.access_key}", f"--secret={self.secret_key}",
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started
        return self

    def _wait_for_gateway(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}\n{self.logs()}")
            try:
                if httpx.get(self.endpoint, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the RADOS gateway did not answer at {self.endpoint}\n{self.logs()}")

    def stop(self) -> None:
        """Stop the gateway, then the OSD, then the monitor; delete every file."""
        for name in reversed(list(self.processes)):
            process = self.processes.pop(name)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    def client(self) -> Any:
        """A plain (synchronous) botocore client: the tests' view from outside the driver."""
        import botocore.config
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            region_name=self.region,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def driver_parameters(self, bucket: str, rootdirectory: str = "") -> dict[str, object]:
        """``storage.s3`` for this gateway, as registry:2 (and ``S3Driver``) take it."""
        return {
            "region": self.region,
            "regionendpoint": self.endpoint,
            "bucket": bucket,
            "rootdirectory": rootdirectory,
            "accesskey": self.access_key,
            "secretkey": self.secret_key,
            "secure": False,
            "forcepathstyle": True,
        }


def require_ceph() -> None:
    """Skip (or, with E2E_REQUIRED=1, fail) naming the packages when Ceph is missing."""
    for binary in BINARIES:
        require(binary, PACKAGES)
    require(SYSTEM_PYTHON, "python3")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import rados"], capture_output=True, check=False)
    if probe.returncode != 0:
        message = "python3-rados not installed: apt-get install python3-rados"
        if os.environ.get("E2E_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def ceph_s3() -> Iterator[CephS3]:
    """Ceph's S3 gateway, started once per session (on first use) with one bucket,
    ``registry-tests``; each test keeps to a root directory (or a bucket) of its own."""
    require_ceph()
    gateway = CephS3(Path(tempfile.mkdtemp(prefix="ceph-s3-")))
    gateway.start()
    try:
        with contextlib.closing(gateway.client()) as client:
            client.create_bucket(Bucket=TEST_BUCKET)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def s3_bucket(ceph_s3: CephS3) -> Iterator[str]:
    """A bucket of the test's own, emptied (objects and multipart uploads) and removed
    afterwards."""
    name = f"test-{secrets.token_hex(5)}"
    with contextlib.closing(ceph_s3.client()) as client:
        client.create_bucket(Bucket=name)
    yield name
    with contextlib.closing(ceph_s3.client()) as client:
        # Fixtures end in reverse order: a registry from a fixture set up before this one
        # (``registry_factory`` named first) still runs here and may write one more object
        # meanwhile (a maintenance stamp): empty the bucket again until it can go.
        for attempt in itertools.count(1):
            _empty_bucket(client, name)
            try:
                client.delete_bucket(Bucket=name)
                return
            except client.exceptions.ClientError as error:
                if error.response["Error"]["Code"] != "BucketNotEmpty" or attempt == 20:
                    raise
            time.sleep(0.5)


def _empty_bucket(client: Any, name: str) -> None:
    """Delete every object and abort every multipart upload in bucket ``name``."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
    for upload in uploads:
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
