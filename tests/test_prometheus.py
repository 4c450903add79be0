"""The prometheus plugin: /metrics over real HTTP after real DNS queries over UDP and TCP."""

from __future__ import annotations

import http.client
import platform
import socket

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pydns
from pydns.corefile import CorefileError
from pydns.metrics import TIME_BUCKETS
from pydns.plugin import Plugin
from pydns.testing import ServerThread, plugin_named
from pydns.testing.upstream import Upstream
from tests.conftest import free_port

SERVER = "dns://127.0.0.1:0"
SIZE_BOUNDS = ["0", "100", "200", "300", "400", "511", "1023", "2047", "4095", "8291", "16000", "32000", "48000",
               "64000", "+Inf"]


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read().decode()
    finally:
        conn.close()


def http_port(srv: ServerThread, host: str = "127.0.0.1", port: int = 0) -> int:
    return srv.instance.http[(host, port)].bound_port


class Scrape:
    """One /metrics page: its families and samples."""

    def __init__(self, port: int):
        status, ctype, body = http_get(port, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain; version=0.0.4")
        self.families = {f.name: f for f in text_string_to_metric_families(body)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def series(self, name: str) -> list[dict]:
        return [s.labels for s in self.samples if s.name == name]


def udp_raw(port: int, query: dns.message.Message) -> tuple[int, int]:
    """(query size, response size) of one UDP exchange."""
    wire = query.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(wire, ("127.0.0.1", port))
        reply = s.recv(65535)
    return len(wire), len(reply)


def test_queries_are_counted_by_proto_type_rcode_and_plugin(serve):
    srv = serve("count.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n whoami\n}\n"
                "fail.count.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n}\n")
    port = http_port(srv)
    zone = dict(server=SERVER, zone="count.test.", view="")
    sent = received = 0
    for _ in range(3):
        q, r = udp_raw(srv.port, dns.message.make_query("a.count.test", "A"))
        sent, received = sent + q, received + r
    for qtype in ("MX", "CAA", "SVCB"):
        udp_raw(srv.port, dns.message.make_query("a.count.test", qtype))
    udp_raw(srv.port, dns.message.make_query("a.count.test", "A", want_dnssec=True))
    for _ in range(2):
        assert srv.query("a.count.test", "AAAA", tcp=True).rcode() == dns.rcode.NOERROR
    assert srv.query("x.fail.count.test", "A").rcode() == dns.rcode.SERVFAIL
    assert srv.query("elsewhere.example", "A").rcode() == dns.rcode.REFUSED

    m = Scrape(port)
    assert m.families["coredns_dns_requests"].type == "counter"
    assert m.value("coredns_dns_requests_total", **zone, proto="udp", family="1", type="A") == 4
    assert m.value("coredns_dns_requests_total", **zone, proto="tcp", family="1", type="AAAA") == 2
    assert m.value("coredns_dns_requests_total", **zone, proto="udp", type="MX") == 1
    # CAA and SVCB are not among the types CoreDNS names: both are "other".
    assert m.value("coredns_dns_requests_total", **zone, proto="udp", type="other") == 2
    assert {tuple(sorted(s)) for s in m.series("coredns_dns_requests_total")} == {
        ("family", "proto", "server", "type", "view", "zone")}
    assert m.value("coredns_dns_responses_total", **zone, rcode="NOERROR", plugin="whoami") == 9
    assert m.value("coredns_dns_responses_total", server=SERVER, zone="fail.count.test.", rcode="SERVFAIL",
                   plugin="") == 1
    assert m.value("coredns_dns_do_requests_total", **zone) == 1

    assert m.families["coredns_dns_request_duration_seconds"].type == "histogram"
    assert m.value("coredns_dns_request_duration_seconds_count", **zone) == 9
    buckets = [s for s in m.families["coredns_dns_request_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["zone"] == "count.test."]
    assert [float(s.labels["le"]) for s in buckets] == [*TIME_BUCKETS, float("inf")]
    assert buckets[-1].value == 9
    assert 0 < m.value("coredns_dns_request_duration_seconds_sum", **zone) < 9 * 8.192

    udp_count = m.value("coredns_dns_request_size_bytes_count", **zone, proto="udp")
    assert udp_count == 7 and m.value("coredns_dns_request_size_bytes_count", **zone, proto="tcp") == 2
    assert m.value("coredns_dns_response_size_bytes_count", **zone, proto="tcp") == 2
    sizes = [s for s in m.families["coredns_dns_request_size_bytes"].samples
             if s.name.endswith("_bucket") and s.labels["zone"] == "count.test." and s.labels["proto"] == "udp"]
    assert [s.labels["le"] for s in sizes] == SIZE_BOUNDS
    # Every query here is under 100 bytes; every whoami answer is too.
    assert m.value("coredns_dns_request_size_bytes_bucket", **zone, proto="udp", le="100") == 7
    assert m.value("coredns_dns_request_size_bytes_bucket", **zone, proto="udp", le="0") == 0
    # The three plain A queries went through raw sockets: their exact sizes are known.
    assert m.value("coredns_dns_request_size_bytes_sum", **zone, proto="udp") >= sent
    assert m.value("coredns_dns_response_size_bytes_sum", **zone, proto="udp") >= received > 0


def test_plugin_enabled_build_info_panics_and_reload_failures(serve):
    srv = serve("info.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n errors\n log\n whoami\n}\n")
    m = Scrape(http_port(srv))
    enabled = {s["name"] for s in m.series("coredns_plugin_enabled")
               if s["zone"] == "info.test." and s["server"] == SERVER and s["view"] == ""}
    # bind only configures the listener: CoreDNS does not report it either.
    assert enabled == {"prometheus", "errors", "log", "whoami"}
    info = m.series("coredns_build_info")
    assert info == [{"version": pydns.__version__, "revision": "", "goversion": f"python{platform.python_version()}"}]
    assert m.value("coredns_build_info") == 1
    assert m.families["coredns_panics"].type == "counter"
    assert m.series("coredns_panics_total") == [{}]
    assert m.series("coredns_reload_failed_total") == [{}]
    assert m.series("process_cpu_seconds_total") == [{}]
    assert not [s for s in m.samples if s.name.endswith("_created")]


class _Crash(Plugin):
    """Raises for names starting with 'crash'."""

    def serve(self, req):
        if req.lname.startswith("crash"):
            raise RuntimeError("boom")
        return self.next.serve(req)


@pytest.fixture
def crash_plugin():
    with plugin_named("erratic", _Crash):
        yield


def test_panics_are_counted(serve, crash_plugin):
    srv = serve("panic.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n erratic\n whoami\n}\n")
    port = http_port(srv)
    before = Scrape(port).value("coredns_panics_total")
    assert srv.query("crash.panic.test", "A").rcode() == dns.rcode.SERVFAIL
    assert srv.query("fine.panic.test", "A").rcode() == dns.rcode.NOERROR
    m = Scrape(port)
    assert m.value("coredns_panics_total") == before + 1
    # As in CoreDNS, a query that crashed is not in the per-query metrics.
    assert m.value("coredns_dns_requests_total", zone="panic.test.") == 1


def test_two_server_blocks_share_one_endpoint(serve):
    port = free_port()
    srv = serve(f"a.share.test:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{port}\n whoami\n}}\n"
                f"b.share.test:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{port}\n whoami\n}}\n")
    assert list(srv.instance.http) == [("127.0.0.1", port)]
    srv.query("x.a.share.test", "A")
    srv.query("x.b.share.test", "TXT", tcp=True)
    m = Scrape(port)
    assert m.value("coredns_dns_requests_total", zone="a.share.test.", proto="udp", type="A") == 1
    assert m.value("coredns_dns_requests_total", zone="b.share.test.", proto="tcp", type="TXT") == 1
    assert {s["zone"] for s in m.series("coredns_plugin_enabled") if "share" in s["zone"]} == {
        "a.share.test.", "b.share.test."}


def test_counters_survive_a_reload_and_plugin_enabled_follows_it(serve, tmp_path):
    conf = tmp_path / "Corefile"
    conf.write_text("survive.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n log\n whoami\n}\n")
    srv = serve("", path=str(conf))
    for _ in range(3):
        srv.query("x.survive.test", "A")
    conf.write_text("survive.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n whoami\n}\n")
    assert srv.reload()
    srv.query("x.survive.test", "A")
    m = Scrape(http_port(srv))
    assert m.value("coredns_dns_requests_total", zone="survive.test.", type="A") == 4
    assert {s["name"] for s in m.series("coredns_plugin_enabled") if s["zone"] == "survive.test."} == {
        "prometheus", "whoami"}


def test_answers_that_arrive_later_are_counted(serve):
    up = Upstream({("www.later.test.", "A"): ["192.0.2.7"]}).start()
    try:
        srv = serve(f"later.test:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n"
                    f" forward . 127.0.0.1:{up.address[1]}\n}}\n")
        assert srv.query("www.later.test", "A").answer
        assert srv.query("nope.later.test", "A", tcp=True).rcode() == dns.rcode.NXDOMAIN
        m = Scrape(http_port(srv))
    finally:
        up.stop()
    assert m.value("coredns_dns_responses_total", zone="later.test.", rcode="NOERROR", plugin="forward") == 1
    assert m.value("coredns_dns_responses_total", zone="later.test.", rcode="NXDOMAIN", plugin="forward") == 1
    assert m.value("coredns_dns_request_duration_seconds_count", zone="later.test.") == 2
    assert m.value("coredns_dns_response_size_bytes_count", zone="later.test.", proto="tcp") == 1


def test_metrics_endpoint_answers_only_its_path(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n whoami\n}\n")
    port = http_port(srv)
    assert http_get(port, "/metrics", "HEAD")[0] == 200
    assert http_get(port, "/metrics", "POST")[0] == 405
    assert http_get(port, "/other")[0] == 404


@pytest.mark.parametrize("body, message", [
    ("prometheus a:1 b:2", "plugin/prometheus: wrong argument count"),
    ("prometheus localhost", "plugin/prometheus: address localhost: missing port in address"),
    ("prometheus ::1:9153", "too many colons in address"),
    ("prometheus localhost:http", "invalid port 'http'"),
    ("prometheus {\n runtime_metrics\n }", "plugin/prometheus: runtime_metrics (Go runtime metrics) is not supported"),
    ("prometheus {\n tls /etc/web.yml\n }", "plugin/prometheus: tls is not supported"),
    ("prometheus {\n foo\n }", "plugin/prometheus: unknown option: foo"),
    ("prometheus 127.0.0.1:0\n prometheus 127.0.0.1:0", "plugin/prometheus: this plugin can only be used once per Server Block"),
])
def test_setup_errors(tmp_path, body, message):
    conf = tmp_path / "Corefile"
    conf.write_text(f".:0 {{\n {body}\n}}\n")
    with pytest.raises(CorefileError) as err:
        ServerThread("", path=str(conf)).start()
    assert message in str(err.value)
    assert str(err.value).startswith(f"{conf}:2: ") or str(err.value).startswith(f"{conf}:3: ")


def test_metrics_port_in_use_fails_start_up_naming_the_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        conf = tmp_path / "Corefile"
        conf.write_text(f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{port}\n}}\n")
        with pytest.raises(CorefileError) as err:
            ServerThread("", path=str(conf)).start()
    assert str(err.value) == f"{conf}:3: plugin/prometheus: listen tcp 127.0.0.1:{port}: bind: address already in use"


def test_names_in_no_zone_are_counted_under_dropped(serve):
    srv = serve("only.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n whoami\n}\n")
    requests = dict(server=SERVER, zone="dropped", proto="udp", type="A")
    responses = dict(server=SERVER, zone="dropped", rcode="REFUSED", plugin="")
    before = Scrape(http_port(srv))  # counters are per process: earlier tests' servers count too
    for _ in range(3):
        assert srv.query("elsewhere.example", "A").rcode() == dns.rcode.REFUSED
    after = Scrape(http_port(srv))
    assert after.value("coredns_dns_requests_total", **requests) - before.value("coredns_dns_requests_total", **requests) == 3
    assert after.value("coredns_dns_responses_total", **responses) - before.value("coredns_dns_responses_total", **responses) == 3


def udp_reply(port: int, query: dns.message.Message, source: str = "127.0.0.1") -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.bind((source, 0))
        s.sendto(query.to_wire(), ("127.0.0.1", port))
        return s.recv(65535)


def tcp_reply(port: int, query: dns.message.Message) -> bytes:
    wire = query.to_wire()
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(len(wire).to_bytes(2, "big") + wire)
        data = b""
        while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
            chunk = s.recv(65535)
            assert chunk
            data += chunk
    return data[2:]


def size_histogram(m: Scrape, **labels) -> tuple[list[float], float]:
    """(the non-cumulative bucket counts, in SIZE_BOUNDS order; the sum)."""
    cumulative = [m.value("coredns_dns_response_size_bytes_bucket", le=le, **labels) for le in SIZE_BOUNDS]
    return ([c - p for c, p in zip(cumulative, [0.0, *cumulative])],
            m.value("coredns_dns_response_size_bytes_sum", **labels))


def test_response_sizes_are_those_of_the_replies_sent(serve, tmp_path):
    # hosts writes each A record as 16 bytes (a pointer to the question): with the name's
    # length, that gives replies of exact sizes on either side of the buckets' bounds and of
    # the 512-byte limit of a client without EDNS.
    names = {"abcdefgh.size.test": 4, "abcdefghi.size.test": 4, "abcd.size.test": 30, "wide.size.test": 31}
    inline = "".join(f"  10.0.{n}.{i} {name}\n" for n, (name, count) in enumerate(names.items())
                     for i in range(1, count + 1))
    empty = tmp_path / "hosts"
    empty.write_text("")
    srv = serve(f"size.test:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n hosts {empty} {{\n{inline} }}\n}}\n")
    port = http_port(srv)
    zone = dict(server=SERVER, zone="size.test.", view="")
    before = {proto: size_histogram(Scrape(port), proto=proto, **zone) for proto in ("udp", "tcp")}

    sent = {"udp": [], "tcp": []}
    for name in names:
        sent["udp"].append(udp_reply(srv.port, dns.message.make_query(name, "A")))
    small_edns = dns.message.make_query("wide.size.test", "A", use_edns=0, payload=512)
    for query in (dns.message.make_query("wide.size.test", "A", use_edns=0, payload=1232), small_edns,
                  dns.message.make_query("abcd.size.test", "A", use_edns=0, payload=1232, want_dnssec=True)):
        sent["udp"].append(udp_reply(srv.port, query))
    for query in (dns.message.make_query("wide.size.test", "A"), small_edns):
        sent["tcp"].append(tcp_reply(srv.port, query))

    plain = [len(r) for r in sent["udp"][:4]]
    assert plain[:3] == [100, 101, 512]  # on a bound, just past it, at the UDP limit: not truncated
    truncated = dns.message.from_wire(sent["udp"][3])
    assert truncated.flags & dns.flags.TC and plain[3] == 512  # 528 bytes would not fit: cut to 30 records
    edns_full, edns_truncated, edns_do = (dns.message.from_wire(r) for r in sent["udp"][4:])
    assert len(sent["udp"][4]) == 528 + 11 and not edns_full.flags & dns.flags.TC  # with its OPT record
    assert edns_truncated.flags & dns.flags.TC and len(sent["udp"][5]) <= 512 and edns_truncated.opt
    assert len(sent["udp"][6]) == 512 + 11 and edns_do.ednsflags & dns.flags.DO
    assert [len(r) for r in sent["tcp"]] == [528, 528 + 11]  # TCP is never truncated here

    m = Scrape(port)
    for proto, replies in sent.items():
        counts, total = size_histogram(m, proto=proto, **zone)
        old_counts, old_total = before[proto]
        expected = [0] * len(SIZE_BOUNDS)
        for reply in replies:
            expected[next(i for i, b in enumerate(SIZE_BOUNDS) if b == "+Inf" or len(reply) <= float(b))] += 1
        assert [c - o for c, o in zip(counts, old_counts)] == expected, proto
        assert total - old_total == sum(len(r) for r in replies), proto
