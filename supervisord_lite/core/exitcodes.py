"""The exit codes ``svc`` and the daemon promise (documented in the README).

The control protocol carries them too: a refusal's ``code`` is the exit code the
CLI ends with, so the daemon and the command line can never disagree.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # something did not come up, or a request failed
    USAGE = 2  # bad input: a manifest problem, an unknown name, a malformed request
    NO_DAEMON = 3  # no daemon runs (or none that will serve this user)
