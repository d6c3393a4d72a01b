from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters

from webapp.keywork import spends

from .forms import SignUpForm


@spends("signup")
@sensitive_post_parameters("password1", "password2")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("albums:list")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("albums:list")
    return render(request, "accounts/signup.html", {"form": form})


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """What the login page and the admin's answer a (username, address) pair over the limit
    (axes' AXES_LOCKOUT_CALLABLE): a page in Veil's look, HTTP 429 with Retry-After."""
    minutes = settings.VEIL_LOGIN_COOLOFF_MINUTES
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    context = {"username": username, "failure_limit": settings.VEIL_LOGIN_FAILURE_LIMIT, "minutes": minutes}
    response = render(request, "accounts/locked_out.html", context, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
