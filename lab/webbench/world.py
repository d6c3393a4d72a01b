"""The benchmark's own world, made before Django starts and removed afterwards.

A temporary VEIL_VAR_DIR (the SQLite database and the media), or a throwaway Postgres database
when DATABASE_URL is set; a Redis database index of its own, flushed before and after; a
fixed transit key, DEBUG off, a bench-only SECRET_KEY. The product's processes (a Celery
worker, uvicorn) run as children with that environment and are stopped on the way out.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from webapp.processes import ChildExited, Supervisor, argon2_share, redis_answers, web_command, worker_command
from webapp.run import DEFAULT_REDIS_URL

from .stats import log

# 32 bytes, like a real X25519 key; it protects nothing but the bench's own uploads.
BENCH_TRANSIT_KEY = base64.b64encode(b"veil web bench transit key, 32 b").decode("ascii")
BENCH_SECRET_KEY = "veil-bench-only-not-secret-0123456789abcdef"
HOST = "127.0.0.1"
# Set in the bench's Redis database while it runs: a database holding anything else is not flushed.
OWNER_MARK = "veil:bench:owner"
PROBE_PREFIX = "veil:bench:probe:"


class BenchError(RuntimeError):
    """The bench could not set up or run; the message says what to fix."""


@dataclass
class World:
    var_dir: Path
    database: str  # "SQLite" or "PostgreSQL"
    redis_url: str | None  # None when no part needs Redis


@contextlib.contextmanager
def bench_world(*, redis_db: int | None) -> Iterator[World]:
    """Set up the environment (before ``django.setup()``); everything is undone on exit."""
    with contextlib.ExitStack() as stack:
        var_dir = Path(tempfile.mkdtemp(prefix="veil-bench-"))
        stack.callback(shutil.rmtree, var_dir, ignore_errors=True)
        database_url = stack.enter_context(throwaway_database(os.environ.get("DATABASE_URL")))
        redis_url = None
        if redis_db is not None:
            base = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
            redis_url = stack.enter_context(own_redis_db(base, redis_db))
        configure_environment(var_dir, database_url, redis_url)
        yield World(var_dir, "PostgreSQL" if database_url else "SQLite", redis_url)


def configure_environment(var_dir: Path, database_url: str | None, redis_url: str | None) -> None:
    """What webapp.settings reads, for this process and the children it starts."""
    env = os.environ
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    env["VEIL_VAR_DIR"] = str(var_dir)
    env["MEDIA_ROOT"] = str(var_dir / "media")
    if database_url:
        env["DATABASE_URL"] = database_url
    else:
        env.pop("DATABASE_URL", None)  # SQLite in VEIL_VAR_DIR
    # Nothing reads Redis without a live part; the index there is still the bench's own.
    env["REDIS_URL"] = redis_url or with_db(env.get("REDIS_URL") or DEFAULT_REDIS_URL, 13)
    env["VEIL_TRANSIT_PRIVATE_KEY"] = BENCH_TRANSIT_KEY
    env.pop("VEIL_TRANSIT_PUBLIC_KEY", None)
    env["DEBUG"] = "0"
    env["SECRET_KEY"] = BENCH_SECRET_KEY
    env["ALLOWED_HOSTS"] = HOST
    env["CSRF_TRUSTED_ORIGINS"] = ""
    env["LOG_LEVEL"] = "WARNING"
    env["PYTHONUNBUFFERED"] = "1"


@contextlib.contextmanager
def throwaway_database(url: str | None) -> Iterator[str | None]:
    """None (SQLite in the temp dir) without ``url``; else a new Postgres database beside it, dropped on exit."""
    if not url:
        yield None
        return
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise BenchError(f"with DATABASE_URL the bench makes a throwaway Postgres database; {parts.scheme} is not one")
    import psycopg
    from psycopg import sql

    name = f"veil_bench_{os.getpid()}_{secrets.token_hex(3)}"
    server = urlunsplit(parts._replace(scheme="postgresql"))
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"could not create the bench's database {name} at DATABASE_URL: {exc}") from exc
    log(f"created the throwaway Postgres database {name}")
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        log(f"dropped {name}")


def probe_key(photo_id: str) -> str:
    """Where the worker's probe (lab.webbench.probe) leaves its timings of one photo."""
    return f"{PROBE_PREFIX}{photo_id}"


def with_db(url: str, index: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{index}"))


@contextlib.contextmanager
def own_redis_db(base_url: str, index: int) -> Iterator[str]:
    """``base_url`` pointed at database ``index``, which must be empty (or a previous bench's); flushed on exit."""
    url = with_db(base_url, index)
    if not redis_answers(url):
        raise BenchError(f"nothing answers at {url}; start Redis (or set REDIS_URL) and run the bench again")
    client = redis.Redis.from_url(url)
    if client.dbsize() and not client.exists(OWNER_MARK):
        raise BenchError(f"Redis database {index} at {url} holds data that is not the bench's; choose --redis-db")
    client.flushdb()
    client.set(OWNER_MARK, str(os.getpid()))
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class Stack(Supervisor):
    """The product's processes as ``make run`` starts them (webapp.processes), logging to files;
    any trouble is a BenchError."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log)
        self.log_dir = log_dir

    def start_child(self, name: str, argv: list[str], **env: str) -> None:
        self.start(name, argv, {**os.environ, **env}, log=self.log_dir / f"{name.replace(' ', '-')}.log")

    def start_web(self, port: int, timeout: float = 60.0, workers: int = 1) -> None:
        argv = web_command(HOST, port, workers=workers, extra=["--log-level", "warning"])
        self.start_child("web", argv, VEIL_ARGON2_AT_ONCE=argon2_share(workers))
        try:
            self.wait_listening(HOST, port, timeout)
        except ChildExited as exc:
            raise BenchError(f"{exc}\n{self.tail('web')}") from None

    def start_worker(self, concurrency: int) -> None:
        """A worker like make run's, plus the bench's probe (it times the cipher inside the task and
        changes nothing else); each pool process takes its share of the cores, as in make run."""
        extra = ["-n", f"bench-{os.getpid()}@%h", "--include", "lab.webbench.probe"]
        argv = worker_command(concurrency=concurrency, loglevel="WARNING", extra=extra)
        self.start_child("worker", argv, VEIL_WORKER_CONCURRENCY=str(concurrency))

    def check(self) -> None:
        try:
            super().check()
        except ChildExited as exc:
            raise BenchError(str(exc)) from None

    def stop(self, name: str, grace: float = 30.0) -> None:
        super().stop(name, grace)
