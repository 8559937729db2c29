"""docker-compose.yml, the Dockerfile and what the README says of them, checked as data (no Docker
engine here to run them)."""

import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("web", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def command_of(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_compose_has_the_app_and_its_backing_services(services):
    assert set(services) == {"migrate", "web", "worker", "beat", "db", "redis"}
    assert command_of(services["web"]).startswith("gunicorn doow.wsgi ")
    assert command_of(services["worker"]).startswith("celery -A doow worker")
    assert command_of(services["beat"]).startswith("celery -A doow beat")
    assert command_of(services["migrate"]) == "python manage.py migrate --noinput"
    assert services["migrate"]["restart"] == "no"


def test_backing_services_have_healthchecks(services):
    assert services["db"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["redis"]["image"] == "redis:7"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_postgres_keeps_its_data_in_a_named_volume(compose, services):
    assert "postgres-data" in compose["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in services["db"]["volumes"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_backing_services_and_the_migration(services, name):
    depends_on = services[name]["depends_on"]
    assert depends_on["db"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_the_migration_waits_for_the_database(services):
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["migrate", *APP_SERVICES])
def test_app_services_run_in_production_mode_with_secrets_from_files(compose, services, name):
    service = services[name]
    environment = service["environment"]
    assert environment["DEBUG"] == "false"
    assert (
        environment["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in environment["DATABASE_URL"]
    )
    assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert environment["SECRET_KEY_FILE"] == "/run/secrets/secret_key"
    assert environment["DOOW_ENCRYPTION_KEYS_FILE"] == "/run/secrets/encryption_keys"
    assert "ALLOWED_HOSTS" in environment
    assert environment["OPENROUTER_BASE_URL"] == "${OPENROUTER_BASE_URL:-https://openrouter.ai/api/v1}"
    # Alert email and the proxy in front reach the app from .env.
    assert environment["EMAIL_URL"] == "${EMAIL_URL:-}"
    assert environment["DOOW_TRUSTED_PROXY_COUNT"] == "${DOOW_TRUSTED_PROXY_COUNT:-1}"
    # No secret value is written into the compose file itself.
    assert "SECRET_KEY" not in environment and "DOOW_ENCRYPTION_KEYS" not in environment
    assert set(service["secrets"]) == {"secret_key", "encryption_keys"}


def test_secrets_come_from_ignored_files(compose):
    assert compose["secrets"] == {
        "secret_key": {"file": "./secrets/secret_key.txt"},
        "encryption_keys": {"file": "./secrets/encryption_keys.txt"},
    }
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert any(line.strip("/") == "secrets" for line in ignored)
    assert "secrets" in (REPO_ROOT / ".dockerignore").read_text().splitlines()


def test_the_worker_can_be_scaled(services):
    # `docker compose up --scale worker=4` fails on a fixed container name or host port.
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert not any("container_name" in service for service in services.values())


def test_exactly_one_beat(services):
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "--scale" not in command_of(services["beat"])


def test_the_database_is_reachable_only_inside_compose_with_one_password(services):
    assert "ports" not in services["db"]
    password = services["db"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:-")  # overridable from .env
    assert f"postgres://doow:{password}@db:5432/doow" == services["web"]["environment"]["DATABASE_URL"]


# --- Dockerfile


@pytest.fixture(scope="module")
def dockerfile() -> str:
    # Continuation lines joined, so each instruction is one line.
    return re.sub(r"\\\n\s*", " ", (REPO_ROOT / "Dockerfile").read_text())


def instructions(dockerfile: str, keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in dockerfile.splitlines() if line.startswith(keyword + " ")]


def test_dockerfile_builds_on_python_slim_and_installs_the_project(dockerfile):
    assert instructions(dockerfile, "FROM") == ["python:3.11-slim"]
    assert "pip install ." in instructions(dockerfile, "RUN")


def test_dockerfile_collects_static_files_for_the_production_storage(dockerfile):
    # DEBUG=false is what selects the manifest storage whose manifest production needs.
    (collect,) = [run for run in instructions(dockerfile, "RUN") if "collectstatic" in run]
    assert "DEBUG=false" in collect
    assert "SECRET_KEY=" in collect and "DOOW_ENCRYPTION_KEYS=" in collect
    assert "manage.py collectstatic --noinput" in collect


def test_dockerfile_runs_as_a_non_root_user(dockerfile):
    users = instructions(dockerfile, "USER")
    assert users and users[-1] not in {"root", "0"}
    # USER comes after every build step that needs root.
    last_run = max(i for i, line in enumerate(dockerfile.splitlines()) if line.startswith("RUN "))
    user_line = max(i for i, line in enumerate(dockerfile.splitlines()) if line.startswith("USER "))
    assert user_line > last_run


def test_gunicorn_is_published_on_the_hosts_loopback_only(services):
    """Doow trusts the proxy's X-Forwarded-For: a client reaching gunicorn past the proxy could name
    any address and never be locked out."""
    (published,) = services["web"]["ports"]
    assert published.startswith("${DOOW_HTTP_BIND:-127.0.0.1}:")


def test_gunicorn_makes_no_control_socket_under_the_image_users_missing_home(services, dockerfile):
    assert "--no-control-socket" in services["web"]["command"]
    assert '"--no-control-socket"]' in dockerfile


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_log_level_sets_the_celery_processes_level(services, name):
    command = services[name]["command"]
    assert command[command.index("--loglevel") + 1] == "${LOG_LEVEL:-INFO}"


def test_the_web_service_is_health_checked_by_its_healthz(services):
    probe = " ".join(services["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in probe


def test_the_worker_is_health_checked_by_a_ping_to_its_own_worker(services):
    """Celery names a worker celery@<host name>, and Docker sets HOSTNAME to the container's: each
    scaled worker container pings its own worker (`$$` is Compose's escape for a `$` the shell reads)."""
    kind, probe = services["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    assert probe.startswith("celery -A doow inspect ping --destination celery@$$HOSTNAME ")
    # A worker started under another name (-n, --hostname) would never answer that ping.
    assert not {"-n", "--hostname"} & set(services["worker"]["command"])


def test_beat_is_health_checked_by_the_age_of_the_schedule_file_it_runs_with(services):
    command = services["beat"]["command"]
    directory, name = command[command.index("--schedule") + 1].rsplit("/", 1)
    kind, probe = services["beat"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # A prefix: Python's dbm may add .dat, .dir or .db to the name beat is given.
    assert probe.startswith(f"find {directory} -maxdepth 1 -name '{name}*' -mmin -")
    assert probe.endswith(" | grep -q .")  # found (written recently enough) or unhealthy
    # Beat saves the schedule when it wakes (at least every 5 minutes) if 3 have passed since it last
    # did: writes are at most about 8 minutes apart, and a bound below that marks a live beat unhealthy.
    minutes = int(re.search(r"-mmin -(\d+) ", probe).group(1))
    assert minutes >= 10


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_service_has_a_healthcheck_the_readme_describes(services, name):
    check = services[name]["healthcheck"]
    assert check["test"] and check["interval"] and check["retries"] >= 1
    readme = (REPO_ROOT / "README.md").read_text()
    probe = " ".join(check["test"][1:]).replace("$$", "$")
    described = {
        "web": "/healthz",
        "worker": "celery -A doow inspect ping --destination celery@$HOSTNAME",
        "beat": "celerybeat-schedule*",
    }[name]
    assert described in probe and described in readme
