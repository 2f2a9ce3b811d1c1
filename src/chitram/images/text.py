"""Text people give us (titles, file names) made safe to show: no characters that reorder,
hide or break what is displayed around them, and ordinary Unicode kept as it is."""

from __future__ import annotations

import re
import unicodedata

# Line-breaking controls become a space, so "a\nb" stays two words; every other character
# below is dropped.
_BREAKS = "\t\n\v\f\r\x85\u2028\u2029"
# Bidirectional formatting (overrides, embeddings, isolates, marks) reorders the text around it:
# "gpj.exe" shown as "exe.jpg". Also the deprecated format controls, the interlinear annotation
# marks and the byte-order mark, which no title needs. ZWJ/ZWNJ stay: emoji sequences and
# several scripts need them.
_FORMATTING = (
    "\u061c\u200e\u200f"  # arabic letter mark, left-to-right and right-to-left marks
    "\u202a-\u202e"  # embeddings and overrides
    "\u2066-\u2069"  # isolates
    "\u206a-\u206f"  # deprecated format controls
    "\ufeff\ufff9-\ufffb"
)
_UNSAFE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029{_FORMATTING}]")


def clean_text(raw: str) -> str:
    """NFC, with C0/C1 controls, line/paragraph separators and bidi controls removed (line
    breaks become a space), trimmed. The one normaliser for titles and file names."""
    normal = unicodedata.normalize("NFC", raw)
    return _UNSAFE.sub(lambda match: " " if match.group() in _BREAKS else "", normal).strip()
