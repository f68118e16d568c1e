"""The errors a user can cause: the CLI prints each as one line and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a bad file or a bad setting: the message says what, where and what to do."""
