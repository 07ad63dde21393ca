"""The web console's files (`perdure/admin/console/`, package data), served under `/ui/`.

The console is plain HTML, CSS and JavaScript modules — nothing to build, no CDN: it works
offline and installs with the wheel. It only calls the documented admin API (relative URLs, so
it also works behind a proxy that mounts the admin API under a prefix).
"""

from __future__ import annotations

from importlib import resources

from perdure.admin.http import HTTPError, Response

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Revalidate on every load: a new perdure version brings new files under the same names.
_HEADERS = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}


def asset(path: str) -> Response:
    """The file at `path` under the console's folder (`""` is index.html); 404 for anything else.

    Only plain names of known types are served: no `..`, no hidden files, nothing outside the
    folder.
    """
    path = path or "index.html"
    parts = path.split("/")
    suffix = "." + parts[-1].rsplit(".", 1)[-1] if "." in parts[-1] else ""
    if suffix not in _TYPES or any(not p or p.startswith(".") for p in parts):
        raise HTTPError(404, f"no console file {path!r}")
    node = resources.files("perdure.admin").joinpath("console", *parts)
    if not node.is_file():
        raise HTTPError(404, f"no console file {path!r}")
    return Response(200, node.read_bytes(), dict(_HEADERS), content_type=_TYPES[suffix])


def redirect(location: str) -> Response:
    """`/ui` → `/ui/`, so that the page's relative URLs resolve under it."""
    return Response(308, {}, {"location": location})
