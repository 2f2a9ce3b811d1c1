"""Streaming multipart reader: the file part goes to a temporary file as it arrives.

Litestar's own multipart support reads the whole body into memory first; an image host
must instead count bytes while they stream and stop at the limit.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from litestar import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from chitram.errors import InvalidRequestError, PayloadTooLargeError, format_bytes

FILE_FIELD = "file"
# RFC 2046 §5.1.1: a boundary is 1 to 70 characters (python-multipart raises a bare error above 256).
MAX_BOUNDARY_LENGTH = 70
MAX_FIELD_BYTES = 4096
MAX_PARTS = 16


@dataclass
class UploadedFile:
    path: Path
    filename: str | None
    declared_type: str | None
    size: int


@dataclass
class UploadForm:
    file: UploadedFile | None
    fields: dict[str, str] = field(default_factory=dict)


class _FormCollector:
    """Callbacks for python-multipart's parser: text fields in memory, the file on disk."""

    def __init__(self, *, max_file_bytes: int, tmp_dir: Path) -> None:
        self.max_file_bytes = max_file_bytes
        self.tmp_dir = tmp_dir
        self.fields: dict[str, str] = {}
        self.file: UploadedFile | None = None
        self._parts = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._filename: str | None = None
        self._buffer = bytearray()
        self._handle: IO[bytes] | None = None
        self._file_size = 0

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidRequestError(f"the form has more than {MAX_PARTS} parts; send one file with its fields")
        self._headers, self._name, self._filename = {}, None, None
        self._buffer = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        if self._name == FILE_FIELD:
            if self.file is not None or self._handle is not None:
                raise InvalidRequestError("send one file per request in the field 'file'")
            self._filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
            fd, path = tempfile.mkstemp(prefix="upload-", dir=self.tmp_dir)
            self._handle = os.fdopen(fd, "wb")
            self._file_size = 0
            self.file = UploadedFile(
                path=Path(path),
                filename=self._filename,
                declared_type=self._headers.get(b"content-type", b"").decode("latin-1") or None,
                size=0,
            )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._handle is not None:
            self._file_size += len(chunk)
            if self._file_size > self.max_file_bytes:
                raise PayloadTooLargeError(
                    f"the file is larger than the upload limit of {format_bytes(self.max_file_bytes)}; "
                    "send a smaller or more compressed image"
                )
            self._handle.write(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) > MAX_FIELD_BYTES:
            raise InvalidRequestError(f"the form field '{self._name}' is longer than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._handle is not None and self.file is not None:
            self._handle.close()
            self._handle = None
            self.file.size = self._file_size
        elif self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")

    @property
    def file_unfinished(self) -> bool:
        """The body ended inside the file part (its closing boundary never came)."""
        return self._handle is not None

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.file is not None:
            self.file.path.unlink(missing_ok=True)


def _boundary(request: Request[Any, Any, Any]) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequestError("send the image as multipart/form-data with the file in the field 'file'")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise InvalidRequestError(
            f"the multipart boundary is longer than {MAX_BOUNDARY_LENGTH} characters; send a valid form"
        )
    return boundary


@contextlib.asynccontextmanager
async def read_upload_form(
    request: Request[Any, Any, Any], *, max_file_bytes: int, tmp_dir: Path
) -> AsyncIterator[UploadForm]:
    """Stream the request into an UploadForm; the temporary file is removed on exit."""
    boundary = _boundary(request)
    collector = _FormCollector(max_file_bytes=max_file_bytes, tmp_dir=tmp_dir)
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        if collector.file_unfinished:
            raise InvalidRequestError("the upload ended before the file did; send it again")
        yield UploadForm(file=collector.file, fields=collector.fields)
    except FormParserError as exc:
        raise InvalidRequestError(f"the multipart body is malformed ({exc}); send a valid form") from exc
    finally:
        collector.discard()
