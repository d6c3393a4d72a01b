"""Every setting of Veil's web app, read from the environment here and nowhere else.

The defaults run the whole product on one developer machine (``make run``):

==========================  ==============================================================
variable                    meaning (default)
==========================  ==============================================================
DEBUG                       ``1``/``0`` (0: production; ``make run`` sets 1)
SECRET_KEY                  Django's signing key (required unless DEBUG is on; then a fixed
                            development key)
BEHIND_TLS_PROXY            ``1`` when a TLS proxy serves Veil: HTTPS redirect, HSTS, secure
                            proxy header (0); needs FORWARDED_ALLOW_IPS
FORWARDED_ALLOW_IPS         (read by uvicorn) the proxy addresses whose X-Forwarded-For is
                            believed; never ``*`` (none)
ALLOWED_HOSTS               comma-separated host names (localhost, 127.0.0.1, [::1])
CSRF_TRUSTED_ORIGINS        comma-separated origins behind a proxy (none)
DATABASE_URL                ``sqlite:///…/var/db.sqlite3``; ``postgres://…`` for Postgres
REDIS_URL                   ``redis://127.0.0.1:6379/0``: the Celery broker, the Channels
                            layer and the transit store of uploads
VEIL_VAR_DIR                where local state lives (``<repo>/var``)
MEDIA_ROOT                  anonymized photos, thumbnails (``var/media``)
VEIL_S3_BUCKET              store photos in this S3-compatible bucket instead of MEDIA_ROOT
                            (needs ``pip install 'veil[s3]'``; credentials and endpoint from
                            AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_S3_ENDPOINT_URL,
                            AWS_S3_REGION_NAME) (none)
STATIC_ROOT                 ``collectstatic`` output (none: whitenoise serves static/)
VEIL_MAX_UPLOAD_MB          largest photo accepted, in MB (40)
VEIL_MAX_IN_FLIGHT_MB       MB of photo uploads one web process takes in at once; more are
                            asked to come again in a moment (8 × VEIL_MAX_UPLOAD_MB)
VEIL_MAX_FILES_PER_REQUEST  photos one upload request may carry (20; the album page sends one
                            per request)
VEIL_PHOTO_QUOTA            photos one account may keep, over all its albums (10000; 0: no limit)
VEIL_STORAGE_QUOTA_MB       MB the stored photos of one account may take (20480; 0: no limit)
VEIL_MAX_WAITING_PHOTOS     photos one account may have waiting for a worker (50); more are
                            answered 429 and the album page sends them again by itself
VEIL_MAX_WAITING_MB         MB of uploads one account may have waiting (200)
VEIL_MAX_WAITING_MB_ALL     MB of uploads all accounts together may have waiting (600); keep
                            it well below Redis' maxmemory
VEIL_NEW_ACCOUNT_HOURS      accounts younger than this (24) together may have at most half of
                            VEIL_MAX_WAITING_MB_ALL waiting
VEIL_TRANSIT_PRIVATE_KEY    base64 X25519 private key the workers open uploads with; with
                            DEBUG on and nothing set, one is made once in var/transit.key
VEIL_TRANSIT_PUBLIC_KEY     base64 public half: all a web process that runs no task needs
VEIL_TRANSIT_TTL            seconds an upload waits in Redis for a worker (900)
VEIL_UNLOCK_TTL             seconds an unlock request (a sealed content key) waits for a
                            worker (120)
VEIL_UNLOCK_TRIES           password tries per key slot per client address per window (5);
                            successes give theirs back. Unlocks and every check of the album
                            passphrase (adding a recipient, rotating the key) count.
VEIL_UNLOCK_SLOT_TRIES      password tries per key slot from all addresses per window (30)
VEIL_UNLOCK_WINDOW          seconds of that window (900)
VEIL_UNLOCK_LOG_KEEP        unlock attempts kept per album for the owner to read (500)
VEIL_SOCKET_RATE            messages per minute one unlock websocket may send (30)
VEIL_UNLOCK_SESSIONS        viewings of real faces one client address may have open at once (3)
VEIL_UNLOCK_FORMAT          how recovered photos travel to the browser: JPEG (quality 92) or
                            PNG (lossless: the real faces pixel for pixel, about 6× larger) (JPEG)
VEIL_UNLOCK_MAX_SIDE        recovered photos travel at most this many pixels on their longer
                            side, as a screen shows them (2560)
VEIL_LOGIN_FAILURE_LIMIT    wrong passwords for one username from one client address before
                            that pair is locked out of the login page, the admin and the API
                            token endpoint (5)
VEIL_LOGIN_COOLOFF_MINUTES  how long such a lockout lasts, in minutes (15)
VEIL_TOKEN_RATE             requests to /api/auth/token/ per client address, right or wrong,
                            as DRF writes rates: ``N/second|minute|hour|day`` (20/hour)
VEIL_TOKEN_DAYS             days an API token works before a new one is needed (90)
VEIL_KEY_WORK_RATE          album creations, recipient additions and key rotations one
                            account may make, each an Argon2 run or two (30/hour)
VEIL_KEY_WORK_ADDRESS_RATE  the same for all accounts of one client address together (60/hour)
VEIL_SIGNUP_RATE            sign-ups from one client address (5/hour)
VEIL_LOGIN_RATE             login attempts from one client address, right or wrong (60/hour)
VEIL_UNLOCK_RATE            unlock attempts from one client address, right or wrong (60/hour)
VEIL_ARGON2_AT_ONCE         Argon2 runs one process makes at once (the cores; make run gives
                            each web process its share); more wait their turn, shared fairly
                            between accounts and addresses, unlocks first (cipher_worker.keys)
VEIL_ARGON2_WAITING_PER_CLIENT  album creations, recipient additions and key rotations one
                            account may have waiting for an Argon2 turn in one process; more
                            are refused as busy (4; an address may have 16 unlocks waiting)
VEIL_TASK_TIME_LIMIT        seconds a worker may spend on one photo or unlock before it is
                            stopped and the photo fails "try again" (300)
LOG_LEVEL                   root log level (INFO)
==========================  ==============================================================
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import warnings
from datetime import timedelta
from pathlib import Path

import csp.constants
import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from cipher_worker.keys import generate_album_keypair, public_key_from_private

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Production unless told otherwise: `make run` (webapp.run) says DEBUG=1, the tests DEBUG=0.
DEBUG = env_bool("DEBUG", False)

DEVELOPMENT_SECRET_KEY = "veil-development-only-secret-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", "")


def _secret_key_problem(key: str) -> str | None:
    """What is wrong with ``key`` for production (it signs sessions and password-reset links)."""
    if not key.strip():
        return "not set"
    if key.strip() == DEVELOPMENT_SECRET_KEY:
        return "the development key, which is public"
    if len(key) < 32 or len(set(key)) < 8:
        return f"too short or too plain ({len(key)} characters; at least 32 random ones)"
    return None


if not DEBUG and (_problem := _secret_key_problem(SECRET_KEY)):
    raise ImproperlyConfigured(
        f"SECRET_KEY is {_problem}. In production "
        'set it to a long random string (python -c "import secrets; print(secrets.token_urlsafe(50))"); '
        "for development on this machine run `make run`, or set DEBUG=1."
    )
SECRET_KEY = SECRET_KEY or DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

VAR_DIR = Path(os.environ.get("VEIL_VAR_DIR") or BASE_DIR / "var")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "webapp.accounts",
    "webapp.albums",
    "webapp.realtime",
    "webapp.sharing",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from static files, no CDN
    "webapp.dashboard",
    "webapp.api",
    "axes",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "webapp.unavailable.UnavailableMiddleware",  # Redis away: a view answers 503 saying so
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes asks: it turns a lockout into its page
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # Writers wait their turn (up to 20 s) instead of failing with "database is locked": a
    # transaction takes the write lock when it begins, not when it first writes (two uploads
    # checking the quota at once would otherwise deadlock), and WAL lets reads run beside it.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A test database in a file, not in memory, so a real Celery worker process can share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "albums:list"
LOGOUT_REDIRECT_URL = "accounts:login"

# --- password guessing: django-axes counts wrong passwords in the database ----------------
# Axes' backend first refuses a locked-out pair, then Django's checks the password.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
VEIL_LOGIN_FAILURE_LIMIT = int(os.environ.get("VEIL_LOGIN_FAILURE_LIMIT", "5"))
VEIL_LOGIN_COOLOFF_MINUTES = int(os.environ.get("VEIL_LOGIN_COOLOFF_MINUTES", "15"))
AXES_FAILURE_LIMIT = VEIL_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=VEIL_LOGIN_COOLOFF_MINUTES)
# Per (username, address), never per username alone: a guesser elsewhere cannot lock Grandma out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a typo or two before the right password does not add up over days
AXES_LOCKOUT_CALLABLE = "webapp.accounts.views.locked_out"
# REMOTE_ADDR is the client: uvicorn (--proxy-headers) rewrites it from X-Forwarded-For only when
# the peer is a trusted proxy (FORWARDED_ALLOW_IPS); a header read here could be forged.
AXES_CLIENT_IP_CALLABLE = "webapp.addresses.axes_address"
AXES_DISABLE_ACCESS_LOG = True  # failures are kept for the cool-off; no lasting log of who logged in from where

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Deployments run collectstatic into STATIC_ROOT; without it (development, tests) whitenoise
# serves straight from the finders.
STATIC_ROOT = Path(os.environ["STATIC_ROOT"]) if os.environ.get("STATIC_ROOT") else None
WHITENOISE_USE_FINDERS = True
# Under ASGI Django reads a FileResponse (a static file, a photo) in a thread and says so once
# per process; for files of this size that is the intended behaviour, not a problem.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")

# Only anonymized photos and thumbnails live here, and they are served by views that check
# ownership (there is no public MEDIA_URL route).
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or VAR_DIR / "media")
# Several web and worker machines share one bucket (django-storages); files stay private: every
# photo is served through a view that checks who asks, never by a public bucket URL.
if os.environ.get("VEIL_S3_BUCKET"):
    STORAGES = {
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": os.environ["VEIL_S3_BUCKET"],
                "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
                "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
                "default_acl": "private",
                "querystring_auth": True,
                "file_overwrite": False,
            },
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
MEDIA_URL = "media/"

# --- uploads: originals stay in memory, never in a temporary file -------------------------
VEIL_MAX_UPLOAD_MB = int(os.environ.get("VEIL_MAX_UPLOAD_MB", "40"))
VEIL_MAX_UPLOAD_BYTES = VEIL_MAX_UPLOAD_MB * 1024 * 1024
VEIL_MAX_FILES_PER_REQUEST = int(os.environ.get("VEIL_MAX_FILES_PER_REQUEST", "20"))
VEIL_PHOTO_QUOTA = int(os.environ.get("VEIL_PHOTO_QUOTA", "10000"))
VEIL_STORAGE_QUOTA_MB = int(os.environ.get("VEIL_STORAGE_QUOTA_MB", "20480"))
# uploads waiting in Redis for a worker (webapp.albums.quotas): per account, and all together,
# well below the private Redis' 1 GB cap (make run) and compose's 2 GB
VEIL_MAX_WAITING_PHOTOS = int(os.environ.get("VEIL_MAX_WAITING_PHOTOS", "50"))
VEIL_MAX_WAITING_MB = int(os.environ.get("VEIL_MAX_WAITING_MB", "200"))
VEIL_MAX_WAITING_MB_ALL = int(os.environ.get("VEIL_MAX_WAITING_MB_ALL", "600"))
VEIL_NEW_ACCOUNT_HOURS = int(os.environ.get("VEIL_NEW_ACCOUNT_HOURS", "24"))
# A request body may exceed one photo by its multipart framing; webapp.asgi refuses larger
# bodies before reading them, so Django's ASGI body buffer never rolls over to disk.
VEIL_MAX_REQUEST_BYTES = VEIL_MAX_UPLOAD_BYTES + 256 * 1024
# photo bodies one web process holds in memory at once (webapp.limits); more wait (429, Retry-After)
VEIL_MAX_IN_FLIGHT_MB = int(os.environ.get("VEIL_MAX_IN_FLIGHT_MB", str(8 * VEIL_MAX_UPLOAD_MB)))
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.MemoryFileUploadHandler"]
FILE_UPLOAD_MAX_MEMORY_SIZE = VEIL_MAX_REQUEST_BYTES + 1
DATA_UPLOAD_MAX_NUMBER_FILES = 100

# --- Redis: Celery broker, Channels layer, transit store ---------------------------------
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None  # a worker waits out a Redis restart however long it takes
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Unlocks have a queue of their own, which every worker takes from in turn with the photo queue
# (kombu's Redis transport rotates between a worker's queues): a family viewing waits for the
# photo in hand at most, never for every upload queued before it.
CELERY_TASK_QUEUES = (Queue("celery"), Queue("unlock"))
CELERY_TASK_ROUTES = {"sharing.recover_photo": {"queue": "unlock"}}  # webapp.jobs.RECOVER_PHOTO
# No task holds a worker for ever: a photo over the soft limit fails "try again" (its upload kept).
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("VEIL_TASK_TIME_LIMIT", "300"))
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 30
# Each pool process loads the model as it starts (webapp.albums.tasks.load_model); Celery's default
# of 4 s would kill one still whitening a cold stylegan2 cache (≈ 5 s), and its replacement too.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = 180

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # channels_redis blocks 5 s per BZPOPMIN; redis-py 8 also times reads out at 5 s by
            # default, so a busy machine would drop websockets. Give reads room beyond the block.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": "veil:channels:",
        },
    }
}


# --- the transit key: uploads cross Redis sealed to the workers' key ----------------------
def _decode_key(name: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured(f"{name} is not valid base64") from exc
    if len(raw) != 32:
        raise ImproperlyConfigured(f"{name} must be 32 bytes (base64 of a raw X25519 key), not {len(raw)}")
    return raw


def _development_transit_key(path: Path) -> bytes:
    """The dev transit private key in ``path``, made once (mode 0600) and shared by web and workers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _decode_key(str(path), path.read_text(encoding="ascii"))
    private, _ = generate_album_keypair()
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(base64.b64encode(private).decode("ascii") + "\n")
    return private


def _transit_keys() -> tuple[bytes | None, bytes]:
    private_b64 = os.environ.get("VEIL_TRANSIT_PRIVATE_KEY")
    public_b64 = os.environ.get("VEIL_TRANSIT_PUBLIC_KEY")
    if private_b64:
        private = _decode_key("VEIL_TRANSIT_PRIVATE_KEY", private_b64)
        public = public_key_from_private(private)
        if public_b64 and _decode_key("VEIL_TRANSIT_PUBLIC_KEY", public_b64) != public:
            raise ImproperlyConfigured("VEIL_TRANSIT_PUBLIC_KEY is not the public half of VEIL_TRANSIT_PRIVATE_KEY")
        return private, public
    if public_b64:
        return None, _decode_key("VEIL_TRANSIT_PUBLIC_KEY", public_b64)
    if DEBUG:
        private = _development_transit_key(VAR_DIR / "transit.key")
        return private, public_key_from_private(private)
    raise ImproperlyConfigured(
        "set VEIL_TRANSIT_PRIVATE_KEY (workers; web too if it has no VEIL_TRANSIT_PUBLIC_KEY); "
        "`python manage.py transit_keygen` makes a pair"
    )


# Django's error pages hide settings whose names contain KEY, so this never shows in a traceback.
VEIL_TRANSIT_PRIVATE_KEY, VEIL_TRANSIT_PUBLIC_KEY = _transit_keys()
VEIL_TRANSIT_TTL = int(os.environ.get("VEIL_TRANSIT_TTL", "900"))
# A task whose worker vanished (machine lost, not just a pool child: that one is requeued at
# once) is redelivered after this long; it must come back while its upload is still in transit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": max(60, VEIL_TRANSIT_TTL * 2 // 3)}

# --- unlocking: real faces recovered on the fly for one viewing session, never stored --------
VEIL_UNLOCK_TTL = int(os.environ.get("VEIL_UNLOCK_TTL", "120"))
VEIL_UNLOCK_TRIES = int(os.environ.get("VEIL_UNLOCK_TRIES", "5"))
VEIL_UNLOCK_SLOT_TRIES = int(os.environ.get("VEIL_UNLOCK_SLOT_TRIES", "30"))
VEIL_UNLOCK_WINDOW = int(os.environ.get("VEIL_UNLOCK_WINDOW", "900"))
VEIL_UNLOCK_LOG_KEEP = int(os.environ.get("VEIL_UNLOCK_LOG_KEEP", "500"))
VEIL_SOCKET_RATE = int(os.environ.get("VEIL_SOCKET_RATE", "30"))
VEIL_UNLOCK_SESSIONS = int(os.environ.get("VEIL_UNLOCK_SESSIONS", "3"))  # open viewings per client address
VEIL_UNLOCK_FORMAT = os.environ.get("VEIL_UNLOCK_FORMAT", "JPEG").upper()
VEIL_UNLOCK_MAX_SIDE = int(os.environ.get("VEIL_UNLOCK_MAX_SIDE", "2560"))
if VEIL_UNLOCK_FORMAT not in {"PNG", "JPEG"}:
    raise ImproperlyConfigured(f"VEIL_UNLOCK_FORMAT must be PNG or JPEG, not {VEIL_UNLOCK_FORMAT}")

# --- the shared cache: DRF's throttle counts, common to every web process ---------------------
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "veil:cache",
    }
}

# --- the REST API (webapp.api): token auth for scripts, the session for the browsable API ----


def _rate(name: str, default: str) -> str:
    rate = os.environ.get(name, default)
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", rate):
        raise ImproperlyConfigured(f"{name} must read like 20/hour, not {rate!r}")
    return rate


# Requests to /api/auth/token/ per client address (webapp.api.views.TokenRequestThrottle).
VEIL_TOKEN_RATE = _rate("VEIL_TOKEN_RATE", "20/hour")
# Argon2 work allowances (webapp.keywork): per account, per address for sign-ups and unlocks.
VEIL_TOKEN_DAYS = int(os.environ.get("VEIL_TOKEN_DAYS", "90"))  # an API token works this long
VEIL_KEY_WORK_RATE = _rate("VEIL_KEY_WORK_RATE", "30/hour")
VEIL_KEY_WORK_ADDRESS_RATE = _rate("VEIL_KEY_WORK_ADDRESS_RATE", "60/hour")
VEIL_SIGNUP_RATE = _rate("VEIL_SIGNUP_RATE", "5/hour")
VEIL_LOGIN_RATE = _rate("VEIL_LOGIN_RATE", "60/hour")
VEIL_UNLOCK_RATE = _rate("VEIL_UNLOCK_RATE", "60/hour")
RATELIMIT_CACHE_PREFIX = "veil:rl:"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # first, so an unauthenticated request gets 401 with `WWW-Authenticate: Token`
        "webapp.api.authentication.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # throttles key on REMOTE_ADDR, as axes does (see AXES_CLIENT_IP_CALLABLE), not on a forgeable header
    "NUM_PROXIES": 0,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Veil API",
    "DESCRIPTION": "Albums, photo uploads and their anonymization status. Authenticate with "
    "`Authorization: Token <key>`: a key from the /api/token/ page, or POST a username and "
    "password to /api/auth/token/ (each answer is a new key; the one before stops working).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- security headers that cost nothing in development -----------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Served over TLS by a proxy (BEHIND_TLS_PROXY=1): trust its X-Forwarded-Proto, send plain HTTP
# to HTTPS, and tell browsers never to use plain HTTP here again (HSTS, a year, preloadable).
if env_bool("BEHIND_TLS_PROXY", False):
    # Behind a proxy every client reaches uvicorn from the proxy's address: unless uvicorn is told
    # to believe that proxy's X-Forwarded-For, all limits would count everyone as one client.
    _proxies = os.environ.get("FORWARDED_ALLOW_IPS", "").strip()
    if not _proxies or "*" in _proxies.split(","):
        raise ImproperlyConfigured(
            "BEHIND_TLS_PROXY=1 needs FORWARDED_ALLOW_IPS set to the proxy's address (not *): without it "
            "every client counts as the proxy, and with * anyone can claim any address"
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 365 * 24 * 3600
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# A Content-Security-Policy on every page (django-csp), TLS or not: scripts and styles only from
# Veil's own static files, recovered photos shown from blob: URLs, websockets to this origin, no
# framing. Style attributes stay allowed (the dashboard draws its bars with them).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.constants.SELF],
        "script-src": [csp.constants.SELF],
        "style-src": [csp.constants.SELF, csp.constants.UNSAFE_INLINE],
        "img-src": [csp.constants.SELF, "blob:", "data:"],
        "connect-src": [csp.constants.SELF, "blob:"],  # a page may read back the blob: it made
        "object-src": [csp.constants.NONE],
        "base-uri": [csp.constants.NONE],
        "form-action": [csp.constants.SELF],
        "frame-ancestors": [csp.constants.NONE],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # no share token in any log line (Django's "Not Found: /s/<token>/", uvicorn's websocket lines)
    "filters": {"share_links": {"()": "webapp.logfilters.RedactShareLinks"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["share_links"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # failures and lockouts are warnings; axes says every successful login at INFO
        "axes": {"level": "WARNING"},
        # uvicorn logs through its own handlers, so the filter goes on its logger (which has no
        # handler of its own to lose here); its access log is off wherever Veil starts uvicorn
        "uvicorn.error": {"filters": ["share_links"]},
    },
}
