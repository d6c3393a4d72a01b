"""The ASGI entry point: Django for HTTP, Channels for the websockets of webapp.routing.

Uploads are bounded here, before Django reads them: Django's ASGI handler buffers a request
body in a SpooledTemporaryFile that rolls over to disk past FILE_UPLOAD_MAX_MEMORY_SIZE, and an
original photo must never touch the disk.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the imports below touch models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from webapp.accounts.scopes import account_of  # noqa: E402
from webapp.limits import UPLOAD_PATHS, RequestBodyLimit  # noqa: E402
from webapp.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(
            django_asgi_app,
            settings.VEIL_MAX_REQUEST_BYTES,
            settings.VEIL_MAX_UPLOAD_MB,
            in_flight_bytes=settings.VEIL_MAX_IN_FLIGHT_MB * 1024 * 1024,
            upload_paths=UPLOAD_PATHS,
            account=account_of,
        ),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
