//! Sinks end to end: a frame pipeline writing to MQTT and a JSON-lines file writes the same
//! bytes to both; an audio pipeline honours its sinks (a JSON-lines file only: nothing on
//! MQTT); `skip_empty` and `sinks = []` behave as documented.
#![allow(clippy::unwrap_used)]

mod common;

use common::known::PHOTOS;
use common::speech::audio;
use common::{Message, STATE_DIR, agent, root};

fn header(port: u16, device: &str) -> String {
    format!(
        "[agent]\ndevice_id = \"{device}\"\nstats_interval_secs = 0.5\nshutdown_timeout_secs = 15\n\
         state_dir = \"{STATE_DIR}\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nmax_backoff_secs = 1\n\n"
    )
}

/// Runs the agent to the end; returns what it published and the config's folder.
fn run(port: u16, device: &str, config: &str) -> (Vec<Message>, tempfile::TempDir) {
    let (dir, path) = common::write_config(config);
    (common::run_to_end(port, device, &path), dir)
}

fn lines(path: &std::path::Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.ends_with(b"\n"), "every line ends with a newline");
    bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

#[test]
fn mqtt_and_jsonl_sinks_get_the_same_bytes_and_skip_empty_skips() {
    let broker = common::rumqttd();
    let device = "sinks";
    let images = root().join("tests/fixtures/images");
    // faces: only some photos have one, so `skip_empty` has something to skip
    let config = header(broker.port, device)
        + &format!(
            "[pipelines.faces]\nsource = {{ type = \"images\", path = \"{}\" }}\n\
             stages = [{{ type = \"detect\", model = \"blazeface\" }}]\n\
             sinks = [{{ type = \"mqtt\" }}, {{ type = \"jsonl\", path = \"out/faces.jsonl\" }}, \
             {{ type = \"jsonl\", path = \"out/faces-found.jsonl\", skip_empty = true }}]\n",
            images.display()
        );
    let (messages, dir) = run(broker.port, device, &config);
    let published: Vec<&Message> =
        messages.iter().filter(|m| m.topic == format!("edge-agent/{device}/detections/faces")).collect();
    assert_eq!(published.len(), PHOTOS.len(), "one message per photo");

    let out = dir.path().join("state/out");
    let written = lines(&out.join("faces.jsonl"));
    assert_eq!(written.len(), published.len());
    for (line, msg) in written.iter().zip(&published) {
        assert_eq!(line, &msg.payload, "the file holds the MQTT payload's bytes");
    }

    let found = lines(&out.join("faces-found.jsonl"));
    let with_faces: Vec<&Vec<u8>> = written
        .iter()
        .filter(|l| {
            !serde_json::from_slice::<serde_json::Value>(l).unwrap()["detections"].as_array().unwrap().is_empty()
        })
        .collect();
    assert!(!with_faces.is_empty() && with_faces.len() < written.len(), "the photos include faces and no faces");
    assert_eq!(found.iter().collect::<Vec<_>>(), with_faces, "skip_empty keeps exactly the frames with a face");
}

#[test]
fn an_audio_pipeline_writes_to_its_sinks_only() {
    let broker = common::rumqttd();
    let device = "audiosink";
    let config = header(broker.port, device)
        + &format!(
            "[pipelines.speech]\nsource = {{ type = \"wav\", path = \"{}\" }}\n\
             stages = [{{ type = \"vad\", events = true }}, {{ type = \"transcribe\" }}]\n\
             sinks = [{{ type = \"jsonl\", path = \"speech.jsonl\" }}]\n",
            audio("silence-speech-silence.wav").display()
        );
    let (messages, dir) = run(broker.port, device, &config);
    let results: Vec<&Message> =
        messages.iter().filter(|m| m.topic.contains("/transcripts/") || m.topic.contains("/speech/")).collect();
    assert!(
        results.is_empty(),
        "no MQTT sink, no results on MQTT: {:?}",
        results.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );

    let written: Vec<serde_json::Value> =
        lines(&dir.path().join("state/speech.jsonl")).iter().map(|l| serde_json::from_slice(l).unwrap()).collect();
    let schemas: Vec<&str> = written.iter().map(|v| v["schema"].as_str().unwrap()).collect();
    let transcripts: Vec<&serde_json::Value> =
        written.iter().filter(|v| v["schema"] == "edge-agent.transcript.v1").collect();
    assert!(!transcripts.is_empty(), "{schemas:?}");
    assert!(transcripts.iter().all(|t| t["pipeline"] == "speech" && !t["text"].as_str().unwrap().is_empty()));
    // each utterance is bracketed by its speech events
    let edges: Vec<&str> = written
        .iter()
        .filter(|v| v["schema"] == "edge-agent.speech.v1")
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    assert_eq!(edges.len(), 2 * transcripts.len(), "{schemas:?}");
    assert!(edges.chunks(2).all(|c| c == ["start", "end"]), "{edges:?}");
}

#[test]
fn an_empty_sink_list_and_a_bad_sink_are_config_errors_with_their_paths() {
    let images = root().join("tests/fixtures/images");
    let config = format!(
        "[pipelines.a]\nsource = {{ type = \"images\", path = \"{0}\" }}\n\
         stages = [{{ type = \"detect\", model = \"nanodet\" }}]\nsinks = []\n\n\
         [pipelines.b]\nsource = {{ type = \"images\", path = \"{0}\" }}\n\
         stages = [{{ type = \"detect\", model = \"nanodet\" }}]\n\
         sinks = [{{ type = \"mqtt\" }}, {{ type = \"jsonl\", path = \"x.jsonl\", max_mb = 0 }}, {{ type = \"kafka\" }}]\n",
        images.display()
    );
    let (_dir, path) = common::write_config(&config);
    let out = agent().arg("validate").arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipelines.a.sinks") && err.contains("empty"), "{err}");
    assert!(err.contains("pipelines.b.sinks[1].max_mb"), "{err}");
    assert!(err.contains("pipelines.b.sinks[2]") && err.contains("kafka"), "{err}");
    assert!(err.contains(&path.display().to_string()), "the file is named: {err}");
}
