"""The cluster deployment in deploy/: valid Kubernetes objects that replace CoreDNS in place.

Every manifest is validated offline against the Kubernetes OpenAPI schemas (strict: an
unknown or misspelt field fails) with kubernetes-validate.  The rest holds the manifests
to what a drop-in needs: CoreDNS's names, labels and ports, probes that ask what the
Corefile serves, a Corefile pydns accepts, and RBAC that grants exactly the API calls the
code makes -- found both by reading the code and by running pydns against a fake API
server and recording what it asks for.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
import time
from pathlib import Path

import kubernetes.client
import kubernetes_validate
import pytest
import yaml

from pydns.corefile import Directive, parse
from pydns.testing import ServerThread, free_port
from pydns.testing.fakeapi import FakeApiServer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "base"

# The oldest Kubernetes these manifests are meant for, and the newest schemas at hand.
SCHEMA_VERSIONS = ("1.29", kubernetes_validate.latest_version())

# kubeadm's Corefile (cmd/kubeadm/app/phases/addons/dns/manifests.go, DNS domain
# cluster.local): the ConfigMap must say the same thing.
KUBEADM_COREFILE = """
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""


def load_manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


MANIFESTS = load_manifests()


def obj(kind: str, name: str) -> dict:
    found = [d for _, d in MANIFESTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in deploy/"
    return found[0]


def pod_spec() -> dict:
    return obj("Deployment", "coredns")["spec"]["template"]["spec"]


def dns_container() -> dict:
    (container,) = [c for c in pod_spec()["containers"] if c["name"] == "coredns"]
    return container


def corefile_text() -> str:
    return obj("ConfigMap", "coredns")["data"]["Corefile"]


def shape(directives: list[Directive] | None):
    """A parsed Corefile block as plain data, for comparison."""
    if directives is None:
        return None
    return [(str(d.name), [str(a) for a in d.args], shape(d.block)) for d in directives]


def http_port(directive_name: str, default: int) -> int:
    """The port a Corefile's health/ready/prometheus listens on."""
    (block,) = parse(corefile_text())
    (d,) = [d for d in block.directives if d.name == directive_name]
    address = str(d.args[0]) if d.args else f":{default}"
    return int(address.rpartition(":")[2])


# ---------------------------------------------------------------- schemas and kustomize


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("name,doc", MANIFESTS, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in MANIFESTS])
def test_manifest_is_valid_against_the_kubernetes_schema(name, doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_kustomization_lists_every_file_and_only_files_that_exist():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_kustomize_images_entry_names_the_pydns_image():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (entry,) = [i for i in kustomization["images"] if i["name"] == "pydns"]
    image = dns_container()["image"]
    # kustomize matches on the name without tag or digest.
    assert re.split(r"[:@]", image)[0] == entry["name"]
    assert f"{entry.get('newName', entry['name'])}:{entry['newTag']}" == "pydns:0.1.0"


def test_objects_are_unique_and_namespaced_in_kube_system():
    seen = set()
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for name, doc in MANIFESTS:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{key} defined twice"
        seen.add(key)
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"].get("namespace") == "kube-system", f"{name}: {key}"


# ---------------------------------------------------------------- the Corefile


def test_configmap_holds_kubeadms_corefile():
    (ours,) = parse(corefile_text())
    (kubeadm,) = parse(KUBEADM_COREFILE)
    assert [str(k) for k in ours.keys] == [str(k) for k in kubeadm.keys]
    assert shape(ours.directives) == shape(kubeadm.directives)


# Outside a pod there is no service account, so the one thing -validate cannot check as
# deployed is the in-cluster login: the tests hand the kubernetes plugin this kubeconfig
# instead (it is read, never dialled, by -validate).
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: cluster
    cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
  - name: coredns
    user: {token: "not-a-real-token"}
contexts:
  - name: cluster
    context: {cluster: cluster, user: coredns}
current-context: cluster
"""


def corefile_outside_the_cluster(tmp_path: Path) -> Path:
    """The ConfigMap's Corefile, its kubernetes block given a kubeconfig; written to tmp_path."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    (block,) = parse(corefile_text())
    (k8s,) = [d for d in block.directives if d.name == "kubernetes"]
    assert k8s.block is not None and not [o for o in k8s.block if o.name in ("kubeconfig", "endpoint")]
    lines = corefile_text().splitlines()
    lines.insert(k8s.line, f"       kubeconfig {kubeconfig}")  # just inside the block's brace
    path = tmp_path / "Corefile"
    path.write_text("\n".join(lines) + "\n")
    # Nothing else changed.
    expected = shape(block.directives)
    at = [d.name for d in block.directives].index("kubernetes")
    expected[at] = ("kubernetes", expected[at][1], [("kubeconfig", [str(kubeconfig)], None)] + expected[at][2])
    (changed,) = parse(path.read_text())
    assert shape(changed.directives) == expected
    return path


def test_configmap_corefile_passes_pydns_validate(tmp_path):
    path = corefile_outside_the_cluster(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pydns", "-validate", "-conf", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{path}: OK" in proc.stdout


# ---------------------------------------------------------------- Service


def test_service_keeps_coredns_name_labels_annotations_and_ports():
    svc = obj("Service", "kube-dns")
    meta = svc["metadata"]
    assert meta["namespace"] == "kube-system"
    assert meta["labels"]["k8s-app"] == "kube-dns"
    assert meta["labels"]["kubernetes.io/name"] == "CoreDNS"
    assert meta["annotations"] == {"prometheus.io/port": str(http_port("prometheus", 9153)),
                                   "prometheus.io/scrape": "true"}
    ports = {(p["name"], p["port"], p["protocol"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {("dns", 53, "UDP", 53), ("dns-tcp", 53, "TCP", 53), ("metrics", 9153, "TCP", 9153)}
    assert svc["spec"]["selector"] == {"k8s-app": "kube-dns"}
    # Left to the existing Service (kubectl apply keeps it): no address hard-coded here.
    assert "clusterIP" not in svc["spec"] and "clusterIPs" not in svc["spec"]


def test_service_selects_the_dns_pods_and_their_ports():
    svc = obj("Service", "kube-dns")
    labels = obj("Deployment", "coredns")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    container_ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in dns_container()["ports"]}
    for port in svc["spec"]["ports"]:
        assert (port["targetPort"], port["protocol"]) in container_ports


# ---------------------------------------------------------------- Deployment


def test_deployment_replaces_coredns_in_place():
    dep = obj("Deployment", "coredns")
    # Name, selector (immutable), container name and volume name as kubeadm has them, so
    # an apply over kubeadm's Deployment rolls it instead of failing or adding a container.
    assert dep["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert dep["spec"]["selector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert dep["spec"]["replicas"] == 2
    assert [c["name"] for c in pod_spec()["containers"]] == ["coredns"]
    assert [v["name"] for v in pod_spec()["volumes"]] == ["config-volume"]
    spec = pod_spec()
    assert spec["serviceAccountName"] == "coredns"
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["dnsPolicy"] == "Default"  # forward . /etc/resolv.conf must not point back at itself
    tolerations = {(t["key"], t.get("operator", "Equal"), t.get("effect")) for t in spec["tolerations"]}
    assert ("CriticalAddonsOnly", "Exists", None) in tolerations
    assert ("node-role.kubernetes.io/control-plane", "Equal", "NoSchedule") in tolerations


def test_replicas_avoid_sharing_a_node():
    terms = pod_spec()["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    (term,) = terms
    selector = term["podAffinityTerm"]["labelSelector"]
    assert selector["matchExpressions"] == [{"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_deployment_is_hardened_and_serves_port_53_without_capabilities():
    pod = pod_spec()["securityContext"]
    ctr = dns_container()["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctr["readOnlyRootFilesystem"] is True
    assert ctr["allowPrivilegeEscalation"] is False
    assert ctr["capabilities"] == {"drop": ["ALL"]}
    sysctls = {s["name"]: s["value"] for s in pod["sysctls"]}
    dns_ports = {p["containerPort"] for p in dns_container()["ports"]}
    assert int(sysctls["net.ipv4.ip_unprivileged_port_start"]) <= min(dns_ports)
    assert "hostNetwork" not in pod_spec()  # the sysctl is per network namespace


def test_corefile_is_mounted_where_the_image_reads_it():
    (mount,) = dns_container()["volumeMounts"]
    assert mount == {"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}
    (volume,) = pod_spec()["volumes"]
    assert volume["configMap"] == {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}
    assert dns_container()["args"] == ["-conf", "/etc/coredns/Corefile"]


def _probe_port(probe: dict) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (named,) = [p["containerPort"] for p in dns_container()["ports"] if p.get("name") == port]
    return named


def test_probes_ask_the_corefiles_health_and_ready_endpoints():
    container = dns_container()
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert live["httpGet"]["path"] == "/health" and live["httpGet"].get("scheme", "HTTP") == "HTTP"
    assert ready["httpGet"]["path"] == "/ready" and ready["httpGet"].get("scheme", "HTTP") == "HTTP"
    assert _probe_port(live) == http_port("health", 8080)
    assert _probe_port(ready) == http_port("ready", 8181)
    metrics = [p for p in container["ports"] if p.get("name") == "metrics"]
    assert [p["containerPort"] for p in metrics] == [http_port("prometheus", 9153)]


def test_resources_are_the_ones_docs_deploy_explains():
    resources = dns_container()["resources"]
    assert "cpu" not in resources.get("limits", {})  # throttling would show as DNS latency
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for value in (resources["requests"]["memory"], resources["limits"]["memory"], resources["requests"]["cpu"]):
        assert f"`{value}`" in docs, f"docs/deploy.md does not explain {value}"


def test_pod_disruption_budget_keeps_all_but_one_dns_pod():
    pdb = obj("PodDisruptionBudget", "coredns")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


# ---------------------------------------------------------------- autoscaler


def test_autoscaler_scales_the_dns_deployment_in_linear_mode():
    import json

    dep = obj("Deployment", "coredns-autoscaler")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    args = dict(a.lstrip("-").split("=", 1) for a in container["command"][1:])
    assert args["target"] == "deployment/coredns"
    assert args["namespace"] == "kube-system"
    params = json.loads(obj("ConfigMap", args["configmap"])["data"]["linear"])
    assert params["min"] >= 2 and params["coresPerReplica"] > 0 and params["nodesPerReplica"] > 0
    assert params["preventSinglePointFailure"] is True
    # Its RBAC names exactly the target and the ConfigMap.
    role = obj("Role", "coredns-autoscaler")
    named = {(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["resourceNames"])) for r in role["rules"]}
    assert named == {(("apps",), ("deployments/scale",), ("coredns",)),
                     (("",), ("configmaps",), (args["configmap"],))}
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "coredns-autoscaler"


# ---------------------------------------------------------------- RBAC


def granted() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) that ClusterRole system:coredns allows."""
    out = set()
    for rule in obj("ClusterRole", "system:coredns")["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb)
                    out.add((group, resource, verb))
    return out


def test_the_cluster_role_is_bound_to_the_dns_pods_service_account():
    binding = obj("ClusterRoleBinding", "system:coredns")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]
    obj("ServiceAccount", "coredns")
    assert pod_spec()["serviceAccountName"] == "coredns"
    assert {verb for _, _, verb in granted()} == {"list", "watch"}


def resource_of(path: str) -> tuple[str, str] | None:
    """(apiGroup, resource) of an API path: /api/v1/services, /apis/G/V/namespaces/{ns}/R, ..."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]  # namespaced form: namespaces/{ns}/RESOURCE[/NAME]
    return group, rest[0]


@functools.lru_cache(maxsize=None)
def client_api_sources() -> tuple[str, ...]:
    """The source of the official client's API classes (read as text: importing them is slow)."""
    api_dir = Path(kubernetes.client.__file__).parent / "api"
    return tuple(p.read_text() for p in sorted(api_dir.glob("*_api.py")))


def client_method_path(name: str) -> str | None:
    """The URL path behind a list/watch/read method of the official client's API classes."""
    if not re.fullmatch(r"(list|watch|read)_\w+", name):
        return None
    for source in client_api_sources():
        if f"def {name}(" not in source:
            continue
        # The path sits in the method's serializer (newer clients) or in its
        # *_with_http_info body (older ones).
        for definition in (f"def _{name}_serialize(", f"def {name}_with_http_info("):
            at = source.find(definition)
            if at >= 0:
                m = re.compile(r"['\"](/apis?/[^'\"]+)['\"]").search(source, at)
                if m:
                    return m.group(1)
    return None


def api_calls_in_code() -> set[tuple[str, str]]:
    """(apiGroup, resource) the code can ask for: client methods it names, API paths it spells."""
    found = set()
    for path in (ROOT / "pydns").rglob("*.py"):
        if "testing" in path.relative_to(ROOT / "pydns").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            word = node.attr if isinstance(node, ast.Attribute) else node.value if isinstance(node, ast.Constant) else None
            if not isinstance(word, str):
                continue
            url = word if re.fullmatch(r"/apis?/[\w.{}/-]+", word) else client_method_path(word)
            if url and resource_of(url):
                found.add(resource_of(url))
    return found


def test_the_cluster_role_covers_every_resource_the_code_reads():
    code = api_calls_in_code()
    assert code, "no Kubernetes API call found in pydns/: the scan is broken"
    rules = {(g, r) for g, r, _ in granted()}
    # pods: read only for `pods verified` (not the deployed Corefile: see clusterrole.yaml
    # and the recorded run below); everything else the code can read must be granted.
    assert code - rules <= {("", "pods")}, f"not granted: {sorted(code - rules)}"
    assert rules <= code, f"granted but never read by the code: {sorted(rules - code)}"
    for group, resource in rules:
        assert {(group, resource, "list"), (group, resource, "watch")} <= granted()


# Objects for the fake API server: enough for one name to resolve once synced.
CLUSTER = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
     "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
     "addressType": "IPv4",
     "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default"},
     "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}},
]


def kubernetes_directive(pods_mode: str | None, kubeconfig: str) -> str:
    """The ConfigMap's kubernetes directive, pointed at the fake API server."""
    (block,) = parse(corefile_text())
    (k8s,) = [d for d in block.directives if d.name == "kubernetes"]
    options = []
    for opt in k8s.block or []:
        args = [str(a) for a in opt.args]
        if opt.name == "pods" and pods_mode:
            args = [pods_mode]
        options.append(" ".join([str(opt.name), *args]))
    options.append(f"kubeconfig {kubeconfig}")
    body = "\n".join(f"        {o}" for o in options)
    return f"    kubernetes {' '.join(str(a) for a in k8s.args)} {{\n{body}\n    }}"


def recorded_calls(api: FakeApiServer) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every request the fake API server received."""
    calls = set()
    for req in list(api.requests):
        res = resource_of(req.path)
        if res is None:
            continue  # discovery (/api, /apis, /version): open to every authenticated client
        if not req.path.rstrip("/").endswith("/" + res[1]):
            calls.add((*res, "get"))  # one named object
        elif req.query.get("watch") in ("true", "1"):
            calls.add((*res, "watch"))
            if req.query.get("sendInitialEvents") == "true":
                calls.add((*res, "list"))  # a streaming list reads the whole collection, as a list
        else:
            calls.add((*res, "list"))
    return calls


def run_against_fake_api(serve, tmp_path, pods_mode: str | None) -> set[tuple[str, str, str]]:
    api = FakeApiServer(CLUSTER).start()
    try:
        kubeconfig = api.kubeconfig(str(tmp_path / "kubeconfig"))
        srv = serve(f".:0 {{\n    bind 127.0.0.1\n{kubernetes_directive(pods_mode, kubeconfig)}\n}}\n")
        answer = srv.query("web.default.svc.cluster.local", "A")
        assert [rr.to_text() for rrset in answer.answer for rr in rrset] == ["10.96.0.20"]
        # Synced; give every reflector the moment it needs to open its watch after its list.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            calls = recorded_calls(api)
            listed = {(g, r) for g, r, v in calls if v == "list"}
            watched = {(g, r) for g, r, v in calls if v == "watch"}
            if listed and listed <= watched:
                break
            time.sleep(0.05)
        return recorded_calls(api)
    finally:
        api.stop()


def test_rbac_grants_exactly_what_pydns_asks_for_with_the_deployed_corefile(serve, tmp_path):
    calls = run_against_fake_api(serve, tmp_path, None)
    assert calls == granted()


def test_pods_verified_would_need_pods_which_the_deployed_corefile_does_not_use(serve, tmp_path):
    (block,) = parse(corefile_text())
    (k8s,) = [d for d in block.directives if d.name == "kubernetes"]
    assert [[str(a) for a in o.args] for o in k8s.block if o.name == "pods"] == [["insecure"]]
    calls = run_against_fake_api(serve, tmp_path, "verified")
    assert calls - granted() == {("", "pods", "list"), ("", "pods", "watch")}


# ---------------------------------------------------------------- overlays: one per way CoreDNS is installed


class Install:
    """What an install of CoreDNS leaves in kube-system that an apply over it must respect."""

    def __init__(self, selector: dict, service: str, service_selector: dict, service_ports: set,
                 config_keys: tuple = ("Corefile",), corefile: str | None = None, cluster_ip: str | None = None):
        self.selector = selector                    # Deployment coredns: spec.selector.matchLabels (immutable)
        self.service = service                      # the DNS Service's name
        self.service_selector = service_selector
        self.service_ports = service_ports          # {(name, port, protocol)}
        self.config_keys = config_keys              # keys of ConfigMap coredns the pod mounts
        self.corefile = corefile                    # the install's Corefile, where pydns must keep it
        self.cluster_ip = cluster_ip                # the Service's address, where the install fixes one


_KUBEADM_PORTS = {("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")}

# Facts of each install's objects: kubeadm (cmd/kubeadm/app/phases/addons/dns), CoreDNS's
# Helm chart (charts/coredns, release `coredns` in kube-system, default values: Deployment,
# Service and ConfigMap named after the release; the three labels below in both selectors;
# Service ports udp-53 and tcp-53), coredns.yaml.sed (CoreDNS's deployment repository:
# kubeadm's names, two labels in both selectors) and k3s (manifests/coredns.yaml: kubeadm's
# names and selector, NodeHosts mounted beside the Corefile).
HELM_LABELS = {"app.kubernetes.io/instance": "coredns", "k8s-app": "coredns", "app.kubernetes.io/name": "coredns"}
SED_LABELS = {"k8s-app": "kube-dns", "app.kubernetes.io/name": "coredns"}
INSTALLS = {
    "kubeadm": Install({"k8s-app": "kube-dns"}, "kube-dns", {"k8s-app": "kube-dns"}, _KUBEADM_PORTS),
    "helm-chart": Install(HELM_LABELS, "coredns", HELM_LABELS, {("udp-53", 53, "UDP"), ("tcp-53", 53, "TCP")}),
    "coredns-yaml-sed": Install(SED_LABELS, "kube-dns", SED_LABELS, _KUBEADM_PORTS),
    "k3s": Install({"k8s-app": "kube-dns"}, "kube-dns", {"k8s-app": "kube-dns"}, _KUBEADM_PORTS,
                   config_keys=("Corefile", "NodeHosts"),
                   corefile=(ROOT / "corefile_examples" / "k3s.Corefile").read_text(), cluster_ip="10.43.0.10"),
}


def test_there_is_an_overlay_for_every_install_and_only_those():
    assert {p.name for p in (ROOT / "deploy" / "overlays").iterdir()} == set(INSTALLS)


@functools.lru_cache(maxsize=None)
def kustomize(path: str) -> tuple[dict, ...]:
    """`kubectl kustomize`: the real kustomize, offline, as `kubectl apply -k` builds it."""
    proc = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def built(overlay: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in kustomize(str(ROOT / "deploy" / "overlays" / overlay))}


def test_deploy_root_is_the_kubeadm_overlay():
    assert kustomize(str(ROOT / "deploy")) == kustomize(str(ROOT / "deploy" / "overlays" / "kubeadm"))
    base = {(d["kind"], d["metadata"]["name"]): d for _, d in MANIFESTS}
    assert set(built("kubeadm")) == set(base)


@pytest.mark.parametrize("overlay", sorted(INSTALLS))
def test_overlay_applies_over_its_install(overlay):
    install, objects = INSTALLS[overlay], built(overlay)
    dep = objects[("Deployment", "coredns")]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    # The selector is immutable: exactly the install's, or the apply is refused.
    assert dep["spec"]["selector"] == {"matchLabels": install.selector}
    assert install.selector.items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/part-of"] == "pydns"
    # Same container and volume names: the apply replaces CoreDNS's container, never adds one.
    spec = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["coredns"]
    assert spec["volumes"][0]["name"] == "config-volume" and spec["volumes"][0]["configMap"]["name"] == "coredns"
    assert [i["key"] for i in spec["volumes"][0]["configMap"]["items"]] == list(install.config_keys)

    # The Service keeps its name and selects exactly what it selected: old and new pods
    # both answer behind it while the Deployment rolls, and no pod is left unselected.
    services = [obj for (kind, _), obj in objects.items() if kind == "Service"]
    assert [s["metadata"]["name"] for s in services] == [install.service]
    (svc,) = services
    assert svc["spec"]["selector"] == install.service_selector
    assert svc["spec"].get("clusterIP") == install.cluster_ip  # elsewhere the live Service keeps its own
    assert install.service_selector.items() <= pod_labels.items()
    ports = {(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    assert install.service_ports <= ports, "a port of the install is renamed or missing"
    container_ports = {(p["containerPort"], p["protocol"]) for p in spec["containers"][0]["ports"]}
    assert all((p["targetPort"], p["protocol"]) in container_ports for p in svc["spec"]["ports"])

    # What else selects the DNS pods follows them.
    pdb = objects[("PodDisruptionBudget", "coredns")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    (expr,) = term["podAffinityTerm"]["labelSelector"]["matchExpressions"]
    assert pod_labels[expr["key"]] in expr["values"]
    assert objects[("Deployment", "coredns-autoscaler")]  # still scaling deployment/coredns


@pytest.mark.parametrize("overlay", sorted(INSTALLS))
def test_overlay_objects_are_valid_and_differ_from_base_only_where_the_install_does(overlay):
    base = {(d["kind"], d["metadata"]["name"]): d for _, d in MANIFESTS}
    install = INSTALLS[overlay]
    for key, doc in built(overlay).items():
        try:
            kubernetes_validate.validate(doc, SCHEMA_VERSIONS[-1], strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {key} at {'.'.join(str(p) for p in exc.path)}: {exc.message}")
        kind, name = key
        if kind == "Service":
            name = "kube-dns"
        changed = {"Deployment/coredns", "Service/kube-dns", "PodDisruptionBudget/coredns", "ConfigMap/coredns"}
        if f"{kind}/{name}" not in changed:
            assert doc == base[(kind, name)], f"{overlay} changes {key}, which no install needs"
    if install.corefile is not None:
        corefile = built(overlay)[("ConfigMap", "coredns")]["data"]["Corefile"]
        assert [shape(b.directives) for b in parse(corefile)] == [shape(b.directives) for b in parse(install.corefile)]


def test_the_k3s_corefile_starts_with_its_node_hosts_and_custom_imports(tmp_path):
    """The k3s overlay's Corefile runs in pydns with the files mounted as k3s mounts them."""
    objects = built("k3s")
    corefile = objects[("ConfigMap", "coredns")]["data"]["Corefile"]
    etc = tmp_path / "etc" / "coredns"
    (etc / "custom").mkdir(parents=True)
    (etc / "NodeHosts").write_text("192.168.1.10 k3s-server-1\n")
    (etc / "custom" / "team.override").write_text("whoami\n")
    port = free_port()
    text = corefile.replace("/etc/coredns", str(etc)).replace(".:53 {", f".:{port} {{\n    bind 127.0.0.1", 1)
    text = text.replace("kubernetes cluster.local in-addr.arpa ip6.arpa {", f"kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        manifests {tmp_path}/none.yaml", 1)
    for plugin in ("health", "ready", "prometheus :9153"):
        text = text.replace(f"\n    {plugin}\n", "\n")
    (tmp_path / "none.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n")
    srv = ServerThread(text).start()
    try:
        reply = srv.query("k3s-server-1", "A")
        assert [rr.to_text() for rrset in reply.answer for rr in rrset] == ["192.168.1.10"]
    finally:
        srv.stop()
