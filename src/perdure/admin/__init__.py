"""perdure's admin API: an ASGI app over a running engine, in the shape of Restate's (port 9070).

Serve it next to the engine::

    from perdure.admin import Admin
    from perdure.runtime.http import serve

    async with perdure.Engine(app, store="sqlite:///perdure.db") as engine:
        served = await serve(Admin(engine, ingress_url="http://127.0.0.1:8080/"), "127.0.0.1", 9070)
"""

from __future__ import annotations

from perdure.admin.app import Admin

__all__ = ["Admin"]
