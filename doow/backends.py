"""Django's ModelBackend, the signed-in user read without Django's query compiler (doow.rows), or
taken from the session's row, which read it in the same statement (doow.sessions): every page and
download reads its user."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend

from doow import rows
from doow.sessions import reading_session


class ModelBackend(DjangoModelBackend):
    def get_user(self, user_id):
        session = reading_session.get()
        user = session.user_read_with(user_id) if session is not None else None
        if user is None:
            user = rows.get_one(get_user_model(), pk=user_id)
        return user if user is not None and self.user_can_authenticate(user) else None
