//! The handlers: the embedded page, `/metrics`, and the JSON, JPEG and live endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use image::RgbImage;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{NoError, Web};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The page loads nothing but its own files.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'";

const STATUS_SCHEMA: &str = "edge-agent.page-status.v1";
const STATUS_EVERY: Duration = Duration::from_secs(1);
const LEVELS_EVERY: Duration = Duration::from_millis(200);

fn embedded(kind: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, kind),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

pub async fn page() -> Response {
    embedded("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> Response {
    embedded("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    embedded("text/css; charset=utf-8", STYLE)
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found: try /, /metrics or /api/status\n").into_response()
}

pub async fn metrics(State(web): State<Web>) -> Response {
    metrics_of(web.metrics.clone()).await
}

pub async fn metrics_of(registry: Arc<prometheus_client::registry::Registry>) -> Response {
    match crate::metrics::render(&registry) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be written\n").into_response(),
    }
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

impl Web {
    /// `/api/status`: the health message, each pipeline's page state, and updates.
    fn status(&self) -> String {
        let views: serde_json::Map<String, serde_json::Value> = self
            .hub
            .pipelines
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v.summary()).unwrap_or_default()))
            .collect();
        serde_json::json!({
            "type": "status",
            "schema": STATUS_SCHEMA,
            "health": self.health.message(),
            "pipelines": views,
            "updates": self.hub.updates(),
            "viewers": self.hub.viewers(),
        })
        .to_string()
    }

    /// The speech pipelines' voice levels, for the level bars.
    fn levels(&self) -> Option<String> {
        let levels: serde_json::Map<String, serde_json::Value> = self
            .hub
            .pipelines
            .iter()
            .filter(|(_, v)| v.audio)
            .map(|(k, v)| (k.clone(), serde_json::to_value(v.level()).unwrap_or_default()))
            .collect();
        (!levels.is_empty()).then(|| serde_json::json!({"type": "levels", "levels": levels}).to_string())
    }
}

pub async fn status(State(web): State<Web>) -> Response {
    json(web.status())
}

#[derive(Deserialize)]
pub struct EventsQuery {
    limit: Option<usize>,
}

/// `/api/events?limit=N`: the newest N (default 50, at most 200) events, oldest first.
pub async fn events(State(web): State<Web>, Query(q): Query<EventsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, crate::view::RECENT_EVENTS);
    let events = web.hub.recent(limit);
    let mut body = String::from("[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e);
    }
    body.push(']');
    json(body)
}

#[derive(Deserialize)]
pub struct FrameQuery {
    seq: Option<u64>,
}

/// Why a frame endpoint has no frame to give.
enum NoFrame {
    Unknown(String),
    Audio(String),
    NotYet,
}

impl IntoResponse for NoFrame {
    fn into_response(self) -> Response {
        match self {
            NoFrame::Unknown(name) => (StatusCode::NOT_FOUND, format!("no pipeline named {name:?}\n")).into_response(),
            NoFrame::Audio(name) => {
                (StatusCode::NOT_FOUND, format!("{name} is a speech pipeline: it has no frames\n")).into_response()
            }
            NoFrame::NotYet => {
                let msg = "no frame yet: frames are kept while the page is open or asked for; retry in a second\n";
                (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], msg).into_response()
            }
        }
    }
}

/// The kept frame `seq` (or the newest) of pipeline `name`; asking keeps frames coming.
fn kept_frame(web: &Web, name: &str, seq: Option<u64>) -> Result<Arc<crate::view::Shot>, NoFrame> {
    let view = web.hub.pipeline(name).ok_or_else(|| NoFrame::Unknown(name.to_string()))?;
    if view.audio {
        return Err(NoFrame::Audio(name.to_string()));
    }
    web.hub.watch();
    view.frame(seq).ok_or(NoFrame::NotYet)
}

/// `/api/pipelines/<name>/latest`: the result of the frame `latest.jpg` shows.
pub async fn latest(State(web): State<Web>, Path(name): Path<String>, Query(q): Query<FrameQuery>) -> Response {
    let shot = match kept_frame(&web, &name, q.seq) {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    json(format!(r#"{{"pipeline":{},"seq":{},"result":{}}}"#, serde_json::Value::from(name), shot.seq, shot.result))
}

/// `/api/pipelines/<name>/latest.jpg[?seq=N]`: frame N if it is still kept, else the newest.
/// Encoded on the runtime's blocking pool, never on a pipeline's threads, once per frame.
pub async fn latest_jpg(State(web): State<Web>, Path(name): Path<String>, Query(q): Query<FrameQuery>) -> Response {
    let shot = match kept_frame(&web, &name, q.seq) {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    let cached = web.jpegs.lock().unwrap_or_else(|p| p.into_inner()).get(&name).filter(|c| c.0 == shot.seq).cloned();
    let jpeg = match cached {
        Some((_, bytes)) => bytes,
        None => {
            let (image, width) = (shot.image.clone(), web.frame_width);
            match tokio::task::spawn_blocking(move || encode_jpeg(&image, width)).await {
                Ok(Ok(bytes)) => {
                    let bytes = Bytes::from(bytes);
                    web.jpegs.lock().unwrap_or_else(|p| p.into_inner()).insert(name, (shot.seq, bytes.clone()));
                    bytes
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "web: frame not encoded");
                    return (StatusCode::INTERNAL_SERVER_ERROR, "frame not encoded\n").into_response();
                }
                Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "frame not encoded\n").into_response(),
            }
        }
    };
    let mut response =
        ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], jpeg).into_response();
    response.headers_mut().insert("x-frame-seq", HeaderValue::from(shot.seq));
    response
}

/// A frame as a JPEG no wider than `max_width`; boxes are drawn by the page.
pub fn encode_jpeg(image: &RgbImage, max_width: u32) -> Result<Vec<u8>, image::ImageError> {
    let scaled;
    let image = if image.width() > max_width {
        let h = (image.height() as u64 * max_width as u64 / image.width() as u64).max(1) as u32;
        scaled = image::imageops::resize(image, max_width, h, image::imageops::FilterType::Triangle);
        &scaled
    } else {
        image
    };
    let mut out = Vec::with_capacity(64 << 10);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(image)?;
    Ok(out)
}

/// `/api/stream`: Server-Sent Events, one JSON object per message with a `type`: `status`
/// at once and every second, `levels` five times a second (speech pipelines), and every
/// `event` and `frame` as it happens; `lagged` when this page fell behind and skipped some.
pub async fn stream(State(web): State<Web>) -> Sse<impl Stream<Item = Result<SseEvent, NoError>>> {
    struct Live {
        web: Web,
        rx: tokio::sync::broadcast::Receiver<crate::view::Live>,
        status: tokio::time::Interval,
        levels: tokio::time::Interval,
    }
    let rx = web.hub.subscribe();
    let mut status = tokio::time::interval(STATUS_EVERY);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut levels = tokio::time::interval(LEVELS_EVERY);
    levels.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let live = Live { web, rx, status, levels };
    let stream = futures_util::stream::unfold(live, |mut s| async move {
        let data = loop {
            tokio::select! {
                _ = s.web.cancel.cancelled() => return None,
                m = s.rx.recv() => match m {
                    Ok(msg) => break msg.to_string(),
                    Err(RecvError::Lagged(n)) => break format!(r#"{{"type":"lagged","skipped":{n}}}"#),
                    Err(RecvError::Closed) => return None,
                },
                _ = s.status.tick() => break s.web.status(),
                _ = s.levels.tick() => if let Some(l) = s.web.levels() { break l },
            }
        };
        Some((Ok(SseEvent::default().data(data)), s))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
