//! What the status page shows, kept while the agent runs: each pipeline's latest frame with
//! its result (only while someone looks), recent events, the speech level and state, the
//! last transcripts, object counts and what the updates thread last said.
//!
//! Written by the page sink (`sink/page.rs`) on the pipelines' own threads, and by the updates
//! thread; read by `web`. Writers never wait on readers: every lock here is held only to push
//! or copy a few small values, frames are shared (`Arc`) not copied, and JPEGs are made by the
//! web side on request, not here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for `/api/events` and a page's first view.
pub const RECENT_EVENTS: usize = 200;
/// Transcripts kept per speech pipeline.
const TRANSCRIPTS: usize = 5;
/// Frames kept per pipeline, so that a page asking for the frame it was told about gets it.
const FRAMES: usize = 3;
/// How long frames keep being kept after the last page or request asked for them.
const WATCH_GRACE: Duration = Duration::from_secs(10);
/// Live messages a slow page may fall behind by before it skips (it then reloads the state).
const LIVE_QUEUE: usize = 256;

/// A message to every open page: one JSON object with a `type`.
pub type Live = Arc<str>;

/// One frame kept for the page, with the JSON of the result made from it.
pub struct Shot {
    pub seq: u64,
    pub image: Arc<RgbImage>,
    pub result: Arc<str>,
}

/// The page's view of one pipeline.
pub struct PipelineView {
    pub name: String,
    pub audio: bool,
    /// The pipeline's zones as configured (drawn over its frames).
    pub zones: serde_json::Value,
    frames: Mutex<VecDeque<Arc<Shot>>>,
    /// Whether `frames` holds any (so that they are let go once nobody looks).
    holding: AtomicBool,
    last_shot: Mutex<Option<Instant>>,
    /// f32 bits of the latest voice probability.
    level: AtomicU32,
    speaking: AtomicBool,
    transcripts: Mutex<VecDeque<serde_json::Value>>,
    counts: Mutex<BTreeMap<String, u64>>,
    last_result: Mutex<Option<Arc<str>>>,
}

/// Everything the page shows, shared by the sinks, the updates thread and the web server.
pub struct Hub {
    pub pipelines: BTreeMap<String, Arc<PipelineView>>,
    recent: Mutex<VecDeque<Arc<str>>>,
    updates: Mutex<BTreeMap<String, serde_json::Value>>,
    live: broadcast::Sender<Live>,
    /// Milliseconds since `started` until which frames are wanted.
    watched_until_ms: AtomicU64,
    started: Instant,
    /// Least time between two frames kept for the page, per pipeline.
    pub frame_interval: Duration,
}

/// What a pipeline looks like on the page when it is set up.
pub struct PipelineSpec {
    pub name: String,
    pub audio: bool,
    pub zones: serde_json::Value,
}

impl Hub {
    pub fn new(pipelines: Vec<PipelineSpec>, frame_fps: f64) -> Hub {
        let pipelines = pipelines
            .into_iter()
            .map(|p| {
                let view = PipelineView {
                    name: p.name.clone(),
                    audio: p.audio,
                    zones: p.zones,
                    frames: Mutex::new(VecDeque::with_capacity(FRAMES)),
                    holding: AtomicBool::new(false),
                    last_shot: Mutex::new(None),
                    level: AtomicU32::new(0),
                    speaking: AtomicBool::new(false),
                    transcripts: Mutex::new(VecDeque::with_capacity(TRANSCRIPTS)),
                    counts: Mutex::new(BTreeMap::new()),
                    last_result: Mutex::new(None),
                };
                (p.name, Arc::new(view))
            })
            .collect();
        Hub {
            pipelines,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
            updates: Mutex::new(BTreeMap::new()),
            live: broadcast::channel(LIVE_QUEUE).0,
            watched_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            frame_interval: Duration::from_secs_f64(1.0 / frame_fps.max(0.01)),
        }
    }

    /// A page or a script is looking: keep frames for the next [`WATCH_GRACE`].
    pub fn watch(&self) {
        let until = (self.started.elapsed() + WATCH_GRACE).as_millis() as u64;
        self.watched_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether frames are wanted: a page is open (it asks every second) or was lately.
    pub fn watched(&self) -> bool {
        self.live.receiver_count() > 0
            || self.watched_until_ms.load(Ordering::Relaxed) > self.started.elapsed().as_millis() as u64
    }

    /// The stream of live messages for one page.
    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.live.subscribe()
    }

    /// Open pages.
    pub fn viewers(&self) -> usize {
        self.live.receiver_count()
    }

    fn tell(&self, msg: Live) {
        // no page open is not an error
        self.live.send(msg).ok();
    }

    /// An event worth listing (JSON with `type = "event"`), kept and sent to open pages.
    pub fn event(&self, json: Arc<str>) {
        {
            let mut recent = lock(&self.recent);
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(json.clone());
        }
        self.tell(json);
    }

    /// The newest `limit` events, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<Arc<str>> {
        let recent = lock(&self.recent);
        recent.iter().skip(recent.len().saturating_sub(limit)).cloned().collect()
    }

    /// What the updates thread last said about `key` (a head slot or a model).
    pub fn update(&self, key: &str, value: serde_json::Value) {
        lock(&self.updates).insert(key.to_string(), value);
    }

    pub fn updates(&self) -> BTreeMap<String, serde_json::Value> {
        lock(&self.updates).clone()
    }

    pub fn pipeline(&self, name: &str) -> Option<&Arc<PipelineView>> {
        self.pipelines.get(name)
    }
}

impl PipelineView {
    /// Keeps `image` and its result when a page wants frames and the last kept one is older
    /// than the hub's interval; tells open pages. Returns whether it was kept.
    pub fn offer_frame(
        &self,
        hub: &Hub,
        seq: u64,
        image: &Arc<RgbImage>,
        result: impl FnOnce() -> Option<String>,
    ) -> bool {
        if !hub.watched() {
            if self.holding.swap(false, Ordering::Relaxed) {
                lock(&self.frames).clear();
            }
            return false;
        }
        {
            let mut last = lock(&self.last_shot);
            if last.is_some_and(|t| t.elapsed() < hub.frame_interval) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let Some(result) = result() else { return false };
        let shot = Arc::new(Shot { seq, image: image.clone(), result: result.into() });
        {
            let mut frames = lock(&self.frames);
            if frames.len() == FRAMES {
                frames.pop_front();
            }
            frames.push_back(shot.clone());
        }
        self.holding.store(true, Ordering::Relaxed);
        let name = serde_json::Value::from(self.name.as_str());
        hub.tell(format!(r#"{{"type":"frame","pipeline":{name},"seq":{seq},"result":{}}}"#, shot.result).into());
        true
    }

    /// The kept frame numbered `seq`, or the newest when that one is gone or not asked for.
    pub fn frame(&self, seq: Option<u64>) -> Option<Arc<Shot>> {
        let frames = lock(&self.frames);
        seq.and_then(|s| frames.iter().find(|f| f.seq == s)).or(frames.back()).cloned()
    }

    /// The last result's JSON (every frame's, kept or not).
    pub fn set_result(&self, json: Arc<str>) {
        *lock(&self.last_result) = Some(json);
    }

    pub fn set_level(&self, p: f32) {
        self.level.store(p.to_bits(), Ordering::Relaxed);
    }

    pub fn set_speaking(&self, on: bool) {
        self.speaking.store(on, Ordering::Relaxed);
    }

    pub fn add_transcript(&self, t: serde_json::Value) {
        let mut ts = lock(&self.transcripts);
        if ts.len() == TRANSCRIPTS {
            ts.pop_front();
        }
        ts.push_back(t);
    }

    /// An object count: `label` for the whole frame, or `zone/label`.
    pub fn set_count(&self, key: String, count: u64) {
        lock(&self.counts).insert(key, count);
    }

    /// The speech level and state, read for the live level bar.
    pub fn level(&self) -> Level {
        Level {
            level: f32::from_bits(self.level.load(Ordering::Relaxed)),
            speaking: self.speaking.load(Ordering::Relaxed),
        }
    }

    /// What the status endpoint says about this pipeline besides its counters.
    pub fn summary(&self) -> ViewSummary {
        let newest = lock(&self.frames).back().map(|f| f.seq);
        ViewSummary {
            audio: self.audio,
            frame_seq: newest,
            last_result: lock(&self.last_result)
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(serde_json::Value::Null),
            speech: self.audio.then(|| self.level()),
            transcripts: lock(&self.transcripts).iter().cloned().collect(),
            counts: lock(&self.counts).clone(),
            zones: self.zones.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Level {
    pub level: f32,
    pub speaking: bool,
}

/// The page's part of one pipeline's status.
#[derive(Debug, Clone, Serialize)]
pub struct ViewSummary {
    pub audio: bool,
    /// The newest frame kept for the page (none unless a page looks).
    pub frame_seq: Option<u64>,
    /// The JSON of the pipeline's last result (detections, classification or transcript).
    pub last_result: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech: Option<Level>,
    pub transcripts: Vec<serde_json::Value>,
    pub counts: BTreeMap<String, u64>,
    pub zones: serde_json::Value,
}

/// A poisoned lock here only means a writer panicked mid-push of a small value: read on.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        let spec = PipelineSpec { name: "cam".into(), audio: false, zones: serde_json::json!({}) };
        Hub::new(vec![spec], 1000.0)
    }

    #[test]
    fn frames_are_kept_only_while_watched_and_the_newest_three() {
        let hub = hub();
        let view = hub.pipeline("cam").unwrap().clone();
        let image = Arc::new(RgbImage::new(4, 4));
        assert!(!view.offer_frame(&hub, 0, &image, || Some("{}".into())), "nobody looks");
        assert!(view.frame(None).is_none());
        let _page = hub.subscribe();
        for seq in 1..=5 {
            std::thread::sleep(Duration::from_millis(2));
            assert!(view.offer_frame(&hub, seq, &image, || Some("{}".into())));
        }
        assert_eq!(view.frame(None).unwrap().seq, 5);
        assert_eq!(view.frame(Some(3)).unwrap().seq, 3);
        assert_eq!(view.frame(Some(1)).unwrap().seq, 5, "gone: the newest instead");
        drop(_page);
        assert!(!view.offer_frame(&hub, 6, &image, || Some("{}".into())));
        assert!(view.frame(None).is_none(), "nobody looks any more: the frames are let go");
    }

    #[test]
    fn frames_are_rate_capped() {
        let spec = PipelineSpec { name: "cam".into(), audio: false, zones: serde_json::json!({}) };
        let hub = Hub::new(vec![spec], 1.0);
        hub.watch();
        let view = hub.pipeline("cam").unwrap().clone();
        let image = Arc::new(RgbImage::new(4, 4));
        assert!(view.offer_frame(&hub, 0, &image, || Some("{}".into())));
        assert!(!view.offer_frame(&hub, 1, &image, || Some("{}".into())), "within the interval");
    }

    #[test]
    fn recent_events_are_bounded_and_in_order() {
        let hub = hub();
        for i in 0..(RECENT_EVENTS + 5) {
            hub.event(format!("{i}").into());
        }
        let last = hub.recent(3);
        assert_eq!(last.iter().map(|s| s.to_string()).collect::<Vec<_>>(), ["202", "203", "204"]);
        assert_eq!(hub.recent(10_000).len(), RECENT_EVENTS);
    }
}
