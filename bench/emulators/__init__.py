"""Protocol-faithful stand-ins for the services Centralita talks to, served over real loopback sockets.

- :mod:`bench.emulators.deepgram_listen`: Deepgram live STT (``/v1/listen``) server with an energy
  VAD, scripted transcripts and fault injection.
- :mod:`bench.emulators.telnyx_caller`: a Telnyx media-stream client (the caller's side of a call)
  with paced 20 ms frames and Telnyx's playout/mark/clear semantics for what we send back.
- :mod:`bench.emulators.anthropic_messages`: Anthropic Messages API (``POST /v1/messages``) server
  for the official SDK: streamed and plain replies, TTFT and tokens/s pacing, fault injection.
- :mod:`bench.emulators.caller_audio`: synthetic caller audio (speech-like signal, silence, scripts).

Used by the tests, the demo and the load harness. Nothing here is imported by the service itself.
"""
