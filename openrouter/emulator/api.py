"""Routing, authentication and the endpoints of OpenRouter's management API (paths below /api/v1)."""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING

from . import catalog, money, views

if TYPE_CHECKING:
    from .emulator import Emulator

ACTIVITY_WINDOW_DAYS = 30  # OpenRouter serves the last 30 completed UTC days
MAX_LIST_LIMIT = 100


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> dict:
    return {"error": {"code": status, "message": message}}


MANAGEMENT = "management"
_ONLY_MANAGEMENT = "Only management keys can perform this operation"


def authenticate(emu: Emulator, secret: str | None) -> str | int:
    """MANAGEMENT, or the index of the normal key; raises ApiError(401) otherwise."""
    if not secret:
        raise ApiError(401, "No auth credentials found")
    if secret in emu.revoked:
        raise ApiError(401, "User not found.")
    if emu.is_management_key(secret):
        return MANAGEMENT
    i = emu.world.index_of_secret(secret)
    if i is None or i >= emu.world.listed_count:  # deleted keys are gone
        raise ApiError(401, "User not found.")
    p = emu.world.profile(i)
    if p.created_ord > emu.today_ord:
        raise ApiError(401, "User not found.")
    if p.disabled:
        raise ApiError(401, "API key is disabled")
    if p.expiry_ord and p.expiry_ord <= emu.today_ord:
        raise ApiError(401, "API key has expired")
    return i


def require_management(caller: str | int, status: int) -> None:
    # The SDK's schemas give /keys a 401 and the organisation-wide reads a 403 for non-management keys.
    if caller != MANAGEMENT:
        raise ApiError(status, _ONLY_MANAGEMENT)


def _bool(query: dict[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None:
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0", ""):
        return False
    raise ApiError(400, f"Invalid value for {name}: expected a boolean")


def _int(query: dict[str, str], name: str, default: int, low: int = 0, high: int | None = None) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"Invalid value for {name}: expected an integer") from None
    if number < low or (high is not None and number > high):
        raise ApiError(400, f"Invalid value for {name}: out of range")
    return number


def _workspace(emu: Emulator, query: dict[str, str]) -> int | None:
    workspace_id = query.get("workspace_id")
    if workspace_id is None:
        return None
    index = emu.world.workspace_index(workspace_id)
    if index is None:
        raise ApiError(404, "Workspace not found")
    return index


def get_key(emu: Emulator, caller: str | int, query: dict[str, str]) -> dict:
    if caller == MANAGEMENT:
        return {"data": views.management_key(emu.world)}
    p = emu.world.profile(caller)
    return {"data": views.current_key(emu.world, p, emu.counters(caller), emu.today)}


def list_keys(emu: Emulator, caller: str | int, query: dict[str, str]) -> dict:
    require_management(caller, 401)
    offset = _int(query, "offset", 0)
    workspace = _workspace(emu, query)
    indexes = emu.listed_indexes(
        0 if workspace is None else workspace,  # no workspace_id: the default workspace only
        _bool(query, "include_disabled"),
        _bool(query, "include_expired"),
    )
    page = indexes[offset : offset + emu.config.keys_page_size]
    return {"data": [emu.api_key(i) for i in page]}


def get_key_by_hash(emu: Emulator, caller: str | int, query: dict[str, str], key_hash: str) -> dict:
    require_management(caller, 401)
    i = emu.world.index_of_hash(key_hash)
    if (
        i is None
        or i >= emu.world.listed_count
        or i in emu.removed_keys
        or emu.world.profile(i).created_ord > emu.today_ord
    ):
        raise ApiError(404, "API key not found")
    return {"data": emu.api_key(i)}


def activity_window(today_ord: int) -> tuple[int, int]:
    return today_ord - ACTIVITY_WINDOW_DAYS, today_ord - 1


def get_activity(emu: Emulator, caller: str | int, query: dict[str, str]) -> dict:
    require_management(caller, 403)
    first, last = activity_window(emu.today_ord)
    if "date" in query:
        try:
            day = datetime.date.fromisoformat(query["date"])
        except ValueError:
            raise ApiError(400, "Invalid date: expected YYYY-MM-DD") from None
        if not first <= day.toordinal() <= last:
            raise ApiError(400, "Date must be within the last 30 completed UTC days")
        first = last = day.toordinal()
    group_by = query.get("group_by")
    if group_by not in (None, "workspace"):
        raise ApiError(400, "Invalid group_by: only 'workspace' is supported")
    key_index = None
    if "api_key_hash" in query:
        key_index = emu.world.index_of_hash(query["api_key_hash"])
        if key_index is None:
            raise ApiError(404, "API key not found")
    member = None
    if "user_id" in query:
        member = emu.world.member_index(query["user_id"])
        if member is None:
            return {"data": []}
    rows = emu.activity(first, last, key_index, _workspace(emu, query), member, group_by == "workspace")
    return {"data": rows}


def get_credits(emu: Emulator, caller: str | int, query: dict[str, str]) -> dict:
    require_management(caller, 403)
    total_credits, total_usage = emu.credits_units()
    return {
        "data": {
            "total_credits": money.to_decimal(total_credits),
            "total_usage": money.to_decimal(total_usage),
        }
    }


def _paged(query: dict[str, str], items: list[dict]) -> dict:
    offset = _int(query, "offset", 0)
    limit = _int(query, "limit", 50, low=1, high=MAX_LIST_LIMIT)
    return {"data": items[offset : offset + limit], "total_count": len(items)}


def list_workspaces(emu: Emulator, caller: str | int, query: dict[str, str]) -> dict:
    require_management(caller, 403)
    return _paged(query, [views.workspace(emu.world, w) for w in emu.world.workspaces])


def list_members(emu: Emulator, caller: str | int, query: dict[str, str]) -> dict:
    require_management(caller, 403)
    return _paged(query, [views.member(m) for m in emu.world.members])


def list_models(emu: Emulator, query: dict[str, str]) -> dict:
    models = [catalog.api_model(m) for m in emu.world.models]
    offset = _int(query, "offset", 0)
    limit = _int(query, "limit", len(models) or 1, low=1)
    return {"data": models[offset : offset + limit], "total_count": len(models), "links": {"next": None}}


_KEY_HASH_PATH = re.compile(r"^/keys/([^/]+)$")
_ROUTES = {
    "/key": get_key,
    "/keys": list_keys,
    "/activity": get_activity,
    "/credits": get_credits,
    "/workspaces": list_workspaces,
    "/organization/members": list_members,
}


def dispatch(emu: Emulator, method: str, path: str, query: dict[str, str], secret: str | None) -> dict:
    """The JSON body of a successful response; raises ApiError for anything else."""
    path = path.rstrip("/") or "/"
    known = path in _ROUTES or path == "/models" or _KEY_HASH_PATH.match(path)
    if not known:
        raise ApiError(404, "Not Found")
    if method != "GET":
        raise ApiError(405, "Method Not Allowed")
    if path == "/models":  # public, like OpenRouter's model list
        return list_models(emu, query)
    caller = authenticate(emu, secret)
    match = _KEY_HASH_PATH.match(path)
    if match:
        return get_key_by_hash(emu, caller, query, match.group(1))
    return _ROUTES[path](emu, caller, query)
