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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import redis

from webapp.run import DEFAULT_REDIS_URL, ROOT, listening, redis_answers

from .stats import log

# 32 bytes, like a real X25519 key; it protects nothing but the bench's own uploads.
BENCH_TRANSIT_KEY = base64.b64encode(b"veil web bench transit key, 32 b").decode("ascii")
BENCH_SECRET_KEY = "veil-bench-only-not-secret"
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


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]


@dataclass
class Stack:
    """The product's processes as ``make run`` starts them, each in its own session, logging to a file."""

    log_dir: Path
    children: dict[str, Child] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], **env: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name.replace(' ', '-')}.log"
        out = log.open("ab")
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children[name] = Child(name, process, log, out)

    def start_web(self, port: int, timeout: float = 60.0) -> None:
        argv = [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", HOST, "--port", str(port)]
        self.start("web", [*argv, "--lifespan", "off", "--no-access-log", "--log-level", "warning"])
        deadline = time.monotonic() + timeout
        while not listening(HOST, port):
            self.check()
            if time.monotonic() > deadline:
                raise BenchError(f"uvicorn did not listen on {HOST}:{port} in {timeout:.0f} s\n{self.tail('web')}")
            time.sleep(0.1)

    def start_worker(self, concurrency: int) -> None:
        """A worker like webapp/run.py's, plus the bench's probe; each pool process loads the model when it starts."""
        argv = [sys.executable, "-m", "celery", "-A", "webapp", "worker", "--pool", "prefork"]
        argv += ["--concurrency", str(concurrency), "--loglevel", "WARNING", "-n", f"bench-{os.getpid()}@%h"]
        argv += ["--include", "lab.webbench.probe"]  # times the cipher inside the task; changes nothing else
        # as webapp/run.py's worker: each pool process takes its share of the cores
        self.start("worker", argv, VEIL_WORKER_CONCURRENCY=str(concurrency))

    def check(self) -> None:
        """Raise if a child has exited."""
        for child in self.children.values():
            code = child.process.poll()
            if code is not None:
                raise BenchError(f"the {child.name} process exited with code {code}\n{self.tail(child.name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        child = self.children.get(name)
        if child is None or not child.log.exists():
            return ""
        return child.log.read_text(errors="replace")[-chars:]

    def stop(self, name: str, grace: float = 30.0) -> None:
        """SIGTERM to the child's process group (a worker finishes its photo), SIGKILL after ``grace``."""
        child = self.children.pop(name, None)
        if child is None:
            return
        if child.process.poll() is None:
            _signal_group(child.process, signal.SIGTERM)
            try:
                child.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in {grace:.0f} s; killing it")
        # Whatever is left of its group (a pool process whose master died, or all of it after the grace).
        _signal_group(child.process, signal.SIGKILL)
        child.process.wait()
        child.log_file.close()

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.stop(name)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # each child leads its own process group (start_new_session)
