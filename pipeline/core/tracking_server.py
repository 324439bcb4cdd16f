"""The MLflow tracking URI in use, refused at once when its server cannot be reached.

MLflow retries a request to an unreachable tracking server for about four minutes before it
gives up (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``), saying
nothing meanwhile: a mistyped ``MLFLOW_TRACKING_URI`` looked like a hung command. Every command
that talks to the tracking store takes its URI from :func:`tracking_uri`, which opens a TCP
connection to an ``http(s)://`` server first and asks it one question of MLflow's REST API,
naming the URI and the reason when there is no connection, no HTTP answer, or a server error (a
server answering 500 to everything had `kneepain evaluate` write its reports, wait four minutes
in silence and then fail). A
server reached through a proxy (``HTTPS_PROXY`` and the like, outside ``NO_PROXY``) is left to
MLflow, which goes through the proxy.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.request
from urllib.parse import urlsplit

from pipeline.core.errors import TrackingServerError
from pipeline.core.paths import default_tracking_uri, sqlite_store

__all__ = ["CONNECT_TIMEOUT_SECONDS", "check_reachable", "tracking_uri"]

CONNECT_TIMEOUT_SECONDS = 10.0


def tracking_uri() -> str:
    """:func:`pipeline.core.paths.default_tracking_uri`, checked with :func:`check_reachable`."""
    uri = default_tracking_uri()
    check_reachable(uri)
    return uri


def check_reachable(uri: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Raise :class:`TrackingServerError` when ``uri`` is an ``http(s)://`` tracking server that
    accepts no TCP connection within ``timeout`` seconds, gives no HTTP answer to one request of
    MLflow's REST API, or answers it with a server error (5xx), or a ``sqlite:///`` store in a
    folder that does not exist (a mistyped path, where MLflow made the folder and a new, empty
    registry whose first model became the champion); any other URI (a ``databricks`` profile) or
    a server behind a proxy passes unchecked, as does one whose TLS handshake needs more than this
    check sends (a client certificate)."""
    store = sqlite_store(uri)
    if store is not None and not store.parent.is_dir():  # MLflow would make the folder and a new, empty store
        raise TrackingServerError(f"MLFLOW_TRACKING_URI={uri!r}: there is no folder {store.parent} for its "
                                  "database; mend the path, or make the folder for a new store.")
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
        raise _unreachable(uri, str(err) or type(err).__name__) from None
    # one request of the REST API: any answer but a server error (a 404 for the experiment, a 401
    # without the credentials MLflow would send) shows a server that answers; what is sent is no
    # secret, so an https certificate is not checked here (MLflow checks it as it is configured to)
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout,
                                                                              context=context)
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    try:
        connection.request("GET", f"{parts.path.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name"
                                  "?experiment_name=Default")
        status = connection.getresponse().status
    except ssl.SSLError:  # it answers TLS but asks more of the handshake (a client certificate, MLflow's
        return  # MLFLOW_TRACKING_CLIENT_CERT_PATH): a server that answers, left to MLflow
    except (OSError, http.client.HTTPException) as err:
        raise _unreachable(uri, f"no HTTP answer ({str(err) or type(err).__name__})") from None
    finally:
        connection.close()
    if status >= 500:
        raise _unreachable(uri, f"it answers a request of MLflow's REST API with HTTP {status}, a server error")


def _unreachable(uri: str, reason: str) -> TrackingServerError:
    return TrackingServerError(
        f"cannot reach the MLflow tracking server at {uri} (MLFLOW_TRACKING_URI): {reason}; start the "
        "server, correct the variable, or unset it to use the project's mlflow.db.")


def _proxied(scheme: str, host: str) -> bool:
    """Whether the environment sends requests for ``scheme://host`` through a proxy."""
    proxies = urllib.request.getproxies()
    return (scheme in proxies or "all" in proxies) and not urllib.request.proxy_bypass(host)
