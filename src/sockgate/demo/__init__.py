"""Two small ASGI apps for `sockgate demo`, and the command that writes and runs its config."""
