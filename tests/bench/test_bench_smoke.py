"""`python -m bench --tiny`: every benchmark's code path at a tiny size, so `make bench` cannot rot.

The benchmarks need what they measure: PostgreSQL (COPY, a database of their own) and Redis (real
Celery workers). Without them this test is skipped. It runs in its own throwaway database and on
private broker queues, so concurrent test runs do not collide.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")


def services_missing() -> str:
    try:
        import psycopg

        psycopg.connect(f"{SERVER}/postgres", connect_timeout=2).close()
    except Exception as exc:
        return f"PostgreSQL not reachable at {SERVER}: {exc}"
    try:
        import redis

        redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis not reachable at {BROKER}: {exc}"
    return ""


def test_every_benchmark_runs_at_a_tiny_size(tmp_path):
    missing = services_missing()
    if missing:
        pytest.skip(missing)
    output = tmp_path / "results.md"
    database = f"{SERVER}/doow_bench_smoke_{uuid.uuid4().hex[:10]}"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--output", str(output), "--database-url", database],
        cwd=ROOT,
        env={**os.environ, "BENCH_BROKER_URL": BROKER},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    text = output.read_text()
    header = "| benchmark | figure | baseline | ratio | target | met |"
    assert "cores" in text and "PostgreSQL" in text
    lines = text.splitlines()
    rows = []
    for line in lines[lines.index(header) + 2 :]:  # the one results table, after its separator
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.split("|")[1:-1]])
    assert {row[0][:2] for row in rows} == {"1.", "2.", "3.", "4.", "5."}
    assert all(row[-1] in ("yes", "no") for row in rows)
    # The detail page's ≤ 1.5× targets are read at every size (the tiny run's 500 and 2k rows), each
    # of page (first and repeat view) and export, unfiltered and for one key.
    ratios = [row[0] for row in rows if row[0].startswith("3.") and row[4] == "≤ 1.5"]
    assert len(ratios) == 12
    assert sum(", 500 rows," in name for name in ratios) == sum(", 2k rows," in name for name in ratios) == 6
    # The top fan-out concurrency runs more than once; its row names every run's efficiency.
    (fanout,) = [row for row in rows if row[0].startswith("4.")]
    assert "best of 2 runs" in fanout[1]
