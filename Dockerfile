# Doow's one image: the web server, the Celery worker and Celery beat (docker-compose.yml) all run it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The apps are imported from /app (pyproject installs dependencies only), by gunicorn and celery alike.
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN pip install .

COPY . .

# Production serves static files through whitenoise's CompressedManifestStaticFilesStorage, which
# needs the manifest that only a DEBUG=false collectstatic writes. Settings refuse DEBUG=false
# without secrets, so this step gets throwaway ones that exist only while it runs.
RUN DEBUG=false \
    DOOW_LOCAL_DIR=/tmp/doow-build \
    SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    DOOW_ENCRYPTION_KEYS="$(python -c 'from integrations.crypto import generate_key_entry; print(generate_key_entry())')" \
    python manage.py collectstatic --noinput \
    && rm -rf /tmp/doow-build

RUN useradd --system --no-create-home --uid 10001 doow
USER doow

EXPOSE 8000
# No control socket: gunicorn would make one under $HOME, which this user has none of.
CMD ["gunicorn", "doow.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-", "--no-control-socket"]
