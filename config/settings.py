"""leukoloop settings, read from the environment in one place.

Defaults give a platform that runs on a bare machine: a SQLite file and a Celery broker that needs no
server (kombu's filesystem transport). ``DATABASE_URL`` switches to PostgreSQL and ``CELERY_BROKER_URL``
to Redis. Background work always runs in a separate worker process, never inside a web request.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path

import dj_database_url
import django_stubs_ext
from csp.constants import NONCE, NONE, SELF

from config.env import env_bool, env_int, env_list, env_str, secret_key

# Lets admin and other generic classes be subscripted (ModelAdmin[Cell]) at run time, as the type stubs want.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the platform writes at run time (database file, broker folders, media, models) lives here.
VAR_DIR = Path(env_str("LEUKOLOOP_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DJANGO_DEBUG", False)
# DJANGO_SECRET_KEY, or the random key `make run` keeps in var/secret-key; with DEBUG off and neither, the
# settings refuse to load (config/env.py says why).
SECRET_KEY_FILE = VAR_DIR / "secret-key"
SECRET_KEY = secret_key(debug=DEBUG, kept=SECRET_KEY_FILE)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# DJANGO_HTTPS=1: the site is served over HTTPS only, by a proxy that ends TLS and says so in
# X-Forwarded-Proto (it must set or strip that header on every request). Cookies then travel over HTTPS
# only, plain-HTTP requests are redirected, and browsers are told (HSTS) never to use HTTP again. Off
# for `make run` on http://127.0.0.1.
HTTPS = env_bool("DJANGO_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # A load balancer's health probe may come over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # The header's preload flag alone changes nothing: only a domain submitted to hstspreload.org is.
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    # API tokens: stored as digests, with an expiry, one per log-in, revocable (README "API").
    "knox",
    # Log-in lockout after repeated wrong passwords, on the login page and the token endpoint alike.
    "axes",
    # The Content-Security-Policy header on every response (below).
    "csp",
    "drf_spectacular",
    # leukoloop's apps, lowest layer first (README "Layout"; import-linter enforces the order).
    "jobs",
    "annotation",
    "loop",
    "dashboard",
    "exports",
    "evaluation_report",
]
# Swagger UI's JavaScript and CSS served from the installed package instead of a CDN (no internet needed).
SWAGGER_UI_LOCAL = importlib.util.find_spec("drf_spectacular_sidecar") is not None
if SWAGGER_UI_LOCAL:
    INSTALLED_APPS.append("drf_spectacular_sidecar")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out log-in into config.lockout's 429 answer.
    "axes.middleware.AxesMiddleware",
]

# A strict Content-Security-Policy (django-csp) on every response: scripts, styles, images and API calls
# from this server only; no inline script or style unless it carries the response's nonce (NONCE is
# added to the header only for a response whose template used request.csp_nonce; none does today), no
# event-handler or style="" attributes, no eval, no plugins, no <base>, never framed. Shared behaviour
# lives in static/js/page.js. Swagger UI's page widens img-src by data: only (annotation/api/docs.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

# --- Database -------------------------------------------------------------------------------------
SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{SQLITE_PATH}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker are separate processes writing the same file: wait for the lock
    # instead of failing with "database is locked". The test database is a file too, so that a real
    # worker process started by the tests can open it.
    # WAL: readers (the page polling) never block the writer (a label, a job), and a commit needs no
    # fsync of the whole database; synchronous=NORMAL is the documented safe pairing for WAL.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's full set: not like the username or e-mail, long enough, not a common password, not all digits.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("LEUKOLOOP_PASSWORD_MIN_LENGTH", 10)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out username before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lock-out: this many wrong passwords for one username from one address lock that pair out for the
# cool-off (each further try while locked starts it again). The pair, not the address alone: the
# annotators of a hospital often share one address, and one attacker must not lock all of them out.
AXES_FAILURE_LIMIT = env_int("LEUKOLOOP_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LEUKOLOOP_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.lockout.lockout_response"
# The client's address as DRF's throttles see it (REMOTE_ADDR, or X-Forwarded-For behind
# LEUKOLOOP_PROXY_COUNT trusted proxies), so a forged header neither dodges a lock nor a throttle.
AXES_CLIENT_IP_CALLABLE = "config.lockout.client_ip"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"

# E-mail (invitations, password resets): printed to the console in development; with
# LEUKOLOOP_EMAIL_FILE_PATH each message is a file in that folder; LEUKOLOOP_EMAIL_BACKEND names any other
# backend (e.g. django.core.mail.backends.smtp.EmailBackend, with Django's EMAIL_HOST... settings).
EMAIL_FILE_PATH = env_str("LEUKOLOOP_EMAIL_FILE_PATH", "")
EMAIL_BACKEND = env_str(
    "LEUKOLOOP_EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend"
    if EMAIL_FILE_PATH
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env_str("LEUKOLOOP_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("LEUKOLOOP_EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("LEUKOLOOP_EMAIL_FROM", "leukoloop@localhost")
# How long an invitation's or a reset's link works.
PASSWORD_RESET_TIMEOUT = env_int("LEUKOLOOP_PASSWORD_LINK_HOURS", 72) * 3600

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
# `make run` serves straight from the finders, so it needs no collectstatic step. `make serve`
# (LEUKOLOOP_COLLECTSTATIC=1) collects into STATIC_ROOT first: WhiteNoise then serves those files only,
# compressed and under content-hashed names that browsers may cache for good.
COLLECTED_STATIC = env_bool("LEUKOLOOP_COLLECTSTATIC", False)
WHITENOISE_USE_FINDERS = not COLLECTED_STATIC
WHITENOISE_AUTOREFRESH = DEBUG
if COLLECTED_STATIC:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "config.storage.StaticStorage"},
    }

# Cell images and model artefacts. Images are served through a permission-checked view, not MEDIA_URL.
MEDIA_ROOT = Path(env_str("LEUKOLOOP_MEDIA_ROOT", str(VAR_DIR / "media"))).resolve()
MEDIA_URL = "media/"

# --- Celery ---------------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport, but a worker never reads a message half written (config/broker.py).
    CELERY_BROKER_TRANSPORT = "config.broker:AtomicFilesystemTransport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # The folder is polled; the default second would add up to a second to every job's start.
        "polling_interval": 0.1,
    }
    # The transport does not create its folders.
    for _folder in ("queue", "processed", "control"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis hands an unacknowledged job to another worker after this many seconds. Pretraining runs for
    # many minutes, so the default hour is raised; a dead worker's job is picked up much sooner by the
    # heartbeat sweep (LEUKOLOOP_JOB_STALE_SECONDS) anyway.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("LEUKOLOOP_VISIBILITY_TIMEOUT", 6 * 3600)
    }
# Job state lives in the Job table, so Celery's own result store is not needed.
CELERY_TASK_IGNORE_RESULT = True
# A job is acknowledged only after it finished, so a killed worker's job is delivered again.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Queues are decided in one place, jobs.routing: a task with no route falls back to Celery's default
# queue, which is the loop's (a test checks both against the queues `make run` starts workers for).
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = ("jobs.routing.route_task",)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Workers that run `celery worker -B` (one per deployment) sweep for jobs the broker or a dead worker lost
# (jobs.services.job_requeue_stale); with the resend delay below, a job queued while the broker was down
# is sent within a minute of the broker coming back.
LEUKOLOOP_JOB_SWEEP_SECONDS = env_int("LEUKOLOOP_JOB_SWEEP_SECONDS", 30)
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-jobs": {  # routing.SWEEP_TASK
        "task": "leukoloop.requeue_stale_jobs",
        "schedule": float(LEUKOLOOP_JOB_SWEEP_SECONDS),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- leukoloop ------------------------------------------------------------------------------------
# Images above this many pixels are refused at import (decompression-bomb guard).
LEUKOLOOP_MAX_IMAGE_PIXELS = env_int("LEUKOLOOP_MAX_IMAGE_PIXELS", 40_000_000)
# A running job writes a heartbeat every few seconds; one silent for this long is a dead worker's.
LEUKOLOOP_JOB_STALE_SECONDS = env_int("LEUKOLOOP_JOB_STALE_SECONDS", 60)
LEUKOLOOP_JOB_HEARTBEAT_SECONDS = env_int("LEUKOLOOP_JOB_HEARTBEAT_SECONDS", 5)
# A queued job whose message never reached the broker (it was down) is sent again after this long...
LEUKOLOOP_JOB_RESEND_SECONDS = env_int("LEUKOLOOP_JOB_RESEND_SECONDS", 30)
# ... and one still queued this long after its message was sent is taken for lost (a broker restarted
# empty, a worker killed between fetching the message and claiming the job) and sent again; a duplicate
# costs nothing (only one claim wins), so this only bounds how long a lost job waits.
LEUKOLOOP_JOB_LOST_SECONDS = env_int("LEUKOLOOP_JOB_LOST_SECONDS", 600)
# A job whose worker died this many times (killed, out of memory) fails with the reason instead of
# being run again.
LEUKOLOOP_JOB_MAX_ATTEMPTS = env_int("LEUKOLOOP_JOB_MAX_ATTEMPTS", 3)
# An embedding of more cells than this is split into shards of this many: a second (third...) worker on
# the train queue embeds shards beside the job's own worker, which takes whatever shard is left.
LEUKOLOOP_EMBED_SHARD_CELLS = env_int("LEUKOLOOP_EMBED_SHARD_CELLS", 8192)
# Torch threads per worker process (0: one per core). Two train workers on one machine: set 1 each.
LEUKOLOOP_TORCH_THREADS = env_int("LEUKOLOOP_TORCH_THREADS", 0)
# Index versions (embeddings and FAISS index: 166 MB at 16k cells, one per re-embedding) whose files are
# kept: the newest this many and the newest classifier's (loop.handlers.retention).
# The rows stay, marked pruned; 0 keeps every file.
LEUKOLOOP_KEEP_INDEX_VERSIONS = env_int("LEUKOLOOP_KEEP_INDEX_VERSIONS", 3)
# Encoders, embeddings, FAISS indexes and classifiers, one folder per job.
LEUKOLOOP_ARTIFACTS_DIR = Path(env_str("LEUKOLOOP_ARTIFACTS_DIR", str(VAR_DIR / "artifacts"))).resolve()
LEUKOLOOP_DATA_DIR = Path(
    env_str("LEUKOLOOP_DATA_DIR", str(BASE_DIR.parent / "shared" / "data" / "leukocytes"))
).resolve()

# Throttle counters and other short-lived shared state. Per process by default; with several web
# processes (`make serve`) they must share one: LEUKOLOOP_CACHE_URL=redis://host:6379/<db>.
CACHE_URL = env_str("LEUKOLOOP_CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL.startswith(("redis://", "rediss://"))
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

REST_FRAMEWORK = {
    # Token first, so that a request without credentials gets 401 with "WWW-Authenticate: Token".
    # Tokens come from POST /api/auth/token/ (django-rest-knox); the pages' own scripts use the session.
    # No Basic auth: it would send the password with every request and bypass the log-in lockout.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Anonymous callers (the token endpoint, the schema) per address; signed-in users per user. The user
    # rate is far above what the labelling page needs (it polls every 1.5 s and posts a label per key).
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("LEUKOLOOP_THROTTLE_ANON", "60/minute"),
        "user": env_str("LEUKOLOOP_THROTTLE_USER", "1200/minute"),
    },
    # Trusted proxies in front of the server; 0: the client's address is REMOTE_ADDR, X-Forwarded-For is
    # ignored (anyone can send it).
    "NUM_PROXIES": env_int("LEUKOLOOP_PROXY_COUNT", 0),
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every error as {"error": {"status", "code", "detail", "fields"}} (annotation/api/errors.py).
    "EXCEPTION_HANDLER": "annotation.api.errors.exception_handler",
}

# API tokens expire after this long; a script logs in again for a new one (README "API").
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=env_int("LEUKOLOOP_TOKEN_TTL_HOURS", 10)),
    "AUTH_HEADER_PREFIX": "Token",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "leukoloop API",
    "DESCRIPTION": (
        "Label white-blood-cell images with active learning: projects, cells, annotations, query batches, "
        "jobs and model versions. Authenticate with a session or with `Authorization: Token <key>` "
        "(POST /api/auth/token/). Outsiders get 404 on every object of a project. Every error is "
        '`{"error": {"status", "code", "detail", "fields"}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    # The errors any operation may answer (401, 403 on unsafe methods, 429), added to every operation.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "annotation.api.schema.add_common_errors",
    ],
    # Fields of the same name with different choices (kind, role): name their enums apart.
    "ENUM_NAME_OVERRIDES": {
        "JobKindEnum": "jobs.models.Job.Kind",
        "ModelVersionKindEnum": "loop.models.ModelVersion.Kind",
        "MembershipRoleEnum": "annotation.models.Membership.Role",
        "CellRoleEnum": "annotation.models.Cell.Role",
    },
    **(
        {"SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR", "REDOC_DIST": "SIDECAR"}
        if SWAGGER_UI_LOCAL
        else {}
    ),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The labelling page's poll (every 1.5 s per open page) demoted to DEBUG (config/request_log.py).
    "filters": {"quiet_polls": {"()": "config.request_log.DemotePollRequests"}},
    "formatters": {
        # As Django's own for runserver's request lines (redeclared since django.server is set up here).
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "django.server": {
            "level": "INFO",
            "class": "logging.StreamHandler",
            "formatter": "django.server",
        },
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # django-axes says at INFO level what every log-in did; failed log-ins and lock-outs are WARNINGs.
        "axes": {"level": env_str("LEUKOLOOP_AXES_LOG_LEVEL", "WARNING")},
        # runserver's request lines, as Django sets them up, less the poll.
        "django.server": {
            "handlers": ["django.server"],
            "level": "INFO",
            "filters": ["quiet_polls"],
            "propagate": False,
        },
        # FAISS says at INFO level which CPU build it tried to load ("Loading faiss with AVX512 support.",
        # "Could not load library...") in every process that imports it: every command and worker.
        "faiss.loader": {"level": "WARNING"},
    },
}
# Nor its start-up banner in every process.
AXES_VERBOSE = False

VAR_DIR.mkdir(parents=True, exist_ok=True)
# WhiteNoise warns about a missing STATIC_ROOT even though it serves from the finders here.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
