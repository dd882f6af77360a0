"""Masking keeps shape, not content; hashes keep equality."""

from __future__ import annotations

from auditor.mask import Masker, partial


def test_partial_shapes():
    assert partial("john.doe@example.com") == "j***@e***.com"
    assert partial("John Goodman") == "J*** G***"
    assert partial("+14155550100") == "+1******0100"
    assert "555" not in partial("(415) 555-0199")


def test_hash_is_keyed(monkeypatch):
    monkeypatch.setenv("AUDITOR_HASH_KEY", "one")
    a, b = Masker.create("hash"), Masker.create("hash")
    assert a("x") == b("x") and a("x") != a("y") and a("x").startswith("h:")
    monkeypatch.setenv("AUDITOR_HASH_KEY", "two")
    assert Masker.create("hash")("x") != a("x")


def test_hash_key_is_random_per_run_when_unset(monkeypatch):
    monkeypatch.delenv("AUDITOR_HASH_KEY", raising=False)
    assert Masker.create("hash")("x") != Masker.create("hash")("x")


def test_none_passes_values_through():
    assert Masker.create("none")("raw@example.com") == "raw@example.com"
