"""auditor: proves that data duplicated across separate databases is still consistent.

The public names are imported on first use (PEP 562), so that `python -m auditor` can tune
the garbage collector before the heavy imports run (see auditor/__main__.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The one place the version is written; pyproject.toml reads it from here (importlib.metadata
# cost 36 ms of every start-up).
__version__ = "0.1.0"

_HOMES = {
    "CheckResult": "auditor.api",
    "check": "auditor.api",
    "run": "auditor.api",
    "Config": "auditor.config",
    "load_config": "auditor.config",
    "RunOptions": "auditor.engine",
    "AuditResult": "auditor.result",
    "Finding": "auditor.result",
    "RuleResult": "auditor.result",
    "Verdict": "auditor.verifier",
    "Verifier": "auditor.verifier",
    "verify": "auditor.verifier",
}

if TYPE_CHECKING:
    from auditor.api import CheckResult, check, run
    from auditor.config import Config, load_config
    from auditor.engine import RunOptions
    from auditor.result import AuditResult, Finding, RuleResult
    from auditor.verifier import Verdict, Verifier, verify


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'auditor' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "AuditResult",
    "CheckResult",
    "Config",
    "Finding",
    "RuleResult",
    "RunOptions",
    "Verdict",
    "Verifier",
    "__version__",
    "check",
    "load_config",
    "run",
    "verify",
]
