from __future__ import annotations

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import include, path

from webapp.keywork import spends

urlpatterns = [
    path("", lambda request: redirect("albums:list"), name="home"),
    path("accounts/", include("webapp.accounts.urls")),
    path("", include("webapp.albums.urls")),
    path("", include("webapp.sharing.urls")),
    path("dashboard/", include("webapp.dashboard.urls")),
    path("api/", include("webapp.api.urls")),
    # the admin's login spends the same per-address allowance as the site's (webapp.keywork)
    path("admin/login/", spends("login")(admin.site.login)),
    path("admin/", admin.site.urls),
]
