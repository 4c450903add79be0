"""``FakeApiServer``: a small Kubernetes API server for tests, speaking real list+watch over HTTP.

    api = FakeApiServer(objects).start()      # raw dicts: Namespaces, Services, EndpointSlices, Pods
    api.url                                   # "http://127.0.0.1:PORT"
    api.kubeconfig(path)                      # writes a kubeconfig for it; returns the path
    api.create(obj); api.update(obj); api.apply(obj); api.delete("Service", "default", "web")
    api.stop()

What it serves (JSON only), the way kube-apiserver does:

* ``GET /api/v1/{namespaces,services,endpoints,pods}`` and
  ``GET /apis/discovery.k8s.io/v1/endpointslices`` cluster-wide, the namespaced forms
  ``.../namespaces/NS/RESOURCE[/NAME]``, ``/api/v1/namespaces/NAME``, ``/version``, ``/api``,
  ``/apis``, the group discovery documents and ``/healthz``, ``/livez``, ``/readyz``.
* Lists, with kube-apiserver's resourceVersion semantics: ``resourceVersion=0`` or
  ``resourceVersionMatch=NotOlderThan`` is served from the watch cache, which ignores
  ``limit``; no resourceVersion (a quorum read) pages with ``limit`` + ``continue`` (a
  consistent snapshot, as etcd gives); ``resourceVersion=N`` with ``limit`` and no match, or
  ``resourceVersionMatch=Exact``, is 410 once N is compacted.  ``labelSelector``
  (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``, ``>``, ``<``), ``fieldSelector``
  (``=``, ``==``, ``!=`` on dotted paths such as ``status.phase``), ``metadata.resourceVersion``
  and ``remainingItemCount``.  Items carry no ``kind``/``apiVersion``, as in the real API.
* Watches (``watch=true``): chunked JSON lines ``{"type": ..., "object": ...}``.  With
  ``resourceVersion`` unset or ``"0"`` the stream starts with ADDED for every current object;
  otherwise every change after that version is replayed first.
* Streaming lists (``watch_list=True``, the default, as 1.32+ serves them):
  ``sendInitialEvents=true`` with ``resourceVersionMatch=NotOlderThan`` and
  ``allowWatchBookmarks=true`` starts the watch with ADDED for every current object, then a
  BOOKMARK annotated ``k8s.io/initial-events-end: "true"`` naming the version they make up;
  anything else with those parameters is 422 Invalid.  ``watch_list=False`` is a server
  without the feature: any ``sendInitialEvents`` or ``resourceVersionMatch`` on a watch is
  422 Invalid.  An object that stops
  (starts) matching the selectors arrives as DELETED (ADDED).  ``allowWatchBookmarks`` gets
  a BOOKMARK every ``bookmark_interval`` seconds and on ``bookmark()``; ``timeoutSeconds``
  ends the stream cleanly.
* One global resourceVersion, increasing with every change; a DELETED event carries the
  version of the deletion.

Faults, for the client's error paths:

``drop_watches(abrupt=False)``
    end every open watch (cleanly, or by cutting the connection)
``fail_next(n, code=500, kind=None, verb=None, paged=None, retry_after=None)``
    answer the next n matching requests with ``code`` and a Status body (410 is "Expired");
    429 carries ``Retry-After`` (``retry_after`` seconds, default 1)
``stall(kind, verb=None, paged=None, after=None)`` / ``unstall()``
    matching requests hang until unstalled; with ``after``, a streaming list sends that many
    of its initial events and then hangs
``blackhole(kind=None)``
    the open watches (of ``kind``) stop writing, without closing: no events, no bookmarks
``forbid(kind, verbs=("list", "watch"))`` / ``allow(kind)``
    403 with the Status body RBAC gives
``pause()`` / ``resume()``
    requests (and open watch streams) hang until resumed
``outage(mode="refuse")`` / ``recover()``
    the listener goes away (connections refused, open ones cut); ``mode="reset"`` accepts
    each connection, records it (verb ``connect``) and resets it; ``mode="503"`` answers
    every request 503; ``recover()`` serves again on the same port
``compact(gone="event")``
    every resourceVersion handed out so far becomes too old: a watch from one gets an ERROR
    event with a 410 Status (``gone="http"``: an HTTP 410 answer instead), a continue token
    from before gets 410 Expired

Counters: ``requests`` (every request: monotonic time, verb, kind, path, query),
``count(verb, kind, since, path)``, ``open_watches(kind)`` and ``wait_for_watches(n)``.

``token="..."`` makes the server require ``Authorization: Bearer <token>`` (401 otherwise);
``tls=True`` serves HTTPS and requires a client certificate: ``tls_files()`` gives the
(cert, key, cacert) a client needs, and ``kubeconfig()`` embeds them.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import queue
import re
import select
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

USER = "system:serviceaccount:kube-system:coredns"


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("api", self.version) if not self.group else ("apis", self.group, self.version)


RESOURCES = {r.kind: r for r in (
    Resource("Namespace", "", "v1", "namespaces", False),
    Resource("Service", "", "v1", "services", True),
    Resource("Endpoints", "", "v1", "endpoints", True),
    Resource("Pod", "", "v1", "pods", True),
    Resource("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True),
)}
_BY_PATH = {(r.prefix, r.plural): r for r in RESOURCES.values()}


@dataclass
class RecordedRequest:
    at: float
    verb: str  # list, watch, get, discovery, other
    kind: str | None
    path: str
    query: dict[str, str]


@dataclass
class _Fault:
    remaining: int
    code: int
    kind: str | None
    verb: str | None
    paged: bool | None
    retry_after: float | None = None

    def matches(self, verb: str, kind: str | None, query: dict[str, str]) -> bool:
        if self.kind is not None and self.kind != kind:
            return False
        if self.verb is not None and self.verb != verb:
            return False
        if self.paged is not None and self.paged != bool(query.get("continue")):
            return False
        return True


class BadRequest(ValueError):
    """A malformed query parameter: answered 400."""


class BadSelector(BadRequest):
    pass


def _int_param(query: dict[str, str], name: str) -> int:
    try:
        return int(query.get(name) or 0)
    except ValueError:
        raise BadRequest(f"invalid {name}: {query[name]!r}") from None


# ---------------------------------------------------------------- selectors

_SET_REQ = re.compile(r"^\s*([A-Za-z0-9][-A-Za-z0-9_./]*)\s+(in|notin)\s*\(([^()]*)\)\s*$")
_OP_REQ = re.compile(r"^\s*([A-Za-z0-9][-A-Za-z0-9_./]*)\s*(==|=|!=|>|<)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(!?)\s*([A-Za-z0-9][-A-Za-z0-9_./]*)\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised set."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()] if text.strip() else []


def label_selector(text: str) -> Callable[[dict], bool]:
    """A predicate on a label dict for a Kubernetes label selector; BadSelector if malformed."""
    tests: list[Callable[[dict], bool]] = []
    for req in _split_top(text or ""):
        m = _SET_REQ.match(req)
        if m:
            key, op = m.group(1), m.group(2)
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            if not values:
                raise BadSelector(f"for 'in', 'notin' operators, values set can't be empty: {req.strip()!r}")
            if op == "in":
                tests.append(lambda lb, k=key, vs=values: k in lb and lb[k] in vs)
            else:
                tests.append(lambda lb, k=key, vs=values: k not in lb or lb[k] not in vs)
            continue
        m = _OP_REQ.match(req)
        if m:
            key, op, value = m.groups()
            if op in ("=", "=="):
                tests.append(lambda lb, k=key, v=value: k in lb and lb[k] == v)
            elif op == "!=":
                tests.append(lambda lb, k=key, v=value: k not in lb or lb[k] != v)
            else:
                try:
                    bound = int(value)
                except ValueError:
                    raise BadSelector(f"for 'Gt', 'Lt' operators, the value must be an integer: {req.strip()!r}") from None
                sign = 1 if op == ">" else -1
                tests.append(lambda lb, k=key, b=bound, s=sign: _int_cmp(lb.get(k), b) * s > 0)
            continue
        m = _EXISTS_REQ.match(req)
        if m:
            neg, key = m.groups()
            tests.append((lambda lb, k=key: k not in lb) if neg else (lambda lb, k=key: k in lb))
            continue
        raise BadSelector(f"unable to parse requirement: {req.strip()!r}")
    return lambda labels: all(t(labels) for t in tests)


def _int_cmp(value: str | None, bound: int) -> int:
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    return (n > bound) - (n < bound)


_FIELD_REQ = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.]*)\s*(==|=|!=)\s*(.*?)\s*$")


def field_selector(text: str) -> Callable[[dict], bool]:
    """A predicate on an object for a field selector (``status.phase!=Failed,metadata.name=x``)."""
    tests: list[Callable[[dict], bool]] = []
    for req in _split_top(text or ""):
        m = _FIELD_REQ.match(req)
        if not m:
            raise BadSelector(f"invalid selector: {req.strip()!r}")
        path, op, value = m.groups()
        want = op != "!="
        tests.append(lambda obj, p=path.split("."), v=value, w=want: (_dig(obj, p) == v) == w)
    return lambda obj: all(t(obj) for t in tests)


def _dig(obj: Any, path: list[str]) -> str:
    for part in path:
        if not isinstance(obj, dict):
            return ""
        obj = obj.get(part)
    if obj is None:
        return ""
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return str(obj)


# ---------------------------------------------------------------- Status bodies

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "AlreadyExists", 410: "Expired", 429: "TooManyRequests", 500: "InternalError",
            422: "Invalid", 503: "ServiceUnavailable", 504: "Timeout"}


def status_body(code: int, message: str, reason: str | None = None, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason or _REASONS.get(code, "Unknown"), "code": code}
    if details:
        body["details"] = details
    return body


def forbidden_body(res: Resource, verb: str, namespace: str | None = None) -> dict:
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (f'{res.plural} is forbidden: User "{USER}" cannot {verb} resource "{res.plural}" '
               f'in API group "{res.group}" {scope}')
    details = {"kind": res.plural}
    if res.group:
        details["group"] = res.group
    return status_body(403, message, "Forbidden", details)


# ---------------------------------------------------------------- watchers


class _Watcher:
    """One open watch stream: its filters and the queue its handler thread writes out."""

    def __init__(self, res: Resource, namespace: str | None, labels: Callable, fields: Callable, bookmarks: bool):
        self.res = res
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.bookmarks = bookmarks
        self.blackholed = False
        self.q: queue.Queue = queue.Queue()

    def matches(self, obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(obj)

    def offer(self, kind: str, etype: str, obj: dict, prev: dict | None) -> None:
        if kind != self.res.kind:
            return
        now = self.matches(obj)
        before = prev is not None and self.matches(prev)
        if etype == "DELETED":
            if now:
                self.put("DELETED", obj)
        elif now:
            self.put("MODIFIED" if etype == "MODIFIED" and before else "ADDED", obj)
        elif before:
            self.put("DELETED", obj)

    def put(self, etype: str, obj: dict) -> None:
        self.q.put(("data", json.dumps({"type": etype, "object": obj}).encode() + b"\n"))

    def bookmark(self, rv: int, annotations: dict | None = None) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if annotations:
            meta["annotations"] = annotations
        obj = {"kind": self.res.kind, "apiVersion": self.res.api_version, "metadata": meta}
        self.q.put(("data", json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"))


# ---------------------------------------------------------------- the server


class FakeApiServer:
    def __init__(self, objects: Iterable[dict] = (), *, token: str | None = None, tls: bool = False,
                 bookmark_interval: float = 5.0, watch_timeout: float = 1800.0, watch_list: bool = True):
        self.token = token
        self.watch_list = watch_list
        self.tls = tls
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.requests: list[RecordedRequest] = []

        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._rv = 0
        self._floor = 0  # watches and continue tokens from below this version are too old
        self._gone = "event"
        self._objects: dict[str, dict[tuple[str, str], dict]] = {kind: {} for kind in RESOURCES}
        self._history: list[tuple[int, str, str, dict, dict | None]] = []
        self._watchers: set[_Watcher] = set()
        self._snapshots: dict[str, tuple[int, list[dict]]] = {}
        self._faults: list[_Fault] = []
        self._stalls: list[_Fault] = []  # ``remaining`` holds ``after`` (-1: the whole request)
        self._forbidden: dict[str, set[str]] = {}
        self._paused = False
        self._outage: str | None = None
        self._epoch = 0  # bumped by outages and stop: connections of an older epoch are cut
        self._stopped = False
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self._tls_files: tuple[str, str, str] | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self.port = 0

        for obj in objects:
            self._write(obj, "create")
        self._history.clear()
        self._floor = self._rv

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "FakeApiServer":
        if self.tls:
            self._setup_tls()
        self._listen(0)
        return self

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._epoch += 1
            self._cv.notify_all()
        self._close_listener()
        self._cut_connections()
        if self._tmpdir:
            for name in os.listdir(self._tmpdir):
                os.unlink(os.path.join(self._tmpdir, name))
            os.rmdir(self._tmpdir)
            self._tmpdir = None

    def __enter__(self) -> "FakeApiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _listen(self, port: int) -> None:
        httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        httpd.fake = self
        if self._server_ctx is not None:
            # The handshake happens in the connection's own thread, never in the accept loop.
            httpd.socket = self._server_ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakeapi", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _cut_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
            watchers = list(self._watchers)
        for w in watchers:
            w.q.put(("abort",))
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---------------------------------------------------------------- TLS and kubeconfig
    def _setup_tls(self) -> None:
        from pydns.testing.upstream import self_signed_cert

        self._tmpdir = tempfile.mkdtemp(prefix="fakeapi-")
        server_cert, server_key = self_signed_cert(self._tmpdir, "kubernetes")
        client_cert, client_key = self_signed_cert(self._tmpdir, "pydns-client")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(server_cert, server_key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_cert)
        self._server_ctx = ctx
        self._tls_files = (client_cert, client_key, server_cert)

    def tls_files(self) -> tuple[str, str, str]:
        """(client cert, client key, CA cert) for a client of this server (``tls=True`` only)."""
        if self._tls_files is None:
            raise RuntimeError("the server was not started with tls=True")
        return self._tls_files

    def kubeconfig(self, path: str, context: str = "fake") -> str:
        """Write a kubeconfig whose ``context`` (also the current one) points here; returns ``path``."""
        cluster: dict[str, Any] = {"server": self.url}
        user: dict[str, Any] = {"token": self.token or "fake-token"}
        if self._tls_files is not None:
            cert, key, ca = self._tls_files
            cluster["certificate-authority"] = ca
            user = {"client-certificate": cert, "client-key": key}
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": user}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
        }
        with open(path, "w") as f:
            json.dump(config, f, indent=1)  # JSON is YAML
        return path

    # ---------------------------------------------------------------- objects
    def create(self, obj: dict) -> dict:
        return self._write(obj, "create")

    def update(self, obj: dict) -> dict:
        return self._write(obj, "update")

    def apply(self, obj: dict) -> dict:
        """Create or update."""
        return self._write(obj, "apply")

    def delete(self, kind: str, namespace: str | None, name: str) -> dict:
        key = self._key(kind, namespace, name)
        with self._lock:
            old = self._objects[kind].pop(key, None)
            if old is None:
                raise KeyError(f"{kind} {namespace}/{name} does not exist")
            self._rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._publish(kind, "DELETED", gone, None)
            return copy.deepcopy(gone)

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        with self._lock:
            obj = self._objects[kind].get(self._key(kind, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(o) for _, o in sorted(self._objects[kind].items())]

    @staticmethod
    def _key(kind: str, namespace: str | None, name: str) -> tuple[str, str]:
        return ((namespace or "default") if RESOURCES[kind].namespaced else "", name)

    @property
    def resource_version(self) -> int:
        return self._rv

    def _write(self, obj: dict, mode: str) -> dict:
        kind = obj.get("kind")
        if kind not in RESOURCES:
            raise ValueError(f"unsupported kind {kind!r}")
        res = RESOURCES[kind]
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = res.api_version
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError(f"{kind} without metadata.name")
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        key = (meta.get("namespace", ""), meta["name"])
        with self._lock:
            prev = self._objects[kind].get(key)
            if mode == "create" and prev is not None:
                raise ValueError(f"{kind} {key[0]}/{key[1]} already exists")
            if mode == "update" and prev is None:
                raise KeyError(f"{kind} {key[0]}/{key[1]} does not exist")
            self._rv += 1
            if prev is None:
                meta["uid"] = meta.get("uid") or str(uuid.uuid4())
                meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                meta["generation"] = 1
            else:
                meta["uid"] = prev["metadata"]["uid"]
                meta["creationTimestamp"] = prev["metadata"].get("creationTimestamp")
                meta["generation"] = prev["metadata"].get("generation", 1) + 1
            meta["resourceVersion"] = str(self._rv)
            self._objects[kind][key] = obj
            self._publish(kind, "ADDED" if prev is None else "MODIFIED", obj, prev)
            return copy.deepcopy(obj)

    def _publish(self, kind: str, etype: str, obj: dict, prev: dict | None) -> None:
        self._history.append((self._rv, kind, etype, obj, prev))
        for w in self._watchers:
            w.offer(kind, etype, obj, prev)

    # ---------------------------------------------------------------- faults
    def drop_watches(self, abrupt: bool = False) -> int:
        """End every open watch; returns how many there were."""
        with self._lock:
            watchers = list(self._watchers)
        for w in watchers:
            w.q.put(("abort",) if abrupt else ("end",))
        return len(watchers)

    def bookmark(self) -> None:
        """Send a BOOKMARK now on every watch that allows them."""
        with self._lock:
            for w in self._watchers:
                if w.bookmarks:
                    w.bookmark(self._rv)

    def fail_next(self, n: int, code: int = 500, *, kind: str | None = None, verb: str | None = None,
                  paged: bool | None = None, retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests matching kind/verb (``paged``: carrying a continue token) with ``code``."""
        with self._lock:
            self._faults.append(_Fault(n, code, kind, verb, paged, retry_after))

    def stall(self, kind: str | None = None, verb: str | None = None, *, paged: bool | None = None,
              after: int | None = None) -> None:
        """Hold matching requests until ``unstall()``; ``after=n``: a streaming list hangs after n initial events."""
        with self._lock:
            self._stalls.append(_Fault(-1 if after is None else after, 0, kind, verb, paged))

    def unstall(self) -> None:
        with self._cv:
            self._stalls.clear()
            self._cv.notify_all()

    def blackhole(self, kind: str | None = None) -> int:
        """The open watches (of ``kind``) stop writing without closing; returns how many."""
        with self._lock:
            watchers = [w for w in self._watchers if kind is None or w.res.kind == kind]
            for w in watchers:
                w.blackholed = True
        return len(watchers)

    def forbid(self, kind: str, verbs: Iterable[str] = ("list", "watch")) -> None:
        with self._lock:
            self._forbidden[kind] = set(verbs)

    def allow(self, kind: str) -> None:
        with self._lock:
            self._forbidden.pop(kind, None)

    def pause(self) -> None:
        with self._cv:
            self._paused = True

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify_all()

    def outage(self, mode: str = "refuse") -> None:
        """``refuse``: stop listening and cut every connection; ``reset``: accept, count and reset
        every connection; ``503``: answer everything 503."""
        if mode not in ("refuse", "reset", "503"):
            raise ValueError("mode is 'refuse', 'reset' or '503'")
        with self._cv:
            self._outage = mode
            self._epoch += 1
            self._cv.notify_all()
        if mode == "refuse":
            self._close_listener()
            self._cut_connections()
        elif mode == "reset":
            self._cut_connections()
        else:
            self.drop_watches(abrupt=True)

    def recover(self) -> None:
        with self._cv:
            mode, self._outage = self._outage, None
            self._cv.notify_all()
        if mode == "refuse":
            self._listen(self.port)

    def compact(self, gone: str = "event") -> None:
        """Make every resourceVersion handed out so far too old (410 Gone) for watches and continue tokens."""
        if gone not in ("event", "http"):
            raise ValueError("gone is 'event' or 'http'")
        with self._lock:
            self._rv += 1
            self._floor = self._rv
            self._gone = gone
            self._history.clear()
            self._snapshots.clear()

    # ---------------------------------------------------------------- counters
    def count(self, verb: str | None = None, kind: str | None = None, since: float = 0.0,
              path: str | None = None) -> int:
        """Requests so far (``since``: a time.monotonic() value), by verb, kind and path."""
        with self._lock:
            return sum(1 for r in self.requests
                       if (verb is None or r.verb == verb) and (kind is None or r.kind == kind)
                       and (path is None or r.path == path) and r.at >= since)

    def open_watches(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for w in self._watchers if kind is None or w.res.kind == kind)

    def wait_for_watches(self, n: int, kind: str | None = None, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.open_watches(kind) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.open_watches(kind)} watches open, wanted {n}")
            time.sleep(0.01)

    # ---------------------------------------------------------------- request plumbing (handler threads)
    def _admit(self, epoch: int) -> bool:
        """Wait while paused; False when the connection must be cut (outage, stop)."""
        with self._cv:
            while self._paused and self._epoch == epoch and not self._stopped:
                self._cv.wait()
            return self._epoch == epoch and not self._stopped and self._outage != "refuse"

    def _take_fault(self, verb: str, kind: str | None, query: dict[str, str]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.matches(verb, kind, query):
                    fault.remaining -= 1
                    return fault
            self._faults = [f for f in self._faults if f.remaining > 0]
        return None

    def _stalled_after(self, verb: str, kind: str | None, query: dict[str, str]) -> int | None:
        """How many initial events a stalled streaming list sends (-1: the whole request hangs), or None."""
        with self._lock:
            for stall in self._stalls:
                if stall.matches(verb, kind, query):
                    return stall.remaining
        return None

    def _hold(self, epoch: int, still: Callable[[], bool]) -> bool:
        """Wait while ``still()``; False when the connection must be cut meanwhile."""
        with self._cv:
            while still() and self._epoch == epoch and not self._stopped:
                self._cv.wait(0.1)
            return self._epoch == epoch and not self._stopped

    def _list(self, res: Resource, namespace: str | None, query: dict[str, str]) -> tuple[int, dict]:
        labels = label_selector(query.get("labelSelector", ""))
        fields = field_selector(query.get("fieldSelector", ""))
        limit = _int_param(query, "limit")
        token = query.get("continue")
        with self._lock:
            if token:
                try:
                    state = json.loads(base64.urlsafe_b64decode(token.encode()))
                    snap_id, offset = state["id"], int(state["offset"])
                except (ValueError, KeyError, TypeError):
                    return 400, status_body(400, f"continue key is not valid: {token}")
                if snap_id not in self._snapshots:
                    return 410, status_body(410, "The provided continue parameter is too old to display a "
                                                 "consistent list result. You can start a new list without the "
                                                 "continue parameter.", "Expired")
                rv, items = self._snapshots[snap_id]
            else:
                rv_param = query.get("resourceVersion", "")
                match = query.get("resourceVersionMatch", "")
                exact = match == "Exact" or (not match and limit > 0 and rv_param not in ("", "0"))
                if exact and rv_param not in ("", "0") and _int_param(query, "resourceVersion") < self._floor:
                    return 410, status_body(410, f"too old resource version: {rv_param} ({self._floor})", "Expired")
                if rv_param == "0" or match == "NotOlderThan":
                    limit = 0  # served from the watch cache, which does not page
                rv, offset, snap_id = self._rv, 0, None
                items = []
                for (ns, _), obj in sorted(self._objects[res.kind].items()):
                    if namespace is not None and ns != namespace:
                        continue
                    if labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj):
                        items.append(_as_item(obj))
            end = offset + limit if limit > 0 else len(items)
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if end < len(items):
                if snap_id is None:
                    snap_id = uuid.uuid4().hex
                    self._snapshots[snap_id] = (rv, items)
                meta["continue"] = base64.urlsafe_b64encode(json.dumps({"id": snap_id, "offset": end}).encode()).decode()
                meta["remainingItemCount"] = len(items) - end
            elif snap_id is not None:
                self._snapshots.pop(snap_id, None)
            page = items[offset:end]
        return 200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": page}

    def _open_watch(self, res: Resource, namespace: str | None, query: dict[str, str],
                    stall_after: int | None = None) -> tuple[_Watcher | None, dict | None]:
        """Register a watcher with its replayed events queued; or (None, Status) when the version is too old."""
        watcher = _Watcher(res, namespace, label_selector(query.get("labelSelector", "")),
                           field_selector(query.get("fieldSelector", "")), query.get("allowWatchBookmarks") == "true")
        rv_param = query.get("resourceVersion", "")
        initial = query.get("sendInitialEvents")
        with self._lock:
            if initial == "true" or (rv_param in ("", "0") and initial != "false"):
                matching = [obj for _, obj in sorted(self._objects[res.kind].items()) if watcher.matches(obj)]
                for n, obj in enumerate(matching):
                    if n == stall_after:
                        watcher.q.put(("stall",))
                    watcher.put("ADDED", obj)
                if stall_after is not None and stall_after >= len(matching):
                    watcher.q.put(("stall",))
                if initial == "true":
                    watcher.bookmark(self._rv, {"k8s.io/initial-events-end": "true"})
            elif rv_param in ("", "0"):
                pass  # sendInitialEvents=false: from the most recent version, nothing replayed
            else:
                since = _int_param(query, "resourceVersion")
                if since < self._floor:
                    return None, status_body(410, f"too old resource version: {since} ({self._floor})", "Expired")
                for rv, kind, etype, obj, prev in self._history:
                    if rv > since:
                        watcher.offer(kind, etype, obj, prev)
            self._watchers.add(watcher)
        return watcher, None

    def _close_watch(self, watcher: _Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)


def _as_item(obj: dict) -> dict:
    # Stored objects are replaced on every write, never changed in place, so sharing is safe.
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    fake: FakeApiServer

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away mid-answer is routine here


_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "fake", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, delayed ACKs add 40 ms to each answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fake = self.server.fake
        with fake._lock:
            self.epoch = fake._epoch
            fake._conns.add(self.connection)

    def handle(self) -> None:
        fake = self.server.fake
        if fake._outage == "reset":
            with fake._lock:
                fake.requests.append(RecordedRequest(time.monotonic(), "connect", None, "", {}))
            # Linger 0: the close below is a reset, as from a server that is going away.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        super().handle()

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    # ---------------------------------------------------------------- dispatch
    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        parts = tuple(p for p in url.path.split("/") if p)
        verb, res, namespace, name = self._route(parts, query)
        with fake._lock:
            fake.requests.append(RecordedRequest(time.monotonic(), verb, res.kind if res else None, url.path, query))
        if not fake._admit(self.epoch):
            self.close_connection = True
            return
        if fake._outage == "503":
            return self._json(503, status_body(503, "the server is currently unable to handle the request"))
        if fake.token is not None and self.headers.get("Authorization") != f"Bearer {fake.token}":
            return self._json(401, status_body(401, "Unauthorized"))
        kind = res.kind if res else None
        fault = fake._take_fault(verb, kind, query)
        if fault is not None:
            code = fault.code
            if code == 403 and res is not None:
                return self._json(403, forbidden_body(res, verb, namespace))
            extra = {}
            if code == 429 or fault.retry_after is not None:
                extra["Retry-After"] = f"{fault.retry_after if fault.retry_after is not None else 1:g}"
            return self._json(code, status_body(code, f"injected failure ({code})"), extra)
        stall = fake._stalled_after(verb, kind, query)
        if stall == -1 and not fake._hold(self.epoch, lambda: fake._stalled_after(verb, kind, query) is not None):
            self.close_connection = True
            return
        if res is not None and verb in fake._forbidden.get(res.kind, ()):
            return self._json(403, forbidden_body(res, verb, namespace))
        try:
            self._serve(verb, res, namespace, name, parts, query)
        except BadRequest as exc:
            self._json(400, status_body(400, str(exc)))

    def _route(self, parts: tuple[str, ...], query: dict[str, str]):
        """(verb, resource, namespace, name) for a path."""
        watch = query.get("watch") in ("true", "1")
        for n in (2, 3):
            prefix, rest = parts[:n], parts[n:]
            if len(rest) == 1 and (prefix, rest[0]) in _BY_PATH:
                return ("watch" if watch else "list"), _BY_PATH[(prefix, rest[0])], None, None
            if len(rest) in (3, 4) and rest[0] == "namespaces" and (prefix, rest[2]) in _BY_PATH:
                res = _BY_PATH[(prefix, rest[2])]
                if res.namespaced:
                    if len(rest) == 4:
                        return "get", res, rest[1], rest[3]
                    return ("watch" if watch else "list"), res, rest[1], None
        if parts[:2] == ("api", "v1") and len(parts) == 4 and parts[2] == "namespaces":
            return "get", RESOURCES["Namespace"], None, parts[3]
        if not parts or parts[0] in ("version", "api", "apis", "healthz", "livez", "readyz"):
            return "discovery", None, None, None
        return "other", None, None, None

    def _serve(self, verb, res, namespace, name, parts, query) -> None:
        fake = self.server.fake
        if verb == "list":
            code, body = fake._list(res, namespace, query)
            return self._json(code, body)
        if verb == "watch":
            return self._watch(res, namespace, query)
        if verb == "get":
            obj = fake.get(res.kind, namespace, name)
            if obj is None:
                return self._json(404, status_body(404, f'{res.plural} "{name}" not found', "NotFound",
                                                   {"name": name, "kind": res.plural}))
            return self._json(200, obj)
        if verb == "discovery":
            body = _discovery(parts)
            if body is not None:
                if isinstance(body, str):
                    return self._text(body)
                return self._json(200, body)
        self._json(404, status_body(404, "the server could not find the requested resource", "NotFound"))

    def do_POST(self) -> None:
        self._json(405, status_body(405, "this fake API server is read-only over HTTP"))

    do_PUT = do_PATCH = do_DELETE = do_POST

    # ---------------------------------------------------------------- answers
    def _json(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _text(self, text: str) -> None:
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, res: Resource, namespace: str | None, query: dict[str, str]) -> None:
        fake = self.server.fake
        invalid = _streaming_invalid(query, fake.watch_list)
        if invalid:
            return self._json(422, status_body(422, invalid, "Invalid"))
        stall = fake._stalled_after("watch", res.kind, query)
        watcher, gone = fake._open_watch(res, namespace, query, stall if stall is not None and stall >= 0 else None)
        if gone is not None and fake._gone == "http":
            return self._json(410, gone)
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if gone is not None:
                self._chunk(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                self._chunk(b"")
                return
            self._stream(watcher, _int_param(query, "timeoutSeconds") or fake.watch_timeout)
        except OSError:
            pass
        finally:
            if watcher is not None:
                fake._close_watch(watcher)

    def _stream(self, watcher: _Watcher, timeout: float) -> None:
        fake = self.server.fake
        now = time.monotonic()
        deadline = now + timeout
        next_bookmark = now + fake.bookmark_interval
        held = None  # an item taken from the queue while batching events, not handled yet
        while True:
            now = time.monotonic()
            if watcher.blackholed:  # written to no more, and never closed from this side
                if self._peer_gone() or not fake._hold(self.epoch, lambda: False):
                    return
                time.sleep(0.05)
                continue
            if now >= deadline:
                self._chunk(b"")
                return
            wait = min(deadline - now, 0.25)
            if watcher.bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                item, held = held or watcher.q.get(timeout=wait), None
            except queue.Empty:
                if self._peer_gone():
                    return
                if watcher.bookmarks and time.monotonic() >= next_bookmark:
                    # Queued behind any pending events, so the version it names is never ahead of them.
                    with fake._lock:
                        watcher.bookmark(fake._rv)
                    next_bookmark = time.monotonic() + fake.bookmark_interval
                continue
            if watcher.blackholed:
                continue  # swallowed: blackholed while waiting for it
            if not fake._admit(self.epoch) or item[0] == "abort":
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if item[0] == "end":
                self._chunk(b"")
                return
            if item[0] == "stall":
                if not fake._hold(self.epoch, lambda: fake._stalled_after("watch", watcher.res.kind, {}) is not None
                                  and not self._peer_gone()):
                    return
                continue
            # Events already queued go out together, as the API server's buffered writes do.
            batch = [item[1]]
            while len(batch) < 256:
                try:
                    more = watcher.q.get_nowait()
                except queue.Empty:
                    break
                if more[0] != "data":
                    held = more
                    break
                batch.append(more[1])
            self._chunk(b"".join(batch))

    def _peer_gone(self) -> bool:
        """A watching client sends nothing more, so a readable socket means it hung up."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _streaming_invalid(query: dict[str, str], supported: bool) -> str:
    """Why kube-apiserver would refuse a watch's streaming-list parameters ("" when it would not)."""
    initial, match = query.get("sendInitialEvents"), query.get("resourceVersionMatch")
    if not supported:
        if initial is not None:
            return "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList " \
                   "feature gate is enabled"
        if match:
            return "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch"
        return ""
    if initial == "true":
        if match != "NotOlderThan":
            return "resourceVersionMatch: Unsupported value: sendInitialEvents requires resourceVersionMatch=NotOlderThan"
        if query.get("allowWatchBookmarks") != "true":
            return "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true"
    elif match:
        return "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless " \
               "sendInitialEvents is provided"
    return ""


def _discovery(parts: tuple[str, ...]) -> dict | str | None:
    if parts == ("version",):
        return _VERSION
    if parts in (("healthz",), ("livez",), ("readyz",)):
        return "ok"
    if parts == ("api",):
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
    groups = sorted({r.group for r in RESOURCES.values() if r.group})
    if parts == ("apis",):
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in groups]}
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1])}
    for prefix in {r.prefix for r in RESOURCES.values()}:
        if parts == prefix:
            group_version = "/".join(prefix[1:])
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                    "resources": [{"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                                   "kind": r.kind, "verbs": ["get", "list", "watch"]}
                                  for r in RESOURCES.values() if r.prefix == prefix]}
    return None


def _group(name: str) -> dict:
    version = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [version], "preferredVersion": version}


__all__ = ["FakeApiServer", "RESOURCES", "label_selector", "field_selector", "status_body"]
