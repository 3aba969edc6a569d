"""leukoloop settings, read from the environment in one place.

Defaults give a platform that runs on a bare machine: a SQLite file and a Celery broker that needs no
server (kombu's filesystem transport). ``DATABASE_URL`` switches to PostgreSQL and ``CELERY_BROKER_URL``
to Redis. Background work always runs in a separate worker process, never inside a web request.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dj_database_url
import django_stubs_ext

from config.env import env_bool, env_int, env_list, env_str

# Lets admin and other generic classes be subscripted (ModelAdmin[Cell]) at run time, as the type stubs want.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the platform writes at run time (database file, broker folders, media, models) lives here.
VAR_DIR = Path(env_str("LEUKOLOOP_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DJANGO_DEBUG", False)
# A fixed development key is only acceptable when DEBUG is on or nothing is served beyond localhost;
# production deployments must set DJANGO_SECRET_KEY.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "leukoloop-insecure-local-key-change-me")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
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
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Serve straight from the finders so that `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

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
# Encoders, embeddings, FAISS indexes and classifiers, one folder per job.
LEUKOLOOP_ARTIFACTS_DIR = Path(env_str("LEUKOLOOP_ARTIFACTS_DIR", str(VAR_DIR / "artifacts"))).resolve()
LEUKOLOOP_DATA_DIR = Path(
    env_str("LEUKOLOOP_DATA_DIR", str(BASE_DIR.parent / "shared" / "data" / "leukocytes"))
).resolve()

REST_FRAMEWORK = {
    # Token first, so that a request without credentials gets 401 with "WWW-Authenticate: Token".
    # Tokens come from POST /api/auth/token/; the pages' own scripts use the session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every error as {"error": {"status", "code", "detail", "fields"}} (annotation/api/errors.py).
    "EXCEPTION_HANDLER": "annotation.api.errors.exception_handler",
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
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

VAR_DIR.mkdir(parents=True, exist_ok=True)
# WhiteNoise warns about a missing STATIC_ROOT even though it serves from the finders here.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
