//! Speech pipelines end to end against the in-process broker: a WAV file and a real cpal
//! capture (ALSA replaying a raw file through a `file` PCM, at 44.1 kHz stereo so resampling
//! runs) give transcripts with the documented schema; speech events bracket each utterance.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::speech::{audio, sentences, timed_utterances, wer};
use common::{Message, Running, agent, collect_until, sigterm, subscribe};

fn speech_config(port: u16, device: &str, source: &str, vad_extra: &str) -> String {
    let state = tempfile::tempdir().unwrap().keep();
    format!(
        "[agent]\ndevice_id = \"{device}\"\nstats_interval_secs = 0.5\nshutdown_timeout_secs = 15\n\
         state_dir = \"{}\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nmax_backoff_secs = 1\n\n\
         [pipelines.speech]\nsource = {source}\n\
         stages = [{{ type = \"vad\"{vad_extra} }}, {{ type = \"transcribe\", precision = \"int8\" }}]\n",
        state.display()
    )
}

fn transcripts(messages: &[Message], device: &str) -> Vec<serde_json::Value> {
    let topic = format!("edge-agent/{device}/transcripts/speech");
    messages.iter().filter(|m| m.topic == topic).map(Message::json).collect()
}

fn check_transcript(t: &serde_json::Value, device: &str) {
    assert_eq!(t["schema"], "edge-agent.transcript.v1");
    assert_eq!(t["device"], device);
    assert_eq!(t["pipeline"], "speech");
    assert_eq!(t["model"]["name"], "whisper-tiny-en");
    assert_eq!(t["model"]["precision"], "int8");
    assert!(t["timestamp"].as_str().unwrap().ends_with('Z'));
    let (start, end, duration) =
        (t["start"].as_f64().unwrap(), t["end"].as_f64().unwrap(), t["duration"].as_f64().unwrap());
    assert!(end > start && (end - start - duration).abs() < 0.01, "{t}");
    assert!(t["processing_ms"].as_f64().unwrap() > 0.0);
    let rtf = t["real_time_factor"].as_f64().unwrap();
    assert!((rtf - t["processing_ms"].as_f64().unwrap() / 1000.0 / duration).abs() < 0.01, "{t}");
}

#[test]
fn a_wav_pipeline_publishes_each_utterance_and_its_speech_events() {
    let broker = common::rumqttd();
    let device = "wavspeech";
    let source = format!("{{ type = \"wav\", path = \"{}\" }}", audio("silence-speech-silence.wav").display());
    let (_dir, path) = common::write_config(&speech_config(broker.port, device, &source, ", events = true"));
    let rx = subscribe(broker.port, "watch-wav", &format!("edge-agent/{device}/#"));
    let mut cmd = agent();
    cmd.arg("run").arg("--config").arg(&path);
    let (status, _, stderr) = common::run_with_timeout(cmd, Duration::from_secs(300));
    assert!(status.success(), "agent failed: {stderr}");
    let messages =
        collect_until(&rx, Duration::from_secs(20), |m| m.topic.ends_with("/status") && m.payload == b"offline");

    let got = transcripts(&messages, device);
    let expected = timed_utterances();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (i, (t, (start, end, reference))) in got.iter().zip(&expected).enumerate() {
        check_transcript(t, device);
        assert_eq!(t["seq"], i as u64);
        assert_eq!(t["utterance_id"], i as u64);
        let (s, e) = (t["start"].as_f64().unwrap(), t["end"].as_f64().unwrap());
        assert!((s - start).abs() < 0.6 && (e - end).abs() < 0.6, "{t} vs {start}..{end}");
        assert!(wer(reference, t["text"].as_str().unwrap()) <= 0.5, "{reference:?} vs {t}");
    }
    // start/end events, in order, one pair per utterance
    let events: Vec<(String, u64)> = messages
        .iter()
        .filter(|m| m.topic == format!("edge-agent/{device}/speech/speech"))
        .map(|m| {
            let v = m.json();
            assert_eq!(v["schema"], "edge-agent.speech.v1");
            (v["event"].as_str().unwrap().to_string(), v["utterance_id"].as_u64().unwrap())
        })
        .collect();
    let pairs: Vec<(String, u64)> = (0..2).flat_map(|i| [("start".to_string(), i), ("end".to_string(), i)]).collect();
    assert_eq!(events, pairs);
}

/// An ALSA configuration whose default capture device replays `raw` (S16_LE at `rate`,
/// `channels`) through the `file` plugin: cpal captures it like a microphone.
fn alsa_file_microphone(dir: &std::path::Path, raw: &std::path::Path, rate: u32, channels: u16) -> std::path::PathBuf {
    let conf = dir.join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "pcm.null {{ type null }}\n\
             pcm.replay {{ type file; slave.pcm \"null\"; file \"/dev/null\"; infile \"{}\"; format \"raw\" }}\n\
             pcm.default {{ type plug; slave {{ pcm \"replay\"; format S16_LE; rate {rate}; channels {channels} }}\n\
               hint {{ show on; description \"edge-agent test microphone\" }} }}\n",
            raw.display()
        ),
    )
    .unwrap();
    conf
}

#[test]
fn a_microphone_captured_through_cpal_is_transcribed_over_mqtt() {
    // the 44.1 kHz stereo fixture as raw PCM, then a second of silence so the VAD closes
    let mut reader = hound::WavReader::open(audio("stereo-44k.wav")).unwrap();
    let spec = reader.spec();
    assert_eq!((spec.sample_rate, spec.channels), (44_100, 2));
    let mut raw: Vec<u8> = reader.samples::<i16>().flat_map(|s| s.unwrap().to_le_bytes()).collect();
    raw.extend(std::iter::repeat_n(0u8, 44_100 * 2 * 2));
    let dir = tempfile::tempdir().unwrap();
    let raw_path = dir.path().join("mic.raw");
    std::fs::write(&raw_path, raw).unwrap();
    let conf = alsa_file_microphone(dir.path(), &raw_path, 44_100, 2);

    let broker = common::rumqttd();
    let device = "micspeech";
    // the device's own format: ALSA's plug rate conversion mangles an unpaced file-backed
    // device, and converting is this agent's job (downmix + resampling under test)
    let source = "{ type = \"microphone\", buffer_secs = 30, sample_rate = 44100, channels = 2 }";
    let (_cfg_dir, path) = common::write_config(&speech_config(broker.port, device, source, ""));
    let rx = subscribe(broker.port, "watch-mic", &format!("edge-agent/{device}/#"));
    let mut cmd = agent();
    cmd.arg("run").arg("--config").arg(&path).env("ALSA_CONFIG_PATH", &conf);
    let mut running = Running::spawn(cmd);
    let topic = format!("edge-agent/{device}/transcripts/speech");
    let messages = collect_until(&rx, Duration::from_secs(120), |m| m.topic == topic);
    sigterm(&mut running.0);
    let got = transcripts(&messages, device);
    assert!(
        !got.is_empty(),
        "no transcript from the microphone; got {:?}",
        messages.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    check_transcript(&got[0], device);
    assert_eq!(got[0]["source"], "microphone (default)");
    let reference = &sentences()[2].1;
    let text = got[0]["text"].as_str().unwrap();
    assert!(wer(reference, text) <= 0.3, "{reference:?} heard as {text:?}");
}

#[test]
#[cfg(feature = "demo")]
fn the_demo_runs_vision_and_speech_and_prints_every_message() {
    let mut cmd = agent();
    cmd.arg("run");
    // four pipelines and Whisper: minutes where int8 runs on tract's AVX2 kernels (no VNNI)
    let (status, stdout, stderr) = common::run_with_timeout(cmd, Duration::from_secs(900));
    assert!(status.success(), "demo failed: {stderr}");
    assert!(stderr.contains("demo: done"), "{stderr}");
    assert!(stderr.contains("demo: status page on http://127.0.0.1:"), "{stderr}");
    let lines: Vec<(&str, serde_json::Value)> = stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(topic, payload)| serde_json::from_str(payload).ok().map(|v| (topic, v)))
        .collect();
    let on = |t: &str| lines.iter().filter(|(topic, _)| *topic == t).map(|(_, v)| v).collect::<Vec<_>>();
    // photos are a live-like source (2 fps): a busy machine may drop frames, not all of them
    assert!(!on("edge-agent/demo/detections/objects").is_empty(), "{stdout}");
    assert!(!on("edge-agent/demo/detections/faces").is_empty(), "{stdout}");
    let texts: Vec<String> =
        on("edge-agent/demo/transcripts/speech").iter().map(|v| v["text"].as_str().unwrap().to_string()).collect();
    let expected = timed_utterances();
    assert_eq!(texts.len(), expected.len(), "{texts:?}");
    for (text, (.., reference)) in texts.iter().zip(&expected) {
        assert!(wer(reference, text) <= 0.5, "{reference:?} heard as {text:?}");
    }
    assert_eq!(on("edge-agent/demo/speech/speech").len(), 2 * expected.len());
    assert!(stderr.contains("demo: speech"), "a human summary of each transcript: {stderr}");
}

#[test]
#[cfg(not(feature = "demo"))]
fn without_the_demo_feature_run_needs_a_config() {
    let out = agent().arg("run").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--config") && err.contains("--features demo"), "{err}");
}
