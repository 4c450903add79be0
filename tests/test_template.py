"""template: answers rendered from the query, over real UDP/TCP, with CoreDNS's test cases."""

from __future__ import annotations

import dns.rcode
import pytest

from tests.plugin_cases import ask, corefile, startup_error

IP = "(^|[.])ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$"
HEX = "^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})(?P<d>[a-f0-9]{2})[.]example[.]$"
# Behind every template: a hosts entry shows where fallthrough leads (hosts answers NXDOMAIN otherwise).
NEXT = " hosts {\n  10.9.9.9 next.example.\n  10.9.9.9 next.example.org\n  10.8.8.8 target.example.com\n  reload 0\n }"


def texts(section) -> list[str]:
    return [rr.to_text() for rr in section]


def lines(section) -> list[str]:
    return [line for rrset in section for line in rrset.to_text().splitlines()]


# (template block, query name, query type, rcode, answer lines, authority lines, additional lines)
CASES = [
    (f'template IN A example {{\n  match {IP}\n  answer "{{{{ .Name }}}} 60 IN A 10.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}"\n }}',
     "ip-10-95-12-8.example", "A", dns.rcode.NOERROR, ["ip-10-95-12-8.example. 60 IN A 10.95.12.8"], [], []),
    (f'template IN A example {{\n  match "{HEX}"\n  answer "{{{{ .Name }}}} 60 IN A 10.{{{{ parseInt .Group.b 16 8 }}}}.'
     f'{{{{ parseInt .Group.c 16 8 }}}}.{{{{ parseInt .Group.d 16 8 }}}}"\n }}',
     "ip0a5f0c09.example", "A", dns.rcode.NOERROR, ["ip0a5f0c09.example. 60 IN A 10.95.12.9"], [], []),
    (f'template IN MX example {{\n  match {IP}\n  answer "{{{{ .Name }}}} 60 MX 10 {{{{ .Name }}}}"\n'
     f'  additional "{{{{ .Name }}}} 60 IN A 10.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}"\n }}',
     "ip-10-95-12-8.example", "MX", dns.rcode.NOERROR, ["ip-10-95-12-8.example. 60 IN MX 10 ip-10-95-12-8.example."],
     [], ["ip-10-95-12-8.example. 60 IN A 10.95.12.8"]),
    (f'template IN A example {{\n  match {IP}\n  answer "{{{{ .Name }}}} 60 IN A 10.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}"\n'
     '  additional "ns0.example. IN A 203.0.113.8"\n  authority "example. IN NS ns0.example.com."\n }',
     "ip-10-95-12-8.example", "A", dns.rcode.NOERROR, ["ip-10-95-12-8.example. 60 IN A 10.95.12.8"],
     ["example. 3600 IN NS ns0.example.com."], ["ns0.example. 3600 IN A 203.0.113.8"]),
    ('template IN A example {\n  answer "{{ .Name }} 60 IN A {{ .Remote }}"\n }',
     "test.example", "A", dns.rcode.NOERROR, ["test.example. 60 IN A 127.0.0.1"], [], []),
    ('template ANY ANY invalid {\n  match "[.]invalid[.]$"\n  rcode NXDOMAIN\n'
     '  answer "invalid. 60 {{ .Class }} SOA a.invalid. b.invalid. (1 60 60 60 60)"\n }',
     "test.invalid", "A", dns.rcode.NXDOMAIN, ["invalid. 60 IN SOA a.invalid. b.invalid. 1 60 60 60 60"], [], []),
    ('template ANY ANY invalid {\n  rcode NXDOMAIN\n'
     '  authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"\n'
     '  ederror 21 "Blocked according to RFC2606"\n }',
     "test.invalid", "AAAA", dns.rcode.NXDOMAIN, [], ["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"], []),
    ("template ANY ANY {\n  rcode SERVFAIL\n }", "test.invalid", "A", dns.rcode.SERVFAIL, [], [], []),
    # the README's examples: everything NXDOMAIN; search-path completions, by zone and by regex; PTR
    ("template ANY ANY {\n  rcode NXDOMAIN\n }", "next.example", "A", dns.rcode.NXDOMAIN, [], [], []),
    ('template IN ANY example.com.dc1.example.com {\n  rcode NXDOMAIN\n'
     '  authority "{{ .Zone }} 60 IN SOA ns.example.com hostmaster.example.com (1 60 60 60 60)"\n }',
     "something.example.com.dc1.example.com", "A", dns.rcode.NXDOMAIN, [],
     ["example.com.dc1.example.com. 60 IN SOA ns.example.com. hostmaster.example.com. 1 60 60 60 60"], []),
    ('template IN ANY example.com {\n  match "example\\.com\\.(dc1\\.example\\.com\\.)$"\n  rcode NXDOMAIN\n'
     '  authority "{{ index .Match 1 }} 60 IN SOA ns.{{ index .Match 1 }} hostmaster.{{ index .Match 1 }} '
     '(1 60 60 60 60)"\n  fallthrough\n }',
     "something.example.com.dc1.example.com", "AAAA", dns.rcode.NXDOMAIN, [],
     ["dc1.example.com. 60 IN SOA ns.dc1.example.com. hostmaster.dc1.example.com. 1 60 60 60 60"], []),
    ('template IN ANY example.com {\n  match "example\\.com\\.(dc1\\.example\\.com\\.)$"\n  rcode NXDOMAIN\n'
     '  fallthrough\n }', "target.example.com", "A", dns.rcode.NOERROR, ["target.example.com. 3600 IN A 10.8.8.8"], [], []),
    ('template IN PTR in-addr.arpa {\n  match ^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$\n'
     '  answer "{{ .Name }} 60 IN PTR ip-{{ .Group.a }}-{{ .Group.b }}-{{ .Group.c }}-{{ .Group.d }}.example."\n }',
     "4.3.2.1.in-addr.arpa", "PTR", dns.rcode.NOERROR, ["4.3.2.1.in-addr.arpa. 60 IN PTR ip-1-2-3-4.example."], [], []),
    # failures while executing a template, or a result that is no record: SERVFAIL
    ('template IN ANY example {\n  match "[.]example[.]$"\n  answer "{{ .Name }} 60 IN TXT \\"{{ index .Match 2 }}\\""\n }',
     "test.example", "TXT", dns.rcode.SERVFAIL, [], [], []),
    ('template IN ANY example {\n  match "[.]example[.]$"\n  answer "{{ .Name }} 60 IN TXT \\"{{ parseInt \\"gg\\" 16 8 }}\\""\n }',
     "test.example", "TXT", dns.rcode.SERVFAIL, [], [], []),
    ('template IN ANY example {\n  match "[.]example[.]$"\n  answer "{{ .Name }}"\n }',
     "test.example", "A", dns.rcode.SERVFAIL, [], [], []),
    ('template IN ANY example {\n  match "[.]example[.]$"\n  additional "{{ .Name }}"\n }',
     "test.example", "A", dns.rcode.SERVFAIL, [], [], []),
    ('template IN ANY example {\n  match "[.]example[.]$"\n  authority "{{ .Name }}"\n }',
     "test.example", "A", dns.rcode.SERVFAIL, [], [], []),
    ('template IN ANY example {\n  answer "{{ .Name }} 60 IN A {{ .Grup.d }}"\n }',
     "test.example", "A", dns.rcode.SERVFAIL, [], [], []),
    # outside the zone, class or type: the next plugin answers
    ('template IN A example {\n  answer "{{ .Name }} 60 IN A 10.0.0.1"\n }',
     "next.example.org", "A", dns.rcode.NOERROR, ["next.example.org. 3600 IN A 10.9.9.9"], [], []),
    ('template IN AAAA example {\n  answer "{{ .Name }} 60 IN AAAA ::1"\n }',
     "next.example", "A", dns.rcode.NOERROR, ["next.example. 3600 IN A 10.9.9.9"], [], []),
    ('template CH A example {\n  answer "{{ .Name }} 60 IN A 10.0.0.1"\n }',
     "next.example", "A", dns.rcode.NOERROR, ["next.example. 3600 IN A 10.9.9.9"], [], []),
    # in the zone, no regex matches: SERVFAIL, or the next plugin with fallthrough
    (f'template IN A example {{\n  match {IP}\n  answer "{{{{ .Name }}}} 60 IN A 10.0.0.1"\n }}',
     "next.example", "A", dns.rcode.SERVFAIL, [], [], []),
    (f'template IN A example {{\n  match {IP}\n  answer "{{{{ .Name }}}} 60 IN A 10.0.0.1"\n  fallthrough\n }}',
     "next.example", "A", dns.rcode.NOERROR, ["next.example. 3600 IN A 10.9.9.9"], [], []),
    (f'template IN A example {{\n  match {IP}\n  answer "{{{{ .Name }}}} 60 IN A 10.0.0.1"\n  fallthrough other.example\n }}',
     "next.example", "A", dns.rcode.SERVFAIL, [], [], []),
    # several regexes: the first that matches; Go's (?<name>) groups read the same
    ('template IN A example {\n  match "^ip-(?<a>10)-(?P<b>[0-9]*)[.]dc[.]example[.]$" "^(?P<a>[0-9]*)[.](?P<b>[0-9]*)[.]ext[.]example[.]$"\n'
     '  answer "{{ .Name }} 60 IN A {{ .Group.a }}.0.0.{{ .Group.b }}"\n }',
     "7.8.ext.example", "A", dns.rcode.NOERROR, ["7.8.ext.example. 60 IN A 7.0.0.8"], [], []),
    ('template IN ANY example {\n  match "^(a)(b)?[.]"\n  answer "{{ .Name }} 60 IN TXT \\"{{ index .Group \\"1\\" }}-{{ index .Match 2 }}-'
     '{{ .Type }}-{{ .Class }}-{{ .Zone }}-{{ printf \\"%s/%d\\" .Regex 7 }}\\""\n }',
     "a.example", "TXT", dns.rcode.NOERROR, ['a.example. 60 IN TXT "a--TXT-IN-example.-^(a)(b)?[.]/7"'], [], []),
    # .Question keeps the client's case; the owner name points at the question, so reads in it too
    ('template IN ANY example {\n  answer "{{ .Name }} 60 IN TXT {{ .Question.Name | len }} \\"{{ .Question.Name }}\\""\n }',
     "MiXeD.example", "TXT", dns.rcode.NOERROR, ['MiXeD.example. 60 IN TXT "14" "MiXeD.example."'], [], []),
    # a fabricated CNAME for an A query is followed through the server
    ('template IN ANY example.net {\n  match "example[.]net[.]"\n  answer "example.net 60 IN CNAME target.example.com"\n }',
     "example.net", "A", dns.rcode.NOERROR,
     ["example.net. 60 IN CNAME target.example.com.", "target.example.com. 3600 IN A 10.8.8.8"], [], []),
    ('template IN ANY example.net {\n  match "example[.]net[.]"\n  answer "example.net 60 IN CNAME target.example.com"\n }',
     "example.net", "MX", dns.rcode.NOERROR, ["example.net. 60 IN CNAME target.example.com."], [], []),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("block,qname,qtype,rcode,answer,authority,additional", CASES)
def test_templates(serve, block, qname, qtype, rcode, answer, authority, additional, tcp):
    srv = serve(corefile(f" {block}\n{NEXT}"))
    for _ in range(2):  # again, from the answer kept the first time
        reply = ask(srv, qname, qtype, tcp=tcp)
        assert reply.rcode() == rcode
        assert reply.question[0].name.to_text() == qname + "."
        assert lines(reply.answer) == answer
        assert lines(reply.authority) == authority
        assert lines(reply.additional) == additional
        if rcode != dns.rcode.SERVFAIL and answer and "next" not in answer[0] and "target" not in answer[-1]:
            assert reply.flags & dns.flags.AA


def test_templates_are_tried_in_order_and_fall_through_to_each_other(serve):
    srv = serve(corefile(
        f' template IN A example {{\n  match {IP}\n  answer "{{{{ .Name }}}} 60 IN A 10.{{{{ .Group.b }}}}.0.1"\n  fallthrough\n }}\n'
        f' template IN A example {{\n  match "{HEX}"\n  answer "{{{{ .Name }}}} 60 IN A 10.0.0.2"\n  fallthrough\n }}\n{NEXT}'))
    assert texts(srv.query("ip-10-3-4-5.example").answer[0]) == ["10.3.0.1"]
    assert texts(srv.query("ip0a010203.example").answer[0]) == ["10.0.0.2"]
    assert texts(srv.query("next.example").answer[0]) == ["10.9.9.9"]


def test_answers_using_the_client_are_made_per_query(serve):
    srv = serve(corefile(' template IN TXT example {\n  answer "{{ .Name }} 0 IN TXT {{ .Message.Id }}"\n }'))
    ids = set()
    for _ in range(3):
        reply = srv.query("id.example", "TXT")
        assert texts(reply.answer[0]) == [f'"{reply.id}"']
        ids.add(reply.id)
    assert len(ids) == 3


@pytest.mark.parametrize("body,line,message", [
    (" template", 3, "wrong argument count"),
    (" template X", 3, "wrong argument count"),
    (" template ANY", 3, "wrong argument count"),
    (" template ANY X", 3, "invalid RR type X"),
    (" template in A", 3, "invalid query class in"),
    (" template ANY ANY {\n  notavailable\n }", 4, "unknown property 'notavailable'"),
    (" template ANY ANY {\n  answer\n }", 4, "'answer' needs an argument"),
    (" template ANY ANY {\n  additional\n }", 4, "'additional' needs an argument"),
    (" template ANY ANY {\n  rcode\n }", 4, "'rcode' needs an argument"),
    (" template ANY ANY {\n  rcode UNDEFINED\n }", 4, "unknown rcode UNDEFINED"),
    (' template ANY ANY {\n  answer "{{"\n }', 4, "could not compile template"),
    (' template ANY ANY {\n  additional "{{"\n }', 4, "could not compile template"),
    (' template ANY ANY {\n  authority "{{"\n }', 4, "could not compile template"),
    (' template ANY ANY {\n  answer "{{ notAFunction }}"\n }', 4, 'function "notAFunction" not defined'),
    (' template ANY ANY {\n  answer "{{ block \\"x\\" . }}{{ end }}"\n }', 4, "'block' is not supported"),
    (' template ANY ANY {\n  answer "{{ $x }}"\n }', 4, 'undefined variable "$x"'),
    (" template ANY ANY {\n  match (?P<x>\n }", 4, "could not parse regex"),
    (' template ANY ANY invalid {\n  ederror invalid "Blocked"\n }', 4, "extended DNS error code invalid"),
    (" template ANY ANY invalid {\n  ederror too many arguments\n }", 4, "ederror takes a code"),
    (" template ANY ANY {\n  var a\n }", 4, "'var' needs a NAME and an EXPRESSION"),
    (" template ANY ANY {\n  expr true +\n }", 4, "could not compile expression"),
])
def test_malformed_templates_are_startup_errors(tmp_path, body, line, message):
    startup_error(tmp_path, body, line, message)


@pytest.mark.parametrize("body", [
    ' template ANY ANY {\n  answer "{{ parseInt }}"\n  additional "{{ parseInt }}"\n  authority "{{ parseInt }}"\n }',
    " template ANY ANY (?P<x>",
    " template ANY ANY {\n\n }",
    " template ANY A example.com {\n  match ip-(?P<a>[0-9]*)[.]example[.]com\n"
    '  answer "{{ .Name }} A {{ .Group.a }}.{{ .Grup.d }}."\n  fallthrough\n }',
    " template IN ANY example.com {\n  upstream\n  fallthrough example.com\n }",
])
def test_valid_templates_start(serve, body):
    assert serve(corefile(body)).query("x.example.com").rcode() in (dns.rcode.NOERROR, dns.rcode.SERVFAIL,
                                                                     dns.rcode.NXDOMAIN)


def test_matches_and_failures_are_counted(serve):
    from tests.conftest import free_port
    from tests.test_stock_corefiles import get

    port = free_port()
    srv = serve(corefile(f' prometheus 127.0.0.1:{port}\n'
                         ' template IN A ok.example {\n  answer "{{ .Name }} 60 IN A 10.0.0.1"\n }\n'
                         ' template IN A tmpl.example {\n  answer "{{ index .Match 3 }}"\n }\n'
                         ' template IN A rr.example {\n  answer "{{ .Name }} 60 IN A 10.0.0.300"\n }'))

    def counts() -> dict[str, float]:
        text = get(port, "/metrics")[1]
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("coredns_template_") and 'server="dns://127.0.0.1:0"' in line}

    before = counts()
    for name in ("a.ok.example", "a.ok.example", "a.tmpl.example", "a.rr.example"):
        ask(srv, name)
    after = counts()
    changed = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k)}
    common = 'class="IN",server="dns://127.0.0.1:0",type="A",view=""'
    assert changed == {
        f'coredns_template_matches_total{{{common},zone="ok.example."}}': 2,
        f'coredns_template_matches_total{{{common},zone="tmpl.example."}}': 1,
        f'coredns_template_matches_total{{{common},zone="rr.example."}}': 1,
        'coredns_template_template_failures_total{class="IN",section="answer",server="dns://127.0.0.1:0",'
        'template="{{ index .Match 3 }}",type="A",view="",zone="tmpl.example."}': 1,
        'coredns_template_rr_failures_total{class="IN",section="answer",server="dns://127.0.0.1:0",'
        'template="{{ .Name }} 60 IN A 10.0.0.300",type="A",view="",zone="rr.example."}': 1,
    }


def test_a_cname_chain_that_never_ends_is_followed_only_so_deep(serve):
    srv = serve(corefile(' template IN A loop {\n  answer "{{ .Name }} 60 IN CNAME a.{{ .Name }}"\n }'))
    reply = ask(srv, "start.loop")
    owners = [rrset.name.to_text() for rrset in reply.answer]
    assert reply.rcode() == dns.rcode.NOERROR and owners[0] == "start.loop." and 2 < len(owners) <= 10
