"""One error hierarchy that carries exit codes; the CLI catches it in exactly one place."""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound="AuditorError")


class AuditorError(Exception):
    """Base of every error auditor raises on purpose. `exit_code` follows SPEC §7."""

    exit_code = 1
    # What the database said, for the log (never a value): its SQLSTATE and, on MySQL/MariaDB,
    # its error number. Set on errors that a driver error caused.
    sqlstate: str | None = None
    errno: int | None = None

    def __init__(self, message: str) -> None:
        # Always one line: a value or a key from the input may hold line breaks.
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def carried(self, successor: E) -> E:
        """`successor`, which replaces this error, with what the database said."""
        successor.sqlstate, successor.errno = self.sqlstate, self.errno
        return successor


class ConfigError(AuditorError):
    """Bad input: config file, rule, flag or schema mismatch (exit 2).

    `loc` is the config field the error is about, as a path (`("to", "columns", 0)` within a
    rule, `("settings", "mask")` from the top), for errors found after loading (by looking at
    the databases): the caller that knows the file turns it into `file:line: field:`.
    """

    exit_code = 2

    def __init__(self, message: str, loc: tuple[str | int, ...] | None = None) -> None:
        super().__init__(message)
        self.loc = loc

    def at(self, *loc: str | int) -> ConfigError:
        """This error about `loc`, unless it already names a field."""
        return self if self.loc is not None else self.carried(ConfigError(self.message, loc))


class DatabaseError(AuditorError):
    """A database could not be reached or read (exit 3). The message names which one."""

    exit_code = 3
    retryable = False  # the connection was lost (killed, restarted): reading again may work
    reason: str | None = None  # the driver's own first line, password scrubbed


class Interrupted(AuditorError):
    """SIGINT/SIGTERM arrived while auditing (exit 130)."""

    exit_code = 130


class ResourceError(AuditorError):
    """A file or the temp directory could not be read or written: disk full, no permission,
    a missing certificate (exit 3, SPEC §7). The message names the path."""

    exit_code = 3

    @classmethod
    def from_os_error(
        cls, exc: OSError, path: object = None, what: str = "cannot use"
    ) -> ResourceError:
        where = exc.filename if exc.filename is not None else path
        reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
        return cls(f"{what} {where}: {reason}" if where is not None else f"{what}: {reason}")
