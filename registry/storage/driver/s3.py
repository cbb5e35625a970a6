"""S3 driver: the tree as objects in one bucket, laid out as registry:2's s3 driver lays it.

A path ``/docker/registry/v2/...`` is the object key ``<rootdirectory>/docker/...``
with no leading slash, so registry:2 (or Debian's ``docker-registry``) pointed at
the same bucket and root directory serves what this driver stored, and the
reverse. Directories are implicit: a prefix with objects below it.

Writers stream through multipart uploads, holding at most ``chunksize`` bytes.
S3 cannot append, so an appending writer starts a new multipart upload whose
first parts copy the existing object server-side (read back instead when it is
under S3's 5 MiB part minimum), and :meth:`S3Writer.commit` completes it: the
object is then whole and readable, as the registry needs when a later chunk of
an upload lands on another process and re-reads it to re-hash it.

The one-appender rule (BusyError) is a small lock object beside the file,
created with a conditional PUT (``If-None-Match: *``), renewed while its
writer is open and taken over (``If-Match`` on its ETag, an atomic swap)
once older than its lease, so a crashed process does not block an upload for
ever. Both conditions are honoured by AWS S3 and by Ceph RGW 16 (Debian 12),
which compares ``If-Match`` with the bare ETag (the swap sends both forms).
RGW 16 ignores ``If-Match`` on DELETE and ``x-amz-copy-source-if-match`` on
UploadPartCopy, so nothing relies on those; and it completes a multipart
upload only with every part uploaded to it listed, so a writer never leaves a
part out (a failed one is aborted whole).

A client is made lazily in the running event loop (the app builds its store
before the loop runs), one per loop; it is closed by :meth:`S3Driver.close`, or
when its loop shuts down (``asyncio.run`` closes async generators, and one
holds the client) for loops that used a driver they did not close.

Nothing here writes credentials anywhere: errors carry S3's code and message,
never a request's headers.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import aiohttp
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from . import (
    CHUNK_SIZE,
    BusyError,
    FileInfo,
    FileWriter,
    InvalidOffsetError,
    PathNotFoundError,
    StorageDriver,
    StorageDriverError,
)

MIB = 1024 * 1024
#: S3's smallest part (all but the last of a multipart upload), and registry:2's
#: smallest ``chunksize``.
MIN_PART = 5 * MIB
#: S3's largest part, and the largest object one CopyObject copies.
MAX_PART = 5 * 1024 * MIB
#: S3 allows 10,000 parts; copies stay well below.
MAX_COPY_PARTS = 9000
#: Keys per ListObjectsV2 page and per DeleteObjects request.
PAGE = 1000
#: registry:2's defaults.
DEFAULT_CHUNK_SIZE = 10 * MIB
DEFAULT_COPY_CHUNK_SIZE = 32 * MIB
DEFAULT_COPY_CONCURRENCY = 100
DEFAULT_COPY_THRESHOLD = 32 * MIB
#: registry:2's storage classes (``NONE``: send none, for stores without classes).
STORAGE_CLASSES = (
    "NONE",
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "OUTPOSTS",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
)
#: After a file's key: its appender's lock. ``~`` is outside the path grammar, so
#: no stored file is named like one, and listings leave locks out.
LOCK_SUFFIX = ".lock~"
#: How long a lock holds without renewal: a crashed appender blocks its file this long.
DEFAULT_LOCK_LEASE = 300.0
#: Last-Modified and Date are whole seconds: a lock is stale only once older than its
#: lease by more than that, so its holder (which gives up after the lease by its own
#: clock) has always stopped first.
CLOCK_STEP = 1.0
#: aiohttp sends larger bodies in pieces (as a file), so other requests go on meanwhile.
BODY_IN_ONE_PIECE = 1024 * 1024
#: Connections per client: every streamed read holds one until it ends.
POOL_CONNECTIONS = 100
log = logging.getLogger(__name__)

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
#: What reading a response's body raises when the connection fails (or times out).
_TRANSFER_ERRORS = (botocore.exceptions.BotoCoreError, aiohttp.ClientError, OSError)
#: A conditional write lost: the condition failed (412), or (AWS) a concurrent one won (409).
_CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class S3Error(StorageDriverError):
    """An S3 request failed; ``code`` is S3's error code (``AccessDenied``, ...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def _error(error: Exception, operation: str, path: str) -> StorageDriverError:
    """A driver error for a failed call: 404s are PathNotFoundError, the rest name the
    operation, the path and S3's code, and nothing of the request (its signature)."""
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code") or "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND:
            return PathNotFoundError(path)
        message = details.get("Message") or ""
        return S3Error(
            f"s3 {operation} of {path} failed: {code or 'error'} (HTTP {status})"
            + (f": {message}" if message else ""),
            code,
        )
    # Connection and timeout errors, missing credentials: botocore's words (an
    # endpoint URL at most).
    return S3Error(f"s3 {operation} of {path} failed: {error}")


def _body(data: bytes) -> bytes | io.BytesIO:
    """What aiohttp sends without holding the loop: a large body in pieces, from a file
    (``io.BytesIO`` of ``bytes`` shares their memory, no copy)."""
    return io.BytesIO(data) if len(data) > BODY_IN_ONE_PIECE else data


def _quoted(etag: str) -> str:
    return '"' + etag.strip('"') + '"'


def _ranges(size: int, piece: int) -> list[tuple[int, int]]:
    """``[0, size)`` in inclusive byte ranges of ``piece`` to under twice that (the last
    range takes the rest): every one is a valid non-final part when ``piece`` is."""
    piece = max(min(piece, MAX_PART // 2), -(-size // MAX_COPY_PARTS))
    count = max(1, size // piece)
    bounds = [size * index // count for index in range(count + 1)]
    return [(bounds[index], bounds[index + 1] - 1) for index in range(count)]


async def _keep(stack: AsyncExitStack) -> AsyncGenerator[None, None]:
    """Holds a client open; closing the generator closes it, and the loop closes the
    generator at shutdown if nobody did before."""
    try:
        yield
    finally:
        await stack.aclose()


@dataclass(slots=True)
class _LoopClient:
    client: Any
    keeper: AsyncGenerator[None, None]


@dataclass(frozen=True, slots=True)
class _LockState:
    owner: str
    etag: str
    age: float


class S3Driver(StorageDriver):
    """registry:2's ``storage.s3``; the parameters are its keys, with its defaults."""

    name: ClassVar[str] = "s3"

    @property
    def moves_keep_times(self) -> bool:
        return False  # A move is a copy: a new object, with its own Last-Modified.

    def __init__(
        self,
        bucket: str,
        region: str,
        *,
        regionendpoint: str | None = None,
        rootdirectory: str = "",
        accesskey: str | None = None,
        secretkey: str | None = None,
        sessiontoken: str | None = None,
        secure: bool = True,
        skipverify: bool = False,
        v4auth: bool = True,
        chunksize: int = DEFAULT_CHUNK_SIZE,
        multipartcopychunksize: int = DEFAULT_COPY_CHUNK_SIZE,
        multipartcopymaxconcurrency: int = DEFAULT_COPY_CONCURRENCY,
        multipartcopythresholdsize: int = DEFAULT_COPY_THRESHOLD,
        forcepathstyle: bool | None = None,
        encrypt: bool = False,
        keyid: str | None = None,
        storageclass: str = "STANDARD",
        lock_lease: float = DEFAULT_LOCK_LEASE,
    ) -> None:
        if not MIN_PART <= chunksize <= MAX_PART:
            raise ValueError(f"chunksize must be between {MIN_PART} and {MAX_PART}")
        if not MIN_PART <= multipartcopychunksize <= MAX_PART:
            raise ValueError(f"multipartcopychunksize must be between {MIN_PART} and {MAX_PART}")
        if multipartcopymaxconcurrency < 1:
            raise ValueError("multipartcopymaxconcurrency must be at least 1")
        if storageclass not in STORAGE_CLASSES:
            raise ValueError(f"storageclass must be one of {', '.join(STORAGE_CLASSES)}")
        if (accesskey is None) != (secretkey is None):
            raise ValueError("give both accesskey and secretkey, or neither")
        self.bucket = bucket
        self.region = region
        self.prefix = rootdirectory.rstrip("/")
        """Before every path to make its key (then stripped of a leading ``/``)."""
        self.chunksize = chunksize
        self.copy_chunksize = multipartcopychunksize
        self.copy_concurrency = multipartcopymaxconcurrency
        self.copy_threshold = min(multipartcopythresholdsize, MAX_PART)
        self.lock_lease = lock_lease
        self._object_args: dict[str, str] = {}
        """Sent with every object written (encryption, storage class)."""
        if encrypt:
            self._object_args["ServerSideEncryption"] = "aws:kms" if keyid else "AES256"
            if keyid:
                self._object_args["SSEKMSKeyId"] = keyid
        self._lock_args = dict(self._object_args)
        """Locks are encrypted as asked, but never of a class billed by the month."""
        if storageclass != "NONE":
            self._object_args["StorageClass"] = storageclass
        endpoint = regionendpoint or None
        if endpoint is not None and "://" not in endpoint:
            endpoint = ("https://" if secure else "http://") + endpoint
        # registry:2 (2.8) always addresses buckets by path on an endpoint of its own;
        # on AWS, by host where the bucket's name allows.
        path_style = forcepathstyle if forcepathstyle is not None else endpoint is not None
        self._client_args: dict[str, Any] = {
            "region_name": region,
            "endpoint_url": endpoint,
            "use_ssl": secure,
            "verify": False if skipverify else None,
            "config": AioConfig(
                signature_version="s3v4" if v4auth else "s3",
                s3={"addressing_style": "path" if path_style else "auto"},
                max_pool_connections=max(POOL_CONNECTIONS, multipartcopymaxconcurrency),
                # Checksums only where S3 requires them: stores such as Ceph RGW 16 refuse
                # the trailing checksums botocore would otherwise add to every upload.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard"},
            ),
        }
        if accesskey is not None:
            # Else botocore's default chain: AWS_* variables, ~/.aws files, instance roles.
            self._client_args.update(
                aws_access_key_id=accesskey,
                aws_secret_access_key=secretkey,
                aws_session_token=sessiontoken,
            )
        self._sessions = threading.local()
        """One botocore session per thread (sessions are not thread-safe); in it, a
        client per event loop."""
        self._clients: dict[asyncio.AbstractEventLoop, asyncio.Task[_LoopClient]] = {}

    def __repr__(self) -> str:
        return f"S3Driver(bucket={self.bucket!r}, rootdirectory={self.prefix!r})"

    # --- the client ---

    async def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        task = self._clients.get(loop)
        if task is None:
            for other in [other for other in self._clients if other.is_closed()]:
                del self._clients[other]  # Closed with its loop.
            task = self._clients[loop] = loop.create_task(self._open_client())
        try:
            return (await asyncio.shield(task)).client
        except BaseException:
            if task.done() and (task.cancelled() or task.exception() is not None):
                self._clients.pop(loop, None)
            raise

    async def _open_client(self) -> _LoopClient:
        session: AioSession | None = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = get_session()
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.create_client("s3", **self._client_args)
            )
            await self._check_bucket(client)
        except BaseException:
            await stack.aclose()
            raise
        keeper = _keep(stack)
        await keeper.__anext__()  # Now the loop knows it: its shutdown closes the client.
        return _LoopClient(client, keeper)

    async def _check_bucket(self, client: Any) -> None:
        """A missing bucket is a configuration error, never a missing path: a HEAD of an
        object in it would answer 404 as for any missing object."""
        try:
            await client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code") or "")
            problem = {"404": "does not exist", "NoSuchBucket": "does not exist"}.get(
                code, f"cannot be used: {code or 'error'}"
            )
            raise S3Error(f"s3 bucket {self.bucket!r} {problem}", code) from None
        except botocore.exceptions.BotoCoreError as error:
            raise _error(error, "head_bucket", "/") from None

    async def close(self) -> None:
        """Close this loop's client (another loop's closes with that loop)."""
        loop = asyncio.get_running_loop()
        for other, task in list(self._clients.items()):
            if other is not loop and not other.is_closed():
                continue
            del self._clients[other]
            if other is loop:
                with contextlib.suppress(Exception):
                    await (await task).keeper.aclose()

    async def _call(self, operation: str, path: str, **params: Any) -> dict[str, Any]:
        client = await self._client()
        try:
            result: dict[str, Any] = await getattr(client, operation)(
                Bucket=self.bucket, **params
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise _error(error, operation, path) from None
        return result

    # --- layout ---

    def key(self, path: str) -> str:
        """The object key of a driver path, as registry:2 makes it."""
        return (self.prefix + path).lstrip("/")

    def _lock_key(self, path: str) -> str:
        return self.key(path) + LOCK_SUFFIX

    async def _pages(self, path: str, prefix: str, **params: Any) -> AsyncIterator[dict[str, Any]]:
        token: str | None = None
        while True:
            more = {"ContinuationToken": token} if token else {}
            page = await self._call("list_objects_v2", path, Prefix=prefix, **params, **more)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    # --- reading ---

    async def _head(self, path: str, key: str | None = None) -> dict[str, Any]:
        return await self._call("head_object", path, Key=key or self.key(path))

    async def _url_for(self, path: str, expires: float) -> str | None:
        """A presigned GET: signed here with the driver's keys, nothing is sent to S3."""
        client = await self._client()
        url: str = await client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(path)},
            ExpiresIn=int(expires),
        )
        return url

    async def _get_content(self, path: str) -> bytes:
        response = await self._call("get_object", path, Key=self.key(path))
        return await self._read_body(response, path)

    async def _read_body(self, response: dict[str, Any], path: str) -> bytes:
        body = response["Body"]
        try:
            data: bytes = await body.read()
        except _TRANSFER_ERRORS as error:
            raise _error(error, "get_object", path) from None
        finally:
            body.close()
        return data

    async def _range(self, path: str, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (inclusive) of an object: small reads only."""
        response = await self._call("get_object", path, Key=key, Range=f"bytes={start}-{end}")
        return await self._read_body(response, path)

    async def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        if length == 0:
            if offset > int((await self._head(path))["ContentLength"]):
                raise InvalidOffsetError(path, offset)
            return
        params = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            params["Range"] = f"bytes={offset}-{end}"
        try:
            response = await self._call("get_object", path, Key=self.key(path), **params)
        except S3Error as error:
            if error.code != "InvalidRange":
                raise
            # At or past the end (an empty object has no byte 0 to start at).
            if offset > int((await self._head(path))["ContentLength"]):
                raise InvalidOffsetError(path, offset) from None
            return
        body = response["Body"]
        try:
            while True:
                # aiohttp hands over what arrived (often 64 KiB): gathered to CHUNK_SIZE,
                # so a consumer hashing each chunk in a thread makes few hops.
                pieces: list[bytes] = []
                gathered = 0
                while gathered < CHUNK_SIZE:
                    try:
                        piece: bytes = await body.read(CHUNK_SIZE - gathered)
                    except _TRANSFER_ERRORS as error:
                        raise _error(error, "get_object", path) from None
                    if not piece:
                        break
                    pieces.append(piece)
                    gathered += len(piece)
                if not pieces:
                    return
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                if gathered < CHUNK_SIZE:
                    return
        finally:
            body.close()

    async def _stat(self, path: str) -> FileInfo:
        try:
            head = await self._head(path)
        except PathNotFoundError:
            if await self._holds_anything(path):
                return FileInfo(path, 0, 0.0, True)
            raise
        return FileInfo(
            path, int(head["ContentLength"]), head["LastModified"].timestamp(), False
        )

    async def _holds_anything(self, path: str) -> bool:
        """A directory: any object below the path, locks left out."""
        async for page in self._pages(path, self.key(path) + "/", MaxKeys=PAGE):
            if any(not item["Key"].endswith(LOCK_SUFFIX) for item in page.get("Contents", [])):
                return True
        return False

    async def _list(self, path: str) -> builtins.list[str]:
        prefix = self.key(path) + "/"
        names: set[str] = set()
        async for page in self._pages(path, prefix, Delimiter="/", MaxKeys=PAGE):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(prefix) : -1])
            for item in page.get("Contents", []):
                names.add(item["Key"][len(prefix) :])
        # "" is a folder marker some tools create; "~" marks locks (outside the grammar).
        children = sorted(name for name in names if name and "~" not in name)
        if not children:
            raise PathNotFoundError(path)
        return children

    async def _list_holding(self, path: str, inner: str) -> builtins.list[str]:
        # One listing of the whole subtree, not a request per child (tags: one per tag).
        prefix = self.key(path) + "/"
        found: set[str] = set()
        anything = False
        async for page in self._pages(path, prefix, MaxKeys=PAGE):
            for item in page.get("Contents", []):
                rest = item["Key"][len(prefix) :]
                if rest.endswith(LOCK_SUFFIX):
                    continue
                anything = True
                child, _, below = rest.partition("/")
                if below == inner:
                    found.add(child)
        if not anything:
            raise PathNotFoundError(path)
        return sorted(found)

    # --- writing ---

    async def _put_content(self, path: str, content: bytes) -> None:
        await self._put(path, self.key(path), content)

    async def _put(self, path: str, key: str, content: bytes) -> None:
        await self._call(
            "put_object",
            path,
            Key=key,
            Body=_body(content),
            ContentType="application/octet-stream",
            **self._object_args,
        )

    async def _writer(self, path: str, append: bool) -> FileWriter:
        if not append:
            return S3Writer(self, path, 0, append=False)
        lock = _AppendLock(self, path)
        await lock.acquire()
        try:
            size = int((await self._head(path))["ContentLength"])
        except BaseException:
            # Deleted, or moved into place as a blob meanwhile: never brought back.
            await lock.release()
            raise
        return S3Writer(self, path, size, append=True, lock=lock)

    async def _start_upload(self, path: str, key: str) -> str:
        response = await self._call(
            "create_multipart_upload",
            path,
            Key=key,
            ContentType="application/octet-stream",
            **self._object_args,
        )
        return str(response["UploadId"])

    async def _copy_parts(
        self, path: str, key: str, upload_id: str, source: str, size: int
    ) -> list[dict[str, Any]]:
        """UploadPartCopy ``source``'s first ``size`` bytes as the upload's first parts,
        ``multipartcopymaxconcurrency`` at a time; each is at least 5 MiB (when ``size``
        is), so more parts may follow."""
        ranges = _ranges(size, self.copy_chunksize)
        semaphore = asyncio.Semaphore(self.copy_concurrency)

        async def copy(number: int, start: int, end: int) -> dict[str, Any]:
            async with semaphore:
                response = await self._call(
                    "upload_part_copy",
                    path,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    CopySourceRange=f"bytes={start}-{end}",
                )
            return {"PartNumber": number, "ETag": _quoted(response["CopyPartResult"]["ETag"])}

        results = await asyncio.gather(
            *(copy(number, *span) for number, span in enumerate(ranges, start=1)),
            return_exceptions=True,  # Every copy has ended before the upload may be aborted.
        )
        parts = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            parts.append(result)
        return parts

    async def _complete(
        self, path: str, key: str, upload_id: str, parts: Sequence[dict[str, Any]]
    ) -> None:
        await self._call(
            "complete_multipart_upload",
            path,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": sorted(parts, key=lambda part: int(part["PartNumber"]))},
        )

    async def _abort(self, path: str, key: str, upload_id: str) -> None:
        try:
            await self._call("abort_multipart_upload", path, Key=key, UploadId=upload_id)
        except (S3Error, PathNotFoundError) as error:
            if getattr(error, "code", "") != "NoSuchUpload":  # Gone already: fine.
                # Its parts stay stored (and billed) until a bucket lifecycle rule
                # (AbortIncompleteMultipartUpload) removes them.
                log.warning("could not abort upload %s of %s: %s", upload_id, path, error)

    async def _copy_prefix(self, path: str, key: str, source: str, size: int) -> None:
        """Make ``key`` the first ``size`` bytes of ``source`` (the same key or another),
        server-side when they are more than a part."""
        if size < MIN_PART:
            data = await self._range(path, source, 0, size - 1) if size else b""
            await self._put(path, key, data)
            return
        upload_id = await self._start_upload(path, key)
        try:
            parts = await self._copy_parts(path, key, upload_id, source, size)
            await self._complete(path, key, upload_id, parts)
        except BaseException:
            await self._abort(path, key, upload_id)
            raise

    async def _move(self, source: str, destination: str) -> None:
        size = int((await self._head(source))["ContentLength"])
        if source == destination:
            return
        source_key = self.key(source)
        if size <= self.copy_threshold or size < MIN_PART:
            await self._call(
                "copy_object",
                source,
                Key=self.key(destination),
                CopySource={"Bucket": self.bucket, "Key": source_key},
                **self._object_args,
            )
        else:
            await self._copy_prefix(source, self.key(destination), source_key, size)
        await self._call("delete_object", source, Key=source_key)

    async def _delete(self, path: str) -> None:
        key = self.key(path)
        doomed: list[str] = []
        deleted = 0
        # The file itself sorts first among the keys it prefixes.
        first = await self._call("list_objects_v2", path, Prefix=key, MaxKeys=1)
        is_file = any(item["Key"] == key for item in first.get("Contents", []))
        if is_file:
            doomed.append(key)
        async for page in self._pages(path, key + "/", MaxKeys=PAGE):
            doomed += [item["Key"] for item in page.get("Contents", [])]
            while len(doomed) >= PAGE:
                deleted += await self._delete_keys(path, doomed[:PAGE])
                del doomed[:PAGE]
        if doomed:
            deleted += await self._delete_keys(path, doomed)
        if deleted > is_file:
            # A folder: writes left unfinished in it go too (an instance that died
            # mid-upload leaves its multipart upload, whose parts are stored and billed).
            deleted += await self._abort_all(path, key + "/")
        if not deleted:
            raise PathNotFoundError(path)

    async def _abort_all(self, path: str, prefix: str) -> int:
        """Abort every multipart upload in progress under ``prefix``; how many."""
        aborted = 0
        markers: dict[str, str] = {}
        while True:
            page = await self._call("list_multipart_uploads", path, Prefix=prefix, **markers)
            for upload in page.get("Uploads") or []:
                await self._abort(path, upload["Key"], upload["UploadId"])
                aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            markers = {
                "KeyMarker": page["NextKeyMarker"],
                "UploadIdMarker": page["NextUploadIdMarker"],
            }

    async def _delete_keys(self, path: str, keys: Sequence[str]) -> int:
        response = await self._call(
            "delete_objects",
            path,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise S3Error(
                f"s3 delete_objects of {path} failed for {len(errors)} object(s), first "
                f"{first.get('Key')}: {first.get('Code')} {first.get('Message') or ''}".rstrip(),
                str(first.get("Code") or ""),
            )
        return len(keys)


class _AppendLock:
    """A file's one appender, across every process sharing the bucket.

    The lock is an object beside the file holding its owner's token and a
    timestamp. Taking it is a PUT with ``If-None-Match: *``, which creates it only
    if absent. A lock older than its lease (by the store's own clock, so clocks
    of the instances may differ: the age of its Last-Modified at the response's
    Date) is taken over with ``If-Match`` on the ETag just read, so of two
    processes taking over the same stale lock only one wins. While held, it is
    rewritten the same way every third of the lease; a holder that could not
    renew it for a whole lease stops writing (BusyError) and leaves it be.
    """

    def __init__(self, driver: S3Driver, path: str) -> None:
        self.driver = driver
        self.path = path
        self.key = driver._lock_key(path)
        self.owner = secrets.token_hex(16)
        self.lease = driver.lock_lease
        self._etag = ""
        self._renewed = 0.0
        """``time.monotonic()`` when the request that last took or renewed it was sent."""
        self._renewal: asyncio.Task[None] | None = None
        self.lost = False

    def _content(self) -> bytes:
        return json.dumps({"owner": self.owner, "at": time.time(), "lease": self.lease}).encode()

    async def acquire(self) -> None:
        for _ in range(3):
            sent = time.monotonic()
            try:
                response = await self.driver._call(
                    "put_object",
                    self.path,
                    Key=self.key,
                    Body=self._content(),
                    IfNoneMatch="*",
                    **self.driver._lock_args,
                )
            except S3Error as error:
                if error.code not in _CONFLICT:
                    raise
            else:
                self._held(response, sent)
                return
            try:
                current = await self._read()
            except PathNotFoundError:
                continue  # Released meanwhile: try again.
            if current.owner == self.owner:
                # A retried request whose first attempt made the lock after all.
                self._held({"ETag": current.etag}, sent)
                return
            if current.age <= self.lease + CLOCK_STEP:
                raise BusyError(self.path)
            sent = time.monotonic()
            swapped = await self._swap(current.etag)
            if swapped is None:
                with contextlib.suppress(PathNotFoundError):
                    current = await self._read()
                if current.owner != self.owner:
                    raise BusyError(self.path)  # Another process took it over first.
                swapped = {"ETag": current.etag}  # A retried request's first attempt won.
            self._held(swapped, sent)
            return
        raise BusyError(self.path)

    def _held(self, response: dict[str, Any], sent: float) -> None:
        self._etag = str(response.get("ETag") or "")
        self._renewed = sent
        if self._renewal is None:
            self._renewal = asyncio.get_running_loop().create_task(self._renew())

    async def _read(self) -> _LockState:
        response = await self.driver._call("get_object", self.path, Key=self.key)
        content = await self.driver._read_body(response, self.path)
        try:
            owner = str(json.loads(content)["owner"])
        except (ValueError, KeyError, TypeError):
            owner = ""
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        return _LockState(owner, str(response["ETag"]), now - response["LastModified"].timestamp())

    async def _swap(self, etag: str) -> dict[str, Any] | None:
        """Replace the lock if its ETag is still ``etag``; None if it is not."""
        # Ceph RGW 16 compares If-Match with its bare ETag, AWS with the quoted one:
        # either form is a compare-and-swap, so trying both stays one.
        for form in (etag.strip('"'), _quoted(etag)):
            try:
                return await self.driver._call(
                    "put_object",
                    self.path,
                    Key=self.key,
                    Body=self._content(),
                    IfMatch=form,
                    **self.driver._lock_args,
                )
            except S3Error as error:
                if error.code not in _CONFLICT:
                    raise
            except PathNotFoundError:
                return None
        return None

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            sent = time.monotonic()
            try:
                response = await self._swap(self._etag)
            except StorageDriverError:
                continue  # The store is unreachable: try again, the lease is not over yet.
            if response is None:
                with contextlib.suppress(StorageDriverError):
                    current = await self._read()
                    if current.owner == self.owner:  # A retried request renewed it already.
                        self._etag, self._renewed = current.etag, sent
                        continue
                self.lost = True
                return
            self._etag = str(response.get("ETag") or "")
            self._renewed = sent

    def check(self) -> None:
        """Refuse to go on once the lock went to another process."""
        if self.lost or time.monotonic() - self._renewed > self.lease:
            raise BusyError(self.path)

    async def release(self) -> None:
        if self._renewal is not None:
            renewal, self._renewal = self._renewal, None
            renewal.cancel()
            await asyncio.wait([renewal])  # Ended; a cancellation of this task still stops it.
        # Within the lease nobody can have taken it over, so it is still this one's.
        if not self.lost and time.monotonic() - self._renewed < self.lease:
            await self.driver._call("delete_object", self.path, Key=self.key)
        self.lost = True


class S3Writer(FileWriter):
    """Bytes go to a buffer, and from it as multipart parts of ``chunksize``.

    The writer's view of the file is ``stored`` bytes as they are now the object
    (the start of its content), then ``parts`` of an upload in progress, then the
    ``pending`` bytes. A new file's writer starts from an empty view that the
    object does not hold yet (``stale``): closing it makes the object, empty if
    nothing came. A failed write or commit leaves the view unknown (``failed``):
    only :meth:`rollback` (back to the file as opened) or :meth:`cancel` go on
    from there, and :meth:`close` then keeps the object as it is.
    """

    def __init__(
        self,
        driver: S3Driver,
        path: str,
        size: int,
        *,
        append: bool,
        lock: _AppendLock | None = None,
    ) -> None:
        self._driver = driver
        self._path = path
        self._key = driver.key(path)
        self._lock = lock
        self._start = size
        self._size = size
        self._stored = size
        self._stale = not append
        self._upload: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._pending: list[bytes] = []
        """Bytes written and not yet sent, as written (joined only to be sent)."""
        self._pending_size = 0
        self._closed = False
        self._failed = False

    @property
    def size(self) -> int:
        return self._size

    def _check(self, *, failed_too: bool = False) -> None:
        if self._closed:
            raise StorageDriverError(f"writer of {self._path} is closed")
        if self._failed and not failed_too:
            raise StorageDriverError(f"writer of {self._path} failed: roll back or cancel it")
        if self._lock is not None:
            self._lock.check()

    async def write(self, data: bytes) -> None:
        await self.write_parts([data])

    async def write_parts(self, parts: Sequence[bytes]) -> None:
        self._check()
        for part in parts:
            if not part:
                continue
            self._pending.append(part if isinstance(part, bytes) else bytes(part))
            self._pending_size += len(part)
            self._size += len(part)
            if self._pending_size >= self._driver.chunksize:
                try:
                    await self._send_part()
                except BaseException:
                    self._failed = True
                    raise

    async def _begin(self) -> None:
        """Start the upload; its first parts are the stored bytes the view starts with."""
        driver = self._driver
        self._upload = await driver._start_upload(self._path, self._key)
        self._parts = []
        if self._stored >= MIN_PART:
            self._parts = await driver._copy_parts(
                self._path, self._key, self._upload, self._key, self._stored
            )
        elif self._stored:
            # Under a part's minimum: read back (at most 5 MiB) and sent again.
            head = await driver._range(self._path, self._key, 0, self._stored - 1)
            self._pending.insert(0, head)
            self._pending_size += len(head)

    def _take_pending(self) -> bytes:
        data = b"".join(self._pending)
        self._pending = []
        self._pending_size = 0
        return data

    async def _send_part(self) -> None:
        if self._upload is None:
            await self._begin()
        assert self._upload is not None
        data = self._take_pending()
        number = len(self._parts) + 1
        response = await self._driver._call(
            "upload_part",
            self._path,
            Key=self._key,
            UploadId=self._upload,
            PartNumber=number,
            Body=_body(data),
        )
        self._parts.append({"PartNumber": number, "ETag": _quoted(response["ETag"])})

    @property
    def _dirty(self) -> bool:
        return self._stale or self._size != self._stored

    async def commit(self) -> None:
        self._check()
        if not self._dirty:
            return
        driver = self._driver
        try:
            if self._upload is None and self._stored < MIN_PART:
                # Small: one PUT of what was stored and what came since.
                head = b""
                if self._stored:
                    head = await driver._range(self._path, self._key, 0, self._stored - 1)
                await driver._put(self._path, self._key, head + self._take_pending())
            else:
                if self._pending or self._upload is None:
                    await self._send_part()  # The last part: any size.
                assert self._upload is not None
                await driver._complete(self._path, self._key, self._upload, self._parts)
                self._upload = None
        except BaseException:
            self._failed = True
            await self._drop_upload()
            raise
        self._parts = []
        self._stored = self._size
        self._stale = False

    async def _drop_upload(self) -> None:
        if self._upload is not None:
            upload, self._upload = self._upload, None
            self._parts = []
            await self._driver._abort(self._path, self._key, upload)

    async def rollback(self) -> None:
        self._check(failed_too=True)
        await self._drop_upload()
        self._take_pending()
        self._size = self._start
        if self._stored != self._start:
            # A commit of this writer's is stored: cut the object back to the bytes it
            # had when opened (its start, as every commit appended).
            await self._driver._copy_prefix(self._path, self._key, self._key, self._start)
            self._stored = self._start
            self._stale = False
        self._failed = False

    async def cancel(self) -> None:
        try:
            await self._drop_upload()
            await self._driver._call("delete_object", self._path, Key=self._key)
        finally:
            await self._finish()

    async def close(self) -> None:
        if self._closed:
            return
        try:
            if self._dirty and not self._failed and (self._lock is None or not self._lock.lost):
                await self.commit()  # What was written stays, as on a disk.
        finally:
            await self._drop_upload()
            await self._finish()

    async def _finish(self) -> None:
        self._closed = True
        self._take_pending()
        if self._lock is not None:
            lock, self._lock = self._lock, None
            await lock.release()
