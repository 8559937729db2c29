"""Helpers the benchmarks share: clocks, companies and connections, an emulator in a subprocess."""

import statistics
import subprocess
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime
from datetime import time as dtime
from unittest import mock

from bench.environment import ROOT, child_env, python


def noon(day: date) -> datetime:
    return datetime.combine(day, dtime(12, 0), tzinfo=UTC)


def interleaved_medians(steps, repeat: int) -> dict:
    """Median wall time of each step's call over `repeat` rounds, the steps taken in turn within a
    round: a slow minute on a shared host then slows a figure and its baseline alike, where timing
    all of one before all of the other let it land on one side (a one-key export's baseline once
    measured 8 ms between rounds of 3–5 ms). `steps`: (name, call, before) with `before()` run
    untimed ahead of each call, or None."""
    times: dict = {name: [] for name, _, _ in steps}
    for _ in range(repeat):
        for name, call, before in steps:
            if before is not None:
                before()
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def company(slug: str):
    from doow.models import Company

    return Company.objects.create(name=slug, slug=slug)


def finance_user(company_obj):
    from doow.models import Membership, Role, User

    user = User.objects.create_user(email=f"finance@{company_obj.slug}.test", password=None)
    Membership.objects.create(user=user, company=company_obj, role=Role.FINANCE)
    return user


@contextmanager
def no_enqueue():
    """Connect without sending the initial sync task: each benchmark starts its syncs itself."""
    with mock.patch("integrations.services.connection_enqueue_sync"):
        yield


def connect(company_obj, secret: str, transport=None):
    from openrouter.services import openrouter_connect

    with no_enqueue():
        connection = openrouter_connect(company=company_obj, secret=secret, transport=transport).connection
    return connection


class ServedEmulator:
    """`manage.py openrouter_emulator` in its own process, so neither its CPU nor its memory is
    counted against the sync being measured. Its "today" is the real UTC date, as the workers' is, and
    moves on at midnight UTC as theirs does."""

    def __init__(self, *, seed: int, keys: int, workspaces: int = 3, latency: float = 0.0, days: int = 30):
        args = [python(), "manage.py", "openrouter_emulator", "--port", "0", "--seed", str(seed)]
        args += ["--keys", str(keys), "--workspaces", str(workspaces), "--latency", str(latency)]
        args += ["--days", str(days)]
        self.process = subprocess.Popen(args, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
        self.base_url = self.management_key = ""
        for line in self.process.stdout:
            if "serving at" in line:
                self.base_url = line.split("serving at ")[1].split()[0]
            if line.startswith("management key:"):
                self.management_key = line.split(":", 1)[1].strip()
                break
        if not (self.base_url and self.management_key):
            self.stop()
            raise RuntimeError("the emulator did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
