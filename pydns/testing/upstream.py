"""``Upstream``: a small real DNS server on 127.0.0.1 for tests and benchmarks.

    up = Upstream({("example.org.", "A"): ["1.2.3.4"]}, ttl=300).start()
    up.address            # ("127.0.0.1", port): UDP and TCP on the same port
    up.mode = "dead"      # change behaviour while it runs
    up.queries            # [(name, type, proto), ...] in arrival order; up.ids their message IDs
    up.sources            # [(proto, client address), ...]; up.tcp_connections: connections accepted
    up.set("a.test.", "A", ["10.0.0.1"]); up.remove("a.test.")   # change the data while it runs
    up.reset()            # forget the queries seen so far
    up.stop()

``port=N`` listens on that port (to bring a stopped upstream back on the same address).

Records are keyed by (name, type); values are presentation-format rdata (``"1.2.3.4"``,
``"example.org."``, TXT strings as they are).  A name with a CNAME is answered with the
CNAME and, when the target is known, the target's records of the asked type.  Unknown
names get NXDOMAIN, a known name with another type NODATA, both with an SOA in the
authority section.  ``. IN NS`` (the forward plugin's health check) is answered unless the
records say otherwise.

Modes (``up.mode``, changeable at run time):
  ``ok``        answer normally
  ``slow``      wait ``up.delay`` seconds, then answer
  ``dead``      never answer (TCP connections are accepted and left hanging)
  ``truncate``  UDP answers have TC set and no records; TCP answers are full
  ``wrong_id``  first a reply with another ID, then the right one
  ``servfail``  SERVFAIL to everything
  ``refused``   REFUSED to everything

``tls=(certfile, keyfile)`` serves DNS over TLS on the TCP port (no UDP then); with
``doh=True`` as well, DNS over HTTPS instead (HTTP/1.1, ``/dns-query``, POST and GET).
UDP answers larger than the client's limit (512, or its EDNS0 size) are truncated.
Everything runs on an asyncio loop in one background thread.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import struct
import threading

from dnslib import (CNAME, EDNS0, QTYPE, RCODE, RR, SOA, TXT, DNSLabel, DNSRecord)

MODES = ("ok", "slow", "dead", "truncate", "wrong_id", "servfail", "refused")
_LEN = struct.Struct("!H")


def _norm_name(name: str) -> str:
    name = str(name).lower()
    return name if name.endswith(".") else name + "."


class Upstream:
    def __init__(self, records: dict | None = None, ttl: int = 300, mode: str = "ok", delay: float = 1.0,
                 tls: tuple[str, str] | None = None, host: str = "127.0.0.1", port: int = 0, doh: bool = False):
        if doh and not tls:
            raise ValueError("DNS over HTTPS needs tls=(certfile, keyfile)")
        self.doh = doh
        self.ttl = ttl
        self.delay = delay
        self.host = host
        self.tls = tls
        self._mode = "ok"
        self.mode = mode
        self.records: dict[tuple[str, str], list[str]] = {}
        self.set(".", "NS", ["a.root-servers.net."])
        for (name, rtype), values in (records or {}).items():
            self.set(name, rtype, values)
        self.queries: list[tuple[str, str, str]] = []
        self.ids: list[int] = []  # the message ID of each query
        self.sources: list[tuple[str, tuple]] = []  # (proto, client address) per query
        self.tcp_connections = 0  # TCP (or TLS) connections accepted
        self.port = port  # 0: a free port, known once started
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._udp = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.Task] = set()

    # ---------------------------------------------------------------- configuration
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; one of {', '.join(MODES)}")
        self._mode = value

    def set(self, name: str, rtype: str, values: list[str]) -> None:
        """Add or replace the records of one name and type (safe while running)."""
        self.records[(_norm_name(name), str(rtype).upper())] = [values] if isinstance(values, str) else list(values)

    def remove(self, name: str, rtype: str | None = None) -> None:
        name = _norm_name(name)
        for key in [k for k in self.records if k[0] == name and (rtype is None or k[1] == rtype.upper())]:
            del self.records[key]

    def reset(self) -> None:
        """Forget the queries seen so far (records and mode stay)."""
        self.queries.clear()
        self.ids.clear()
        self.sources.clear()
        self.tcp_connections = 0

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "Upstream":
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self._thread.start()
        if not self._listening.wait(10):
            raise TimeoutError("upstream did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> "Upstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            server = await self._listen()
        except BaseException as exc:
            self._error = exc
            self._listening.set()
            return
        self._listening.set()
        await self._stop.wait()
        server.close()
        if self._udp is not None:
            self._udp.close()
        for writer in list(self._tcp_writers):
            writer.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        try:
            await asyncio.wait_for(server.wait_closed(), 2)
        except Exception:
            pass

    async def _listen(self):
        loop = asyncio.get_running_loop()
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            server = await asyncio.start_server(self._tcp_client, self.host, self.port, ssl=ctx)
            self.port = server.sockets[0].getsockname()[1]
            return server
        # UDP first (on a free port unless one was given), then TCP on the same number.
        for _ in range(20):
            transport, _proto = await loop.create_datagram_endpoint(lambda: _UDP(self),
                                                                    local_addr=(self.host, self.port))
            port = transport.get_extra_info("sockname")[1]
            try:
                server = await asyncio.start_server(self._tcp_client, self.host, port)
            except OSError:
                transport.close()
                if self.port:
                    raise
                continue
            self._udp, self.port = transport, port
            return server
        raise OSError("no free port for the upstream")

    # ---------------------------------------------------------------- serving
    def _handle(self, data: bytes, proto: str, addr, send) -> None:
        try:
            query = DNSRecord.parse(data)
        except Exception:
            return
        q = query.q
        self.queries.append((str(q.qname), QTYPE.get(q.qtype, str(q.qtype)), proto))
        self.ids.append(query.header.id)
        self.sources.append((proto, addr))
        mode = self._mode
        if mode == "dead":
            return
        replies = self._replies(query, mode, proto)
        if mode == "slow":
            asyncio.get_running_loop().call_later(self.delay, lambda: [send(r) for r in replies])
        else:
            for r in replies:
                send(r)

    def _replies(self, query: DNSRecord, mode: str, proto: str) -> list[bytes]:
        reply = query.reply()
        reply.header.ra = 1
        reply.header.aa = 0
        if mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        elif mode == "refused":
            reply.header.rcode = RCODE.REFUSED
        elif not (mode == "truncate" and proto == "udp"):
            self._answer(query, reply)
        limit = 65535
        if query.ar and any(rr.rtype == QTYPE.OPT for rr in query.ar):
            size = next(rr.rclass for rr in query.ar if rr.rtype == QTYPE.OPT)
            reply.add_ar(EDNS0(udp_len=1232))
            limit = max(size, 512)
        elif proto == "udp":
            limit = 512
        if mode == "truncate" and proto == "udp":
            reply.header.tc = 1
        packed = reply.pack()
        if proto == "udp" and len(packed) > min(limit, 65535):
            reply.rr, reply.auth = [], []
            reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
            reply.header.tc = 1
            packed = reply.pack()
        if mode == "wrong_id":
            wrong = bytearray(packed)
            wrong[0:2] = _LEN.pack(query.header.id ^ 0x5A5A)
            return [bytes(wrong), packed]
        return [packed]

    def _answer(self, query: DNSRecord, reply: DNSRecord) -> None:
        qname = query.q.qname
        qtype = QTYPE.get(query.q.qtype, "")
        name = _norm_name(str(qname))
        owner = DNSLabel(str(qname))
        for _ in range(8):  # follow CNAMEs inside the data, as a recursive server would
            if qtype != "CNAME" and (name, "CNAME") in self.records:
                target = self.records[(name, "CNAME")][0]
                reply.add_answer(RR(owner, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(target)))
                name, owner = _norm_name(target), DNSLabel(target)
                continue
            break
        values = self.records.get((name, qtype))
        if values:
            for value in values:
                reply.add_answer(self._rr(owner, qtype, value))
            return
        if reply.rr:
            return
        if not any(key[0] == name for key in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        zone = ".".join(name.rstrip(".").split(".")[-2:]) + "."
        if zone == ".":
            zone = name
        reply.add_auth(RR(zone, QTYPE.SOA, ttl=self.ttl,
                          rdata=SOA(f"ns.{zone}".replace("..", "."), f"hostmaster.{zone}".replace("..", "."),
                                    (1, 7200, 1800, 86400, self.ttl))))

    def _rr(self, owner: DNSLabel, qtype: str, value: str) -> RR:
        if qtype == "TXT":
            return RR(owner, QTYPE.TXT, ttl=self.ttl, rdata=TXT(value))
        rr = RR.fromZone(f"x. {self.ttl} IN {qtype} {value}")[0]
        rr.rname = owner
        return rr

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        try:
            await self._serve_stream(reader, writer)
        except asyncio.CancelledError:
            pass  # stopping; asyncio's stream callback must not see the task cancelled
        finally:
            self._clients.discard(task)

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tcp_connections += 1
        self._tcp_writers.add(writer)
        if self.doh:
            try:
                await self._http_client(reader, writer)
            finally:
                self._tcp_writers.discard(writer)
                writer.close()
            return
        proto = "tls" if self.tls else "tcp"
        peer = writer.get_extra_info("peername")

        def send(out: bytes) -> None:
            if not writer.is_closing():
                writer.write(_LEN.pack(len(out)) + out)

        try:
            while True:
                head = await reader.readexactly(2)
                data = await reader.readexactly(_LEN.unpack(head)[0])
                self._handle(data, proto, peer, send)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            writer.close()


    async def _http_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """DNS over HTTPS: one HTTP/1.1 request after another on a kept-alive connection."""
        peer = writer.get_extra_info("peername")
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _version = head[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path, _, query = target.partition("?")
                if method == "GET":
                    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
                    b64 = params.get("dns", "")
                    body = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
                if path != "/dns-query" or method not in ("GET", "POST"):
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                replies: list[bytes] = []
                self._handle(body, "https", peer, replies.append)
                if self._mode == "dead":
                    await asyncio.sleep(3600)
                if self._mode == "slow":
                    await asyncio.sleep(self.delay)
                    await asyncio.sleep(0)  # let the delayed reply land first
                out = replies[-1] if replies else b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/dns-message\r\n"
                             + f"Content-Length: {len(out)}\r\n\r\n".encode() + out)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError, OSError,
                ValueError):
            pass


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.upstream._handle(data, "udp", addr, lambda out: self.transport.sendto(out, addr))


def self_signed_cert(directory: str, name: str = "dns.example") -> tuple[str, str]:
    """Write a self-signed certificate for ``name`` and 127.0.0.1; returns (certfile, keyfile)."""
    import datetime
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile = os.path.join(directory, f"{name}.crt")
    keyfile = os.path.join(directory, f"{name}.key")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return certfile, keyfile
