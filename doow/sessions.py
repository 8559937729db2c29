"""Database sessions (doow.models.Session) read with their signed-in user in one statement, and
without Django's query compiler (doow.rows): every page and download reads its session and its user
first."""

import logging
from contextvars import ContextVar

from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends import db
from django.core.exceptions import SuspiciousOperation
from django.utils import timezone

from doow import rows
from doow.db import read_as_health_check

# The session whose user authentication is reading (doow.auth), for the backend's get_user, which
# Django calls with the user's id only.
reading_session: ContextVar["SessionStore | None"] = ContextVar("reading_session", default=None)


class SessionStore(db.SessionStore):
    user_read = None  # the user row read with the session row, if it has one

    @classmethod
    def get_model_class(cls):
        from doow.models import Session

        return Session

    def create_model_instance(self, data):
        session = super().create_model_instance(data)
        session.user_id = _user_id(data.get(SESSION_KEY))
        return session

    def _get_session_from_db(self):
        self.user_read = None
        try:
            # A request's first statement: it is its database health check too (doow.db).
            session = read_as_health_check(
                lambda: rows.get_one(
                    self.model, related="user", session_key=self.session_key, expire_date__gt=timezone.now()
                )
            )
        except SuspiciousOperation as exc:  # as Django's own store: logged, and the session is new
            logging.getLogger(f"django.security.{exc.__class__.__name__}").warning(str(exc))
            session = None
        if session is None:
            self._session_key = None
        else:
            self.user_read = session.user
        return session

    def user_read_with(self, user_id) -> object | None:
        """The user read with this session's row if it is user `user_id` (the id the session's data
        names), else None: then the backend reads the user itself, as Django's does."""
        user = self.user_read
        return user if user is not None and str(user.pk) == str(user_id) else None


def _user_id(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
