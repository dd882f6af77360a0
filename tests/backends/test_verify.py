"""auditor.verify on every backend: the access-time check of one entity's PII (SPEC §13)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

import auditor
from auditor.errors import ConfigError
from tests.scenarios import build_pii

RULE = "order-customer-pii"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def verifier(request, database_factory, write_config):
    crm = database_factory(request.param)
    orders = database_factory("sqlite")  # never opened: verify reads the source only
    path = write_config(build_pii(crm, orders))
    orders.engine.dispose()
    Path(orders.url.removeprefix("sqlite:///")).unlink()
    with auditor.Verifier(path) as verifier:
        yield verifier


def test_a_match_and_a_normalised_match(verifier):
    verdict = verifier.verify(RULE, {"customer_id": 2}, {"customer_email": "bob@example.com"})
    assert verdict.ok and verdict.fields == {"customer_email": "match"}
    assert verdict.key == {"id": 2} and verdict.source_rows == 1
    # Case, spaces and the phone's form differ; the rule's normalisers make them equal.
    verdict = verifier.verify(
        RULE,
        2,
        {"email": "  BOB@Example.COM ", "customer_name": "bob  ray", "phone": "(415) 555-0101"},
    )
    assert verdict.ok, verdict.fields
    assert verdict.fields == {"email": "match", "customer_name": "match", "phone": "match"}
    assert verdict.suggested_key is None


def test_a_mismatch_names_the_row_the_values_belong_to(verifier):
    # Customer 1's key, customer 5's values: the id points at the wrong person.
    values = {"customer_email": "DEE@example.com", "customer_name": "Dee Ott"}
    verdict = verifier.verify(RULE, {"id": 1}, values)
    assert not verdict.ok
    assert verdict.fields == {"customer_email": "mismatch", "customer_name": "mismatch"}
    assert verdict.suggested_key == {"id": 5}
    # Only the email belongs to customer 5: the values match no one row, nothing suggested.
    verdict = verifier.verify(RULE, 1, {"customer_email": "dee@example.com", "full_name": "X"})
    assert verdict.fields == {"customer_email": "mismatch", "full_name": "mismatch"}
    assert verdict.suggested_key is None


def test_a_missing_source_and_a_missing_value(verifier):
    verdict = verifier.verify(RULE, 99, {"customer_email": "bob@example.com"})
    assert not verdict.ok and verdict.source_rows == 0
    assert verdict.fields == {"customer_email": "missing"}
    assert verdict.suggested_key == {"id": 2}  # the values do belong to someone
    verdict = verifier.verify(RULE, 2, {"customer_email": "   ", "customer_name": "Bob Ray"})
    assert verdict.fields == {"customer_email": "missing", "customer_name": "match"}
    assert not verdict.ok


def test_a_duplicated_key_is_not_compared(verifier):
    verdict = verifier.verify("invoice-accounts", "A1", {"email": "a@x.com"})
    assert verdict.source_rows == 2 and not verdict.ok
    assert verdict.fields == {"email": "mismatch"}  # a@x.com is one row's, b@x.com the other's


def test_bad_calls_are_config_errors_without_values(verifier):
    with pytest.raises(ConfigError, match="no rule 'nope'"):
        verifier.verify("nope", 1, {"email": "x"})
    with pytest.raises(ConfigError, match="no field 'shoe_size'"):
        verifier.verify(RULE, 1, {"shoe_size": "secret-value"})
    with pytest.raises(ConfigError, match="needs at least one field"):
        verifier.verify(RULE, 1, {})
    with pytest.raises(ConfigError, match="not a valid") as raised:
        verifier.verify(RULE, "secret-key-text", {"email": "secret@example.com"})
    assert "secret" not in str(raised.value)


def test_threads_share_a_verifier_and_nothing_is_logged(verifier, caplog):
    caplog.set_level(logging.DEBUG)
    verdicts = []

    def work() -> None:
        for key in (1, 2, 3, 4, 5, 6) * 5:
            verdicts.append(verifier.verify(RULE, key, {"customer_email": "bob@example.com"}))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(verdicts) == 120
    assert sum(v.ok for v in verdicts) == 20  # customer 2, five times in each of four threads
    assert "bob@" not in caplog.text
    assert "bob@" not in repr(verdicts[1])


def test_verify_opens_and_closes_its_own_connections(database_factory, write_config):
    crm, orders = database_factory("postgresql"), database_factory("sqlite")
    path = write_config(build_pii(crm, orders))
    verdict = auditor.verify(path, RULE, {"customer_id": 3}, {"full_name": "Jose Nunez"})
    assert verdict.fields == {"full_name": "mismatch"}  # this rule keeps accents


def test_check_names_the_index_suggested_key_wants(database_factory, write_config):
    crm, orders = database_factory("postgresql"), database_factory("sqlite")
    path = write_config(build_pii(crm, orders))
    notes = [note for rule in auditor.check(auditor.load_config(path)).rules for note in rule.notes]
    assert notes == [
        "crm.customers: auditor.verify finds suggested_key by this column; consider: "
        "CREATE INDEX ix_customers_email ON customers (email)",
        "crm.accounts: auditor.verify finds suggested_key by this column; consider: "
        "CREATE INDEX ix_accounts_email ON accounts (email)",
    ]  # order-names-accents has suggest_keys: false
    crm.execute("CREATE INDEX customers_email ON customers (email)")
    notes = [note for rule in auditor.check(auditor.load_config(path)).rules for note in rule.notes]
    assert len(notes) == 1
