import pytest

from service.core.errors import UndecodableInput
from service.http.multipart import parse_multipart


def body(*parts: tuple[str, str | None, bytes], boundary: str = "XyZ") -> bytes:
    out = b"preamble is ignored"
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"\r\n--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n".encode()
        out += content
    return out + f"\r\n--{boundary}--\r\n".encode()


def test_parts_come_back_in_order_with_names_and_file_names() -> None:
    data = body(("file", "a.png", b"\x89PNG--XyZ-not-a-boundary"), ("note", None, b"hi"), ("file", "Ünï 字.png", b""))
    parts = parse_multipart(data, 'multipart/form-data; boundary="XyZ"', 10)
    assert [(p.name, p.filename, p.content) for p in parts] == [
        ("file", "a.png", b"\x89PNG--XyZ-not-a-boundary"),
        ("note", None, b"hi"),
        ("file", "Ünï 字.png", b""),
    ]


@pytest.mark.parametrize(
    ("data", "content_type", "phrase"),
    [
        (body(("file", "a", b"x")), "multipart/form-data", "needs a boundary"),
        (body(("file", "a", b"x"))[:-9], "multipart/form-data; boundary=XyZ", "no closing boundary"),
        (b"nothing here", "multipart/form-data; boundary=XyZ", "never occurs"),
        (
            b"--XyZ\r\nContent-Type: x\r\n\r\nabc\r\n--XyZ--",
            "multipart/form-data; boundary=XyZ",
            "no Content-Disposition",
        ),
        (
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n--XyZ--",
            "multipart/form-data; boundary=XyZ",
            "not closed",
        ),
    ],
)
def test_malformed_bodies_are_refused(data: bytes, content_type: str, phrase: str) -> None:
    with pytest.raises(UndecodableInput, match=phrase):
        parse_multipart(data, content_type, 10)


def test_too_many_parts_are_refused_before_parsing_them() -> None:
    with pytest.raises(UndecodableInput, match="more than 2 parts"):
        parse_multipart(body(*[("file", f"{i}", b"x") for i in range(3)]), "multipart/form-data; boundary=XyZ", 2)


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        ('form-data; name="file"; filename="a;b.png"', "a;b.png"),
        ('form-data; name="file"; filename="say \\"cheese\\".png"', 'say "cheese".png'),
        ('form-data; name="file"; filename="\u05e9\U0001f600.png"', "\u05e9\U0001f600.png"),
    ],
    ids=["semicolon", "escaped quotes", "UTF-8"],
)
def test_file_names_are_read_as_written(disposition: str, filename: str) -> None:
    body = f"--b\r\nContent-Disposition: {disposition}\r\n\r\nDATA\r\n--b--\r\n".encode()
    (part,) = parse_multipart(body, "multipart/form-data; boundary=b", 4)
    assert (part.name, part.filename, part.content) == ("file", filename, b"DATA")


def test_a_quoted_boundary_may_hold_a_semicolon() -> None:
    body = b'--a;b\r\nContent-Disposition: form-data; name="file"\r\n\r\nX\r\n--a;b--\r\n'
    (part,) = parse_multipart(body, 'multipart/form-data; boundary="a;b"', 4)
    assert part.content == b"X"
