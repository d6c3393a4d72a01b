from __future__ import annotations

from django.urls import path

from . import views

app_name = "albums"

urlpatterns = [
    path("albums/", views.album_list, name="list"),
    path("albums/new/", views.album_create, name="create"),
    path("albums/<uuid:album_id>/", views.album_detail, name="detail"),
    path("albums/<uuid:album_id>/settings/", views.album_settings, name="settings"),
    path("albums/<uuid:album_id>/delete/", views.album_delete, name="delete"),
    path("albums/<uuid:album_id>/photos/", views.upload_photos, name="upload"),
    path("albums/<uuid:album_id>/photos/status/", views.photo_statuses, name="statuses"),
    path("photos/<uuid:photo_id>/image/", views.photo_image, name="photo-image"),
    path("photos/<uuid:photo_id>/thumbnail/", views.photo_thumbnail, name="photo-thumbnail"),
    path("photos/<uuid:photo_id>/download/", views.photo_download, name="photo-download"),
    path("photos/<uuid:photo_id>/retry/", views.photo_retry, name="photo-retry"),
    path("photos/<uuid:photo_id>/delete/", views.photo_delete, name="photo-delete"),
]
