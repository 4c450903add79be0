"""metadata's client labels: the namespace and name of the pod that sent a query, over real sockets.

Pods get 127.0.0.x addresses and each query is sent from the client pod's own address, so
the server sees the source a pod would have.  The labels are read as CoreDNS documents:
through *template* (``{{ .Meta "kubernetes/client-namespace" }}``) and *rewrite*
(``edns0 local set 0xffee {kubernetes/client-namespace}``).  Wherever the pod is not
certain (no pod, a host-network pod, two pods with one address, pods not verified, not
synced yet) there is no label at all.
"""

from __future__ import annotations

import textwrap

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from pydns.testing.fakeapi import FakeApiServer
from tests.plugin_cases import CapturingUpstream
from tests.test_autopath import namespace, pod, wait_for

pytestmark = pytest.mark.timeout(120)

SHOP, OTHER, HOST, TWO_NAMESPACES, TWO_PODS, FINISHED, STRANGER = (
    "127.0.0.11", "127.0.0.12", "127.0.0.20", "127.0.0.30", "127.0.0.31", "127.0.0.40", "127.0.0.99")


def cluster():
    return [namespace("shop"), namespace("other"), namespace("kube-system"),
            pod("web-7f9c", "shop", SHOP), pod("db-0", "other", OTHER),
            pod("kube-proxy-x1", "kube-system", HOST, host_network=True),
            pod("old", "shop", TWO_NAMESPACES), pod("new", "other", TWO_NAMESPACES),
            pod("cart-old", "shop", TWO_PODS), pod("cart-new", "shop", TWO_PODS),
            pod("done", "shop", FINISHED, phase="Succeeded")]


# (client address, the TXT text "client-namespace/client-pod-name")
CLIENTS = [
    (SHOP, "shop/web-7f9c"),
    (OTHER, "other/db-0"),
    (HOST, "/"),  # host network: the node's address, every host-network pod's and the node's own
    (TWO_NAMESPACES, "/"),  # which namespace asked is unknowable
    (TWO_PODS, "/"),  # one namespace, but which pod asked is unknowable
    (FINISHED, "/"),  # a finished pod's address is free
    (STRANGER, "/"),  # no pod has it: a node, a cache forwarding for its pods
]

WHO = ('template IN TXT who.example {\n'
       '  answer "{{ .Name }} 0 IN TXT \\"{{ .Meta \\"kubernetes/client-namespace\\" }}/'
       '{{ .Meta \\"kubernetes/client-pod-name\\" }}\\""\n'
       ' }')


def corefile(source: str, pods: str = "verified", extra: str = "") -> str:
    return textwrap.dedent("""\
        .:0 {{
            bind 127.0.0.1
            metadata
        {who}
        {extra}
            kubernetes cluster.local {{
                {source}
                pods {pods}
            }}
        }}
        """).format(who=textwrap.indent(WHO, "    "), extra=extra, source=source, pods=pods)


def who(srv, source: str, tcp: bool = False) -> str:
    """The client labels the server gave a query from ``source``, as the template wrote them."""
    q = dns.message.make_query("who.example.", "TXT")
    fn = dns.query.tcp if tcp else dns.query.udp
    msg = fn(q, "127.0.0.1", port=srv.port, timeout=5, source=source)
    assert msg.rcode() == dns.rcode.NOERROR and len(msg.answer) == 1, msg
    return msg.answer[0][0].strings[0].decode()


@pytest.fixture
def manifests(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(cluster()))
    return f"manifests {path}"


@pytest.fixture(scope="module")
def from_api(tmp_path_factory):
    """A server reading cluster() from the fake API server through the official client."""
    from pydns.testing import ServerThread

    with FakeApiServer(cluster()) as api:
        srv = ServerThread(corefile(f"kubeconfig {api.kubeconfig(str(tmp_path_factory.mktemp('api') / 'kc'))}"))
        srv.start()
        yield srv
        srv.stop()


@pytest.mark.parametrize("client,text", CLIENTS)
def test_client_labels_from_manifests(serve, manifests, client, text):
    srv = serve(corefile(manifests))
    for tcp in (False, True):
        assert who(srv, client, tcp) == text


@pytest.mark.parametrize("client,text", CLIENTS)
def test_client_labels_from_the_api(from_api, client, text):
    assert who(from_api, client) == text


@pytest.mark.parametrize("mode", ["insecure", "disabled"])
def test_only_with_pods_verified(serve, manifests, mode):
    srv = serve(corefile(manifests, pods=mode))
    assert who(srv, SHOP) == "/"


def test_client_namespace_reaches_rewrite_edns0(serve, manifests):
    capture = CapturingUpstream()
    try:
        srv = serve(corefile(manifests, extra=(
            "    rewrite continue edns0 local set 0xffee {kubernetes/client-namespace}\n"
            "    rewrite edns0 local set 0xffef {kubernetes/client-pod-name}\n"
            f"    forward example.net 127.0.0.1:{capture.port}")))
        sent = {}
        for client in (SHOP, STRANGER, TWO_PODS):
            dns.query.udp(dns.message.make_query("a.example.net.", "A"), "127.0.0.1", port=srv.port,
                          timeout=5, source=client)
            sent[client] = {o.otype: o.to_wire() for o in capture.queries[-1].options}
    finally:
        capture.stop()
    assert sent[SHOP] == {0xFFEE: b"shop", 0xFFEF: b"web-7f9c"}
    assert 0xFFEE not in sent[STRANGER] and 0xFFEF not in sent[STRANGER]  # no label: no option
    assert 0xFFEE not in sent[TWO_PODS] and 0xFFEF not in sent[TWO_PODS]


def test_labels_follow_the_pods_watched(serve, tmp_path):
    """A new pod is named once watched; while a terminating pod and a new one of another
    namespace share an address nobody is; once the old one is gone the new one is."""
    with FakeApiServer(cluster()) as api:
        srv = serve(corefile(f"kubeconfig {api.kubeconfig(str(tmp_path / 'kc'))}"))
        late = "127.0.0.50"
        assert who(srv, late) == "/"
        api.create(pod("late", "shop", late))
        wait_for(lambda: who(srv, late) == "shop/late", "the new pod")

        api.update(pod("web-7f9c", "shop", SHOP, deleting=True))  # terminating: kept until gone
        api.create(pod("moved", "other", SHOP))
        wait_for(lambda: who(srv, SHOP) == "/", "the address shared by two namespaces")
        api.delete("Pod", "shop", "web-7f9c")
        wait_for(lambda: who(srv, SHOP) == "other/moved", "the old pod's deletion")
        api.delete("Pod", "other", "moved")
        wait_for(lambda: who(srv, SHOP) == "/", "the second deletion")


def test_nothing_before_the_pods_are_synced(serve, tmp_path):
    with FakeApiServer(cluster()) as api:
        api.stall(kind="Pod")
        srv = serve(corefile(f"kubeconfig {api.kubeconfig(str(tmp_path / 'kc'))}\n"
                             "                startup_timeout 0.5s"))
        assert who(srv, SHOP) == "/"
        api.unstall()
        wait_for(lambda: who(srv, SHOP) == "shop/web-7f9c", "the pods")
