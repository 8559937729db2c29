"""Settings with DEBUG off: refuse to start without real secrets, pass `check --deploy` with them.

Each case runs Django in a fresh subprocess, since settings are read once per process.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from integrations.crypto import generate_key_entry

REPO_ROOT = Path(__file__).resolve().parents[2]
# Anything the surrounding shell (or CI) set that would leak into the subprocess's settings.
INHERITED_SETTINGS = (
    "DEBUG",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "DOOW_ENCRYPTION_KEYS",
    "DOOW_ENCRYPTION_KEYS_FILE",
    "DATABASE_URL",
    "DATABASE_URL_FILE",
    "DATABASE_PREPARED_STATEMENTS",
    "EMAIL_URL",
    "OPENROUTER_BASE_URL",
    "LOG_LEVEL",
    "CELERY_BROKER_URL",
    "CELERY_BROKER_URL_FILE",
    "ALLOWED_HOSTS",
    "DOOW_LOCAL_DIR",
)


def run_django(tmp_path: Path, args: list[str], **settings_env: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name not in INHERITED_SETTINGS}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "doow.settings",
            "DOOW_LOCAL_DIR": str(tmp_path / "local"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'doow.sqlite3'}",
            **settings_env,
        }
    )
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


SETUP = ["-c", "import django; django.setup()"]


def production_secrets() -> dict[str, str]:
    return {"SECRET_KEY": secrets.token_urlsafe(50), "DOOW_ENCRYPTION_KEYS": generate_key_entry()}


def test_production_refuses_to_start_without_secrets(tmp_path):
    result = run_django(tmp_path, SETUP, DEBUG="false")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY, DOOW_ENCRYPTION_KEYS is not set" in result.stderr
    # Nothing development-only was generated in its place.
    assert not (tmp_path / "local" / "dev-secret-key").exists()


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DOOW_ENCRYPTION_KEYS"])
def test_production_refuses_to_start_with_one_secret_missing(tmp_path, missing):
    present = {name: value for name, value in production_secrets().items() if name != missing}
    result = run_django(tmp_path, SETUP, DEBUG="false", **present)
    assert result.returncode != 0
    assert f"DEBUG is off and {missing} is not set" in result.stderr


@pytest.mark.parametrize("weak_key", ["short-key", "django-insecure-" + "x" * 50])
def test_production_refuses_a_weak_secret_key(tmp_path, weak_key):
    result = run_django(
        tmp_path, SETUP, DEBUG="false", SECRET_KEY=weak_key, DOOW_ENCRYPTION_KEYS=generate_key_entry()
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 random characters" in result.stderr


def test_production_settings_pass_the_deploy_check(tmp_path):
    result = run_django(
        tmp_path,
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DEBUG="false",
        ALLOWED_HOSTS="doow.example.com",
        **production_secrets(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_secrets_can_be_read_from_files(tmp_path):
    # Docker/Kubernetes secrets arrive as files; NAME_FILE points at one (a trailing newline is fine).
    values = production_secrets()
    for name, value in values.items():
        (tmp_path / name.lower()).write_text(value + "\n")
    print_settings = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.SECRET_KEY); print(settings.DOOW_ENCRYPTION_KEYS)"
    )
    result = run_django(
        tmp_path,
        ["-c", print_settings],
        DEBUG="false",
        SECRET_KEY_FILE=str(tmp_path / "secret_key"),
        DOOW_ENCRYPTION_KEYS_FILE=str(tmp_path / "doow_encryption_keys"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [values["SECRET_KEY"], values["DOOW_ENCRYPTION_KEYS"]]


def test_a_secret_file_that_cannot_be_read_stops_startup(tmp_path):
    result = run_django(
        tmp_path,
        SETUP,
        DEBUG="false",
        SECRET_KEY_FILE=str(tmp_path / "missing.txt"),
        DOOW_ENCRYPTION_KEYS=generate_key_entry(),
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY_FILE points at" in result.stderr


def test_development_generates_its_secrets_once(tmp_path):
    print_key = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    first = run_django(tmp_path, ["-c", print_key], DEBUG="true")
    second = run_django(tmp_path, ["-c", print_key], DEBUG="true")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.strip()) >= 50
    assert (tmp_path / "local" / "dev-encryption-keys").read_text().strip()


@pytest.mark.parametrize(("configured", "expected"), [({}, "32MB"), ({"DATABASE_WORK_MEM": "64MB"}, "64MB")])
def test_postgresql_connections_get_the_configured_work_mem(tmp_path, configured, expected):
    """Reports group thousands of keys: PostgreSQL's default work_mem made it sort them on disk."""
    printed = run_django(
        tmp_path,
        [
            *SETUP[:1],
            SETUP[1] + "; from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])",
        ],
        DEBUG="true",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/doow",
        **configured,
    )
    assert printed.returncode == 0, printed.stderr
    assert f"'options': '-c work_mem={expected}'" in printed.stdout


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ({}, "5"),
        ({"DATABASE_PREPARED_STATEMENTS": "false"}, "None"),
        ({"DATABASE_PREPARED_STATEMENTS": "true"}, "5"),
    ],
)
def test_prepared_statements_are_on_unless_turned_off_for_a_pooler(tmp_path, configured, expected):
    printed = run_django(
        tmp_path,
        [
            *SETUP[:1],
            SETUP[1]
            + "; from django.conf import settings; print(settings.DATABASES['default']['OPTIONS']['prepare_threshold'])",
        ],
        DEBUG="true",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/doow",
        **configured,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == expected


def test_login_lockout_and_proxy_count_come_from_the_environment(tmp_path):
    printed = run_django(
        tmp_path,
        [
            *SETUP[:1],
            SETUP[1] + "; from django.conf import settings; "
            "print(settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME, settings.DOOW_TRUSTED_PROXY_COUNT)",
        ],
        DEBUG="true",
        DOOW_LOGIN_FAILURE_LIMIT="7",
        DOOW_LOGIN_COOLOFF_MINUTES="30",
        DOOW_TRUSTED_PROXY_COUNT="2",
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.split() == ["7", "0:30:00", "2"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DOOW_TRUSTED_PROXY_COUNT", "-1"),
        ("DOOW_LOGIN_FAILURE_LIMIT", "0"),
        ("DOOW_LOGIN_COOLOFF_MINUTES", "0"),
    ],
)
def test_a_nonsensical_lockout_setting_stops_startup(tmp_path, name, value):
    result = run_django(tmp_path, SETUP, DEBUG="true", **{name: value})
    assert result.returncode != 0
    assert f"{name} must be at least" in result.stderr


def printed_settings(tmp_path, names: str, **settings_env) -> subprocess.CompletedProcess:
    return run_django(
        tmp_path,
        ["-c", f"import django; django.setup(); from django.conf import settings as s; print({names})"],
        **settings_env,
    )


def test_the_database_url_can_be_read_from_a_file(tmp_path):
    (tmp_path / "database_url").write_text("postgres://doow:pw@db.internal:5432/doow\n")
    result = printed_settings(
        tmp_path,
        "s.DATABASES['default']['ENGINE'], s.DATABASES['default']['HOST']",
        DEBUG="false",
        DATABASE_URL="",
        DATABASE_URL_FILE=str(tmp_path / "database_url"),
        **production_secrets(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "db.internal"]


def test_an_email_url_configures_the_smtp_server(tmp_path):
    result = printed_settings(
        tmp_path,
        "s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_USE_TLS",
        DEBUG="false",
        EMAIL_URL="smtp+tls://alerts:secret@smtp.example.com:587",
        **production_secrets(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.core.mail.backends.smtp.EmailBackend",
        "smtp.example.com",
        "587",
        "alerts",
        "True",
    ]


@pytest.mark.parametrize(
    ("settings_env", "said"),
    [
        ({"DOOW_ENCRYPTION_KEYS": "changeme"}, "DOOW_ENCRYPTION_KEYS entries must look like 'id:base64key'"),
        ({"DOOW_ENCRYPTION_KEYS": "k1:c2hvcnQ="}, "must be 32 bytes"),
        ({"OPENROUTER_BASE_URL": "http://openrouter.ai/api/v1"}, "OPENROUTER_BASE_URL must be https://"),
    ],
)
def test_production_refuses_an_unusable_key_ring_or_a_plain_http_openrouter(tmp_path, settings_env, said):
    result = run_django(tmp_path, SETUP, DEBUG="false", **{**production_secrets(), **settings_env})
    assert result.returncode != 0
    assert said in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("REPORT_CACHE_SECONDS", "abc", "REPORT_CACHE_SECONDS must be a number, not 'abc'"),
        ("OPENROUTER_SYNC_INTERVAL_MINUTES", "0", "OPENROUTER_SYNC_INTERVAL_MINUTES must be at least 1"),
        ("OPENROUTER_TIMEOUT_SECONDS", "0", "OPENROUTER_TIMEOUT_SECONDS must be more than 0"),
        ("OPENROUTER_MAX_RETRIES", "-1", "OPENROUTER_MAX_RETRIES must be at least 0"),
        ("CELERY_TASK_SOFT_TIME_LIMIT", "700", "CELERY_TASK_TIME_LIMIT must be more than 700"),
        ("CELERY_RETRY_DELAY_CAP", "99999", "must stay below the broker's visibility timeout"),
        ("DEBUG", "maybe", "DEBUG must be true or false, not 'maybe'"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not 'VERBOSE'"),
    ],
)
def test_a_setting_that_is_not_a_usable_value_stops_startup_and_names_itself(tmp_path, name, value, said):
    result = run_django(tmp_path, SETUP, **{"DEBUG": "true", name: value})
    assert result.returncode != 0
    assert said in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        # django-environ would read the typo as "no": plain HTTP in production.
        ("SECURE_SSL_REDIRECT", "flase", "SECURE_SSL_REDIRECT must be true or false, not 'flase'"),
        (
            "DATABASE_PREPARED_STATEMENTS",
            "of",
            "DATABASE_PREPARED_STATEMENTS must be true or false, not 'of'",
        ),
        # PostgreSQL would refuse it only at the first connection, naming no variable.
        ("DATABASE_WORK_MEM", "32XB", "DATABASE_WORK_MEM must be like 32MB (kB, MB, GB or TB), not '32XB'"),
    ],
)
def test_a_production_setting_that_is_not_a_usable_value_stops_startup(tmp_path, name, value, said):
    database = {"DATABASE_URL": "postgres://doow@127.0.0.1:5432/doow"}  # never connected to by SETUP
    result = run_django(tmp_path, SETUP, DEBUG="false", **{**production_secrets(), **database, name: value})
    assert result.returncode != 0
    assert said in result.stderr


def test_the_log_level_may_be_written_in_lower_case(tmp_path):
    result = printed_settings(tmp_path, "s.LOGGING['root']['level']", DEBUG="true", LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "DEBUG"
