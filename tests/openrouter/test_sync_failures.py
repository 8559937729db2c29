"""How a sync ends when OpenRouter refuses, rejects or the worker runs out of time: the right run status,
retry decision, connection state and event, and nothing of the key in the logs."""

import logging
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal

import httpx
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from integrations.models import ConnectionState, SyncEvent, SyncRun
from openrouter import normalize
from openrouter.emulator import Emulator, EmulatorConfig, Fault
from openrouter.models import ApiKeySnapshot
from openrouter.schemas import COUNTER_FIELDS
from openrouter.sync import PERMANENT_HINTS, _SyncJob, sync_connection
from tests.support import EMULATOR_BASE_URL, TODAY, Sleeps, connect, sync, usage_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def connection(acme, emulator):
    return connect(acme, emulator)


def clean_snapshot(emulator, company):
    """The usage rows a fault-free sync of the same organization stores."""
    clean = Emulator(emulator.config)
    clean_connection = connect(company, clean, name="clean")
    assert sync(clean_connection, clean).status == "succeeded"
    return usage_snapshot(clean_connection)


# --- 1. Permanent refusals other than 401


@pytest.mark.parametrize(
    ("fault", "code", "event_code"),
    [
        (Fault(path="/credits", status=402), "http_402", "http_402"),
        (Fault(path="/keys", status=403), "http_403", "credential_refused"),
    ],
    ids=["402-credits", "403-keys"],
)
def test_402_and_403_stop_the_sync_without_retry_and_ask_for_attention(
    connection, emulator, fault, code, event_code
):
    emulator.faults.add(fault)
    sleeps = Sleeps()

    result = sync(connection, emulator, sleep=sleeps)

    assert result.status in ("failed", "partial")
    assert not result.retry
    assert fault.fired == 1, "a permanent refusal is not retried inline"
    assert sleeps == []
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.error_summary == code
    connection.refresh_from_db()
    assert connection.state == ConnectionState.NEEDS_ATTENTION
    assert connection.attention_reason == PERMANENT_HINTS[code]
    assert SyncEvent.objects.filter(run=run, code=event_code, message=PERMANENT_HINTS[code]).exists()
    assert not SyncEvent.objects.filter(run=run, kind="retry").exists()


def test_403_on_members_is_a_personal_account_not_a_refusal(connection, emulator):
    emulator.faults.add(Fault(path="/organization/members", status=403))

    result = sync(connection, emulator)

    assert result.status == "succeeded"
    connection.refresh_from_db()
    assert connection.state == ConnectionState.CONNECTED


# --- 2. Other 4xx: a rejected request


@pytest.mark.parametrize("status", [400, 409, 422])
@pytest.mark.parametrize("path", ["/credits", "/keys", "/activity"])
def test_a_rejected_request_is_not_retried_and_does_not_blame_the_credential(
    connection, emulator, status, path
):
    fault = emulator.faults.add(Fault(path=path, status=status))
    sleeps = Sleeps()
    before = timezone.now()

    result = sync(connection, emulator, sleep=sleeps)

    assert result.status in ("failed", "partial")
    assert not result.retry, "the same request would be rejected again: no Celery retry either"
    # Not retried inline: each rejected request was sent once (pages of keys fetch in parallel).
    rejected = [(e.path, tuple(sorted(e.query.items()))) for e in emulator.request_log.matching(path)]
    assert fault.fired == len(rejected) == len(set(rejected)) >= 1
    assert sleeps == []
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.error_summary == f"http_{status}"
    finished = SyncEvent.objects.get(run=run, code=f"sync_{result.status}")
    assert finished.level == "error"
    assert path in finished.message and str(status) in finished.message
    assert not SyncEvent.objects.filter(run=run, kind__in=["retry", "credential", "scope"]).exists()
    connection.refresh_from_db()
    assert (connection.state, connection.attention_reason) == (ConnectionState.CONNECTED, "")
    # Still scheduled: the next regular sync tries again, within the quarter hour.
    assert before < connection.next_sync_at <= timezone.now() + timedelta(minutes=15)


@pytest.mark.parametrize("status", [408, 425])
def test_a_4xx_that_means_try_later_is_retried(connection, emulator, status):
    emulator.faults.add(Fault(path="/activity", status=status, times=1))

    assert sync(connection, emulator).status == "succeeded"


# --- 3. Soft time limit


class SoftLimitTransport(httpx.BaseTransport):
    """The worker's soft time limit strikes during the `at`-th per-key /activity request, while the
    first one is still being answered (slowly), as Celery raises it into a running sync."""

    def __init__(self, emulator, *, at: int, slow: float = 0.3):
        self.inner, self.at, self.slow = emulator.transport(), at, slow
        self.lock = threading.Lock()
        self.calls = 0
        self.after_limit = 0
        self.struck = False

    def handle_request(self, request):
        if request.url.path.endswith("/activity") and "api_key_hash" in request.url.params:
            with self.lock:
                self.calls += 1
                call = self.calls
                if self.struck:
                    self.after_limit += 1
            if call == 1:
                time.sleep(self.slow)
            if call == self.at:
                with self.lock:
                    self.struck = True
                raise SoftTimeLimitExceeded()
        return self.inner.handle_request(request)


def test_soft_time_limit_ends_partial_releases_the_lease_and_the_next_run_completes(
    connection, emulator, globex, settings
):
    expected = clean_snapshot(emulator, globex)
    transport = SoftLimitTransport(emulator, at=2)

    result = sync(connection, emulator, transport=transport)
    time.sleep(transport.slow + 0.2)  # let any fetch still running finish before counting

    assert transport.struck
    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.status, run.error_summary) == ("partial", "time_limit")
    assert transport.after_limit <= settings.OPENROUTER_CONCURRENCY, "queued fetches were still sent"
    assert result.status == "partial"
    connection.refresh_from_db()
    assert connection.sync_lease_until is None
    assert connection.state == ConnectionState.CONNECTED

    assert sync(connection, emulator).status == "succeeded"
    assert usage_snapshot(connection) == expected


# --- 5. The catch-all error path keeps the key out of the logs


def test_an_internal_error_is_retried_and_its_log_holds_no_piece_of_the_key(
    connection, emulator, monkeypatch, caplog
):
    key = emulator.management_key

    def broken(records, **kwargs):
        management_key = key  # noqa: F841 - a local holding the key, as a careless frame would
        raise RuntimeError(f"could not aggregate for {key} ({key[-20:]})")

    monkeypatch.setattr(normalize, "aggregate_activity", broken)
    caplog.set_level(logging.DEBUG)

    result = sync(connection, emulator)

    assert result.status == "failed"
    assert result.retry
    assert SyncRun.objects.get(pk=result.run_id).error_summary == "internal_error"
    texts = [caplog.text]
    formatter = logging.Formatter()
    for record in caplog.records:
        texts.append(formatter.format(record))
        texts.append(record.exc_text or "")
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
            for frame, _line in traceback.walk_tb(record.exc_info[2]):
                texts.append(repr(frame.f_locals))
    seen = "\n".join(texts)
    leaked = {key[i : i + 8] for i in range(len(key) - 7)} & {seen[i : i + 8] for i in range(len(seen) - 7)}
    assert not leaked
    logged = [r for r in caplog.records if r.name == "openrouter.sync" and r.levelno >= logging.ERROR]
    assert logged, "an internal error is logged"
    assert "RuntimeError" in logged[0].getMessage(), "the log still says what failed"


# --- 7. A key page read after midnight is that day's snapshot


class MidnightClock(httpx.BaseTransport):
    """Midnight passes, for the emulator and on the sync's clock, between the first and the second
    page of keys: the other workspaces' keys are listed on the next day."""

    def __init__(self, emulator, start: datetime):
        self.inner, self.emulator, self.now = emulator.transport(), emulator, start
        self.lock = threading.Lock()
        self.pages = 0

    def handle_request(self, request):
        if request.url.path.endswith("/keys"):
            with self.lock:
                self.pages += 1
                if self.pages == 2:
                    self.emulator.set_today(self.emulator.today + timedelta(days=1))
                    self.now = datetime.combine(self.emulator.today, clock_time(0, 0, 5), tzinfo=UTC)
        return self.inner.handle_request(request)


def counters(emulator) -> dict[str, tuple]:
    return {
        k["hash"]: tuple(Decimal(str(k[name])) for name in COUNTER_FIELDS)
        for k in emulator.truth.listed_keys()
    }


def test_keys_read_after_midnight_do_not_overwrite_the_previous_days_snapshot(
    connection, emulator, monkeypatch
):
    day = emulator.today
    sync(connection, emulator)  # at noon: every key's snapshot of `day`
    on_day = counters(emulator)
    clock = MidnightClock(emulator, start=datetime.combine(day, clock_time(23, 59, 30), tzinfo=UTC))
    monkeypatch.setattr(_SyncJob, "clock", lambda self: clock.now)

    result = sync_connection(
        connection.pk, transport=clock, base_url=EMULATOR_BASE_URL, sleep=Sleeps(), now=clock.now
    )

    assert result.status == "succeeded"
    assert emulator.today == day + timedelta(days=1), "midnight should have passed during the sync"
    on_next_day = counters(emulator)
    snapshots = ApiKeySnapshot.objects.filter(connection=connection)
    stored = {(s.key_hash, s.day): tuple(getattr(s, name) for name in COUNTER_FIELDS) for s in snapshots}
    # Every key keeps its snapshot of `day` as read on that day (usage_daily of that day, not reset) ...
    assert {h: stored[(h, day)] for h in on_day} == on_day
    # ... and the keys listed after midnight have their first snapshot of the next day, taken then.
    late = {h: values for (h, d), values in stored.items() if d == day + timedelta(days=1)}
    assert late, "some key pages should have been read after midnight"
    assert late == {h: on_next_day[h] for h in late}
    assert len(late) < len(on_day), "the first page was read before midnight"
    taken = snapshots.filter(day=day + timedelta(days=1)).values_list("taken_at", flat=True)
    assert all(t.date() == day + timedelta(days=1) for t in taken)


def test_a_refusal_whose_message_holds_a_nul_character_is_recorded(connection, emulator):
    """OpenRouter's message goes into the event log, where PostgreSQL refuses NUL in text and JSON:
    the refusal is recorded with U+FFFD in its place, not lost to a database error."""
    import respx

    def answer(request):
        if request.url.path.endswith("/credits"):
            return httpx.Response(402, json={"error": {"code": 402, "message": "Pay\x00up"}})
        return emulator.transport().handle_request(request)

    with respx.mock(base_url=EMULATOR_BASE_URL, assert_all_called=False) as router:
        router.route().mock(side_effect=answer)
        result = sync_connection(connection.pk, base_url=EMULATOR_BASE_URL, sleep=lambda s: None)

    run = SyncRun.objects.get(pk=result.run_id)
    assert run.error_summary == "http_402"
    details = [event.detail for event in SyncEvent.objects.filter(run=run) if event.detail]
    assert {
        "status": "http_402",
        "provider_message": "OpenRouter refused /credits (402): Pay\ufffdup.",
    } in details


class FirstCheckWaitsForAFailure(threading.Event):
    """The stop flag as the first activity fetch sees it if its thread, having taken that key from
    the queue, gets the CPU back only after a fetch queued behind it has failed."""

    def __init__(self):
        super().__init__()
        self.checks = 0
        self.checks_lock = threading.Lock()

    def is_set(self) -> bool:
        with self.checks_lock:
            self.checks += 1
            first = self.checks == 1
        if first:
            self.wait(timeout=10)
        return super().is_set()


def test_a_fetch_that_stopped_before_the_failing_one_does_not_hide_its_error(acme, monkeypatch, caplog):
    """A key's activity keeps failing (500): the run ends with that error, whatever the order the
    fetch threads ran in, never as an internal error (logged as unexpected and retried at once)."""
    emulator = Emulator(EmulatorConfig(seed=7, keys=24, workspaces=1, today=TODAY))  # one key listing
    connection = connect(acme, emulator)
    sync(connection, emulator)
    emulator.set_today(emulator.today + timedelta(days=2))  # every key is stale
    victim = list(emulator.truth.listed_keys())[-1]["hash"]
    emulator.faults.add(Fault(path="/activity", query={"api_key_hash": victim}, status=500))
    job_init = _SyncJob.__init__

    def with_the_flag_under_test(job, *args, **kwargs):
        job_init(job, *args, **kwargs)
        job.stop_fetching = FirstCheckWaitsForAFailure()

    monkeypatch.setattr(_SyncJob, "__init__", with_the_flag_under_test)

    with caplog.at_level(logging.ERROR, logger="openrouter.sync"):
        result = sync(connection, emulator)

    assert SyncRun.objects.get(pk=result.run_id).error_summary == "http_500"
    assert "failed unexpectedly" not in caplog.text


# --- A body past OPENROUTER_MAX_RESPONSE_MB


def endless_chunks(sent: list[int]):
    """A body that never ends, counting what it hands out."""
    chunk = b" " * 65536
    while True:
        sent.append(len(chunk))
        yield chunk


@pytest.mark.parametrize("shape", ["declared", "streamed", "compressed"])
def test_a_body_past_the_limit_is_read_no_further_and_fails_the_sync_clearly(
    connection, emulator, settings, shape
):
    import gzip

    settings.OPENROUTER_MAX_RESPONSE_MB = 1
    sent: list[int] = []
    activity_requests = []

    def answer(request):
        if request.url.path.endswith("/activity"):
            activity_requests.append(request)
            if shape == "declared":
                return httpx.Response(
                    200, headers={"Content-Length": str(2**30)}, content=endless_chunks(sent)
                )
            if shape == "streamed":
                return httpx.Response(200, content=endless_chunks(sent))
            bomb = gzip.compress(b"[" + b"0," * 2**20 + b"0]")  # 2 MiB of JSON in 2 KiB
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=bomb)
        return emulator.transport().handle_request(request)

    sleeps = Sleeps()
    result = sync(connection, emulator, sleep=sleeps, transport=httpx.MockTransport(answer))

    assert result.status in ("failed", "partial")
    assert not result.retry, "the same request would send the same body: no Celery retry either"
    # Not retried inline: each request was sent once (keys' activity is fetched in parallel).
    urls = [str(request.url) for request in activity_requests]
    assert len(urls) == len(set(urls)) >= 1 and sleeps == []
    # Each read no further than the limit and one chunk; a declared length is refused unread.
    assert sum(sent) <= len(urls) * (2**20 + 65536 if shape == "streamed" else 0)
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.error_summary == "too_large"
    finished = SyncEvent.objects.get(run=run, code=f"sync_{result.status}")
    assert finished.level == "error"
    assert "OpenRouter sent more than 1 MiB for /activity; Doow stopped reading it." in finished.message
    connection.refresh_from_db()
    assert (connection.state, connection.attention_reason) == (ConnectionState.CONNECTED, "")


def test_a_body_that_does_not_decode_is_retried_as_malformed(connection, emulator, globex):
    broken = []

    def answer(request):
        if request.url.path.endswith("/credits") and not broken:
            broken.append(request)
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip at all")
        return emulator.transport().handle_request(request)

    sleeps = Sleeps()
    result = sync(connection, emulator, sleep=sleeps, transport=httpx.MockTransport(answer))

    assert result.status == "succeeded"
    assert len(broken) == 1 and len(sleeps) == 1, "retried once, after a backoff"
    assert usage_snapshot(connection) == clean_snapshot(emulator, globex)


# --- A listing that does not advance (the server ignores the offset)


@pytest.mark.parametrize("path", ["/keys", "/workspaces", "/organization/members"])
def test_a_listing_that_sends_the_same_page_again_stops_at_once_and_says_so(connection, emulator, path):
    requests = []

    def answer(request):
        if request.url.path.endswith(path):
            requests.append(request)
            # Every offset answered with the first page; a page of one, so the listing has more.
            params = dict(request.url.params) | {"offset": "0"}
            params |= {"limit": "1"} if path != "/keys" else {}
            request = httpx.Request("GET", request.url.copy_with(params=params), headers=request.headers)
        return emulator.transport().handle_request(request)

    sleeps = Sleeps()
    result = sync(connection, emulator, sleep=sleeps, transport=httpx.MockTransport(answer))

    assert result.status in ("failed", "partial")
    assert not result.retry, "the listing would not advance next time either: no Celery retry"
    assert len(requests) == 2 and sleeps == [], "stopped at the first repeated page, not retried"
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.error_summary == "listing_stuck"
    finished = SyncEvent.objects.get(run=run, code=f"sync_{result.status}")
    assert f"OpenRouter sent the same page of {path} again at offset " in finished.message
    assert "its listing does not advance, so Doow stopped reading it." in finished.message
    connection.refresh_from_db()
    assert connection.state == ConnectionState.CONNECTED
    # Nothing was marked deleted on a listing that never ended.
    assert not connection.openrouter_keys.filter(missing_since__isnull=False).exists()
