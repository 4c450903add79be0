"""How the kubernetes plugin talks to an API server: the connection, pacing and counting.

    client = make_client(endpoint, tls, kubeconfig, connections=4)
    gate = RequestGate(client, qps=5, burst=10, max_inflight=0)
    response = gate.send(call, stop, **params)  # paced by the token bucket, counted, timed

``RequestGate`` is the part of client-go's REST client that the kubernetes plugin relies
on: a token bucket (``apiserver_qps``/``apiserver_burst``, client-go's 5 and 10 when unset),
a cap on requests in flight (``apiserver_max_inflight``, 0: none; a request counts until its
response headers arrive, as CoreDNS's round tripper counts it, so a long watch does not hold
a slot), and CoreDNS's client metrics:

* ``coredns_kubernetes_rest_client_request_duration_seconds{verb, host}``: until the
  response headers arrive (a watch's stream is not part of it)
* ``coredns_kubernetes_rest_client_rate_limiter_duration_seconds{verb, host}``: the wait
  for a token
* ``coredns_kubernetes_rest_client_requests_total{code, method, host}``: ``code`` is the
  HTTP status, or ``<error>`` when no answer came

``verb``/``method`` is the HTTP method (``GET``), ``host`` the server's ``host:port``.

``Backoff`` is client-go's reflector backoff: from 800 ms doubling to 30 s, each delay drawn
from [step, 2 x step) (jitter 1.0), back to the start once no failure was seen for 2 minutes.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from pydns import metrics

# prometheus.DefBuckets, as CoreDNS uses for these histograms.
DEF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_request_duration = metrics.histogram(
    "coredns_kubernetes_rest_client_request_duration_seconds",
    "Request latency in seconds. Broken down by verb and host.", ("verb", "host"), buckets=DEF_BUCKETS)
_limiter_duration = metrics.histogram(
    "coredns_kubernetes_rest_client_rate_limiter_duration_seconds",
    "Client side rate limiter latency in seconds. Broken down by verb and host.", ("verb", "host"),
    buckets=DEF_BUCKETS)
_requests = metrics.counter(
    "coredns_kubernetes_rest_client_requests_total",
    "Number of HTTP requests, partitioned by status code, method, and host.", ("code", "method", "host"))

BACKOFF_BASE = 0.8
BACKOFF_CAP = 30.0
BACKOFF_RESET = 120.0
# A Retry-After longer than this is not believed (a hostile or broken answer must not park us for days).
RETRY_AFTER_MAX = 60.0


class ApiConfigError(Exception):
    """The client configuration (kubeconfig, certificates, in-cluster account) could not be loaded."""


class Stopped(Exception):
    """The source is stopping: leave the loop without logging."""


class TokenBucket:
    """A thread-safe token bucket: ``qps`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, qps: float, burst: int):
        self.rate = float(qps)
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for a token; False if ``stop`` was set meanwhile."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= 1.0  # reserved now, paid for by waiting below
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            return not stop.wait(wait)
        return not stop.is_set()


class Backoff:
    """client-go's reflector backoff, for one or several reflectors (thread-safe).

    ``delay()`` after a failure gives the seconds to wait.  Failures that come while a wait
    is already running (another kind failing against the same dead server) join that wait
    instead of doubling the step again, so the kinds sharing one ``Backoff`` retry together,
    once per step.  ``at_least`` (a Retry-After) stretches the current wait for everyone.
    """

    def __init__(self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP, reset_after: float = BACKOFF_RESET):
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self.step = base
        self.until = 0.0  # when the current wait ends
        self.last = float("-inf")  # when the last wait began
        self._lock = threading.Lock()

    def delay(self, at_least: float = 0.0) -> float:
        with self._lock:
            now = time.monotonic()
            if now < self.until:
                wait = self.until - now
            else:
                if now - self.last > self.reset_after:
                    self.step = self.base
                wait = self.step * (1.0 + random.random())
                self.step = min(self.cap, self.step * 2)
                self.last = now
            wait = max(wait, min(at_least, RETRY_AFTER_MAX))
            self.until = max(self.until, now + wait)
            return wait


class RequestGate:
    """Every request to the API server goes through here: paced, capped and counted."""

    def __init__(self, client, qps: float | None, burst: int | None, max_inflight: int = 0):
        self.limiter = TokenBucket(qps if qps and qps > 0 else 5.0, burst if burst and burst > 0 else 10)
        self.inflight = threading.BoundedSemaphore(max_inflight) if max_inflight and max_inflight > 0 else None
        self.host = urlsplit(client.configuration.host).netloc

    def send(self, call, stop: threading.Event, *, paced: bool = True, **params):
        """``call(**params)`` (a raw, unread response) once a token and an in-flight slot are free.

        ``paced=False`` skips the token bucket (the further pages of one list)."""
        from kubernetes.client.exceptions import ApiException

        if paced:
            waited = time.monotonic()
            if not self.limiter.acquire(stop):
                raise Stopped()
            _limiter_duration.labels("GET", self.host).observe(time.monotonic() - waited)
        if self.inflight is not None:
            while not self.inflight.acquire(timeout=0.1):
                if stop.is_set():
                    raise Stopped()
        started = time.monotonic()
        code = "<error>"
        try:
            response = call(_preload_content=False, **params)
            code = str(getattr(response, "status", 200))
            return response
        except ApiException as exc:
            code = str(exc.status) if exc.status else code
            raise
        finally:
            if self.inflight is not None:
                self.inflight.release()
            _request_duration.labels("GET", self.host).observe(time.monotonic() - started)
            _requests.labels(code, "GET", self.host).inc()


def make_client(endpoint, tls, kubeconfig, connections: int):
    """An ApiClient for the chosen connection, with our own retry, pool and keepalive settings."""
    from kubernetes import client, config
    from urllib3.util.retry import Retry

    cfg = client.Configuration()
    try:
        if kubeconfig is not None:
            path, context = kubeconfig
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
        elif endpoint:
            cfg.host = endpoint.rstrip("/")
            if tls is not None:
                cfg.cert_file, cfg.key_file, cfg.ssl_ca_cert = tls
        else:
            config.load_incluster_config(client_configuration=cfg)
    except Exception as exc:
        where = f"kubeconfig '{kubeconfig[0]}'" if kubeconfig is not None else "in-cluster configuration"
        raise ApiConfigError(f"unable to load {where}: {exc}") from exc
    # Retry a stale keep-alive connection once; every other failure goes to our backoff.
    cfg.retries = Retry(total=1, connect=0, read=1, redirect=0, status=0, other=0,
                        respect_retry_after_header=False, raise_on_status=False)
    cfg.socket_options = keepalive_socket_options()
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, connections + 2)
    try:
        api_client = client.ApiClient(cfg)
    except Exception as exc:  # unreadable certificate files show up here
        raise ApiConfigError(f"unable to set up the API client: {exc}") from exc
    from pydns import __version__

    api_client.user_agent = f"pydns/{__version__}"
    return api_client


def keepalive_socket_options() -> list[tuple[int, int, int]]:
    """urllib3's socket options plus client-go's TCP keepalive (30 s idle, then a probe every
    15 s, 9 probes): a peer that vanished without a word ends a watch even between bookmarks."""
    import socket

    from urllib3.connection import HTTPConnection

    options = [*HTTPConnection.default_socket_options, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 9)):
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def describe(exc: BaseException) -> str:
    """A one-line reason for a failed request."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    if isinstance(exc, ApiException):
        message = status_message(exc.body) or exc.reason or ""
        return f"{exc.status} {message}".strip()
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return str(exc) or type(exc).__name__


def retry_after(exc) -> float:
    """The seconds a 429/503 answer asks us to wait (0 when it names none)."""
    try:
        return max(0.0, float((exc.headers or {}).get("Retry-After") or 0))
    except (TypeError, ValueError):
        return 0.0


def status_message(body: Any) -> str:
    try:
        return str(json.loads(body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return ""
