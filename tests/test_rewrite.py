"""rewrite: queries rewritten on their way in and answers on their way out, over real UDP/TCP."""

from __future__ import annotations

import dns.edns
import dns.rcode
import dns.rdatatype
import pytest

from tests.plugin_cases import CapturingUpstream, ask, corefile, startup_error

HOSTS = """ hosts {
  10.0.0.1 bar.example.org
  10.0.0.2 ftp.service.us-west-1.consul
  10.0.0.3 www.google.com
  10.0.0.4 a.svc.coredns.
  10.0.0.5 short.example.org
  reload 0
  fallthrough
 }
 template IN CNAME example.net {
  answer "{{ .Name }} 60 IN CNAME target.service.consul."
 }
 template IN MX mx.internal {
  answer "{{ .Name }} 60 IN MX 10 mail.internal."
 }
 template IN A nx.internal {
  rcode NXDOMAIN
 }
 template IN A broken.internal {
  rcode SERVFAIL
 }"""


def owners(reply) -> list[str]:
    return [rrset.name.to_text() for rrset in reply.answer]


def values(reply) -> list[str]:
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


# (rewrite lines, query name, query type, answer owners, answer values)
CASES = [
    # exact: the answer always comes back under the client's name
    (" rewrite name exact foo.example.org bar.example.org", "foo.example.org", "A",
     ["foo.example.org."], ["10.0.0.1"]),
    (" rewrite name foo.example.org. bar.example.org.", "FOO.Example.org", "A", ["FOO.Example.org."], ["10.0.0.1"]),
    # prefix: FROM and TO are qualified names, so "foo" is the label "foo."
    (" rewrite name prefix foo bar answer auto", "foo.example.org", "A", ["foo.example.org."], ["10.0.0.1"]),
    (" rewrite name prefix foo bar", "coredns.foo", "A", [], []),
    # suffix without answer rules: the records keep the rewritten name (as CoreDNS)
    (" rewrite name suffix .schmoogle.com. .google.com.", "www.schmoogle.com", "A",
     ["www.google.com."], ["10.0.0.3"]),
    (" rewrite name suffix .schmoogle.com. .google.com. answer auto", "www.schmoogle.com", "A",
     ["www.schmoogle.com."], ["10.0.0.3"]),
    (" rewrite name substring service svc answer auto", "a.service.coredns", "A",
     ["a.service.coredns."], ["10.0.0.4"]),
    (r" rewrite name regex (.*)-(us-west-1)\.example\.org {1}.service.{2}.consul answer auto",
     "ftp-us-west-1.example.org", "A", ["ftp-us-west-1.example.org."], ["10.0.0.2"]),
    (r" rewrite name regex (.*)-(us-west-1)\.example\.org {1}.service.{2}.consul",
     "ftp-us-west-1.example.org", "A", ["ftp.service.us-west-1.consul."], ["10.0.0.2"]),
    (" rewrite stop {\n  name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul\n"
     "  answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.coredns.rocks\n }",
     "ftp-us-west-1.coredns.rocks", "A", ["ftp-us-west-1.coredns.rocks."], ["10.0.0.2"]),
    # answer value rewrites the name inside CNAME (and MX, SRV, ...) records
    (" rewrite name suffix .example.com. .example.net. answer auto answer value (.*)\\.service\\.consul\\. "
     "{1}.coredns.rocks.", "www.example.com", "CNAME", ["www.example.com."], ["target.coredns.rocks."]),
    (" rewrite name exact mx.example.com. mx.mx.internal. answer value mail\\.internal\\. mail.example.com.",
     "mx.example.com", "MX", ["mx.example.com."], ["10 mail.example.com."]),
    # type and class
    (" rewrite type AAAA A", "bar.example.org", "AAAA", ["bar.example.org."], ["10.0.0.1"]),
    # ttl: the records keep their data, only TTLs change (checked below)
    (" rewrite ttl bar.example.org 15", "bar.example.org", "A", ["bar.example.org."], ["10.0.0.1"]),
    # no rule matches: untouched
    (" rewrite name exact other.example.org bar.example.org", "bar.example.org", "A",
     ["bar.example.org."], ["10.0.0.1"]),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("rules,qname,qtype,want_owners,want_values", CASES)
def test_rewrites(serve, rules, qname, qtype, want_owners, want_values, tcp):
    srv = serve(corefile(f"{rules}\n{HOSTS}"))
    for _ in range(2):  # the second time comes from what the first one left ready
        reply = ask(srv, qname, qtype, tcp=tcp)
        assert reply.question[0].name.to_text() == qname + "."  # the client's own question, case kept
        assert dns.rdatatype.to_text(reply.question[0].rdtype) == qtype
        assert owners(reply) == want_owners
        assert values(reply) == want_values


def test_class_rewrite_sends_ch_queries_to_in_data(serve):
    srv = serve(corefile(f" rewrite class CH IN\n{HOSTS}"))
    reply = ask(srv, "bar.example.org", "A", "CH")
    assert reply.question[0].rdclass == dns.rdataclass.CH
    assert values(reply) == ["10.0.0.1"]


@pytest.mark.parametrize("rule,ttl", [
    ("rewrite ttl bar.example.org 15", 15),
    ("rewrite ttl regex (.*)\\.example\\.org 30-300", 300),  # hosts' 3600 is clamped
    ("rewrite ttl suffix example.org -30", 30),
    ("rewrite ttl prefix bar 5000-", 5000),
    ("rewrite ttl substring example 10-4000", 3600),  # inside the range: unchanged
])
def test_ttl_rules(serve, rule, ttl):
    srv = serve(corefile(f" {rule}\n{HOSTS}"))
    assert [rrset.ttl for rrset in ask(srv, "bar.example.org").answer] == [ttl]


@pytest.mark.parametrize("rule,name,rcode", [
    ("rewrite rcode nx.internal NXDOMAIN NOERROR", "nx.internal", dns.rcode.NOERROR),
    ("rewrite rcode suffix .internal 3 5", "nx.internal", dns.rcode.REFUSED),
    ("rewrite rcode regex broken\\. SERVFAIL NOERROR", "broken.internal", dns.rcode.NOERROR),
    ("rewrite rcode nx.internal SERVFAIL NOERROR", "nx.internal", dns.rcode.NXDOMAIN),  # other rcodes stay
])
def test_rcode_rules(serve, rule, name, rcode):
    srv = serve(corefile(f" {rule}\n{HOSTS}"))
    assert ask(srv, name).rcode() == rcode


def test_stop_ends_the_rules_and_continue_goes_on(serve):
    stop = serve(corefile(" rewrite name exact a.example.org b.example.org\n"
                          " rewrite name exact b.example.org bar.example.org\n" + HOSTS))
    # One rule per query unless it says continue: b.example.org is not rewritten again.
    assert not stop.query("a.example.org").answer
    chained = serve(corefile(" rewrite continue name exact a.example.org b.example.org\n"
                             " rewrite name exact b.example.org bar.example.org\n" + HOSTS))
    reply = chained.query("a.example.org")
    assert owners(reply) == ["a.example.org."] and values(reply) == ["10.0.0.1"]


def test_an_invalid_name_after_the_rewrite_is_servfail(serve):
    srv = serve(corefile(" rewrite name regex ^(.*)\\.bad\\.$ {1}{1}{1}{1}{1}{1}{1}{1}.example.org\n" + HOSTS))
    assert srv.query("abcdefghij.bad").rcode() == dns.rcode.SERVFAIL


@pytest.fixture
def capture():
    up = CapturingUpstream()
    yield up
    up.stop()


def _options(query) -> dict[int, bytes]:
    return {opt.otype: opt.to_wire() for opt in query.options}


@pytest.mark.parametrize("rule,code,data", [
    ("rewrite edns0 local set 0xffee 0x61626364", 0xFFEE, b"abcd"),
    ("rewrite edns0 local set 0xffee abcd", 0xFFEE, b"abcd"),
    ("rewrite edns0 local append 0xffee {protocol}", 0xFFEE, b"udp"),
    ("rewrite edns0 local set 0xffee {client_ip}", 0xFFEE, bytes([127, 0, 0, 1])),
    ("rewrite edns0 local set 0xffee {qtype}", 0xFFEE, b"\x00\x01"),
    ("rewrite edns0 nsid set", 3, b""),
    ("rewrite edns0 subnet set 24 56", 8, b"\x00\x01\x18\x00\x7f\x00\x00"),
    ("rewrite edns0 subnet set 8 56 revert", 8, b"\x00\x01\x08\x00\x7f"),
])
def test_edns0_options_reach_the_upstream(serve, capture, rule, code, data):
    srv = serve(corefile(f" {rule}\n forward . 127.0.0.1:{capture.port}"))
    reply = srv.query("up.example.org")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    seen = capture.queries[-1]
    assert seen.edns == 0 and seen.payload == 4096  # a query without OPT gets one
    assert _options(seen)[code] == data
    assert reply.edns == -1  # the client sent no OPT: its reply has none


def test_names_with_escaped_dots_keep_their_labels(serve, capture):
    srv = serve(corefile(f" rewrite name suffix .example.org. .example.net.\n forward . 127.0.0.1:{capture.port}"))
    assert srv.query("a\\.b.example.org").rcode() == dns.rcode.NXDOMAIN
    assert capture.queries[-1].question[0].name.labels == (b"a.b", b"example", b"net", b"")


def test_edns0_replace_and_unset_touch_only_existing_options(serve, capture):
    srv = serve(corefile(" rewrite continue edns0 local replace 0xffee bcde\n"
                         " rewrite edns0 local unset 0xfff0\n"
                         f" forward . 127.0.0.1:{capture.port}"))
    srv.query("up.example.org", use_edns=0, payload=1232)
    assert 0xFFEE not in _options(capture.queries[-1])
    srv.query("up.example.org", use_edns=0, payload=1232,
              options=[dns.edns.GenericOption(0xFFEE, b"abcd"), dns.edns.GenericOption(0xFFF0, b"x")])
    seen = capture.queries[-1]
    assert _options(seen) == {0xFFEE: b"bcde"} and seen.payload == 1232


@pytest.mark.parametrize("body,message", [
    (" rewrite", "no rule type"),
    (" rewrite continue", "continue rule must begin with a rule type"),
    (" rewrite name", "too few arguments for a name rule"),
    (" rewrite foo a b", "invalid rule type"),
    (" rewrite answer name a b", "response rewrites must begin with a name rule"),
    (" rewrite type ANY XX", "invalid type 'XX'"),
    (" rewrite type ANY", "exactly two arguments"),
    (" rewrite class XX IN", "invalid class 'XX'"),
    (" rewrite name regex ([a-z]+ x", "invalid regex"),
    (" rewrite name regex (.*) {1}{2}.example.org", "uses more subexpressions"),
    (" rewrite name fuzzy a b", "name rule supports only exact"),
    (" rewrite name suffix a b answer", "invalid arguments"),
    (" rewrite name suffix a b answer auto answer name x y", "cannot be combined"),
    (" rewrite name suffix a b answer bogus x y", "invalid type 'bogus'"),
    (" rewrite name suffix a b answer name x", "2 arguments required"),
    (" rewrite ttl a.example.org x", "invalid TTL 'x'"),
    (" rewrite ttl a.example.org 40-30", "invalid TTL '40-30'"),
    (" rewrite ttl a.example.org -", "invalid TTL '-'"),
    (" rewrite ttl fuzzy a.example.org 30", "only exact, prefix"),
    (" rewrite rcode a.example.org FOO NOERROR", "invalid matching RCODE 'FOO'"),
    (" rewrite rcode a.example.org NOERROR 99", "invalid replacement RCODE '99'"),
    (" rewrite edns0 local set 0xzz abc", "invalid EDNS0 option code"),
    (" rewrite edns0 local set 0xffee 0xzz", "invalid hex data"),
    (" rewrite edns0 local set 0xffee {nonsense}", "unsupported variable name"),
    (" rewrite edns0 local set 0xffee {/app}", "unsupported variable name"),  # a label is plugin/name
    (" rewrite edns0 local set 0xffee {kubernetes/}", "unsupported variable name"),
    (" rewrite edns0 local frob 0xffee abc", "invalid action"),
    (" rewrite edns0 subnet set 33 56", "invalid IPv4 bit mask length 33"),
    (" rewrite edns0 subnet set 24 129", "invalid IPv6 bit mask length 129"),
    (" rewrite edns0 nsid set extra", "EDNS0 nsid set takes 0 argument"),
    (" rewrite edns0 bogus set", "invalid rule type 'bogus'"),
    (" rewrite cname fuzzy a b", "unknown cname rewrite type: fuzzy"),
    (" rewrite cname a", "too few (1) arguments for a cname rule"),
    (" rewrite cname regex ([a-z x", "invalid cname rewrite regex pattern: ([a-z"),
    (" rewrite cname regex " + "a" * 10001 + " x", "regex pattern too long in a cname rule: 10001 > 10000"),
])
def test_malformed_rules_are_startup_errors(tmp_path, body, message):
    startup_error(tmp_path, body, 3, message)


@pytest.mark.parametrize("rule", ["rewrite cname regex (.*).cdn.example.net. {1}.other.cdn.com.",
                                  "rewrite cname suffix .cdn.example.net. .other.cdn.com.",
                                  "rewrite cname exact my-app.com.cdn.example.net my-app.com.other.cdn.com"])
def test_cname_target_rewrite_follows_the_new_target(serve, rule):
    srv = serve(corefile(f""" {rule}
 template IN A my-app.com {{
  answer "my-app.com. 200 IN CNAME my-app.example." "my-app.example. 200 IN CNAME my-app.com.cdn.example.net." "my-app.com.cdn.example.net. 300 IN A 20.2.0.1"
 }}
 hosts {{
  30.3.1.2 my-app.com.other.cdn.com
  reload 0
 }}"""))
    reply = srv.query("my-app.com")
    assert [line for rrset in reply.answer for line in rrset.to_text().splitlines()] == [
        "my-app.com. 200 IN CNAME my-app.example.",
        "my-app.example. 200 IN CNAME my-app.com.other.cdn.com.",
        "my-app.com.other.cdn.com. 3600 IN A 30.3.1.2",
    ]


def test_cname_rewrites_that_feed_themselves_stop(serve):
    # Every answer's CNAME is rewritten to a name whose answer is a CNAME again: bounded, no loop.
    srv = serve(corefile(""" rewrite cname regex ^(.*)\\.loop\\.$ x{1}.loop.
 template IN A loop {
  answer "{{ .Name }} 60 IN CNAME a.{{ .Name }}"
 }"""))
    reply = srv.query("start.loop")
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer


def test_explain_shows_the_rewritten_query_and_who_answered_it(serve):
    from tests.test_explain import explain

    srv = serve(".:0 {\n bind 127.0.0.1\n explain 127.0.0.1:0\n"
                " rewrite name exact alias.example.org real.example.org\n"
                " hosts {\n  10.0.0.1 real.example.org\n  fallthrough\n }\n whoami\n}\n")
    out = explain(srv, "alias.example.org.")
    assert out["plugin"] == "hosts" and out["answer"][0].endswith("A 10.0.0.1"), out
    rewrote = [s for s in out["steps"] if s["plugin"] == "rewrite"]
    assert rewrote and rewrote[0]["verdict"] == "rewrote"
    assert rewrote[0]["reason"] == "asked on as real.example.org. A IN"
