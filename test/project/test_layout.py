"""The test tree mirrors the package and stays readable: no test file directly under test/ (each
goes into the folder of what it tests), one name per test file (pytest imports them by base name)
and no Python file under test/ over 400 lines."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TEST_DIR = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def _python_files() -> list[Path]:
    return sorted(TEST_DIR.rglob("*.py"))


def test_no_test_file_sits_directly_under_test():
    flat = [path.name for path in TEST_DIR.glob("test_*.py")]
    assert flat == [], (f"move {flat} into the folder of the module they test (test/core, "
                        "test/ros, test/tools, ...; see README, Development)")


def test_test_file_names_are_unique():
    names = Counter(path.name for path in _python_files() if path.name.startswith("test_"))
    assert [name for name, count in names.items() if count > 1] == []


def test_no_python_file_under_test_is_over_400_lines():
    long = {str(path.relative_to(TEST_DIR)): n for path in _python_files()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by feature (at most {MAX_LINES} lines): {long}"
