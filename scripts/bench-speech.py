"""The agent's transcription against faster-whisper, side by side, on the same WAV files.

    scripts/bench-speech.sh [WAV ...]      (makes the venv, builds nothing; see there)

Both run Whisper tiny.en with int8 weights from the same CTranslate2 conversion, on one
thread, greedy (beam 1), without timestamps, each with its own Silero VAD in front. Each file
is transcribed `--runs` times by each; the table shows the median time per file (the agent's
`elapsed_ms`: reading, VAD, encoder and decoder of every segment; faster-whisper's wall time
of `transcribe` with its segments consumed) and the word error rate against the reference
text when one is known (a `transcripts.tsv` beside the file, or `NAME.txt`).
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()


def words(text):
    """The agent's WER normalisation (edge_core::speech::wer::normalize)."""
    out = []
    for w in re.sub(r"[^\w']", " ", text.lower()).split():
        out.append(str(NUMBERS.index(w)) if w in NUMBERS else w)
    return out


def word_errors(reference, hypothesis):
    r, h = words(reference), words(hypothesis)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r):
        prev, row = row, [i + 1] * (len(h) + 1)
        for j, hw in enumerate(h):
            row[j + 1] = min(prev[j + 1] + 1, row[j] + 1, prev[j] + (rw != hw))
    return row[len(h)], len(r)


def reference_of(wav: Path):
    txt = wav.with_suffix(".txt")
    if txt.is_file():
        return txt.read_text().strip()
    timed = wav.with_suffix(".tsv")  # start<TAB>end<TAB>text per utterance, after a header
    if timed.is_file():
        return " ".join(l.split("\t")[2] for l in timed.read_text().splitlines()[1:] if l.count("\t") >= 2)
    tsv = wav.parent / "transcripts.tsv"
    if tsv.is_file():
        for line in tsv.read_text().splitlines():
            name, _, text = line.partition("\t")
            if name == wav.name:
                return text
    return None


def run_agent(agent, models, wavs, runs, extra):
    times = {str(w): [] for w in wavs}
    texts, windows = {}, {}
    for _ in range(runs):
        cmd = [agent, "--models-dir", models, "transcribe", "--precision", "int8", *extra, *map(str, wavs)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            j = json.loads(line)
            times[j["source"]].append(j["elapsed_ms"])
            texts[j["source"]] = j["text"]
            windows[j["source"]] = "+".join(f"{s['window_secs']:g}{'r' if s['redone'] else ''}" for s in j["segments"])
    return {k: statistics.median(v) for k, v in times.items()}, texts, windows


def run_faster_whisper(model_dir, wavs, runs):
    from faster_whisper import WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=1, num_workers=1)
    opts = dict(language="en", beam_size=1, vad_filter=True, without_timestamps=True,
                condition_on_previous_text=False, temperature=0.0)
    # the first call pays for loading the VAD
    list(model.transcribe(str(wavs[0]), **opts)[0])
    times = {str(w): [] for w in wavs}
    texts = {}
    for _ in range(runs):
        for w in wavs:
            started = time.perf_counter()
            segments, _ = model.transcribe(str(w), **opts)
            text = " ".join(s.text.strip() for s in segments)
            times[str(w)].append((time.perf_counter() - started) * 1000)
            texts[str(w)] = text
    return {k: statistics.median(v) for k, v in times.items()}, texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--ct2-model", required=True, help="the CTranslate2 whisper tiny.en folder")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--full-window", action="store_true", help="the agent's 30 s window only")
    ap.add_argument("wavs", nargs="+", type=Path)
    a = ap.parse_args()
    extra = ["--full-window"] if a.full_window else []
    agent_ms, agent_text, windows = run_agent(a.agent, a.models_dir, a.wavs, a.runs, extra)
    fw_ms, fw_text = run_faster_whisper(a.ct2_model, a.wavs, a.runs)

    print(f"| file | seconds | agent ms | windows | faster-whisper ms | agent / fw | WER agent | WER fw |")
    print("|---|---|---|---|---|---|---|---|")
    totals = {"agent": [0, 0], "fw": [0, 0]}
    import wave
    for w in a.wavs:
        k = str(w)
        with wave.open(k) as f:
            secs = f.getnframes() / f.getframerate()
        ref = reference_of(w)
        wer_a = wer_f = "-"
        if ref is not None:
            for name, text in (("agent", agent_text[k]), ("fw", fw_text[k])):
                e, n = word_errors(ref, text)
                totals[name][0] += e
                totals[name][1] += n
            wer_a = "%.2f" % (word_errors(ref, agent_text[k])[0] / max(1, len(words(ref))))
            wer_f = "%.2f" % (word_errors(ref, fw_text[k])[0] / max(1, len(words(ref))))
        print(f"| {w.name} | {secs:.1f} | {agent_ms[k]:.0f} | {windows[k]} | {fw_ms[k]:.0f} | "
              f"{agent_ms[k] / fw_ms[k]:.2f} | {wer_a} | {wer_f} |")
    for name in ("agent", "fw"):
        e, n = totals[name]
        if n:
            print(f"corpus WER {name}: {e}/{n} = {e / n:.3f}")
    print(f"total ms: agent {sum(agent_ms.values()):.0f}, faster-whisper {sum(fw_ms.values()):.0f}")
    for w in a.wavs:
        k = str(w)
        if agent_text[k] != fw_text[k]:
            print(f"  {w.name}: agent {agent_text[k]!r} / fw {fw_text[k]!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
