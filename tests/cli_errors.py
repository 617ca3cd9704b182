"""One assertion for "the CLI failed in one line": shared by every test of a command's error path.

A user error must end as exactly one non-empty stderr line in the suite's words (``gfvc: error: ...``;
``gfvc SUBCOMMAND: error: ...`` for arguments), no traceback, and the exit code the CLI promises (2 for
bad input, 1 for an incomplete run or a failed gate). Returns that line so a test can look at it further.
"""
from __future__ import annotations

import re
from typing import Any

# the suite's prefix; argument errors name the sub-command ("gfvc encode: error: ...", as argparse does)
PREFIX = re.compile(r"gfvc( [a-z][\w-]*)*: error: ")


def one_line_error(capsys: Any, rc: int, *words: str, code: int = 2) -> str:
    err = capsys.readouterr().err
    assert rc == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert PREFIX.match(lines[0]), err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
