"""Every setting Doow reads, from the environment (django-environ), in one module.

With nothing set, Doow runs on embedded defaults: a SQLite file, Celery on kombu's filesystem
transport, and the built-in OpenRouter emulator. Secrets (SECRET_KEY, DOOW_ENCRYPTION_KEYS) get
generated development values only when DEBUG is on; with DEBUG off they must be real or Doow
refuses to start.
"""

import logging
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()


def env_secret(name: str, default: str | None = None) -> str | None:
    """Read NAME_FILE if set (Docker/Kubernetes secrets), else NAME, else the default."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE points at {file_path!r}, which cannot be read") from exc
    return os.environ.get(name, default)


def _number(kind, name: str, default, *, least=None, above=None):
    """An int or float from the environment, refused at start with its name when it is not one or is
    out of range (a bare ValueError named neither)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        value = default
    else:
        try:
            value = kind(raw)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}.") from None
    if least is not None and value < least:
        raise ImproperlyConfigured(f"{name} must be at least {least}, not {value}.")
    if above is not None and value <= above:
        raise ImproperlyConfigured(f"{name} must be more than {above}, not {value}.")
    return value


def env_int(name: str, default: int, **bounds) -> int:
    return _number(int, name, default, **bounds)


def env_float(name: str, default: float, **bounds) -> float:
    return _number(float, name, default, **bounds)


def env_bool(name: str, default: bool) -> bool:
    """A clear yes or no, refused at start with its name otherwise: django-environ reads any other
    word ("flase", "maybe") as no, which for DEBUG would silently mean production and for
    SECURE_SSL_REDIRECT plain HTTP."""
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in environ.Env.BOOLEAN_TRUE_STRINGS:
        return True
    if raw in ("false", "off", "n", "no", "0"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {os.environ[name]!r}.")


DEBUG = env_bool("DEBUG", default=False)
LOCAL_DIR = Path(env.str("DOOW_LOCAL_DIR", default=str(BASE_DIR / ".local")))


def _dev_value(filename: str, make) -> str:
    """A development-only value generated once into the ignored local folder.

    O_EXCL makes concurrent first runs (test workers, web + worker) agree on one value.
    """
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    path = LOCAL_DIR / filename
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if value:
            return value
        raise ImproperlyConfigured(f"{path} is empty; delete it to have it generated again") from None
    with os.fdopen(fd, "w") as handle:
        value = make()
        handle.write(value)
    return value


def _new_encryption_key_ring() -> str:
    from integrations.crypto import generate_key_entry

    return generate_key_entry()


SECRET_KEY = env_secret("SECRET_KEY")
DOOW_ENCRYPTION_KEYS = env_secret("DOOW_ENCRYPTION_KEYS")
if DEBUG:
    SECRET_KEY = SECRET_KEY or _dev_value("dev-secret-key", lambda: secrets.token_urlsafe(50))
    DOOW_ENCRYPTION_KEYS = DOOW_ENCRYPTION_KEYS or _dev_value("dev-encryption-keys", _new_encryption_key_ring)
else:
    missing = [
        name
        for name, value in (("SECRET_KEY", SECRET_KEY), ("DOOW_ENCRYPTION_KEYS", DOOW_ENCRYPTION_KEYS))
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"DEBUG is off and {', '.join(missing)} is not set. Production needs real secrets "
            "(set them, or NAME_FILE pointing at a file); development runs with DEBUG=true."
        )
    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure-"):
        raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters in production.")
    from integrations.crypto import _parse_key_ring

    _parse_key_ring(DOOW_ENCRYPTION_KEYS)  # a malformed ring stops the start, not the first connect

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "csp",
    "axes",
    "doow",
    "integrations",
    "openrouter",
    "usage",
]

MIDDLEWARE = [
    "doow.middleware.health_check",  # before the host check and the HTTPS redirect (its docstring)
    "django.middleware.security.SecurityMiddleware",
    "doow.middleware.reject_nul_characters",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "doow.auth.AuthenticationMiddleware",  # the user read with the session (doow.sessions)
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a login refused for lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
]

if not DEBUG:
    # Production serves collected static files itself; runserver serves them in development.
    # Right after SecurityMiddleware, as WhiteNoise asks.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
        "whitenoise.middleware.WhiteNoiseMiddleware",
    )

ROOT_URLCONF = "doow.urls"
WSGI_APPLICATION = "doow.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "doow.context_processors.memberships",
            ],
        },
    },
]

DATABASES = {
    "default": environ.Env.db_url_config(
        env_secret("DATABASE_URL") or f"sqlite:///{LOCAL_DIR / 'doow.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    # WAL and a busy timeout let the web server, worker and beat share the file. A transaction takes
    # the write lock when it begins: one that read first and then wrote would fail at once ("database
    # is locked") when another wrote in between, where waiting its turn would have done.
    # A file, not memory, for the test database: subprocess tests (a real worker) share it.
    # Per process, so test runs side by side never share one.
    DATABASES["default"]["TEST"] = {"NAME": str(LOCAL_DIR / f"test-db-{os.getpid()}.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, least=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Memory per sort or hash of one query. Reports group thousands of keys: with PostgreSQL's
    # default (4MB) the planner sorted the key table's rows on disk instead of hashing them in memory
    # (120 ms against 75 ms on the bench's 1M usage rows).
    _work_mem = env.str("DATABASE_WORK_MEM", default="32MB")
    if not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)?", _work_mem):
        # PostgreSQL would refuse it only at the first connection, with no word of this variable.
        raise ImproperlyConfigured(
            f"DATABASE_WORK_MEM must be like 32MB (kB, MB, GB or TB), not {_work_mem!r}."
        )
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = f"-c work_mem={_work_mem}"
    # The few statements every request and every sync makes (doow.rows) are prepared once a
    # connection has run them 5 times, so PostgreSQL stops planning them each time (doow.db); Django
    # prepares none of its own. Off for a pooler that cannot keep prepared statements (PgBouncer in
    # transaction mode before 1.21, or without max_prepared_statements).
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = (
        5 if env_bool("DATABASE_PREPARED_STATEMENTS", default=True) else None
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Report results (usage/cache.py). Production: Redis shared by web and workers (workers warm the
# default views after each sync). Development: files under .local/, shared by `make run`'s processes.
CACHES = {
    "default": environ.Env.cache_url_config(
        env_secret("CACHE_URL") or (f"filecache://{LOCAL_DIR / 'cache'}" if DEBUG else "locmemcache://")
    )
}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # A cache that does not answer is a miss within a second (usage/cache.py), not a page left waiting.
    CACHES["default"].setdefault("OPTIONS", {}).update({"socket_connect_timeout": 1, "socket_timeout": 1})
REPORT_CACHE_SECONDS = env_int("REPORT_CACHE_SECONDS", 86400, least=1)
# After a sync, workers pre-compute the detail page of connections with at least this many keys.
REPORT_WARM_MIN_KEYS = env_int("REPORT_WARM_MIN_KEYS", 200, least=0)

AUTH_USER_MODEL = "doow.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Login lockout (django-axes) and the client's address behind proxies.
# Proxies in front of Doow that append the address they received a request from to X-Forwarded-For.
# 0: Doow is reached directly and the client is REMOTE_ADDR (X-Forwarded-For is ignored, since
# anyone can send it). N: the client is the Nth address from the right (doow/client_ip.py).
DOOW_TRUSTED_PROXY_COUNT = env_int("DOOW_TRUSTED_PROXY_COUNT", 0, least=0)
DOOW_LOGIN_FAILURE_LIMIT = env_int("DOOW_LOGIN_FAILURE_LIMIT", 5, least=1)
DOOW_LOGIN_COOLOFF_MINUTES = env_int("DOOW_LOGIN_COOLOFF_MINUTES", 15, least=1)

# The axes backend goes first: it refuses a locked-out client before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Django's, reading the signed-in user on every request more cheaply (doow/backends.py).
    "doow.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = DOOW_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=DOOW_LOGIN_COOLOFF_MINUTES)
# Keyed on the client's address alone. With the username in the key, one address could try a common
# password against every account (one try each never reaches the limit); keyed on the username,
# anyone anywhere could lock a colleague out. The cost: people behind one shared address share the
# limit, for one cool-off at most.
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
# Failures expire with the cool-off, not at the next success: keyed on the address, a success would
# clear every failure from that address, so an attacker holding any account could log in with it
# between guesses and never reach the limit.
AXES_RESET_ON_SUCCESS = False
# A client that keeps trying while locked out stays locked out: the cool-off counts from its last try.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True
AXES_CLIENT_IP_CALLABLE = "doow.client_ip.client_ip"
# The login form's field (and authenticate()'s argument) is "username", although it holds the email.
AXES_USERNAME_FORM_FIELD = "username"
AXES_LOCKOUT_CALLABLE = "doow.lockout.lockout_response"
# Only failures are needed for the lockout; no ever-growing table of every successful login.
AXES_DISABLE_ACCESS_LOG = True

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
# The SMTP server alert emails go through, as one URL (smtp+tls://user:password@host:587); its
# password may come from EMAIL_URL_FILE. Unset: localhost:25.
if _email_url := env_secret("EMAIL_URL"):
    _email = environ.Env.email_url_config(_email_url)
    EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or _email["EMAIL_BACKEND"]
    EMAIL_HOST, EMAIL_PORT = _email["EMAIL_HOST"], _email["EMAIL_PORT"]
    EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_USER"], _email["EMAIL_HOST_PASSWORD"]
    EMAIL_USE_TLS, EMAIL_USE_SSL = _email.get("EMAIL_USE_TLS", False), _email.get("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = 20  # a stalled SMTP server must not hold a worker past a sync's time limit
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Doow <no-reply@doow.test>")
# Where people reach Doow, for the links in alert emails (a worker sends them, with no request to
# take the host from). Unset: the emails carry no link.
DOOW_PUBLIC_URL = env.str("DOOW_PUBLIC_URL", default="http://127.0.0.1:8000" if DEBUG else "").rstrip("/")

# --- Security headers. Strict in production; check --deploy passes with production env values.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Django's database sessions, read more cheaply on every request (doow/sessions.py).
SESSION_ENGINE = "doow.sessions"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, least=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Celery. One place for broker, limits and the beat schedule (doow/celery.py reads these).
# The filesystem transport ignores the host; naming one keeps kombu from logging "No hostname was
# supplied" in every process that sends a task.
EMBEDDED_BROKER_URL = "filesystem://localhost//"
CELERY_BROKER_URL = env_secret("CELERY_BROKER_URL") or EMBEDDED_BROKER_URL
CELERY_VISIBILITY_TIMEOUT = 3600
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 540, least=1)
# Above the soft limit, which lets a sync stop cleanly and keep what it wrote.
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600, above=CELERY_TASK_SOFT_TIME_LIMIT)
# A retry's countdown plus a run must end before Redis re-delivers the unacked message.
CELERY_RETRY_DELAY_CAP = env_int("CELERY_RETRY_DELAY_CAP", 900, least=1)
if CELERY_RETRY_DELAY_CAP + CELERY_TASK_TIME_LIMIT >= CELERY_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured(
        f"CELERY_RETRY_DELAY_CAP + CELERY_TASK_TIME_LIMIT must stay below the broker's visibility timeout "
        f"({CELERY_VISIBILITY_TIMEOUT} s), not {CELERY_RETRY_DELAY_CAP + CELERY_TASK_TIME_LIMIT} s: a task "
        "waiting longer would be delivered twice."
    )
# Celery's Django fixup closes the database connection before and after every task unless this is
# set, so each task would pay for a new PostgreSQL backend (~10 ms of machine CPU per sync in the
# fan-out bench). With it, the fixup closes them only every this many tasks; doow.celery applies
# Django's own CONN_MAX_AGE and health checks around each task instead, as around a web request.
CELERY_DB_REUSE_MAX = 1000
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
if CELERY_BROKER_URL.startswith("filesystem://"):
    broker_dir = LOCAL_DIR / "broker"
    for sub in ("queue", "processed", "control"):
        (broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"),
        "control_folder": str(broker_dir / "control"),
        "store_processed": False,
    }

# --- OpenRouter.
OPENROUTER_BASE_URL = env.str(
    "OPENROUTER_BASE_URL",
    default="http://127.0.0.1:8765/api/v1" if DEBUG else "https://openrouter.ai/api/v1",
)
if not DEBUG and not OPENROUTER_BASE_URL.startswith("https://"):
    from urllib.parse import urlsplit

    if urlsplit(OPENROUTER_BASE_URL).hostname not in ("127.0.0.1", "localhost", "::1"):
        # Every request carries a management key in its Authorization header.
        raise ImproperlyConfigured(
            f"OPENROUTER_BASE_URL must be https:// in production, not {OPENROUTER_BASE_URL!r}."
        )
OPENROUTER_TIMEOUT_SECONDS = env_float("OPENROUTER_TIMEOUT_SECONDS", 20.0, above=0)
OPENROUTER_SYNC_INTERVAL_MINUTES = env_int("OPENROUTER_SYNC_INTERVAL_MINUTES", 60, least=1)
# How long the sync event log and its runs are kept (0: for ever). Hourly syncs of thousands of
# connections add ~100k events a day; the usage itself and the audit log are never pruned.
EVENT_LOG_RETENTION_DAYS = env_int("EVENT_LOG_RETENTION_DAYS", 180, least=0)
OPENROUTER_MAX_REQUESTS_PER_SECOND = env_float("OPENROUTER_MAX_REQUESTS_PER_SECOND", 10.0, least=0)
OPENROUTER_CONCURRENCY = env_int("OPENROUTER_CONCURRENCY", 4, least=1)
OPENROUTER_MAX_RETRIES = env_int("OPENROUTER_MAX_RETRIES", 4, least=0)
# The largest body Doow reads from OpenRouter. Its largest are the models list and the unpaginated
# 30 days of an organization's activity by model and endpoint, well below this; reading on past it
# (a broken proxy, a wrong base URL, a compressed bomb) could take the worker's memory.
OPENROUTER_MAX_RESPONSE_MB = env_int("OPENROUTER_MAX_RESPONSE_MB", 64, least=1)
# Keys (with their activity) a sync writes per transaction: few enough to hold in a worker's memory,
# many enough that per-transaction costs stay small next to the rows. A smaller organization's
# whole sync is one write transaction.
OPENROUTER_WRITE_BATCH_KEYS = env_int("OPENROUTER_WRITE_BATCH_KEYS", 1000, least=1)

# Error reports (mails to ADMINS, the debug page) hide anything key-shaped in frame variables.
DEFAULT_EXCEPTION_REPORTER_FILTER = "integrations.log_scrub.ScrubSecretsReporterFilter"

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").strip().upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"scrub_secrets": {"()": "integrations.log_scrub.ScrubSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["scrub_secrets"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # httpx logs every request line at INFO and headers at DEBUG; keep it quiet and scrubbed.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # django-axes announces itself at INFO on every start, of every command and worker.
        "axes.apps": {"level": "WARNING"},
    },
}
