"""autopath over real sockets: the search path walked server-side, from manifests and from the API.

Clients are pods: each query is sent from the pod's own address (pods get 127.0.0.x
addresses, all of them the loopback's), so the server sees the source a pod would have.
Every case where the client's namespace is not certain is checked against a server without
autopath that holds the same objects: the two answers must be the same.
"""

from __future__ import annotations

import re
import textwrap
import time
import urllib.request

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from pydns.corefile import CorefileError
from pydns.testing import ServerThread, free_port
from pydns.testing.fakeapi import FakeApiServer
from pydns.testing.upstream import Upstream

pytestmark = pytest.mark.timeout(120)

ZONE = "cluster.local"
SHOP_POD, OTHER_POD, HOST_POD, SHARED, STRANGER = "127.0.0.11", "127.0.0.12", "127.0.0.20", "127.0.0.30", "127.0.0.99"
EXTERNAL = {("api.example.com.", "A"): ["192.0.2.1"], ("mail.example.com.", "AAAA"): ["2001:db8::25"]}


# ---------------------------------------------------------------- objects


def namespace(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(name, ns, ip):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def pod(name, ns, ip, host_network=False, phase="Running", deleting=False):
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"hostNetwork": host_network, "containers": [{"name": "c", "image": "busybox"}]},
           "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return obj


def cluster():
    """shop and other, each with a service; a pod in each; a host-network pod; two pods of
    different namespaces with one address (one terminating, its address already reused)."""
    return [namespace("shop"), namespace("other"), namespace("kube-system"),
            service("web", "shop", "10.0.0.10"), service("db", "other", "10.0.0.20"),
            pod("client", "shop", SHOP_POD), pod("client", "other", OTHER_POD),
            pod("node-local-dns-x1", "kube-system", HOST_POD, host_network=True),
            pod("node-local-dns-x2", "kube-system", "127.0.0.1", host_network=True),  # the cache's node
            pod("old", "shop", SHARED), pod("new", "other", SHARED),
            pod("done", "shop", "127.0.0.40", phase="Succeeded")]


# ---------------------------------------------------------------- servers and questions


def corefile(source: str, upstream_port: int, autopath: str | None = "autopath @kubernetes",
             pods: str = "verified") -> str:
    return textwrap.dedent(f"""\
        .:0 {{
            bind 127.0.0.1
            {autopath or ''}
            kubernetes {ZONE} in-addr.arpa {{
                {source}
                pods {pods}
            }}
            forward . 127.0.0.1:{upstream_port}
        }}
        """)


@pytest.fixture
def upstream():
    up = Upstream(dict(EXTERNAL)).start()
    yield up
    up.stop()


def ask(srv: ServerThread, name: str, rdtype: str = "A", source: str = SHOP_POD, tcp: bool = False):
    q = dns.message.make_query(name, rdtype)
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, "127.0.0.1", port=srv.port, timeout=5, source=source)


def shown(msg) -> tuple:
    """A reply as comparable text: rcode, flags, sections (the SOA serial, a time, masked)."""
    def section(rrsets):
        return sorted(re.sub(r"(SOA \S+ \S+ )\d+", r"\1<serial>", rrset.to_text()) for rrset in rrsets)
    return (dns.rcode.to_text(msg.rcode()), dns.flags.to_text(msg.flags), section(msg.answer),
            section(msg.authority))


def records(msg) -> list[str]:
    """The answer section in order, as 'owner TYPE data'."""
    out = []
    for rrset in msg.answer:
        for rr in rrset:
            out.append(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rr.to_text()}")
    return out


def cname(owner: str, target: str) -> str:
    return f"{owner} CNAME {target}"


def svc(ns_name: str) -> str:
    return f"{ns_name}.svc.{ZONE}."


# ---------------------------------------------------------------- the walk, as CoreDNS does it

# (client, asked name, type, the answer section expected in order)
WALKS = [
    # an external name: CNAME from the first search step to the name that resolved
    (SHOP_POD, f"api.example.com.{svc('shop')}", "A",
     [cname(f"api.example.com.{svc('shop')}", "api.example.com."), "api.example.com. A 192.0.2.1"]),
    (SHOP_POD, f"mail.example.com.{svc('shop')}", "AAAA",
     [cname(f"mail.example.com.{svc('shop')}", "mail.example.com."), "mail.example.com. AAAA 2001:db8::25"]),
    # another namespace's service by its short name 'db.other'
    (SHOP_POD, f"db.other.{svc('shop')}", "A",
     [cname(f"db.other.{svc('shop')}", f"db.{svc('other')}"), f"db.{svc('other')} A 10.0.0.20"]),
    # the same namespace: the first step resolves, no CNAME
    (SHOP_POD, f"web.{svc('shop')}", "A", [f"web.{svc('shop')} A 10.0.0.10"]),
    # the pod of 'other' walks other's search path
    (OTHER_POD, f"api.example.com.{svc('other')}", "A",
     [cname(f"api.example.com.{svc('other')}", "api.example.com."), "api.example.com. A 192.0.2.1"]),
    (OTHER_POD, f"web.shop.{svc('other')}", "A",
     [cname(f"web.shop.{svc('other')}", f"web.{svc('shop')}"), f"web.{svc('shop')} A 10.0.0.10"]),
]

# (client, asked name, type): answered exactly as without autopath
AS_WITHOUT = [
    (SHOP_POD, f"nowhere.invalid.{svc('shop')}", "A"),  # every step NXDOMAIN: the client searches on
    (SHOP_POD, f"api.example.com.{svc('other')}", "A"),  # not the first step of shop's search
    (SHOP_POD, f"api.example.com.svc.{ZONE}.", "A"),
    (SHOP_POD, svc("shop"), "A"),  # the search element itself: nothing in front of it
    (SHOP_POD, "api.example.com.", "A"),
    (OTHER_POD, f"api.example.com.{svc('shop')}", "A"),
    (STRANGER, f"api.example.com.{svc('shop')}", "A"),  # no pod has the address: a cache, a node...
    (STRANGER, f"db.other.{svc('shop')}", "A"),
    (HOST_POD, f"api.example.com.{svc('kube-system')}", "A"),  # host network: the node's address
    (HOST_POD, f"db.other.{svc('kube-system')}", "A"),
    (SHARED, f"api.example.com.{svc('shop')}", "A"),  # two namespaces hold the address
    (SHARED, f"api.example.com.{svc('other')}", "A"),
    ("127.0.0.40", f"api.example.com.{svc('shop')}", "A"),  # a finished pod's address is free
]


@pytest.fixture
def manifest_pair(tmp_path, upstream, serve):
    """(with autopath, without autopath), both from the same manifests."""
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(cluster()))
    source = f"manifests {path}"
    return (serve(corefile(source, upstream.port)), serve(corefile(source, upstream.port, autopath=None)))


@pytest.mark.parametrize("client,name,rdtype,expected", WALKS)
def test_walk_from_manifests(manifest_pair, client, name, rdtype, expected):
    with_autopath, _ = manifest_pair
    for tcp in (False, True):
        msg = ask(with_autopath, name, rdtype, source=client, tcp=tcp)
        assert msg.rcode() == dns.rcode.NOERROR
        assert records(msg) == expected
        assert msg.question[0].name == dns.name.from_text(name)


def test_the_question_keeps_its_letter_case(manifest_pair):
    with_autopath, _ = manifest_pair
    for asked in (f"API.Example.com.{svc('shop')}", f"api.EXAMPLE.com.{svc('shop')}".replace("shop", "SHOP")):
        msg = ask(with_autopath, asked)
        assert msg.question[0].name.to_text() == asked
        assert records(msg)[0].lower() == cname(asked, "api.example.com.").lower()
        assert records(msg)[1].lower() == "api.example.com. a 192.0.2.1"  # names compare without case


@pytest.mark.parametrize("client,name,rdtype", AS_WITHOUT)
def test_uncertain_clients_get_the_answer_without_autopath_from_manifests(manifest_pair, client, name, rdtype):
    with_autopath, without = manifest_pair
    got = shown(ask(with_autopath, name, rdtype, source=client))
    assert got == shown(ask(without, name, rdtype, source=client))
    assert "CNAME" not in " ".join(got[2])


@pytest.mark.parametrize("cache_known", [True, False])
def test_client_behind_a_node_local_cache(tmp_path, upstream, serve, cache_known):
    """A pod asks a node-local cache (a host-network pod, or nothing the server knows), which
    forwards from its own address: the pod gets what it would get without autopath."""
    objects = [o for o in cluster() if cache_known or o["metadata"]["name"] != "node-local-dns-x2"]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    source = f"manifests {path}"
    caches = []
    for line in ("autopath @kubernetes", None):
        behind = serve(corefile(source, upstream.port, autopath=line))
        caches.append(serve(f".:0 {{\n    bind 127.0.0.1\n    cache 30\n    forward . 127.0.0.1:{behind.port}\n}}\n"))
    # the last: the cache's own namespace's first search step, which the pod may well ask for
    for name in (f"api.example.com.{svc('shop')}", f"db.other.{svc('shop')}", f"web.{svc('shop')}",
                 f"api.example.com.{svc('kube-system')}"):
        got, want = (shown(ask(cache, name, source=SHOP_POD)) for cache in caches)
        assert got == want
        assert "CNAME" not in " ".join(got[2])


def test_a_failing_step_gives_the_answer_to_the_question_asked(manifest_pair, upstream):
    with_autopath, without = manifest_pair
    name = f"api.example.com.{svc('shop')}"
    upstream.mode = "servfail"
    assert shown(ask(with_autopath, name)) == shown(ask(without, name))
    assert ask(with_autopath, name).rcode() == dns.rcode.NXDOMAIN
    upstream.mode = "ok"
    assert records(ask(with_autopath, name))[0] == cname(name, "api.example.com.")


def test_the_walk_asks_each_step_once_in_search_order(manifest_pair, upstream):
    with_autopath, _ = manifest_pair
    upstream.reset()
    ask(with_autopath, f"nothing.example.net.{svc('shop')}")
    asked = [name for name, rdtype, _proto in upstream.queries if rdtype == "A"]
    # the cluster steps are the kubernetes plugin's; the rest goes upstream, the bare name last
    assert asked[-1] == "nothing.example.net."
    assert not any(name.endswith(f"{ZONE}.") for name in asked)


def test_pods_not_verified_leave_queries_alone(tmp_path, upstream, serve, caplog):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(cluster()))
    name = f"api.example.com.{svc('shop')}"
    for mode in ("insecure", "disabled"):
        caplog.clear()
        srv = serve(corefile(f"manifests {path}", upstream.port, pods=mode))
        assert "needs 'pods verified'" in caplog.text
        assert ask(srv, name).rcode() == dns.rcode.NXDOMAIN


def test_zones_limit_what_autopath_looks_at(tmp_path, upstream, serve):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(cluster()))
    srv = serve(corefile(f"manifests {path}", upstream.port, autopath="autopath example.org @kubernetes"))
    assert ask(srv, f"api.example.com.{svc('shop')}").rcode() == dns.rcode.NXDOMAIN
    srv = serve(corefile(f"manifests {path}", upstream.port, autopath=f"autopath {ZONE} @kubernetes"))
    assert records(ask(srv, f"api.example.com.{svc('shop')}"))[-1] == "api.example.com. A 192.0.2.1"


def test_resolv_conf_search_path_for_every_client(tmp_path, upstream, serve):
    (tmp_path / "resolv.conf").write_text("nameserver 10.0.0.1\ndomain ignored.test\nsearch corp.test Example.NET\n"
                                          "options ndots:5\n")
    upstream.set("intranet.example.net.", "A", ["192.0.2.7"])
    srv = serve(textwrap.dedent(f"""\
        .:0 {{
            bind 127.0.0.1
            autopath {tmp_path}/resolv.conf
            forward . 127.0.0.1:{upstream.port}
        }}
        """))
    for client in (STRANGER, SHOP_POD):
        assert records(ask(srv, "intranet.corp.test.", source=client)) == [
            cname("intranet.corp.test.", "intranet.example.net."), "intranet.example.net. A 192.0.2.7"]
    assert ask(srv, "intranet.example.net.").rcode() == dns.rcode.NOERROR
    assert ask(srv, "nothing.corp.test.").rcode() == dns.rcode.NXDOMAIN


def test_success_metric(tmp_path, upstream, serve):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(cluster()))
    port = free_port()
    text = corefile(f"manifests {path}", upstream.port).replace("bind 127.0.0.1",
                                                                 f"bind 127.0.0.1\n    prometheus 127.0.0.1:{port}")
    srv = serve(text)
    # the listener as configured, as every query metric labels it; counters live as long as the process
    label = 'coredns_autopath_success_total{server="dns://127.0.0.1:0"}'

    def value():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(label):
                    return float(line.split()[-1])
        return 0.0

    before = value()
    ask(srv, f"api.example.com.{svc('shop')}")  # walked
    ask(srv, f"web.{svc('shop')}")  # the first step resolved: counted, as in CoreDNS
    ask(srv, f"api.example.com.{svc('shop')}", source=STRANGER)  # not autopathed
    ask(srv, f"nowhere.invalid.{svc('shop')}")  # walked in vain
    assert value() - before == 2.0


# ---------------------------------------------------------------- setup errors


@pytest.mark.parametrize("line,message", [
    ("autopath", "plugin/autopath: no resolv-conf specified"),
    ("autopath kubernetes", 'plugin/autopath: failed to parse "kubernetes"'),
    ('autopath ""', 'plugin/autopath: failed to parse ""'),
    ("autopath @forward", "plugin/autopath: forward does not implement the AutoPather interface"),
    ("autopath @kubernetes {\n        fallthrough\n    }", "plugin/autopath: unknown property 'fallthrough'"),
])
def test_setup_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "Corefile"
    path.write_text(f".:0 {{\n    bind 127.0.0.1\n    {line}\n    forward . 127.0.0.1:9\n}}\n")
    with pytest.raises(CorefileError) as err:
        ServerThread("", path=str(path)).start()
    where = 4 if "{" in line else 3
    assert str(err.value).startswith(f"{path}:{where}: {message}")


# ---------------------------------------------------------------- from the API, through the official client


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pod_known(srv, ns, ip) -> bool:
    """Does the server know a pod of ``ns`` with ``ip`` (``pods verified`` answers its name)?"""
    return ask(srv, f"{ip.replace('.', '-')}.{ns}.pod.{ZONE}.", source=STRANGER).rcode() == dns.rcode.NOERROR


@pytest.fixture
def api_pair(tmp_path, upstream, serve):
    """A fake API server holding cluster(), and (with autopath, without autopath) reading it."""
    with FakeApiServer(cluster()) as api:
        kubeconfig = api.kubeconfig(str(tmp_path / "kubeconfig"))
        source = f"kubeconfig {kubeconfig}"
        yield api, serve(corefile(source, upstream.port)), serve(corefile(source, upstream.port, autopath=None))


@pytest.fixture(scope="module")
def api_tables(tmp_path_factory):
    """As api_pair, once for the tables, which only read (each API server adds metric series)."""
    up = Upstream(dict(EXTERNAL)).start()
    with FakeApiServer(cluster()) as api:
        source = f"kubeconfig {api.kubeconfig(str(tmp_path_factory.mktemp('api') / 'kubeconfig'))}"
        pair = [ServerThread(corefile(source, up.port)).start(),
                ServerThread(corefile(source, up.port, autopath=None)).start()]
        yield pair
        for srv in pair:
            srv.stop()
    up.stop()


@pytest.mark.parametrize("client,name,rdtype,expected", WALKS)
def test_walk_from_the_api(api_tables, client, name, rdtype, expected):
    with_autopath, _ = api_tables
    msg = ask(with_autopath, name, rdtype, source=client)
    assert records(msg) == expected


@pytest.mark.parametrize("client,name,rdtype", AS_WITHOUT)
def test_uncertain_clients_get_the_answer_without_autopath_from_the_api(api_tables, client, name, rdtype):
    with_autopath, without = api_tables
    assert shown(ask(with_autopath, name, rdtype, source=client)) == shown(ask(without, name, rdtype, source=client))


def test_nothing_is_certain_before_the_first_sync(tmp_path, upstream, serve):
    """Pods not listed yet (the server started on its startup_timeout): answered as without
    autopath, whatever else is known; walked once the pods are in."""
    with FakeApiServer(cluster()) as api:
        api.stall(kind="Pod")
        source = f"kubeconfig {api.kubeconfig(str(tmp_path / 'kubeconfig'))}\n                startup_timeout 0.5s"
        with_autopath = serve(corefile(source, upstream.port))
        without = serve(corefile(source, upstream.port, autopath=None))
        for name in (f"api.example.com.{svc('shop')}", f"db.other.{svc('shop')}", f"web.{svc('shop')}"):
            assert shown(ask(with_autopath, name)) == shown(ask(without, name))
        api.unstall()
        name = f"api.example.com.{svc('shop')}"
        wait_for(lambda: records(ask(with_autopath, name)) == [cname(name, "api.example.com."),
                                                               "api.example.com. A 192.0.2.1"], "the walk")


def test_pod_unknown_until_watched_then_walked(api_pair):
    api, with_autopath, without = api_pair
    client = "127.0.0.50"
    name = f"api.example.com.{svc('shop')}"
    assert shown(ask(with_autopath, name, source=client)) == shown(ask(without, name, source=client))
    api.create(pod("late", "shop", client))
    wait_for(lambda: pod_known(with_autopath, "shop", client), "the new pod")
    assert records(ask(with_autopath, name, source=client))[0] == cname(name, "api.example.com.")


def test_pod_moved_namespace(api_pair):
    """A pod deleted and its address given to a pod of another namespace: while both exist the
    address is nobody's; once the old one is gone it is the new namespace's; never the old one's."""
    api, with_autopath, without = api_pair
    shop_name, other_name = f"api.example.com.{svc('shop')}", f"api.example.com.{svc('other')}"
    assert records(ask(with_autopath, shop_name))[0] == cname(shop_name, "api.example.com.")

    api.update(pod("client", "shop", SHOP_POD, deleting=True))  # terminating: kept until gone
    api.create(pod("moved", "other", SHOP_POD))
    wait_for(lambda: pod_known(with_autopath, "other", SHOP_POD), "the pod in its new namespace")
    for name in (shop_name, other_name):
        assert shown(ask(with_autopath, name)) == shown(ask(without, name))

    api.delete("Pod", "shop", "client")
    wait_for(lambda: not pod_known(with_autopath, "shop", SHOP_POD), "the old pod's deletion")
    assert shown(ask(with_autopath, shop_name)) == shown(ask(without, shop_name))
    assert records(ask(with_autopath, other_name))[0] == cname(other_name, "api.example.com.")

    api.delete("Pod", "other", "moved")  # deleted, nothing new: unknown again
    wait_for(lambda: not pod_known(with_autopath, "other", SHOP_POD), "the second deletion")
    assert shown(ask(with_autopath, other_name)) == shown(ask(without, other_name))


def test_replicas_fed_the_same_events_answer_identically(tmp_path, upstream, serve):
    """Two replicas watch one API server; a third reads the end state at once from a second API
    server that got the objects in the reverse order.  After each step all three answer alike."""
    steps = [
        ("create", pod("a", "shop", "127.0.0.60")),
        ("create", pod("b", "other", "127.0.0.60")),  # two namespaces: nobody's
        ("create", pod("h", "kube-system", "127.0.0.61", host_network=True)),
        ("create", pod("c", "other", "127.0.0.61")),  # a host-network address stays the node's
        ("delete", pod("a", "shop", "127.0.0.60")),  # the address is other's now
        ("create", pod("d", "shop", "127.0.0.62")),
    ]
    questions = [(client, f"api.example.com.{svc(ns)}") for client in ("127.0.0.60", "127.0.0.61", "127.0.0.62")
                 for ns in ("shop", "other", "kube-system")]
    with FakeApiServer(cluster()) as api:
        replicas = [serve(corefile(f"kubeconfig {api.kubeconfig(str(tmp_path / f'kc{i}'))}", upstream.port))
                    for i in range(2)]
        state = {}
        for step, (verb, obj) in enumerate(steps):
            meta = obj["metadata"]
            if verb == "create":
                api.create(obj)
                state[(meta["namespace"], meta["name"])] = obj
            else:
                api.delete("Pod", meta["namespace"], meta["name"])
                del state[(meta["namespace"], meta["name"])]
            expected = {(ns, o["status"]["podIP"]) for (ns, _), o in state.items()}
            probes = {(o["metadata"]["namespace"], o["status"]["podIP"]) for _, o in steps}
            for srv in replicas:
                wait_for(lambda srv=srv: all(pod_known(srv, ns, ip) == ((ns, ip) in expected) for ns, ip in probes),
                         f"step {step} on every replica")
            with FakeApiServer(cluster() + list(reversed(list(state.values())))) as fresh:
                late = serve(corefile(f"kubeconfig {fresh.kubeconfig(str(tmp_path / f'late{step}'))}",
                                        upstream.port))
                answers = [[shown(ask(srv, name, source=client)) for client, name in questions]
                           for srv in (*replicas, late)]
                late.stop()
            assert answers[0] == answers[1] == answers[2], f"replicas differ after step {step}"
        final = dict(zip(questions, answers[0]))
        assert "CNAME" in " ".join(final[("127.0.0.60", f"api.example.com.{svc('other')}")][2])
        assert "CNAME" in " ".join(final[("127.0.0.62", f"api.example.com.{svc('shop')}")][2])
        assert "CNAME" not in " ".join(final[("127.0.0.61", f"api.example.com.{svc('other')}")][2])
