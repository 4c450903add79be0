"""any, minimal, nsid, header, local and metadata over real UDP/TCP, with CoreDNS's cases."""

from __future__ import annotations

import socket

import dns.edns
import dns.flags
import dns.rcode
import pytest

from tests.plugin_cases import CapturingUpstream, ask, corefile, startup_error


def lines(section) -> list[str]:
    return [line for rrset in section for line in rrset.to_text().splitlines()]


# ---------------------------------------------------------------- any

@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_any_answers_hinfo_and_passes_other_types(serve, tcp):
    srv = serve(corefile(" any\n whoami"))
    for name in ("example.org", "Other.Example.net"):
        reply = ask(srv, name, "ANY", tcp=tcp)
        assert lines(reply.answer) == [f'{name}. 8482 IN HINFO "ANY obsoleted" "See RFC 8482"']
        assert not reply.flags & dns.flags.AA
    assert ask(srv, "example.org", "A", tcp=tcp).additional  # whoami


# ---------------------------------------------------------------- minimal

SECTIONS = """ template IN A answer.example {
  answer "{{ .Name }} 60 IN A 10.0.0.1"
  authority "answer.example. 60 IN NS ns.answer.example."
  additional "ns.answer.example. 60 IN A 10.0.0.2"
 }
 template IN A nxdomain.example {
  rcode NXDOMAIN
  authority "nxdomain.example. 60 IN SOA ns.nxdomain.example. h.nxdomain.example. 1 60 60 60 60"
 }
 template IN A nodata.example {
  authority "nodata.example. 60 IN SOA ns.nodata.example. h.nodata.example. 1 60 60 60 60"
 }
 template IN A delegation.example {
  authority "delegation.example. 60 IN NS ns.delegation.example."
  additional "ns.delegation.example. 60 IN A 10.0.0.3"
 }
 template IN A extra.example {
  additional "x.extra.example. 60 IN A 10.0.0.4"
 }"""

# (name, rcode, answer lines, authority count, additional count) with minimal in front
MINIMAL_CASES = [
    ("a.answer.example", dns.rcode.NOERROR, ["a.answer.example. 60 IN A 10.0.0.1"], 0, 0),
    ("a.nxdomain.example", dns.rcode.NXDOMAIN, [], 1, 0),  # negative: unchanged
    ("a.nodata.example", dns.rcode.NOERROR, [], 1, 0),  # NODATA: unchanged
    ("a.delegation.example", dns.rcode.NOERROR, [], 1, 1),  # delegation: unchanged
    ("a.extra.example", dns.rcode.NOERROR, [], 0, 0),  # NOERROR without SOA or NS: shortened
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name,rcode,answer,authority,additional", MINIMAL_CASES)
def test_minimal(serve, name, rcode, answer, authority, additional, tcp):
    srv = serve(corefile(f" minimal\n{SECTIONS}"))
    for _ in range(2):  # the shortened answer is kept: the same again
        reply = ask(srv, name, tcp=tcp)
        assert reply.rcode() == rcode and lines(reply.answer) == answer
        assert len(lines(reply.authority)) == authority and len(lines(reply.additional)) == additional
    full = serve(corefile(SECTIONS))
    assert len(lines(ask(full, "a.answer.example").additional)) == 1  # what minimal took away


# ---------------------------------------------------------------- nsid

@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("line,data", [("nsid myserver", b"myserver"), ("nsid a b", b"a b"),
                                       ("nsid", socket.gethostname().encode())])
def test_nsid_answers_clients_that_ask(serve, line, data, tcp):
    srv = serve(corefile(f" {line}\n whoami"))
    reply = ask(srv, "example.org", tcp=tcp, use_edns=0, options=[dns.edns.NSIDOption(b"")])
    assert [(o.otype, o.nsid) for o in reply.options] == [(dns.edns.OptionType.NSID, data)]
    assert reply.additional  # the answer itself is whoami's
    assert ask(srv, "example.org", tcp=tcp, use_edns=0).options == ()
    assert ask(srv, "example.org", tcp=tcp).edns == -1


def test_nsid_once_per_block(tmp_path):
    startup_error(tmp_path, " nsid a\n nsid b", 4, "only be used once")


# ---------------------------------------------------------------- header

@pytest.fixture
def capture():
    up = CapturingUpstream()
    yield up
    up.stop()


@pytest.mark.parametrize("rules,query_rd,upstream_rd,reply_flags", [
    ("response set ra aa", True, True, {"RA", "AA", "RD"}),
    ("response set ra aa\n  response clear rd", True, True, {"RA", "AA"}),
    ("response set aa\n  response clear aa", True, True, {"RD"}),  # the last rule wins
    ("query set rd", False, True, {"RD"}),  # the reply echoes the query's RD
    ("query clear rd", True, False, set()),
    ("query clear rd\n  response set rd", True, False, {"RD"}),
])
def test_header_rules(serve, capture, rules, query_rd, upstream_rd, reply_flags):
    srv = serve(corefile(f" header {{\n  {rules}\n }}\n forward . 127.0.0.1:{capture.port} {{\n  prefer_udp\n }}"))
    for tcp in (False, True):
        reply = ask(srv, "up.example.org", tcp=tcp, flags=dns.flags.RD if query_rd else 0)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert bool(capture.queries[-1].flags & dns.flags.RD) == upstream_rd
        names = {f for f in ("AA", "RA", "RD") if reply.flags & dns.flags.Flag[f]}
        assert names == reply_flags, (tcp, dns.flags.to_text(reply.flags))


@pytest.mark.parametrize("body,line,message", [
    (" header {\n }", 3, "at least one query or response rule"),
    (" header {\n  foo set rd\n }", 4, "invalid selector=foo should be query or response"),
    (" header {\n  query set\n }", 4, "at least one flag"),
    (" header {\n  query\n }", 4, "no flag action provided"),
    (" header {\n  query foo rd\n }", 4, "unknown flag action=foo, should be set or clear"),
    (" header {\n  response set ad\n }", 4, "unknown/unsupported flag=ad"),
    (" header x", 3, "takes no arguments"),
])
def test_header_errors(tmp_path, body, line, message):
    startup_error(tmp_path, body, line, message)


# ---------------------------------------------------------------- local

SOA_127 = "127.in-addr.arpa. 604800 IN SOA localhost. root.localhost. 1 0 0 0 604800"
LOCAL_CASES = [
    ("localhost", "A", dns.rcode.NOERROR, ["localhost. 604800 IN A 127.0.0.1"], []),
    ("localHOst", "A", dns.rcode.NOERROR, ["localHOst. 604800 IN A 127.0.0.1"], []),
    ("localhost", "AAAA", dns.rcode.NOERROR, ["localhost. 604800 IN AAAA ::1"], []),
    ("localhost", "NS", dns.rcode.NOERROR, ["localhost. 604800 IN NS localhost."], []),
    ("localhost", "SOA", dns.rcode.NOERROR, ["localhost. 604800 IN SOA localhost. root.localhost. 1 0 0 0 604800"], []),
    ("127.in-addr.arpa", "A", dns.rcode.NOERROR, [], [SOA_127]),
    ("localhost", "MX", dns.rcode.NOERROR, [], ["localhost. 604800 IN SOA localhost. root.localhost. 1 0 0 0 604800"]),
    ("a.localhost", "A", dns.rcode.NOERROR, ["a.localhost. 604800 IN A 127.0.0.1"], []),
    ("a.localhost", "AAAA", dns.rcode.NOERROR, ["a.localhost. 604800 IN AAAA ::1"], []),
    ("a.localhost", "MX", dns.rcode.NOERROR, [],
     ["a.localhost. 604800 IN SOA localhost. root.localhost. 1 0 0 0 604800"]),
    ("1.0.0.127.in-addr.arpa", "PTR", dns.rcode.NOERROR, ["1.0.0.127.in-addr.arpa. 604800 IN PTR localhost."], []),
    ("1.0.0.127.in-addr.arpa", "MX", dns.rcode.NOERROR, [], [SOA_127]),
    ("2.0.0.127.in-addr.arpa", "PTR", dns.rcode.NXDOMAIN, [], [SOA_127]),
    ("localhost.example.net", "A", dns.rcode.NOERROR, ["localhost.example.net. 604800 IN A 127.0.0.1"], []),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name,qtype,rcode,answer,authority", LOCAL_CASES)
def test_local(serve, name, qtype, rcode, answer, authority, tcp):
    srv = serve(corefile(" local\n whoami"))
    reply = ask(srv, name, qtype, tcp=tcp)
    assert reply.rcode() == rcode
    assert lines(reply.answer) == answer and lines(reply.authority) == authority


def test_local_prefix_off_and_other_names(serve):
    srv = serve(corefile(" local {\n  localhost_prefix off\n }\n whoami"))
    assert ask(srv, "localhost.example.net").additional  # passed on to whoami
    assert lines(ask(srv, "a.localhost").answer) == ["a.localhost. 604800 IN A 127.0.0.1"]
    assert ask(srv, "example.net").additional


def test_local_compares_names_label_by_label(serve):
    srv = serve(corefile(" local\n whoami"))
    # One label "a.localhost" under the root, and "localhost.x" in example.net.: not local names.
    for name in ("a\\.localhost", "localhost\\.x.example.net", "a\\.127.in-addr.arpa"):
        reply = ask(srv, name)
        assert reply.additional and not reply.answer, name  # passed on to whoami


@pytest.mark.parametrize("body,line,message", [
    (" local {\n  localhost_prefix maybe\n }", 4, "localhost_prefix expects 'on' or 'off', got 'maybe'"),
    (" local {\n  other on\n }", 4, "unknown property 'other'"),
    (" local x", 3, "takes no arguments"),
])
def test_local_errors(tmp_path, body, line, message):
    startup_error(tmp_path, body, line, message)


# ---------------------------------------------------------------- metadata

META = ('template IN TXT cluster.local {\n  answer "{{ .Name }} 0 IN TXT \\"'
        '{{ .Meta \\"kubernetes/kind\\" }}/{{ .Meta \\"kubernetes/namespace\\" }}/{{ .Meta \\"kubernetes/service\\" }}/'
        '{{ .Meta \\"kubernetes/endpoint\\" }}/{{ .Meta \\"kubernetes/port-name\\" }}/{{ .Meta \\"kubernetes/protocol\\" }}/'
        '{{ .Meta \\"kubernetes/parse-error\\" }}\\""\n }')


@pytest.mark.parametrize("name,text", [
    ("_http._tcp.web.prod.svc.cluster.local", "svc/prod/web//http/tcp/"),
    ("web.prod.svc.cluster.local", "svc/prod/web////"),
    ("ep-1.web.prod.svc.cluster.local", "svc/prod/web/ep-1///"),
    ("1-2-3-4.prod.pod.cluster.local", "pod/prod/1-2-3-4////"),
    ("x.y.cluster.local", "//////invalid request"),
])
def test_metadata_labels_of_kubernetes_names(serve, tmp_path, name, text):
    (tmp_path / "cluster.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
    srv = serve(corefile(f" metadata\n {META}\n kubernetes cluster.local {{\n  manifests {tmp_path / 'cluster.yaml'}\n }}"))
    reply = ask(srv, name, "TXT")
    assert lines(reply.answer) == [f'{name}. 0 IN TXT "{text}"']


ZONE_LABELS = ("cluster", "endpoint", "port-name", "protocol", "zone", "parse-error")


@pytest.mark.parametrize("name,values", [
    ("ep-1.c1.web.prod.svc.clusterset.local", ("c1", "ep-1", "", "", "", "")),
    ("_http._tcp.web.prod.svc.clusterset.local", ("", "", "http", "tcp", "", "")),
    ("eu-1a.pin._zone.web.prod.svc.cluster.local", ("", "", "", "", "eu-1a", "")),
    ("a.b.prefer._zone.web.prod.svc.cluster.local", ("", "", "", "", "a.b", "")),
    ("ep-1.c1.web.prod.svc.cluster.local", ("", "", "ep-1", "c1", "", "")),  # not multicluster: port and protocol
    ("eu.pin._zone.web.prod.svc.clusterset.local", ("", "", "", "", "", "invalid request")),
    ("eu.nearest._zone.web.prod.svc.cluster.local", ("", "", "", "", "", "invalid request")),
])
def test_metadata_cluster_and_zone_labels(serve, tmp_path, name, values):
    """kubernetes/cluster in multicluster zones, kubernetes/zone with zonal, as CoreDNS parses names."""
    (tmp_path / "cluster.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
    fields = "/".join(f'{{{{ .Meta \\"kubernetes/{label}\\" }}}}' for label in ZONE_LABELS)
    meta = f'template IN TXT cluster.local clusterset.local {{\n  answer "{{{{ .Name }}}} 0 IN TXT \\"{fields}\\""\n }}'
    srv = serve(corefile(f" metadata\n {meta}\n kubernetes cluster.local clusterset.local {{\n"
                         f"  manifests {tmp_path / 'cluster.yaml'}\n  zonal\n  multicluster clusterset.local\n }}"))
    assert lines(ask(srv, name, "TXT").answer) == [f'{name}. 0 IN TXT "{"/".join(values)}"']


def test_without_metadata_labels_read_empty(serve, tmp_path):
    (tmp_path / "cluster.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
    srv = serve(corefile(f" {META}\n kubernetes cluster.local {{\n  manifests {tmp_path / 'cluster.yaml'}\n }}"))
    assert lines(ask(srv, "web.prod.svc.cluster.local", "TXT").answer) == [
        'web.prod.svc.cluster.local. 0 IN TXT "//////"']


def test_metadata_labels_reach_rewrite_edns0(serve, tmp_path, capture):
    (tmp_path / "cluster.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
    srv = serve(corefile(f" metadata\n rewrite edns0 local set 0xffee {{kubernetes/namespace}}\n"
                         f" kubernetes cluster.local {{\n  manifests {tmp_path / 'cluster.yaml'}\n  fallthrough\n }}\n"
                         f" forward . 127.0.0.1:{capture.port}"))
    ask(srv, "web.prod.svc.cluster.local")
    assert {o.otype: o.to_wire() for o in capture.queries[-1].options}[0xFFEE] == b"prod"


def test_the_plugins_flag_lists_them():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pydns", "-plugins"], capture_output=True, text=True, timeout=60)
    listed = {line.strip() for line in out.stdout.splitlines()}
    for name in ("rewrite", "template", "bufsize", "chaos", "acl", "any", "minimal", "nsid", "header", "local",
                 "metadata"):
        assert f"dns.{name}" in listed, out.stdout
