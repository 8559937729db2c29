"""Request checks that hold for every view."""

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


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
