"""A lean multipart/form-data reader for bodies already held in memory (RFC 7578).

The service reads the whole body (against its size limit) before parsing, so parts are slices of
that body: no temporary files, no per-byte callbacks. Header parameters (boundary, field and file
names) are read by python-multipart's `parse_options_header`.
"""

from dataclasses import dataclass

from python_multipart.multipart import parse_options_header

from service.core.errors import UndecodableInput


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content: bytes


def boundary_of(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if not 1 <= len(boundary) <= 70:
        raise UndecodableInput("multipart/form-data needs a boundary parameter of 1 to 70 characters in Content-Type")
    return boundary


def _disposition(headers: bytes) -> tuple[str, str | None]:
    """The part's field name and file name; python-multipart undoes quoting and escapes."""
    for line in headers.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() != b"content-disposition":
            continue
        _, params = parse_options_header(value)
        if b"name" not in params:
            break
        filename = params.get(b"filename")
        return _text(params[b"name"]), None if filename is None else _text(filename)
    raise UndecodableInput("malformed multipart body: a part has no Content-Disposition with a name")


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Every part of the body, in order; refuses a body that is not well-formed multipart."""
    delimiter = b"\r\n--" + boundary_of(content_type)
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2:
        raise UndecodableInput("malformed multipart body: the boundary from Content-Type never occurs")
    if not chunks[-1].startswith(b"--"):
        raise UndecodableInput("malformed multipart body: no closing boundary; the body may be truncated")
    if len(chunks) - 2 > max_parts:
        raise UndecodableInput(f"multipart body has more than {max_parts} parts")
    parts = []
    for chunk in chunks[1:-1]:
        head_end = chunk.find(b"\r\n\r\n")
        if not chunk.startswith(b"\r\n") and not chunk.startswith(b" ") and not chunk.startswith(b"\t"):
            raise UndecodableInput("malformed multipart body: a boundary line is not followed by a line break")
        if head_end < 0:
            raise UndecodableInput("malformed multipart body: a part's headers are not closed by an empty line")
        name, filename = _disposition(chunk[:head_end])
        parts.append(Part(name, filename, chunk[head_end + 4 :]))
    return parts
