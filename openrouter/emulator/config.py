"""Settings of one emulated OpenRouter organization."""

from __future__ import annotations

import dataclasses
import datetime
import math

# A fixed default "today" keeps runs reproducible; the management command passes the real UTC date.
DEFAULT_TODAY = datetime.date(2026, 11, 24)


@dataclasses.dataclass(frozen=True)
class EmulatorConfig:
    seed: int
    keys: int = 50
    workspaces: int = 3
    members: int = 4
    models: int = 12
    # Days of history before `today`; keys are created inside it and their usage counts from creation.
    days: int = 30
    today: datetime.date = DEFAULT_TODAY
    # How much of `today` has passed, which sets today's partial counters and last-used times. None: a
    # fixed share drawn per date (5-94% of the day), as tests rely on. The dev server passes the real
    # UTC time and moves it on (Emulator.set_now), so nothing it serves is dated in the future.
    time_of_day: datetime.time | None = None
    # Keys deleted after they had usage: their spend stays in /activity and /credits but not in /keys.
    deleted_keys: int | None = None
    # Seconds added to every response (per-run latency); per-request latency is a Fault.
    latency: float = 0.0
    # How long an injected hang sleeps in server mode (longer than any sane client timeout).
    hang_seconds: float = 30.0
    keys_page_size: int = 100

    def __post_init__(self):
        if self.keys < 1:
            raise ValueError("keys must be >= 1 (the normal key belongs to the first listed key)")
        if self.workspaces < 1 or self.members < 1 or self.models < 1 or self.days < 1:
            raise ValueError("workspaces, members, models and days must be >= 1")

    @property
    def deleted_key_count(self) -> int:
        if self.deleted_keys is not None:
            return max(0, self.deleted_keys)
        return math.ceil(self.keys / 20)
