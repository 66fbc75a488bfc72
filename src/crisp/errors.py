"""The one exception type of the project.

Every bad input (a missing or malformed file, a non-physical parameter, an unknown name) raises
:class:`CrispError` with a message that names the file or option and says what is wrong. The CLI
prints the message without a traceback and exits with status 2.
"""

from __future__ import annotations

from os import PathLike


class CrispError(Exception):
    """A user-facing error: bad input, bad configuration, or an unusable file.

    Parameters
    ----------
    message
        What is wrong, in words a user can act on.
    path
        The file or folder concerned, if any; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
