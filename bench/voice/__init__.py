"""Helpers of ``bench/bench_voice.py`` (issue #6: the runtime's own share of voice-to-voice latency).

Each module here runs as its own process, started and pinned by the orchestrator:

- :mod:`bench.voice.cloud`: the three cloud emulators (Deepgram listen, Anthropic Messages, Deepgram
  Aura) in one trio process, with the configured delays the figure subtracts;
- :mod:`bench.voice.callers`: N Telnyx callers at real time and a ``/ws?callId=*`` firehose
  subscriber collecting the ``latency`` waterfalls;

and :mod:`bench.voice.share` turns waterfalls into the runtime's share, stage by stage;
:mod:`bench.voice.profile_share` splits a py-spy profile of the service by actor.
"""
