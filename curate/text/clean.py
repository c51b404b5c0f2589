"""The control-character rule for prompt text read from users' files.

Control characters (Unicode category Cc: C0 controls such as NUL, BEL and ESC, DEL, and the C1
controls U+0080-U+009F) are removed, except tab, line feed and carriage return, which are
ordinary whitespace in prompts. Format characters (Cf, e.g. zero-width space) are text, not
control, and are kept. A prompt that is empty after removal is rejected by the caller.
"""

from __future__ import annotations

import re

KEPT_CONTROLS = "\t\n\r"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def remove_control_characters(text: str) -> tuple[str, int]:
    """(text without control characters, how many were removed)."""
    cleaned, removed = _CONTROL.subn("", text)
    return cleaned, removed
