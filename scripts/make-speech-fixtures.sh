#!/usr/bin/env bash
# Speech fixtures for the tests, synthesized with Debian's espeak-ng and shaped with sox.
# Run once; the output (tests/fixtures/audio/) is committed. Needs: espeak-ng, sox.
#
#   sentences/NN-<voice>.wav   one sentence each, 16 kHz mono, several voices and rates;
#                              sentences/transcripts.tsv holds file<TAB>text
#   silence-speech-silence.wav 2 s silence, sentence 1, 3 s silence, sentence 2, 2 s silence
#                              (its timings in silence-speech-silence.tsv)
#   silence.wav, noise.wav     5 s of near-silence (dither) and 5 s of white noise
#   stereo-44k.wav             sentence 3 at 44.1 kHz stereo, to exercise resampling
#   reading.wav                a paragraph read in one go (about 20 s, pauses between
#                              sentences only); reading.txt holds its text
set -euo pipefail
# -D (no dither, except for silence.wav) and -R (repeatable random numbers) keep the output
# byte-identical from run to run
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../tests/fixtures/audio"
mkdir -p "$out/sentences"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sentences=(
  "en-us+f3|150|The quick brown fox jumps over the lazy dog."
  "en-gb-x-rp|150|Please turn off the lights in the kitchen."
  "en-us+f3|140|The weather today is sunny with a light breeze."
  "en-gb-x-rp|150|A small robot is watching the front door."
  "en-us|160|Open the garage door and start the car."
  "en-029|140|My favorite color is blue and I like green tea."
  "en-us+m3|150|Set a timer for ten minutes."
  "en-us+m3|150|There are three people waiting at the station."
)
: > "$out/sentences/transcripts.tsv"
i=0
for entry in "${sentences[@]}"; do
  i=$((i + 1))
  IFS='|' read -r voice rate text <<<"$entry"
  name=$(printf '%02d-%s.wav' "$i" "$voice")
  espeak-ng -v "$voice" -s "$rate" -w "$tmp/raw.wav" "$text"
  # espeak-ng writes near full scale: normalise to -3 dBFS so resampling does not clip
  sox -D "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$out/sentences/$name" gain -n -3 pad 0.3 0.3
  printf '%s\t%s\n' "$name" "$text" >> "$out/sentences/transcripts.tsv"
done

s1="$out/sentences/$(sed -n 1p "$out/sentences/transcripts.tsv" | cut -f1)"
s2="$out/sentences/$(sed -n 2p "$out/sentences/transcripts.tsv" | cut -f1)"
s3="$out/sentences/$(sed -n 3p "$out/sentences/transcripts.tsv" | cut -f1)"
sox -R -D -n -r 16000 -c 1 -b 16 "$tmp/sil2.wav" trim 0 2
sox -R -D -n -r 16000 -c 1 -b 16 "$tmp/sil3.wav" trim 0 3
sox -D "$tmp/sil2.wav" "$s1" "$tmp/sil3.wav" "$s2" "$tmp/sil2.wav" "$out/silence-speech-silence.wav"
d1=$(soxi -D "$s1"); d2=$(soxi -D "$s2")
{
  printf 'start\tend\ttext\n'
  printf '%s\t%s\t%s\n' 2 "$(echo "2 + $d1" | bc -l)" "$(sed -n 1p "$out/sentences/transcripts.tsv" | cut -f2)"
  printf '%s\t%s\t%s\n' "$(echo "5 + $d1" | bc -l)" "$(echo "5 + $d1 + $d2" | bc -l)" "$(sed -n 2p "$out/sentences/transcripts.tsv" | cut -f2)"
} > "$out/silence-speech-silence.tsv"

sox -R -n -r 16000 -c 1 -b 16 "$out/silence.wav" trim 0 5 dither
sox -R -D -n -r 16000 -c 1 -b 16 "$out/noise.wav" synth 5 whitenoise vol 0.3
sox -D "$s3" -r 44100 -c 2 "$out/stereo-44k.wav"
reading="The garden was quiet this morning. A small bird landed on the fence and looked around. \
Then it flew to the old apple tree near the house. My neighbor waved and asked about the weather. \
I told him it would rain later in the afternoon, so he should bring his chairs inside."
espeak-ng -v en-us -s 150 -w "$tmp/reading.wav" "$reading"
sox -D "$tmp/reading.wav" -r 16000 -c 1 -b 16 "$out/reading.wav" gain -n -3 pad 0.3 0.3
printf '%s\n' "$reading" > "$out/reading.txt"
ls -la "$out" "$out/sentences"
