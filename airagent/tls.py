"""One TLS context for every HTTP client airagent makes.

httpx builds a context for each client it makes, even one that only speaks plain HTTP to a
local Airflow, and building one loads the CA bundle: about 45 ms of CPU. Waiting for an
api-server to answer asks every 0.3 s, and every probe, confirm and announcement made a
client of its own, so that was most of what those loops cost.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def context() -> ssl.SSLContext:
    """Verifying as httpx does by default (its CA bundle, and SSL_CERT_FILE or SSL_CERT_DIR when set)."""
    return httpx.create_ssl_context()
