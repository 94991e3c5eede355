"""HTTPS: sockgate's local CA, the certificates it issues, and the server's TLS contexts."""
