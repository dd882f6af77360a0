from tests.cli.test_cli import sqlite_config  # noqa: F401  (shared fixture)
