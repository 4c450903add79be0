"""metadata's client labels: the namespace, name and labels of the pod that sent a query, over real sockets.

Pods get 127.0.0.x addresses and each query is sent from the client pod's own address, so
the server sees the source a pod would have.  The labels are read as CoreDNS documents:
through *template* (``{{ .Meta "kubernetes/client-namespace" }}``,
``{{ .Meta "kubernetes/client-label/app" }}``) and *rewrite* (``edns0 local set 0xffee
{kubernetes/client-namespace}``).  Wherever the pod is not certain (no pod, a host-network
pod, two pods with one address, pods not verified, not synced yet) there is no label at all.
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


WEB_LABELS = {"app": "web", "app.kubernetes.io/name": "shop-web", "pod-template-hash": "7f9c"}


def labelled(obj: dict, labels: dict) -> dict:
    obj["metadata"]["labels"] = dict(labels)
    return obj


def cluster():
    return [namespace("shop"), namespace("other"), namespace("kube-system"),
            labelled(pod("web-7f9c", "shop", SHOP), WEB_LABELS), labelled(pod("db-0", "other", OTHER), {"app": "db"}),
            labelled(pod("kube-proxy-x1", "kube-system", HOST, host_network=True), {"app": "kube-proxy"}),
            pod("old", "shop", TWO_NAMESPACES), pod("new", "other", TWO_NAMESPACES),
            labelled(pod("cart-old", "shop", TWO_PODS), {"app": "cart"}),
            labelled(pod("cart-new", "shop", TWO_PODS), {"app": "cart"}),
            labelled(pod("done", "shop", FINISHED, phase="Succeeded"), {"app": "batch"})]


# (client address, the TXT text "client-namespace/client-pod-name", the labels.example text)
CLIENTS = [
    (SHOP, "shop/web-7f9c", "web|shop-web|7f9c|"),
    (OTHER, "other/db-0", "db|||"),
    # host network: the node's address, every host-network pod's and the node's own
    (HOST, "/", "|||"),
    (TWO_NAMESPACES, "/", "|||"),  # which namespace asked is unknowable
    (TWO_PODS, "/", "|||"),  # one namespace, both pods app=cart, but which pod asked is unknowable
    (FINISHED, "/", "|||"),  # a finished pod's address is free
    (STRANGER, "/", "|||"),  # no pod has it: a node, a cache forwarding for its pods
]

WHO = ('template IN TXT who.example {\n'
       '  answer "{{ .Name }} 0 IN TXT \\"{{ .Meta \\"kubernetes/client-namespace\\" }}/'
       '{{ .Meta \\"kubernetes/client-pod-name\\" }}\\""\n'
       ' }')
# The labels, as "app|app.kubernetes.io/name|pod-template-hash|a label the pod lacks"
LABELS = ('template IN TXT labels.example {\n'
          '  answer "{{ .Name }} 0 IN TXT \\"{{ .Meta \\"kubernetes/client-label/app\\" }}|'
          '{{ .Meta \\"kubernetes/client-label/app.kubernetes.io/name\\" }}|'
          '{{ .Meta \\"kubernetes/client-label/pod-template-hash\\" }}|'
          '{{ .Meta \\"kubernetes/client-label/tier\\" }}\\""\n'
          ' }')


def corefile(source: str, pods: str = "verified", extra: str = "") -> str:
    return textwrap.dedent("""\
        .:0 {{
            bind 127.0.0.1
            metadata
        {who}
        {labels}
        {extra}
            kubernetes cluster.local {{
                {source}
                pods {pods}
            }}
        }}
        """).format(who=textwrap.indent(WHO, "    "), labels=textwrap.indent(LABELS, "    "), extra=extra,
                   source=source, pods=pods)


def who(srv, source: str, tcp: bool = False, name: str = "who.example.") -> str:
    """The client labels the server gave a query from ``source``, as the template wrote them."""
    q = dns.message.make_query(name, "TXT")
    fn = dns.query.tcp if tcp else dns.query.udp
    msg = fn(q, "127.0.0.1", port=srv.port, timeout=5, source=source)
    assert msg.rcode() == dns.rcode.NOERROR and len(msg.answer) == 1, msg
    return msg.answer[0][0].strings[0].decode()


def pod_labels(srv, source: str, tcp: bool = False) -> str:
    """The pod labels the server gave a query from ``source`` (see LABELS)."""
    return who(srv, source, tcp, name="labels.example.")


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


@pytest.mark.parametrize("client,text,labels", CLIENTS)
def test_client_labels_from_manifests(serve, manifests, client, text, labels):
    srv = serve(corefile(manifests))
    for tcp in (False, True):
        assert who(srv, client, tcp) == text
        assert pod_labels(srv, client, tcp) == labels


@pytest.mark.parametrize("client,text,labels", CLIENTS)
def test_client_labels_from_the_api(from_api, client, text, labels):
    for tcp in (False, True):
        assert who(from_api, client, tcp) == text
        assert pod_labels(from_api, client, tcp) == labels


@pytest.mark.parametrize("mode", ["insecure", "disabled"])
def test_only_with_pods_verified(serve, manifests, mode):
    srv = serve(corefile(manifests, pods=mode))
    assert who(srv, SHOP) == "/"
    assert pod_labels(srv, SHOP) == "|||"


def options_sent(serve, manifests, rules: list[str], clients) -> dict:
    """The EDNS0 options (code -> data) of the query forwarded for each client, with ``rules``."""
    capture = CapturingUpstream()
    try:
        srv = serve(corefile(manifests, extra="".join(f"    {rule}\n" for rule in rules)
                             + f"    forward example.net 127.0.0.1:{capture.port}"))
        sent = {}
        for client in clients:
            dns.query.udp(dns.message.make_query(f"{client}.example.net.", "A"), "127.0.0.1", port=srv.port,
                          timeout=5, source=client)
            sent[client] = {o.otype: o.to_wire() for o in capture.queries[-1].options}
    finally:
        capture.stop()
    return sent


def test_client_namespace_reaches_rewrite_edns0(serve, manifests):
    sent = options_sent(serve, manifests, ["rewrite continue edns0 local set 0xffee {kubernetes/client-namespace}",
                                           "rewrite edns0 local set 0xffef {kubernetes/client-pod-name}"],
                        (SHOP, STRANGER, TWO_PODS))
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


# ---------------------------------------------------------------- kubernetes/client-label/KEY


def test_pod_labels_reach_rewrite_edns0(serve, manifests):
    """``{kubernetes/client-label/KEY}`` is the label KEY whole, its ``/`` and dots included."""
    sent = options_sent(serve, manifests, [
        "rewrite continue edns0 local set 0xffee {kubernetes/client-label/app}",
        "rewrite continue edns0 local set 0xffef {kubernetes/client-label/app.kubernetes.io/name}",
        "rewrite edns0 local set 0xfff0 {kubernetes/client-label/tier}"], (SHOP, OTHER, HOST, TWO_PODS, STRANGER))
    assert sent[SHOP] == {0xFFEE: b"web", 0xFFEF: b"shop-web"}  # no tier label: no option
    assert sent[OTHER] == {0xFFEE: b"db"}
    for client in (HOST, TWO_PODS, STRANGER):
        assert not {0xFFEE, 0xFFEF, 0xFFF0} & set(sent[client]), client


def test_pod_labels_follow_watch_events(serve, tmp_path):
    """A label added, changed or removed on a Pod watch event reaches the next query; a pod
    that moves to the host's network, or whose address another pod takes too, has none."""
    with FakeApiServer(cluster()) as api:
        srv = serve(corefile(f"kubeconfig {api.kubeconfig(str(tmp_path / 'kc'))}"))
        assert pod_labels(srv, SHOP) == "web|shop-web|7f9c|"
        api.update(labelled(pod("web-7f9c", "shop", SHOP), {**WEB_LABELS, "app": "web2", "tier": "front"}))
        wait_for(lambda: pod_labels(srv, SHOP) == "web2|shop-web|7f9c|front", "the changed labels")
        api.update(labelled(pod("web-7f9c", "shop", SHOP), {"tier": "front"}))
        wait_for(lambda: pod_labels(srv, SHOP) == "|||front", "the removed labels")
        assert who(srv, SHOP) == "shop/web-7f9c"

        late = "127.0.0.50"
        api.create(labelled(pod("late", "shop", late), {"app": "late"}))
        wait_for(lambda: pod_labels(srv, late) == "late|||", "the new pod")
        api.create(labelled(pod("twin", "shop", late), {"app": "twin"}))
        wait_for(lambda: pod_labels(srv, late) == "|||", "the address held twice")
        api.delete("Pod", "shop", "late")
        wait_for(lambda: pod_labels(srv, late) == "twin|||", "the first holder gone")
        api.update(labelled(pod("twin", "shop", late, host_network=True), {"app": "twin"}))
        wait_for(lambda: pod_labels(srv, late) == "|||", "the pod in the host's network")


def test_pod_labels_follow_manifest_edits(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(cluster()))
    srv = serve(corefile(f"manifests {path}"))
    assert pod_labels(srv, SHOP) == "web|shop-web|7f9c|"
    objects = cluster()
    objects[3] = labelled(pod("web-7f9c", "shop", SHOP), {**WEB_LABELS, "pod-template-hash": "8a1b", "tier": "x"})
    path.write_text(yaml.safe_dump_all(objects))
    wait_for(lambda: pod_labels(srv, SHOP) == "web|shop-web|8a1b|x", "the edited manifest")
    assert pod_labels(srv, OTHER) == "db|||"


def test_pods_share_label_sets_and_unused_sets_go():
    """The replicas of a workload hold one label set; a rollout's new hash replaces the old set,
    which goes once no pod holds it (the sets kept never outnumber those in use)."""
    from pydns.plugins.kubernetes.index import Index

    index = Index(["cluster.local."], pods="verified")
    store = index.store

    def rollout(template_hash: str, replicas: int = 3):
        return [labelled(pod(f"web-{template_hash}-{i}", "shop", f"10.0.0.{i + 1}"),
                         {**WEB_LABELS, "pod-template-hash": template_hash}) for i in range(replicas)]

    index.replace("Pod", rollout("aaaa") + [labelled(pod("db-0", "other", "10.0.1.1"), {"app": "db"})])
    web = [p for key, p in store.pods.items() if key[0] == "shop"]
    assert len(store.label_sets) == 2 and all(p.labels is web[0].labels for p in web)
    for template_hash in ("bbbb", "cccc", "dddd"):
        for obj in rollout(template_hash):  # the new pods come while the old ones are still there
            index.upsert("Pod", obj)
        assert len(store.label_sets) == 3
        for key in [key for key in store.pods if key[0] == "shop" and template_hash not in key[1]]:
            index.delete("Pod", pod(key[1], "shop", "10.0.0.1"))
        assert len(store.label_sets) == 2
    index.upsert("Pod", labelled(pod("db-0", "other", "10.0.1.1"), {"app": "db", "tier": "data"}))
    index.delete("Pod", pod("web-dddd-0", "shop", "10.0.0.1"))
    assert len(store.label_sets) == 2  # db's old set went, web's is still held by two pods
    index.replace("Pod", [])
    assert len(store.label_sets) == 0


def test_log_writes_metadata_labels(serve, tmp_path, caplog):
    """log's ``{/LABEL}``: the label's value, ``-`` when the query has none; a value cannot forge a line."""
    objects = cluster()
    objects[4] = labelled(pod("db-0", "other", OTHER), {"app": "db\nforged line"})  # a manifest may hold anything
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    caplog.set_level("INFO", logger="querylog")
    srv = serve(corefile(f"manifests {path}", extra=(
        '    log . "{remote} {/kubernetes/client-pod-name} {/kubernetes/client-label/app.kubernetes.io/name} '
        '{/kubernetes/client-label/app}"')))
    for client in (SHOP, OTHER, STRANGER):
        who(srv, client)
    lines = [r.getMessage() for r in caplog.records if r.name == "querylog"]
    assert lines == [f"{SHOP} web-7f9c shop-web web", f"{OTHER} db-0 - db\\010forged line", f"{STRANGER} - - -"]
