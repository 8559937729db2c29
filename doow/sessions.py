"""Database sessions, the session read without Django's query compiler (doow.rows): every page and
download reads its session first."""

import logging

from django.contrib.sessions.backends import db
from django.core.exceptions import SuspiciousOperation
from django.utils import timezone

from doow import rows


class SessionStore(db.SessionStore):
    def _get_session_from_db(self):
        try:
            session = rows.get_one(self.model, session_key=self.session_key, expire_date__gt=timezone.now())
        except SuspiciousOperation as exc:  # as Django's own store: logged, and the session is new
            logging.getLogger(f"django.security.{exc.__class__.__name__}").warning(str(exc))
            session = None
        if session is None:
            self._session_key = None
        return session
