"""The one exception type for user mistakes: bad config, data, checkpoint or command line."""

import textwrap


class UserError(Exception):
    """A problem the user can fix. The message is one paragraph: what is wrong, and the fix.

    The command line prints it without a traceback and exits with status 2. ``commands``, when
    the fix is commands to run, follow the paragraph one per line, unwrapped, to copy as they are.
    """

    def __init__(self, message: str, commands: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.commands = commands

    def paragraph(self) -> str:
        text = " ".join(str(self).split())
        wrapped = textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)
        return "\n".join([wrapped, *(f"    {command}" for command in self.commands)])


class TrainingInterrupted(Exception):
    """SIGTERM arrived during training; the state was saved and the process exits non-zero."""
