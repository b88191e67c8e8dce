"""Accuracy, latency and CPU of the local STT engine (pocketsphinx) on 8 kHz mu-law calls.

Run: ``.venv/bin/python -m bench.bench_local_stt`` (about a minute; needs espeak-ng, and uses the
human clips of Debian's ``pocketsphinx-testdata`` when installed).

Each test set becomes one continuous call: 0.5 s of silence, then every utterance followed by
1.5 s of silence, at 8 kHz, mu-law encoded and decoded (what Telnyx delivers), fed to
`SphinxStream` in 60 ms batches exactly as `LocalStt` does, minus the thread hop. Finals are
matched to utterances by time. Columns:

* WER: word error rate over the set (lower-cased words, no number normalisation);
* no final: utterances that produced no final at all;
* endpoint: audio from the end of the voiced sound to the final's ``received_at_s`` (the
  endpointer's hangover plus batching), median and max;
* end_utt: wall time of the batch that produced the final (``end_utt()`` dominates), median and
  max; the final reaches the Brain ``endpoint + end_utt`` after the caller stops;
* CPU/audio s: worker-thread CPU per second of call audio (real-time factor of one call);
* worst call: the longest single pocketsphinx call, during which the GIL is held and the trio
  loop cannot run.

Sets: ``espeak``: 10 IVR sentences by espeak-ng en-us. ``human``: the LibriVox clips and
"go forward ten meters" from pocketsphinx-testdata (read speech, downsampled to 8 kHz). The
grammar rows constrain recognition to a list of phrases: the 10 IVR sentences plus the 6 human
transcripts (16 alternatives) - the IVR case, where the script knows what it may hear. The last
row feeds the human clips to a grammar of the IVR sentences only (everything said is out of
grammar): every final there is a false accept.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import statistics
import time
import wave
from collections.abc import Sequence
from typing import Final

import attrs
import numpy as np

from actors.messages import AudioFrame, TranscriptFinal
from actors.pocketsphinx_decoder import SphinxOptions, SphinxStream
from bench.emulators.caller_audio import encode, espeak_audio, espeak_available, silence
from protocols.audio import PCMU_8K, resample

TESTDATA: Final = "/usr/share/pocketsphinx/test/data"
IVR_SENTENCES: Final = (
    "I want to check my balance", "talk to an agent", "yes please", "no thanks", "goodbye",
    "I would like to pay my bill", "what are your opening hours", "please repeat that",
    "I need to speak to a representative", "cancel my order",
)
LEAD_IN_S: Final = 0.5
GAP_S: Final = 1.5
BATCH_FRAMES: Final = 3
_WORD = re.compile(r"[a-z']+")


@attrs.frozen
class Utterance:
    text: str
    pcm: np.ndarray  # 8 kHz int16


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def espeak_set() -> list[Utterance]:
    return [Utterance(s, espeak_audio(s, "en-us")) for s in IVR_SENTENCES]


def human_set() -> list[Utterance]:
    if not os.path.isdir(TESTDATA):
        return []
    refs = {}
    with open(f"{TESTDATA}/librivox/transcription") as lines:
        for line in lines:
            text, _, fileid = line.rpartition("(")
            refs[fileid.strip(" )\n")] = text.replace("<s>", "").replace("</s>", "").strip()
    clips = []
    for path in sorted(glob.glob(f"{TESTDATA}/librivox/*.wav")):
        with wave.open(path) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.int16)
            rate = wav.getframerate()
        clips.append(Utterance(refs[os.path.basename(path)[:-4]], resample(pcm, rate, 8000)))
    forward = np.fromfile(f"{TESTDATA}/goforward.raw", "<i2").astype(np.int16)
    clips.append(Utterance("go forward ten meters", resample(forward, 16000, 8000)))
    return clips


def voiced_span(pcm: np.ndarray) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 500)
    return loud[0] / 8000, (loud[-1] + 1) / 8000


def as_call(utterances: Sequence[Utterance]) -> tuple[list[AudioFrame], list[tuple[float, float]]]:
    parts, spans, cursor = [silence(LEAD_IN_S)], [], LEAD_IN_S
    for utt in utterances:
        first, last = voiced_span(utt.pcm)
        spans.append((cursor + first, cursor + last))
        parts += [utt.pcm, silence(GAP_S)]
        cursor += len(utt.pcm) / 8000 + GAP_S
    audio = encode(np.concatenate(parts))
    return [AudioFrame(round(i / 8000, 6), audio[i:i + 160]) for i in range(0, len(audio), 160)], spans


@attrs.frozen
class Row:
    config: str
    test_set: str
    wer: float
    ref_words: int
    no_final: int
    endpoint_ms: tuple[float, float]
    end_utt_ms: tuple[float, float]
    cpu_per_audio_s: float
    worst_call_ms: float
    load_s: float
    utterances: int = 0
    false_accepts: int | None = None


def run(config: str, options: SphinxOptions, test_set: str, utterances: Sequence[Utterance]) -> Row:
    frames, spans = as_call(utterances)
    began = time.perf_counter()
    stream = SphinxStream(PCMU_8K, options).open()
    load_s = time.perf_counter() - began
    finals: list[tuple[TranscriptFinal, float]] = []  # with the wall time of its batch
    for i in range(0, len(frames), BATCH_FRAMES):
        began = time.perf_counter()
        events = stream.feed(frames[i:i + BATCH_FRAMES])
        took = time.perf_counter() - began
        finals += [(e, took) for e in events if isinstance(e, TranscriptFinal)]
    finals += [(e, 0.0) for e in stream.finish() if isinstance(e, TranscriptFinal)]
    errors = ref_words = no_final = 0
    endpoint, end_utt = [], []
    for utt, (start_s, end_s) in zip(utterances, spans, strict=True):
        mine = [(f, took) for f, took in finals if start_s - 0.5 < f.start_s < end_s + GAP_S / 2]
        hyp = [w for f, _ in mine for w in words(f.text)]
        errors += edit_distance(words(utt.text), hyp)
        ref_words += len(words(utt.text))
        if not mine:
            no_final += 1
            continue
        endpoint.append((mine[-1][0].received_at_s - end_s) * 1000)
        end_utt.append(mine[-1][1] * 1000)
    return Row(config, test_set, errors / ref_words, ref_words, no_final, _med_max(endpoint),
               _med_max(end_utt), stream.cpu_s / stream.audio_s, stream.worst_call_ms, load_s,
               len(utterances), false_accepts=len(finals) if options.constrained and config.endswith("OOG") else None)


def _med_max(values: list[float]) -> tuple[float, float]:
    return (statistics.median(values), max(values)) if values else (float("nan"), float("nan"))


def main() -> None:
    if not espeak_available():
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    sets = {"espeak": espeak_set(), "human": human_set()}
    if not sets["human"]:
        print("pocketsphinx-testdata is not installed: human clips skipped")
        del sets["human"]
    phrases = IVR_SENTENCES + tuple(u.text for u in sets.get("human", []))
    configs = {
        "free LM, 1 pass (default)": SphinxOptions(),
        "free LM, +fwdflat +bestpath": SphinxOptions(fwdflat=True, bestpath=True),
        "free LM, cmninit 40,3,-1": SphinxOptions(cmninit="40,3,-1"),
        "grammar (16 phrases)": SphinxOptions(phrases=phrases),
        "grammar, +bestpath": SphinxOptions(phrases=phrases, bestpath=True),
    }
    rows = [run(name, options, set_name, utts)
            for name, options in configs.items() for set_name, utts in sets.items()]
    if "human" in sets:
        rows.append(run("IVR grammar, human speech OOG", SphinxOptions(phrases=IVR_SENTENCES),
                        "human", sets["human"]))
    print(f"# bench_local_stt: pocketsphinx on 8 kHz mu-law ({platform.python_version()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    print("| config | set | WER | no final | endpoint ms med/max | end_utt ms med/max "
          "| CPU per audio s | worst call ms | load s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        wer = (f"{r.wer:.1%} of {r.ref_words}" if r.false_accepts is None
               else f"{r.false_accepts} false accepts / {r.utterances}")
        print(f"| {r.config} | {r.test_set} | {wer} | {r.no_final} | {r.endpoint_ms[0]:.0f} / "
              f"{r.endpoint_ms[1]:.0f} | {r.end_utt_ms[0]:.0f} / {r.end_utt_ms[1]:.0f} | "
              f"{r.cpu_per_audio_s:.3f} | {r.worst_call_ms:.0f} | {r.load_s:.2f} |")


if __name__ == "__main__":
    main()
