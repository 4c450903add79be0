"""rewrite's ``cname`` rules over real UDP and TCP, table-driven after CoreDNS's own cases.

The answers come from a real upstream (through *forward*) that answers each name with the
records given here, TTLs and TC bit included; the new targets are looked up through the
server itself, so through *forward* too.  Each case checks the whole answer section, in
order and with TTLs, the rcode and the TC bit.
"""

from __future__ import annotations

import urllib.request

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from dnslib import QTYPE, RCODE, RR
from prometheus_client.parser import text_string_to_metric_families

from pydns.testing import free_port
from pydns.testing.upstream import Upstream
from tests.plugin_cases import corefile

pytestmark = pytest.mark.timeout(120)

V6 = "3a01:7e00::f03c:91ff:fe79:234c"

# (name, type) -> (records, TC): what the upstream answers.
UPSTREAM = {
    ("abc.example.com.", "A"): (["abc.example.com. 5 IN CNAME def.example.com.", "def.example.com. 5 IN A 1.2.3.4"],
                                False),
    ("abc.example.com.", "AAAA"): (["abc.example.com. 5 IN CNAME def.example.com.",
                                    "def.example.com. 5 IN AAAA 2a01:7e00::f03c:91ff:fe79:234c"], False),
    ("xyz.example.com.", "A"): (["xyz.example.com. 3600 IN A 3.4.5.6"], False),
    ("xyz.example.com.", "AAAA"): ([f"xyz.example.com. 3600 IN AAAA {V6}"], False),
    ("chat.openai.com.", "A"): (["chat.openai.com. 20 IN CNAME chat.openai.com.cdn.cloudflare.net.",
                                 "chat.openai.com.cdn.cloudflare.net. 30 IN A 23.2.1.2",
                                 "chat.openai.com.cdn.cloudflare.net. 30 IN A 24.6.0.8"], False),
    ("bard.google.com.cdn.cloudflare.net.", "A"): (["bard.google.com.cdn.cloudflare.net. 1800 IN A 9.7.2.1"], False),
    ("coredns.io.", "A"): (["coredns.io. 100 IN CNAME www.hosting.uvw.", "www.hosting.uvw. 200 IN A 7.2.3.4"], False),
    ("www.hosting.xyz.", "A"): (["www.hosting.xyz. 500 IN A 20.30.40.50"], False),
    ("core.dns.rocks.", "A"): (["core.dns.rocks. 200 IN CNAME abcd.efgh.pqrst.", "abcd.efgh.pqrst. 100 IN A 200.30.45.67"],
                               False),
    ("abcd.zzzz.www.pqrst.", "A"): (["abcd.zzzz.www.pqrst. 120 IN A 101.20.5.1",
                                     "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.2"], False),
    ("order.service.eu.", "A"): (["order.service.eu. 200 IN CNAME orders.web.eu.site.",
                                  "orders.web.eu.site. 50 IN A 10.10.15.1"], False),
    ("orders.webapp.eu.org.", "A"): (["orders.webapp.eu.org. 120 IN A 20.0.0.9"], False),
    ("music.spotify.com.", "A"): (["music.spotify.com. 200 IN CNAME music.truncated.spotify.com."], False),
    ("music.truncated.spotify.com.", "A"): (["music.truncated.spotify.com. 120 IN A 10.1.0.9"], True),
    ("cname-chain.org.", "A"): (["cname-chain.org. 200 IN CNAME intermediate-1.com.",
                                 "intermediate-1.com. 200 IN CNAME intermediate-2.prod.",
                                 "intermediate-2.prod. 200 IN CNAME final.prod.net.",
                                 "final.prod.net. 120 IN A 1.2.3.4"], False),
    ("intermediate-2.staging.", "A"): (["intermediate-2.staging. 200 IN CNAME final.staging.net.",
                                        "final.staging.net. 120 IN A 5.6.7.8"], False),
    # Beyond CoreDNS's table: the failures, TTL rules, names as the answer wrote them.
    ("down.example.", "A"): (["down.example. 60 IN CNAME old.down.example.", "old.down.example. 60 IN A 10.9.9.9"],
                             False),
    ("failing.example.", "A"): (["failing.example. 60 IN CNAME old.failing.example.",
                                 "old.failing.example. 60 IN A 10.9.9.8"], False),
    ("long.example.", "A"): (["long.example. 60 IN CNAME x0123456789x0123456789x.long.example.",
                              "x0123456789x0123456789x.long.example. 60 IN A 10.9.9.7"], False),
    ("ttl.example.", "A"): (["ttl.example. 300 IN CNAME old.ttl.example.", "old.ttl.example. 300 IN A 10.9.9.6"],
                            False),
    ("new.ttl.example.", "A"): (["new.ttl.example. 3600 IN A 10.8.8.6"], False),
    ("mixed.example.", "A"): (["mixed.example. 60 IN CNAME Old.Mixed.Example.", "Old.Mixed.Example. 60 IN A 10.9.9.5"],
                              False),
    ("new.mixed.example.", "A"): (["new.mixed.example. 60 IN A 10.8.8.5"], False),
    ("unqualified.example.", "A"): (["unqualified.example. 60 IN CNAME app.plain.site.",
                                     "app.plain.site. 60 IN A 10.9.9.4"], False),
    ("app.webapp.eu.org.", "A"): (["app.webapp.eu.org. 60 IN A 10.8.8.4"], False),
    ("multi.example.", "A"): (["multi.example. 60 IN CNAME a.multi.prod2.", "a.multi.prod2. 60 IN CNAME b.multi.prod2.",
                               "b.multi.prod2. 60 IN A 10.9.9.3"], False),
    ("a.multi.stage2.", "A"): (["a.multi.stage2. 60 IN A 10.8.8.3"], False),
    ("b.multi.stage2.", "A"): (["b.multi.stage2. 60 IN A 10.8.8.2"], False),
}
SERVFAIL_NAMES = {"new.down.example."}  # the upstream answers these SERVFAIL

RULES = r"""
 rewrite cname prefix "" nothing.example.
 rewrite continue cname exact def.example.com xyz.example.com
 rewrite continue cname prefix chat.openai.com bard.google.com
 rewrite continue cname suffix uvw. xyz.
 rewrite continue cname substring efgh zzzz.www
 rewrite continue cname regex (.*)\.web\.(.*)\.site\. {1}.webapp.{2}.org.
 rewrite continue cname regex ^(.*)\.plain\.site\.$ {1}.webapp.eu.org
 rewrite continue cname exact music.truncated.spotify.com. music.truncated.spotify.com.
 rewrite continue cname suffix prod. staging.
 rewrite continue cname exact old.down.example. new.down.example.
 rewrite continue cname exact old.failing.example. new.failing.example.
 rewrite continue cname regex ^(.*)\.long\.example\.$ {1}{1}{1}.long.example.
 rewrite continue ttl exact ttl.example. 7
 rewrite continue cname exact old.ttl.example. new.ttl.example.
 rewrite continue cname suffix multi.prod2. multi.stage2.
 rewrite continue cname prefix "" nothing.example.
 rewrite cname exact old.mixed.example. new.mixed.example.
"""
# new.failing.example is answered by a template that fails (SERVFAIL as configured).  The
# first rule, with an empty FROM, never applies: were it taken as applied, it would end the
# list (it does not say ``continue``) and no other rule would run.
FAILING = """
 template IN A new.failing.example {
  rcode SERVFAIL
 }
"""

CASES = [
    # CoreDNS's cases (plugin/rewrite/cname_target_test.go)
    ("abc.example.com", "A", ["abc.example.com. 5 IN CNAME xyz.example.com.", "xyz.example.com. 3600 IN A 3.4.5.6"]),
    ("abc.example.com", "AAAA", ["abc.example.com. 5 IN CNAME xyz.example.com.", f"xyz.example.com. 3600 IN AAAA {V6}"]),
    ("chat.openai.com", "A", ["chat.openai.com. 20 IN CNAME bard.google.com.cdn.cloudflare.net.",
                              "bard.google.com.cdn.cloudflare.net. 1800 IN A 9.7.2.1"]),
    ("coredns.io", "A", ["coredns.io. 100 IN CNAME www.hosting.xyz.", "www.hosting.xyz. 500 IN A 20.30.40.50"]),
    ("core.dns.rocks", "A", ["core.dns.rocks. 200 IN CNAME abcd.zzzz.www.pqrst.",
                             "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.1", "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.2"]),
    ("order.service.eu", "A", ["order.service.eu. 200 IN CNAME orders.webapp.eu.org.",
                               "orders.webapp.eu.org. 120 IN A 20.0.0.9"]),
    # The target is looked up even when TO is the old target.  The upstream truncates its
    # answer; forward asks again over TCP, so the lookup's answer is whole and the reply has
    # no TC (CoreDNS's mocked lookup hands the TC bit on).
    ("music.spotify.com", "A", ["music.spotify.com. 200 IN CNAME music.truncated.spotify.com.",
                                "music.truncated.spotify.com. 120 IN A 10.1.0.9"]),
    # Only the CNAME that matches is re-pointed; the CNAMEs before it stay.
    ("cname-chain.org", "A", ["cname-chain.org. 200 IN CNAME intermediate-1.com.",
                              "intermediate-1.com. 200 IN CNAME intermediate-2.staging.",
                              "intermediate-2.staging. 200 IN CNAME final.staging.net.",
                              "final.staging.net. 120 IN A 5.6.7.8"]),
    # The lookup answers SERVFAIL (the upstream's): the CNAME is re-pointed, nothing follows.
    ("down.example", "A", ["down.example. 60 IN CNAME new.down.example."]),
    # The lookup fails inside the server (a plugin's error): the same.
    ("failing.example", "A", ["failing.example. 60 IN CNAME new.failing.example."]),
    # The new target is no domain name (a label over 63 octets): the answer stays as it came.
    ("long.example", "A", ["long.example. 60 IN CNAME x0123456789x0123456789x.long.example.",
                           "x0123456789x0123456789x.long.example. 60 IN A 10.9.9.7"]),
    # A ttl rule reaches the records the answer came with, not those of the lookup.
    ("ttl.example", "A", ["ttl.example. 7 IN CNAME new.ttl.example.", "new.ttl.example. 3600 IN A 10.8.8.6"]),
    # FROM is matched against the target as the answer wrote it: lower-cased FROM never
    # matches a mixed-case target (CoreDNS compares the strings as they are).
    ("mixed.example", "A", ["mixed.example. 60 IN CNAME Old.Mixed.Example.", "Old.Mixed.Example. 60 IN A 10.9.9.5"]),
    # Two CNAMEs match: the rule acts on the first only (CoreDNS would look b.multi.stage2 up
    # too and append its answer after a.multi.stage2's).
    ("multi.example", "A", ["multi.example. 60 IN CNAME a.multi.stage2.", "a.multi.stage2. 60 IN A 10.8.8.3"]),
    # A regex's TO written without the final dot: the target is qualified.
    ("unqualified.example", "A", ["unqualified.example. 60 IN CNAME app.webapp.eu.org.",
                                  "app.webapp.eu.org. 60 IN A 10.8.8.4"]),
]


class CraftedUpstream(Upstream):
    """An upstream answering each (name, type) with exactly the records of UPSTREAM."""

    def _answer(self, query, reply) -> None:
        name, qtype = str(query.q.qname).lower(), QTYPE.get(query.q.qtype)
        if name in SERVFAIL_NAMES:
            reply.header.rcode = RCODE.SERVFAIL
            return
        records, truncated = UPSTREAM.get((name, qtype), ([], False))
        for line in records:
            reply.add_answer(*RR.fromZone(line))
        if not records:
            reply.header.rcode = RCODE.NXDOMAIN
        reply.header.tc = int(truncated)


@pytest.fixture(scope="module")
def server():
    from pydns.testing import ServerThread

    with CraftedUpstream() as upstream:
        metrics_port = free_port()
        srv = ServerThread(corefile(f"{RULES}{FAILING}\n prometheus 127.0.0.1:{metrics_port}\n"
                                    f" forward . 127.0.0.1:{upstream.address[1]}")).start()
        srv.metrics_port = metrics_port
        yield srv
        srv.stop()


def answer_lines(msg) -> list[str]:
    return [line for rrset in msg.answer for line in rrset.to_text().splitlines()]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("name,qtype,expected", CASES)
def test_cname_target_rewrite(server, name, qtype, expected, proto):
    q = dns.message.make_query(name, qtype)
    fn = dns.query.udp if proto == "udp" else dns.query.tcp
    reply = fn(q, "127.0.0.1", port=server.port, timeout=5)
    assert reply.rcode() == dns.rcode.NOERROR
    assert answer_lines(reply) == expected
    assert not reply.flags & dns.flags.TC
    assert str(reply.question[0].name) == name + "."  # the client's own question


def test_a_lookup_not_made_is_counted(server):
    def failures() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as resp:
            for family in text_string_to_metric_families(resp.read().decode()):
                for sample in family.samples:
                    if sample.name == "pydns_rewrite_cname_failures_total" and \
                            sample.labels == {"cause": "not a domain name"}:
                        return sample.value
        return 0.0

    before = failures()
    server.query("long.example")
    server.query("abc.example.com")  # a lookup made is no failure
    assert failures() == before + 1
