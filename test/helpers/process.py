"""The one assertion for "this process ended cleanly": its exit code is the expected one and its
output holds no Python traceback (an error is one line that names the problem, not a stack)."""

from __future__ import annotations

NONZERO = "non-zero"            # expected=NONZERO: any failing exit code (the test checks which
#                                 error it was from the output)
_TRACEBACK = "Traceback"


def assert_clean_exit(output: str, code: int | None = None, expected: int | str = 0,
                      what: str = "the process") -> None:
    """Fail unless `code` equals `expected` (any non-zero code for expected=NONZERO; not checked
    when code is None) and `output` (stdout and stderr, a captured stream or a log) has no
    traceback. The failure message names both problems and shows the traceback and the output's
    last lines."""
    __tracebackhide__ = True
    problems = []
    if code is not None and not (code != 0 if expected == NONZERO else code == expected):
        problems.append(f"exit code {code}, expected {expected}")
    if _TRACEBACK in output:
        problems.append("a Python traceback in its output")
    if problems:
        raise AssertionError(f"{what} did not end cleanly: {'; '.join(problems)}\n"
                             f"{_excerpt(output)}")


def _excerpt(output: str, lines: int = 40) -> str:
    """The first traceback (up to `lines` lines) and the output's last `lines` lines."""
    text = output.splitlines()
    parts = []
    start = next((i for i, line in enumerate(text) if _TRACEBACK in line), None)
    if start is not None and start < len(text) - lines:
        parts.append(f"--- the first traceback (line {start + 1}):")
        parts.extend(text[start:start + lines])
    parts.append(f"--- the last {min(lines, len(text))} of {len(text)} lines of output:")
    parts.extend(text[-lines:])
    return "\n".join(parts)
