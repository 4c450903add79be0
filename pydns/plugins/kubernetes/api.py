"""The kubernetes plugin's API source: list+watch against a Kubernetes API server.

    source = ApiSource(index, kubeconfig=("/etc/kubeconfig", None), labels="app=web")
    await source.start()      # returns at once; one background thread per kind
    source.synced()           # True once every kind has been listed in full
    await source.stop()

Where it connects, as CoreDNS decides: ``kubeconfig`` (path, context or None: the file's
current context) wins; else ``endpoint`` (a URL, with ``tls`` = (cert, key, cacert) for a
client certificate); else the in-cluster service account.  A configuration that cannot be
loaded raises ``ApiConfigError`` from the constructor.

Per kind, the way client-go's reflector works: a paginated list (``limit``/``continue``),
applied page by page, replaces that kind's state in the index, then a watch from the list's
resourceVersion (with bookmarks) applies each event as an upsert or delete.  A watch that
ends or breaks resumes from the last version seen; 410 Gone (an ERROR event, or an HTTP
answer to a list or watch) means history was lost, so the kind is listed again and its
state replaced.  Errors are retried with exponential backoff and jitter; the index is never
cleared, so the last known records keep being served while the API is away.  A 403 is
logged once per kind with the RBAC rule that is missing.  ``qps``/``burst`` shape every
list and watch through one token bucket (client-go's defaults, 5 and 10, when unset); the
further pages of a list are not held back by it.

The official ``kubernetes`` client is the transport only: responses are read raw
(``_preload_content=False``) and parsed with ``json``; no model objects are built.  Its calls
block, so they run in threads; every index call is handed to the event loop with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("plugin/kubernetes")

DEFAULT_KINDS = ("Namespace", "Service", "EndpointSlice")
# Pods that can never serve traffic again are left out server-side, as CoreDNS does.
POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"


class ApiConfigError(Exception):
    """The client configuration (kubeconfig, certificates, in-cluster account) could not be loaded."""


class Gone(Exception):
    """410: the resourceVersion asked for is no longer in the server's history."""


@dataclass(frozen=True)
class KindSpec:
    kind: str
    api: str  # class name in kubernetes.client
    method: str
    group: str
    plural: str


KINDS = {s.kind: s for s in (
    KindSpec("Namespace", "CoreV1Api", "list_namespace", "", "namespaces"),
    KindSpec("Service", "CoreV1Api", "list_service_for_all_namespaces", "", "services"),
    KindSpec("EndpointSlice", "DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces", "discovery.k8s.io",
             "endpointslices"),
    KindSpec("Pod", "CoreV1Api", "list_pod_for_all_namespaces", "", "pods"),
)}


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
    """Exponential backoff with jitter: each delay is drawn from [step/2, step], step doubling up to ``cap``."""

    def __init__(self, base: float, cap: float):
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        step = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        return random.uniform(step / 2, step)

    def reset(self) -> None:
        self.failures = 0


class ApiSource:
    """Keeps ``index`` in step with the API server for ``kinds``.

    Tuning: ``page_size`` items per list request (client-go's 500: a page's raw JSON is
    parsed whole, and smaller pages leave less freed-but-scattered memory behind); retry
    delays from ``backoff_base`` doubling to ``backoff_cap`` seconds (short first retries,
    client-go's 30 s cap); watches last ``watch_timeout`` to twice that (server side);
    ``request_timeout`` is (connect, read) seconds for lists.
    """

    def __init__(self, index, *, endpoint: str | None = None, tls: tuple[str, str, str] | None = None,
                 kubeconfig: tuple[str, str | None] | None = None, labels: str | None = None,
                 namespace_labels: str | None = None, kinds=DEFAULT_KINDS, qps: float | None = None,
                 burst: int | None = None, page_size: int = 500, backoff_base: float = 0.5,
                 backoff_cap: float = 30.0, watch_timeout: float = 300.0,
                 request_timeout: tuple[float, float] = (5.0, 30.0)):
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unsupported kinds: {', '.join(unknown)}")
        self.index = index
        self.kinds = tuple(kinds)
        self.labels = labels or None
        self.namespace_labels = namespace_labels or None
        self.page_size = page_size
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.limiter = TokenBucket(qps if qps and qps > 0 else 5.0, burst if burst and burst > 0 else 10)
        self.client = _make_client(endpoint, tls, kubeconfig, len(self.kinds))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._synced: set[str] = set()
        self._reflectors: list[_Reflector] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for kind in self.kinds:
            reflector = _Reflector(self, KINDS[kind])
            self._reflectors.append(reflector)
            reflector.thread.start()

    def synced(self) -> bool:
        return len(self._synced) == len(self.kinds)

    async def stop(self) -> None:
        self._stop.set()
        for reflector in self._reflectors:
            reflector.interrupt()
        deadline = time.monotonic() + 2.0
        while any(r.thread.is_alive() for r in self._reflectors) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # A thread still blocked in a request ends at its request timeout and touches nothing.
        try:
            self.client.rest_client.pool_manager.clear()
        except Exception:
            pass

    # ---------------------------------------------------------------- handing work to the loop
    def post(self, fn: Callable, *args) -> threading.Event:
        """Run ``fn(*args)`` on the loop; the event is set once it has run (or never will)."""
        done = threading.Event()
        if self._stop.is_set():
            done.set()
            return done
        try:
            self._loop.call_soon_threadsafe(self._apply, fn, args, done)
        except RuntimeError:  # the loop is closed: the server is gone
            self._stop.set()
            done.set()
        return done

    def _apply(self, fn: Callable, args: tuple, done: threading.Event) -> None:
        try:
            if not self._stop.is_set():
                fn(*args)
        except Exception:
            log.exception("applying a change from the API failed")
        finally:
            done.set()

    def mark_synced(self, kind: str) -> None:
        self._synced.add(kind)


def _make_client(endpoint, tls, kubeconfig, connections: int):
    """An ApiClient for the chosen connection, with our own retry and pool settings."""
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
    cfg.keep_alive = True
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, connections + 2)
    try:
        api_client = client.ApiClient(cfg)
    except Exception as exc:  # unreadable certificate files show up here
        raise ApiConfigError(f"unable to set up the API client: {exc}") from exc
    from pydns import __version__

    api_client.user_agent = f"pydns/{__version__}"
    return api_client


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failed request."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    if isinstance(exc, ApiException):
        message = _status_message(exc.body) or exc.reason or ""
        return f"{exc.status} {message}".strip()
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return str(exc) or type(exc).__name__


def _retry_after(exc) -> float:
    """The seconds a 429/503 answer asks us to wait (0 when it names none)."""
    try:
        return float((exc.headers or {}).get("Retry-After") or 0)
    except (TypeError, ValueError):
        return 0.0


def _status_message(body: Any) -> str:
    try:
        return str(json.loads(body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return ""


class _Reflector:
    """List, then watch, one kind for ever (until stopped), in its own thread."""

    def __init__(self, source: ApiSource, spec: KindSpec):
        from kubernetes import client

        self.source = source
        self.spec = spec
        self.call = getattr(getattr(client, spec.api)(source.client), spec.method)
        self.selector = source.namespace_labels if spec.kind == "Namespace" else source.labels
        self.fields = POD_FIELD_SELECTOR if spec.kind == "Pod" else None
        self.backoff = Backoff(source.backoff_base, source.backoff_cap)
        self.stop = source._stop
        self.response = None  # the response being read, so stop() can cut it
        self.version: str | None = None  # where the next watch resumes; None: list first
        self.failing: str | None = None  # the reason of the current run of failures, logged once
        self.thread = threading.Thread(target=self.run, name=f"kubernetes-{spec.plural}", daemon=True)

    def interrupt(self) -> None:
        response = self.response
        if response is not None:
            try:
                response.shutdown()
            except Exception:
                pass

    def run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self.stop.is_set():
            verb = "list" if self.version is None else "watch"
            delay = 0.0
            try:
                if self.version is None:
                    self.version = self.list()
                    verb = "watch"
                self.watch()
                continue
            except Gone:
                self.relist()
                continue
            except ApiException as exc:
                if exc.status == 410:
                    self.relist()
                    continue
                self.failed(verb, exc)
                delay = _retry_after(exc)
            except Exception as exc:
                if self.stop.is_set():
                    return
                self.failed(verb, exc)
            self.stop.wait(max(self.backoff.next(), min(delay, self.source.backoff_cap)))

    def relist(self) -> None:
        if self.version is not None:
            log.info("%s: resourceVersion %s is too old; listing again", self.spec.plural, self.version)
        self.version = None

    # ---------------------------------------------------------------- list
    def list(self) -> str:
        """List the kind page by page; each page is applied before the next is read.

        A large cluster's raw objects are never all held at once (10,000 services and their
        slices are hundreds of MB as dicts); the keys seen go to ``retain`` at the end,
        which deletes what the list no longer holds.
        """
        seen: set = set()
        token = None
        applied = None
        while True:
            page = self.request(limit=self.source.page_size, _continue=token,
                                _request_timeout=self.source.request_timeout)
            try:
                body = json.loads(page.read())
            except BaseException:
                self.done(page, clean=False)
                raise
            self.done(page)
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            self.wait(applied)
            applied = self.source.post(self.source.index.upsert_all, self.spec.kind, body.get("items") or [], seen)
            del body
            if not token:
                break
        version = str(meta.get("resourceVersion") or "")
        self.wait(applied)
        self.source.post(self.listed, seen)
        self.recovered()
        return version

    def wait(self, applied: threading.Event | None) -> None:
        """Hold the next page until the loop has applied the last one (or we are stopping)."""
        while applied is not None and not applied.wait(0.1):
            if self.stop.is_set():
                raise _Stopped()

    def listed(self, seen: set) -> None:
        self.source.index.retain(self.spec.kind, seen)
        self.source.mark_synced(self.spec.kind)
        _trim_heap()

    # ---------------------------------------------------------------- watch
    def watch(self) -> None:
        """Stream events from ``self.version``, advancing it, until the stream ends."""
        timeout = max(1, int(self.source.watch_timeout * (1 + random.random())))
        stream = self.request(watch=True, resource_version=self.version, allow_watch_bookmarks=True,
                              timeout_seconds=timeout,
                              _request_timeout=(self.source.request_timeout[0], timeout + 30))
        self.recovered()
        opened = time.monotonic()
        events = 0
        clean = False
        try:
            buffer = b""
            for chunk in _chunks(stream):
                buffer += chunk
                if b"\n" not in chunk:
                    continue  # an event split across chunks
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.event(line)
                        events += 1
            clean = True
        finally:
            self.done(stream, clean)
        if events == 0 and time.monotonic() - opened < 1.0 and not self.stop.is_set():
            # A server that ends watches at once would otherwise be asked again at full rate.
            self.stop.wait(self.backoff.next())

    def event(self, line: bytes) -> None:
        event = json.loads(line)
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone(obj.get("message", ""))
            raise RuntimeError(f"watch error {code}: {obj.get('message', '')}")
        if etype in ("ADDED", "MODIFIED"):
            self.source.post(self.source.index.upsert, self.spec.kind, obj)
        elif etype == "DELETED":
            self.source.post(self.source.index.delete, self.spec.kind, obj)
        elif etype != "BOOKMARK":
            log.warning("%s: unexpected watch event type %r", self.spec.plural, etype)
            return
        self.version = (obj.get("metadata") or {}).get("resourceVersion") or self.version

    # ---------------------------------------------------------------- requests
    def request(self, **kw):
        # The pages of one list are one snapshot, paced by how fast we apply them; making them
        # wait for tokens too would only stretch the list towards its continue token's expiry
        # (a 410) and hold a large cluster's first sync back by seconds.
        if not kw.get("_continue") and not self.source.limiter.acquire(self.stop):
            raise _Stopped()
        if self.selector:
            kw["label_selector"] = self.selector
        if self.fields:
            kw["field_selector"] = self.fields
        response = self.call(_preload_content=False, **kw)
        self.response = response
        if self.stop.is_set():
            self.done(response, clean=False)
            raise _Stopped()
        return response

    def done(self, response, clean: bool = True) -> None:
        """Give a fully read connection back to the pool; close one that broke off."""
        self.response = None
        try:
            if clean and not self.stop.is_set():
                response.release_conn()
            else:
                response.close()
        except Exception:
            pass

    # ---------------------------------------------------------------- outcomes
    def recovered(self) -> None:
        self.backoff.reset()
        if self.failing is not None:
            log.info("%s: the API answers again", self.spec.plural)
            self.failing = None

    def failed(self, verb: str, exc: BaseException) -> None:
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, _Stopped):
            return
        status = exc.status if isinstance(exc, ApiException) else None
        reason = f"{status}" if status in (401, 403) else _describe(exc)
        if reason == self.failing:
            log.debug("%s: %s still failing: %s", self.spec.plural, verb, _describe(exc))
            return
        self.failing = reason
        group = self.spec.group
        if status == 403:
            log.error('RBAC: not allowed to %s %s (API group "%s") at the cluster scope: %s. The server\'s '
                      'account needs a ClusterRole rule {apiGroups: ["%s"], resources: ["%s"], verbs: ["list", '
                      '"watch"]}; retrying', verb, self.spec.plural, group, _status_message(exc.body) or "forbidden",
                      group, self.spec.plural)
        elif status == 401:
            log.error("%s: the API server rejected our credentials (401 Unauthorized) on %s; retrying",
                      self.spec.plural, verb)
        else:
            log.warning("%s: %s failed: %s; retrying with backoff", self.spec.plural, verb, _describe(exc))


def _trim_heap() -> None:
    """Give the C heap's free memory back to the system after a list (glibc only).

    A list's pages are parsed into large buffers that C's allocator keeps once freed; a
    cluster of 10,000 services leaves several MB of them behind.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


class _Stopped(Exception):
    """The source is stopping: leave the loop without logging."""


def _chunks(response):
    """The raw bytes of a streaming response as they arrive."""
    if response.chunked:
        return response.stream(None, decode_content=False)
    return iter(lambda: response.read1(65536), b"")
