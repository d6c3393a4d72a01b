from __future__ import annotations

from django.urls import path

from . import views

app_name = "sharing"

urlpatterns = [
    path("albums/<uuid:album_id>/sharing/", views.album_sharing, name="album"),
    path("albums/<uuid:album_id>/sharing/recipients/", views.recipient_add, name="recipient-add"),
    path(
        "albums/<uuid:album_id>/sharing/recipients/<int:slot_id>/revoke/",
        views.recipient_revoke,
        name="recipient-revoke",
    ),
    path(
        "albums/<uuid:album_id>/sharing/recipients/<int:slot_id>/expiry/",
        views.recipient_expiry,
        name="recipient-expiry",
    ),
    path("albums/<uuid:album_id>/sharing/link/rotate/", views.share_link_rotate, name="link-rotate"),
    path("albums/<uuid:album_id>/sharing/settings/", views.album_settings, name="settings"),
    path("albums/<uuid:album_id>/sharing/key/rotate/", views.album_key_rotate, name="key-rotate"),
    path("s/<slug:token>/", views.share_album, name="share"),
    path("s/<slug:token>/photos/<uuid:photo_id>/image/", views.share_photo_image, name="share-image"),
    path("s/<slug:token>/photos/<uuid:photo_id>/thumbnail/", views.share_photo_thumbnail, name="share-thumbnail"),
    path("s/<slug:token>/photos/<uuid:photo_id>/download/", views.share_photo_download, name="share-download"),
]
