"""Django's ModelBackend, the signed-in user read without Django's query compiler (doow.rows): every
page and download reads its user."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend

from doow import rows


class ModelBackend(DjangoModelBackend):
    def get_user(self, user_id):
        user = rows.get_one(get_user_model(), pk=user_id)
        return user if user is not None and self.user_can_authenticate(user) else None
