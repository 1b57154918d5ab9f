"""parley_runtime: what every Parley service shares.

Configuration from the environment (:mod:`~parley_runtime.config`), JSON logs with trace ids
(:mod:`~parley_runtime.logs`), OpenTelemetry (:mod:`~parley_runtime.telemetry`), the error model
(:mod:`~parley_runtime.errors`), authentication (:mod:`~parley_runtime.auth`), the gRPC server bootstrap and its
interceptors (:mod:`~parley_runtime.server`, :mod:`~parley_runtime.interceptors`), Redis access, key builders and
rate limits (:mod:`~parley_runtime.redis_client`, :mod:`~parley_runtime.redis_keys`,
:mod:`~parley_runtime.ratelimit`), events (:mod:`~parley_runtime.events`), provider caches
(:mod:`~parley_runtime.providers`) and test helpers (:mod:`~parley_runtime.testing`).
"""
