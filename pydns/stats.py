"""Process-wide counters kept as plain integers; the prometheus plugin reads them at scrape time."""

panics = 0
reload_failed = 0
