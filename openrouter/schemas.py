"""The only module that knows OpenRouter's field names. Validates untrusted JSON into plain records.

Unknown fields are ignored (OpenRouter's schemas grow); a missing or mistyped field we rely on raises
SchemaError, and nothing partial is returned. Money arrives as JSON numbers and is parsed as Decimal
(the client parses floats as Decimal), never summed as float.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

MAX_MONEY = Decimal("1e12")
MAX_COUNT = 10**15
MAX_CONTEXT_LENGTH = 2**31 - 1  # Model.context_length's column


class SchemaError(ValueError):
    pass


# --- field readers


def _obj(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected an object")
    return value


def _data(payload, where: str):
    record = _obj(payload, where)
    if "data" not in record:
        raise SchemaError(f"{where}: missing field 'data'")
    return record["data"]


def _field(record: dict, name: str, where: str, *, optional: bool = False):
    if name not in record:
        if optional:
            return None
        raise SchemaError(f"{where}: missing field {name!r}")
    return record[name]


# Characters JSON can carry and no database stores as text: NUL and lone UTF-16 surrogates.
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    """`value` with each NUL or lone surrogate replaced by U+FFFD."""
    return UNSTORABLE_TEXT.sub("\ufffd", value)


def _str(
    record: dict,
    name: str,
    where: str,
    *,
    optional: bool = False,
    nullable: bool = False,
    max_len: int = 500,
    free_text: bool = False,
):
    """A string field. Free text (names anyone with a key can set) is made storable rather than
    refused, so that one name cannot fail every sync of its organization: NUL (\\u0000) and lone
    surrogates (\\ud800), which JSON allows and no database stores as text, become U+FFFD, and a
    name longer than its column is cut to it, ending in "…". In an identifier, which Doow sends back
    to OpenRouter, either is a broken answer."""
    value = _field(record, name, where, optional=optional)
    if value is None:
        if optional or nullable:
            return None
        raise SchemaError(f"{where}: {name} must not be null")
    if not isinstance(value, str):
        raise SchemaError(f"{where}: {name} must be a string")
    # Nearly every value is ASCII without NUL, which two cheap tests tell (a fifth of the regex's cost,
    # on every string of every activity row).
    if (not value.isascii() or "\x00" in value) and UNSTORABLE_TEXT.search(value):
        if not free_text:
            raise SchemaError(f"{where}: {name} holds a NUL character or a lone surrogate")
        value = storable_text(value)
    if len(value) > max_len:
        if not free_text:
            raise SchemaError(f"{where}: {name} is longer than {max_len} characters")
        value = value[: max_len - 1] + "…"
    return value


def _bool(record: dict, name: str, where: str, *, optional: bool = False) -> bool | None:
    value = _field(record, name, where, optional=optional)
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise SchemaError(f"{where}: {name} must be a boolean")
    return value


def _money(
    record: dict, name: str, where: str, *, optional: bool = False, nullable: bool = False
) -> Decimal | None:
    value = _field(record, name, where, optional=optional)
    if value is None:
        if optional or nullable:
            return None
        raise SchemaError(f"{where}: {name} must not be null")
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise SchemaError(f"{where}: {name} must be a number")
    try:
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise SchemaError(f"{where}: {name} is not a valid number") from None
    if not amount.is_finite() or amount.copy_abs() > MAX_MONEY:  # abs() would overflow on 1E+999999999
        raise SchemaError(f"{where}: {name} is out of range")
    return amount


def _count(record: dict, name: str, where: str, *, optional: bool = False) -> int:
    value = _field(record, name, where, optional=optional)
    if value is None and optional:
        return 0
    if isinstance(value, Decimal):
        # JSON numbers with a fraction or exponent arrive as Decimal: only a finite whole one counts.
        # int() raises on infinity and NaN.
        if not value.is_finite():
            raise SchemaError(f"{where}: {name} must be an integer")
        if value.copy_abs() > MAX_COUNT:  # first, and without abs() and rounding: 1E+999999999 overflows them
            raise SchemaError(f"{where}: {name} is out of range")
        if value != value.to_integral_value():
            raise SchemaError(f"{where}: {name} must be an integer")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"{where}: {name} must be an integer")
    if value < 0 or value > MAX_COUNT:
        raise SchemaError(f"{where}: {name} is out of range")
    return value


def _datetime(record: dict, name: str, where: str, *, optional: bool = False, nullable: bool = False):
    value = _str(record, name, where, optional=optional, nullable=nullable, max_len=64)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SchemaError(f"{where}: {name} is not an ISO date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _day(record: dict, name: str, where: str) -> date:
    value = _str(record, name, where, max_len=64)
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SchemaError(f"{where}: {name} is not a date") from None
    return (parsed.astimezone(UTC) if parsed.tzinfo else parsed).date()


def _list(payload, where: str) -> list:
    data = _data(payload, where)
    if not isinstance(data, list):
        raise SchemaError(f"{where}: data must be a list")
    return data


def _total_count(payload, where: str) -> int | None:
    if "total_count" not in payload or payload["total_count"] is None:
        return None
    return _count(payload, "total_count", where)


# --- records


def masked_key_label(label: str) -> str:
    """OpenRouter labels keys with a masked copy of the key ("sk-or-v1-0e6...1c96"). Doow keeps no
    leading piece of any key: such a label becomes "sk-or-…1c96"; any other label is kept."""
    head, sep, tail = label.partition("...")
    if sep and head.startswith("sk-") and tail and len(tail) <= 8:
        return f"sk-or-…{tail[-4:]}"
    return label


@dataclass(frozen=True)
class KeyCounters:
    usage: Decimal
    usage_daily: Decimal
    usage_weekly: Decimal
    usage_monthly: Decimal
    byok_usage: Decimal
    byok_usage_daily: Decimal
    byok_usage_weekly: Decimal
    byok_usage_monthly: Decimal


COUNTER_FIELDS = tuple(KeyCounters.__dataclass_fields__)


def _counters(record: dict, where: str) -> KeyCounters:
    return KeyCounters(**{name: _money(record, name, where) for name in COUNTER_FIELDS})


@dataclass(frozen=True)
class CurrentKey:
    label: str
    is_management_key: bool
    organization_id: str | None
    creator_user_id: str | None
    workspace_id: str | None
    limit: Decimal | None
    limit_remaining: Decimal | None
    counters: KeyCounters


def parse_current_key(payload) -> CurrentKey:
    where = "/key"
    record = _obj(_data(payload, where), where)
    management = _bool(record, "is_management_key", where, optional=True)
    if management is None:
        management = bool(_bool(record, "is_provisioning_key", where, optional=True))
    return CurrentKey(
        label=masked_key_label(_str(record, "label", where, free_text=True) or ""),
        is_management_key=management,
        organization_id=_str(record, "organization_id", where, optional=True, nullable=True),
        creator_user_id=_str(record, "creator_user_id", where, optional=True, nullable=True),
        workspace_id=_str(record, "workspace_id", where, optional=True, nullable=True),
        limit=_money(record, "limit", where, nullable=True),
        limit_remaining=_money(record, "limit_remaining", where, optional=True, nullable=True),
        counters=_counters(record, where),
    )


@dataclass(frozen=True)
class KeyRecord:
    hash: str
    name: str
    label: str
    disabled: bool
    workspace_id: str
    creator_user_id: str | None
    limit: Decimal | None
    limit_remaining: Decimal | None
    limit_reset: str | None
    created_at: datetime | None
    updated_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    counters: KeyCounters


def parse_key(record, where: str = "/keys item") -> KeyRecord:
    record = _obj(record, where)
    key_hash = _str(record, "hash", where, max_len=100)
    if not key_hash:
        raise SchemaError(f"{where}: hash must not be empty")
    return KeyRecord(
        hash=key_hash,
        name=_str(record, "name", where, max_len=300, free_text=True) or "",
        label=masked_key_label(_str(record, "label", where, max_len=300, free_text=True) or ""),
        disabled=_bool(record, "disabled", where),
        workspace_id=_str(record, "workspace_id", where, optional=True, nullable=True, max_len=100) or "",
        creator_user_id=_str(record, "creator_user_id", where, optional=True, nullable=True, max_len=100),
        limit=_money(record, "limit", where, nullable=True),
        limit_remaining=_money(record, "limit_remaining", where, optional=True, nullable=True),
        limit_reset=_str(record, "limit_reset", where, optional=True, nullable=True, max_len=40),
        created_at=_datetime(record, "created_at", where, nullable=True),
        updated_at=_datetime(record, "updated_at", where, optional=True, nullable=True),
        expires_at=_datetime(record, "expires_at", where, optional=True, nullable=True),
        last_used_at=_datetime(record, "last_used_at", where, optional=True, nullable=True),
        counters=_counters(record, where),
    )


def parse_one_key(payload) -> KeyRecord:
    return parse_key(_data(payload, "/keys/{hash}"), "/keys/{hash}")


def parse_keys(payload) -> list[KeyRecord]:
    return [parse_key(item) for item in _list(payload, "/keys")]


@dataclass(frozen=True)
class ActivityRecord:
    day: date
    model: str
    model_permaslug: str
    provider_name: str
    workspace_id: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    usage: Decimal
    byok_usage_inference: Decimal


def parse_activity(payload) -> list[ActivityRecord]:
    rows = []
    for item in _list(payload, "/activity"):
        where = "/activity item"
        record = _obj(item, where)
        model = _str(record, "model", where, max_len=200)
        rows.append(
            ActivityRecord(
                day=_day(record, "date", where),
                model=model,
                model_permaslug=_str(
                    record, "model_permaslug", where, optional=True, nullable=True, max_len=200
                )
                or model,
                provider_name=_str(record, "provider_name", where, max_len=100),
                workspace_id=_str(record, "workspace_id", where, optional=True, nullable=True, max_len=100)
                or "",
                requests=_count(record, "requests", where),
                prompt_tokens=_count(record, "prompt_tokens", where),
                completion_tokens=_count(record, "completion_tokens", where),
                reasoning_tokens=_count(record, "reasoning_tokens", where),
                cached_tokens=_count(record, "cached_tokens", where, optional=True),
                usage=_money(record, "usage", where),
                byok_usage_inference=_money(record, "byok_usage_inference", where),
            )
        )
    return rows


@dataclass(frozen=True)
class Credits:
    total_credits: Decimal
    total_usage: Decimal


def parse_credits(payload) -> Credits:
    record = _obj(_data(payload, "/credits"), "/credits")
    return Credits(
        total_credits=_money(record, "total_credits", "/credits"),
        total_usage=_money(record, "total_usage", "/credits"),
    )


@dataclass(frozen=True)
class WorkspaceRecord:
    id: str
    name: str
    slug: str
    created_at: datetime | None


def parse_workspaces(payload) -> tuple[list[WorkspaceRecord], int | None]:
    items = []
    for item in _list(payload, "/workspaces"):
        where = "/workspaces item"
        record = _obj(item, where)
        items.append(
            WorkspaceRecord(
                id=_str(record, "id", where, max_len=100),
                name=_str(record, "name", where, max_len=200, free_text=True) or "",
                slug=_str(record, "slug", where, optional=True, nullable=True, max_len=200, free_text=True)
                or "",
                created_at=_datetime(record, "created_at", where, optional=True, nullable=True),
            )
        )
    return items, _total_count(payload, "/workspaces")


@dataclass(frozen=True)
class MemberRecord:
    id: str
    email: str
    first_name: str
    last_name: str
    role: str


def parse_members(payload) -> tuple[list[MemberRecord], int | None]:
    items = []
    for item in _list(payload, "/organization/members"):
        where = "/organization/members item"
        record = _obj(item, where)
        items.append(
            MemberRecord(
                id=_str(record, "id", where, max_len=100),
                email=_str(record, "email", where, optional=True, nullable=True, max_len=254, free_text=True)
                or "",
                first_name=_str(
                    record, "first_name", where, optional=True, nullable=True, max_len=150, free_text=True
                )
                or "",
                last_name=_str(
                    record, "last_name", where, optional=True, nullable=True, max_len=150, free_text=True
                )
                or "",
                role=_str(record, "role", where, optional=True, nullable=True, max_len=50) or "",
            )
        )
    return items, _total_count(payload, "/organization/members")


@dataclass(frozen=True)
class ModelRecord:
    slug: str
    permaslug: str
    name: str
    context_length: int | None
    prompt_price: Decimal | None
    completion_price: Decimal | None


def _price(pricing: dict, name: str) -> Decimal | None:
    value = pricing.get(name)
    if value is None:
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise SchemaError(f"/models item: pricing.{name} is not a number") from None
    if not price.is_finite() or price < -1 or price > 1000:  # OpenRouter uses -1 for "variable" routers
        raise SchemaError(f"/models item: pricing.{name} is out of range")
    return price


def parse_models(payload) -> list[ModelRecord]:
    models = []
    for item in _list(payload, "/models"):
        where = "/models item"
        record = _obj(item, where)
        slug = _str(record, "id", where, max_len=200)
        pricing = _obj(record.get("pricing") or {}, "/models item pricing")
        context = record.get("context_length")
        if isinstance(context, Decimal):
            # Informational, so a value that is not a finite whole number is left unknown, not refused.
            # The range is checked first: rounding 1E+999999999 overflows, and its int() would have a
            # billion digits.
            storable = context.is_finite() and 0 <= context <= MAX_CONTEXT_LENGTH
            context = int(context) if storable and context == context.to_integral_value() else None
        models.append(
            ModelRecord(
                slug=slug,
                permaslug=_str(record, "canonical_slug", where, optional=True, nullable=True, max_len=200)
                or slug,
                name=_str(record, "name", where, max_len=300, free_text=True) or slug,
                context_length=context
                if isinstance(context, int)
                and not isinstance(context, bool)
                and 0 <= context <= MAX_CONTEXT_LENGTH
                else None,
                prompt_price=_price(pricing, "prompt"),
                completion_price=_price(pricing, "completion"),
            )
        )
    return models
