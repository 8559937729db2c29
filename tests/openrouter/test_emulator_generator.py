"""Invariants of the emulator's data generator: totals agree the way OpenRouter's do."""

import datetime
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrouter.emulator import Emulator, EmulatorConfig
from openrouter.emulator.catalog import BASE_MODELS

TODAY = datetime.date(2026, 11, 24)  # a Tuesday
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def client(emu, key=None):
    key = key or emu.management_key
    return httpx.Client(
        transport=emu.transport(),
        base_url="http://emulator/api/v1",
        headers={"Authorization": f"Bearer {key}"},
    )


def all_keys_via_api(emu):
    """Every key, the way a sync must fetch them: per workspace, disabled and expired too, page by page."""
    http = client(emu)
    keys, page_sizes = [], []
    for workspace in http.get("/workspaces", params={"limit": 100}).json()["data"]:
        offset = 0
        while True:
            params = {
                "offset": offset,
                "workspace_id": workspace["id"],
                "include_disabled": "true",
                "include_expired": "true",
            }
            page = http.get("/keys", params=params).json()["data"]
            page_sizes.append(len(page))
            if not page:
                break
            keys.extend(page)
            offset += len(page)
    return keys, page_sizes


@pytest.fixture(scope="module")
def emu():
    return Emulator(EmulatorConfig(seed=3, keys=250, today=TODAY))


def money(value):
    return Decimal(str(value))


def test_same_seed_same_organization_and_different_seed_differs():
    a = Emulator(EmulatorConfig(seed=5, keys=20, today=TODAY))
    b = Emulator(EmulatorConfig(seed=5, keys=20, today=TODAY))
    c = Emulator(EmulatorConfig(seed=6, keys=20, today=TODAY))
    assert list(a.truth.listed_keys()) == list(b.truth.listed_keys())
    window = a.truth.activity_window()
    assert list(a.truth.activity_rows(*window)) == list(b.truth.activity_rows(*window))
    assert a.management_key == b.management_key != c.management_key
    assert [k["hash"] for k in a.truth.listed_keys()] != [k["hash"] for k in c.truth.listed_keys()]


def test_key_formats():
    import hashlib

    emu = Emulator(EmulatorConfig(seed=42, keys=5, today=TODAY))
    assert emu.management_key == "sk-or-v1-" + hashlib.sha256(b"doow-emulator-management:42").hexdigest()
    for key in emu.truth.listed_keys():
        secret = emu.key_secret(key["hash"])
        assert secret.startswith("sk-or-v1-") and len(secret) == 9 + 64
        assert len(key["hash"]) == 64 and secret not in json.dumps(key, default=str)
    assert emu.normal_key == emu.key_secret(next(emu.truth.listed_keys())["hash"])


def test_defaults_match_the_issue():
    cfg = EmulatorConfig(seed=1)
    emu = Emulator(cfg)
    assert (cfg.keys, cfg.workspaces, cfg.days, cfg.models) == (50, 3, 30, 12)
    assert len({m.providers for m in emu.world.models}) >= 5
    assert 2 <= len(emu.world.members) <= 10
    assert cfg.deleted_key_count >= 1


def test_pagination_returns_every_key_exactly_once(emu):
    keys, page_sizes = all_keys_via_api(emu)
    hashes = [k["hash"] for k in keys]
    assert len(hashes) == len(set(hashes)) == emu.config.keys
    assert set(hashes) == {k["hash"] for k in emu.truth.listed_keys()}
    assert max(page_sizes) == 100  # the default workspace needs more than one page
    assert all(size <= 100 for size in page_sizes)


def test_keys_without_workspace_id_are_the_default_workspace_only(emu):
    http = client(emu)
    default_id = http.get("/workspaces").json()["data"][0]["id"]
    truth = list(emu.truth.listed_keys())
    listed = []
    offset = 0
    while page := http.get("/keys", params={"offset": offset}).json()["data"]:
        listed.extend(page)
        offset += len(page)
    assert {k["workspace_id"] for k in listed} == {default_id}
    assert not any(k["disabled"] for k in listed)
    now = datetime.datetime.combine(TODAY, datetime.time(), tzinfo=datetime.UTC)
    assert all(
        k["expires_at"] is None or datetime.datetime.fromisoformat(k["expires_at"]) > now for k in listed
    )
    expected = [
        k["hash"]
        for k in truth
        if k["workspace_id"] == default_id
        and not k["disabled"]
        and (k["expires_at"] is None or datetime.datetime.fromisoformat(k["expires_at"]) > now)
    ]
    assert [k["hash"] for k in listed] == expected
    # The other workspaces, disabled and expired keys exist and are only listed when asked for.
    assert any(k["workspace_id"] != default_id for k in truth)
    assert any(k["disabled"] for k in truth)
    assert any(k["expires_at"] and datetime.datetime.fromisoformat(k["expires_at"]) <= now for k in truth)
    with_disabled = http.get("/keys", params={"include_disabled": "true", "offset": 0}).json()["data"]
    assert any(k["disabled"] for k in with_disabled)


def test_totals_agree(emu):
    credits = emu.truth.credits()
    listed = list(emu.truth.listed_keys())
    deleted = list(emu.truth.deleted_keys())
    assert deleted and all(k["usage"] > 0 for k in deleted)  # deleted after they had usage
    all_keys_usage = sum(k["usage"] for k in listed + deleted)
    assert credits["total_usage"] == all_keys_usage
    assert credits["total_credits"] > credits["total_usage"]
    # With 30 days of history every completed day is in the /activity window, so the account's
    # activity plus today's partial usage is the all-time total.
    window = emu.truth.activity_window()
    today_partial = sum(k["usage_daily"] for k in listed + deleted)
    assert emu.truth.activity_total(*window) + today_partial == credits["total_usage"]
    # Deleted keys' spend is in the account-wide activity but in no listed key.
    listed_activity = sum(emu.truth.activity_total(*window, api_key_hash=k["hash"]) for k in listed)
    assert emu.truth.activity_total(*window) > listed_activity


def test_api_serves_the_truth(emu):
    http = client(emu)
    credits = http.get("/credits").json()["data"]
    assert money(credits["total_usage"]) == emu.truth.credits()["total_usage"]
    rows = http.get("/activity").json()["data"]
    assert sum(money(r["usage"]) for r in rows) == emu.truth.activity_total(*emu.truth.activity_window())
    keys, _ = all_keys_via_api(emu)
    truth = {k["hash"]: k for k in emu.truth.listed_keys()}
    for key in keys:
        for field in ("usage", "usage_daily", "usage_weekly", "usage_monthly", "byok_usage"):
            assert money(key[field]) == truth[key["hash"]][field]


def test_key_counters_are_sums_of_its_activity():
    emu = Emulator(EmulatorConfig(seed=9, keys=40, days=75, today=TODAY))  # history older than the window
    origin = TODAY - datetime.timedelta(days=75)
    yesterday = TODAY - datetime.timedelta(days=1)
    monday = TODAY - datetime.timedelta(days=TODAY.weekday())
    month_start = TODAY.replace(day=1)
    checked = 0
    for key in emu.truth.listed_keys():
        h = key["hash"]
        assert (
            key["usage"] == emu.truth.activity_total(origin, yesterday, api_key_hash=h) + key["usage_daily"]
        )
        assert (
            key["usage_weekly"]
            == emu.truth.activity_total(monday, yesterday, api_key_hash=h) + key["usage_daily"]
        )
        assert (
            key["usage_monthly"]
            == emu.truth.activity_total(month_start, yesterday, api_key_hash=h) + key["usage_daily"]
        )
        byok = sum(
            (r["byok_usage_inference"] for r in emu.truth.activity_rows(origin, yesterday, api_key_hash=h)),
            Decimal(0),
        )
        assert key["byok_usage"] - key["byok_usage_daily"] == byok
        if key["limit"] is not None:
            assert 0 <= key["limit_remaining"] <= key["limit"]
        checked += key["usage"] > 0
    assert checked > 10


def test_last_used_at_is_the_last_day_with_activity(emu):
    window = emu.truth.activity_window()
    for key in emu.truth.listed_keys():
        days = [r["date"] for r in emu.truth.activity_rows(*window, api_key_hash=key["hash"])]
        last = key["last_used_at"]
        if key["usage_daily"] > 0:
            assert last.startswith(TODAY.isoformat())
        elif days and not last.startswith(TODAY.isoformat()):
            assert last.startswith(max(days))
        elif not days:
            assert last is None or last.startswith(TODAY.isoformat())


def test_activity_is_priced_by_the_catalog(emu):
    prices = {m.id: (Decimal(m.prompt), Decimal(m.completion)) for m in BASE_MODELS}
    window = emu.truth.activity_window()
    byok_rows = 0
    for row in emu.truth.key_activity_rows(*window):
        prompt_price, completion_price = prices[row["model"]]
        cost = row["prompt_tokens"] * prompt_price + row["completion_tokens"] * completion_price
        assert row["cached_tokens"] <= row["prompt_tokens"]
        assert row["reasoning_tokens"] <= row["completion_tokens"]
        if row["byok_usage_inference"]:
            byok_rows += 1
            assert row["byok_usage_inference"] == cost
            assert row["usage"] == (cost / 20).quantize(Decimal("0.00000001"), rounding="ROUND_FLOOR")
        else:
            assert row["usage"] == cost
        assert -row["usage"].as_tuple().exponent <= 10
    assert byok_rows > 0


def test_activity_window_is_the_last_30_completed_days(emu):
    http = client(emu)
    rows = http.get("/activity").json()["data"]
    dates = {r["date"] for r in rows}
    first, last = TODAY - datetime.timedelta(days=30), TODAY - datetime.timedelta(days=1)
    assert dates == {(first + datetime.timedelta(days=n)).isoformat() for n in range(30)}
    assert http.get("/activity", params={"date": first.isoformat()}).status_code == 200
    assert http.get("/activity", params={"date": last.isoformat()}).status_code == 200
    for outside in (TODAY, first - datetime.timedelta(days=1)):
        response = http.get("/activity", params={"date": outside.isoformat()})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == 400
    one_day = http.get("/activity", params={"date": last.isoformat()}).json()["data"]
    assert one_day == [r for r in rows if r["date"] == last.isoformat()]


def test_several_endpoint_rows_per_day_and_model(emu):
    rows = emu.truth.activity_rows(*emu.truth.activity_window())
    per_day_model = {}
    for r in rows:
        per_day_model.setdefault((r["date"], r["model"]), set()).add(r["endpoint_id"])
    assert max(len(endpoints) for endpoints in per_day_model.values()) >= 2


def test_activity_filters_partition_the_account(emu):
    http = client(emu)
    total = sum(money(r["usage"]) for r in http.get("/activity").json()["data"])
    by_group = http.get("/activity", params={"group_by": "workspace"}).json()["data"]
    assert all("workspace_id" in r for r in by_group)
    assert "workspace_id" not in http.get("/activity").json()["data"][0]
    assert sum(money(r["usage"]) for r in by_group) == total
    workspaces = http.get("/workspaces").json()["data"]
    per_workspace = [
        sum(money(r["usage"]) for r in http.get("/activity", params={"workspace_id": w["id"]}).json()["data"])
        for w in workspaces
    ]
    assert sum(per_workspace) == total and all(per_workspace)
    members = http.get("/organization/members").json()["data"]
    per_member = [
        sum(money(r["usage"]) for r in http.get("/activity", params={"user_id": m["id"]}).json()["data"])
        for m in members
    ]
    assert sum(per_member) == total
    key = http.get("/keys").json()["data"][0]
    key_rows = http.get("/activity", params={"api_key_hash": key["hash"]}).json()["data"]
    assert key_rows and sum(money(r["usage"]) for r in key_rows) == emu.truth.activity_total(
        *emu.truth.activity_window(), api_key_hash=key["hash"]
    )


def test_deleted_keys_are_gone_but_their_spend_is_not(emu):
    http = client(emu)
    listed = {k["hash"] for k in emu.truth.listed_keys()}
    for key in emu.truth.deleted_keys():
        assert key["hash"] not in listed
        assert http.get(f"/keys/{key['hash']}").status_code == 404
        secret = emu.key_secret(key["hash"])
        assert client(emu, secret).get("/key").status_code == 401
    deleted_hash = next(emu.truth.deleted_keys())["hash"]
    rows = http.get("/activity", params={"api_key_hash": deleted_hash}).json()["data"]
    assert sum(money(r["usage"]) for r in rows) > 0


def test_moving_today_forward_completes_a_day_and_keeps_the_past():
    emu = Emulator(EmulatorConfig(seed=4, keys=60, today=TODAY))
    http = client(emu)
    before_rows = http.get("/activity").json()["data"]
    before_keys = {k["hash"]: k for k in emu.truth.listed_keys()}
    before_credits = emu.truth.credits()

    emu.set_today(TODAY + datetime.timedelta(days=1))
    assert emu.today == TODAY + datetime.timedelta(days=1)
    after_rows = http.get("/activity").json()["data"]
    dropped, added = (TODAY - datetime.timedelta(days=30)).isoformat(), TODAY.isoformat()
    assert {r["date"] for r in after_rows} - {r["date"] for r in before_rows} == {added}
    assert dropped not in {r["date"] for r in after_rows}
    # Completed days do not change when they are fetched again later.
    assert [r for r in before_rows if r["date"] != dropped] == [r for r in after_rows if r["date"] != added]
    after_keys = {k["hash"]: k for k in emu.truth.listed_keys()}
    assert sum(k["usage_daily"] for k in after_keys.values()) != sum(
        k["usage_daily"] for k in before_keys.values()
    )
    assert all(after_keys[h]["usage"] >= k["usage"] for h, k in before_keys.items() if h in after_keys)
    assert emu.truth.credits()["total_usage"] > before_credits["total_usage"]
    # Yesterday's full day is at least what had happened of it when it was "today".
    for h, key in before_keys.items():
        if h in after_keys:
            day = emu.truth.activity_total(TODAY, TODAY, api_key_hash=h)
            assert day >= key["usage_daily"]

    # A fresh emulator created at the later date agrees on every past day.
    later = Emulator(EmulatorConfig(seed=4, keys=60, today=TODAY))
    later.set_today(TODAY + datetime.timedelta(days=1))
    assert list(later.truth.activity_rows(*later.truth.activity_window())) == after_rows_decimal(emu)


def after_rows_decimal(emu):
    return list(emu.truth.activity_rows(*emu.truth.activity_window()))


def test_large_organization_is_lazy():
    import time

    started = time.perf_counter()
    emu = Emulator(EmulatorConfig(seed=1, keys=100_000, workspaces=8, members=40, models=30))
    http = client(emu, emu.normal_key)
    assert http.get("/key").status_code == 200
    some_key = emu.world.key_hash(77_777)
    assert client(emu).get(f"/keys/{some_key}").status_code == 200
    assert time.perf_counter() - started < 3


def test_a_million_activity_rows_stream_in_bounded_memory():
    # A child process, so its peak RSS measures the generator alone (tracemalloc would slow it tenfold).
    code = """
import json
from openrouter.emulator import Emulator, EmulatorConfig
emu = Emulator(EmulatorConfig(seed=2, keys=80_000, days=30))
first, last = emu.truth.activity_window()
count = 0
for row in emu.truth.key_activity_rows(first, last):
    count += 1
    if count >= 1_000_000:
        break
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (a big pytest process).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": count, "max_rss_mb": peak_kb / 1024}))
"""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=PROJECT_ROOT
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rows"] == 1_000_000
    assert result["max_rss_mb"] < 150, result


def test_workspace_and_user_filters_combine(emu):
    http = client(emu)
    window = emu.truth.activity_window()
    workspaces = [w["id"] for w in emu.truth.workspaces()]
    members = [m["id"] for m in emu.truth.members()]
    grand_total = Decimal(0)
    for workspace_id in workspaces:
        for user_id in members:
            params = {"workspace_id": workspace_id, "user_id": user_id}
            rows = http.get("/activity", params=params).json()["data"]
            expected = sum(
                (
                    emu.truth.activity_total(*window, api_key_hash=k["hash"])
                    for k in [*emu.truth.listed_keys(), *emu.truth.deleted_keys()]
                    if k["workspace_id"] == workspace_id and k["creator_user_id"] == user_id
                ),
                Decimal(0),
            )
            assert sum(money(r["usage"]) for r in rows) == expected
            grand_total += expected
        grouped = http.get("/activity", params={"user_id": members[0], "group_by": "workspace"}).json()[
            "data"
        ]
        assert all("workspace_id" in r for r in grouped)
    assert grand_total == emu.truth.activity_total(*window)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    keys=st.integers(1, 160),
    workspaces=st.integers(1, 5),
    members=st.integers(1, 6),
    days=st.integers(1, 40),
)
def test_any_organization_paginates_and_adds_up(seed, keys, workspaces, members, days):
    emu = Emulator(
        EmulatorConfig(seed=seed, keys=keys, workspaces=workspaces, members=members, days=days, today=TODAY)
    )
    listed, _ = all_keys_via_api(emu)
    hashes = [k["hash"] for k in listed]
    assert len(hashes) == len(set(hashes)) == keys
    deleted = list(emu.truth.deleted_keys())
    truth = {k["hash"]: k for k in emu.truth.listed_keys()}
    assert sum(money(k["usage"]) for k in listed) == sum(k["usage"] for k in truth.values())
    assert emu.truth.credits()["total_usage"] == sum(k["usage"] for k in [*truth.values(), *deleted])


def test_timestamps_are_coherent(emu):
    now = emu.world.now(TODAY.toordinal())
    for key in [*emu.truth.listed_keys(), *emu.truth.deleted_keys()]:
        created = datetime.datetime.fromisoformat(key["created_at"])
        assert created < now
        for field in ("updated_at", "last_used_at", "deleted_at"):
            if key.get(field):
                assert created <= datetime.datetime.fromisoformat(key[field]) < now, (field, key)
