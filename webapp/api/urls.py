"""/api/: the REST API (DRF), its OpenAPI schema and docs, and the token page."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from . import views

app_name = "api"

router = DefaultRouter()
router.register("albums", views.AlbumViewSet, basename="album")
router.register("photos", views.PhotoViewSet, basename="photo")

urlpatterns = [
    path("", include(router.urls)),
    path("auth/token/", views.RotatingAuthToken.as_view(), name="obtain-token"),
    path("token/", views.api_token, name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]
