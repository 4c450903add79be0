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
