"""Request checks that hold for every view."""

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse


def reject_nul_characters(get_response):
    """400 for a query or form value holding a NUL character: no view takes one, and PostgreSQL
    refuses it in a text parameter (a 500 wherever a value reaches a query unchecked)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        for values in (request.GET, request.POST if request.method == "POST" else {}):
            if any("\x00" in key or any("\x00" in value for value in values.getlist(key)) for key in values):
                return HttpResponseBadRequest(
                    "Bad request: a parameter holds a NUL character.", content_type="text/plain"
                )
        return get_response(request)

    return middleware


HEALTH_PATH = "/healthz"


def health_check(get_response):
    """GET /healthz: 200 while this process can reach PostgreSQL, 503 when it cannot. First in the
    chain: a load balancer or container probe calls it by the container's own address over plain HTTP,
    which the host check and the HTTPS redirect after it would refuse. It reads nothing but `SELECT 1`
    and names nothing of the deployment."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if request.path != HEALTH_PATH or request.method not in ("GET", "HEAD"):
            return get_response(request)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
        return JsonResponse({"status": "ok", "database": "ok"})

    return middleware
