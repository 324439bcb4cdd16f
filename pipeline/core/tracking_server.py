"""The MLflow tracking URI in use, refused at once when its server cannot be reached.

MLflow retries a request to an unreachable tracking server for about four minutes before it
gives up (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``), saying
nothing meanwhile: a mistyped ``MLFLOW_TRACKING_URI`` looked like a hung command. Every command
that talks to the tracking store takes its URI from :func:`tracking_uri`, which opens a TCP
connection to an ``http(s)://`` server first and names the URI and the reason when it fails. A
server reached through a proxy (``HTTPS_PROXY`` and the like, outside ``NO_PROXY``) is left to
MLflow, which goes through the proxy.
"""

from __future__ import annotations

import socket
import urllib.request
from urllib.parse import urlsplit

from pipeline.core.errors import TrackingServerError
from pipeline.core.paths import default_tracking_uri

__all__ = ["CONNECT_TIMEOUT_SECONDS", "check_reachable", "tracking_uri"]

CONNECT_TIMEOUT_SECONDS = 10.0


def tracking_uri() -> str:
    """:func:`pipeline.core.paths.default_tracking_uri`, checked with :func:`check_reachable`."""
    uri = default_tracking_uri()
    check_reachable(uri)
    return uri


def check_reachable(uri: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Raise :class:`TrackingServerError` when ``uri`` is an ``http(s)://`` tracking server that
    accepts no TCP connection within ``timeout`` seconds; any other URI (a local store, a
    ``databricks`` profile) or a server behind a proxy passes unchecked."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:  # a port that is no number, or out of range
        raise TrackingServerError(f"MLFLOW_TRACKING_URI={uri!r} is not a valid server address: {err}.") from None
    if not parts.hostname:
        raise TrackingServerError(f"MLFLOW_TRACKING_URI={uri!r} names no host; allowed: http(s)://HOST[:PORT].")
    if _proxied(parts.scheme, parts.hostname):
        return
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as err:
        reason = str(err) or type(err).__name__
        raise TrackingServerError(
            f"cannot reach the MLflow tracking server at {uri} (MLFLOW_TRACKING_URI): {reason}; start the "
            "server, correct the variable, or unset it to use the project's mlflow.db.") from None


def _proxied(scheme: str, host: str) -> bool:
    """Whether the environment sends requests for ``scheme://host`` through a proxy."""
    proxies = urllib.request.getproxies()
    return (scheme in proxies or "all" in proxies) and not urllib.request.proxy_bypass(host)
