"""The emulated organization: workspaces, members, keys and their day-by-day activity.

Everything is a pure function of the seed: a key's profile of (seed, key index), a key's activity of
(seed, key index, day). Nothing is materialised per row; account-wide figures come from one streaming
pass per emulated "today" (see Snapshot), which keeps only aggregates and ten integers per key.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import threading
from array import array
from collections.abc import Callable, Iterator

from . import catalog, money, rng
from .config import EmulatorConfig

UTC = datetime.UTC
NEVER = 10**9  # an ordinal after every real date: "activity never stops"

_TAG_PROFILE, _TAG_DAY, _TAG_PARTIAL, _TAG_MEMBER, _TAG_WORKSPACE, _TAG_ORG = range(1, 7)

_FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Guido",
    "Katherine",
    "Donald",
    "Hedy",
    "John",
    "Sophie",
    "Tim",
    "Joan",
    "Bjarne",
)
_LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Rossum",
    "Johnson",
    "Knuth",
    "Lamarr",
    "Backus",
    "Wilson",
    "Berners-Lee",
    "Clarke",
    "Stroustrup",
)
_WORKSPACE_NAMES = (
    "Production",
    "Research",
    "Data Science",
    "Support Bots",
    "Marketing",
    "Internal Tools",
    "Sandbox",
    "Mobile",
    "Partners",
)
_PURPOSES = (
    "Backend",
    "Batch jobs",
    "Chat widget",
    "Eval harness",
    "Notebook",
    "CI",
    "Summariser",
    "Support agent",
    "Search",
    "Prototype",
    "Data pipeline",
    "Agent",
    "Translator",
    "Laptop",
)
_LIMITS_USD = (5, 10, 25, 50, 100, 250, 1000)
_RESETS = (None, None, "daily", "weekly", "monthly")  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Workspace:
    index: int
    id: str
    name: str
    slug: str
    created_at: datetime.datetime
    created_by: str


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    index: int
    id: str
    email: str
    first_name: str
    last_name: str
    role: str


@dataclasses.dataclass(frozen=True, slots=True)
class KeyProfile:
    index: int
    hash: str
    name: str
    workspace: int
    member: int
    created_at: datetime.datetime
    created_ord: int
    stop_ord: int  # first day with no activity (disabled, expired or deleted), NEVER if none
    disabled: bool
    updated_at: datetime.datetime | None
    expires_at: datetime.datetime | None
    expiry_ord: int  # 0 when the key never expires
    deleted_at: datetime.datetime | None
    limit_units: int | None
    limit_reset: str | None
    include_byok_in_limit: bool
    external_user: str | None
    active_threshold: int  # out of 65536: chance that the key is used on a given day
    intensity: int  # scale of requests per day and endpoint
    endpoints: tuple[int, ...]

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Counters:
    """A key's running totals as of one emulated "today", in money units (1e-8 USD)."""

    usage: int
    byok_usage: int
    usage_daily: int
    byok_usage_daily: int
    usage_weekly: int
    byok_usage_weekly: int
    usage_monthly: int
    byok_usage_monthly: int
    last_used_at: datetime.datetime | None


# An activity row of one key on one day and endpoint:
# (endpoint, requests, prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, usage, byok_usage)
Row = tuple[int, int, int, int, int, int, int, int]
ROW_FIELDS = 8
COUNTER_FIELDS = 9


def percent_of_day(moment: datetime.time) -> int:
    """Whole percent of a UTC day passed at `moment` (0..99): the emulated day moves in 1% steps."""
    return (moment.hour * 3600 + moment.minute * 60 + moment.second) // 864


def _at(ordinal: int, seconds: int = 0) -> datetime.datetime:
    day = datetime.date.fromordinal(ordinal)
    return datetime.datetime.combine(day, datetime.time(), tzinfo=UTC) + datetime.timedelta(seconds=seconds)


class World:
    def __init__(self, config: EmulatorConfig):
        self.config = config
        self.seed = config.seed
        self._key = rng.seed_key(config.seed)
        self.origin_ord = config.today.toordinal() - config.days
        self.config_today_ord = config.today.toordinal()
        self.models = catalog.build(config.models)
        self.endpoints = catalog.endpoints(self.models)
        self.listed_count = config.keys
        self.slot_count = config.keys + config.deleted_key_count
        self.organization_id = "org_" + rng.hex_id("org", self.seed, length=27)
        self.management_key = "sk-or-v1-" + rng.hex_id(f"doow-emulator-management:{self.seed}")
        self._hash_mask = int(rng.hex_id("hash-mask", self.seed, length=8), 16)
        self._secret_mask = int(rng.hex_id("secret-mask", self.seed, length=8), 16)
        self.members = tuple(self._member(i) for i in range(config.members))
        self.workspaces = tuple(self._workspace(i) for i in range(config.workspaces))
        # BYOK is configured per provider for the whole account; pick among the popular models' providers
        # so that even tiny organizations have some BYOK rows.
        providers = sorted({e.provider_name for e in self.endpoints if e.model_index < 4})
        org_rng = rng.rng(self._key, _TAG_ORG, 0)
        self.byok_providers = frozenset(org_rng.sample(providers, min(2, len(providers) - 1) or 1))
        # Per endpoint, what the hot loop needs, as a plain tuple.
        self._endpoint_facts = tuple(
            (
                e.model.prompt_units,
                e.model.completion_units,
                e.model.avg_prompt,
                e.model.avg_completion,
                e.model.reasoning,
                e.model.cache_read is not None,
                e.provider_name in self.byok_providers,
            )
            for e in self.endpoints
        )
        # (day ordinal, percent) once the emulated moment is given rather than drawn.
        self._percent_set: tuple[int, int] | None = None
        if config.time_of_day is not None:
            self.set_partial_percent(self.config_today_ord, percent_of_day(config.time_of_day))
        # Keys created today were created before the world's first moment, which later moments keep.
        self._created_today_percent = self.partial_percent(self.config_today_ord)
        self.profile = functools.lru_cache(maxsize=8192)(self._build_profile)
        self._index_lock = threading.Lock()
        self._key_index: tuple[array, array, array, array] | None = None

    # -- people and places ------------------------------------------------------------------------------

    def _member(self, i: int) -> Member:
        r = rng.rng(self._key, _TAG_MEMBER, i)
        first, last = r.choice(_FIRST_NAMES), r.choice(_LAST_NAMES)
        return Member(
            index=i,
            id="user_" + rng.hex_id("member", self.seed, i, length=27),
            email=f"{first.lower()}.{last.lower()}{i}@example.com",
            first_name=first,
            last_name=last,
            role="org:admin" if i == 0 or r.random() < 0.2 else "org:member",
        )

    def _workspace(self, i: int) -> Workspace:
        if i == 0:
            name = "Default Workspace"
        else:
            base = _WORKSPACE_NAMES[(i - 1) % len(_WORKSPACE_NAMES)]
            cycle = (i - 1) // len(_WORKSPACE_NAMES)
            name = base if cycle == 0 else f"{base} {cycle + 1}"
        r = rng.rng(self._key, _TAG_WORKSPACE, i)
        return Workspace(
            index=i,
            id=rng.uuid_like("workspace", self.seed, i),
            name=name,
            slug="default" if i == 0 else name.lower().replace(" ", "-"),
            created_at=_at(self.origin_ord - 60 + i, r.randrange(86400)),
            created_by=self.members[0 if i == 0 else r.randrange(len(self.members))].id,
        )

    def workspace_index(self, workspace_id: str) -> int | None:
        for w in self.workspaces:
            if w.id == workspace_id:
                return w.index
        return None

    def member_index(self, user_id: str) -> int | None:
        for m in self.members:
            if m.id == user_id:
                return m.index
        return None

    # -- key identity -----------------------------------------------------------------------------------

    def key_hash(self, i: int) -> str:
        # The tail encodes the index (masked) so lookups need no table even with 100k keys.
        return rng.hex_id("doow-emulator-key-hash", self.seed, i, length=56) + f"{i ^ self._hash_mask:08x}"

    def key_secret(self, i: int) -> str:
        tail = f"{i ^ self._secret_mask:08x}"
        return "sk-or-v1-" + rng.hex_id("doow-emulator-key-secret", self.seed, i, length=56) + tail

    def index_of_hash(self, key_hash: str) -> int | None:
        return self._decode(key_hash, self._hash_mask, self.key_hash)

    def index_of_secret(self, secret: str) -> int | None:
        if not secret.startswith("sk-or-v1-"):
            return None
        return self._decode(secret, self._secret_mask, self.key_secret)

    def _decode(self, text: str, mask: int, encode: Callable[[int], str]) -> int | None:
        try:
            i = int(text[-8:], 16) ^ mask
        except ValueError:
            return None
        if 0 <= i < self.slot_count and encode(i) == text:
            return i
        return None

    # -- key profiles -----------------------------------------------------------------------------------

    def _build_profile(self, i: int) -> KeyProfile:
        r = rng.rng(self._key, _TAG_PROFILE, i)
        cfg = self.config
        days, today = cfg.days, self.config_today_ord
        deleted = i >= cfg.keys
        # The first few keys carry the features tests rely on, whatever the seed.
        if i == 0:
            offset = 0
        elif deleted or i in (1, 2):
            offset = r.randrange(max(1, days - 1))
        else:
            offset = int((days + 1) * r.random() ** 1.5)  # more old keys than new ones
        created_ord = self.origin_ord + min(offset, days)
        if created_ord == today:  # created earlier today, before the emulated "now"
            created_at = _at(created_ord, r.randrange(max(60, 864 * self._created_today_percent - 120)))
        else:
            created_at = _at(created_ord, 6 * 3600 + r.randrange(12 * 3600))

        if i == 0:
            workspace = 0
        elif i == 3 and cfg.workspaces > 1:
            workspace = 1
        elif cfg.workspaces == 1 or r.random() < 0.5:
            workspace = 0
        else:
            workspace = 1 + r.randrange(cfg.workspaces - 1)

        stop_ord = NEVER
        updated_at = None
        disabled = not deleted and (i == 1 or (i > 4 and r.random() < 0.07))
        if disabled:
            disabled_ord = created_ord + r.randint(1, max(1, today - created_ord))
            disabled_ord = min(disabled_ord, today)
            stop_ord = disabled_ord
            updated_at = _at(disabled_ord, r.randrange(3600))  # just after midnight: the day has no usage
            updated_at = max(
                updated_at, created_at + datetime.timedelta(minutes=5)
            )  # disabled on creation day

        expires_at, expiry_ord = None, 0
        roll = r.random()
        if not deleted and (i == 2 or i == 4 or (i > 4 and roll < 0.12)):
            past = i == 2 or (i != 4 and roll < 0.06)
            if past and created_ord < today:
                expiry_ord = created_ord + r.randint(1, today - created_ord)
            else:
                expiry_ord = today + r.randint(1, 90)
            expires_at = _at(expiry_ord)
            stop_ord = min(stop_ord, expiry_ord)

        deleted_at = None
        if deleted:
            deleted_ord = created_ord + r.randint(1, max(1, today - created_ord))
            stop_ord = min(stop_ord, deleted_ord)
            deleted_at = _at(deleted_ord, r.randrange(3600))

        limit_units, limit_reset = None, None
        if i == 4 or (i > 4 and r.random() < 0.3):
            limit_units = money.usd_units(r.choice(_LIMITS_USD))
            limit_reset = r.choice(_RESETS)

        model_count = len(self.models)
        chosen = r.sample(range(model_count), min(model_count, 1 + r.randrange(4)))
        endpoints = tuple(e.index for e in self.endpoints if e.model_index in chosen)
        return KeyProfile(
            index=i,
            hash=self.key_hash(i),
            name=f"{r.choice(_PURPOSES)} #{i}",
            workspace=workspace,
            member=0 if i == 0 else r.randrange(len(self.members)),
            created_at=created_at,
            created_ord=created_ord,
            stop_ord=stop_ord,
            disabled=disabled,
            updated_at=updated_at,
            expires_at=expires_at,
            expiry_ord=expiry_ord,
            deleted_at=deleted_at,
            limit_units=limit_units,
            limit_reset=limit_reset,
            include_byok_in_limit=r.random() < 0.25,
            external_user=f"customer-{r.randrange(10**6):06d}" if r.random() < 0.1 else None,
            active_threshold=60000 if i == 0 else int(65536 * (0.15 + 0.8 * r.random())),
            intensity=40 if i == 0 else int(1 + 300 * r.random() ** 3),
            endpoints=endpoints,
        )

    # -- activity ---------------------------------------------------------------------------------------

    def day_rows(self, p: KeyProfile, day_ord: int) -> tuple[Row, ...]:
        """The key's usage on one day, one row per endpoint; empty when the key was idle."""
        if not (p.created_ord <= day_ord < p.stop_ord):
            return ()
        v = rng.draws(self._key, _TAG_DAY, p.index, day_ord)
        # A deleted key is always used on its first day: it "had usage" before it was deleted.
        if v[0] >= p.active_threshold and not (p.deleted_at is not None and day_ord == p.created_ord):
            return ()
        n = 1 if v[1] >= 26000 else (2 if v[1] >= 8000 else 3)
        eps = p.endpoints
        facts = self._endpoint_facts
        tokens: dict[int, list[int]] = {}
        for k in range(n):
            b = 2 + 9 * k
            ep = eps[v[b] % len(eps)]
            _, _, avg_prompt, avg_completion, reasoning, caching, _ = facts[ep]
            requests = 1 + ((p.intensity * v[b + 1]) >> 16)
            prompt = requests * ((avg_prompt * (v[b + 2] + 16384)) >> 16)
            completion = requests * ((avg_completion * (v[b + 3] + 16384)) >> 16)
            # Reasoning tokens are part of completion tokens and cached tokens part of prompt tokens (as
            # OpenRouter reports them), so the cost is simply tokens x list price.
            reasoning_tokens = (completion * v[b + 4]) >> 17 if reasoning else 0
            cached = (prompt * v[b + 5]) >> 17 if caching else 0
            acc = tokens.get(ep)
            if acc is None:
                tokens[ep] = [requests, prompt, completion, reasoning_tokens, cached]
            else:
                for j, value in enumerate((requests, prompt, completion, reasoning_tokens, cached)):
                    acc[j] += value
        rows = []
        for ep, (requests, prompt, completion, reasoning_tokens, cached) in tokens.items():
            prompt_price, completion_price, *_, byok_provider = facts[ep]
            cost = prompt * prompt_price + completion * completion_price
            if byok_provider:
                # The account brought its own key for this provider: the provider bills the inference and
                # OpenRouter charges a fee of 5% of what it would have cost (floored to the money unit).
                usage, byok = cost // 20, cost
            else:
                usage, byok = cost, 0
            rows.append((ep, requests, prompt, completion, reasoning_tokens, cached, usage, byok))
        return tuple(rows)

    def partial_percent(self, today_ord: int) -> int:
        """How much of today's generated usage has happened "so far": as set for that day (0..99 %),
        else fixed per date (5..94 %)."""
        if self._percent_set is not None and self._percent_set[0] == today_ord:
            return self._percent_set[1]
        return 5 + rng.draws(self._key, _TAG_PARTIAL, today_ord)[0] % 90

    def set_partial_percent(self, today_ord: int, percent: int) -> bool:
        """Set how much of that day has passed; True if that changed any figure of it."""
        changed = self.partial_percent(today_ord) != percent
        self._percent_set = (today_ord, percent)
        return changed

    def now(self, today_ord: int) -> datetime.datetime:
        return _at(today_ord, 864 * self.partial_percent(today_ord))

    def key_counters(
        self,
        p: KeyProfile,
        today_ord: int,
        on_rows: Callable[[int, tuple[Row, ...]], None] | None = None,
    ) -> Counters:
        """All-time, daily, weekly and monthly usage of a key; `on_rows` sees every completed day's rows."""
        today = datetime.date.fromordinal(today_ord)
        week_start = today_ord - today.weekday()
        month_start = today_ord - today.day + 1
        usage = byok = usage_week = byok_week = usage_month = byok_month = 0
        last_used_ord = None
        for d in range(p.created_ord, min(today_ord, p.stop_ord)):
            rows = self.day_rows(p, d)
            if not rows:
                continue
            if on_rows is not None:
                on_rows(d, rows)
            last_used_ord = d
            u = sum(r[6] for r in rows)
            b = sum(r[7] for r in rows)
            usage += u
            byok += b
            if d >= week_start:
                usage_week += u
                byok_week += b
            if d >= month_start:
                usage_month += u
                byok_month += b
        last_used_at = _at(last_used_ord, 17 * 3600 + p.index % 3600) if last_used_ord is not None else None
        usage_day = byok_day = 0
        today_rows = self.day_rows(p, today_ord)
        if today_rows:
            percent = self.partial_percent(today_ord)
            usage_day = sum(r[6] for r in today_rows) * percent // 100
            byok_day = sum(r[7] for r in today_rows) * percent // 100
            last_used_at = self.now(today_ord) - datetime.timedelta(seconds=1 + p.index % 600)
            last_used_at = max(last_used_at, p.created_at) if p.created_ord == today_ord else last_used_at
        return Counters(
            usage=usage + usage_day,
            byok_usage=byok + byok_day,
            usage_daily=usage_day,
            byok_usage_daily=byok_day,
            usage_weekly=usage_week + usage_day,
            byok_usage_weekly=byok_week + byok_day,
            usage_monthly=usage_month + usage_day,
            byok_usage_monthly=byok_month + byok_day,
            last_used_at=last_used_at,
        )

    def key_rows(self, p: KeyProfile, first_ord: int, last_ord: int) -> Iterator[tuple[int, Row]]:
        """(day, row) for a key over completed days in [first_ord, last_ord]."""
        for d in range(max(first_ord, p.created_ord), min(last_ord + 1, p.stop_ord)):
            for row in self.day_rows(p, d):
                yield d, row

    # -- key listing ------------------------------------------------------------------------------------

    def key_index(self) -> tuple[array, array, array, array]:
        """Compact per-key facts for filtering /keys: workspace, disabled, expiry day, creation day."""
        with self._index_lock:
            if self._key_index is None:
                workspace, disabled, expiry, created = array("l"), array("b"), array("l"), array("l")
                for i in range(self.listed_count):
                    p = self._build_profile(i)  # not through the LRU: a full scan would only thrash it
                    workspace.append(p.workspace)
                    disabled.append(p.disabled)
                    expiry.append(p.expiry_ord)
                    created.append(p.created_ord)
                self._key_index = (workspace, disabled, expiry, created)
            return self._key_index

    def listed_indexes(
        self, today_ord: int, workspace: int | None, include_disabled: bool, include_expired: bool
    ) -> array:
        ws, disabled, expiry, created = self.key_index()
        out = array("l")
        for i in range(self.listed_count):
            if workspace is not None and ws[i] != workspace:
                continue
            if created[i] > today_ord:
                continue  # not created yet at this emulated date
            if disabled[i] and not include_disabled:
                continue
            if expiry[i] and expiry[i] <= today_ord and not include_expired:
                continue
            out.append(i)
        return out


class Snapshot:
    """Account-wide figures for one "today", from a single streaming pass over every key and day.

    Memory does not grow with rows or keys beyond COUNTER_FIELDS integers per key: activity is kept summed
    per (day, endpoint, workspace) and per (day, endpoint, member), which answers every /activity filter
    but the rare workspace-and-user combination (Emulator.activity streams that one).
    """

    def __init__(self, world: World, today_ord: int):
        self.today_ord = today_ord
        n = world.slot_count
        self._counters = array("q", bytes(8 * COUNTER_FIELDS * n))
        self.by_workspace: dict[tuple[int, int, int], list[int]] = {}
        self.by_member: dict[tuple[int, int, int], list[int]] = {}
        self.total_usage = 0
        self.total_byok_usage = 0
        by_workspace, by_member = self.by_workspace, self.by_member
        for i in range(n):
            p = world._build_profile(i)
            ws, member = p.workspace, p.member

            def on_rows(d, rows, ws=ws, member=member):
                for r in rows:
                    for sums, k in ((by_workspace, (d, r[0], ws)), (by_member, (d, r[0], member))):
                        acc = sums.get(k)
                        if acc is None:
                            sums[k] = list(r[1:])
                        else:
                            for j in range(7):
                                acc[j] += r[j + 1]

            c = world.key_counters(p, today_ord, on_rows)
            self.total_usage += c.usage
            self.total_byok_usage += c.byok_usage
            last = int(c.last_used_at.timestamp()) if c.last_used_at else -1
            self._counters[COUNTER_FIELDS * i : COUNTER_FIELDS * (i + 1)] = array(
                "q",
                (c.usage, c.byok_usage, c.usage_daily, c.byok_usage_daily, c.usage_weekly,
                 c.byok_usage_weekly, c.usage_monthly, c.byok_usage_monthly, last),
            )  # fmt: skip

    def counters(self, i: int) -> Counters:
        values = self._counters[COUNTER_FIELDS * i : COUNTER_FIELDS * (i + 1)]
        last = values[8]
        return Counters(
            *values[:8], last_used_at=datetime.datetime.fromtimestamp(last, UTC) if last >= 0 else None
        )
