//! The status page as a person sees it: the agent runs a looping photo pipeline (NanoDet on
//! the cat photo) and a looping WAV speech pipeline with `[web]` on; headless Chromium opens
//! the page, waits for it to fill, and the DOM must show the pipelines, the cat, the spoken
//! words and health figures; the page keeps updating, counts the cat as a tracked object in a
//! zone, and says so when the agent goes away.
//! The screenshot is kept (its path is printed).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::{fixture, wait_port_within};

const PAGE_STATE: &str = r#"JSON.stringify({
  names: [...document.querySelectorAll('.card')].map(c => c.dataset.name),
  text: document.body.innerText,
  received: +(document.body.dataset.received || 0),
  seq: document.querySelector('.card[data-name="cats"] canvas')?.dataset.frameSeq ?? null,
  fps: document.querySelector('.card[data-name="cats"] [data-k="fps"] b')?.textContent ?? null,
  frames: document.querySelector('.card[data-name="voice"] [data-k="frames"] b')?.textContent ?? null,
  rss: document.querySelector('#health [data-k="rss"] b')?.textContent ?? null,
  uptime: document.querySelector('#health [data-k="uptime"] b')?.textContent ?? null,
  broker: document.querySelector('#health [data-k="broker"] b')?.textContent ?? null,
  transcripts: [...document.querySelectorAll('.card[data-name="voice"] .transcripts li')].map(l => l.textContent),
  conn: document.querySelector('#conn').textContent,
})"#;

fn state(tab: &mut common::browser::Tab) -> serde_json::Value {
    serde_json::from_str(tab.eval(PAGE_STATE).as_str().unwrap()).unwrap()
}

#[test]
fn the_page_shows_frames_detections_transcripts_and_health_and_keeps_updating() {
    let broker = common::rumqttd();
    let web = edge_broker::free_port().unwrap();
    let speech = common::speech::audio("silence-speech-silence.wav");
    let cfg = format!(
        "[agent]\ndevice_id = \"page\"\nstats_interval_secs = 1\nstate_dir = \"{}\"\n\
         [mqtt]\nport = {}\n[web]\nlisten = \"127.0.0.1:{web}\"\n\
         [pipelines.cats]\nsource = {{ type = \"images\", path = \"{}\", fps = 2, loop = true }}\n\
         stages = [{{ type = \"detect\", model = \"nanodet\" }}]\n\
         objects = {{ enabled = true, track = [\"cat\"], threshold = 0.5, min_frames = 2 }}\n\
         [pipelines.cats.zones.sofa]\npoints = [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]\n\
         [pipelines.voice]\nsource = {{ type = \"wav\", path = \"{}\", realtime = true, loop = true }}\n\
         stages = [{{ type = \"vad\", events = true }}, {{ type = \"transcribe\", model = \"whisper-tiny-en\" }}]\n",
        common::STATE_DIR,
        broker.port,
        fixture("chelsea.jpg").display(),
        speech.display()
    );
    let (_dir, path) = common::write_config(&cfg);
    let mut agent = common::Running::agent(&path);
    wait_port_within(web, Duration::from_secs(180));
    let Some(browser) = Browser::launch(1280, 1000) else {
        eprintln!("chromium is not installed; skipped");
        return;
    };
    let mut tab = browser.tab();
    tab.navigate(&format!("http://127.0.0.1:{web}/"));

    let filled = r#"(() => {
      const seq = document.querySelector('.card[data-name="cats"] canvas')?.dataset.frameSeq;
      const said = document.querySelectorAll('.card[data-name="voice"] .transcripts li').length;
      return seq !== undefined && said > 0 && document.body.innerText.includes('cat 0.');
    })()"#;
    let ok = tab.wait_for(filled, Duration::from_secs(240));
    let first = state(&mut tab);
    assert!(ok, "the page did not fill: {first:#}");

    assert_eq!(first["names"], serde_json::json!(["cats", "voice"]), "{first:#}");
    let text = first["text"].as_str().unwrap();
    assert!(text.contains("cat 0."), "no cat on the page:\n{text}");
    let said =
        first["transcripts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_lowercase()).collect::<Vec<_>>();
    assert!(said.iter().any(|t| t.contains("brown fox")), "transcripts: {said:?}");
    let fps: f64 = first["fps"].as_str().unwrap().parse().unwrap();
    assert!(fps > 0.0, "{first:#}");
    assert!(first["frames"].as_str().unwrap().parse::<u64>().unwrap() > 0, "{first:#}");
    assert!(first["rss"].as_str().unwrap().ends_with(" MB"), "{first:#}");
    assert_eq!(first["broker"], "connected", "{first:#}");
    assert_eq!(first["conn"], "live", "{first:#}");

    // it keeps updating: more messages, the agent's uptime, and a new frame
    std::thread::sleep(Duration::from_secs(4));
    let later = state(&mut tab);
    assert!(later["received"].as_u64() > first["received"].as_u64(), "{first:#} then {later:#}");
    assert_ne!(later["uptime"], first["uptime"], "the health figures did not move");
    let seq = first["seq"].as_str().unwrap();
    let new_frame = format!("document.querySelector('.card[data-name=\"cats\"] canvas').dataset.frameSeq !== '{seq}'");
    assert!(tab.wait_for(&new_frame, Duration::from_secs(60)), "the frame never changed from {seq}");

    // the cat becomes a tracked object in the zone: counted on the page, its event listed
    let counted = "document.querySelector('.card[data-name=\"cats\"] .counts').textContent.includes('sofa/cat: 1')";
    assert!(tab.wait_for(counted, Duration::from_secs(120)), "{:#}", state(&mut tab));
    let listed = "[...document.querySelectorAll('#events li')].some(li => /new cat cats-/.test(li.textContent))";
    assert!(tab.wait_for(listed, Duration::from_secs(10)), "{:#}", state(&mut tab));

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page.png");
    tab.screenshot(&shot);
    println!("screenshot: {}", shot.display());
    let png = image::open(&shot).unwrap();
    assert!(png.width() >= 1000 && png.height() >= 600, "{}x{}", png.width(), png.height());

    // the agent goes away: the page says so
    agent.kill().unwrap();
    agent.wait().unwrap();
    let lost = "document.querySelector('#conn').textContent.includes('unreachable')";
    assert!(tab.wait_for(lost, Duration::from_secs(20)), "{:#}", state(&mut tab));
}
