"""Process-wide counters kept as plain integers; the prometheus plugin reads them at scrape time."""

panics = 0
reload_failed = 0

# Called as hook(req, answer) for queries that match no server block's zone (answered
# REFUSED before any chain runs), so that metrics can count them as CoreDNS does.
unrouted_hooks: list = []
