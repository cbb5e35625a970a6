"""What the store raises; the API maps each to a spec error code in one table."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every registry-level storage error."""


class BlobUnknownError(StorageError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"blob unknown: {digest}")
        self.digest = digest


class ManifestUnknownError(StorageError):
    def __init__(self, reference: str) -> None:
        super().__init__(f"manifest unknown: {reference}")
        self.reference = reference


class RepositoryUnknownError(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"repository unknown: {name}")
        self.name = name


class UploadUnknownError(StorageError):
    def __init__(self, upload_id: str) -> None:
        super().__init__(f"upload unknown: {upload_id}")
        self.upload_id = upload_id


class UploadRangeError(StorageError):
    """A chunk that does not start where the upload ends."""

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(f"chunk starts at {received}, upload is at {expected}")
        self.expected = expected
        self.received = received


class UploadBusyError(StorageError):
    """Another request kept writing the session for longer than one may wait."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(
            f"another request is writing upload {upload_id}; ask its status and go on from there"
        )
        self.upload_id = upload_id


class DigestMismatchError(StorageError):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"digest {actual} does not match {expected}")
        self.expected = expected
        self.actual = actual


class SizeMismatchError(StorageError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"received {actual} bytes, expected {expected}")
        self.expected = expected
        self.actual = actual


class ManifestInvalidError(StorageError):
    pass


class ManifestBlobUnknownError(StorageError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"manifest references unknown blob {digest}")
        self.digest = digest
