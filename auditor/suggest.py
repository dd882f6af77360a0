"""Wrong-entity detection: for a copy whose PII mismatches its source row, name the source
row whose normalised PII the copy does match (`suggested_key`), e.g. ids swapped by a migration.

It stays streaming: the fingerprints of SUGGEST_CHUNK listed mismatches at a time are kept, and
the spilled source side is read once more per chunk, batch by batch, narrowed by the first
field that needs no phone parsing, two partitions at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from auditor.batch import label_tuples
from auditor.checks.base import normalise
from auditor.config.model import PiiRule
from auditor.findings import Suggestions
from auditor.hashing import fnv1a
from auditor.plan import RulePlan, display
from auditor.recheck import Lookups
from auditor.scan import Spill

SCAN_THREADS = 2  # the machine's cores, as engine.COMPARE_WORKERS
# Mismatches whose copies are looked up and matched per pass over the spilled source.
SUGGEST_CHUNK = 100_000


def suggest_keys(
    plan: RulePlan, lookups: Lookups, source: Spill, labelled: Iterable[tuple]
) -> Suggestions:
    """For reported mismatches (the labels of their copy rows), the one source row whose PII
    matches the copy, by copy labels. SUGGEST_CHUNK mismatches at a time: each chunk reads the
    spilled source once more, so memory stays flat however many mismatches are listed."""
    suggested: Suggestions = {}
    labels = iter(labelled)
    while chunk := list(itertools.islice(labels, SUGGEST_CHUNK)):
        suggested.update(_suggest_chunk(plan, lookups.fetch(plan.left, "labels", chunk), source))
    return suggested


def suggest_by_anchor(
    plan: RulePlan,
    lookups: Lookups,
    groups: pa.Table,
    fetch: Callable[[list[tuple]], pa.Table],
    labelled: Iterable[tuple],
) -> Suggestions:
    """suggest_keys without reading the source: `groups` (an incremental state's source keys,
    `c0`, with the anchor_hashes of their rows, `a_min`) name the few source rows whose anchor
    field may match a copy's; `fetch` reads them by key and they are matched exactly."""
    suggested: Suggestions = {}
    keys, hashes = groups["c0"].to_numpy(), groups["a_min"].to_numpy()
    labels = iter(labelled)
    while chunk := list(itertools.islice(labels, SUGGEST_CHUNK)):
        copies = lookups.fetch(plan.left, "labels", chunk)
        values = _anchor_values(plan, copies)
        wanted = np.unique(_hashed(values.filter(pc.is_valid(values))))
        if not len(wanted):
            continue
        # A sorted search, not np.isin: that sorts all the keys' hashes (+80 MB for 2M keys).
        nearest = wanted[np.minimum(np.searchsorted(wanted, hashes), len(wanted) - 1)]
        candidates = fetch([(int(key),) for key in keys[nearest == hashes]])
        source = Spill(candidates.schema, 1, None)  # in memory: about one row a mismatch
        for batch in candidates.to_batches():
            source.add(batch)
        source.finish()
        suggested.update(_suggest_chunk(plan, copies, source))
    return suggested


def anchor_hashes(plan: RulePlan, rows: pa.Table) -> np.ndarray:
    """A 32-bit hash (FNV-1a, folded) of each row's normalised anchor field (see
    _anchor_field), 0 where it has none: what an incremental state keeps per source key to
    find suggestion candidates by. Keys whose hash collides are read and compared too (10k
    mismatches against 2M keys: ~5 more rows)."""
    values = _anchor_values(plan, rows)
    hashes = _hashed(values)
    hashes[~pc.is_valid(values).to_numpy(zero_copy_only=False)] = 0
    return hashes


def _anchor_values(plan: RulePlan, rows: pa.Table) -> pa.Array:
    anchor = _anchor_field(plan)
    normalised = normalise(rows[f"v{anchor}"].combine_chunks(), plan.normalizers[anchor])
    return pc.cast(normalised, pa.string())


def _hashed(values: pa.Array) -> np.ndarray:
    hashes = fnv1a(values)
    return ((hashes >> np.uint64(32)) ^ hashes).astype(np.uint32).view(np.int32)


def _suggest_chunk(plan: RulePlan, copies: pa.Table, source: Spill) -> Suggestions:
    return unique_matches(plan, source_matches(plan, copies, source))


def source_matches(plan: RulePlan, copies: pa.Table, source: Spill) -> dict[tuple, set[tuple]]:
    """For each copy row (by labels), the keys of the rows of `source` whose normalised values
    all match it: a cluster run adds up those of every slice of the source."""
    fingerprints = _fingerprints(plan, copies)
    anchor = _anchor_field(plan)
    wanted = {fp[anchor] for fp in fingerprints.values() if fp[anchor] is not None}
    matches: dict[tuple, set[tuple]] = {labels: set() for labels in fingerprints}
    if not wanted:
        return matches
    by_anchor: dict[str, list[tuple]] = {}
    for labels, fingerprint in fingerprints.items():
        by_anchor.setdefault(fingerprint[anchor], []).append(labels)
    wanted_values = pa.array(list(wanted), pa.string())

    def candidates(part: int) -> list[tuple[tuple, tuple]]:
        """(normalised values, key) of one partition's rows whose anchor value is wanted."""
        # Not source.read(): only the anchor column is copied out of the mapped file whole;
        # other columns only for the rows that match.
        table = pa.Table.from_batches(list(source.batches(part)), schema=source.schema)
        anchor_values = normalise(table[f"v{anchor}"].combine_chunks(), plan.normalizers[anchor])
        subset = table.filter(pc.is_in(anchor_values, value_set=wanted_values))
        if subset.num_rows == 0:
            return []
        normalised = [
            normalise(subset[f"v{i}"].combine_chunks(), p).to_pylist()
            for i, p in enumerate(plan.normalizers)
        ]
        keys = [subset[f"k{i}"].to_pylist() for i in range(len(plan.key_types))]
        return [
            (tuple(column[row] for column in normalised), tuple(k[row] for k in keys))
            for row in range(subset.num_rows)
        ]

    # Two partitions at a time (Arrow's kernels release the GIL), as the compare reads them.
    with ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="suggest") as pool:
        for rows in pool.map(candidates, range(source.partitions)):
            for values, key in rows:
                for labels in by_anchor.get(values[anchor], ()):
                    fingerprint = fingerprints[labels]
                    if all(f is None or f == v for f, v in zip(fingerprint, values, strict=True)):
                        matches[labels].add(key)
    return matches


def unique_matches(plan: RulePlan, matches: dict[tuple, set[tuple]]) -> Suggestions:
    """The suggested key of each copy row that exactly one source row matches."""
    suggested: Suggestions = {}
    for labels, found in matches.items():
        if len(found) == 1:
            (key,) = found
            texts = {f"k{i}": part for i, part in enumerate(key)}
            suggested[labels] = display(plan.right.compare, texts, "k")
    return suggested


def _fingerprints(plan: RulePlan, copies: pa.Table) -> dict[tuple, tuple]:
    normalised = [
        normalise(copies[f"v{i}"].combine_chunks(), p).to_pylist()
        for i, p in enumerate(plan.normalizers)
    ]
    labels = label_tuples(copies)
    return {
        labels[row]: tuple(column[row] for column in normalised) for row in range(copies.num_rows)
    }


def anchor_order(rule: PiiRule) -> list[int]:
    """The rule's fields, those not needing phone parsing first: the first is the one source
    rows are narrowed by (here, in incremental states and in auditor.verify's look-up)."""
    phones = [any(isinstance(s, dict) and "phone" in s for s in f.normalize) for f in rule.fields]
    return sorted(range(len(rule.fields)), key=lambda index: phones[index])


def _anchor_field(plan: RulePlan) -> int:
    rule = plan.rule
    assert isinstance(rule, PiiRule)
    return anchor_order(rule)[0]
