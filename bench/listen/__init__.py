"""Helpers of ``bench/bench_listen.py`` (issue #5: the listening half's added latency and CPU).

Each module here runs as its own process, started and pinned by the orchestrator:

- :mod:`bench.listen.service`: the service with listening calls and a chosen ``batch_frames``;
- :mod:`bench.listen.light_caller`: N Telnyx media streams from one stdlib epoll loop;
- :mod:`bench.listen.deepgram_sink`: a light ``/v1/listen`` server that timestamps every frame;
- :mod:`bench.listen.listen_emulator`: the protocol-faithful Deepgram emulator, for transcripts;
- :mod:`bench.listen.transcript_latency`: a few callers and a relay subscriber, timing finals.
"""
