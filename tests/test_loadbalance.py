"""loadbalance: record order across real DNS queries (hosts and forwarded answers)."""

from __future__ import annotations

from collections import Counter

import dns.rcode
import dns.rdatatype
import pytest
from dnslib import QTYPE, RR, A, CNAME, DNSRecord

from pydns.corefile import CorefileError
from pydns.testing import ServerThread
from pydns.testing.upstream import Upstream
from tests.plugin_cases import UdpResponder, corefile, startup_error

ROUNDS = 120


def order(msg, rdtype=dns.rdatatype.A) -> tuple:
    return tuple(rr.to_text() for rrset in msg.answer if rrset.rdtype == rdtype for rr in rrset)


def types(msg) -> list[int]:
    return [rrset.rdtype for rrset in msg.answer]


@pytest.fixture
def hosts_file(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("10.0.0.1 many.example.org\n10.0.0.2 many.example.org\n10.0.0.3 many.example.org\n"
                    "10.0.0.4 many.example.org\n192.168.1.5 many.example.org\n172.16.0.1 many.example.org\n"
                    "10.0.0.9 one.example.org\n")
    return path


def hosts_with(path) -> str:
    return f" hosts {path} {{\n  reload 0\n }}"


class CraftedUpstream(UdpResponder):
    """Answers every query with fixed records, in the order given (A before its CNAME)."""

    def __init__(self, records: list[RR]):
        self.records = records
        super().__init__()

    def reply(self, data: bytes) -> bytes:
        reply = DNSRecord.parse(data).reply()
        for rr in self.records:
            reply.add_answer(rr)
        return reply.pack()


def test_round_robin_varies_the_order_and_keeps_the_set(serve, hosts_file):
    srv = serve(corefile(f" loadbalance\n{hosts_with(hosts_file)}"))
    orders = Counter()
    for i in range(ROUNDS):
        msg = srv.query("many.example.org", "A", tcp=(i % 4 == 0))
        orders[order(msg)] += 1
    expected = sorted(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "192.168.1.5", "172.16.0.1"])
    assert all(sorted(o) == expected for o in orders)
    assert len(orders) > 20  # 720 possible orders
    firsts = Counter(o[0] for o in orders.elements())
    assert len(firsts) == 6  # every address gets to be first
    # a single record is left as it is
    assert order(srv.query("one.example.org", "A")) == ("10.0.0.9",)


@pytest.mark.parametrize("count", [2, 5, 8])
def test_round_robin_gives_every_order_of_few_or_many_records(serve, tmp_path, count):
    # 5 is a headless service's usual endpoint count; 8 is past the orders made ahead.
    addrs = [f"10.2.0.{i}" for i in range(1, count + 1)]
    path = tmp_path / "hosts"
    path.write_text("".join(f"{a} svc.example.org\n" for a in addrs))
    srv = serve(corefile(f" loadbalance\n{hosts_with(path)}"))
    rounds = 50 * count
    orders = Counter(order(srv.query("svc.example.org", "A")) for _ in range(rounds))
    assert all(sorted(o) == sorted(addrs) for o in orders)
    # Shuffled, not rotated: far more orders than the count, once there can be.
    assert len(orders) == 2 if count == 2 else len(orders) > 3 * count
    # Every address at every place, about equally often.
    places = Counter((i, a) for o in orders.elements() for i, a in enumerate(o))
    assert len(places) == count * count
    assert min(places.values()) > rounds / count / 3


def test_without_loadbalance_the_order_is_fixed(serve, hosts_file):
    srv = serve(corefile(hosts_with(hosts_file)))
    assert len({order(srv.query("many.example.org", "A")) for _ in range(20)}) == 1


def test_prefer_puts_preferred_subnets_first_in_listed_order(serve, hosts_file):
    srv = serve(corefile(f" loadbalance round_robin {{\n  prefer 172.16.0.0/12 192.168.1.0/24\n }}\n"
                         f"{hosts_with(hosts_file)}"))
    rest = set()
    for _ in range(60):
        o = order(srv.query("many.example.org", "A"))
        assert o[:2] == ("172.16.0.1", "192.168.1.5")
        rest.add(o[2:])
    assert len(rest) > 5  # the others are still shuffled


def test_cname_first_and_names_survive_reordering(serve):
    # The upstream puts the A records before the CNAME; their owner names are compressed
    # and the CNAME's target points back into them, so moving records must not break names.
    records = [RR("target.example.net.", QTYPE.A, ttl=30, rdata=A(f"10.1.0.{i}")) for i in range(1, 4)]
    records.append(RR("www.example.org.", QTYPE.CNAME, ttl=30, rdata=CNAME("target.example.net.")))
    up = CraftedUpstream(records)
    try:
        srv = serve(corefile(f" loadbalance\n forward . 127.0.0.1:{up.port}"))
        orders = set()
        for _ in range(40):
            msg = srv.query("www.example.org", "A")
            assert types(msg)[0] == dns.rdatatype.CNAME
            cname = msg.answer[0]
            assert str(cname.name) == "www.example.org." and str(cname[0].target) == "target.example.net."
            addrs = msg.answer[1]
            assert str(addrs.name) == "target.example.net."
            orders.add(order(msg))
        assert {tuple(sorted(o)) for o in orders} == {("10.1.0.1", "10.1.0.2", "10.1.0.3")}
        assert len(orders) > 1
    finally:
        up.stop()


def test_mx_records_are_shuffled_too(serve):
    mx = ["10 mx1.example.org.", "20 mx2.example.org.", "30 mx3.example.org."]
    up = Upstream({("example.org.", "MX"): mx}).start()
    try:
        srv = serve(corefile(f" loadbalance\n forward . 127.0.0.1:{up.port}"))
        orders = {order(srv.query("example.org", "MX"), dns.rdatatype.MX) for _ in range(40)}
        assert all(sorted(o) == sorted(mx) for o in orders)
        assert len(orders) > 1
    finally:
        up.stop()


def test_weighted_prefers_heavy_addresses_and_rereads_the_file(serve, tmp_path, hosts_file):
    weights = tmp_path / "weights"
    weights.write_text("# comment\nmany.example.org\n10.0.0.3 255\n10.0.0.1 1\n")
    srv = serve(corefile(f" loadbalance weighted {weights} {{\n  reload 100ms\n }}\n{hosts_with(hosts_file)}"))
    firsts = Counter(order(srv.query("many.example.org", "A"))[0] for _ in range(ROUNDS))
    assert firsts["10.0.0.3"] > ROUNDS * 0.8  # 255 against 5 x 1
    weights.write_text("many.example.org\n172.16.0.1 255\n")
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        firsts = Counter(order(srv.query("many.example.org", "A"))[0] for _ in range(20))
        if firsts["172.16.0.1"] >= 15:
            break
        time.sleep(0.1)
    assert firsts["172.16.0.1"] >= 15


@pytest.mark.parametrize("body, line, message", [
    (" loadbalance random", 3, "unknown policy: random"),
    (" loadbalance round_robin extra", 3, "unknown property for round_robin"),
    (" loadbalance weighted", 3, "missing weight file argument"),
    (" loadbalance weighted a b", 3, "unexpected argument(s)"),
    (" loadbalance {\n  prefer 10.0.0.0\n }", 4, 'invalid CIDR "10.0.0.0"'),
    (" loadbalance {\n  prefer 10.0.0.0/99\n }", 4, 'invalid CIDR "10.0.0.0/99"'),
    (" loadbalance {\n  reload 5s\n }", 4, "unknown property 'reload'"),
    (" loadbalance weighted w {\n  prefer 10.0.0.0/8\n }", 4, "unknown property 'prefer'"),
    (" loadbalance weighted w {\n  reload\n }", 4, "reload duration value is missing"),
    (" loadbalance weighted w {\n  reload often\n }", 4, "invalid reload duration 'often'"),
])
def test_bad_options_are_startup_errors(tmp_path, body, line, message):
    startup_error(tmp_path, body, line, message)


def test_bad_or_missing_weight_file_fails_start_up(tmp_path):
    missing = tmp_path / "absent"
    path = tmp_path / "Corefile"
    path.write_text(corefile(f" loadbalance weighted {missing} {{\n  reload 0\n }}"))
    with pytest.raises(CorefileError, match="weight file open error"):
        ServerThread("", path=str(path)).start()
    bad = tmp_path / "bad-weights"
    bad.write_text("www.example.org\n10.0.0.1 300\n")
    path.write_text(corefile(f" loadbalance weighted {bad}"))
    with pytest.raises(CorefileError, match='wrong weight value:"300"'):
        ServerThread("", path=str(path)).start()
