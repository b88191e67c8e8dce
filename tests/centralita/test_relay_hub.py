"""The hub without sockets: sequencing, backlog, gaps, retention and memory, on trio's MockClock."""

from __future__ import annotations

import gc
import json
import tracemalloc

import trio

from centralita.relay_hub import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER, RelayHub


def ev(call_id: str, n: int) -> dict[str, object]:
    return {"type": "final", "callId": call_id, "text": f"n{n}"}


def drain(sub) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    deliveries = list(sub.queue)
    sub.queue.clear()
    sub.scheduled = False
    return [json.loads(d.text) for d in deliveries]


async def test_seq_is_per_call_and_ts_from_the_wall_clock() -> None:
    hub = RelayHub(wall_clock=lambda: 1_700_000_000.25)
    assert [hub.publish("a", ev("a", i)) for i in range(3)] == [1, 2, 3]
    assert hub.publish("b", ev("b", 0)) == 1
    sub = hub.subscribe("a")
    first = drain(sub)[0]
    assert first["seq"] == 1 and first["ts"] == 1_700_000_000_250


async def test_slow_subscription_is_kicked_and_counted() -> None:
    hub = RelayHub(queue_frames=3)
    slow, fast = hub.subscribe("c"), hub.subscribe("c")
    for i in range(3):
        hub.publish("c", ev("c", i))
        drain(fast)
    hub.publish("c", ev("c", 3))
    assert slow.close_code == CLOSE_TRY_AGAIN_LATER and not slow.queue
    assert fast.close_code is None and len(fast.queue) == 1
    assert hub.statistics().slow_subscribers_closed_total == 1
    assert hub.statistics().subscribers == 1


async def test_close_all_kicks_everyone_and_refuses_newcomers() -> None:
    hub = RelayHub()
    subs = [hub.subscribe("a"), hub.subscribe("*")]
    hub.close_all()
    assert all(s.close_code == CLOSE_GOING_AWAY for s in subs)
    assert await hub.subscribe("b").next_frames() is None


async def test_backlog_lives_ttl_after_the_last_event(autojump_clock: trio.testing.MockClock) -> None:
    hub = RelayHub(backlog_ttl_s=100.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        hub.publish("a", ev("a", 1))
        await trio.sleep(60)
        hub.publish("a", ev("a", 2))  # refreshes
        await trio.sleep(60)
        assert hub.statistics().backlog_calls == 1
        await trio.sleep(40 + 25)  # past the TTL plus one janitor interval (ttl/4)
        assert hub.statistics().backlog_calls == 0
        nursery.cancel_scope.cancel()


async def test_ten_thousand_short_lived_rooms_leave_memory_at_baseline(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = RelayHub(backlog_ttl_s=1.0)

    def churn(prefix: str) -> None:
        for i in range(10_000):
            call = f"{prefix}-{i}"
            sub = hub.subscribe(call)
            for n in range(3):
                hub.publish(call, ev(call, n))
            hub.unsubscribe(sub)

    churn("warm")
    await trio.sleep(2)
    hub.expire_backlogs()
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    churn("cold")
    assert hub.statistics().backlog_calls == 10_000 and hub.statistics().rooms == 0
    await trio.sleep(2)
    assert hub.expire_backlogs() == 10_000
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert hub.statistics() .backlog_calls == 0
    assert after - baseline < 256 * 1024, f"{after - baseline} bytes kept after 10k rooms"


async def test_notify_fires_when_a_queue_turns_pending_and_on_every_kick() -> None:
    hub = RelayHub(queue_frames=3)
    calls: list[str] = []
    sub = hub.subscribe("n", notify=lambda s: calls.append(s.call_id))
    hub.publish("n", ev("n", 1))
    hub.publish("n", ev("n", 2))
    assert calls == ["n"]  # once per idle -> pending, not once per event
    assert [e["seq"] for e in drain(sub)] == [1, 2]
    hub.publish("n", ev("n", 3))
    assert calls == ["n", "n"]
    hub.close_all()
    assert calls == ["n", "n", "n"] and sub.close_code == CLOSE_GOING_AWAY
    hub.publish("n", ev("n", 4))  # kicked subscribers left their rooms: nothing more queued
    assert not sub.queue and hub.statistics().subscribers == 0


async def test_one_delivery_object_is_shared_by_every_queue_and_the_backlog() -> None:
    hub = RelayHub()
    subs = [hub.subscribe("s") for _ in range(3)] + [hub.subscribe("*")]
    hub.publish("s", ev("s", 1))
    assert len({id(s.queue[0]) for s in subs}) == 1
    assert hub.subscribe("s").queue[0] is subs[0].queue[0]
