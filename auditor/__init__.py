"""auditor: proves that data duplicated across separate databases is still consistent."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("auditor")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

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
