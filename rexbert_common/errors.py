"""The one exception type for mistakes the user can fix.

Every stage raises :class:`UserError` (or a subclass) with a one-line message that names the file, field or
value at fault. The ``rexbert`` CLI prints that line and exits with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a missing file, an invalid config value, a malformed record. The message is one line."""
