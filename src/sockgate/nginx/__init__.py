"""The nginx engine: render the reference user-mode nginx setup from a Config, and run it."""
