from __future__ import annotations

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import include, path

urlpatterns = [
    path("", lambda request: redirect("albums:list"), name="home"),
    path("accounts/", include("webapp.accounts.urls")),
    path("", include("webapp.albums.urls")),
    path("", include("webapp.sharing.urls")),
    path("dashboard/", include("webapp.dashboard.urls")),
    path("api/", include("webapp.api.urls")),
    path("admin/", admin.site.urls),
]
