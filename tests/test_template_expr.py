"""template's var and expr (the expr language), Go-template control flow in records, and
escaped query names: over real UDP/TCP, with the cases of CoreDNS's template tests."""

from __future__ import annotations

import dns.message
import dns.name
import dns.query
import dns.rcode
import pytest

from tests.plugin_cases import ask, corefile, startup_error
from tests.test_template import lines

# Where a query goes when the templates fall through: hosts answers these names with 10.9.9.9.
NEXT = (" hosts {\n  10.9.9.9 a.example. b.example. 1.example. 2.example.\n"
        "  10.9.9.9 8-8-8-8.abcdefghijklmnopqrstuvwxyz.example.com\n  reload 0\n }")
FELL = ["{name} 3600 IN A 10.9.9.9"]
SERVFAIL = dns.rcode.SERVFAIL


def tmpl(*lines_: str, head: str = "template IN A example.") -> str:
    return f" {head} {{\n" + "".join(f"  {line}\n" for line in lines_) + " }"


A1 = 'answer "{{ .Name }} 60 IN A 10.0.0.1"'
NUM = "match ^(?P<n>[0-9]+)[.]example[.]$"
DEVICE = ("match ^(?P<ip>[0-9]{1,3}(-[0-9]{1,3}){3})[.](?P<id>[a-z2-7]{26})[.]example[.]com[.]$",
          "var ip replace(group('ip'), '-', '.')",
          "expr \"any(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16'], incidr(ip, #))\"",
          'answer "{{ .Name }} 60 IN A {{ .Var.ip }}"', "fallthrough")

# (templates, query name, type, rcode, answer, additional, authority); FELL: the next plugin answered
CASES = {
    # CoreDNS's TestExpr (its client is 10.240.0.1, here 127.0.0.1)
    "expr true": (tmpl("expr name() == 'a.example.'", A1), "a.example.", "A", 0, ["a.example. 60 IN A 10.0.0.1"]),
    "expr false servfail": (tmpl("expr name() == 'b.example.'", A1), "a.example.", "A", SERVFAIL, []),
    "expr false fallthrough": (tmpl("expr name() == 'b.example.'", A1, "fallthrough"), "a.example.", "A", 0, FELL),
    "expr false, fallthrough elsewhere": (tmpl("expr name() == 'b.example.'", A1, "fallthrough other.example."),
                                          "a.example.", "A", SERVFAIL, []),
    "expr false, next template": (tmpl("expr name() == 'b.example.'", A1, "fallthrough")
                                  + "\n" + tmpl('answer "{{ .Name }} 60 IN A 10.0.0.2"'),
                                  "a.example.", "A", 0, ["a.example. 60 IN A 10.0.0.2"]),
    "all exprs true": (tmpl("expr name() == 'a.example.'", "expr type() == 'A'",
                            "expr incidr(client_ip(), '127.0.0.0/8')", A1),
                       "a.example.", "A", 0, ["a.example. 60 IN A 10.0.0.1"]),
    "last expr false": (tmpl("expr name() == 'a.example.'", "expr type() == 'A'",
                             "expr incidr(client_ip(), '192.0.2.0/24')", A1, "fallthrough"), "a.example.", "A", 0, FELL),
    "expr uses var": (tmpl(NUM, "var num int(group('n'))", "expr num > 1",
                           'answer "{{ .Name }} 60 IN A 10.0.0.{{ .Var.num }}"', "fallthrough"),
                      "2.example.", "A", 0, ["2.example. 60 IN A 10.0.0.2"]),
    "expr uses var, false": (tmpl(NUM, "var num int(group('n'))", "expr num > 1",
                                  'answer "{{ .Name }} 60 IN A 10.0.0.{{ .Var.num }}"', "fallthrough"),
                             "1.example.", "A", 0, FELL),
    "expr uses group": (tmpl(NUM, "expr group('n') == '2' && group(0) == '2.example.'",
                             'answer "{{ .Name }} 60 IN A 10.0.0.{{ .Group.n }}"', "fallthrough"),
                        "2.example.", "A", 0, ["2.example. 60 IN A 10.0.0.2"]),
    "expr not bool": (tmpl("expr 1", A1, "fallthrough"), "a.example.", "A", 0, FELL),
    "expr fails": (tmpl("expr incidr('notanip', '10.0.0.0/8')", A1, "fallthrough"), "a.example.", "A", SERVFAIL, []),
    "expr not evaluated without match": (tmpl("match ^a[.]example[.]$", "expr incidr('notanip', '10.0.0.0/8')", A1,
                                              "fallthrough"), "b.example.", "A", 0, FELL),
    # CoreDNS's TestVar
    "var constant": (tmpl("var ttl 60", 'answer "{{ .Name }} {{ .Var.ttl }} IN A 10.0.0.1"'),
                     "a.example.", "A", 0, ["a.example. 60 IN A 10.0.0.1"]),
    "vars chained": (tmpl("var a 1", "var b a + 1", "var c b * 10",
                          'answer "{{ .Name }} 60 IN A 10.{{ .Var.a }}.{{ .Var.b }}.{{ .Var.c }}"'),
                     "a.example.", "A", 0, ["a.example. 60 IN A 10.1.2.20"]),
    "var groups by name and index": (tmpl("match ^(?P<a>[0-9]+)-(?P<b>[0-9]+)[.]example[.]$", "var a group('a')",
                                          "var b group(2)", "var whole group(0)",
                                          'answer "{{ .Var.whole }} 60 IN A 10.0.{{ .Var.a }}.{{ .Var.b }}"'),
                                     "12-34.example.", "A", 0, ["12-34.example. 60 IN A 10.0.12.34"]),
    "var missing group": (tmpl("match ^(?P<a>[a-z]+)[.]example[.]$", "var missing group('nosuchgroup') + group(9)",
                               'answer "{{ .Name }} 60 IN TXT \\"empty={{ eq .Var.missing \\"\\" }}\\""',
                               head="template IN TXT example."),
                          "a.example.", "TXT", 0, ['a.example. 60 IN TXT "empty=true"']),
    "var query functions": (tmpl("var n name()", "var t type()", "var ip client_ip()",
                                 'answer "{{ .Var.n }} 60 IN A {{ .Var.ip }}"',
                                 'additional "{{ .Var.n }} 60 IN TXT \\"{{ .Var.t }}\\""'),
                            "a.example.", "A", 0, ["a.example. 60 IN A 127.0.0.1"], ['a.example. 60 IN TXT "A"']),
    "var bool in an if": (tmpl("var local incidr(client_ip(), '127.0.0.0/8')",
                               'answer "{{ .Name }} 60 IN A {{ if .Var.local }}10.0.0.1{{ else }}192.0.2.1{{ end }}"'),
                          "a.example.", "A", 0, ["a.example. 60 IN A 10.0.0.1"]),
    "var in every section": (tmpl("var target 'ns0.example.'", A1, 'additional "{{ .Var.target }} 60 IN A 10.0.0.2"',
                                  'authority "example. 60 IN NS {{ .Var.target }}"'),
                             "a.example.", "A", 0, ["a.example. 60 IN A 10.0.0.1"], ["ns0.example. 60 IN A 10.0.0.2"],
                             ["example. 60 IN NS ns0.example."]),
    "no vars": (tmpl('answer "{{ .Name }} 60 IN TXT \\"{{ len .Var }}\\""', head="template IN TXT example."),
                "a.example.", "TXT", 0, ['a.example. 60 IN TXT "0"']),
    "vars per template": (tmpl("match ^a[.]example[.]$", "var v '1'", 'answer "{{ .Name }} 60 IN A 10.0.0.{{ .Var.v }}"')
                          + "\n" + tmpl("match ^b[.]example[.]$", 'answer "{{ .Name }} 60 IN TXT \\"{{ len .Var }}\\""'),
                          "a.example.", "A", 0, ["a.example. 60 IN A 10.0.0.1"]),
    "var fails": (tmpl("var bad incidr('notanip', '10.0.0.0/8')", A1), "a.example.", "A", SERVFAIL, []),
    "var fails, fallthrough": (tmpl("var bad incidr('notanip', '10.0.0.0/8')", A1, "fallthrough"),
                               "a.example.", "A", SERVFAIL, []),
    "var not evaluated without match": (tmpl("match ^a[.]example[.]$", "var bad incidr('notanip', '10.0.0.0/8')", A1,
                                             "fallthrough"), "b.example.", "A", 0, FELL),
    "var values and types": (tmpl(NUM, "var num int(group('n'))", "var double num * 2", "var label 'x' + group('n')",
                                  "var flag num > 1", "var half num / 4",
                                  'answer "{{ .Name }} 60 IN TXT {{ .Var.num }} {{ .Var.double }} {{ .Var.label }} '
                                  '{{ .Var.flag }} {{ .Var.half }} {{ len .Var }}"', head="template IN TXT example."),
                             "2.example.", "TXT", 0, ['2.example. 60 IN TXT "2" "4" "x2" "true" "0.5" "5"']),
    "var int of an empty group fails": (tmpl("match ^(?P<n>[0-9]*)[a-z]*[.]example[.]$", "var num int(group('n'))", A1),
                                        "a.example.", "A", SERVFAIL, []),
    # README: device addresses for HTTPS on a LAN, only for private ranges
    "readme device, private": (tmpl(*DEVICE, head="template IN A example.com"),
                               "192-168-1-10.abcdefghijklmnopqrstuvwxyz.example.com.", "A", 0,
                               ["192-168-1-10.abcdefghijklmnopqrstuvwxyz.example.com. 60 IN A 192.168.1.10"]),
    "readme device, public": (tmpl(*DEVICE, head="template IN A example.com"),
                              "8-8-8-8.abcdefghijklmnopqrstuvwxyz.example.com.", "A", 0, FELL),
    # the rest of the language, as a Corefile would use it
    "expr operators": (tmpl(NUM, "expr \"type() in ['A', 'AAAA'] and name() matches '^[0-9]+[.]' && "
                                 "not (name() contains 'z') && name() endsWith 'example.' && (1..3 | sum()) == 6\"",
                            A1, "fallthrough"), "2.example.", "A", 0, ["2.example. 60 IN A 10.0.0.1"]),
    "expr builtins": (tmpl("var parts split(name(), '.')", "var n \"len(filter(parts, # != ''))\"",
                           "var up upper(parts[0]) + '-' + string(n) + (n > 1 ? '-many' : '-one')",
                           'answer "{{ .Name }} 60 IN TXT {{ .Var.up }}"', head="template IN TXT example."),
                      "a.example.", "TXT", 0, ['a.example. 60 IN TXT "A-2-many"']),
    # Go-template control flow in records
    "if / else if / else": (tmpl(NUM, 'answer "{{ .Name }} 60 IN TXT {{ if eq .Group.n \\"1\\" }}one{{ else if eq '
                                      '.Group.n \\"2\\" }}two{{ else }}many{{ end }}"', head="template IN TXT example."),
                            "2.example.", "TXT", 0, ['2.example. 60 IN TXT "two"']),
    "range with index and value": (tmpl("match ^([a-z]+)-([a-z]+)[.]", 'answer "{{ .Name }} 60 IN TXT {{ range $i, $m := '
                                        '.Match }}{{ if $i }} \\"{{ $i }}={{ $m }}\\"{{ end }}{{ end }}"',
                                        head="template IN TXT example."),
                                   "ab-cd.example.", "TXT", 0, ['ab-cd.example. 60 IN TXT "1=ab" "2=cd"']),
    "range, break, continue, else": (tmpl("match ^([a-z]+)-([a-z]+)-([a-z]+)[.]",
                                          'answer "{{ .Name }} 60 IN TXT {{ range .Match }}{{ if eq . \\"b\\" }}'
                                          '{{ continue }}{{ end }}{{ if eq . \\"d\\" }}{{ break }}{{ end }}{{ if ne (len .)'
                                          ' 1 }}{{ continue }}{{ end }}{{ . }}{{ else }}none{{ end }}"',
                                          head="template IN TXT example."),
                                     "a-b-c.example.", "TXT", 0, ['a-b-c.example. 60 IN TXT "ac"']),
    "with, $ and variables, trimming": (tmpl(NUM, 'answer "{{- $n := .Group.n -}} {{ .Name }} 60 IN TXT '
                                                  '{{ with .Group.n }}{{ $.Zone }}/{{ . }}/{{ $n }}{{ end }}'
                                                  '{{ with .Group.none }}x{{ else }}/none{{ end }}  {{- /* note */ -}}"',
                                            head="template IN TXT example."),
                                       "2.example.", "TXT", 0, ['2.example. 60 IN TXT "example./2/2/none"']),
    "and, or, not, lt, ge": (tmpl(NUM, 'answer "{{ .Name }} 60 IN TXT {{ if and (lt (parseInt .Group.n 10 8) 5) '
                                       '(not (eq .Group.n \\"0\\")) }}small{{ end }}{{ or .Group.none \\"-dflt\\" }}'
                                       '{{ if ge 3 (len .Name) }}never{{ end }}"', head="template IN TXT example."),
                             "2.example.", "TXT", 0, ['2.example. 60 IN TXT "small-dflt"']),
    "range is bounded": (tmpl('answer "{{ .Name }} 60 IN TXT x{{ range 20000 }}{{ end }}"',
                              head="template IN TXT example."), "a.example.", "TXT", SERVFAIL, []),
    "expression work is bounded": (tmpl("var big len(repeat('x', 2000000)) + len(1..2000000)", A1),
                                   "a.example.", "A", SERVFAIL, []),
    "comparison of unlike types fails": (tmpl(NUM, 'answer "{{ .Name }} 60 IN TXT {{ if eq .Group.n 2 }}y{{ end }}"',
                                              head="template IN TXT example."), "2.example.", "TXT", SERVFAIL, []),
}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", list(CASES))
def test_var_expr_and_control_flow(serve, case, tcp):
    block, qname, qtype, rcode, answer, *rest = CASES[case]
    additional, authority = (rest + [[], []])[:2]
    srv = serve(corefile(f"{block}\n{NEXT}"))
    expected = [line.format(name=qname) for line in answer]
    for _ in range(2):  # again: from the answer kept the first time, where one was
        reply = ask(srv, qname, qtype, tcp=tcp)
        assert reply.rcode() == rcode
        assert lines(reply.answer) == expected
        assert lines(reply.additional) == additional
        assert lines(reply.authority) == authority


def ask_from(srv, name: str, source: str, rdtype: str = "A"):
    host, port = srv.address
    return dns.query.udp(dns.message.make_query(name, rdtype), host, port=port, source=source, timeout=3)


def test_answers_that_depend_on_the_client_are_not_kept(serve):
    """An expr or var reading the client decides per query, even after an answer for the same question."""
    srv = serve(corefile(
        tmpl("expr client_ip() == '127.0.0.2'", 'answer "{{ .Name }} 60 IN A 10.0.0.2"', "fallthrough") + "\n"
        + tmpl('answer "{{ .Name }} 60 IN A 10.0.0.1"') + "\n"
        + tmpl("var who client_ip()", 'answer "{{ .Name }} 60 IN TXT {{ .Var.who }}"', head="template IN TXT example.")))
    for source, address in [("127.0.0.1", "10.0.0.1"), ("127.0.0.2", "10.0.0.2"), ("127.0.0.1", "10.0.0.1"),
                            ("127.0.0.2", "10.0.0.2")]:
        assert lines(ask_from(srv, "a.example.", source).answer) == [f"a.example. 60 IN A {address}"]
        assert lines(ask_from(srv, "a.example.", source, "TXT").answer) == [f'a.example. 60 IN TXT "{source}"']


def test_expr_reads_metadata(serve, tmp_path):
    (tmp_path / "cluster.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: eu}\n")
    srv = serve(corefile(
        " metadata\n"
        + tmpl("expr metadata('kubernetes/namespace') == 'eu'", 'answer "{{ .Name }} 60 IN A 10.0.0.1"',
               "fallthrough", head="template IN A cluster.local")
        + f"\n kubernetes cluster.local {{\n  manifests {tmp_path}/cluster.yaml\n }}"))
    assert lines(ask(srv, "web.eu.svc.cluster.local").answer) == ["web.eu.svc.cluster.local. 60 IN A 10.0.0.1"]
    other = ask(srv, "web.us.svc.cluster.local")
    assert other.rcode() == dns.rcode.NXDOMAIN and not other.answer  # kubernetes answered


def test_failing_expressions_are_counted(serve):
    from tests.conftest import free_port
    from tests.test_stock_corefiles import get

    port = free_port()
    srv = serve(corefile(f" prometheus 127.0.0.1:{port}\n" + tmpl("var bad int(name())", A1)))

    def failures() -> float:
        for line in get(port, "/metrics")[1].splitlines():
            if line.startswith("pydns_template_expression_failures_total{") and 'zone="example."' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = failures()
    for _ in range(3):
        assert ask(srv, "a.example.").rcode() == SERVFAIL
    assert failures() - before == 3


def test_escaped_names_read_as_coredns_reads_them(serve):
    """A query for a\\.b.example. (one label holding a dot): .Name and the regexes see it escaped,
    as miekg/dns writes it, and the records written from .Name own that same name."""
    srv = serve(corefile(tmpl("match ^a\\\\\\.b[.]example[.]$",
                              'answer "{{ .Name }} 60 IN TXT \\"{{ len .Name }}\\" \\"{{ index .Match 0 }}\\""',
                              'additional "x.example. 60 IN CNAME {{ .Name }}"', head="template IN TXT example.")))
    qname = dns.name.Name([b"a.b", b"example", b""])
    for tcp in (False, True):
        reply = ask(srv, qname, "TXT", tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR
        [rrset] = reply.answer
        assert rrset.name == qname and rrset.name.labels[0] == b"a.b"
        # inside quotes the zone-file escape \. is a dot, as miekg/dns reads it
        assert [s for s in rrset[0].strings] == [b"13", b"a.b.example."]
        assert reply.additional[0][0].target.labels[:2] == (b"a.b", b"example")


def test_a_cname_to_a_name_with_an_escaped_dot_is_followed_to_that_name(serve):
    """The CNAME's target a\\.b.example. is one label holding a dot followed by example.: the
    lookup asks for exactly that name, which the second template answers."""
    srv = serve(corefile(tmpl("match ^x[.]example[.]$", 'answer "{{ .Name }} 60 IN CNAME a\\.b.example."',
                              "fallthrough") + "\n"
                         + tmpl("match ^a\\\\\\.b[.]example[.]$", 'answer "{{ .Name }} 60 IN A 10.0.0.7"')))
    reply = ask(srv, "x.example.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    cname, address = reply.answer
    assert cname[0].target.labels[:2] == (b"a.b", b"example")
    assert address.name.labels[:2] == (b"a.b", b"example") and address[0].address == "10.0.0.7"


@pytest.mark.parametrize("name", ["a#b.example.", "a(b.example.", "a\\\\b.example.", "a\\032b.example.",
                                  "a\\;b.example.", "a\\200b.example."])
def test_names_with_special_characters_answer_for_themselves(serve, name):
    """Owner names keep every octet; in a quoted string .Name's escapes read back as the octets."""
    srv = serve(corefile(tmpl('answer "{{ .Name }} 60 IN TXT \\"{{ .Name }}\\""', head="template IN TXT example.")))
    qname = dns.name.from_text(name)
    reply = ask(srv, qname, "TXT")
    assert reply.rcode() == dns.rcode.NOERROR and [r.name for r in reply.answer] == [qname]
    assert reply.answer[0][0].strings == (b".".join(qname.labels),)


SETUP = "template ANY ANY example."


@pytest.mark.parametrize("options,line,message", [
    # CoreDNS's TestSetupParseVar and TestSetupParseExpr
    (["var"], 4, "'var' needs a NAME and an EXPRESSION"),
    (["var a"], 4, "'var' needs a NAME and an EXPRESSION"),
    (["var 1a 1"], 4, 'invalid variable name "1a"'),
    (["var a-b 1"], 4, 'invalid variable name "a-b"'),
    (["var name 1"], 4, 'variable name "name" is reserved'),
    (["var group 1"], 4, 'variable name "group" is reserved'),
    (["var len 1"], 4, 'variable name "len" is reserved'),
    (["var true 1"], 4, 'variable name "true" is reserved'),
    (["var let 1"], 4, 'variable name "let" is reserved'),
    (["var a 1 +"], 4, "could not compile expression: 1 +, unexpected end of expression"),
    (["var a invalid expression"], 4, "could not compile expression"),
    (["var a b + 1", "var b 1"], 4, "unknown name b"),
    (["var a undefined"], 4, "unknown name undefined"),
    (["var a 1", "var a 2"], 5, 'variable name "a" is reserved'),
    (["var a 1", "var b a + 1", "var c 'x' + b"], 6, "mismatched types string and int"),
    (["expr"], 4, "'expr' needs an expression"),
    (["expr name() =="], 4, "unexpected end of expression"),
    (["expr invalid expression"], 4, "could not compile expression"),
    (["expr undefined == 1"], 4, "unknown name undefined"),
    (["var a 1", "expr a + 'x'"], 5, "mismatched types int and string"),
    # and more the checker catches
    (["expr nosuch(1)"], 4, "unknown func nosuch"),
    (["expr incidr(client_ip())"], 4, "invalid number of arguments for incidr"),
    (["expr name() matches '('"], 4, "error parsing regexp"),
    (["expr toJSON(1) == ''"], 4, "function toJSON is not available"),
    (["expr not 1"], 4, "invalid operation: not"),
    # Go templates: what is still outside the subset, and what is wrong
    (['answer "{{ define \\"x\\" }}{{ end }}"'], 4, "'define' is not supported"),
    (['answer "{{ template \\"x\\" }}"'], 4, "'template' is not supported"),
    (['answer "{{ if .Name }}x"'], 4, "unexpected EOF"),
    (['answer "{{ end }}"'], 4, "unexpected {{end}}"),
    (['answer "{{ $x }}"'], 4, 'undefined variable "$x"'),
    (['answer "{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}"'], 4, 'undefined variable "$y"'),
    (['answer "{{ break }}"'], 4, "{{break}} outside {{range}}"),
    (['answer "{{ if }}{{ end }}"'], 4, "missing value for command"),
])
def test_malformed_var_expr_and_templates_are_startup_errors(tmp_path, options, line, message):
    startup_error(tmp_path, tmpl(*options, head=SETUP), line, message)


@pytest.mark.parametrize("options", [
    ["var a 1"],
    ["var a 1", "var b a + 1", "var c 'x' + name()"],
    ["match ^(?P<a>[a-z]+)[.]example[.]$", 'var a group("a") + group(1) + group(0)'],
    ["expr name() == 'a.example.'", "expr incidr(client_ip(), '10.0.0.0/8')"],
    ["var a 1", "expr a == 1"],
    ["expr 1"],
    ['answer "{{ range $i, $v := .Match }}{{ $i }}{{ else }}{{ end }}"'],
])
def test_valid_var_and_expr_start(serve, options):
    assert serve(corefile(tmpl(*options, head=SETUP))).query("a.example").rcode() in (0, SERVFAIL)


# The expression language as a Corefile may use it: each value, as a record prints it.
EXPRESSIONS = [
    ("1 + 2 * 3", "7"), ("7 / 2", "3.5"), ("2 ** 10", "1024"), ("-7 % 3", "-1"), ("10 / 4 * 2", "5"),
    ("'a' + 'b'", "ab"), ("1 < 2 < 3", "true"), ("1 == 1.0", "true"), ("'b' in ['a', 'b']", "true"),
    ("'z' not in ['a']", "true"), ("'abc' matches '^a.c$'", "true"), ("'abc' not matches 'x'", "true"),
    ("'abc' startsWith 'ab' and 'abc' endsWith 'bc' and 'abc' contains 'b'", "true"),
    ("not false && !false || false", "true"), ("true ? 'yes' : 'no'", "yes"), ("nil ?? 'dflt'", "dflt"),
    ("[1, 2, 3][-1]", "3"), ("'abcdef'[1:3]", "bc"), ("[1, 2, 3][:2]", "[1 2]"), ("{a: 1, b: 2}.b", "2"),
    ("{a: 1}?.b?.c", "<no value>"), ("len('abc') + len([1, 2]) + len({a: 1})", "6"),
    ("upper('ab') + lower('CD') + trim('  e  ')", "ABcde"), ("replace('a-b-c', '-', '.')", "a.b.c"),
    ("split('a.b.c', '.')", "[a b c]"), ("join(['a', 'b'], '+')", "a+b"), ("int('42') + int(2.9)", "44"),
    ("float('1.5') * 2", "3"), ("string(12) + string(true)", "12true"), ("filter(1..6, # % 2 == 0)", "[2 4 6]"),
    ("map([1, 2], # * 10)", "[10 20]"), ("map([1, 2], {#index})", "[0 1]"),
    ("all([1, 2], # > 0) && any([1, 2], # > 1) && none([1], # > 5) && one([1, 2], # == 2)", "true"),
    ("count(1..10, # > 7)", "3"), ("sum([1, 2, 3])", "6"), ("reduce(1..4, #acc * #, 1)", "24"),
    ("find([1, 5, 9], # > 3)", "5"), ("findIndex(['a', 'b'], # == 'b')", "1"), ("findLast([1, 5, 9], # < 6)", "5"),
    ("filter([{n: 1}, {n: 2}], .n > 1)[0].n", "2"), ("first([7, 8]) + last([7, 8])", "15"),
    ("max(3, 9, 4) - min([5, 2])", "7"), ("abs(-3) + ceil(1.2) + floor(1.8) + round(2.5)", "9"),
    ("indexOf('abc', 'c')", "2"), ("hasPrefix('abc', 'a') && hasSuffix('abc', 'c')", "true"),
    ("repeat('ab', 3)", "ababab"), ("keys({a: 1})", "[a]"), ("reverse([1, 2, 3])", "[3 2 1]"),
    ("uniq([1, 1, 2])", "[1 2]"), ("sort([3, 1, 2])", "[1 2 3]"), ("concat([1], [2, 3])", "[1 2 3]"),
    ("let x = 5; x * x", "25"), ("if 1 > 2 { 'a' } else { 'b' }", "b"), ("[1, 2, 3] | map(# + 1) | sum()", "9"),
    ("0x10 + 0b11 + 0o7 + 1_000", "1026"), ("1e3 + .5", "1000.5"), ("1e21 * 1", "1e+21"), ("1 / 3", "0.3333333333333333"),
    ("bitand(12, 10) + bitshl(1, 4)", "24"), ("toBase64('hi')", "aGk="), ("get({a: 1}, 'b') ?? 'none'", "none"),
    ("nil", "<no value>"), ("incidr('10.1.2.3', '10.0.0.0/8') and not incidr('::1', '10.0.0.0/8')", "true"),
    ("name() + '|' + type() + '|' + class() + '|' + proto()", "{name}|TXT|IN|{proto}"),
    ("client_ip() + ' ' + string(bufsize() >= 512) + ' ' + string(do()) + ' ' + string(opcode())", "127.0.0.1 true false 0"),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_expressions_evaluate_as_expr_lang_does(serve, tcp):
    blocks = [tmpl(f'var v "{source}"', 'answer "{{ .Name }} 60 IN TXT \\"{{ .Var.v }}\\""',
                   head=f"template IN TXT e{i}.example.") for i, (source, _) in enumerate(EXPRESSIONS)]
    srv = serve(corefile("\n".join(blocks)))
    got, want = {}, {}
    for i, (source, expected) in enumerate(EXPRESSIONS):
        name = f"x.e{i}.example."
        reply = ask(srv, name, "TXT", tcp=tcp)
        got[source] = b"".join(reply.answer[0][0].strings).decode() if reply.answer else dns.rcode.to_text(reply.rcode())
        want[source] = expected.format(name=name, proto="tcp" if tcp else "udp")
    assert got == want
