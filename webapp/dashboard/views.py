"""The staff dashboard: one page of aggregate numbers (see ``panels.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import panels

View = Callable[[HttpRequest], HttpResponse]


def staff_only(view: View) -> View:
    """Anonymous visitors go to the login page; signed-in people who are not staff get a 404."""

    @functools.wraps(view)
    def guarded(request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise Http404
        return view(request)

    return guarded


@staff_only
@require_GET
@never_cache
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    hours = panels.faces_per_hour(now)
    workers = panels.worker_heartbeats(now)
    context = {
        "now": now,
        "queue": panels.queue_depth(),
        "running": panels.running_tasks(),
        "failed": panels.failed_tasks(),
        "hours": hours,
        "faces_24h": sum(bar.faces for bar in hours),
        "photos_24h": sum(bar.photos for bar in hours),
        "busiest_hour": max((bar.faces for bar in hours), default=0),
        "workers": workers,
        "alive_workers": {w.hostname for w in workers if w.alive},
        "storage": panels.storage_used(),
        "photo_counts": panels.photo_counts(),
        "failed_unlocks": panels.failed_unlocks(),
    }
    return render(request, "dashboard/dashboard.html", context)
