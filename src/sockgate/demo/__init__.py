"""Two small ASGI apps for `sockgate demo`, and the launcher that serves each on a Unix socket."""
