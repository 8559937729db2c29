"""3. The finance detail page and its CSV export at 10k, 100k and 1M usage rows.

Each connection's rows are loaded with COPY (synthetic, all inside the page's 90-day range, so every
aggregate covers every row: the worst case). The page and the export are requested through Django's
WSGI handler, as a WSGI server calls it, with a logged-in finance user's session cookie, so the time is
the server's whole answer: the database connection's checks, middleware, session, queries, template or
CSV. The baseline runs, with raw psycopg, the aggregate queries the page needs (or
the export's grouped query over every dimension; the export itself reads those rows ungrouped, since a
usage row is unique per connection by them).
"""

import io
import math
import random
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

from bench.ingest import COLUMNS
from bench.results import Outcome, Row
from bench.support import company, connect, finance_user, interleaved_medians, noon

DAYS = 90
ROWS_PER_KEY_DAY = 5  # endpoints (model x provider) a key uses each day: an org grows by keys
METRICS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
MONEY = ("spend_usd", "byok_spend_usd")
SUMS = ", ".join(f"SUM({name})" for name in (*METRICS, *MONEY))
EXPORT_FIELDS = "day, workspace_id, api_key_hash, model_permaslug, model, provider_name"
KEY_CSV_ROUNDS_FACTOR = 5  # rounds of the one-key export per round of the page (measure)


def label(rows: int) -> str:
    if rows >= 1_000_000:
        return f"{rows / 1_000_000:g}M"
    return f"{rows / 1000:g}k" if rows >= 1000 else str(rows)


class Dataset:
    """One company and connection with `rows` usage rows over the last 90 complete UTC days."""

    def __init__(self, rows: int, seed: int):
        from django.utils import timezone

        from openrouter.emulator import Emulator, EmulatorConfig
        from openrouter.sync import sync_connection
        from usage.models import UsageDaily

        self.rows = rows
        today = timezone.now().date()
        self.start, self.end = today - timedelta(days=DAYS), today - timedelta(days=1)
        # A real (tiny) sync first, so workspaces, members, models, credits and runs are all there.
        emulator = Emulator(EmulatorConfig(seed=seed, keys=5, today=today))
        self.company = company(f"detail-{rows}")
        self.user = finance_user(self.company)
        self.connection = connect(self.company, emulator.management_key, emulator.transport())
        result = sync_connection(
            self.connection.pk,
            transport=emulator.transport(),
            base_url="http://emulator/api/v1",
            now=noon(today),
        )
        assert result.status == "succeeded", result
        UsageDaily.objects.filter(connection=self.connection).delete()
        self.workspaces = [w.id for w in emulator.world.workspaces]
        self.endpoints = [
            (e.model.canonical_slug, e.model.id, e.provider_name) for e in emulator.world.endpoints
        ]
        self.keys = math.ceil(rows / (DAYS * ROWS_PER_KEY_DAY))
        self.hashes = [f"{seed:04d}{k:060x}" for k in range(self.keys)]
        self.filter_key = self.hashes[self.keys // 2]
        self._load(random.Random(seed))

    def _load(self, rng: random.Random) -> None:
        import psycopg
        from django.db import connection as django_connection

        from openrouter.models import ApiKey
        from openrouter.normalize import name_sort_key

        ApiKey.objects.bulk_create(
            [
                ApiKey(
                    company_id=self.company.pk,
                    connection_id=self.connection.pk,
                    key_hash=key_hash,
                    name=f"Bench key {k}",
                    sort_name=name_sort_key(f"Bench key {k}"),
                    workspace_id=self.workspaces[k % len(self.workspaces)],
                    last_used_at=noon(self.end),
                )
                for k, key_hash in enumerate(self.hashes)
            ],
            batch_size=2000,
        )
        count = len(self.endpoints)
        ids = (self.company.pk, self.connection.pk)
        with psycopg.connect(**django_connection.get_connection_params()) as conn:
            with conn.cursor().copy(f"COPY usage_usagedaily ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                written = 0
                for k, key_hash in enumerate(self.hashes):
                    workspace = self.workspaces[k % len(self.workspaces)]
                    used = [self.endpoints[(k * 3 + j) % count] for j in range(ROWS_PER_KEY_DAY)]
                    for d in range(DAYS):
                        day = self.start + timedelta(days=d)
                        for permaslug, model, provider in used:
                            if written == self.rows:
                                break
                            requests = rng.randint(1, 500)
                            prompt, completion = (
                                requests * rng.randint(200, 4000),
                                requests * rng.randint(50, 900),
                            )
                            spend = Decimal(prompt * 3 + completion * 15) / Decimal(10**6)
                            copy.write_row(
                                (*ids, day, workspace, key_hash, model, permaslug, provider, requests,
                                 prompt, completion, completion // 4, prompt // 3, spend, Decimal(0))
                            )  # fmt: skip
                            written += 1
            # Statistics for both tables this load wrote, as autovacuum would have gathered them by the
            # time anyone reads the page (it is off on the bench host's PostgreSQL). Without them the
            # planner guessed one key per connection and looked the export's one key name up by
            # workspace, reading every key of the organization (0.45 ms of an export's ~3).
            conn.execute("ANALYZE usage_usagedaily")
            conn.execute("ANALYZE openrouter_apikey")
            conn.commit()
        self.summaries_seconds = self.rebuild_summaries()

    def rebuild_summaries(self) -> float:
        """Summaries of every row of the connection, as `manage.py usage_summaries_rebuild` builds
        them (a sync keeps them as it writes); returns seconds."""
        from django.db import connection as django_connection

        from usage.selectors import SUMMARIES
        from usage.services import usage_summaries_recompute

        started = time.perf_counter()
        usage_summaries_recompute(connection_id=self.connection.pk)  # the rows came in by COPY
        seconds = time.perf_counter() - started
        with django_connection.cursor() as cursor:
            for summary in SUMMARIES:
                cursor.execute(f"ANALYZE {summary._meta.db_table}")
        return seconds

    def new_data_version(self) -> None:
        """What every sync transaction does to the connection: cached reports no longer apply."""
        from django.db.models import F

        from integrations.models import Connection

        Connection.objects.filter(pk=self.connection.pk).update(data_version=F("data_version") + 1)

    def url(self, kind: str, key: str | None) -> str:
        from django.urls import reverse

        if kind == "page":
            path = reverse("openrouter:detail", args=[self.company.slug, self.connection.pk])
        else:
            path = reverse("openrouter:export", args=[self.company.slug, self.connection.pk, "csv"])
        return path + "?range=90d" + (f"&key={key}" if key else "")


def raw_page_queries(conn, connection_id: int, start, end, key: str | None) -> Callable[[], None]:
    """The aggregates the page shows, written by hand: totals now and before, the chart (day x model),
    the key table (group count and first page) and the model and provider filter choices."""
    where = "connection_id = %s AND day BETWEEN %s AND %s"
    keyed = where + (" AND api_key_hash = %s" if key is not None else "")

    def params(first, last, with_key=True):
        return [connection_id, first, last, *([key] if key is not None and with_key else [])]

    previous = (start - (end - start) - timedelta(days=1), start - timedelta(days=1))
    table = "usage_usagedaily"
    queries = [
        (f"SELECT {SUMS} FROM {table} WHERE {keyed}", params(start, end)),
        (f"SELECT {SUMS} FROM {table} WHERE {keyed}", params(*previous)),
        (
            f"SELECT day, model_permaslug, model, SUM(spend_usd) FROM {table} WHERE {keyed} "
            "GROUP BY day, model_permaslug, model",
            params(start, end),
        ),
        (
            f"SELECT COUNT(*) FROM (SELECT api_key_hash FROM {table} WHERE {keyed} GROUP BY api_key_hash) s",
            params(start, end),
        ),
        (
            "SELECT api_key_hash, SUM(spend_usd) AS spend, SUM(byok_spend_usd), SUM(requests), "
            f"SUM(prompt_tokens) + SUM(completion_tokens) FROM {table} WHERE {keyed} "
            "GROUP BY api_key_hash ORDER BY spend DESC, api_key_hash LIMIT 25",
            params(start, end),
        ),
        (f"SELECT DISTINCT model_permaslug, model FROM {table} WHERE {where}", params(start, end, False)),
        (f"SELECT DISTINCT provider_name FROM {table} WHERE {where}", params(start, end, False)),
    ]

    def run() -> None:
        for sql, args in queries:
            conn.execute(sql, args).fetchall()

    return run


def raw_export_query(
    conn, connection_id: int, start, end, key: str | None, *, grouped: bool = True
) -> Callable[[], None]:
    """The export's one grouped query (every dimension), streamed through a server-side cursor.
    `grouped=False`: the same rows read without the aggregate, in the export's order, which is what
    the export does since a usage row is unique per connection by every dimension (shown beside the
    baseline, not as it)."""
    metrics = SUMS if grouped else ", ".join((*METRICS, *MONEY))
    sql = (
        f"SELECT {EXPORT_FIELDS}, {metrics} FROM usage_usagedaily WHERE connection_id = %s "
        "AND day BETWEEN %s AND %s"
        + (" AND api_key_hash = %s" if key is not None else "")
        + (f" GROUP BY {EXPORT_FIELDS}" if grouped else "")
        + f" ORDER BY {EXPORT_FIELDS}"
    )
    args = [connection_id, start, end, *([key] if key is not None else [])]

    def run() -> None:
        with conn.transaction(), conn.cursor(name="bench_export") as cursor:
            cursor.itersize = 2000
            cursor.execute(sql, args)
            for _ in cursor:
                pass

    return run


def export_body(dataset: Dataset, key: str | None) -> Callable[[], None]:
    """The CSV export's body as the view streams it, without the request around it: what is left of
    the export's time beside this is Django's fixed cost per request (middleware; the session read
    with its user, which is the reused connection's health check too; the membership read with the
    connection)."""
    from django.http import QueryDict

    from openrouter import exports
    from openrouter.report import DetailQuery

    query = DetailQuery.from_params(QueryDict(urlsplit(dataset.url("csv", key)).query))
    selection = exports.export_selection(
        connection_id=dataset.connection.pk, query=query, group_by=exports.parse_group_by(None)
    )

    def run() -> None:
        for _ in exports.csv_chunks(**selection):
            pass

    return run


class WsgiGet:
    """GETs as a WSGI server makes them: Django's handler called with an environ, the body read to its
    end, then closed. Django's test client would skip what a server's request does with the database
    connection (its health check before the first query, its age check at the end)."""

    def __init__(self, user):
        from django.core.handlers.wsgi import WSGIHandler
        from django.test import Client

        client = Client()
        client.force_login(user)
        self.cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
        self.handler = WSGIHandler()

    def __call__(self, url: str) -> int:
        """The response's status code, after its whole body."""
        path, _, query = url.partition("?")
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_COOKIE": self.cookie,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        statuses = []
        body = self.handler(environ, lambda status, headers, exc_info=None: statuses.append(status))
        try:
            for _ in body:
                pass
        finally:
            body.close()
        return int(statuses[0].split()[0])


def slowest_queries(get: WsgiGet, url: str, top: int = 3) -> list[tuple[float, str]]:
    """Each SQL statement of one page view with its time, slowest first."""
    from django.db import connection

    timings: list[tuple[float, str]] = []

    def clock(execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timings.append((time.perf_counter() - began, sql))

    with connection.execute_wrapper(clock):
        get(url)
    return sorted(timings, reverse=True)[:top]


def measure(datasets: list[Dataset], repeat: int) -> dict[int, dict]:
    """Every figure of every size, by size. The sizes are measured together, round after round, as
    a figure and its baseline are: the scaling targets compare 1M rows with 10k, and measured
    minutes apart those two landed on different moods of a shared host (a 10k first view of 59 ms
    in one run, 135 ms in another, on the same code)."""
    import psycopg
    from django.db import connection as django_connection

    # The page gets a database connection of its own, as a web process has and as the baselines'
    # do: the one that just loaded and summarized a million rows made a first view at 1M rows
    # 10-25 ms slower.
    gets = {dataset.rows: WsgiGet(dataset.user) for dataset in datasets}
    django_connection.close()

    def fetcher(dataset: Dataset, url: str) -> Callable[[], None]:
        """The page or the export, its whole body read."""

        def fetch() -> None:
            status = gets[dataset.rows](url)
            assert status == 200, (url, status)

        return fetch

    figures: dict[int, dict] = {dataset.rows: {} for dataset in datasets}
    with psycopg.connect(**django_connection.get_connection_params(), autocommit=True) as conn:
        for name in ("all", "key"):
            page_steps, csv_steps = [], []
            page_urls = {}
            for dataset in datasets:
                key = dataset.filter_key if name == "key" else None
                start, end, pk = dataset.start, dataset.end, dataset.connection.pk
                page_urls[dataset.rows] = dataset.url("page", key)
                page = fetcher(dataset, page_urls[dataset.rows])
                csv = fetcher(dataset, dataset.url("csv", key))
                raw_page = raw_page_queries(conn, pk, start, end, key)
                raw_csv = raw_export_query(conn, pk, start, end, key)
                raw_rows = raw_export_query(conn, pk, start, end, key, grouped=False)
                body = export_body(dataset, key)
                for warm_up in (page, raw_page, csv, raw_csv, raw_rows, body):
                    warm_up()  # first-use imports, template loading, the rows in PostgreSQL's cache
                rows = dataset.rows
                # First view after a sync: the sync moved the data version, so nothing is cached.
                # The same view again is then served from the cache the first view filled.
                page_steps += [
                    ((rows, "page"), page, dataset.new_data_version),
                    ((rows, "page_cached"), page, None),
                    ((rows, "page_raw"), raw_page, None),
                ]
                csv_steps += [
                    ((rows, "csv"), csv, None),
                    ((rows, "csv_raw"), raw_csv, None),
                    ((rows, "csv_rows"), raw_rows, None),
                    ((rows, "csv_body"), body, None),
                ]
            # Every row of 1M takes seconds, so three rounds are the unfiltered export's median. One
            # key's export takes ~8 ms, of which a scheduler tick or a cold cache line is a large
            # share: its median of 7 gave ratios from 1.18 to 1.80 over runs of the same code, so it
            # takes KEY_CSV_ROUNDS_FACTOR times the rounds (a round of it is ~60 ms for all sizes).
            largest = max(dataset.rows for dataset in datasets)
            if name == "all":
                csv_repeat = min(repeat, 3) if largest >= 1_000_000 else repeat
            else:
                csv_repeat = repeat * KEY_CSV_ROUNDS_FACTOR
            for steps, rounds in ((page_steps, repeat), (csv_steps, csv_repeat)):
                for (rows, kind), seconds in interleaved_medians(steps, rounds).items():
                    figures[rows][name, kind] = seconds
            for dataset in datasets:
                dataset.new_data_version()
                figures[dataset.rows][name, "slowest"] = slowest_queries(
                    gets[dataset.rows], page_urls[dataset.rows]
                )
    return figures


def run(sizes) -> Outcome:
    outcome = Outcome("3. Detail page at scale")
    datasets = []
    for index, rows in enumerate(sizes.detail_rows):
        began = time.perf_counter()
        datasets.append(Dataset(rows, seed=300 + index))
        print(f"   {label(rows)} rows: loaded in {time.perf_counter() - began:.0f} s", flush=True)
    began = time.perf_counter()
    results = measure(datasets, sizes.detail_repeat)
    for dataset in datasets:
        results[dataset.rows]["keys"] = dataset.keys
        results[dataset.rows]["summaries"] = dataset.summaries_seconds
    print(f"   measured in {time.perf_counter() - began:.0f} s", flush=True)

    small, large = min(results), max(results)
    big = results[large]
    kinds = (
        ("page", "page_raw", "detail page, first view after a sync"),
        ("page_cached", "page_raw", "detail page, repeat view (cached)"),
        ("csv", "csv_raw", "CSV export"),
    )
    # The ≤ 1.5× target holds at every size the issue names, not only the largest: at 10k rows the
    # raw queries take milliseconds and a page's fixed cost (its template, the request) weighs most.
    for name, what in (("all", "no filter"), ("key", "one key")):
        for kind, raw_kind, title in kinds:
            for rows in sorted(results):
                figure, raw = results[rows][name, kind], results[rows][name, raw_kind]
                ratio = figure / raw
                outcome.rows.append(
                    Row(
                        f"3. {title}, {label(rows)} rows, 90 days, {what}",
                        f"{_milliseconds(figure)} ms",
                        f"{_milliseconds(raw)} ms raw SQL",
                        ratio,
                        "≤ 1.5",
                        ratio <= 1.5,
                    )
                )
    for name, what in (("all", "no filter"), ("key", "one key")):
        for kind, raw_kind, title in kinds:
            grow = results[large][name, kind] / results[small][name, kind]
            raw_grow = results[large][name, raw_kind] / results[small][name, raw_kind]
            outcome.rows.append(
                Row(
                    f"3. {title} scaling, {what}",
                    f"time({label(large)}) / time({label(small)}) = {grow:.1f}",
                    f"raw SQL grows {raw_grow:.1f}×",
                    grow,
                    "≤ 3",
                    grow <= 3,
                )
            )

    details = [
        "| rows | keys | filter | page ms (first view) | page ms (cached) | raw queries ms | ratio (first) "
        "| CSV ms | CSV body ms | raw export query ms | ratio | raw row read ms | summaries rebuilt in s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rows, figures in results.items():
        for name, what in (("all", "none"), ("key", "one key")):
            page, page_raw = figures[name, "page"], figures[name, "page_raw"]
            cached = figures[name, "page_cached"]
            csv, csv_raw, csv_rows = figures[name, "csv"], figures[name, "csv_raw"], figures[name, "csv_rows"]
            csv_body = figures[name, "csv_body"]
            details.append(
                f"| {rows:,} | {figures['keys']:,} | {what} | {page * 1000:,.1f} | {cached * 1000:,.1f} | "
                f"{page_raw * 1000:,.1f} | {page / page_raw:.2f} | {csv * 1000:,.1f} | {csv_body * 1000:,.1f} | "
                f"{csv_raw * 1000:,.1f} | "
                f"{csv / csv_raw:.2f} | {csv_rows * 1000:,.1f} | {figures['summaries']:.2f} |"
            )
    details += ["", f"Slowest statements of one first view at {label(large)} rows:", ""]
    for name, what in (("all", "no filter"), ("key", "one key")):
        for seconds, sql in big[name, "slowest"]:
            details.append(f"- {what}, {seconds * 1000:,.0f} ms: `{_shorten(sql)}`")
    outcome.details = details
    outcome.notes += [
        f"Synthetic rows loaded with COPY: {DAYS} days × {ROWS_PER_KEY_DAY} model/provider rows per key and "
        "day, so an organization grows by keys (10k rows ≈ 23 keys, 1M ≈ 2,223); every row is inside the "
        "90-day range (the worst case: each aggregate covers every row) and the previous period is empty. "
        "All sizes share one table (1.1M rows in the full run).",
        f"Page = median of {sizes.detail_repeat} GETs of `?range=90d` (keys tab) through Django's WSGI "
        "handler as a WSGI server calls it (the reused database connection's health check included, which "
        "Django's test client skips), with a finance user's session cookie, after one warm-up, on a database "
        "connection opened for the measurements "
        "(as a web process has its own; the one that loaded the rows made the first view at 1M rows "
        "10–25 ms slower). First view = the connection's data version moved "
        "before each GET, as every sync write transaction does, so no cached report applies (the page "
        "computes every aggregate and caches it); cached = the same view again, which reads only the "
        "header, labels and cache. CSV = the whole streamed body of `export.csv` (all dimensions), timed "
        "like the page (unfiltered, with 1M rows among the sizes: median of 3 rounds after the warm-up; one key: "
        f"median of {sizes.detail_repeat * KEY_CSV_ROUNDS_FACTOR} rounds, as a few milliseconds are easily "
        "tipped by the host). Baselines with raw psycopg on the "
        "same data: the 7 aggregate queries the page needs (totals now and before, day × model chart, key-table count and page, "
        "model and provider filter choices) and the export's grouped query read through a server-side "
        "cursor. A figure and its baselines are sampled in turn, round after round, every size in the same "
        "round (first view, repeat view and raw queries of each size; then CSV, raw export query, raw row "
        "read and CSV body of each size), once all sizes are loaded, so that a slow minute of the shared "
        "host slows both sides of a ratio, and both ends of a scaling figure, alike.",
        "The export groups by every dimension of one connection, by which a usage row is unique (its "
        "natural key): it reads the rows without the aggregate and the sort that feeds it, which "
        "halved a 100k-row export. The baseline stays the grouped query the issue names; “raw row read” "
        "is the same rows read by raw psycopg in the export's order, the floor of what the export now does. "
        "“CSV body” is the export's CSV as the view streams it (`exports.csv_chunks`), called without a "
        "request: CSV minus CSV body is Django's fixed cost per request (middleware; two statements: the "
        "session read with its user, which is the reused database connection's health check too, and the "
        "membership read with its company and the connection), the same at every size.",
        "The baseline answers the page's questions from the usage rows themselves. The page reads the "
        "summaries a sync keeps: usage rows summed over keys (`usage.UsageDailyByModel`, rebuilt in the "
        "sync's last write transaction) for totals, chart, filter choices and the model, provider, "
        "workspace and day tables; usage rows summed over models and providers (`usage.UsageDailyByKey`, "
        "kept by each write for the keys and days it replaces) for one key's views and for the key table, "
        "which reads each month the range touches from those sums per calendar month "
        "(`usage.UsageMonthlyByKey`, summed again by each write for the keys and months it touches) and "
        "adds or takes away the daily sums of at most half a month at either end; "
        "the rows themselves for anything by key and model or provider, or while the summaries are "
        "stale. Their cost is paid by the sync (the ingest benchmark's write path includes them) and "
        "shown here as the time to rebuild them all for all of a connection's rows.",
    ]
    return outcome


def _milliseconds(seconds: float) -> str:
    """Whole milliseconds, or tenths under 10 ms (a one-key export takes ~5)."""
    ms = seconds * 1000
    return f"{ms:,.1f}" if ms < 10 else f"{ms:,.0f}"


def _shorten(sql: str, limit: int = 220) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= limit else sql[: limit - 1] + "…"
