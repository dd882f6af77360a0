"""auditor: proves that data duplicated across separate databases is still consistent."""

# The one place the version is written; pyproject.toml reads it from here (importlib.metadata
# cost 36 ms of every start-up).
__version__ = "0.1.0"

from auditor.api import CheckResult, check, run  # noqa: E402
from auditor.config import Config, load_config  # noqa: E402
from auditor.engine import RunOptions  # noqa: E402
from auditor.result import AuditResult, Finding, RuleResult  # noqa: E402

__all__ = [
    "AuditResult",
    "CheckResult",
    "Config",
    "Finding",
    "RuleResult",
    "RunOptions",
    "__version__",
    "check",
    "load_config",
    "run",
]
