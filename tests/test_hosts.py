"""hosts: /etc/hosts files and inline entries answered over real DNS."""

from __future__ import annotations

import ipaddress
import os
import time

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import pydns.metrics
from pydns.corefile import CorefileError
from pydns.testing import ServerThread

HOSTS = """\
# a comment line
127.0.0.1   localhost
10.0.0.1    web.example.org web-alias.example.org   # trailing comment
10.0.0.2    web.example.org
fd00::1     web.example.org six.example.org
192.0.2.9   outside.example.net
not-an-ip   broken.example.org
"""


def corefile(hosts_line: str, options: str = "", after: str = "") -> str:
    block = f" {{\n{options}\n }}" if options else ""
    return f".:0 {{\n bind 127.0.0.1\n {hosts_line}{block}\n{after}\n}}\n"


@pytest.fixture
def hosts_file(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    return path


def addresses(msg) -> list[str]:
    return [rr.address for rrset in msg.answer for rr in rrset]


def ttls(msg) -> set[int]:
    return {rrset.ttl for rrset in msg.answer}


def ptr_targets(msg) -> list[str]:
    return [str(rr.target) for rrset in msg.answer for rr in rrset]


def wait_for(fn, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_file_entries_a_aaaa_case_insensitive_default_ttl(serve, hosts_file):
    srv = serve(corefile(f"hosts {hosts_file}"))
    msg = srv.query("web.example.org", "A")
    assert msg.rcode() == dns.rcode.NOERROR
    assert addresses(msg) == ["10.0.0.1", "10.0.0.2"]
    assert ttls(msg) == {3600}
    assert msg.flags & dns.flags.AA
    msg = srv.query("WeB.ExAmPlE.oRg", "A", tcp=True)
    assert addresses(msg) == ["10.0.0.1", "10.0.0.2"]
    assert str(msg.question[0].name) == "WeB.ExAmPlE.oRg."  # the client's case is kept
    assert addresses(srv.query("web.example.org", "AAAA")) == ["fd00::1"]
    assert addresses(srv.query("web-alias.example.org", "A")) == ["10.0.0.1"]
    assert addresses(srv.query("localhost", "A")) == ["127.0.0.1"]


def test_existing_name_other_type_is_nodata_unknown_name_servfail(serve, hosts_file):
    srv = serve(corefile(f"hosts {hosts_file}"))
    for qtype in ("AAAA", "MX", "TXT"):
        msg = srv.query("web-alias.example.org", qtype)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer == [] and msg.authority == []
    # a hosts file has no SOA to deny with: CoreDNS answers SERVFAIL
    assert srv.query("nope.example.org", "A").rcode() == dns.rcode.SERVFAIL
    # the line with a bad address is skipped
    assert srv.query("broken.example.org", "A").rcode() == dns.rcode.SERVFAIL


def test_reverse_records_and_no_reverse(serve, hosts_file):
    srv = serve(corefile(f"hosts {hosts_file}"))
    assert ptr_targets(srv.query("1.0.0.10.in-addr.arpa", "PTR")) == ["web.example.org.", "web-alias.example.org."]
    rev6 = ipaddress.ip_address("fd00::1").reverse_pointer
    assert ptr_targets(srv.query(rev6, "PTR")) == ["web.example.org.", "six.example.org."]
    # a PTR without an entry goes to the next plugin (here the end of the chain: SERVFAIL)
    assert srv.query("9.9.9.9.in-addr.arpa", "PTR").rcode() == dns.rcode.SERVFAIL

    srv2 = serve(corefile(f"hosts {hosts_file}", "   no_reverse", " whoami"))
    msg = srv2.query("1.0.0.10.in-addr.arpa", "PTR")
    assert msg.answer == [] and msg.additional  # whoami answered: hosts passed it on
    assert addresses(srv2.query("web.example.org", "A")) == ["10.0.0.1", "10.0.0.2"]


def test_inline_entries_with_ttl_come_after_the_file(serve, hosts_file):
    options = """   10.0.0.3 web.example.org
   10.9.9.9 inline.example.org
   ttl 60"""
    srv = serve(corefile(f"hosts {hosts_file}", options))
    msg = srv.query("web.example.org", "A")
    assert addresses(msg) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert ttls(msg) == {60}
    assert addresses(srv.query("inline.example.org", "A")) == ["10.9.9.9"]
    assert ptr_targets(srv.query("9.9.9.10.in-addr.arpa", "PTR")) == ["inline.example.org."]


def test_inline_only_without_a_file(serve, tmp_path):
    missing = tmp_path / "absent"
    srv = serve(corefile(f"hosts {missing}", "   10.1.1.1 only.example.org"))
    assert addresses(srv.query("only.example.org", "A")) == ["10.1.1.1"]


def test_fallthrough_all_zones_and_listed_zones(serve, hosts_file):
    srv = serve(corefile(f"hosts {hosts_file}", "   fallthrough", " whoami"))
    msg = srv.query("nope.example.org", "A")
    assert msg.rcode() == dns.rcode.NOERROR and msg.additional  # whoami's answer
    # known names are still answered by hosts
    assert addresses(srv.query("web.example.org", "A")) == ["10.0.0.1", "10.0.0.2"]

    srv2 = serve(corefile(f"hosts {hosts_file}", "   fallthrough other.test", " whoami"))
    assert srv2.query("nope.example.org", "A").rcode() == dns.rcode.SERVFAIL
    msg = srv2.query("x.other.test", "A")
    assert msg.rcode() == dns.rcode.NOERROR and msg.additional


def test_zones_limit_the_names_served(serve, hosts_file):
    srv = serve(corefile(f"hosts {hosts_file} example.org", "", " whoami"))
    assert addresses(srv.query("web.example.org", "A")) == ["10.0.0.1", "10.0.0.2"]
    # outside the zones: the file's entry is ignored and the query goes on
    msg = srv.query("outside.example.net", "A")
    assert msg.answer == [] and msg.additional
    assert srv.query("localhost", "A").answer == []


def test_file_edits_are_picked_up(serve, hosts_file):
    srv = serve(corefile(f"hosts {hosts_file}", "   reload 100ms\n   fallthrough", " whoami"))
    assert srv.query("new.example.org", "A").answer == []
    with open(hosts_file, "a") as fh:
        fh.write("10.0.0.42 new.example.org\n")
    assert wait_for(lambda: addresses(srv.query("new.example.org", "A")) == ["10.0.0.42"])
    hosts_file.write_text("10.0.0.7 web.example.org\n")
    assert wait_for(lambda: addresses(srv.query("web.example.org", "A")) == ["10.0.0.7"])
    assert srv.query("new.example.org", "A").answer == []


def test_missing_file_appears_later(serve, tmp_path):
    path = tmp_path / "late"
    srv = serve(corefile(f"hosts {path}", "   reload 100ms"))
    assert srv.query("late.example.org", "A").rcode() == dns.rcode.SERVFAIL
    path.write_text("10.2.2.2 late.example.org\n")
    assert wait_for(lambda: addresses(srv.query("late.example.org", "A")) == ["10.2.2.2"])


def test_reload_zero_disables_rereading(serve, hosts_file):
    srv = serve(corefile(f"hosts {hosts_file}", "   reload 0"))
    with open(hosts_file, "a") as fh:
        fh.write("10.0.0.43 later.example.org\n")
    time.sleep(0.5)
    assert srv.query("later.example.org", "A").rcode() == dns.rcode.SERVFAIL


def test_k3s_stock_hosts_block(serve, tmp_path):
    node_hosts = tmp_path / "NodeHosts"
    node_hosts.write_text("172.18.0.2 k3s-server\n")
    srv = serve(corefile(f"hosts {node_hosts}", "   ttl 60\n   reload 15s\n   fallthrough", " whoami"))
    msg = srv.query("k3s-server", "A")
    assert addresses(msg) == ["172.18.0.2"] and ttls(msg) == {60}


def test_metrics_entries_and_reload_timestamp(serve, hosts_file):
    serve(corefile(f"hosts {hosts_file}", "   10.5.5.5 extra.example.org"))
    text = generate_latest(pydns.metrics.registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    # as CoreDNS counts: each name's addresses plus each address's names.  The file has 7
    # name/address pairs (5 IPv4, 2 IPv6), so 7 + 7; the inline entry adds 1 + 1.
    assert samples[("coredns_hosts_entries", (("hostsfile", str(hosts_file)),))] == 7 + 7 + 2
    stamp = samples[("coredns_hosts_reload_timestamp_seconds", ())]
    assert abs(stamp - os.stat(hosts_file).st_mtime) < 1


@pytest.mark.parametrize("options, line, message", [
    ("   ttl 0", 4, "ttl provided is invalid"),
    ("   ttl 70000", 4, "ttl provided is invalid"),
    ("   ttl abc", 4, "ttl needs a number of second"),
    ("   ttl", 4, "ttl needs a time in second"),
    ("   reload -1s", 4, "invalid negative duration for reload"),
    ("   reload soon", 4, "invalid duration for reload 'soon'"),
    ("   reload", 4, "reload needs a duration"),
    ("   fallthrough\n   10.0.0.1 late.example.org", 5, "unknown property '10.0.0.1'"),
    ("   tll 60", 4, "unknown property 'tll'"),
    ("   10.0.0.1", 4, "needs a host name"),
    ("   no_reverse please", 4, "no_reverse takes no arguments"),
    ("   ttl 60 70", 4, "ttl takes one value"),
])
def test_bad_options_are_startup_errors_naming_file_and_line(tmp_path, hosts_file, options, line, message):
    path = tmp_path / "Corefile"
    path.write_text(corefile(f"hosts {hosts_file}", options))
    with pytest.raises(CorefileError) as err:
        ServerThread("", path=str(path)).start()
    assert f"{path}:{line}:" in str(err.value)
    assert message in str(err.value)
    assert "plugin/" in str(err.value)


def test_used_twice_in_a_block_is_an_error(tmp_path, hosts_file):
    path = tmp_path / "Corefile"
    path.write_text(f".:0 {{\n bind 127.0.0.1\n hosts {hosts_file}\n hosts {hosts_file}\n}}\n")
    with pytest.raises(CorefileError, match=":4:"):
        ServerThread("", path=str(path)).start()
