"""https:// deployments: HTTP/2 negotiated with ALPN (bidi) and httpx over TLS (request/response)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perdure.protocol import messages as pm
from perdure.runtime.remote import RemoteOptions

from .driver import Driver, deployment, output_of


@pytest.mark.parametrize(("bidi", "http"), [(True, "2"), (False, "2"), (False, "1.1")])
async def test_tls_deployment(tls_sdk: tuple[str, Path], bidi: bool, http: str) -> None:
    url, cert = tls_sdk
    driver = Driver(
        deployment(url, bidi=bidi, http=http, version=7), options=RemoteOptions(ca_file=str(cert))
    )
    try:
        inv = driver.call("Greeter", "shout", "tls")
        end, attempts = await driver.complete(inv)
    finally:
        await driver.invoker.stop()
    assert isinstance(end, pm.EndMessage), end
    assert output_of(driver.messages(inv)) == "TLS!"
    assert attempts == (1 if bidi else 2)


async def test_untrusted_certificate(tls_sdk: tuple[str, Path]) -> None:
    url, _ = tls_sdk
    driver = Driver(deployment(url, bidi=True, http="2"))
    try:
        error = await driver.ended(driver.call("Greeter", "greet", "x"))
    finally:
        await driver.invoker.stop()
    assert error.code == 503
    assert error.message.startswith(f"cannot reach deployment {url}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in error.message
