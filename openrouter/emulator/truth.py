"""Ground truth for reconciliation tests: the same figures the API serves, as exact Decimals."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

from . import catalog, views
from .money import to_decimal

if TYPE_CHECKING:
    from .emulator import Emulator


class Truth:
    def __init__(self, emu: Emulator):
        self._emu = emu

    @property
    def _world(self):
        return self._emu.world

    def activity_window(self) -> tuple[datetime.date, datetime.date]:
        """First and last day that GET /activity serves for the current emulated today."""
        today = self._emu.today
        return today - datetime.timedelta(days=30), today - datetime.timedelta(days=1)

    def _key_index(self, api_key_hash: str | None) -> int | None:
        if api_key_hash is None:
            return None
        i = self._world.index_of_hash(api_key_hash)
        if i is None:
            raise KeyError(api_key_hash)
        return i

    def activity_rows(
        self,
        start: datetime.date,
        end: datetime.date,
        api_key_hash: str | None = None,
        workspace_id: str | None = None,
        user_id: str | None = None,
        group_by_workspace: bool = False,
    ) -> Iterator[dict]:
        """Rows as GET /activity returns them, for completed days in [start, end] (not limited to 30)."""
        workspace = self._world.workspace_index(workspace_id) if workspace_id else None
        member = self._world.member_index(user_id) if user_id else None
        if (workspace_id and workspace is None) or (user_id and member is None):
            return iter(())
        rows = self._emu.activity(
            start.toordinal(),
            end.toordinal(),
            self._key_index(api_key_hash),
            workspace,
            member,
            group_by_workspace,
        )
        return iter(rows)

    def activity_total(
        self, start: datetime.date, end: datetime.date, api_key_hash: str | None = None, workspace_id=None
    ) -> Decimal:
        """Account-wide usage (deleted keys included) over completed days in [start, end]."""
        return sum(
            (r["usage"] for r in self.activity_rows(start, end, api_key_hash, workspace_id)), Decimal(0)
        )

    def key_activity_rows(self, start: datetime.date, end: datetime.date) -> Iterator[dict]:
        """Every key's own rows (one per key, day and endpoint), streamed: the generator's raw output.

        Includes deleted keys. Nothing is kept, so a million rows cost no more memory than one.
        """
        world = self._world
        first, last = start.toordinal(), min(end.toordinal(), self._emu.today_ord - 1)
        for i in range(world.slot_count):
            p = world._build_profile(i)  # not through the LRU: a full scan would only thrash it
            workspace_id = world.workspaces[p.workspace].id
            for day, row in world.key_rows(p, first, last):
                out = views.activity_row(world, day, row[0], row[1:], p.workspace)
                out["api_key_hash"] = p.hash
                out["workspace_id"] = workspace_id
                yield out

    def listed_keys(self, workspace_id: str | None = None) -> Iterator[dict]:
        """Every key GET /keys can list (all workspaces, disabled and expired too; not deleted ones)."""
        emu = self._emu
        workspace = self._world.workspace_index(workspace_id) if workspace_id else None
        for i in emu.listed_indexes(workspace, True, True):
            yield emu.api_key(i)

    def deleted_keys(self) -> Iterator[dict]:
        world = self._world
        for i in range(world.listed_count, world.slot_count):
            p = world.profile(i)
            key = views.api_key(world, p, self._emu.counters(i))
            key["deleted_at"] = views.iso(p.deleted_at)
            yield key

    def key(self, key_hash: str) -> dict:
        i = self._key_index(key_hash)
        return self._emu.api_key(i)

    def credits(self) -> dict:
        total_credits, total_usage = self._emu.credits_units()
        return {"total_credits": to_decimal(total_credits), "total_usage": to_decimal(total_usage)}

    def workspaces(self) -> list[dict]:
        return [views.workspace(self._world, w) for w in self._world.workspaces]

    def members(self) -> list[dict]:
        return [views.member(m) for m in self._world.members]

    def models(self) -> list[dict]:
        return [catalog.api_model(m) for m in self._world.models]
