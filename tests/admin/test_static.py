"""The web console's files under /ui/: served from package data when the console is on, and
nothing else (no path outside the folder, no unknown type)."""

from __future__ import annotations

import re
from importlib import resources

from .conftest import OpenAdmin


async def test_the_console_is_served_under_ui(open_admin: OpenAdmin) -> None:
    env = await open_admin(console=True)
    moved = await env.client.get("/ui")
    assert (moved.status_code, moved.headers["location"]) == (308, "/ui/")
    index = await env.client.get("/ui/")
    assert index.status_code == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="js/app.js">' in index.text
    # Every module the page imports is served, as JavaScript (browsers refuse modules otherwise).
    pending, seen = ["js/app.js"], set()
    while pending:
        path = pending.pop()
        seen.add(path)
        script = await env.client.get(f"/ui/{path}")
        assert script.status_code == 200, path
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert script.headers["cache-control"] == "no-cache"
        folder = path.rsplit("/", 1)[0]
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', script.text):
            joined = f"{folder}/{target}".replace("/./", "/")
            resolved = re.sub(r"[^/]+/\.\./", "", joined)
            if resolved not in seen:
                pending.append(resolved)
    shipped = resources.files("perdure.admin").joinpath("console", "js", "pages")
    assert {f"js/pages/{p.name}" for p in shipped.iterdir()} <= seen  # no page left unreachable
    assert (await env.client.get("/ui/style.css")).headers["content-type"] == "text/css; charset=utf-8"
    for bad in ("/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/js/../../static.py", "/ui/.hidden.js", "/ui/x.py"):
        assert (await env.client.get(bad)).status_code == 404, bad


async def test_the_console_is_off_unless_asked_for(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    assert (await env.client.get("/ui/")).status_code == 404
    assert (await env.client.get("/health")).status_code == 200
