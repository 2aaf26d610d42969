"""A real `redis-server` for the tests: the class lives in `benchmarks/redis_server.py`,
which the fleet benchmark (`python -m benchmarks.fleet`) starts too."""

from benchmarks.redis_server import (
    READY_SECONDS,
    START_ATTEMPTS,
    RedisServer,
    RedisServerError,
    free_port,
)

__all__ = ["READY_SECONDS", "START_ATTEMPTS", "RedisServer", "RedisServerError", "free_port"]
