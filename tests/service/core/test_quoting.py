"""Error texts quote a bounded prefix of what the client sent, marked as cut, with its size in its own unit."""

from service.core.errors import QUOTED_CHARACTERS, cut, quoted


def test_short_values_are_quoted_whole() -> None:
    assert quoted("images") == "'images'" and quoted([1, 28]) == "[1, 28]" and quoted(None) == "None"


def test_long_values_are_cut_to_the_limit_and_say_how_long_they_were() -> None:
    assert quoted("x" * 5000) == repr("x" * 5000)[:QUOTED_CHARACTERS] + "... (cut: 5,000 characters in all)"
    assert quoted(list(range(200_000))).endswith("... (cut: 200,000 items in all)")
    assert quoted(b"\xff" * 3000).endswith("... (cut: 3,000 bytes in all)")


def test_characters_that_repr_escapes_cannot_stretch_the_quote() -> None:
    for sent in ("\x00" * 100, "\x00" * 5000, "\U0001f600\x07" * 400):
        assert len(quoted(sent)) <= QUOTED_CHARACTERS + len("... (cut: 5,000 characters in all)")


def test_cut_leaves_short_text_and_marks_long_text() -> None:
    assert cut("a, b") == "a, b"
    assert cut("f" * 150) == "f" * QUOTED_CHARACTERS + "... (cut: 150 characters in all)"
