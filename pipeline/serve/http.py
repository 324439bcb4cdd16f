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
  default 10 MB) is refused with a 413 before it is read in full, and so is one of more cases
  than ``--max-request-cases`` (``KNEEPAIN_MAX_REQUEST_CASES``; default 10,000) before any is
  scored: the answer is built whole in memory, about 8 KB per case (20,000 small cases took 161 MB
  more; 10 MB of them, some 370,000, would take about 3 GB).

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
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from pipeline.core.errors import BatchInputError, CaseValidationError
from pipeline.core.parsing import ignored_columns_message
from pipeline.core.schema import top_k_problem
from pipeline.serve.requests import FORMATS as _FORMATS
from pipeline.serve.requests import null_missing_ids
from pipeline.serve.requests import request_records as _records
from pipeline.serve.requests import shown as _shown

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "DEFAULT_MAX_REQUEST_CASES", "MAX_CASES_ENV", "MAX_REQUEST_ENV", "MODEL_ENV",
           "TooManyCasesError", "create_app", "max_request_bytes", "max_request_cases", "parse_body", "score_request"]

MODEL_ENV = "KNEEPAIN_SERVE_MODEL"
MAX_REQUEST_ENV = "KNEEPAIN_MAX_REQUEST_BYTES"
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
MAX_CASES_ENV = "KNEEPAIN_MAX_REQUEST_CASES"
DEFAULT_MAX_REQUEST_CASES = 10_000
_JSON = "application/json"
_LOG = logging.getLogger("kneepain.serve")


def _limit(env: str, default: int, unit: str) -> int:
    text = os.environ.get(env, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise BatchInputError(f"{env} == {text!r}, must be a whole number of {unit} >= 1.")
    return int(text)


def max_request_bytes() -> int:
    """The largest request body served (``$KNEEPAIN_MAX_REQUEST_BYTES``, else 10 MB)."""
    return _limit(MAX_REQUEST_ENV, DEFAULT_MAX_REQUEST_BYTES, "bytes")


def max_request_cases() -> int:
    """The most cases one request may hold (``$KNEEPAIN_MAX_REQUEST_CASES``, else 10,000)."""
    return _limit(MAX_CASES_ENV, DEFAULT_MAX_REQUEST_CASES, "cases")


class TooManyCasesError(BatchInputError):
    """A request holds more cases than the server scores at once (a 413)."""


_PARAMS = ("top_k", "columns")


class _RepeatedKey(Exception):
    """A JSON object of the request names a key twice (``args[0]``)."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key given twice (``{"age": 30, "age": 80}``: which did the
    client mean?), where ``json.loads`` keeps the last silently."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        raise _RepeatedKey(next(k for i, k in enumerate(keys) if k in keys[:i]))
    return obj


def parse_body(body: bytes, max_cases: int | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Cases (as records, in order) and parameters from a JSON request body in MLflow's formats.

    ``dataframe_records``, ``instances`` and ``inputs`` take a list of cases (each an object of
    field: value); ``instances`` and ``inputs`` also take MLflow's columns (an object of field:
    list of values, one per case) or one case (an object of field: value). ``dataframe_split``
    takes ``columns`` and ``data``. ``params`` may hold ``top_k``.

    Raises
    ------
    BatchInputError
        The body is not UTF-8 JSON in one of the formats; the message says which are accepted.
    TooManyCasesError
        It holds more than ``max_cases`` cases, counted once its shape is read and before any
        record is built (800,000 two-field rows were 1.5 s and 318 MB to a refusal counted after
        them, and are 1.2-1.4 s and 170 MB, most of it JSON's own objects).
    """
    accepted = "a JSON object with dataframe_records (a list of cases), dataframe_split (columns and data), " \
               "instances or inputs (a list of cases, or columns)"
    try:
        payload = json.loads(body.decode("utf-8"), object_pairs_hook=_object)
    except _RepeatedKey as err:
        raise BatchInputError(f"the request body gives {_shown(err.args[0])} more than once in one object (JSON would "
                              "keep only the last); give each key once.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BatchInputError(f"the request body is not UTF-8 JSON ({err}); expected {accepted}.") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise BatchInputError(f"the request body holds a value JSON cannot be read as ({err}); expected {accepted}.") \
            from None
    except RecursionError:
        raise BatchInputError(f"the request body is nested too deeply to read; expected {accepted}.") from None
    if not isinstance(payload, dict):
        raise BatchInputError(f"expected {accepted}.")
    keys = [k for k in _FORMATS if k in payload]
    others = [k for k in payload if k not in _FORMATS and k != "params"]
    if len(keys) != 1 or others:
        got = ", ".join(_shown(k) for k in list(payload)[:10]) + (", ..." if len(payload) > 10 else "")
        raise BatchInputError(f"expected exactly one of {', '.join(_FORMATS)} (and optionally params); got {got}.")

    def count(n: int) -> None:
        if max_cases is not None and n > max_cases:
            raise TooManyCasesError(f"the request holds {n:,} cases, more than the limit of {max_cases:,} "
                                    f"(--max-request-cases or {MAX_CASES_ENV}); send fewer cases per request, or "
                                    "score a file with `kneepain score`.")

    return _records(keys[0], payload[keys[0]], count=count), _params(payload.get("params"))


def _params(params: Any) -> dict[str, Any]:
    """The request's ``params`` (``top_k``, as :func:`pipeline.predict` takes it)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BatchInputError("params must be an object, for example {\"top_k\": 5}.")
    unknown = [k for k in params if k not in _PARAMS]
    if unknown:
        raise BatchInputError(f"params: {', '.join(_shown(k) for k in unknown[:5])} not understood; "
                              f"allowed: {', '.join(_PARAMS)}.")
    if "top_k" in params and (problem := top_k_problem(params["top_k"])) is not None:
        raise BatchInputError(f"params: top_k == {_shown(params['top_k'])}, {problem}.")
    columns = params.get("columns")
    if "columns" in params and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise BatchInputError(f"params: columns == {_shown(columns)}: give a list of output column names, for "
                              "example [\"case_id\", \"triage\"].")
    return dict(params)


def _charset(parameters: list[str]) -> str | None:
    """The ``charset`` of a Content-Type's parameters (``["charset=utf-8"]``), lower case, unquoted; None if none."""
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def score_request(model: Any, records: list[dict], params: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """:func:`pipeline.predict`'s rows for the request's cases, and its warnings (columns that are
    not case fields) for the answer: a client never sees the server's log."""
    from pipeline.core.cases import as_parsed
    from pipeline.serve.predict import chosen_columns_problem, score_parsed

    parsed = as_parsed(records)
    warned = [ignored_columns_message(parsed.ignored_columns)] if parsed.ignored_columns else []
    # an empty list is all of them, as in MLflow's server, where it is the signature's default
    top_k, columns = params.get("top_k", 3), params.get("columns") or None
    if columns is not None and (problem := chosen_columns_problem(model, parsed, columns, top_k)) is not None:
        raise BatchInputError(f"params: columns: {problem}")
    return null_missing_ids(score_parsed(model, parsed, top_k=top_k, columns=columns)), warned


def _answer(model: Any, body: bytes, max_cases: int | None = None) -> tuple[str, list[str]]:
    """The JSON answer to a request body (MLflow's encoder: each float as its shortest round-trip
    text) and its warnings; more than ``max_cases`` cases is :class:`TooManyCasesError`."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    records, params = parse_body(body, max_cases)
    result, warned = score_request(model, records, params)
    out = io.StringIO()
    predictions_to_json(result, out, {"warnings": warned} if warned else None)
    return out.getvalue(), warned


def _log_to_stderr() -> None:
    """The server's own lines (the model served, refused requests, warnings) on standard error
    beside uvicorn's, once per process."""
    if not _LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     kneepain: %(message)s"))
        _LOG.addHandler(handler)
        _LOG.setLevel(logging.INFO)


def _error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"error_code": code, "message": message}), status_code=status, media_type=_JSON)


def create_app(model: Any = None):
    """The ASGI application (FastAPI). ``model``: a loaded model, a model URI or folder, or None for
    ``$KNEEPAIN_SERVE_MODEL`` (what ``kneepain serve`` sets; uvicorn calls this as a factory)."""
    from mlflow.version import VERSION

    from pipeline.serve.loading import LoadedModel, load_model

    loaded = model if isinstance(model, LoadedModel) else load_model(model or os.environ.get(MODEL_ENV) or None)
    limit, max_cases = max_request_bytes(), max_request_cases()
    _log_to_stderr()
    manifest = loaded.manifest
    _LOG.info("process %d serves %s (the %s model of MLflow run %s); requests up to %s bytes and %s cases",
              os.getpid(), loaded.source, manifest.get("winner", "?"), manifest.get("mlflow_run_id", "?"), f"{limit:,}",
              f"{max_cases:,}")
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
        too_large = _error(413, "REQUEST_TOO_LARGE", f"the request body is larger than {limit:,} bytes, the limit "
                                                     f"(--max-request-mb or {MAX_REQUEST_ENV}); send fewer cases "
                                                     "per request.")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return too_large
        mime, *parameters = (request.headers.get("content-type") or "").split(";")
        mime = mime.strip().lower()
        if mime != _JSON:
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", f"send the cases as {_JSON} (got {mime or 'no type'!r}).")
        # JSON is UTF-8 (RFC 8259); MLflow's server refuses another charset too
        if (charset := _charset(parameters)) not in (None, "utf-8", "utf8"):
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", f"send the body as UTF-8 (charset {_shown(charset)} is not "
                                                         "supported).")
        encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", f"send the body uncompressed (Content-Encoding "
                                                         f"{_shown(encoding)} is not supported).")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                return too_large
        try:
            # reading, scoring and encoding on a worker thread: the event loop keeps answering
            # /ping and other requests meanwhile
            text, warned = await run_in_threadpool(_answer, loaded, bytes(body), max_cases)
        except TooManyCasesError as err:
            return _error(413, "REQUEST_TOO_LARGE", str(err))
        except (CaseValidationError, BatchInputError, TypeError, UnicodeError) as err:
            message = str(err) if not isinstance(err, UnicodeError) else \
                "a text in the request is not valid Unicode (it holds a lone surrogate); send valid UTF-8 text."
            _LOG.info("400: %s", message if len(message) <= 300 else message[:300] + "...")
            return _error(400, "INVALID_PARAMETER_VALUE", message)
        except Exception:  # never a stack trace or path in an answer: the log has it
            _LOG.exception("scoring failed")
            return _error(500, "INTERNAL_ERROR", "the server could not score this request; its log has the details.")
        for warning in warned:
            _LOG.warning(warning)
        return Response(text, status_code=200, media_type=_JSON)

    return app
