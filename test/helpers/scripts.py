"""Import one of the repository's scripts/ files as a module, for testing its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str, module_name: str | None = None):
    """scripts/<name>.py as a module, registered in sys.modules (dataclasses look their module
    up there) under module_name (default "<name>_under_test")."""
    module_name = module_name or f"{name}_under_test"
    spec = importlib.util.spec_from_file_location(module_name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
