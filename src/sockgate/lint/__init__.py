"""`sockgate lint`: which links, redirects and cookies of an app leave its prefix.

`find` (pure) reads pages and headers, `report` (pure) renders the results, `crawl` fetches
pages through the proxy, `run` picks the running engine or starts a temporary one.
"""

MAX_PAGES = 20  # pages fetched per app at most, by default
