"""One sync in a process of its own, for the memory benchmark: prints its peak RSS as JSON.

    python -m bench.sync_child CONNECTION_ID BASE_URL

The parent sets the environment (bench database, DEBUG off); the emulator runs in yet another
process, so the peak resident set measured here is the sync's alone (plus Python and Django).
"""

import json
import resource
import sys
import time
from pathlib import Path


def status_kib(field: str) -> int:
    """VmRSS / VmHWM of this process. Not ru_maxrss: Linux carries that over exec from the forked
    parent, so a child of a big process would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def main(connection_id: int, base_url: str) -> dict:
    import django

    django.setup()
    from openrouter.sync import sync_connection

    before = status_kib("VmRSS")  # the interpreter with Django and the app loaded
    began = time.perf_counter()
    result = sync_connection(connection_id, trigger="manual", base_url=base_url)
    seconds = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "status": str(result.status),
        "seconds": seconds,
        "rss_before_kib": before,
        "rss_peak_kib": status_kib("VmHWM"),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2])))
