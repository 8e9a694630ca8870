"""Where label documents live: a local folder, or any S3-compatible object store.

The labeler writes it; the receiver's label API reads it. ``PARCELFLOW_LABEL_STORE`` is
``folder`` (``PARCELFLOW_LABEL_DIR``, the devstack's) or ``s3://bucket[/prefix]`` (AWS S3,
MinIO, GCS's S3 API: ``PARCELFLOW_LABEL_S3_ENDPOINT``; credentials the AWS way:
environment, profile or instance role). Every name is a digest, never a raw id:

- ``<2 hex>/<sha256(job, box)>.<pdf|png|zpl>``: one parcel's label in one format;
- ``jobs/<sha256(job)>.json``: the job's label record (what labels.v1 carries);
- ``boxes/<sha256(warehouse, box)>.json``: the box's claim, which order and job hold the
  box id in its warehouse (``workers/labels/claims.py``).

Objects get their content type, optional server-side encryption and no public access
(no ACL is ever set: the bucket's own policy applies). Files are 0600 in 0700 folders:
labels carry recipients' addresses. Claims are written only if absent or unchanged since
read (``put_if``): S3's conditional writes, a lock file in the folder store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from workers.errors import ConfigError
from workers.settings import LabelStoreSettings

# Every name this module or documents.py makes, and nothing else: no id reaches a path.
NAME = re.compile(r"(?:[0-9a-f]{2}|jobs|boxes)/[0-9a-f]{64}\.(?:pdf|png|zpl|bin|json)")
CONTENT_TYPES = {"pdf": "application/pdf", "png": "image/png", "zpl": "application/x-zpl"}
FORMATS = frozenset(CONTENT_TYPES)
DIR_MODE = 0o700


def digest(*parts: str) -> str:
    framed = "".join(f"{len(p)}:{p}" for p in parts)
    return hashlib.sha256(framed.encode("utf-8", "surrogatepass")).hexdigest()


def document_name(job_id: str, box_id: str, fmt: str) -> str:
    """One parcel's label in one format: two parcels never share a name, and every name
    has the same short length."""
    framed = f"{len(job_id)}:{job_id}{len(box_id)}:{box_id}"
    name = hashlib.sha256(framed.encode("utf-8", "surrogatepass")).hexdigest()
    suffix = fmt.lower() if fmt.lower() in FORMATS else "bin"
    return f"{name[:2]}/{name}.{suffix}"


def manifest_name(job_id: str) -> str:
    return f"jobs/{digest('job', job_id)}.json"


def claim_name(warehouse_id: str, box_id: str) -> str:
    return f"boxes/{digest('box', warehouse_id, box_id)}.json"


def tag_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Stored:
    uri: str
    sha256: str
    size: int


class LabelStore(Protocol):
    async def put(self, name: str, data: bytes, content_type: str) -> Stored: ...

    async def get(self, name: str) -> bytes | None: ...

    async def get_tagged(self, name: str) -> tuple[bytes, str] | None:
        """The object and a tag that changes whenever it does (for ``put_if``)."""
        ...

    async def put_if(self, name: str, data: bytes, tag: str | None) -> bool:
        """Write ``name`` only if it is absent (``tag`` None) or still has ``tag``; False
        when another writer came first."""
        ...

    async def delete(self, name: str) -> bool:
        """Delete ``name``; False if it was not there."""
        ...

    def older_than(self, cutoff_s: float) -> AsyncIterator[str]:
        """The names of documents and records last written before ``cutoff_s`` (Unix
        seconds): what the retention sweep deletes."""
        ...

    async def close(self) -> None: ...


class FolderStore:
    """Files under ``root``: 0600 files in 0700 folders, written atomically (a temporary
    file renamed into place: a reader sees the whole label or none)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.made: set[Path] = set()  # folders known to exist with DIR_MODE

    def path(self, name: str) -> Path:
        if not NAME.fullmatch(name):  # names are digests; anything else is refused
            raise ValueError(f"not a label store name: {name[:100]!r}")
        return self.root / name

    def folder(self, folder: Path) -> None:
        if folder not in self.made:
            for each in (self.root, folder):
                each.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                os.chmod(each, DIR_MODE)
            self.made.add(folder)

    def _put(self, name: str, data: bytes) -> Stored:
        path = self.path(name)
        self.folder(path.parent)
        descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return Stored(str(path), hashlib.sha256(data).hexdigest(), len(data))

    def _get(self, name: str) -> bytes | None:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            return None

    def _put_if(self, name: str, data: bytes, tag: str | None) -> bool:
        path = self.path(name)
        self.folder(path.parent)
        # one lock for every conditional write of this folder (replicas on one host)
        with open(self.root / ".claims.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self._get(name)
            if (None if current is None else tag_of(current)) != tag:
                return False
            self._put(name, data)
            return True

    async def put(self, name: str, data: bytes, content_type: str) -> Stored:
        return await asyncio.to_thread(self._put, name, data)

    async def get(self, name: str) -> bytes | None:
        return await asyncio.to_thread(self._get, name)

    async def get_tagged(self, name: str) -> tuple[bytes, str] | None:
        data = await self.get(name)
        return None if data is None else (data, tag_of(data))

    async def put_if(self, name: str, data: bytes, tag: str | None) -> bool:
        return await asyncio.to_thread(self._put_if, name, data, tag)

    def _delete(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    async def delete(self, name: str) -> bool:
        return await asyncio.to_thread(self._delete, name)

    async def older_than(self, cutoff_s: float) -> AsyncIterator[str]:
        def old() -> list[str]:
            if not self.root.exists():
                return []
            found = []
            for path in self.root.rglob("*"):
                name = path.relative_to(self.root).as_posix()
                if NAME.fullmatch(name) and path.stat().st_mtime < cutoff_s:
                    found.append(name)
            return found

        for name in await asyncio.to_thread(old):
            yield name

    async def close(self) -> None:
        return None


class S3Store:
    """Objects in an S3-compatible bucket, through aiobotocore."""

    def __init__(self, settings: LabelStoreSettings, bucket: str, prefix: str) -> None:
        self.settings = settings
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._client: Any = None
        self._context: Any = None

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    async def client(self) -> Any:
        if self._client is None:
            from aiobotocore.session import get_session

            s = self.settings
            self._context = get_session().create_client(
                "s3",
                endpoint_url=s.label_s3_endpoint or None,
                region_name=s.label_s3_region or None,
            )
            self._client = await self._context.__aenter__()
        return self._client

    def encryption(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.settings.label_s3_sse:
            extra["ServerSideEncryption"] = self.settings.label_s3_sse
        if self.settings.label_s3_kms_key_id:
            extra["SSEKMSKeyId"] = self.settings.label_s3_kms_key_id
        return extra

    async def put(self, name: str, data: bytes, content_type: str) -> Stored:
        client = await self.client()
        key = self.key(name)
        await client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **self.encryption()
        )
        return Stored(f"s3://{self.bucket}/{key}", hashlib.sha256(data).hexdigest(), len(data))

    async def get(self, name: str) -> bytes | None:
        found = await self.get_tagged(name)
        return None if found is None else found[0]

    async def get_tagged(self, name: str) -> tuple[bytes, str] | None:
        client = await self.client()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=self.key(name))
        except client.exceptions.NoSuchKey:
            return None
        async with answer["Body"] as body:
            data: bytes = await body.read()
        return data, str(answer["ETag"])

    async def put_if(self, name: str, data: bytes, tag: str | None) -> bool:
        """S3's conditional writes: If-None-Match: * to create, If-Match: <ETag> to
        replace; 412 (or 409 for a race between two) means another writer came first."""
        client = await self.client()
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        try:
            await client.put_object(
                Bucket=self.bucket,
                Key=self.key(name),
                Body=data,
                ContentType="application/json",
                **condition,
                **self.encryption(),
            )
        except client.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):
                return False
            raise
        return True

    async def delete(self, name: str) -> bool:
        client = await self.client()
        key = self.key(name)
        try:
            await client.head_object(Bucket=self.bucket, Key=key)
        except client.exceptions.ClientError:
            return False
        await client.delete_object(Bucket=self.bucket, Key=key)
        return True

    async def older_than(self, cutoff_s: float) -> AsyncIterator[str]:
        client = await self.client()
        start = f"{self.prefix}/" if self.prefix else ""
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
        async for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"].removeprefix(start)
                if NAME.fullmatch(name) and item["LastModified"].timestamp() < cutoff_s:
                    yield name

    async def close(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)
            self._client = self._context = None


def check(settings: LabelStoreSettings) -> None:
    """ConfigError for a store that would keep labels (buyers' addresses) unencrypted."""
    if (
        settings.label_store.startswith("s3://")
        and not settings.label_s3_sse
        and not settings.label_s3_allow_unencrypted
    ):
        raise ConfigError(
            "PARCELFLOW_LABEL_S3_SSE must be AES256 or aws:kms: labels carry buyers' "
            "addresses (PARCELFLOW_LABEL_S3_ALLOW_UNENCRYPTED=true only where the bucket's "
            "default encryption is checked)"
        )
    if settings.label_s3_kms_key_id and settings.label_s3_sse != "aws:kms":
        raise ConfigError("PARCELFLOW_LABEL_S3_KMS_KEY_ID needs PARCELFLOW_LABEL_S3_SSE=aws:kms")


def open_store(settings: LabelStoreSettings) -> LabelStore:
    where = settings.label_store
    if where == "folder":
        return FolderStore(settings.label_dir)
    bucket, _, prefix = where.removeprefix("s3://").partition("/")
    return S3Store(settings, bucket, prefix)


async def put_document(
    store: LabelStore, job_id: str, box_id: str, fmt: str, data: bytes
) -> Stored:
    content_type = CONTENT_TYPES.get(fmt, "application/octet-stream")
    return await store.put(document_name(job_id, box_id, fmt), data, content_type)
