"""The `auditor` command and `python -m auditor`."""

import gc


def main() -> None:
    """Import the CLI with the garbage collector off, then freeze what the imports made.

    Importing SQLAlchemy, pyarrow and the drivers makes a few hundred thousand objects, and
    the collections they trigger scanned them again and again: 0.3-0.5 s of a 5.7 s benchmark
    run. Frozen, they are out of every later collection too (the recheck's row tuples).
    """
    gc.disable()
    from auditor.cli import entry

    gc.freeze()
    gc.enable()
    entry()


if __name__ == "__main__":
    main()
