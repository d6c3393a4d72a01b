"""When Redis (the broker, the cache and the channel layer) is away for a moment, every page
answers 503 with a sentence saying so and that nothing is lost, instead of a server error; the
API answers the same sentence as JSON. Web and worker reconnect by themselves once it is back.

Templates of their own (no base.html): the site header asks nothing of Redis, but a page that
needs the session or a limit would."""

from __future__ import annotations

from collections.abc import Callable

import redis
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from kombu.exceptions import OperationalError

from webapp.texts import TEMPORARILY_UNAVAILABLE

RETRY_AFTER = "30"


class UnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, redis.RedisError | OperationalError):
            return unavailable_response(request)
        return None


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with :data:`~webapp.texts.TEMPORARILY_UNAVAILABLE`, as JSON for the API and scripts."""
    response: HttpResponse
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse({"detail": TEMPORARILY_UNAVAILABLE}, status=503)
    else:
        # a page that was asked for tries again by itself; a form that was sent is sent again by hand
        context = {"message": TEMPORARILY_UNAVAILABLE, "refresh": request.method == "GET"}
        response = HttpResponse(render_to_string("503.html", context), status=503)
    response["Retry-After"] = RETRY_AFTER
    return response
