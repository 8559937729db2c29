"""Pure functions: OpenRouter records → usage row values. No I/O, no Django models."""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from openrouter.schemas import ActivityRecord

UsageKey = tuple[
    date, str, str, str, str
]  # (day, workspace_id, api_key_hash, model_permaslug, provider_name)
SUMMED = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
NAME_SORT_KEY_LENGTH = 400
_DIGIT_RUNS = re.compile(r"([0-9]+)")


@dataclass
class UsageValues:
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    spend_usd: Decimal = field(default_factory=Decimal)
    byok_spend_usd: Decimal = field(default_factory=Decimal)

    def add(self, other: "UsageValues", sign: int = 1) -> None:
        for name in SUMMED:
            setattr(self, name, getattr(self, name) + sign * getattr(other, name))
        self.spend_usd += sign * other.spend_usd
        self.byok_spend_usd += sign * other.byok_spend_usd

    def is_zero(self) -> bool:
        return (
            not any(getattr(self, name) for name in SUMMED) and not self.spend_usd and not self.byok_spend_usd
        )


def aggregate_activity(
    records: Iterable[ActivityRecord], *, api_key_hash: str = "", default_workspace: str = ""
) -> dict[UsageKey, UsageValues]:
    """Sum OpenRouter's per-endpoint rows into one row per (day, workspace, key, model, provider).

    Each row stays in the workspace OpenRouter attributes it to (asked with group_by=workspace): a
    key moved to another workspace leaves its earlier usage in the one it was spent in. A row that
    names none takes `default_workspace` (a key's current one)."""
    rows: dict[UsageKey, UsageValues] = {}
    for record in records:
        workspace = record.workspace_id or default_workspace
        key = (record.day, workspace, api_key_hash, record.model_permaslug, record.provider_name)
        values = rows.get(key)
        if values is None:
            values = rows[key] = UsageValues(model=record.model)
        values.add(
            UsageValues(
                model=record.model,
                requests=record.requests,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                reasoning_tokens=record.reasoning_tokens,
                cached_tokens=record.cached_tokens,
                spend_usd=record.usage,
                byok_spend_usd=record.byok_usage_inference,
            )
        )
    return rows


def unattributed(
    account: dict[UsageKey, UsageValues], attributed: dict[tuple[date, str, str, str], UsageValues]
) -> dict[UsageKey, UsageValues]:
    """Account-wide activity minus what listed keys account for: usage of deleted or unlisted keys.

    `account` is keyed with an empty key hash; `attributed` by (day, workspace, permaslug, provider).
    """
    remainder: dict[UsageKey, UsageValues] = {}
    for (day, workspace, _hash, permaslug, provider), values in account.items():
        rest = UsageValues(model=values.model)
        rest.add(values)
        known = attributed.get((day, workspace, permaslug, provider))
        if known is not None:
            rest.add(known, sign=-1)
        if not rest.is_zero():
            remainder[(day, workspace, "", permaslug, provider)] = rest
    # Keys' usage the account-wide figures do not show (should not happen): keep totals honest.
    for (day, workspace, permaslug, provider), known in attributed.items():
        if (day, workspace, "", permaslug, provider) not in account and not known.is_zero():
            rest = UsageValues(model=known.model)
            rest.add(known, sign=-1)
            remainder[(day, workspace, "", permaslug, provider)] = rest
    return remainder


def name_sort_key(name: str) -> str:
    """What a list of names sorts by as people read it: case-insensitive, and numbers by value, so
    "CI #9" comes before "CI #55" and "alpha" before "Zeta" (plain text order puts both the other
    way round). Each run of digits becomes its length (three digits) and the digits without leading
    zeros: a longer number sorts after a shorter one, and the length's leading "0" sorts against
    other characters exactly as the number's first digit did. Stored, so the database sorts by it."""
    parts = _DIGIT_RUNS.split(name.casefold())
    for i in range(1, len(parts), 2):
        digits = parts[i].lstrip("0") or "0"
        parts[i] = f"{len(digits):03d}{digits}"
    return "".join(parts)[:NAME_SORT_KEY_LENGTH]
