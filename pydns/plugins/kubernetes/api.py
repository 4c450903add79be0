"""The kubernetes plugin's API source: list+watch against a Kubernetes API server.

(Longer than the plugin's other modules: the reflector below is one state machine, sync,
watch, 410 and failure, and reads best whole.  The connection, rate limits, backoff and
REST metrics are in client.py; reading list and watch responses is in responses.py.)

    source = ApiSource(index, kubeconfig=("/etc/kubeconfig", None), labels="app=web")
    await source.start()      # returns at once; one background thread per kind
    source.synced()           # True once every kind has been listed in full
    await source.stop()

Where it connects, as CoreDNS decides: ``kubeconfig`` (path, context or None: the file's
current context) wins; else ``endpoint`` (a URL, with ``tls`` = (cert, key, cacert) for a
client certificate); else the in-cluster service account.  A configuration that cannot be
loaded raises ``ApiConfigError`` from the constructor.

Per kind, as client-go's reflector does it:

* **Sync.** A streaming list first: a watch with ``sendInitialEvents=true``,
  ``resourceVersionMatch=NotOlderThan`` and bookmarks; its ADDED events are collected until
  the bookmark annotated ``k8s.io/initial-events-end``, and the same stream then goes on as
  the watch.  A server that answers 400/422 (no streaming lists: older than 1.27 or the
  feature is off), or that sends ordinary events before that bookmark, is listed instead,
  from then on: ``resourceVersion=0`` (served from the API server's watch cache, which
  ignores ``limit``; ``limit``/``continue`` pages are followed where the server pages),
  then a watch from the list's resourceVersion.
* **Atomic.** Whatever the way, the whole state of the kind is collected first (objects are
  slimmed: no managed fields, no last-applied annotation, only ready endpoints (and a count
  of the others), only a pod's addresses; and packed as JSON, see responses.py) and handed
  to the index in one loop
  callback, ``index.replace(kind, objects)`` (a sequence of dicts, each parsed when read):
  a query never sees half of an old state and half of a new one.
* **Watch.** Events are applied one by one (``index.upsert``/``index.delete``).  A watch
  that ends or breaks resumes from the last version seen; bookmarks move that version on.
  A watch that brings no event and no bookmark for ``SILENCE_FACTOR`` (2.5) bookmark
  intervals (kube-apiserver sends one about every minute: 150 s) is declared dead and
  reopened from there; TCP keepalive catches a vanished peer too.
* **410 Gone** on a watch means history was lost: the kind is synced again, asking for
  state not older than the last version seen (``resourceVersionMatch=NotOlderThan``, served
  from the watch cache); if that too is 410, from etcd (no resourceVersion).
* **Failures** are retried after client-go's backoff (800 ms doubling to 30 s, jitter,
  reset after 2 minutes without failures).  Failures of the server as a whole (no
  connection, a silent watch, 429, 5xx) share one backoff across the kinds, so an outage
  costs one attempt per kind per step; 429/503 wait at least their ``Retry-After``.  A
  failure of one kind alone (403 for a missing RBAC rule, logged once with the rule) backs
  off on its own.  The index is never cleared: the last known records keep being served
  while the API is away.

The official ``kubernetes`` client is the transport only (see client.py): responses are
read raw and parsed as they arrive (responses.py); no model objects are built.  Its calls
block, so they run in threads; every index call is handed to the event loop with
``call_soon_threadsafe``.

(Over 400 lines: a reflector's cycle of sync, watch, 410 and failure is one state machine
over one set of fields, easier read whole than split.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .client import (BACKOFF_BASE, BACKOFF_CAP, BACKOFF_RESET, ApiConfigError, Backoff, RequestGate, Stopped,
                     describe, make_client, retry_after, status_message)
from .responses import ListBody, Packed, slim, watch_lines

log = logging.getLogger("plugin/kubernetes")

__all__ = ["ApiSource", "ApiConfigError", "DEFAULT_KINDS", "KINDS"]

DEFAULT_KINDS = ("Namespace", "Service", "EndpointSlice")
# Pods that can never serve traffic again are left out server-side, as CoreDNS does.
POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# kube-apiserver sends a watch a bookmark about once a minute; a watch silent for this many
# intervals is dead (a proxy or a half-open connection that swallows everything).
BOOKMARK_INTERVAL = 60.0
SILENCE_FACTOR = 2.5


class Gone(Exception):
    """410: the resourceVersion asked for is no longer in the server's history."""


class NoStreamingLists(Exception):
    """The server does not offer streaming lists (or ignored the request for one)."""


class WatchSilent(Exception):
    """No event and no bookmark for longer than a live watch stays quiet."""


@dataclass(frozen=True)
class KindSpec:
    kind: str
    api: str  # class name in kubernetes.client
    method: str
    group: str
    plural: str
    version: str = ""  # a custom resource's version (CustomObjectsApi calls take group, version, plural)
    required_labels: str = ""  # a label selector every request of the kind carries
    streaming: bool = True  # the client offers streaming lists (sendInitialEvents) for the kind


KINDS = {s.kind: s for s in (
    KindSpec("Namespace", "CoreV1Api", "list_namespace", "", "namespaces"),
    KindSpec("Service", "CoreV1Api", "list_service_for_all_namespaces", "", "services"),
    KindSpec("EndpointSlice", "DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces", "discovery.k8s.io",
             "endpointslices"),
    KindSpec("Pod", "CoreV1Api", "list_pod_for_all_namespaces", "", "pods"),
    # multicluster: KEP-1645's ServiceImports, and the EndpointSlices made for them.
    KindSpec("ServiceImport", "CustomObjectsApi", "list_cluster_custom_object", "multicluster.x-k8s.io",
             "serviceimports", version="v1alpha1", streaming=False),
    KindSpec("MultiClusterEndpointSlice", "DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces",
             "discovery.k8s.io", "endpointslices", required_labels="multicluster.kubernetes.io/service-name"),
)}


class ApiSource:
    """Keeps ``index`` in step with the API server for ``kinds``.

    Tuning: ``page_size`` items per list page (client-go's 500); retry delays from
    ``backoff_base`` doubling to ``backoff_cap`` seconds, reset after ``backoff_reset``
    seconds without failures (client-go's 0.8, 30 and 120); watches last ``watch_timeout``
    to twice that (server side); ``bookmark_interval`` is how often the server sends
    bookmarks (a watch is dead after 2.5 of them without a word); ``request_timeout`` is
    (connect, read) seconds for lists; ``streaming=False`` never tries streaming lists.
    """

    def __init__(self, index, *, endpoint: str | None = None, tls: tuple[str, str, str] | None = None,
                 kubeconfig: tuple[str, str | None] | None = None, labels: str | None = None,
                 namespace_labels: str | None = None, kinds=DEFAULT_KINDS, qps: float | None = None,
                 burst: int | None = None, max_inflight: int = 0, streaming: bool = True, page_size: int = 500,
                 backoff_base: float | None = None, backoff_cap: float | None = None,
                 backoff_reset: float | None = None, watch_timeout: float = 300.0,
                 bookmark_interval: float | None = None, request_timeout: tuple[float, float] = (5.0, 30.0)):
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unsupported kinds: {', '.join(unknown)}")
        self.index = index
        self.kinds = tuple(kinds)
        self.labels = labels or None
        self.namespace_labels = namespace_labels or None
        self.page_size = page_size
        self.streaming = streaming
        # Unset: the module's constants, read now (tests lower them for a whole server).
        self.backoff_settings = (BACKOFF_BASE if backoff_base is None else backoff_base,
                                 BACKOFF_CAP if backoff_cap is None else backoff_cap,
                                 BACKOFF_RESET if backoff_reset is None else backoff_reset)
        # The server's health: every kind's connection failures count against it.
        self.backoff = Backoff(*self.backoff_settings)
        self.watch_timeout = watch_timeout
        self.silence = SILENCE_FACTOR * (BOOKMARK_INTERVAL if bookmark_interval is None else bookmark_interval)
        self.request_timeout = request_timeout
        self.client = make_client(endpoint, tls, kubeconfig, len(self.kinds))
        self.gate = RequestGate(self.client, qps, burst, max_inflight)
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

    def version(self, kind: str) -> str | None:
        """The newest resourceVersion of ``kind`` seen from the API (None before its first sync)."""
        return next((r.seen for r in self._reflectors if r.spec.kind == kind), None)

    def list_once(self, kind: str) -> tuple[Packed, str]:
        """A list of ``kind`` at resourceVersion=0 (the watch cache) that leaves the index alone:
        (objects, version).  Blocks: call it from a worker thread."""
        return _Reflector(self, KINDS[kind]).fetch({"resource_version": "0"})

    def no_streaming(self, reason: str) -> None:
        if self.streaming:
            self.streaming = False
            log.info("the API server does not offer streaming lists (%s); listing at resourceVersion=0 instead",
                     reason)

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


class _Reflector:
    """Sync, then watch, one kind for ever (until stopped), in its own thread."""

    def __init__(self, source: ApiSource, spec: KindSpec):
        from kubernetes import client

        self.source = source
        self.spec = spec
        self.call = getattr(getattr(client, spec.api)(source.client), spec.method)
        if spec.version:
            self.call = functools.partial(self.call, spec.group, spec.version, spec.plural)
        if spec.kind == "Namespace":
            self.selector = source.namespace_labels
        elif spec.kind == "ServiceImport":
            self.selector = None  # ServiceImports carry no labels of the services they import
        else:
            self.selector = ",".join(filter(None, (source.labels, spec.required_labels))) or None
        self.fields = POD_FIELD_SELECTOR if spec.kind == "Pod" else None
        # Failures of this kind alone (RBAC, a bad request) back off on their own.
        self.backoff = Backoff(*source.backoff_settings)
        self.stop = source._stop
        self.response = None  # the response being read, so stop() can cut it
        self.version: str | None = None  # where the next watch resumes; None: sync first
        self.seen: str | None = None  # the newest version seen; a re-sync asks for no older state
        self.quorum = False  # a re-sync from ``seen`` was 410 too: read from etcd
        self.pending: Packed | None = None  # a streaming list's objects, until its end bookmark
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
            syncing = self.version is None
            verb = "list" if syncing else "watch"
            try:
                if syncing and not (self.source.streaming and self.spec.streaming):
                    self.list()
                else:
                    self.watch()
                continue
            except Stopped:
                return
            except Gone:
                self.gone(syncing)
                continue
            except NoStreamingLists as exc:
                self.source.no_streaming(str(exc))
                continue
            except ApiException as exc:
                if exc.status == 410:
                    self.gone(syncing)
                    continue
                self.failed(verb, exc)
                if exc.status == 429 or (exc.status or 0) >= 500:
                    delay = self.source.backoff.delay(retry_after(exc))
                else:
                    delay = self.backoff.delay()
            except Exception as exc:
                if self.stop.is_set():
                    return
                self.failed(verb, exc)
                delay = self.source.backoff.delay()
            self.stop.wait(delay)

    def gone(self, syncing: bool) -> None:
        if syncing:
            self.quorum = True
            log.info("%s: the state asked for is gone (410); reading it from etcd", self.spec.plural)
        elif self.version is not None:
            log.info("%s: resourceVersion %s is too old; syncing again", self.spec.plural, self.version)
        self.version = None

    def sync_from(self, streaming: bool = False) -> dict:
        """The resourceVersion parameters of a sync: never older than what was seen.

        A first list asks for ``0`` (any state: the watch cache's); a first streaming list
        for none (a consistent read, which the watch cache serves since Kubernetes 1.31)."""
        if self.quorum or (streaming and self.seen is None):
            return {}
        if self.seen is None:
            return {"resource_version": "0"}
        return {"resource_version": self.seen, "resource_version_match": "NotOlderThan"}

    def synced(self, objects: Packed, version: str) -> None:
        """A full state of the kind: handed to the index in one step; the watch goes on from ``version``."""
        self.version = self.seen = version
        self.quorum = False
        self.wait(self.source.post(self.replace, objects))
        self.recovered()

    def replace(self, objects: Packed) -> None:
        self.source.index.replace(self.spec.kind, objects)
        self.source.mark_synced(self.spec.kind)
        _trim_heap()

    def wait(self, applied: threading.Event) -> None:
        """Hold on until the loop has applied ``applied``'s work (or we are stopping)."""
        while not applied.wait(0.1):
            if self.stop.is_set():
                raise Stopped()

    # ---------------------------------------------------------------- list
    def list(self) -> None:
        """List the kind in full (page by page where the server pages), then replace it."""
        self.synced(*self.fetch(self.sync_from()))

    def fetch(self, versions: dict) -> tuple[Packed, str]:
        """The kind in full, listed from ``versions`` (resourceVersion parameters): (objects, version)."""
        objects = Packed()
        token = None
        while True:
            params = {"limit": self.source.page_size, "_request_timeout": self.source.request_timeout}
            if token:
                params["_continue"] = token
            else:
                params.update(versions)
            # The pages of one list are one snapshot: holding them back for tokens would only
            # stretch the list towards its continue token's expiry (a 410).
            page = self.request(paced=not token, **params)
            body = ListBody(page)
            try:
                for item in body.items():
                    if isinstance(item, dict):
                        objects.append(slim(self.spec.kind, item))
                body.finish()
            except BaseException:
                self.done(page, clean=False)
                raise
            self.done(page)
            meta = body.fields.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return objects, str(meta.get("resourceVersion") or "")

    # ---------------------------------------------------------------- watch
    def watch(self) -> None:
        """Stream events (a streaming list first when not synced) until the stream ends."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import ReadTimeoutError

        listing = self.version is None
        timeout = max(1, int(self.source.watch_timeout * (1 + random.random())))
        params = {"watch": True, "allow_watch_bookmarks": True, "timeout_seconds": timeout,
                  "_request_timeout": (self.source.request_timeout[0], self.source.silence)}
        if listing:
            params.update(self.sync_from(streaming=True), send_initial_events=True,
                          resource_version_match="NotOlderThan")
        else:
            params["resource_version"] = self.version
        try:
            stream = self.request(**params)
        except ApiException as exc:
            if listing and exc.status in (400, 422):
                raise NoStreamingLists(describe(exc)) from None
            raise
        self.pending = Packed() if listing else None
        if not listing:
            self.recovered()
        opened = time.monotonic()
        events = 0
        clean = False
        try:
            for line in watch_lines(stream):
                self.event(line)
                events += 1
            clean = True
        except ReadTimeoutError:
            again = "the streaming list again" if self.pending is not None else \
                f"the watch from resourceVersion {self.version}"
            raise WatchSilent(f"no event and no bookmark for {self.source.silence:g}s; opening {again}") from None
        finally:
            self.done(stream, clean)
            unfinished, self.pending = self.pending is not None, None
        if unfinished and not self.stop.is_set():
            raise RuntimeError("the streaming list ended before its initial events did")
        if events == 0 and time.monotonic() - opened < 1.0 and not self.stop.is_set():
            # A server that ends watches at once would otherwise be asked again at full rate.
            self.stop.wait(self.backoff.delay())

    def event(self, line: bytes) -> None:
        event = json.loads(line)
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone(obj.get("message", ""))
            raise RuntimeError(f"watch error {code}: {obj.get('message', '')}")
        meta = obj.get("metadata") or {}
        version = meta.get("resourceVersion")
        if self.pending is not None:
            self.initial_event(etype, obj, meta, version)
            return
        if etype in ("ADDED", "MODIFIED"):
            self.source.post(self.source.index.upsert, self.spec.kind, slim(self.spec.kind, obj))
        elif etype == "DELETED":
            self.source.post(self.source.index.delete, self.spec.kind, slim(self.spec.kind, obj))
        elif etype != "BOOKMARK":
            log.warning("%s: unexpected watch event type %r", self.spec.plural, etype)
            return
        if version:
            self.version = self.seen = str(version)

    def initial_event(self, etype: str, obj: dict, meta: dict, version) -> None:
        """An event of a streaming list, before the bookmark that ends its initial events."""
        if etype == "ADDED":
            self.pending.append(slim(self.spec.kind, obj))
        elif etype == "BOOKMARK" and (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
            objects, self.pending = self.pending, None
            self.synced(objects, str(version or ""))
        else:
            raise NoStreamingLists(f"a {etype} event came before the {INITIAL_EVENTS_END} bookmark")

    # ---------------------------------------------------------------- requests
    def request(self, paced: bool = True, **kw):
        if self.selector:
            kw["label_selector"] = self.selector
        if self.fields:
            kw["field_selector"] = self.fields
        response = self.source.gate.send(self.call, self.stop, paced=paced, **kw)
        self.response = response
        if self.stop.is_set():
            self.done(response, clean=False)
            raise Stopped()
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
        """The API answers again: say so once.  The backoff itself resets only after
        ``backoff_reset`` seconds without failures, as client-go's does."""
        if self.failing is not None:
            log.info("%s: the API answers again", self.spec.plural)
            self.failing = None

    def failed(self, verb: str, exc: BaseException) -> None:
        from kubernetes.client.exceptions import ApiException

        status = exc.status if isinstance(exc, ApiException) else None
        reason = f"{status}" if status in (401, 403) else describe(exc)
        if reason == self.failing:
            log.debug("%s: %s still failing: %s", self.spec.plural, verb, describe(exc))
            return
        self.failing = reason
        group = self.spec.group
        if status == 403:
            log.error('RBAC: not allowed to %s %s (API group "%s") at the cluster scope: %s. The server\'s '
                      'account needs a ClusterRole rule {apiGroups: ["%s"], resources: ["%s"], verbs: ["list", '
                      '"watch"]}; retrying', verb, self.spec.plural, group, status_message(exc.body) or "forbidden",
                      group, self.spec.plural)
        elif status == 401:
            log.error("%s: the API server rejected our credentials (401 Unauthorized) on %s; retrying",
                      self.spec.plural, verb)
        elif isinstance(exc, WatchSilent):
            log.warning("%s: %s", self.spec.plural, exc)
        else:
            log.warning("%s: %s failed: %s; retrying with backoff", self.spec.plural, verb, describe(exc))


def _trim_heap() -> None:
    """Give the C heap's free memory back to the system after a sync (glibc only).

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
