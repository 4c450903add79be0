"""Process-wide counters kept as plain integers; the prometheus plugin reads them at scrape time."""

panics = 0
reload_failed = 0
# HTTP requests and connections refused or cut by a limit, by cause (pydns/httpd.py)
http_rejected: dict[str, int] = {}

# Called as hook(req, answer) for queries that match no server block's zone (answered
# REFUSED before any chain runs), so that metrics can count them as CoreDNS does.
unrouted_hooks: list = []

# DNS over TCP: open connections; connections closed or refused at a bound, by reason; replies
# that could not be sent and connections that failed, by cause (pydns.tcp).
tcp_open = 0
tcp_closed: dict[str, int] = {}
tcp_send_errors: dict[str, int] = {}
# UDP errors by cause ("message too long", "buffer full", an errno name): counted and each
# cause logged once by pydns.udp.
udp_send_errors: dict[str, int] = {}
udp_receive_errors: dict[str, int] = {}
udp_pending_overflows = 0  # queries answered SERVFAIL because too many answers were waiting
# The UDP listeners open now, and the kernel drops their closed predecessors had, per
# listener label (pydns.udp.listener_drops reads the open ones' from /proc at scrape time).
udp_listeners: set = set()
udp_closed_drops: dict[str, int] = {}
# rewrite's cname rules: answers left as they came because the new target could not be
# looked up, by cause ("not a domain name", "lookup failed"); each cause logged once per rule.
rewrite_cname_failures: dict[str, int] = {}
