"""The HTTP server of ``kneepain serve``: MLflow's scoring protocol, with answers a client can use.

It speaks the protocol of ``mlflow models serve`` (``POST /invocations`` with a JSON body holding
``dataframe_records``, ``dataframe_split``, ``instances`` or ``inputs``; ``{"predictions": [...]}``
back, encoded by MLflow's own encoder so the numbers are :func:`pipeline.predict`'s to the last
bit; ``GET /ping``, ``/health`` and ``/version``), and differs where MLflow's server leaves a user
without an answer or a server exposed:

- an invalid case gets a 400 whose ``message`` is the validation text (every bad row, column,
  value and what is allowed), not a generic message;
- no answer carries a stack trace, a server path or an echo of the request: an unexpected error
  is a 500 with a generic message, and the traceback goes to the server's log only;
- a request body larger than the limit (``--max-request-mb``, ``KNEEPAIN_MAX_REQUEST_BYTES``;
  default 10 MB) is refused with a 413 before it is read in full.

The model is loaded once per worker with :func:`pipeline.serve.loading.load_model`, so the model
folder is verified (and its signature, with ``KNEEPAIN_TRUSTED_KEY``) and nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request  # FastAPI reads the handler's annotations: they must resolve here
from starlette.responses import Response

from pipeline.core.errors import BatchInputError, CaseValidationError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "MAX_REQUEST_ENV", "MODEL_ENV", "create_app", "parse_body"]

MODEL_ENV = "KNEEPAIN_SERVE_MODEL"
MAX_REQUEST_ENV = "KNEEPAIN_MAX_REQUEST_BYTES"
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
_JSON = "application/json"
_LOG = logging.getLogger("kneepain.serve")


def max_request_bytes() -> int:
    text = os.environ.get(MAX_REQUEST_ENV, "")
    if not text:
        return DEFAULT_MAX_REQUEST_BYTES
    if not text.isdigit() or int(text) < 1:
        raise BatchInputError(f"{MAX_REQUEST_ENV} == {text!r}, must be a whole number of bytes >= 1.")
    return int(text)


def parse_body(body: bytes) -> pd.DataFrame:
    """Cases from a JSON request body in MLflow's formats.

    Raises
    ------
    BatchInputError
        The body is not UTF-8 JSON in one of the formats; the message says which are accepted.
    """
    accepted = "a JSON object with dataframe_records (a list of cases), dataframe_split (columns and data), " \
               "instances or inputs (a list of cases)"
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BatchInputError(f"the request body is not UTF-8 JSON ({err}); expected {accepted}.") from None
    if not isinstance(payload, dict):
        raise BatchInputError(f"expected {accepted}.")
    keys = [k for k in ("dataframe_records", "dataframe_split", "instances", "inputs") if k in payload]
    if len(keys) != 1:
        raise BatchInputError(f"expected exactly one of dataframe_records, dataframe_split, instances, inputs; "
                              f"got keys {sorted(payload)[:10]}.")
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) \
                or not isinstance(data.get("data"), list) or not all(isinstance(r, list) for r in data["data"]):
            raise BatchInputError("dataframe_split must be an object with columns (a list of names) and data "
                                  "(a list of rows, each a list of values).")
        if any(len(r) != len(data["columns"]) for r in data["data"]):
            raise BatchInputError(f"dataframe_split: every row of data must have {len(data['columns'])} values, "
                                  "one per column.")
        return pd.DataFrame(data["data"], columns=[str(c) for c in data["columns"]])
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BatchInputError(f"{keys[0]} must be a list of cases, each an object of field: value.")
    return pd.DataFrame(data)


def _error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"error_code": code, "message": message}), status_code=status, media_type=_JSON)


def create_app(model: Any = None):
    """The ASGI application (FastAPI). ``model``: a loaded model, a model URI or folder, or None for
    ``$KNEEPAIN_SERVE_MODEL`` (what ``kneepain serve`` sets; uvicorn calls this as a factory)."""
    from mlflow.pyfunc.scoring_server import predictions_to_json
    from mlflow.version import VERSION

    from pipeline.serve.loading import LoadedModel, load_model
    from pipeline.serve.predict import predict

    loaded = model if isinstance(model, LoadedModel) else load_model(model or os.environ.get(MODEL_ENV) or None)
    limit = max_request_bytes()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/ping")
    @app.get("/health")
    async def ping():
        return Response("\n", status_code=200, media_type=_JSON)

    @app.get("/version")
    async def version():
        return Response(VERSION, status_code=200, media_type=_JSON)

    @app.post("/invocations")
    async def invocations(request: Request):
        too_large = _error(413, "REQUEST_TOO_LARGE", f"the request body is larger than {limit:,} bytes, the "
                                                     f"limit ({MAX_REQUEST_ENV}); send fewer cases per request.")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return too_large
        mime = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if mime != _JSON:
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", f"send the cases as {_JSON} (got {mime or 'no type'!r}).")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                return too_large
        try:
            frame = parse_body(bytes(body))
            result = predict(frame, model=loaded)
        except (CaseValidationError, BatchInputError, TypeError) as err:
            return _error(400, "INVALID_PARAMETER_VALUE", str(err))
        except Exception:  # never a stack trace or path in an answer: the log has it
            _LOG.exception("scoring failed")
            return _error(500, "INTERNAL_ERROR", "the server could not score this request; its log has the details.")
        out = io.StringIO()
        predictions_to_json(result, out)
        return Response(out.getvalue(), status_code=200, media_type=_JSON)

    return app
