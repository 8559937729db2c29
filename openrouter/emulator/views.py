"""Objects in OpenRouter's wire shape, money as Decimal (the API writes them as JSON numbers).

Shared by the HTTP handlers and by `Truth`, so what tests reconcile against is exactly what was served.
"""

from __future__ import annotations

import datetime

from . import rng
from .generator import Counters, KeyProfile, Member, Workspace, World
from .money import to_decimal

_PERIOD_FIELD = {None: "usage", "daily": "usage_daily", "weekly": "usage_weekly", "monthly": "usage_monthly"}


def iso(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return (
        moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def label(secret: str) -> str:
    # OpenRouter labels a key by a masked form of it, never the key itself.
    return f"{secret[:12]}...{secret[-3:]}"


def _limit_spend(p: KeyProfile, c: Counters) -> int:
    field = _PERIOD_FIELD[p.limit_reset]
    spend = getattr(c, field)
    if p.include_byok_in_limit:
        spend += getattr(c, "byok_" + field)
    return spend


def _next_reset(p: KeyProfile, today: datetime.date) -> datetime.datetime | None:
    if p.limit_reset == "daily":
        day = today + datetime.timedelta(days=1)
    elif p.limit_reset == "weekly":
        day = today + datetime.timedelta(days=7 - today.weekday())
    elif p.limit_reset == "monthly":
        day = (today.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
    else:
        return None
    return datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)


def _money_counters(c: Counters) -> dict:
    return {
        "usage": to_decimal(c.usage),
        "usage_daily": to_decimal(c.usage_daily),
        "usage_weekly": to_decimal(c.usage_weekly),
        "usage_monthly": to_decimal(c.usage_monthly),
        "byok_usage": to_decimal(c.byok_usage),
        "byok_usage_daily": to_decimal(c.byok_usage_daily),
        "byok_usage_weekly": to_decimal(c.byok_usage_weekly),
        "byok_usage_monthly": to_decimal(c.byok_usage_monthly),
    }


def _limit_fields(p: KeyProfile, c: Counters) -> dict:
    remaining = None
    if p.limit_units is not None:
        remaining = to_decimal(max(0, p.limit_units - _limit_spend(p, c)))
    return {
        "limit": to_decimal(p.limit_units) if p.limit_units is not None else None,
        "limit_remaining": remaining,
        "limit_reset": p.limit_reset,
        "include_byok_in_limit": p.include_byok_in_limit,
    }


def api_key(world: World, p: KeyProfile, c: Counters) -> dict:
    """An element of GET /keys and the data of GET /keys/{hash}."""
    return {
        "hash": p.hash,
        "name": p.name,
        "label": label(world.key_secret(p.index)),
        "disabled": p.disabled,
        **_limit_fields(p, c),
        **_money_counters(c),
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
        "expires_at": iso(p.expires_at),
        "last_used_at": iso(c.last_used_at),
        "creator_user_id": world.members[p.member].id,
        "external_user": p.external_user,
        "workspace_id": world.workspaces[p.workspace].id,
    }


def _key_budget(p: KeyProfile, c: Counters, today: datetime.date) -> dict:
    spend = _limit_spend(p, c)
    return {
        "budget_id": None,
        "guardrail_id": None,
        "scope": "key_limit",
        "include_byok": p.include_byok_in_limit,
        "limit_usd": to_decimal(p.limit_units or 0),
        "spend_usd": to_decimal(spend),
        "remaining_usd": to_decimal(max(0, (p.limit_units or 0) - spend)),
        "reset_interval": p.limit_reset,
        "resets_at": iso(_next_reset(p, today)),
    }


_DEPRECATED_RATE_LIMIT = {
    "requests": -1,
    "interval": "10s",
    "note": "This field is deprecated and safe to ignore.",
}


def current_key(world: World, p: KeyProfile, c: Counters, today: datetime.date) -> dict:
    """GET /key for a normal API key: the key's own counters."""
    budgets = [_key_budget(p, c, today)] if p.limit_units is not None else []
    return {
        "label": label(world.key_secret(p.index)),
        **_limit_fields(p, c),
        **_money_counters(c),
        "is_free_tier": False,
        "is_management_key": False,
        "is_provisioning_key": False,
        "creator_user_id": world.members[p.member].id,
        "organization_id": world.organization_id,
        "workspace_id": world.workspaces[p.workspace].id,
        "expires_at": iso(p.expires_at),
        "rate_limit": dict(_DEPRECATED_RATE_LIMIT),
        "allowed_data_regions": ["global"],
        "budgets": budgets,
        "effective_budget": budgets[0] if budgets else None,
        "free_model_daily_requests": {"limit": 1000, "used": 0, "remaining": 1000},
    }


def management_key(world: World) -> dict:
    """GET /key for the management key: it makes no model calls, so its own usage is zero."""
    zero = Counters(0, 0, 0, 0, 0, 0, 0, 0, None)
    return {
        "label": label(world.management_key),
        "limit": None,
        "limit_remaining": None,
        "limit_reset": None,
        "include_byok_in_limit": False,
        **_money_counters(zero),
        "is_free_tier": False,
        "is_management_key": True,
        "is_provisioning_key": True,
        "creator_user_id": world.members[0].id,
        "organization_id": world.organization_id,
        "workspace_id": None,
        "expires_at": None,
        "rate_limit": dict(_DEPRECATED_RATE_LIMIT),
        "allowed_data_regions": ["global"],
        "budgets": [],
        "effective_budget": None,
        "free_model_daily_requests": {"limit": 1000, "used": 0, "remaining": 1000},
    }


def workspace(world: World, w: Workspace) -> dict:
    return {
        "id": w.id,
        "name": w.name,
        "slug": w.slug,
        "description": "The account's default workspace" if w.index == 0 else f"{w.name} team workspace",
        "created_at": iso(w.created_at),
        "updated_at": iso(w.created_at),
        "created_by": w.created_by,
        "default_guardrail_id": rng.uuid_like("guardrail", world.seed, w.index),
        "default_text_model": None,
        "default_image_model": None,
        "default_provider_sort": None,
        "io_logging_api_key_ids": None,
        "io_logging_sampling_rate": 1,
        "is_data_discount_logging_enabled": False,
        "is_observability_broadcast_enabled": False,
        "is_observability_io_logging_enabled": False,
    }


def member(m: Member) -> dict:
    return {
        "id": m.id,
        "email": m.email,
        "first_name": m.first_name,
        "last_name": m.last_name,
        "role": m.role,
    }


def activity_row(world: World, day_ord: int, endpoint: int, values, workspace: int | None = None) -> dict:
    """`values` = (requests, prompt, completion, reasoning, cached, usage units, byok units)."""
    e = world.endpoints[endpoint]
    row = {
        "date": datetime.date.fromordinal(day_ord).isoformat(),
        "model": e.model.id,
        "model_permaslug": e.model.canonical_slug,
        "endpoint_id": e.endpoint_id,
        "provider_name": e.provider_name,
        "usage": to_decimal(values[5]),
        "byok_usage_inference": to_decimal(values[6]),
        "requests": values[0],
        "prompt_tokens": values[1],
        "completion_tokens": values[2],
        "reasoning_tokens": values[3],
        "cached_tokens": values[4],
    }
    if workspace is not None:
        row["workspace_id"] = world.workspaces[workspace].id
    return row
