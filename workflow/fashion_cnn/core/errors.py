"""The one exception type for user mistakes: bad config, data, checkpoint or command line."""

import textwrap


class UserError(Exception):
    """A problem the user can fix. The message is one paragraph: what is wrong, and the fix.

    The command line prints it without a traceback and exits with status 2.
    """

    def paragraph(self) -> str:
        text = " ".join(str(self).split())
        return textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)


class TrainingInterrupted(Exception):
    """SIGTERM arrived during training; the state was saved and the process exits non-zero."""
