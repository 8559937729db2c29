"""1. Ingest and 2. Incremental: a full initial sync of a large emulated organization, then re-syncs.

Ingest compares the sync's database write path with the fastest way PostgreSQL can take the same
rows: raw psycopg COPY into a staging table, then INSERT ... ON CONFLICT into a table of the same
shape with the same unique index. Incremental counts requests against the least a sync can make.
"""

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from unittest import mock

from bench.results import Outcome, Row
from bench.support import company, connect, noon

COLUMNS = (
    "company_id",
    "connection_id",
    "day",
    "workspace_id",
    "api_key_hash",
    "model",
    "model_permaslug",
    "provider_name",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "spend_usd",
    "byok_spend_usd",
)
NATURAL_KEY = ("connection_id", "day", "workspace_id", "api_key_hash", "model_permaslug", "provider_name")
FIXED_CALLS = ("/credits", "/workspaces", "/organization/members", "/activity (account-wide)")
PAGE_SIZE = 100  # the emulator's (and OpenRouter's) /keys page


@dataclass
class Org:
    emulator: object
    connection: object
    now: object
    resync_clocks: list = field(default_factory=list)


class WriteClock:
    """Wall time spent inside the sync's write transactions (`_SyncJob.guarded`): every write of a
    sync goes through it (keys, snapshots, usage rows, fetch markers, reconciliation)."""

    def __init__(self):
        self.guarded = 0.0
        self.usage_replace = 0.0
        self.summaries = 0.0
        self.prepare = 0.0  # usage_prepare, before each transaction (outside the write path)

    def timed(self, figure: str, function):
        """`function`, adding the wall time of each call to this clock's `figure`."""

        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                setattr(self, figure, getattr(self, figure) + time.perf_counter() - start)

        return call

    @contextmanager
    def installed(self):
        from openrouter import sync

        with (
            mock.patch.object(sync._SyncJob, "guarded", self.timed("guarded", sync._SyncJob.guarded)),
            mock.patch.object(sync, "usage_replace", self.timed("usage_replace", sync.usage_replace)),
            mock.patch.object(sync, "usage_prepare", self.timed("prepare", sync.usage_prepare)),
            mock.patch.object(
                sync, "usage_summaries_rebuild", self.timed("summaries", sync.usage_summaries_rebuild)
            ),
        ):
            yield self


def initial_sync(sizes, outcome: Outcome | None = None) -> Org:
    """Connect an organization of `sizes.ingest_keys` keys and run its full initial sync."""
    from openrouter.emulator import Emulator, EmulatorConfig
    from openrouter.sync import sync_connection
    from usage.models import UsageDaily

    emulator = Emulator(EmulatorConfig(seed=101, keys=sizes.ingest_keys, days=sizes.ingest_days))
    start, end = emulator.truth.activity_window()
    expected_rows = sum(1 for _ in emulator.truth.key_activity_rows(start, end))
    emulator.snapshot()  # the emulator's one-off account-wide pass, kept out of the sync's time
    connection = connect(
        company(f"ingest-{sizes.ingest_keys}"), emulator.management_key, emulator.transport()
    )
    now = noon(emulator.today)
    clock = WriteClock()
    with clock.installed():
        began = time.perf_counter()
        result = sync_connection(
            connection.pk, transport=emulator.transport(), base_url="http://emulator/api/v1", now=now
        )
        wall = time.perf_counter() - began
    assert result.status == "succeeded", result
    rows = UsageDaily.objects.filter(connection=connection).count()
    org = Org(emulator, connection, now)
    if outcome is None:
        return org

    baseline = min(copy_upsert_baseline(connection.pk) for _ in range(2))
    ratio = clock.guarded / baseline
    outcome.rows.append(
        Row(
            "1. ingest: initial sync write path",
            f"{clock.guarded:.1f} s ({rows / clock.guarded:,.0f} rows/s)",
            f"{baseline:.1f} s COPY + upsert ({rows / baseline:,.0f} rows/s)",
            ratio,
            "≤ 2.0",
            ratio <= 2.0,
        )
    )
    outcome.notes += [
        f"Organization: {sizes.ingest_keys:,} keys (seed 101, {sizes.ingest_days} days of history), "
        f"{expected_rows:,} key activity rows in OpenRouter's 30-day window (emulator truth, deleted keys "
        f"included); the sync stored {rows:,} usage rows (deleted keys' rows summed as unattributed).",
        "The emulator's per-key activity tops out at 3 rows per key and day (30-day window, ≤ 90 rows per "
        "key), so ~300k rows need about 15k keys; 1,000 keys give ~20k rows.",
        f"Sync end to end (in-process emulator transport, no pacing, OPENROUTER_CONCURRENCY="
        f"{_concurrency()}): {wall:.1f} s, {rows / wall:,.0f} rows/s, {_requests(connection):,} requests.",
        f"Write path = wall time inside `_SyncJob.guarded`, i.e. every write transaction of the sync (row "
        f"lock + generation check, keys and snapshots upsert, `usage_replace`, per-key fetch markers, "
        f"reconciliation, usage summaries): {clock.guarded:.1f} s, of which `usage_replace` "
        f"{clock.usage_replace:.1f} s (the per-key summaries, daily and monthly, of the keys it writes included) "
        f"and the by-model summary's rebuild {clock.summaries:.1f} s. Before each transaction, with no "
        f"lock held, `usage_prepare` rounds the rows' money and sums them per key and day: "
        f"{clock.prepare:.1f} s in all. The other {wall - clock.guarded - clock.prepare:.1f} s are HTTP, "
        "JSON parsing, normalisation and the emulator.",
        "Baseline = raw psycopg: COPY the same final rows (read back from the sync's table beforehand) "
        "into a temporary staging table, then INSERT … ON CONFLICT (natural key) DO UPDATE into an empty "
        "table created `LIKE usage_usagedaily INCLUDING ALL` (same columns, unique index and indexes), "
        "one transaction; best of 2.",
    ]
    return org


def _concurrency() -> int:
    from django.conf import settings

    return settings.OPENROUTER_CONCURRENCY


def _requests(connection) -> int:
    return connection.runs.order_by("-id").values_list("requests_made", flat=True).first()


def copy_upsert_baseline(connection_id: int) -> float:
    """Seconds for psycopg to COPY the connection's final rows and upsert them into a fresh table."""
    import psycopg
    from django.db import connection as django_connection

    conninfo = django_connection.get_connection_params()
    columns = ", ".join(COLUMNS)
    with psycopg.connect(**conninfo) as conn:
        rows = conn.execute(
            f"SELECT {columns} FROM usage_usagedaily WHERE connection_id = %s", [connection_id]
        ).fetchall()
        conn.execute("DROP TABLE IF EXISTS bench_usage_target")
        conn.execute("CREATE TABLE bench_usage_target (LIKE usage_usagedaily INCLUDING ALL)")
        conn.commit()
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in NATURAL_KEY)
        began = time.perf_counter()
        with conn.transaction():
            conn.execute(
                f"CREATE TEMP TABLE bench_usage_staging ON COMMIT DROP AS "
                f"SELECT {columns} FROM usage_usagedaily WITH NO DATA"
            )
            with conn.cursor().copy(f"COPY bench_usage_staging ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute(
                f"INSERT INTO bench_usage_target ({columns}) SELECT {columns} FROM bench_usage_staging "
                f"ON CONFLICT ({', '.join(NATURAL_KEY)}) DO UPDATE SET {updates}"
            )
        elapsed = time.perf_counter() - began
        conn.execute("DROP TABLE bench_usage_target")
        conn.commit()
    return elapsed


def minimum_requests(emulator, changed_keys: int) -> int:
    """Fixed calls + every key page (at least one per workspace) + one activity call per changed key."""
    truth = emulator.truth
    pages = 0
    for workspace in truth.workspaces():
        listed = sum(1 for _ in truth.listed_keys(workspace["id"]))
        pages += max(1, math.ceil(listed / PAGE_SIZE))
    return len(FIXED_CALLS) + pages + changed_keys


def resync(org: Org, *, after: timedelta) -> tuple[int, float, dict]:
    from openrouter.sync import sync_connection

    org.emulator.request_log.clear()
    began = time.perf_counter()
    clock = WriteClock()
    with clock.installed():
        result = sync_connection(
            org.connection.pk,
            transport=org.emulator.transport(),
            base_url="http://emulator/api/v1",
            now=org.now + after,
        )
    seconds = time.perf_counter() - began
    org.resync_clocks.append(clock)
    assert result.status == "succeeded", result
    by_path: dict[str, int] = {}
    for entry in org.emulator.request_log:
        name = entry.path + (" (key)" if "api_key_hash" in entry.query else "")
        by_path[name] = by_path.get(name, 0) + 1
    return len(org.emulator.request_log), seconds, by_path


def change_keys(org: Org, fraction: float) -> int:
    """Make `fraction` of the keys look changed to the sync: their stored fetch marker no longer
    matches the counters OpenRouter lists, exactly as when a key is used between two syncs."""
    from openrouter.models import ApiKey

    hashes = list(
        ApiKey.objects.filter(connection=org.connection)
        .order_by("key_hash")
        .values_list("key_hash", flat=True)
    )
    step = max(1, round(1 / fraction))
    chosen = hashes[::step]
    ApiKey.objects.filter(connection=org.connection, key_hash__in=chosen).update(fetched_usage=Decimal("-1"))
    return len(chosen)


def run_ingest(sizes) -> tuple[Outcome, Org]:
    outcome = Outcome("1. Ingest")
    org = initial_sync(sizes, outcome)
    return outcome, org


def run_incremental(sizes, org: Org | None) -> Outcome:
    from usage.models import UsageDaily

    outcome = Outcome("2. Incremental")
    org = org or initial_sync(sizes)
    rows_before = UsageDaily.objects.filter(connection=org.connection).count()
    cases = []
    made, seconds, by_path = resync(org, after=timedelta(hours=1))
    cases.append(("nothing changed", 0, made, seconds, by_path))
    changed = change_keys(org, 0.01)
    made, seconds, by_path = resync(org, after=timedelta(hours=2))
    cases.append(("1% of keys changed", changed, made, seconds, by_path))
    assert UsageDaily.objects.filter(connection=org.connection).count() == rows_before, (
        "re-syncs changed rows"
    )
    for label, changed_keys, made, seconds, by_path in cases:
        least = minimum_requests(org.emulator, changed_keys)
        outcome.rows.append(
            Row(
                f"2. incremental: {label}",
                f"{made} requests, {seconds:.2f} s",
                f"{least} requests",
                made / least,
                "1.00 (requests)",
                made == least,
            )
        )
        breakdown = ", ".join(f"{path} {count}" for path, count in sorted(by_path.items()))
        outcome.notes.append(f"{label} ({changed_keys} keys): {breakdown}.")
    for (label, *_), clock in zip(cases, org.resync_clocks, strict=True):
        outcome.notes.append(
            f"{label}: write transactions {clock.guarded:.2f} s, of which `usage_replace` "
            f"{clock.usage_replace:.2f} s (the per-key sums, daily and monthly, included) and the by-model summary's "
            f"rebuild (the 30-day window) "
            f"{clock.summaries:.2f} s; the rest is reading (HTTP, parsing, the emulator)."
        )
    outcome.notes.insert(
        0,
        f"Re-syncs of the ingest organization ({sizes.ingest_keys:,} keys) one and two hours after the "
        "initial sync, same UTC day (no new completed day, model catalog still fresh). Baseline = "
        f"{' + '.join(FIXED_CALLS)} + ⌈keys/{PAGE_SIZE}⌉ key pages per workspace + one activity call per "
        "changed key. A changed key is simulated by moving its stored fetch marker "
        "(`ApiKey.fetched_usage`), which is what a key used between two syncs looks like to the sync.",
    )
    return outcome
