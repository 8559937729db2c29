"""The emulator's HTTP behaviour: authentication, fault injection, request log, server and command."""

import datetime
import email.utils
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from openrouter.emulator import Emulator, EmulatorConfig, Fault

TODAY = datetime.date(2026, 11, 24)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MANAGEMENT_PATHS = ["/keys", "/activity", "/credits", "/workspaces", "/organization/members"]


@pytest.fixture
def emu():
    return Emulator(EmulatorConfig(seed=21, keys=30, today=TODAY))


def client(emu, key=None, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(
        transport=emu.transport(), base_url="http://emulator/api/v1", headers=headers, **kwargs
    )


def assert_error(response, status):
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == status and isinstance(body["error"]["message"], str)


# -- authentication --------------------------------------------------------------------------------------


def test_management_key_reads_everything(emu):
    http = client(emu, emu.management_key)
    for path in ["/key", "/models", *MANAGEMENT_PATHS]:
        assert http.get(path).status_code == 200, path
    assert http.get("/key").json()["data"]["is_management_key"] is True


def test_unknown_or_missing_key_is_401(emu):
    assert_error(client(emu).get("/key"), 401)
    assert_error(client(emu, "sk-or-v1-" + "ab" * 32).get("/key"), 401)
    assert_error(client(emu, "not-a-key").get("/keys"), 401)
    assert client(emu).get("/models").status_code == 200  # the model list is public


def test_normal_key_reads_only_itself(emu):
    http = client(emu, emu.normal_key)
    data = http.get("/key").json()["data"]
    assert data["is_management_key"] is False and data["is_provisioning_key"] is False
    truth = next(emu.truth.listed_keys())
    assert Decimal(str(data["usage"])) == truth["usage"] and data["label"] == truth["label"]
    assert_error(http.get("/keys"), 401)
    assert_error(http.get(f"/keys/{truth['hash']}"), 401)
    for path in ["/activity", "/credits", "/workspaces", "/organization/members"]:
        assert_error(http.get(path), 403)


def test_each_key_secret_sees_its_own_counters(emu):
    seen = 0
    for key in emu.truth.listed_keys():
        response = client(emu, emu.key_secret(key["hash"])).get("/key")
        expired = key["expires_at"] and key["expires_at"] <= TODAY.isoformat()
        if key["disabled"] or expired:
            assert_error(response, 401)
            continue
        data = response.json()["data"]
        assert (
            data["workspace_id"] == key["workspace_id"] and data["creator_user_id"] == key["creator_user_id"]
        )
        assert Decimal(str(data["usage_monthly"])) == key["usage_monthly"]
        seen += 1
    assert seen > 10


def test_revoked_keys_are_refused(emu):
    normal = client(emu, emu.normal_key)
    assert normal.get("/key").status_code == 200
    emu.revoke(emu.normal_key)
    assert_error(normal.get("/key"), 401)
    emu.revoke(emu.management_key)
    assert_error(client(emu, emu.management_key).get("/credits"), 401)


def test_a_deleted_key_leaves_the_listings_and_answers_404_but_its_usage_stays(emu):
    http = client(emu, emu.management_key)
    listing = {"include_disabled": "true", "include_expired": "true"}
    first = http.get("/keys", params=listing).json()["data"][0]["hash"]
    credits_before, activity_before = http.get("/credits").json(), http.get("/activity").json()

    emu.delete_key(first)

    assert first not in {key["hash"] for key in http.get("/keys", params=listing).json()["data"]}
    assert first not in {key["hash"] for key in emu.truth.listed_keys()}
    assert_error(http.get(f"/keys/{first}"), 404)
    assert http.get("/credits").json() == credits_before
    assert http.get("/activity").json() == activity_before


def test_unknown_things_are_404_and_bad_parameters_400(emu):
    http = client(emu, emu.management_key)
    assert_error(http.get("/keys/" + "0" * 64), 404)
    assert_error(http.get("/nope"), 404)
    assert_error(http.get("/keys", params={"workspace_id": "no-such-workspace"}), 404)
    assert_error(http.get("/keys", params={"offset": "-1"}), 400)
    assert_error(http.get("/activity", params={"date": "24/11/2026"}), 400)
    assert_error(http.get("/activity", params={"group_by": "model"}), 400)
    assert_error(http.get("/workspaces", params={"limit": 101}), 400)
    assert_error(http.post("/keys"), 405)


def test_workspaces_and_members_paginate_with_total_count():
    emu = Emulator(EmulatorConfig(seed=2, keys=10, workspaces=7, members=9, today=TODAY))
    http = client(emu, emu.management_key)
    for path, total in [("/workspaces", 7), ("/organization/members", 9)]:
        seen, offset = [], 0
        while True:
            body = http.get(path, params={"offset": offset, "limit": 4}).json()
            assert body["total_count"] == total
            if not body["data"]:
                break
            seen.extend(item["id"] for item in body["data"])
            offset += len(body["data"])
        assert len(seen) == len(set(seen)) == total
    assert len(http.get("/organization/members").json()["data"]) == 9  # default limit 50


# -- faults ----------------------------------------------------------------------------------------------


def test_status_faults_carry_openrouter_error_bodies(emu):
    http = client(emu, emu.management_key)
    for status in (500, 502, 503):
        emu.faults.add(Fault(path="/credits", status=status, times=1))
        assert_error(http.get("/credits"), status)
        assert http.get("/credits").status_code == 200
    emu.faults.add(
        Fault(path="/credits", status=503, body={"custom": True}, headers={"X-Why": "test"}, times=1)
    )
    response = http.get("/credits")
    assert response.json() == {"custom": True} and response.headers["X-Why"] == "test"


def test_rate_limit_with_retry_after_seconds_or_http_date(emu):
    http = client(emu, emu.management_key)
    emu.faults.add(Fault(path="/activity", status=429, retry_after="7", times=1))
    response = http.get("/activity")
    assert_error(response, 429)
    assert response.headers["Retry-After"] == "7"
    when = email.utils.format_datetime(
        datetime.datetime(2026, 11, 24, 12, 0, 5, tzinfo=datetime.UTC), usegmt=True
    )
    emu.faults.add(Fault(path="/activity", retry_after=when, times=1))  # retry_after alone means 429
    response = http.get("/activity")
    assert response.status_code == 429 and response.headers["Retry-After"] == when
    assert http.get("/activity").status_code == 200


def test_latency_per_request_and_per_run():
    emu = Emulator(EmulatorConfig(seed=1, keys=5, today=TODAY, latency=0.05))
    http = client(emu, emu.management_key)
    emu.faults.add(Fault(path="/keys", latency=0.2))
    started = time.perf_counter()
    http.get("/keys")
    assert time.perf_counter() - started >= 0.25
    started = time.perf_counter()
    http.get("/credits")
    assert 0.05 <= time.perf_counter() - started < 0.2


def test_hang_times_out_in_process(emu):
    emu.faults.add(Fault(path="/activity", hang=True, times=1))
    http = client(emu, emu.management_key)
    with pytest.raises(httpx.ReadTimeout):
        http.get("/activity")
    assert http.get("/activity").status_code == 200
    assert emu.request_log[0].status == 0


def test_truncated_and_non_json_bodies(emu):
    http = client(emu, emu.management_key)
    emu.faults.add(Fault(path="/keys", truncate=True, times=1))
    response = http.get("/keys")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    emu.faults.add(Fault(path="/credits", non_json=True, status=502, times=1))
    response = http.get("/credits")
    assert response.status_code == 502 and response.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_missing_and_extra_fields(emu):
    http = client(emu, emu.management_key)
    emu.faults.add(Fault(path="/keys", drop_field="usage", times=1))
    keys = http.get("/keys").json()["data"]
    assert keys and all("usage" not in k and "usage_daily" in k for k in keys)
    emu.faults.add(Fault(path="/credits", extra_field={"x_new": {"nested": 1}}, times=1))
    assert http.get("/credits").json()["data"]["x_new"] == {"nested": 1}
    assert "x_new" not in http.get("/credits").json()["data"]


def test_a_page_that_fails_once_then_succeeds():
    emu = Emulator(EmulatorConfig(seed=3, keys=250, today=TODAY))
    http = client(emu, emu.management_key)
    emu.faults.add(Fault(path="/keys", query={"offset": 100}, status=500, times=1))
    assert http.get("/keys", params={"offset": 0}).status_code == 200
    assert http.get("/keys", params={"offset": 100}).status_code == 500
    assert http.get("/keys", params={"offset": 100}).status_code == 200


def test_path_patterns_and_methods(emu):
    http = client(emu, emu.management_key)
    emu.faults.add(Fault(path="/key", status=500))  # "/key" must not match "/keys"
    assert http.get("/keys").status_code == 200 and http.get("/key").status_code == 500
    emu.faults.clear()
    emu.faults.add(Fault(path=re.compile(r"^/keys/[0-9a-f]+$"), status=503))
    key_hash = http.get("/keys").json()["data"][0]["hash"]
    assert http.get(f"/keys/{key_hash}").status_code == 503 and http.get("/keys").status_code == 200
    emu.faults.clear()
    emu.faults.add(Fault(path="^/organization", method="POST", status=500))
    assert http.get("/organization/members").status_code == 200


def test_probability_faults_are_repeatable_per_seed():
    def outcomes():
        emu = Emulator(EmulatorConfig(seed=8, keys=5, today=TODAY))
        emu.faults.add(Fault(status=500, probability=0.3))
        http = client(emu, emu.management_key)
        return [http.get("/credits").status_code for _ in range(40)]

    first = outcomes()
    assert first == outcomes()
    assert 3 <= first.count(500) <= 25


def test_key_revoked_mid_sync(emu):
    http = client(emu, emu.management_key)
    emu.faults.add(Fault(path="/keys", revoke_after=2))
    assert [http.get("/keys").status_code for _ in range(4)] == [200, 200, 401, 401]
    assert http.get("/credits").status_code == 401  # the key itself is revoked, not just the path


# -- request log -----------------------------------------------------------------------------------------


def test_request_log_never_holds_a_key(emu):
    http = client(emu, emu.management_key)
    http.get("/keys", params={"offset": 0, "include_disabled": "true"})
    client(emu, emu.normal_key).get("/credits")
    client(emu).get("/models")
    first, second, third = emu.request_log
    assert (first.method, first.path, first.query, first.status) == (
        "GET",
        "/keys",
        {"offset": "0", "include_disabled": "true"},
        200,
    )
    assert first.key_id == hashlib.sha256(emu.management_key.encode()).hexdigest()[:8]
    assert second.status == 403 and second.key_id != first.key_id
    assert third.key_id is None
    text = repr(list(emu.request_log))
    assert emu.management_key not in text and emu.normal_key not in text
    assert [e.path for e in emu.request_log.matching(path="/keys")] == ["/keys"]
    emu.request_log.clear()
    assert len(emu.request_log) == 0


# -- server mode and the command -------------------------------------------------------------------------


def test_server_mode_serves_the_same_api(emu):
    server = emu.serve()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", server.base_url)
        headers = {"Authorization": f"Bearer {emu.management_key}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=5) as http:
            assert http.get("/credits").json() == client(emu, emu.management_key).get("/credits").json()
            emu.faults.add(Fault(path="/activity", truncate=True, times=1))
            with pytest.raises(json.JSONDecodeError):
                http.get("/activity").json()
            assert http.get("/activity").status_code == 200
    finally:
        server.shutdown()


def test_server_hang_outlasts_the_client_timeout():
    emu = Emulator(EmulatorConfig(seed=1, keys=5, today=TODAY, hang_seconds=5))
    emu.faults.add(Fault(path="/keys", hang=True, times=1))
    with emu.serve() as server:
        headers = {"Authorization": f"Bearer {emu.management_key}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                http.get("/keys")
            assert http.get("/keys").status_code == 200
        started = time.perf_counter()
    assert time.perf_counter() - started < 3  # shutdown does not wait for the hanging request


def at(day: datetime.date, hour: int, minute: int = 0) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(hour, minute), tzinfo=datetime.UTC)


def test_a_server_that_follows_the_clock_moves_on_at_midnight(monkeypatch):
    """A long-running server (the dev command) starts the next day at midnight UTC, as OpenRouter's
    window does: the day that ended becomes a completed day of /activity."""
    import openrouter.emulator.server as server_module

    emu = Emulator(EmulatorConfig(seed=21, keys=30, today=TODAY, time_of_day=datetime.time(9)))
    monkeypatch.setattr(server_module, "utc_now", lambda: at(TODAY, 9))
    headers = {"Authorization": f"Bearer {emu.management_key}"}
    with (
        emu.serve(follows_clock=True) as server,
        httpx.Client(base_url=server.base_url, headers=headers) as http,
    ):
        days = {row["date"][:10] for row in http.get("/activity").json()["data"]}
        assert emu.today == TODAY and str(TODAY) not in days
        monkeypatch.setattr(server_module, "utc_now", lambda: at(TODAY + datetime.timedelta(days=1), 0, 5))
        days = {row["date"][:10] for row in http.get("/activity").json()["data"]}
        assert emu.today == TODAY + datetime.timedelta(days=1)
        assert str(TODAY) in days and str(TODAY - datetime.timedelta(days=30)) not in days


def test_a_server_that_follows_the_clock_dates_nothing_after_it_and_counts_today_as_it_passes(monkeypatch):
    """The demo's emulator starts at 02:00 UTC: no key was last used (or created) later than the
    request's time, and today's counters and the credits' usage grow as the day goes on."""
    import openrouter.emulator.server as server_module

    emu = Emulator(EmulatorConfig(seed=21, keys=30, today=TODAY, time_of_day=datetime.time(2)))
    headers = {"Authorization": f"Bearer {emu.management_key}"}

    def read(http, now):
        monkeypatch.setattr(server_module, "utc_now", lambda: now)
        keys = http.get("/keys", params={"include_disabled": "true"}).json()["data"]
        return keys, http.get("/credits").json()["data"]["total_usage"]

    with (
        emu.serve(follows_clock=True) as server,
        httpx.Client(base_url=server.base_url, headers=headers) as http,
    ):
        early, early_usage = read(http, at(TODAY, 2, 10))
        late, late_usage = read(http, at(TODAY, 20))
    for keys, now in ((early, at(TODAY, 2, 10)), (late, at(TODAY, 20))):
        last_used = [datetime.datetime.fromisoformat(k["last_used_at"]) for k in keys if k["last_used_at"]]
        created = [datetime.datetime.fromisoformat(k["created_at"]) for k in keys]
        assert last_used and max(last_used) <= now
        assert max(created) <= at(TODAY, 2)
        assert any(used.date() == TODAY for used in last_used)
    assert {k["hash"]: k["created_at"] for k in early} == {k["hash"]: k["created_at"] for k in late}
    early_daily = sum(k["usage_daily"] for k in early)
    late_daily = sum(k["usage_daily"] for k in late)
    assert 0 < early_daily < late_daily
    # The account's usage grows with them (and with keys deleted today, which /keys no longer lists).
    assert late_usage - early_usage >= late_daily - early_daily - 1e-6
    # Each key's day so far only grows, and never past what its whole day will be.
    early_by_key = {k["hash"]: k["usage_daily"] for k in early}
    assert all(k["usage_daily"] >= early_by_key[k["hash"]] for k in late)


def test_a_server_keeps_its_day_unless_told_to_follow_the_clock(monkeypatch):
    import openrouter.emulator.server as server_module

    emu = Emulator(EmulatorConfig(seed=21, keys=30, today=TODAY))
    monkeypatch.setattr(server_module, "utc_now", lambda: at(TODAY + datetime.timedelta(days=3), 12))
    with emu.serve() as server:
        headers = {"Authorization": f"Bearer {emu.management_key}"}
        assert httpx.get(f"{server.base_url}/credits", headers=headers).status_code == 200
    assert emu.today == TODAY


def test_a_client_that_hangs_up_is_no_error_of_the_server(emu, capfd):
    """A client resetting its kept-alive connection (a killed worker) prints no traceback; the server
    goes on answering."""
    import socket
    import struct

    headers = {"Authorization": f"Bearer {emu.management_key}"}
    with emu.serve() as server:
        for _ in range(3):
            with socket.create_connection((server.host, server.port)) as sock:
                sock.sendall(b"GET /api/v1/credits HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.recv(65536)
                # SO_LINGER with a zero timeout: close() sends RST, as the kernel does for a killed process.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert httpx.get(f"{server.base_url}/credits", headers=headers).status_code == 200
    assert "Traceback" not in capfd.readouterr().err


def test_management_command_serves_until_interrupted():
    env = {**os.environ, "DEBUG": "true", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "manage.py",
        "openrouter_emulator",
        "--port",
        "0",
        "--seed",
        "1",
        "--keys",
        "12",
    ]
    command += ["--today", "2026-11-24"]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        base_url = re.search(r"(http://127\.0\.0\.1:\d+/api/v1)", lines[0]).group(1)
        management_key = lines[1].split()[-1]
        normal_key = lines[2].split()[-1]
        expected = Emulator(EmulatorConfig(seed=1, keys=12, today=TODAY))
        assert (management_key, normal_key) == (expected.management_key, expected.normal_key)
        response = httpx.get(f"{base_url}/credits", headers={"Authorization": f"Bearer {management_key}"})
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
