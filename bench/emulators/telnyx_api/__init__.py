"""A Telnyx Call Control v2 server (REST + signed webhooks + the far end of each call) for tests.

Speaks telnyx.md §3 (REST) and §4 (webhooks) through the pure codecs in
:mod:`protocols.telnyx_call_control` and :mod:`protocols.telnyx_signature`, as an ASGI app on
hypercorn's trio worker over real loopback sockets. The far end of every call is scripted
(:class:`CalleeScript`) and its media leg is a :class:`~bench.emulators.telnyx_caller.TelnyxCaller`
that dials our ``stream_url`` like Telnyx does::

    em = TelnyxApiEmulator(api_key="KEY", webhook_url=hook_url, callee_for=lambda to: CalleeScript(
        answer_after_s=0.5, audio=pcmu_bytes, hangup_after_s=8.0))
    base = await nursery.start(em.serve)       # "http://127.0.0.1:PORT/v2"; TELNYX_API_BASE=base
    settings.telnyx_public_key = em.public_key_b64
    ...
    call = em.calls[call_control_id]           # state, dial_body, commands, webhooks, caller_record

REST (every request needs ``Authorization: Bearer <api_key>``, else 401 code ``10009``):

- ``POST /v2/calls`` (dial) is validated: ``connection_id``, ``to`` (E.164 or ``sip:``; a list
  is allowed), ``from`` (E.164), ``client_state`` (canonical base64), ``webhook_url``,
  ``timeout_secs``, ``time_limit_secs`` and consistent ``stream_*`` fields (a ws/wss URL, known
  codecs/tracks/rates, the bidirectional codec and rate only with ``mode=rtp``, no stream option
  without a ``stream_url``). Bad input: 422 with one ``errors[]`` entry per problem, each with
  ``source.pointer`` (codes: ``10004`` missing, ``10016`` not E.164, ``10003`` bad URL, ``10015``
  otherwise); a body that is not a JSON object: 400 ``10015``. Success: 200 ``{data:
  {call_control_id: "v3:…", call_leg_id, call_session_id, is_alive: false, record_type: "call",
  client_state}}`` and the call starts ringing.
- ``POST /v2/calls/{id}/actions/{verb}`` for :data:`VERBS` → 200 ``{"data":{"result":"ok"}}``;
  an unknown id or an ended call → 422 ``90018`` "Call has already ended"; another verb → 404
  ``10005``. ``speak`` needs ``payload`` and ``voice``, ``playback_start`` exactly one source,
  ``streaming_start`` a valid stream (422 otherwise). A ``client_state`` on a command replaces
  the call's, and later webhooks echo it.
- ``GET /v2/calls/{id}``: the call's status (``is_alive``).
- ``command_id``: the same id within :data:`COMMAND_ID_WINDOW_S` (per call for actions, per
  account for dials) gets the first 200 answer again and does nothing (recorded as duplicate).
  Only 200s are remembered, so a retry after a 5xx is executed.

The far end (outbound: ``callee_for(to)``; inbound: the script given to
:meth:`TelnyxApiEmulator.place_inbound_call`). Webhooks in this order, per call and one at a time:

- outbound: ``call.initiated`` (outgoing, ``bridging``) → ring ``answer_after_s`` → ``answer``:
  ``call.answered`` → ``streaming.started`` once the caller has sent ``connected`` + ``start``
  to the dial's ``stream_url`` (header ``x-telnyx-streaming-auth-token`` = ``stream_auth_token``;
  codec from ``stream_codec``, else ``stream_bidirectional_codec``, else PCMU) → … →
  ``call.hangup`` (``normal_clearing``; ``hangup_source`` callee when the script hangs up after
  ``hangup_after_s``, caller after our ``hangup`` action) → ``streaming.stopped``. The caller
  sends ``stop`` and closes before ``call.hangup`` goes out. ``busy`` / ``reject`` /
  ``no_answer``: after the ring, ``call.hangup`` with ``user_busy`` / ``call_rejected`` /
  ``timeout``. Our hangup while ringing: ``originator_cancel``. The dial's ``timeout_secs``
  cuts a longer ring (``timeout``) and ``time_limit_secs`` a longer call (``time_limit``).
- inbound: ``call.initiated`` (incoming, ``parked``) → our ``answer`` (stream_* as on dial) →
  ``call.answered`` → ``streaming.started`` → … as above with the roles swapped
  (``hangup_source`` callee when we hang up). Unanswered after ``give_up_after_s``:
  ``originator_cancel``.
- ``streaming.failed`` (``connection_failed``) when the WebSocket cannot be opened or is
  refused; ``streaming_start`` / ``streaming_stop`` open and close more streams on a live call.
- ``speak`` → ``call.speak.started``, ``call.speak.ended`` after ``len(payload) /``
  :data:`SPEAK_CHARS_PER_S`. ``playback_start`` fetches ``audio_url`` with httpx (recorded in
  ``playback_fetches``) → ``call.playback.started``, ``call.playback.ended`` (``completed``)
  after the file's duration (WAV header, else 128 kbit/s mp3) or ``playback_duration_s``; a
  failed fetch gives only ``call.playback.ended`` with ``file_not_found``. ``playback_stop``
  ends playbacks and speaks with ``cancelled``; a hangup ends them with ``call_hangup`` (before
  ``call.hangup``). ``transcription_start`` → the script's ``transcripts`` as
  ``call.transcription`` events, each ``at_s`` after the command.

Times in scripts are call time; every wait is divided by ``speed`` (and the caller streams at
``speed`` x real time).

Webhook delivery: POST to the call's webhook URL (the dial's or answer's ``webhook_url``, else
the emulator's ``webhook_url``), the body from :func:`encode_webhook` with ``meta`` ``{attempt,
delivered_to}``, signed with the emulator's Ed25519 key (``telnyx-signature-ed25519``,
``telnyx-timestamp``). Non-2xx or no answer: retried up to ``webhook_attempts`` times with
``webhook_backoff_s * attempt`` between (same ``data.id``, re-signed). Every attempt is a
:class:`Delivery` in ``deliveries`` (and the call's).

Fault knobs (attributes; change them at any time): ``duplicate_webhooks`` (each event delivered
twice, same id), ``shuffle`` (events that become due within ``shuffle_window_s`` of each other
go out in a random order; ``call.initiated`` stays first and ``call.initiated`` /
``call.answered`` / ``call.hangup`` keep their relative order), ``bad_signature_next``,
``stale_timestamp_next`` (signed 600 s ago), ``missing_signature_next`` (counts of deliveries
to spoil, each attempt consumes one; the retry is signed properly), ``api_down`` (``"503"``:
every REST call gets 503; ``"refuse"``: the listener is closed, connections are refused, and
setting it back to None reopens the same port), ``stream_never_connects`` (answered, no
WebSocket, no streaming webhook).

Layout: :mod:`.records` (constants, scripts, records), :mod:`.checks` (request validation),
:mod:`.emulator` (REST), :mod:`.far_end` (a call's life, streams, speak/playback/transcription),
:mod:`.webhooks` (signed delivery and its faults).
"""

from __future__ import annotations

from bench.emulators.telnyx_api.emulator import TelnyxApiEmulator
from bench.emulators.telnyx_api.records import (
    COMMAND_ID_WINDOW_S,
    SPEAK_CHARS_PER_S,
    VERBS,
    ApiDown,
    CalleeScript,
    Delivery,
    EmulatedCall,
    EmulatedStream,
    PlaybackFetch,
    RecordedCommand,
    ScriptedTranscript,
)

__all__ = [
    "COMMAND_ID_WINDOW_S",
    "SPEAK_CHARS_PER_S",
    "VERBS",
    "ApiDown",
    "CalleeScript",
    "Delivery",
    "EmulatedCall",
    "EmulatedStream",
    "PlaybackFetch",
    "RecordedCommand",
    "ScriptedTranscript",
    "TelnyxApiEmulator",
]
