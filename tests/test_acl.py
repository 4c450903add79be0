"""acl over real UDP/TCP: allow, block, filter and drop by query type and client address."""

from __future__ import annotations

import dns.exception
import dns.rcode
import pytest

from tests.plugin_cases import ask, corefile, startup_error

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


def test_dropped_over_tcp_is_refused(serve):
    srv = serve(corefile(" acl {\n  drop type A\n }\n whoami"))
    assert ask(srv, "x.org", "A", tcp=True).rcode() == dns.rcode.REFUSED


def test_outcomes_are_counted(serve):
    from tests.conftest import free_port
    from tests.test_stock_corefiles import get

    port = free_port()
    srv = serve(corefile(f" prometheus 127.0.0.1:{port}\n acl {{\n  block type A\n  filter type MX\n }}\n whoami"))

    def counts() -> dict[str, float]:
        text = get(port, "/metrics")[1]
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("coredns_acl_") and 'server="dns://127.0.0.1:0"' in line}

    before = counts()
    for qtype in ("A", "A", "MX", "TXT"):
        ask(srv, "x.org", qtype)
    after = counts()
    server = 'server="dns://127.0.0.1:0"'
    changed = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name)}
    assert changed == {
        f'coredns_acl_blocked_requests_total{{{server},view="",zone="."}}': 2,
        f'coredns_acl_filtered_requests_total{{{server},view="",zone="."}}': 1,
        f'coredns_acl_allowed_requests_total{{{server},view=""}}': 1}


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
