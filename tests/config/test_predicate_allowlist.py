"""`where`/`soft_delete` are parsed in their database's dialect and may hold only what cannot
write or reach outside the row (auditor.predicates). Every attack from issue 18 is refused;
what people write for soft deletes and filters is accepted and re-rendered."""

from __future__ import annotations

import pytest

from auditor.errors import ConfigError
from auditor.predicates import checked

COLUMNS = ["id", "status", "deleted", "deleted_at", "email", "data", "Flag"]

REFUSED = [  # dialect, predicate, what the message must name
    ("postgresql", "lo_import('/etc/hostname') > 0", "lo_import()"),
    (
        "postgresql",
        "(SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name='victim') >= 0",
        "a subquery",
    ),
    ("postgresql", "1=1 /* ' */) ; DELETE FROM canary WHERE (id=1 /* ' */", "not a SQL predicate"),
    (
        "mysql",
        r"status <> '\'' OR 1=1) ; DELETE FROM canary WHERE (1=1 OR status <> '\''",
        "not a SQL",
    ),
    ("mysql", "NEXTVAL(s) > 0", "nextval()"),
    ("postgresql", "nextval('s') > 0", "nextval()"),
    ("postgresql", "1=1; DELETE FROM reviews", "one SQL predicate"),
    ("sqlite", "1=1; DELETE FROM reviews", "one SQL predicate"),
    ("postgresql", "id IN (WITH d AS (DELETE FROM reviews RETURNING id) SELECT id FROM d)", "not"),
    ("postgresql", "EXISTS (SELECT 1 FROM products)", "a subquery"),
    ("postgresql", "id = :id", "a bind parameter"),
    ("mysql", "id = ?", "a bind parameter"),
    ("mysql", "@@version = 1", "a session variable"),
    ("mysql", "(@a := 1) = 1", "an assignment"),
    ("postgresql", "status = current_setting('a')", "current_setting()"),
    ("postgresql", "'1'::regclass IS NOT NULL", "a cast to a catalog type"),
    ("postgresql", "pg_sleep(3) IS NOT NULL", "pg_sleep()"),
    ("mysql", "SLEEP(3) = 0", "sleep()"),
    ("mysql", "BENCHMARK(1000000, MD5('a')) = 0", "benchmark()"),
    ("mysql", "LOAD_FILE('/etc/passwd') IS NULL", "load_file()"),
    ("sqlite", "load_extension('x') IS NULL", "load_extension()"),
    ("postgresql", "products.id = 1", "a column of another table"),
    ("postgresql", "public.reviews.id = 1", "a column of another table"),
    ("postgresql", "stauts = 'x'", "stauts is no column of reviews (did you mean 'status'?)"),
    ("postgresql", '"flag" = 1', "is no column"),  # quoted: exact case only
    ("postgresql", "", "one SQL predicate"),
]


@pytest.mark.parametrize(("dialect", "text", "named"), REFUSED)
def test_a_predicate_that_could_write_or_reach_out_is_refused(dialect, text, named):
    with pytest.raises(ConfigError) as refused:
        checked(text, dialect, "reviews", COLUMNS)
    assert named in str(refused.value)
    assert "\x1b" not in str(refused.value)


ACCEPTED = [  # dialect, predicate, what runs
    ("postgresql", "deleted", "deleted"),
    ("postgresql", "NOT deleted AND deleted_at IS NULL", "NOT deleted AND deleted_at IS NULL"),
    ("postgresql", "status::int > 0", "CAST(status AS INT) > 0"),
    ("postgresql", "status IN ('a', 'b') AND id BETWEEN 1 AND 9", None),
    ("postgresql", "lower(email) LIKE '%@example.com'", "LOWER(email) LIKE '%@example.com'"),
    ("postgresql", "deleted_at < now() - interval '30 days'", None),
    ("postgresql", "data->>'deleted' = 'true'", "data ->> 'deleted' = 'true'"),
    ("postgresql", "coalesce(status, '') <> 'spam'", "COALESCE(status, '') <> 'spam'"),
    ("postgresql", "CASE WHEN deleted THEN 1 ELSE 0 END = 1", None),
    ("postgresql", "reviews.status = 'x'", "reviews.status = 'x'"),
    ("postgresql", '"Flag" = 1', '"Flag" = 1'),
    ("postgresql", "status = 'it''s'", "status = 'it''s'"),
    ("mysql", "deleted_at < NOW() - INTERVAL 30 DAY", None),
    ("mysql", "IFNULL(deleted, 0) = 0", "COALESCE(deleted, 0) = 0"),
    ("mysql", "status REGEXP '^a'", "status REGEXP '^a'"),  # MariaDB has no REGEXP_LIKE
    ("mysql", "`status` <=> 'x'", None),
    ("sqlite", "deleted_at < datetime('now', '-30 days')", None),
    ("sqlite", "length(status) > 2", "LENGTH(status) > 2"),
    ("sqlite", "FLAG = 1", "FLAG = 1"),  # unquoted: any case
]


@pytest.mark.parametrize(("dialect", "text", "rendered"), ACCEPTED)
def test_what_people_write_is_accepted(dialect, text, rendered):
    sql = checked(text, dialect, "reviews", COLUMNS)
    if rendered is not None:
        assert sql == rendered


@pytest.mark.parametrize(
    ("dialect", "text"),
    [
        ("mysql", "status = 'x' /*!50000 OR 1=1 */"),  # MariaDB runs executable comments
        ("mysql", "status = 'x' -- OR 1=1"),
        ("postgresql", "status = 'x' /* OR 1=1 */"),
    ],
)
def test_comments_never_reach_the_database(dialect, text):
    """What runs is sqlglot's rendering of the checked tree, never the config's text."""
    assert checked(text, dialect, "reviews", COLUMNS) == "status = 'x'"


def test_a_quote_the_check_and_the_server_could_read_differently_is_rendered_unambiguously():
    r"""MariaDB reads `\'` as a quote inside a string; the rendering doubles it instead."""
    sql = checked(r"status = '\' OR 1=1 -- '", "mysql", "reviews", COLUMNS)
    assert sql == "status = ''' OR 1=1 -- '"
