"""perdure's HTTP ingress: Restate's ingress API (calls, sends, idempotency, attach) over ASGI.

    from perdure.ingress import Ingress

    async with perdure.Engine(app, store="sqlite:///perdure.db") as engine:
        served = await perdure.runtime.http.serve(Ingress(engine), "127.0.0.1", 8080)

Modules: `routing` (paths → targets), `requests` (body, headers, content type), `delay`
(`?delay=` formats), `responses` (Restate's response and error shapes), `app` (the ASGI app).
"""

from perdure.ingress.app import Ingress

__all__ = ["Ingress"]
