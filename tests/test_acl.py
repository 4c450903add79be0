"""acl over real UDP/TCP: allow, block, filter and drop by query type and client address."""

from __future__ import annotations

import re

import dns.exception
import dns.flags
import dns.rcode
import pytest
from dns.edns import EDECode, OptionType

from pydns.tcp import TCP_MAX_INFLIGHT
from tests.plugin_cases import ask, corefile, startup_error
from tests.tcp_clients import connect, frame, hung_up, read_replies

# Behind the acl: whoami answers every name, so "allowed" is an answer with additional records.
ALLOWED, BLOCKED, FILTERED, DROPPED = "allowed", "blocked", "filtered", "dropped"


def outcome(srv, name: str, qtype: str = "A", tcp: bool = False) -> str:
    try:
        reply = ask(srv, name, qtype, tcp=tcp, use_edns=0)
    except dns.exception.Timeout:
        return DROPPED
    if reply.rcode() == dns.rcode.REFUSED:
        return BLOCKED
    if reply.rcode() == dns.rcode.NOERROR and not reply.answer and not reply.additional:
        return FILTERED
    assert reply.additional, reply
    return ALLOWED


# (acl lines, [(query name, type, outcome)]); the client is 127.0.0.1
CASES = [
    (" acl {\n  block type A net 127.0.0.0/8\n }",
     [("a.example.org", "A", BLOCKED), ("a.example.org", "AAAA", ALLOWED)]),
    (" acl {\n  filter type A net 127.0.0.0/8\n }",
     [("a.example.org", "A", FILTERED), ("a.example.org", "MX", ALLOWED)]),
    (" acl {\n  block type A net 192.168.0.0/16\n }", [("a.example.org", "A", ALLOWED)]),
    (" acl {\n  allow net 127.0.0.1\n  block net 127.0.0.0/8\n }", [("a.example.org", "A", ALLOWED)]),
    (" acl {\n  allow net 192.168.0.0/24 192.168.1.0/24\n  block\n }", [("a.example.org", "TXT", BLOCKED)]),
    (" acl {\n  block type A AAAA\n }", [("x.org", "A", BLOCKED), ("x.org", "AAAA", BLOCKED), ("x.org", "MX", ALLOWED)]),
    (" acl {\n  block type * net *\n }", [("x.org", "SRV", BLOCKED)]),
    (" acl {\n  drop type A\n }", [("x.org", "A", DROPPED), ("x.org", "MX", ALLOWED)]),
    (" acl {\n  block net ::1 10.0.0.0/8\n }", [("x.org", "A", ALLOWED)]),
    # zones: only names in them are checked
    (" acl a.example.org {\n  block\n }", [("a.example.org", "A", BLOCKED), ("b.example.org", "A", ALLOWED)]),
    # zones are compared label by label: the one label "x.example" under org. is not in example.org.
    (" acl example.org {\n  block\n }", [("y.x.example.org", "A", BLOCKED), ("x\\.example.org", "A", ALLOWED)]),
    # several acl lines: each for its zones, the first decision wins
    (" acl example.org {\n  allow type A\n }\n acl {\n  block\n }",
     [("a.example.org", "A", ALLOWED), ("a.example.org", "MX", BLOCKED), ("a.example.net", "A", BLOCKED)]),
    (" acl example.org {\n  filter type MX\n }\n acl example.org {\n  block type MX\n }",
     [("a.example.org", "MX", FILTERED)]),
]


@pytest.mark.parametrize("acl,queries", CASES)
def test_policies(serve, acl, queries):
    srv = serve(corefile(f"{acl}\n whoami"))
    for _ in range(2):  # the decision is kept per name, type and client: same outcome again
        for name, qtype, want in queries:
            assert outcome(srv, name, qtype) == want, (name, qtype)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_blocked_and_filtered_replies_say_why_to_edns_clients(serve, tcp):
    srv = serve(corefile(" acl {\n  block type A\n  filter type MX\n }\n whoami"))
    for qtype, rcode, code in (("A", dns.rcode.REFUSED, EDECode.BLOCKED), ("MX", dns.rcode.NOERROR, EDECode.FILTERED)):
        reply = ask(srv, "x.org", qtype, tcp=tcp, use_edns=0, payload=1232)
        assert reply.rcode() == rcode and not reply.answer
        assert [(o.otype, o.code, o.text) for o in reply.options] == [(OptionType.EDE, code, None)]
        assert reply.payload == 1232 and not reply.ednsflags & dns.flags.DO  # the client's size, its DO bit
        assert ask(srv, "x.org", qtype, tcp=tcp, use_edns=0, want_dnssec=True).ednsflags & dns.flags.DO
        plain = ask(srv, "x.org", qtype, tcp=tcp)  # no OPT record asked, none given
        assert plain.rcode() == rcode and plain.edns == -1 and not plain.additional


def test_dropped_over_tcp_gets_no_reply_and_the_connection_serves_on(serve):
    srv = serve(corefile(" acl {\n  drop type A\n }\n whoami"))
    with connect(srv.address[1]) as s:
        # Twice as many dropped queries as a connection may have answers in flight: each must
        # give back its place, or the allowed query behind them is never read.
        s.sendall(b"".join(frame("x.org", "A", qid=i) for i in range(1, 2 * TCP_MAX_INFLIGHT + 1)))
        s.sendall(frame("x.org", "MX", qid=9999))
        assert [r.id for r in read_replies(s, 2, timeout=2.0)] == [9999]
        # a client that waits for each reply: none for the dropped one, the connection stays open
        s.sendall(frame("x.org", "A", qid=1))
        assert read_replies(s, 1, timeout=1.0) == [] and not hung_up(s)
        s.sendall(frame("x.org", "MX", qid=2))
        assert [r.id for r in read_replies(s, 1)] == [2]


def test_outcomes_are_counted(serve):
    from tests.conftest import free_port
    from tests.test_stock_corefiles import get

    port = free_port()
    srv = serve(corefile(f" prometheus 127.0.0.1:{port}\n acl {{\n  block type A\n  filter type MX\n"
                         f"  drop type AAAA\n }}\n whoami"))

    server = 'server="dns://127.0.0.1:0"'
    watched = ("coredns_acl_", "coredns_dns_responses_total", 'coredns_dns_response_size_bytes_bucket{le="0"')

    def counts() -> dict[str, float]:
        text = get(port, "/metrics")[1]
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(watched) and server in line}

    before = counts()
    for qtype in ("A", "A", "MX", "TXT"):
        ask(srv, "x.org", qtype)
    with connect(srv.address[1]) as s:  # dropped over TCP: counted too
        s.sendall(frame("x.org", "AAAA"))
        assert read_replies(s, 1, timeout=1.0) == []
    after = counts()
    changed = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    assert {name: n for name, n in changed.items() if name.startswith("coredns_acl_")} == {
        f'coredns_acl_blocked_requests_total{{{server},view="",zone="."}}': 2,
        f'coredns_acl_filtered_requests_total{{{server},view="",zone="."}}': 1,
        f'coredns_acl_dropped_requests_total{{{server},view="",zone="."}}': 1,
        f'coredns_acl_allowed_requests_total{{{server},view=""}}': 1}
    # The replies acl writes are its own in the responses' plugin label, as in CoreDNS; a query
    # that gets no reply is counted as CoreDNS counts it: NOERROR from no plugin, 0 bytes.
    responses = {(re.search(r'plugin="(\w*)"', name)[1], re.search(r'rcode="(\w+)"', name)[1]): n
                 for name, n in changed.items() if name.startswith("coredns_dns_responses_total")}
    assert responses == {("acl", "REFUSED"): 2, ("acl", "NOERROR"): 1, ("whoami", "NOERROR"): 1, ("", "NOERROR"): 1}
    empty = {re.search(r'proto="(\w+)"', name)[1]: n for name, n in changed.items() if 'le="0"' in name}
    assert empty == {"tcp": 1}


def test_explain_names_acl_for_what_it_refused_or_dropped(serve):
    from pydns.explain import describe, fetch
    from tests.conftest import free_port

    port = free_port()
    serve(corefile(f" explain 127.0.0.1:{port}\n acl {{\n  block type MX\n  drop type A\n }}\n whoami"))
    status, out = fetch(f"http://127.0.0.1:{port}", "x.org", "MX")
    assert status == 200 and (out["rcode"], out["plugin"]) == ("REFUSED", "acl"), out
    status, out = fetch(f"http://127.0.0.1:{port}", "x.org", "A")
    assert status == 200 and (out["rcode"], out["plugin"], out["steps"][-1]["verdict"]) == (None, "acl", "dropped")
    assert describe(out).startswith("x.org. A: no reply") and "gets no reply" in describe(out)


@pytest.mark.parametrize("body,line,message", [
    (" acl {\n  block A net 192.168.0.0/16\n }", 4, "unexpected token 'A'; expect 'type | net'"),
    (" acl {\n  block type net 192.168.0.0/16\n }", 4, "no QTYPE given after 'type'"),
    (" acl {\n  block type ABC net 192.168.0.0/16\n }", 4, "expect legal QTYPE"),
    (" acl {\n  blck type A net 192.168.0.0/16\n }", 4, "unexpected token 'blck'"),
    (" acl {\n  block type A net 192.168.0/16\n }", 4, "illegal CIDR notation '192.168.0/16'"),
    (" acl {\n  block type A net 192.168.0.0/33\n }", 4, "illegal CIDR notation"),
    (" acl {\n  block type A net ::/129\n }", 4, "illegal CIDR notation"),
    (" acl {\n  block type A net\n }", 4, "no SOURCE given after 'net'"),
])
def test_malformed_policies_are_startup_errors(tmp_path, body, line, message):
    startup_error(tmp_path, body, line, message)


@pytest.mark.parametrize("tcp", [False, True])
def test_a_dropped_query_is_logged_without_a_reply(serve, caplog, tcp):
    """As CoreDNS logs a query nothing answered: rcode and flags "-", a reply of 0 bytes, class error."""
    srv = serve(corefile(' log . "{type} {name} {rcode} {>rflags} {rsize}" {\n  class error\n }\n'
                         " acl {\n  drop type A\n }\n whoami"))
    caplog.set_level("INFO", logger="querylog")
    assert outcome(srv, "x.org", "A", tcp=tcp) == DROPPED
    assert outcome(srv, "x.org", "MX", tcp=tcp) == ALLOWED  # a success: not of class error
    assert [r.getMessage() for r in caplog.records if r.name == "querylog"] == ["A x.org. - - 0"]
