"""A lean multipart/form-data reader for bodies already held in memory (RFC 7578).

The service reads the whole body (against its size limit) before parsing, so parts are slices of
that body: no temporary files, no per-byte callbacks.
"""

from dataclasses import dataclass

from service.errors import UndecodableInput


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content: bytes


def boundary_of(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if 1 <= len(value) <= 70:
                return value.encode("latin-1")
    raise UndecodableInput("multipart/form-data needs a boundary parameter of 1 to 70 characters in Content-Type")


def _disposition(headers: str) -> tuple[str, str | None]:
    for line in headers.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        name, filename = None, None
        for param in value.split(";")[1:]:
            pkey, _, pvalue = param.strip().partition("=")
            pvalue = pvalue.strip()
            if len(pvalue) >= 2 and pvalue[0] == pvalue[-1] == '"':
                pvalue = pvalue[1:-1]
            if pkey.lower() == "name":
                name = pvalue
            elif pkey.lower() == "filename":
                filename = pvalue
        if name is None:
            break
        return name, filename
    raise UndecodableInput("malformed multipart body: a part has no Content-Disposition with a name")


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
        name, filename = _disposition(chunk[:head_end].decode("utf-8", errors="replace"))
        parts.append(Part(name, filename, chunk[head_end + 4 :]))
    return parts
