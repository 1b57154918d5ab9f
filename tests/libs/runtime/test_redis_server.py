"""The test harness's redis-server: a first start on a port someone took meanwhile moves to another port."""

from __future__ import annotations

import socket

import redis

from parley_runtime.testing import RedisServer


def test_a_first_start_on_a_taken_port_starts_on_another() -> None:
    # A CI run failed so: a free port chosen for a cluster node was taken before redis-server bound it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RedisServer(cluster_bus=True)
        server.port = taken.getsockname()[1]
        try:
            server.start()
            assert server.port != taken.getsockname()[1]
            with redis.Redis(port=server.port) as client:
                assert client.ping()
        finally:
            server.close()
