"""5. Memory: peak RSS of one process syncing a whole organization, and again at twice the size.

The sync runs in a child process (bench/sync_child.py) against the emulator served by another
process, so neither the emulator's memory nor this process's is counted.
"""

import json
import subprocess

from bench.environment import ROOT, child_env, python
from bench.results import Outcome, Row
from bench.support import ServedEmulator, company, connect

LIMIT_MIB = 250
FLAT = 1.10  # "flat": the doubled organization's peak within 10% of the first one's


def measure(keys: int, days: int) -> dict:
    import httpx
    from django.conf import settings
    from django.test import override_settings

    from integrations.models import Connection
    from usage.models import UsageDaily

    with ServedEmulator(seed=505, keys=keys, days=days) as served:
        with override_settings(OPENROUTER_BASE_URL=served.base_url):
            connection = connect(company(f"memory-{keys}"), served.management_key, httpx.HTTPTransport())
        done = subprocess.run(
            [python(), "-m", "bench.sync_child", str(connection.pk), served.base_url],
            cwd=ROOT,
            env=child_env(OPENROUTER_CONCURRENCY=str(settings.OPENROUTER_CONCURRENCY)),
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the sync process failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["status"] == "succeeded", figures
    figures["keys"] = keys
    figures["rows"] = UsageDaily.objects.filter(connection_id=connection.pk).count()
    figures["requests"] = Connection.objects.get(pk=connection.pk).runs.get().requests_made
    return figures


def run(sizes) -> Outcome:
    outcome = Outcome("5. Memory")
    small, large = (measure(keys, sizes.memory_days) for keys in sizes.memory_keys)
    for figures in (small, large):
        print(
            f"   {figures['keys']:,} keys: peak {figures['rss_peak_kib'] / 1024:.0f} MiB in "
            f"{figures['seconds']:.0f} s",
            flush=True,
        )
    peak, doubled = small["rss_peak_kib"] / 1024, large["rss_peak_kib"] / 1024
    outcome.rows += [
        Row(
            f"5. memory: peak RSS, one sync of {small['keys']:,} keys",
            f"{peak:.0f} MiB",
            f"{small['rss_before_kib'] / 1024:.0f} MiB before the sync",
            None,
            f"< {LIMIT_MIB} MiB",
            peak < LIMIT_MIB,
        ),
        Row(
            f"5. memory: organization doubled ({large['keys']:,} keys)",
            f"{doubled:.0f} MiB",
            f"{peak:.0f} MiB at {small['keys']:,} keys",
            doubled / peak,
            f"flat (≤ {FLAT:.2f})",
            doubled / peak <= FLAT,
        ),
    ]
    outcome.details = [
        "| keys | usage rows | requests | sync s | CPU s | RSS before MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {f['keys']:,} | {f['rows']:,} | {f['requests']:,} | {f['seconds']:.0f} | "
            f"{f['cpu_seconds']:.0f} | {f['rss_before_kib'] / 1024:.0f} | {f['rss_peak_kib'] / 1024:.0f} |"
            for f in (small, large)
        ),
    ]
    outcome.notes += [
        "Peak RSS (VmHWM) of a fresh process (`python -m bench.sync_child`) that runs one full initial "
        "sync, as a worker does: DEBUG off, OPENROUTER_CONCURRENCY as configured, the emulator "
        f"(seed 505, {sizes.memory_days} days of history) served over HTTP by another process. "
        "“Before” is the same process's RSS after `django.setup()` (Python, Django and the app).",
        "The sync holds at most one write batch (1,000 keys) and their activity at a time, so what "
        "doubles with the organization is the number of pages, requests and rows written. Few days of "
        "history keep keys young (little activity each) only to keep the run short: `--memory-days 30` "
        "gives every key a month of activity.",
    ]
    return outcome
