"""Reading /keys page by page: OpenRouter documents no page size and says to read until an empty
page. A first sync does exactly that; later syncs take a short page as the end only when that is
provably safe, and read on to the empty page before any key is marked deleted."""

import math
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum

from openrouter.emulator import Emulator, EmulatorConfig
from openrouter.models import ApiKey
from openrouter.sync import PAGE_SIZE_CONFIG
from tests.support import TODAY, connect, sync, usage_snapshot
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db
PAGE = 5


@pytest.fixture
def emulator():
    return Emulator(EmulatorConfig(seed=7, keys=24, today=TODAY, keys_page_size=PAGE))


@pytest.fixture
def connection(acme, emulator):
    return connect(acme, emulator)


def listed_per_workspace(emulator) -> dict[str, int]:
    return {w["id"]: sum(1 for _ in emulator.truth.listed_keys(w["id"])) for w in emulator.truth.workspaces()}


def key_requests(emulator) -> int:
    return len(emulator.request_log.matching("/keys"))


def test_a_first_sync_reads_every_listing_to_its_empty_page_and_remembers_the_page_size(connection, emulator):
    assert sync(connection, emulator).status == "succeeded"

    listed = listed_per_workspace(emulator)
    # Every page, then one empty page per workspace: the documented end of a listing.
    assert key_requests(emulator) == sum(math.ceil(n / PAGE) + 1 for n in listed.values())
    connection.refresh_from_db()
    assert connection.config[PAGE_SIZE_CONFIG] == PAGE


def test_a_later_sync_takes_a_short_last_page_as_the_end(connection, emulator):
    sync(connection, emulator)
    before = usage_snapshot(connection)
    emulator.request_log.clear()

    assert sync(connection, emulator).status == "succeeded"

    listed = listed_per_workspace(emulator)
    assert any(n % PAGE for n in listed.values()), "the organization should have a short last page"
    # A full last page still needs the empty page after it: nothing says the listing ended.
    assert key_requests(emulator) == sum(n // PAGE + 1 for n in listed.values())
    assert usage_snapshot(connection) == before
    assert not ApiKey.objects.filter(connection=connection, missing_since__isnull=False).exists()


def test_a_key_gone_from_the_listings_is_confirmed_by_reading_to_the_empty_page(connection, emulator):
    sync(connection, emulator)
    workspace = emulator.truth.workspaces()[0]["id"]
    # A key Doow knows that OpenRouter no longer lists (deleted since the last sync).
    gone = ApiKey.objects.filter(connection=connection, workspace_id=workspace).first()
    gone.pk = None
    gone.key_hash = "f" * 64
    gone.last_listed_at -= timedelta(hours=1)
    gone.save()
    emulator.request_log.clear()

    sync(connection, emulator)

    listed = listed_per_workspace(emulator)
    assert key_requests(emulator) == sum(math.ceil(n / PAGE) + 1 for n in listed.values())
    gone.refresh_from_db()
    assert gone.missing_since is not None
    assert ApiKey.objects.filter(connection=connection, missing_since__isnull=True).count() == sum(
        listed.values()
    )


def test_a_remembered_page_size_larger_than_the_servers_loses_no_key(connection, emulator):
    sync(connection, emulator)
    connection.config[PAGE_SIZE_CONFIG] = 1000  # as if OpenRouter's pages had shrunk since
    connection.save(update_fields=["config"])
    emulator.set_today(emulator.today + timedelta(days=1))

    assert sync(connection, emulator).status == "succeeded"

    stored = set(
        ApiKey.objects.filter(connection=connection, missing_since__isnull=True).values_list(
            "key_hash", flat=True
        )
    )
    assert stored == {k["hash"] for k in emulator.truth.listed_keys()}
    connection.refresh_from_db()
    assert connection.config[PAGE_SIZE_CONFIG] == PAGE


def test_pages_that_shrank_while_keys_were_added_lose_no_key(acme):
    """A short page that is not the end proves the remembered size wrong for the rest of the listing:
    a later page of the new, smaller size is not taken as the end once Doow's known keys are listed."""
    emulator = Emulator(
        EmulatorConfig(seed=7, keys=24, workspaces=1, deleted_keys=0, today=TODAY, keys_page_size=PAGE)
    )
    connection = connect(acme, emulator)
    sync(connection, emulator)
    listed = [k["hash"] for k in emulator.truth.listed_keys()]
    # As if only the first 6 keys existed at the last sync, whose pages held 2 × PAGE keys.
    ApiKey.objects.filter(connection=connection).exclude(key_hash__in=listed[:6]).delete()
    connection.config[PAGE_SIZE_CONFIG] = 2 * PAGE
    connection.save(update_fields=["config"])
    emulator.set_today(emulator.today + timedelta(days=1))

    assert sync(connection, emulator).status == "succeeded"

    stored = ApiKey.objects.filter(connection=connection, missing_since__isnull=True)
    assert set(stored.values_list("key_hash", flat=True)) == set(listed)


def test_writing_in_small_batches_stores_exactly_what_one_batch_does(connection, emulator, globex, settings):
    reference_emulator = Emulator(emulator.config)
    reference = connect(globex, reference_emulator)
    sync(reference, reference_emulator)

    settings.OPENROUTER_WRITE_BATCH_KEYS = 7
    assert sync(connection, emulator).status == "succeeded"

    assert usage_snapshot(connection) == usage_snapshot(reference)
    assert (
        ApiKey.objects.filter(connection=connection).count()
        == ApiKey.objects.filter(connection=reference).count()
    )


def test_a_failure_late_in_the_listing_keeps_earlier_batches_and_the_next_run_completes(
    connection, emulator, settings
):
    from integrations.models import SyncRun
    from openrouter.emulator import Fault
    from tests.support import stored_total

    settings.OPENROUTER_WRITE_BATCH_KEYS = 7
    last_workspace = emulator.truth.workspaces()[-1]["id"]
    victim = list(emulator.truth.listed_keys(last_workspace))[-1]["hash"]
    emulator.faults.add(Fault(path="/activity", query={"api_key_hash": victim}, status=500))

    result = sync(connection, emulator)

    assert result.status == "partial"
    fetched = SyncRun.objects.get(pk=result.run_id).keys_fetched
    assert 7 <= fetched < sum(1 for _ in emulator.truth.listed_keys())
    assert (
        ApiKey.objects.filter(connection=connection, activity_fetched_through__isnull=False).count()
        == fetched
    )
    assert not ApiKey.objects.filter(connection=connection, missing_since__isnull=False).exists()

    emulator.faults.clear()
    emulator.request_log.clear()
    assert sync(connection, emulator).status == "succeeded"
    start, end = emulator.truth.activity_window()
    assert stored_total(connection) == emulator.truth.activity_total(start, end)
    per_key = [e for e in emulator.request_log.matching("/activity") if "api_key_hash" in e.query]
    assert len(per_key) == sum(1 for _ in emulator.truth.listed_keys()) - fetched


def test_a_listing_that_fails_part_way_keeps_what_was_fetched(connection, emulator):
    from openrouter.emulator import Fault
    from tests.support import stored_total

    listed = listed_per_workspace(emulator)
    workspace = max(listed, key=listed.get)
    assert listed[workspace] > PAGE
    emulator.faults.add(Fault(path="/keys", query={"workspace_id": workspace, "offset": PAGE}, status=500))

    result = sync(connection, emulator)

    assert result.status == "partial"
    fetched = ApiKey.objects.filter(connection=connection, activity_fetched_through__isnull=False)
    assert fetched.count() >= PAGE
    start, end = emulator.truth.activity_window()
    for key in fetched:
        assert stored_total(connection, api_key_hash=key.key_hash) == sum(
            (row["usage"] for row in emulator.truth.activity_rows(start, end, api_key_hash=key.key_hash)), 0
        )
    assert not ApiKey.objects.filter(connection=connection, missing_since__isnull=False).exists()

    emulator.faults.clear()
    assert sync(connection, emulator).status == "succeeded"
    assert stored_total(connection) == emulator.truth.activity_total(start, end)


def deleting_before_page(emulator, offset: int) -> httpx.MockTransport:
    """The emulator, with the first listed key deleted just before the /keys page at `offset` is
    answered, as an admin deleting a key in OpenRouter while a sync reads: every later key moves up
    one place, so the one that was first on that page is now on the page already read."""
    inner, done = emulator.transport(), []

    def answer(request: httpx.Request) -> httpx.Response:
        if (
            not done
            and request.url.path.endswith("/keys")
            and request.url.params.get("offset") == str(offset)
        ):
            done.append(next(emulator.truth.listed_keys())["hash"])
            emulator.delete_key(done[0])
        return inner.handle_request(request)

    return httpx.MockTransport(answer)


def stored_spend(connection, key_hash: str, start, end) -> Decimal:
    rows = UsageDaily.objects.filter(connection=connection, api_key_hash=key_hash, day__range=(start, end))
    return rows.aggregate(total=Sum("spend_usd"))["total"] or Decimal(0)


def deleted_keys(connection) -> set[str]:
    return set(
        ApiKey.objects.filter(connection=connection, missing_since__isnull=False).values_list(
            "key_hash", flat=True
        )
    )


def test_a_key_deleted_between_two_pages_leaves_every_other_key_listed_and_fetched(acme):
    emulator = Emulator(
        EmulatorConfig(seed=7, keys=12, workspaces=1, deleted_keys=0, today=TODAY, keys_page_size=3)
    )
    connection = connect(acme, emulator)
    sync(connection, emulator)
    emulator.set_today(emulator.today + timedelta(days=1))  # every key's activity is due again
    listed = [k["hash"] for k in emulator.truth.listed_keys()]
    deleted, skipped = listed[0], listed[3]  # `skipped` moves from the second page onto the first

    assert (
        sync(connection, emulator, transport=deleting_before_page(emulator, offset=3)).status == "succeeded"
    )

    # No page showed `skipped`: it is not taken for deleted, and its new day is fetched.
    assert deleted_keys(connection) == set()
    start, end = emulator.truth.activity_window()
    assert stored_spend(connection, skipped, start, end) == emulator.truth.activity_total(
        start, end, api_key_hash=skipped
    )
    assert emulator.request_log.matching(f"/keys/{skipped}")  # OpenRouter was asked for it
    # `deleted` was read before it went: the next sync asks for it alone, gets 404 and marks it.
    emulator.request_log.clear()
    emulator.set_today(emulator.today + timedelta(days=1))
    assert sync(connection, emulator).status == "succeeded"
    asked = [e.path for e in emulator.request_log.matching(method="GET") if e.path.startswith("/keys/")]
    assert asked == [f"/keys/{deleted}"]
    assert deleted_keys(connection) == {deleted}


class HidingAndShrinkingPages(httpx.BaseTransport):
    """The emulator's /keys, without some keys (not created yet) or in pages of `page_size` keys."""

    def __init__(self, emulator, *, hide=(), page_size=None):
        self.inner, self.hide, self.page_size = emulator.transport(), set(hide), page_size

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if request.url.path == "/api/v1/keys" and response.status_code == 200:
            keys = [k for k in response.json()["data"] if k["hash"] not in self.hide]
            return httpx.Response(200, json={"data": keys[: self.page_size]}, request=request)
        return response


def test_a_listings_only_page_is_not_taken_for_the_page_size(acme):
    """Every listing fit on one page, so no page size was proven: the largest listing (11 keys) once
    became the remembered size, and pages of 9 then ended a listing before its new key."""
    emulator = Emulator(EmulatorConfig(seed=7, keys=24, today=TODAY))
    default = emulator.world.workspaces[0].id
    default_keys = [k["hash"] for k in emulator.truth.listed_keys() if k["workspace_id"] == default]
    assert len(default_keys) == 10
    connection = connect(acme, emulator)
    # The first sync: the default workspace's two last keys do not exist yet.
    first = sync(connection, emulator, transport=HidingAndShrinkingPages(emulator, hide=default_keys[-2:]))
    assert first.status == "succeeded"
    connection.refresh_from_db()
    assert PAGE_SIZE_CONFIG not in connection.config

    # Both exist now, and OpenRouter serves pages of 9 keys.
    second = sync(connection, emulator, transport=HidingAndShrinkingPages(emulator, page_size=9))

    assert second.status == "succeeded"
    assert set(default_keys) <= set(
        ApiKey.objects.filter(connection=connection).values_list("key_hash", flat=True)
    )
    connection.refresh_from_db()
    assert connection.config[PAGE_SIZE_CONFIG] == 9
