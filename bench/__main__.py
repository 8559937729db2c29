"""`python -m bench [ingest incremental detail fanout memory] [--quick|--tiny] [--output PATH]`"""

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench import environment
from bench.results import RESULTS_PATH, render, table

BENCHMARKS = ("ingest", "incremental", "detail", "fanout", "memory")


@dataclass(frozen=True)
class Sizes:
    ingest_keys: int
    ingest_days: int
    detail_rows: tuple[int, ...]
    detail_repeat: int
    fanout_connections: int
    fanout_concurrency: tuple[int, ...]
    fanout_latency: float
    fanout_top_runs: int  # runs at the top concurrency; the best is reported (bench/fanout.py)
    memory_keys: tuple[int, int]
    memory_days: int


MODES = {
    # ~300k activity rows; the page at 10k/100k/1M rows, median of 7 views; 500 connections; 100k
    # then 200k keys.
    # Memory: 100k then 200k keys, with 2 days of history (young keys, little activity) to stay
    # within ~20 minutes; `--memory-days 30` gives every key a month of activity (much slower).
    "full": Sizes(
        15_000, 365, (10_000, 100_000, 1_000_000), 7, 500, (1, 4, 16), 0.05, 3, (100_000, 200_000), 2
    ),
    "quick": Sizes(1_000, 365, (10_000, 100_000), 3, 60, (1, 4, 16), 0.05, 3, (5_000, 10_000), 30),
    # Every code path in seconds, for tests/bench/test_bench_smoke.py.
    "tiny": Sizes(30, 30, (500, 2_000), 1, 4, (1, 2), 0.01, 2, (40, 80), 30),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("benchmarks", nargs="*", choices=[*BENCHMARKS, []], metavar="BENCHMARK")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--tiny", action="store_true", help="smallest sizes (seconds; the smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="Markdown file to write")
    parser.add_argument("--database-url", help="default BENCH_DATABASE_URL or doow_bench on localhost")
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    parser.add_argument("--memory-keys", help="the memory run's two organization sizes, e.g. 50000,100000")
    parser.add_argument("--memory-days", type=int, help="days of history of the memory run's organization")
    parser.add_argument("--fanout-concurrency", help="the fan-out's worker concurrencies, e.g. 16 or 1,4,16")
    args = parser.parse_args(argv)
    selected = args.benchmarks or list(BENCHMARKS)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = MODES[mode]
    if args.memory_keys:
        small, large = (int(part) for part in args.memory_keys.split(","))
        sizes = replace(sizes, memory_keys=(small, large))
    if args.memory_days:
        sizes = replace(sizes, memory_days=args.memory_days)
    if args.fanout_concurrency:
        sizes = replace(sizes, fanout_concurrency=tuple(int(n) for n in args.fanout_concurrency.split(",")))

    config = environment.configure(args.database_url)
    environment.recreate_database(config["database_url"])
    import django

    django.setup()
    from django.conf import settings

    # Production runs with DEBUG off; with it on, Django would also log every query in memory.
    settings.DEBUG = False
    environment.migrate()

    from bench import detail, fanout, ingest, memory

    outcomes = []
    org = None
    began = time.monotonic()
    try:
        for name in BENCHMARKS:
            if name not in selected:
                continue
            print(f"== {name} ({mode})", flush=True)
            started = time.monotonic()
            if name == "ingest":
                outcome, org = ingest.run_ingest(sizes)
            elif name == "incremental":
                outcome = ingest.run_incremental(sizes, org)
            elif name == "detail":
                outcome = detail.run(sizes)
            elif name == "fanout":
                outcome = fanout.run(sizes)
            else:
                outcome = memory.run(sizes)
            outcomes.append(outcome)
            print(table(outcome.rows))
            for line in (*outcome.notes, *outcome.details):
                print(f"  {line}")
            print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
        machine = environment.machine()
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep_database:
            environment.drop_database(config["database_url"])
    command = " ".join(["python -m bench", *_without_output(argv)])
    text = render(outcomes, machine, mode, command)
    args.output.write_text(text)
    print(f"\nWrote {args.output} in {time.monotonic() - began:.0f} s.")
    return 0


def _without_output(argv: list[str]) -> list[str]:
    """The command line as it reproduces the figures: where they were written is beside the point."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--output="):
            skip = False
            continue
        if arg == "--output":
            skip = True
            continue
        kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
