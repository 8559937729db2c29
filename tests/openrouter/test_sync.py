"""The sync engine against the emulator: totals reconcile to the cent, re-syncs are idempotent,
faults end in correct data or a clear partial/failed run, and unchanged keys cost no request."""

import json
import threading
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import httpx
import pytest

from integrations.models import ConnectionState, SyncEvent, SyncRun
from openrouter.emulator import Emulator, EmulatorConfig, Fault
from openrouter.models import ApiKey, ApiKeySnapshot, CreditsSnapshot, Member, Workspace
from openrouter.sync import sync_connection
from tests.support import EMULATOR_BASE_URL, TODAY, Sleeps, connect, stored_total, sync, usage_snapshot
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db


@pytest.fixture
def connection(acme, emulator):
    return connect(acme, emulator)


def window(emulator):
    return emulator.truth.activity_window()


def activity_calls(emulator, *, per_key: bool):
    return [e for e in emulator.request_log.matching("/activity") if ("api_key_hash" in e.query) == per_key]


def test_initial_sync_reconciles_with_openrouter_to_the_cent(connection, emulator):
    result = sync(connection, emulator)

    assert result.status == "succeeded"
    start, end = window(emulator)
    assert stored_total(connection) == emulator.truth.activity_total(start, end)
    byok_truth = sum(
        (Decimal(str(row["byok_usage_inference"])) for row in emulator.truth.activity_rows(start, end)),
        Decimal(0),
    )
    assert stored_total(connection, "byok_spend_usd") == byok_truth
    requests_truth = sum(row["requests"] for row in emulator.truth.activity_rows(start, end))
    assert stored_total(connection, "requests") == requests_truth
    connection.refresh_from_db()
    assert connection.state == ConnectionState.CONNECTED
    assert connection.complete_through == end
    assert connection.last_synced_at is not None


def test_each_listed_key_matches_its_own_activity(connection, emulator):
    sync(connection, emulator)
    start, end = window(emulator)
    for key in emulator.truth.listed_keys():
        expected = sum(
            (row["usage"] for row in emulator.truth.activity_rows(start, end, api_key_hash=key["hash"])),
            Decimal(0),
        )
        assert stored_total(connection, api_key_hash=key["hash"]) == expected, key["hash"]


def test_usage_of_deleted_keys_is_kept_as_unattributed_rows(connection, emulator):
    sync(connection, emulator)
    start, end = window(emulator)
    deleted_total = sum(
        (
            row["usage"]
            for key in emulator.truth.deleted_keys()
            for row in emulator.truth.activity_rows(start, end, api_key_hash=key["hash"])
        ),
        Decimal(0),
    )
    assert deleted_total > 0, "the emulator organization should have deleted keys with usage"
    assert stored_total(connection, api_key_hash="") == deleted_total


def test_rows_sum_endpoint_rows_per_day_model_and_provider(connection, emulator):
    sync(connection, emulator)
    start, end = window(emulator)
    expected = defaultdict(Decimal)
    for key in emulator.truth.listed_keys():
        for row in emulator.truth.activity_rows(start, end, api_key_hash=key["hash"]):
            expected[(key["hash"], row["date"], row["model_permaslug"], row["provider_name"])] += row["usage"]
    stored = {
        (r.api_key_hash, r.day.isoformat(), r.model_permaslug, r.provider_name): r.spend_usd
        for r in UsageDaily.objects.filter(connection=connection).exclude(api_key_hash="")
    }
    assert stored == dict(expected)


def test_every_key_of_every_workspace_is_stored_with_disabled_and_expired_ones(connection, emulator):
    sync(connection, emulator)
    listed = list(emulator.truth.listed_keys())
    stored = ApiKey.objects.filter(connection=connection)
    assert sorted(stored.values_list("key_hash", flat=True)) == sorted(k["hash"] for k in listed)
    assert {k["workspace_id"] for k in listed} == set(stored.values_list("workspace_id", flat=True))
    assert len({k["workspace_id"] for k in listed}) > 1
    assert stored.filter(disabled=True).exists()
    assert Workspace.objects.filter(connection=connection).count() == len(emulator.truth.workspaces())
    assert Member.objects.filter(connection=connection).count() == len(emulator.truth.members())
    assert ApiKeySnapshot.objects.filter(connection=connection).count() == len(listed)
    credits = emulator.truth.credits()
    snapshot = CreditsSnapshot.objects.get(connection=connection)
    assert (snapshot.total_credits, snapshot.total_usage) == (
        credits["total_credits"],
        credits["total_usage"],
    )


def test_key_counters_match_openrouter(connection, emulator):
    sync(connection, emulator)
    for key in emulator.truth.listed_keys():
        stored = ApiKey.objects.get(connection=connection, key_hash=key["hash"])
        assert stored.usage == Decimal(str(key["usage"]))
        assert stored.usage_daily == Decimal(str(key["usage_daily"]))
        assert stored.byok_usage == Decimal(str(key["byok_usage"]))


def test_syncing_twice_changes_nothing(connection, emulator):
    sync(connection, emulator)
    first = usage_snapshot(connection)
    sync(connection, emulator)
    assert usage_snapshot(connection) == first


def test_incremental_sync_of_an_unchanged_organization_fetches_no_key_activity(connection, emulator):
    sync(connection, emulator)
    emulator.request_log.clear()

    result = sync(connection, emulator)

    assert result.status == "succeeded"
    assert activity_calls(emulator, per_key=True) == []
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.keys_fetched == 0
    assert run.keys_seen == len(list(emulator.truth.listed_keys()))


def test_moving_a_day_forward_refetches_and_keeps_older_rows(connection, emulator):
    sync(connection, emulator)
    start, _end = window(emulator)
    oldest_day_total = stored_total(connection, day=start)
    assert oldest_day_total > 0

    emulator.set_today(emulator.today + timedelta(days=1))
    emulator.request_log.clear()
    sync(connection, emulator)

    new_start, new_end = window(emulator)
    assert new_start == start + timedelta(days=1)
    # The day that left OpenRouter's 30-day window is kept as it was.
    assert stored_total(connection, day=start) == oldest_day_total
    assert stored_total(connection, day__gte=new_start) == emulator.truth.activity_total(new_start, new_end)
    assert len(activity_calls(emulator, per_key=True)) == len(list(emulator.truth.listed_keys()))
    connection.refresh_from_db()
    assert connection.complete_through == new_end


def test_retry_after_seven_seconds_is_honoured(connection, emulator):
    emulator.faults.add(Fault(path="/activity", retry_after="7", times=1))
    sleeps = Sleeps()

    result = sync(connection, emulator, sleep=sleeps)

    assert result.status == "succeeded"
    assert any(seconds >= 7 for seconds in sleeps)
    assert SyncEvent.objects.filter(
        connection=connection, code="rate_limited", detail__retry_after=7
    ).exists()
    start, end = window(emulator)
    assert stored_total(connection) == emulator.truth.activity_total(start, end)


def test_retry_after_as_http_date_is_honoured(connection, emulator):
    from email.utils import format_datetime

    from tests.support import noon

    when = format_datetime(noon(emulator.today) + timedelta(days=3650), usegmt=True)
    emulator.faults.add(Fault(path="/credits", retry_after=when, times=1))

    result = sync(connection, emulator)

    # Far longer than a worker may wait: the run is deferred to the next scheduled sync, not retried in a loop.
    assert result.status == "deferred"
    assert not result.retry


@pytest.mark.parametrize(
    "fault",
    [
        Fault(path="/activity", status=500, times=2),
        Fault(path="/activity", status=502, times=1),
        Fault(path="/keys", status=503, times=1),
        Fault(path="/activity", truncate=True, times=2),
        Fault(path="/keys", non_json=True, times=1),
        Fault(path="/activity", drop_field="usage", times=1),
        Fault(path="/keys", drop_field="hash", times=1),
        Fault(path="/activity", extra_field={"surprise": [1, 2]}, times=3),
        Fault(path="/keys", query={"offset": 0}, status=500, times=1),
        Fault(path="/activity", hang=True, times=1),
    ],
    ids=lambda f: (
        f"{f.path}-{f.status or ''}{'truncate' if f.truncate else ''}{'nonjson' if f.non_json else ''}"
        f"{f.drop_field or ''}{'extra' if f.extra_field else ''}{'hang' if f.hang else ''}"
    ),
)
def test_transient_faults_end_in_exactly_the_clean_data(connection, emulator, fault, globex):
    from openrouter.emulator import Emulator

    clean = Emulator(emulator.config)
    clean_connection = connect(globex, clean, name="clean")
    sync(clean_connection, clean)

    emulator.faults.add(fault)
    result = sync(connection, emulator)

    assert result.status == "succeeded", SyncRun.objects.get(pk=result.run_id).error_summary
    assert fault.fired >= 1
    strip = [row[:12] for row in usage_snapshot(clean_connection)]
    assert [row[:12] for row in usage_snapshot(connection)] == strip
    retried = SyncEvent.objects.filter(connection=connection, kind__in=["retry", "rate_limit"]).exists()
    # An unknown extra field is not an error: it is ignored, with no retry.
    assert retried is not bool(fault.extra_field)


def test_persistent_failure_ends_partial_and_the_next_run_completes_it(connection, emulator):
    listed = list(emulator.truth.listed_keys())
    victim = listed[len(listed) // 2]["hash"]
    emulator.faults.add(Fault(path="/activity", query={"api_key_hash": victim}, status=500))

    result = sync(connection, emulator)

    assert result.status in ("partial", "failed")
    assert result.retry
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.error_summary == "http_500"
    assert SyncEvent.objects.filter(run=run, level="error").exists()
    assert not UsageDaily.objects.filter(connection=connection, api_key_hash=victim).exists()

    emulator.faults.clear()
    emulator.request_log.clear()
    assert sync(connection, emulator).status == "succeeded"
    start, end = window(emulator)
    assert stored_total(connection) == emulator.truth.activity_total(start, end)
    # Only keys still stale were fetched again.
    assert 0 < len(activity_calls(emulator, per_key=True)) < len(listed)


def test_revoked_key_marks_the_connection_needs_attention_without_retrying(connection, emulator):
    emulator.revoke(emulator.management_key)

    result = sync(connection, emulator)

    assert result.status == "failed"
    assert not result.retry
    connection.refresh_from_db()
    assert connection.state == ConnectionState.NEEDS_ATTENTION
    assert "revoked" in connection.attention_reason
    assert SyncEvent.objects.filter(connection=connection, code="credential_refused").exists()


def test_key_revoked_mid_sync_stops_cleanly(connection, emulator):
    emulator.faults.add(Fault(path="/activity", revoke_after=3))

    result = sync(connection, emulator)

    assert result.status in ("partial", "failed")
    connection.refresh_from_db()
    assert connection.state == ConnectionState.NEEDS_ATTENTION
    # Whatever was written is whole per key: each stored key's rows equal its own activity.
    start, end = window(emulator)
    for key_hash in set(
        UsageDaily.objects.filter(connection=connection).values_list("api_key_hash", flat=True)
    ):
        expected = sum(
            (row["usage"] for row in emulator.truth.activity_rows(start, end, api_key_hash=key_hash)),
            Decimal(0),
        )
        assert stored_total(connection, api_key_hash=key_hash) == expected


def test_single_key_scope_reads_only_the_key_itself(acme, emulator):
    normal = connect(acme, emulator, secret=emulator.normal_key)
    assert normal.scope == "single_key"
    emulator.request_log.clear()

    assert sync(normal, emulator).status == "succeeded"

    assert {entry.path for entry in emulator.request_log} == {"/key"}
    stored = ApiKey.objects.get(connection=normal)
    assert stored.usage > 0
    assert ApiKeySnapshot.objects.filter(connection=normal).count() == 1


def test_sync_never_calls_content_or_write_endpoints(connection, emulator):
    sync(connection, emulator)
    assert {entry.method for entry in emulator.request_log} == {"GET"}
    assert not any("generation" in entry.path for entry in emulator.request_log)


class MidnightTransport(httpx.BaseTransport):
    """The emulator moves to the next UTC day after `after` per-key /activity answers, as if
    midnight passed in the middle of a sync."""

    def __init__(self, emulator, after: int):
        self.inner, self.emulator, self.left = emulator.transport(), emulator, after
        self.lock = threading.Lock()

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/activity") and "api_key_hash" in request.url.params:
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.emulator.set_today(self.emulator.today + timedelta(days=1))
        return response


def daily_truth(emulator) -> dict:
    """What OpenRouter reports account-wide for each day of its current window."""
    start, end = window(emulator)
    return {
        day: emulator.truth.activity_total(day, day)
        for day in (start + timedelta(days=n) for n in range((end - start).days + 1))
    }


def sync_just_before_midnight(connection, emulator, transport):
    """A sync that starts 30 s before UTC midnight; `transport` moves the emulator past it."""
    return sync_connection(
        connection.pk,
        transport=transport,
        base_url=EMULATOR_BASE_URL,
        sleep=Sleeps(),
        now=datetime.combine(emulator.today, time(23, 59, 30), tzinfo=UTC),
    )


def test_midnight_passing_during_a_sync_loses_no_day(connection, emulator, settings):
    settings.OPENROUTER_WRITE_BATCH_KEYS = 5  # answers from both sides of midnight in one batch and across
    day_before = emulator.today - timedelta(days=1)
    emulator.set_today(day_before)
    sync(connection, emulator)
    emulator.set_today(day_before + timedelta(days=1))
    start, end = window(emulator)
    truth = daily_truth(emulator)
    keys = len(list(emulator.truth.listed_keys()))

    # Every key is stale (a day has completed); midnight passes after a third of their answers.
    result = sync_just_before_midnight(connection, emulator, MidnightTransport(emulator, after=keys // 3))

    assert result.status == "succeeded"
    assert emulator.today == end + timedelta(days=2), "midnight should have passed during the sync"
    # The first day, which answers after midnight no longer cover, keeps every cent.
    assert {day: stored_total(connection, day=day) for day in truth} == truth
    assert not UsageDaily.objects.filter(connection=connection, spend_usd__lt=0).exists()
    assert not SyncEvent.objects.filter(code="reconciliation_mismatch").exists()

    # The next sync, on the new day, fetches the day the late answers left out.
    sync(connection, emulator)
    new_start, new_end = window(emulator)
    assert stored_total(connection, day__gte=new_start) == emulator.truth.activity_total(new_start, new_end)
    assert stored_total(connection, day=start) == truth[start]


class MidnightBeforeTransport(httpx.BaseTransport):
    """The emulator moves to the next UTC day just before the first account-wide (or per-key)
    /activity request is answered."""

    def __init__(self, emulator, *, per_key: bool):
        self.inner, self.emulator, self.per_key, self.passed = emulator.transport(), emulator, per_key, False

    def handle_request(self, request):
        is_activity = request.url.path.endswith("/activity")
        if is_activity and not self.passed and ("api_key_hash" in request.url.params) == self.per_key:
            self.passed = True
            self.emulator.set_today(self.emulator.today + timedelta(days=1))
        return self.inner.handle_request(request)


@pytest.mark.parametrize("per_key", [False, True], ids=["before the account-wide answer", "before the keys'"])
def test_midnight_passing_between_the_account_wide_and_the_keys_answers_counts_no_cent_twice(acme, per_key):
    """A key whose usage was stored unattributed (no listing showed it) is fetched for the first time
    by a sync that midnight interrupts: the window's first day, which answers after midnight no longer
    cover, must not hold the key's part both in its rows and in the unattributed ones."""
    emulator = Emulator(EmulatorConfig(seed=8, keys=12, workspaces=1, deleted_keys=0, today=TODAY))
    connection = connect(acme, emulator)
    next_first_day = TODAY + timedelta(days=1) - timedelta(days=30)
    late = next(
        key["hash"]
        for key in emulator.truth.listed_keys()
        if emulator.truth.activity_total(next_first_day, next_first_day, api_key_hash=key["hash"])
    )
    emulator.delete_key(late)  # not listed at the first sync
    sync(connection, emulator)
    assert stored_total(connection, api_key_hash=late) == 0
    emulator.removed_keys.clear()  # listed again from the next day on
    emulator.set_today(TODAY + timedelta(days=1))
    end = window(emulator)[1]
    truth = daily_truth(emulator)

    result = sync_just_before_midnight(
        connection, emulator, MidnightBeforeTransport(emulator, per_key=per_key)
    )

    assert result.status == "succeeded"
    assert emulator.today == end + timedelta(days=2), "midnight should have passed during the sync"
    assert {day: stored_total(connection, day=day) for day in truth} == truth


class LongDecimalsTransport(httpx.BaseTransport):
    """Key listings whose usage counters carry more decimals than Doow stores (floats printed in
    full, as JSON encoders do)."""

    def __init__(self, emulator):
        self.inner = emulator.transport()
        self.long_values = 0

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/keys") or response.status_code != 200:
            return response
        body = json.loads(response.content)
        for key in body["data"]:
            for name in ("usage", "byok_usage"):
                key[name] = float(key[name]) + 1.23e-14
                self.long_values += len(repr(key[name]).partition(".")[2]) > 12
        return httpx.Response(200, json=body, request=request)


def test_counters_with_more_decimals_than_stored_do_not_make_keys_stale(connection, emulator):
    transport = LongDecimalsTransport(emulator)
    first = sync(connection, emulator, transport=transport)
    emulator.request_log.clear()

    second = sync(connection, emulator, transport=transport)

    assert transport.long_values > 0
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert activity_calls(emulator, per_key=True) == []


def test_a_key_deleted_between_listing_and_activity_is_skipped_and_totals_still_reconcile(
    connection, emulator
):
    sync(connection, emulator)
    emulator.set_today(emulator.today + timedelta(days=1))
    vanished = next(k for k in emulator.truth.listed_keys() if k["usage"] > 0)
    emulator.faults.add(Fault(path="/activity", query={"api_key_hash": vanished["hash"]}, status=404))

    result = sync(connection, emulator)

    assert result.status == "succeeded"
    connection.refresh_from_db()
    assert connection.state == ConnectionState.CONNECTED
    event = SyncEvent.objects.get(connection=connection, code="keys_vanished")
    assert vanished["name"] in event.message
    start, end = window(emulator)
    # The key's newest day is counted as unattributed, so the account still adds up to the cent.
    assert stored_total(connection, day__gte=start) == emulator.truth.activity_total(start, end)
    stored_key = ApiKey.objects.get(connection=connection, key_hash=vanished["hash"])
    assert stored_key.activity_fetched_through == end - timedelta(days=1), "left to be fetched again"


def test_a_workspace_deleted_between_listings_is_skipped_without_deleting_its_keys(connection, emulator):
    sync(connection, emulator)
    workspace = next(
        w["id"] for w in emulator.truth.workspaces() if w["id"] != emulator.truth.workspaces()[0]["id"]
    )
    emulator.faults.add(Fault(path="/keys", query={"workspace_id": workspace}, status=404))

    result = sync(connection, emulator)

    assert result.status == "succeeded"
    connection.refresh_from_db()
    assert connection.state == ConnectionState.CONNECTED
    keys = ApiKey.objects.filter(connection=connection, workspace_id=workspace)
    assert keys.exists()
    assert not keys.filter(missing_since__isnull=False).exists()
