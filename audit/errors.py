"""Errors that are the user's to fix. The CLI prints them as one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: suite, files, model or data. The message says the fix."""

    exit_code = 2


class SuiteError(UserError):
    """One or more problems in a suite file, each ``SUITE:LINE: message``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
