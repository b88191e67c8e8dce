"""The listening half end to end: Telnyx caller → /stream/media → TelnyxRx → DeepgramLink →
Deepgram emulator → transcripts → relay subscribers, over real loopback sockets."""

from __future__ import annotations

import pytest
import trio

from bench.emulators.telnyx_caller import CallRejected
from tests.e2e.conftest import STATIC_TOKEN, Stack, run_caller, spans, subscribe_all

SCRIPT = ("hola buenos dias", "quiero saber el saldo de mi cuenta", "gracias hasta luego")
DURATIONS = (1.2, 2.0, 1.4)


def turns(events: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    by_turn: dict[str, list[dict[str, object]]] = {}
    for e in events:
        if e["type"] in ("partial", "final"):
            by_turn.setdefault(str(e["turnId"]), []).append(e)
    return by_turn


async def test_three_utterances_reach_subscribers_as_partials_then_finals(stack: Stack) -> None:
    token = stack.issue_call("call-a", SCRIPT)
    sub = await stack.nursery.start(subscribe_all, stack)
    record = await run_caller(stack.caller(token, DURATIONS, hangup_after_s=8.0))
    events = await sub.wait_ended("call-a")

    assert events[0]["type"] == "call" and events[0]["state"] == "started"
    assert events[0]["callControlId"] == record.call_control_id
    assert events[0]["streamId"] == record.stream_id
    assert events[-1]["type"] == "call" and events[-1]["state"] == "ended"
    assert events[-1]["reason"] == "telnyx stop"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    by_turn = turns(events)
    assert list(by_turn) == ["t-1", "t-2", "t-3"]
    for (turn, evs), text, (start_s, end_s) in zip(by_turn.items(), SCRIPT,
                                                   spans(DURATIONS), strict=True):
        kinds = [e["type"] for e in evs]
        assert kinds[-1] == "final" and "partial" in kinds[:-1], (turn, kinds)
        assert kinds.index("final") == len(kinds) - 1  # every partial came before the final
        final = evs[-1]
        assert final["text"] == text and final["speaker"] == "customer"
        # Call-time milliseconds, close to where the caller's audio put the utterance.
        assert abs(int(final["tsStart"]) - start_s * 1000) < 150
        assert abs(int(final["tsEnd"]) - end_s * 1000) < 150
        for partial in evs[:-1]:
            assert text.startswith(str(partial["text"]))
    assert record.ended_by == "stop"


async def test_deepgram_dropped_mid_utterance_still_delivers_it_whole(stack: Stack) -> None:
    token = stack.issue_call("call-drop", SCRIPT[:2])
    stack.deepgram.drop_after_audio_s = 0.5 + 1.2 + 1.0 + 1.0  # inside the second utterance
    sub = await stack.nursery.start(subscribe_all, stack)
    await run_caller(stack.caller(token, DURATIONS[:2], hangup_after_s=6.0))
    events = await sub.wait_ended("call-drop")

    finals = [e for e in events if e["type"] == "final"]
    assert [f["text"] for f in finals] == list(SCRIPT[:2])
    second_start, second_end = spans(DURATIONS[:2])[1]
    assert abs(int(finals[1]["tsStart"]) - second_start * 1000) < 150  # still in call time
    assert abs(int(finals[1]["tsEnd"]) - second_end * 1000) < 150
    connections = [c for c in stack.deepgram.connections if c.rejected_status is None]
    assert len(connections) == 2 and connections[0].dropped


async def test_a_stranger_is_refused_at_the_handshake_and_no_call_exists(stack: Stack) -> None:
    for token in (None, "not-a-token"):
        with pytest.raises(CallRejected) as info:
            await run_caller(stack.caller(token, (1.0,)))
        assert info.value.status_code == 401
    assert not stack.service.registry.calls
    assert stack.service.relay.hub.statistics().events_total == 0
    assert not stack.deepgram.connections


async def test_a_stream_upgraded_on_a_reused_connection_is_served_through_asgi(
        stack: Stack) -> None:
    """The front door only sees a connection's first request; a later upgrade reaches hypercorn,
    and the same route answers it there: refused without a token, accepted with one."""
    host, port = stack.base_url.removeprefix("http://").split(":")
    for token, status in ((b"wrong", b"401"), (STATIC_TOKEN.encode(), b"101")):
        sock = trio.socket.socket()
        await sock.connect((host, int(port)))
        async with trio.SocketStream(sock) as stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            with trio.fail_after(5):
                while not answer.endswith(b"ok"):
                    answer += await stream.receive_some()
            await stream.send_all(
                b"GET /stream/media HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\nx-telnyx-streaming-auth-token: " + token
                + b"\r\n\r\n")
            answer = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in answer:
                    answer += await stream.receive_some()
            assert answer.split(b" ")[1] == status, answer
    assert not stack.service.registry.calls  # the accepted one never sent start


async def test_static_token_is_accepted(stack: Stack) -> None:
    sub = await stack.nursery.start(subscribe_all, stack)
    await run_caller(stack.caller(STATIC_TOKEN, (1.0,), hangup_after_s=3.0))
    with trio.fail_after(10):
        while not any(e.get("state") == "ended" for e in sub.events):
            await trio.sleep(0.01)
    assert sub.events[0]["state"] == "started"


@pytest.mark.parametrize("end_with", ["stop", "close", "drop"])
async def test_every_ending_closes_deepgram_gracefully_and_leaves_nothing(
        stack: Stack, end_with: str) -> None:
    token = stack.issue_call(f"call-{end_with}", SCRIPT[:1])
    sub = await stack.nursery.start(subscribe_all, stack)
    await run_caller(stack.caller(token, DURATIONS[:1], hangup_after_s=3.0, end_with=end_with))
    events = await sub.wait_ended(f"call-{end_with}")
    assert [e["text"] for e in events if e["type"] == "final"] == [SCRIPT[0]]
    expected = "telnyx stop" if end_with == "stop" else "telnyx socket closed"
    assert events[-1]["reason"] == expected
    (conn,) = stack.deepgram.connections
    assert "CloseStream" in conn.controls and conn.close_code == 1000
    with trio.fail_after(5):  # 'call ended' can precede the Speaker's own (bounded) close
        while stack.service.registry.calls:
            await trio.sleep(0.01)


async def test_service_shutdown_ends_calls_with_1001_and_closes_deepgram(stack: Stack) -> None:
    token = stack.issue_call("call-shutdown", SCRIPT)
    sub = await stack.nursery.start(subscribe_all, stack)
    caller = stack.caller(token, DURATIONS, hangup_after_s=60.0)
    async with trio.open_nursery() as nursery:
        records = []

        async def call() -> None:
            records.append(await run_caller(caller))

        nursery.start_soon(call)
        with trio.fail_after(10):
            while not [e for e in sub.events if e["type"] == "final"]:
                await trio.sleep(0.01)
        stack.stop.set()
    (record,) = records
    assert record.ended_by == "server_closed" and record.close_code == 1001
    (conn,) = stack.deepgram.connections
    assert "CloseStream" in conn.controls and conn.close_code == 1000
    assert not stack.service.registry.calls


async def test_fifty_concurrent_calls_keep_their_transcripts_apart(stack: Stack) -> None:
    n = 50
    sub = await stack.nursery.start(subscribe_all, stack)
    async with trio.open_nursery() as nursery:
        for i in range(n):
            token = stack.issue_call(f"call-{i}", (f"llamada {i} primera", f"llamada {i} segunda"))
            nursery.start_soon(run_caller, stack.caller(token, (1.0, 1.0), hangup_after_s=4.0))
    for i in range(n):
        events = await sub.wait_ended(f"call-{i}", timeout=30)
        finals = [e["text"] for e in events if e["type"] == "final"]
        assert finals == [f"llamada {i} primera", f"llamada {i} segunda"], (i, finals)
    assert len(stack.deepgram.connections) == n


async def test_with_relay_url_events_go_to_the_external_relay() -> None:
    from centralita.composition import build_relay_app
    from centralita.server import serve_until
    from centralita.settings import Settings
    from tests.e2e.conftest import open_stack

    async with trio.open_nursery() as nursery:
        relay_settings = Settings(host="127.0.0.1", port=0)
        relay_app, external = build_relay_app(relay_settings)
        relay_stop = trio.Event()
        (relay_url,) = await nursery.start(serve_until, relay_app, relay_settings, relay_stop)
        async with open_stack(relay_url=relay_url, call_mode="listen") as stack:
            token = stack.issue_call("call-ext", SCRIPT[:1])
            await run_caller(stack.caller(token, DURATIONS[:1], hangup_after_s=3.0))
            with trio.fail_after(10):
                while "call-ext" in stack.service.registry.calls or not stack.service.registry:
                    await trio.sleep(0.01)
            local = stack.service.relay.hub.statistics().events_total
        sub = external.hub.subscribe("call-ext")
        import json as _json
        events = [_json.loads(d.text if hasattr(d, "text") else d) for d in sub.queue]
        relay_stop.set()
    assert local == 0  # nothing went to the service's own hub
    assert [e["type"] for e in events][0] == "call" and events[-1]["state"] == "ended"
    assert [e["text"] for e in events if e["type"] == "final"] == [SCRIPT[0]]
