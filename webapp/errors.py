"""Every error leaves as `{"error": {"code", "message"}}` with a matching status."""
from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from kombu.exceptions import OperationalError
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class APIError(Exception):
    """An error the API reports to the caller as is."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **extra) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, **extra):
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def _passed_on_headers(err: HTTPException) -> dict:
    """Headers an HTTP error carries for the client (Allow on a 405, Retry-After, WWW-Authenticate)."""
    headers = err.get_headers() if err.response is None else err.response.headers
    return {k: v for k, v in headers if k.lower() not in ("content-type", "content-length")}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def api_error(err: APIError):
        body, status = error_response(err.status, err.code, err.message, **err.extra)
        return body, status, err.headers

    @app.errorhandler(ValidationError)
    def validation_error(err: ValidationError):
        return error_response(400, "invalid_request", "request validation failed", fields=err.messages)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        body, status = error_response(err.code or 500, HTTP_CODES.get(err.code, "http_error"),
                                      err.description or err.name)
        return body, status, _passed_on_headers(err)

    # One place maps a broker/Redis outage to 503, whatever endpoint hit it.
    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(OperationalError)
    def backend_unavailable(err: Exception):
        log.warning("backend unavailable: %s", type(err).__name__)
        return error_response(503, "service_unavailable", "the queue backend (Redis) is unreachable; retry later")

    # Keys, usage and budgets read SQL only on a Redis miss; a database that is away (or a connection
    # pool that stays exhausted) is a 503 too.
    @app.errorhandler(SQLAlchemyError)
    def database_unavailable(err: SQLAlchemyError):
        log.warning("database unavailable: %s", type(getattr(err, "orig", None) or err).__name__)
        return error_response(503, "service_unavailable", "the key and usage database is unreachable; retry later")

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
