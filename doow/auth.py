"""Django's AuthenticationMiddleware, whose user is the one the session's row was read with."""

from django.contrib import auth
from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from doow.sessions import reading_session


class AuthenticationMiddleware(DjangoAuthenticationMiddleware):
    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        request.user = SimpleLazyObject(lambda: signed_in_user(request))


def signed_in_user(request: HttpRequest):
    """Django's auth.get_user, which still checks the backend, that the user may sign in and the
    session's hash of their password; only the reading of the user row is saved, for the session's
    own reading of it, and only while this request's session is being authenticated."""
    if not hasattr(request, "_cached_user"):
        token = reading_session.set(request.session)
        try:
            request._cached_user = auth.get_user(request)
        finally:
            reading_session.reset(token)
    return request._cached_user
