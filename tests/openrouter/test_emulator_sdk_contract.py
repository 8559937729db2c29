"""Contract tests: OpenRouter's official Python SDK reads every endpoint of the emulator.

The SDK runs in its own isolated interpreter (see openrouter/emulator/sdk_probe.py: this project's
Django app is also named `openrouter` and hides the SDK here) against the emulator served on loopback.
Any pydantic validation error of the SDK fails the check that met it.
"""

import datetime
from decimal import Decimal

import pytest

from openrouter.emulator import Emulator, EmulatorConfig, Fault
from openrouter.emulator.sdk_probe import run_probe

TODAY = datetime.date(2026, 11, 24)
CHECKS = [
    "current_key_management",
    "current_key_normal",
    "keys_default",
    "keys_all_workspaces",
    "key_get",
    "activity",
    "activity_by_workspace",
    "activity_filters",
    "credits",
    "workspaces",
    "members",
    "models",
    "errors",
]


@pytest.fixture(scope="module")
def emu():
    # More than 100 keys in the default workspace, so the SDK pages through /keys.
    return Emulator(EmulatorConfig(seed=11, keys=240, workspaces=3, members=5, today=TODAY))


@pytest.fixture(scope="module")
def report(emu):
    with emu.serve() as server:
        return run_probe(server.base_url, emu.management_key, emu.normal_key)


def money(text):
    # The SDK parses money as float; repr() of a value with <= 10 decimals gives back the exact decimal.
    return Decimal(text)


@pytest.mark.parametrize("check", CHECKS)
def test_sdk_reads_endpoint_without_validation_error(report, check):
    assert report[check]["ok"], report[check].get("trace") or report[check]


def test_sdk_pages_through_every_key_once(emu, report):
    hashes = [k["hash"] for k in report["keys_all_workspaces"]["keys"]]
    assert len(hashes) == len(set(hashes))
    assert set(hashes) == {k["hash"] for k in emu.truth.listed_keys()}
    default = report["keys_default"]
    assert default["pages"] >= 3  # two pages of keys and the empty one
    default_id = emu.truth.workspaces()[0]["id"]
    assert {k["workspace_id"] for k in default["keys"]} == {default_id}


def test_sdk_money_is_exact(emu, report):
    truth = {k["hash"]: k for k in emu.truth.listed_keys()}
    for key in report["keys_all_workspaces"]["keys"]:
        assert money(key["usage"]) == truth[key["hash"]]["usage"]
        assert money(key["byok_usage"]) == truth[key["hash"]]["byok_usage"]
    credits = emu.truth.credits()
    assert money(report["credits"]["total_usage"]) == credits["total_usage"]
    assert money(report["credits"]["total_credits"]) == credits["total_credits"]
    normal = next(emu.truth.listed_keys())
    assert money(report["current_key_normal"]["usage"]) == normal["usage"]


def test_sdk_activity_agrees_with_truth(emu, report):
    window = emu.truth.activity_window()
    total = emu.truth.activity_total(*window)
    activity = report["activity"]
    assert sum(map(money, activity["usage"])) == total
    assert sum(map(money, report["activity_by_workspace"]["usage"])) == total
    assert len(activity["dates"]) == 30 and activity["dates"][-1] == str(TODAY - datetime.timedelta(days=1))
    assert not any(activity["has_workspace_field"]) and all(
        report["activity_by_workspace"]["has_workspace_field"]
    )
    assert any(money(v) > 0 for v in activity["byok_usage_inference"])
    filters = report["activity_filters"]
    assert filters["by_date"]["dates"] == [filters["date"]]
    assert sum(sum(map(money, r["usage"])) for r in filters["by_workspace"].values()) == total
    assert sum(sum(map(money, r["usage"])) for r in filters["by_user"].values()) == total
    key_total = emu.truth.activity_total(*window, api_key_hash=filters["key_hash"])
    assert sum(map(money, filters["by_key"]["usage"])) == key_total


def test_sdk_lists_workspaces_members_and_models(emu, report):
    assert report["workspaces"]["ids"] == [w["id"] for w in emu.truth.workspaces()]
    assert report["workspaces"]["total_count"] == 3
    assert report["members"]["ids"] == [m["id"] for m in emu.truth.members()]
    models = report["models"]["models"]
    assert len(models) == 12 and all(Decimal(prompt) > 0 for prompt, _, _ in models.values())


def test_sdk_sees_openrouter_errors(report):
    errors = report["errors"]
    for name in ("normal_keys", "normal_key_get", "wrong_key", "wrong_key_list"):
        assert errors[name]["exception"] == "UnauthorizedResponseError" and errors[name]["code"] == 401, name
    for name in ("normal_activity", "normal_credits", "normal_workspaces", "normal_members"):
        assert errors[name]["exception"] == "ForbiddenResponseError" and errors[name]["code"] == 403, name
    assert errors["missing_key"]["exception"] == "NotFoundResponseError"
    assert errors["normal_models"]["exception"] is None


def test_sdk_ignores_extra_fields_and_rejects_missing_ones():
    emu = Emulator(EmulatorConfig(seed=12, keys=20, today=TODAY))
    emu.faults.add(Fault(path=r"^/(?!credits)", extra_field={"x_unknown_future_field": {"a": [1, 2]}}))
    emu.faults.add(Fault(path="/credits", drop_field="total_usage"))
    with emu.serve() as server:
        result = run_probe(
            server.base_url,
            emu.management_key,
            emu.normal_key,
            ["current_key_normal", "keys_default", "activity", "workspaces", "models", "credits"],
        )
    for check in ("current_key_normal", "keys_default", "activity", "workspaces", "models"):
        assert result[check]["ok"], result[check]
    assert not result["credits"]["ok"]
    assert result["credits"]["error"].startswith("ResponseValidationError")
