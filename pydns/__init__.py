"""pydns: a pure-Python cluster DNS server, a drop-in for CoreDNS in Kubernetes."""

__version__ = "0.1.0"
