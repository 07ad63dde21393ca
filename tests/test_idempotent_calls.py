"""Idempotency keys on calls and sends made from handlers: the callee runs once per key."""

from __future__ import annotations

from datetime import timedelta

import pytest

import perdure
from perdure import Context, HandlerOptions, Service
from perdure.testing import Harness

pytestmark = pytest.mark.usefixtures("backend")  # memory and PostgreSQL

payments = Service("payments", options=HandlerOptions(idempotency_retention=timedelta(hours=1)))
charged: list[str] = []


@payments.handler()
async def charge(ctx: Context, order: str) -> str:
    charged.append(order)
    return f"receipt-{len(charged)}"


checkout = Service("checkout")


@checkout.handler()
async def pay(ctx: Context, order: str) -> str:
    return await ctx.service_call(charge, arg=order, idempotency_key=f"charge-{order}")


@checkout.handler()
async def pay_later(ctx: Context, order: str) -> str:
    return await ctx.service_send(charge, arg=order, idempotency_key=f"later-{order}").invocation_id()


async def test_calls_and_sends_with_one_key_reach_the_callee_once() -> None:
    charged.clear()
    async with Harness(perdure.App([payments, checkout])) as h:
        first = await h.service_call(pay, arg="o1")
        again = await h.service_call(pay, arg="o1")  # a different caller invocation, the same key
        assert first == again == "receipt-1"
        assert charged == ["o1"]
        one = await h.service_call(pay_later, arg="o2")
        two = await h.service_call(pay_later, arg="o2")
        assert one == two
        await h.settle()
        assert charged == ["o1", "o2"]
        # after the callee's retention the key is free again, like at the ingress
        await h.advance(timedelta(hours=2))
        assert await h.sweep() >= 2
        assert await h.service_call(pay, arg="o1") == "receipt-3"
