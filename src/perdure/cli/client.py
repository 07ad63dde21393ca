"""A small synchronous client of the admin API for the management commands; failures become `CliError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from .output import CliError

DEFAULT_ADMIN_URL = "http://127.0.0.1:9070"
ADMIN_URL_ENV = "PERDURE_ADMIN_URL"
TIMEOUT_S = 15.0


def segment(value: str) -> str:
    """One URL path segment (keys and ids may hold '/', spaces, ...)."""
    return quote(value, safe="")


class AdminClient:
    """`GET`/`POST`/`PATCH` JSON against the admin API at `url`.

    AdminClient("http://127.0.0.1:9070").get("/services")
    """

    def __init__(self, url: str, *, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise CliError(
                f"bad admin URL {url!r}: it must start with http:// — e.g. --admin-url {DEFAULT_ADMIN_URL}"
            )
        try:
            self._http = httpx.Client(
                base_url=self.url, timeout=timeout, trust_env=False, headers={"accept": "application/json"}
            )
        except (httpx.InvalidURL, ValueError) as e:
            raise CliError(f"bad admin URL {url!r}: {e} — e.g. --admin-url {DEFAULT_ADMIN_URL}") from None

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        hints: Mapping[int, str] | None = None,
    ) -> Any:
        """The decoded JSON answer; raises `CliError` with the cause and the fix otherwise.

        `hints` maps an HTTP status to the fix appended to its message, e.g. {404: "list them with …"}."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=clean, json=json)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise CliError(
                f"cannot reach the admin API at {self.url} — is `perdure dev` running? "
                f"set --admin-url or {ADMIN_URL_ENV}"
            ) from None
        except httpx.TimeoutException:
            raise CliError(
                f"the admin API at {self.url} did not answer within {self._http.timeout.read:g} s — "
                "is the server overloaded or stuck? try again, or check its log"
            ) from None
        except httpx.HTTPError as e:
            raise CliError(
                f"request to the admin API at {self.url} failed: {e} — check --admin-url"
            ) from None
        return self._decode(method, path, response, hints or {})

    def _decode(self, method: str, path: str, response: httpx.Response, hints: Mapping[int, str]) -> Any:
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
            if response.is_success or response.status_code == 404:
                raise CliError(
                    f"{self.url} did not answer like a perdure admin API ({response.status_code}, "
                    f"{response.headers.get('content-type', 'no content type')}) — point --admin-url at the "
                    "admin port (9070 by default), not the ingress"
                ) from None
        if response.is_success:
            return body
        message = body.get("message") if isinstance(body, dict) else None
        if not message:
            message = response.text.strip()[:200] or response.reason_phrase
        hint = hints.get(response.status_code)
        fix = f" — {hint}" if hint else ""
        raise CliError(f"{message} ({response.status_code} from {method} {path}){fix}")

    def get(self, path: str, *, hints: Mapping[int, str] | None = None, **params: Any) -> Any:
        return self.request("GET", path, params=params, hints=hints)

    def post(self, path: str, body: Any, *, hints: Mapping[int, str] | None = None) -> Any:
        return self.request("POST", path, json=body, hints=hints)

    def patch(self, path: str, *, hints: Mapping[int, str] | None = None) -> Any:
        return self.request("PATCH", path, hints=hints)
