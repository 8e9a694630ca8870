"""What the CLI prints: text from records made safe for a terminal, and usage errors."""

from __future__ import annotations


class UsageError(Exception):
    """A command given wrong: ``parcelflow`` prints the message as one line, exits 2."""


def safe(text: str) -> str:
    """``text`` with every character that does not print as itself escaped (controls,
    escape sequences, bidi overrides, line and tab breaks): ``\\x1b``, ``\\u202e``. A
    record's ids and messages can then neither move the cursor, clear the screen nor
    reorder what the terminal shows."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else escaped(c) for c in text)


def escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
