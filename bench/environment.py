"""The bench's own PostgreSQL database and Redis broker, set up before Django reads its settings.

The bench never touches the development or test databases: it drops and re-creates the database
named by BENCH_DATABASE_URL (default `doow_bench`) so every run starts from the same empty tables.
"""

import os
import platform
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/doow_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"
DEFAULT_CACHE_URL = "redis://127.0.0.1:6379/13"


def configure(database_url: str | None = None) -> dict:
    """Point Django (this process and every child) at the bench database and broker."""
    database_url = database_url or os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    broker_url = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER_URL)
    os.environ["DATABASE_URL"] = database_url
    os.environ["CELERY_BROKER_URL"] = broker_url
    # Reports cached in Redis, as in production (web and workers share them).
    os.environ["CACHE_URL"] = os.environ.get("BENCH_CACHE_URL", DEFAULT_CACHE_URL)
    os.environ.setdefault("DEBUG", "true")  # development secrets from .local/, as `make` sets
    os.environ["OPENROUTER_MAX_REQUESTS_PER_SECOND"] = "0"  # no pacing: measure Doow, not the politeness
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "doow.settings")
    return {"database_url": database_url, "broker_url": broker_url}


def _admin_conninfo(database_url: str) -> tuple[str, str]:
    """(URL of the maintenance database `postgres`, name of the bench database)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name.startswith("doow_bench"):
        # A guard against pointing the bench at real data: it drops the database it is given.
        raise SystemExit(f"BENCH_DATABASE_URL must name a database starting with doow_bench, not {name!r}")
    return urlunsplit(parts._replace(scheme="postgresql", path="/postgres")), name


def recreate_database(database_url: str) -> None:
    import psycopg

    admin, name = _admin_conninfo(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(database_url: str) -> None:
    import psycopg

    admin, name = _admin_conninfo(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def machine() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0].split()[0]
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    revision = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "revision": revision or "unknown",
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "postgresql": pg,
        "python": platform.python_version(),
    }


def child_env(**extra: str) -> dict:
    """Environment for worker and sync subprocesses: production-like (DEBUG off, so Django keeps no
    query log) with the development secrets this process uses."""
    from django.conf import settings

    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,
        "DOOW_ENCRYPTION_KEYS": settings.DOOW_ENCRYPTION_KEYS,
        "DOOW_LOCAL_DIR": str(settings.LOCAL_DIR),
        "OPENROUTER_MAX_REQUESTS_PER_SECOND": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def python() -> str:
    return sys.executable
