"""Which pod a client's address belongs to, for autopath and metadata: the pods' addresses, and no more.

    addresses.add("10.244.1.7", ("shop", "web-1"))                # pod shop/web-1 has it
    addresses.add(HostAddress("192.168.0.4"), ("kube-system", "proxy"))  # a host-network pod: its node's
    addresses.namespace_of("10.244.1.7")                          # "shop"
    addresses.namespace_of_client(("::ffff:10.244.1.7", 5353))    # a query's source: "shop"
    addresses.pod_of_client(("10.244.1.7", 5353))                 # ("shop", "web-1")
    addresses.remove("10.244.1.7", ("shop", "web-1"))

An address answers with a namespace only when that is certain from the state alone:
every pod that holds it is in that one namespace and none of them runs in the host's
network; with a pod (namespace and name) only when exactly one pod holds it and that pod
is not in the host's network.  Otherwise it answers None, and autopath (or metadata)
leaves the query alone:

* several namespaces at once (a pod terminating in one namespace while a new pod with its
  address starts in another): which of them asked is unknowable;
* a host-network pod's address is its node's, shared with every other host-network pod
  and the node itself (kubelet, a node-local DNS cache forwarding for all of the node's
  pods): no namespace's search path is the asker's.

Nothing depends on the order events came in, so two servers that have seen the same
objects answer the same.  Memory: one dict entry per address; the address string and the
(namespace, name) key are the pod store's own objects, so keeping the pod's name here costs
nothing more than the namespace did.  The rare address held by several pods costs a small
dict of owners besides (one entry per pod; a node's host-network pods share one).
"""

from __future__ import annotations

HOST_NETWORK = ""  # the owner of a host-network pod's address (no pod key is a str)


class HostAddress(str):
    """A host-network pod's address (its node's).  A string still, so the store, its
    snapshots and its comparisons take it as any address; only its type says more."""

    __slots__ = ()


class PodAddresses:
    __slots__ = ("_owner", "_shared")

    def __init__(self):
        # An owner is the pod's (namespace, name), or HOST_NETWORK for any host-network pod.
        self._owner: dict[str, tuple[str, str] | str] = {}  # address -> the owner of its only pod
        self._shared: dict[str, dict] = {}  # address held by several pods -> owner -> pods

    def __len__(self) -> int:
        return len(self._owner) + len(self._shared)

    def namespace_of(self, ip: str) -> str | None:
        """The namespace of the pods with address ``ip``, when there is exactly one and no host network."""
        owner = self._owner.get(ip)
        if owner is not None:
            return owner[0] if owner else None
        owners = self._shared.get(ip)
        if owners is None or HOST_NETWORK in owners:
            return None
        namespaces = {pod[0] for pod in owners}
        return namespaces.pop() if len(namespaces) == 1 else None

    def pod_of(self, ip: str) -> tuple[str, str] | None:
        """(namespace, name) of the one pod with address ``ip``, unless it is in the host's network."""
        return self._owner.get(ip) or None

    def namespace_of_client(self, remote) -> str | None:
        """``namespace_of`` the source address of a query (``req.remote``)."""
        return self.namespace_of(client_address(remote))

    def pod_of_client(self, remote) -> tuple[str, str] | None:
        """``pod_of`` the source address of a query (``req.remote``)."""
        return self.pod_of(client_address(remote))

    def add(self, ip: str, pod: tuple[str, str]) -> None:
        """One more pod, ``(namespace, name)``, has address ``ip`` (a HostAddress: in the host's network)."""
        owner = HOST_NETWORK if type(ip) is HostAddress else pod
        first = self._owner.pop(ip, None)
        if first is None and ip not in self._shared:
            self._owner[ip] = owner
            return
        owners = self._shared.setdefault(ip, {})
        if first is not None:
            owners[first] = 1
        owners[owner] = owners.get(owner, 0) + 1

    def remove(self, ip: str, pod: tuple[str, str]) -> None:
        """The pod ``(namespace, name)`` with address ``ip`` is gone (or has another address now)."""
        owner = HOST_NETWORK if type(ip) is HostAddress else pod
        if self._owner.get(ip) == owner:
            del self._owner[ip]
            return
        owners = self._shared.get(ip)
        if owners is None or owner not in owners:
            return
        owners[owner] -= 1
        if not owners[owner]:
            del owners[owner]
        if sum(owners.values()) == 1:  # one pod again: back to the plain entry
            (last,) = owners
            del self._shared[ip]
            self._owner[ip] = last


def client_address(remote) -> str:
    """The address of a query's source (``req.remote``), an IPv4-mapped IPv6 one as IPv4."""
    host = remote[0].split("%", 1)[0]
    return host[7:] if host.startswith("::ffff:") and "." in host else host
