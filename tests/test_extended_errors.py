"""Extended DNS errors (RFC 8914) and other EDNS0 options in replies, over real UDP/TCP.

acl's own extended errors are in test_acl.py; here template's ``ederror``, NSID and an extended
error in one reply, truncation of replies that carry options, an upstream's extended
errors passed on by forward, and answers remade by rewrite and autopath.
"""

from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
import yaml
from dns.edns import CookieOption, EDECode, EDEOption, NSIDOption, OptionType

from tests.plugin_cases import UdpResponder, ask, corefile, startup_error

INVALID = ('template ANY ANY invalid {\n  rcode NXDOMAIN\n'
           '  authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"\n'
           '  ederror 21 "Blocked according to RFC2606"\n }')
NEXT = " hosts {\n  10.8.8.8 target.example.com\n  reload 0\n }"


def options(reply) -> list[tuple]:
    """The reply's options as (code, what it says)."""
    return [(o.otype, o.code, o.text) if o.otype == OptionType.EDE else (o.otype, o.nsid) for o in reply.options]


def ede(code: int, text: str | None = None) -> tuple:
    return (OptionType.EDE, code, text)


# (template lines, query name, type, rcode, the extended error EDNS0 clients see, answer records)
TEMPLATE_CASES = [
    # CoreDNS's README example: NXDOMAIN with its reason
    (INVALID, "test.invalid", "AAAA", dns.rcode.NXDOMAIN, ede(EDECode.NOT_SUPPORTED, "Blocked according to RFC2606"), 0),
    # a positive answer carries it too, without a reason when none is given
    ('template IN A example {\n  answer "{{ .Name }} 60 IN A 10.0.0.1"\n  ederror 4\n }',
     "a.example", "A", dns.rcode.NOERROR, ede(EDECode.FORGED_ANSWER), 1),
    # an answer made per query (.Remote) rather than kept
    ('template IN A example {\n  answer "{{ .Name }} 60 IN A {{ .Remote }}"\n  ederror 4 "per query"\n }',
     "a.example", "A", dns.rcode.NOERROR, ede(EDECode.FORGED_ANSWER, "per query"), 1),
    # a CNAME followed through the server's own plugins
    ('template IN A example {\n  answer "{{ .Name }} 60 IN CNAME target.example.com"\n  ederror 0 "alias"\n }\n' + NEXT,
     "a.example", "A", dns.rcode.NOERROR, ede(EDECode.OTHER, "alias"), 2),
    # codes past those RFC 8914 names are sent as given
    ('template IN A example {\n  rcode REFUSED\n  ederror 65535 "ünïcode"\n }',
     "a.example", "A", dns.rcode.REFUSED, ede(65535, "ünïcode"), 0),
    # rcode SERVFAIL writes no reply of its own: the server's SERVFAIL carries no extended error
    ("template ANY ANY {\n  rcode SERVFAIL\n  ederror 2\n }", "a.example", "A", dns.rcode.SERVFAIL, None, 0),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("lines,name,qtype,rcode,error,answers", TEMPLATE_CASES)
def test_template_ederror(serve, lines, name, qtype, rcode, error, answers, tcp):
    srv = serve(corefile(f" {lines}"))
    for _ in range(2):  # answers that depend only on the question are kept: the same again
        reply = ask(srv, name, qtype, tcp=tcp, use_edns=0)
        assert reply.rcode() == rcode and sum(len(rrset) for rrset in reply.answer) == answers
        assert options(reply) == ([error] if error else [])
        plain = ask(srv, name, qtype, tcp=tcp)  # no OPT record asked, none given
        assert plain.rcode() == rcode and plain.edns == -1


def test_template_ederror_is_kept_by_the_cache_in_front(serve):
    srv = serve(corefile(f" cache 30\n {INVALID}"))
    for _ in range(3):  # the first reply, then the cache's
        assert options(ask(srv, "test.invalid", "A", use_edns=0)) == [
            ede(EDECode.NOT_SUPPORTED, "Blocked according to RFC2606")]


@pytest.mark.parametrize("line,message", [
    ("ederror ٣", "error parsing extended DNS error code ٣"),
    ("ederror 65536", "error parsing extended DNS error code 65536"),
    ("ederror -1", "error parsing extended DNS error code -1"),
    (f"ederror 1 {'x' * 65534}", "extended DNS error text of 65534 bytes: at most 65533"),
])
def test_template_ederror_code_and_reason_must_fit_the_option(tmp_path, line, message):
    startup_error(tmp_path, f" template ANY ANY invalid {{\n  {line}\n }}", 4, message)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("lines,error", [
    (" acl {\n  block\n }\n whoami", ede(EDECode.BLOCKED)),
    (f" {INVALID}", ede(EDECode.NOT_SUPPORTED, "Blocked according to RFC2606")),
])
def test_nsid_and_an_extended_error_in_one_reply(serve, lines, error, tcp):
    srv = serve(corefile(f" nsid pydns-7\n{lines}"))
    asked = ask(srv, "test.invalid", "A", tcp=tcp, use_edns=0, options=[NSIDOption(b"")])
    assert options(asked) == [error, (OptionType.NSID, b"pydns-7")]
    assert options(ask(srv, "test.invalid", "A", tcp=tcp, use_edns=0)) == [error]
    assert ask(srv, "test.invalid", "A", tcp=tcp).edns == -1


# ---------------------------------------------------------------- truncation with options

def big_template(reason: str) -> str:
    """A template with 30 TXT records of some 60 bytes each (about 2 KB) and an extended error."""
    records = " ".join(f'"{{{{ .Name }}}} 60 IN TXT \\"record {i:02d} {"x" * 40}\\""' for i in range(30))
    return corefile(f' template IN TXT example {{\n  answer {records}\n  ederror 18 "{reason}"\n }}')


def udp_raw(srv, query: dns.message.Message) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(query.to_wire(), srv.address)
        return s.recv(65535)


def test_truncated_reply_keeps_its_options_within_the_clients_size(serve):
    srv = serve(big_template("too big for you"))
    for _ in range(2):
        raw = udp_raw(srv, dns.message.make_query("t.example", "TXT", use_edns=0, payload=512))
        reply = dns.message.from_wire(raw)
        assert len(raw) <= 512 and reply.flags & dns.flags.TC
        assert 0 < len(reply.answer[0]) < 30  # as many whole records as fit beside the option
        assert options(reply) == [ede(EDECode.PROHIBITED, "too big for you")]
        room = dns.message.from_wire(udp_raw(srv, dns.message.make_query("t.example", "TXT", use_edns=0,
                                                                          payload=4096)))
        assert not room.flags & dns.flags.TC and len(room.answer[0]) == 30 and options(room) == options(reply)
    full = ask(srv, "t.example", "TXT", tcp=True, use_edns=0)
    assert len(full.answer[0]) == 30 and options(full) == [ede(EDECode.PROHIBITED, "too big for you")]


def test_options_that_cannot_fit_are_left_out_rather_than_overflow(serve):
    reason = "r" * 480  # with the question and OPT record, past 512 bytes before any record
    srv = serve(big_template(reason))
    raw = udp_raw(srv, dns.message.make_query("t.example", "TXT", use_edns=0, payload=512))
    reply = dns.message.from_wire(raw)
    assert len(raw) <= 512 and reply.flags & dns.flags.TC and reply.edns == 0 and options(reply) == []
    assert options(ask(srv, "t.example", "TXT", tcp=True, use_edns=0)) == [ede(EDECode.PROHIBITED, reason)]


# ---------------------------------------------------------------- forward

class ExplainingUpstream(UdpResponder):
    """SERVFAILs every query with two extended errors and a cookie in its OPT record."""

    def reply(self, data: bytes) -> bytes:
        reply = dns.message.make_response(dns.message.from_wire(data))
        reply.set_rcode(dns.rcode.SERVFAIL)
        reply.use_edns(0, options=[EDEOption(EDECode.DNSSEC_BOGUS, "signature expired"),
                                   CookieOption(b"c" * 8, b"s" * 16), EDEOption(EDECode.NETWORK_ERROR)])
        return reply.to_wire()


@pytest.fixture
def explaining():
    up = ExplainingUpstream()
    yield up
    up.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_forward_passes_on_the_upstreams_extended_errors_only(serve, explaining, tcp):
    # prefer_udp: the upstream answers UDP only, whatever the client came over
    srv = serve(corefile(f" nsid pydns-7\n forward . 127.0.0.1:{explaining.port} {{\n  prefer_udp\n }}"))
    reply = ask(srv, "a.example", "A", tcp=tcp, use_edns=0, options=[NSIDOption(b"")])
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert options(reply) == [ede(EDECode.DNSSEC_BOGUS, "signature expired"), ede(EDECode.NETWORK_ERROR),
                              (OptionType.NSID, b"pydns-7")]
    assert ask(srv, "a.example", "A", tcp=tcp).edns == -1


# ---------------------------------------------------------------- answers made again keep their options

def test_rewrite_and_autopath_keep_the_extended_error_of_the_answer_they_remake(serve, tmp_path):
    from tests.test_autopath import SHOP_POD, cluster, svc

    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(cluster()))
    srv = serve(f""".:0 {{
 bind 127.0.0.1
 rewrite name alias.example.com api.example.com
 autopath @kubernetes
 template IN A example.com {{
  answer "{{{{ .Name }}}} 60 IN A 192.0.2.7"
  ederror 4 "made up"
 }}
 kubernetes cluster.local {{
  manifests {path}
  pods verified
 }}
}}
""")
    error = [ede(EDECode.FORGED_ANSWER, "made up")]
    for name in ("alias.example.com", f"api.example.com.{svc('shop')}"):  # rewrite's question put back; autopath's walk
        q = dns.message.make_query(name, "A", use_edns=0)
        reply = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=5, source=SHOP_POD)
        assert reply.answer[-1].to_text().endswith("IN A 192.0.2.7") and options(reply) == error, reply
