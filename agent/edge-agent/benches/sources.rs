//! Decoding a 1080p H.264 camera for NanoDet, by path, in one run: a 6 s clip (10 fps, a pan
//! across a photo, so that every frame has motion) is read through the agent's command source
//! (a child program writing frames to a pipe) by each decoding path, as fast as it goes, one
//! decoder thread; then NanoDet int8 runs on the same 1080p frame in the same process.
//! Per path: wall time per frame, the child's CPU per frame, the agent's own decoding per frame
//! (MJPEG only), and beside them NanoDet's preprocessing + inference on what the path delivers.
//! `cargo bench --bench sources` (needs ffmpeg; GStreamer rows when gst-launch-1.0 is there)

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_agent::config::{DetectStage, Precision};
use edge_core::model::{Catalog, ModelPool};
use edge_core::source::FrameSource;
use edge_core::source::command::{CommandSource, CommandSpec, find_program};
use edge_core::source::stream::{PixelFormat, StreamFormat};
use edge_core::vision::detector::Detector;
use tokio_util::sync::CancellationToken;

/// CPU seconds of this process's waited-for children (`cutime + cstime`, /proc/self/stat).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let after = stat.rsplit_once(')').expect("stat").1;
    let f: Vec<f64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // fields 16 and 17 of proc(5), counted from the state (field 3) at index 0; 100 ticks/s
    (f[13] + f[14]) / 100.0
}

struct Row {
    frames: usize,
    wall_ms: f64,
    child_ms: f64,
    decode_ms: f64,
    last: Option<Arc<image::RgbImage>>,
}

fn run(spec: &CommandSpec) -> Row {
    let cpu0 = children_cpu();
    let started = Instant::now();
    let mut source = CommandSource::open(spec).expect("start");
    let cancel = CancellationToken::new();
    let (mut frames, mut decode, mut last) = (0usize, Duration::ZERO, None);
    // the clip's end is the child's exit: an error by design for a camera, the end here
    while let Ok(Some(f)) = source.next_frame(&cancel) {
        frames += 1;
        decode += f.decode;
        last = Some(f.image);
    }
    let wall = started.elapsed();
    drop(source);
    let n = frames.max(1) as f64;
    Row {
        frames,
        wall_ms: wall.as_secs_f64() * 1e3 / n,
        child_ms: (children_cpu() - cpu0) * 1e3 / n,
        decode_ms: decode.as_secs_f64() * 1e3 / n,
        last,
    }
}

fn ffmpeg(clip: &Path, out: &[&str]) -> Vec<String> {
    let mut a: Vec<String> =
        ["-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "1", "-i"].map(String::from).to_vec();
    a.push(clip.display().to_string());
    a.extend(["-threads", "1"].map(String::from));
    a.extend(out.iter().map(|s| s.to_string()));
    a
}

fn main() {
    if find_program("ffmpeg").is_none() {
        println!("ffmpeg is not installed: nothing to measure");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = dir.path().join("pan1080.mp4");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-loop", "1", "-framerate", "10", "-t", "6", "-i"])
        .arg(root.join("tests/fixtures/images/motorcycle.jpg"))
        .args(["-vf", "scale=2880:-2,crop=1920:1080:x='n*12':y='(ih-1080)/2',format=yuv420p"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "20", "-b:v", "6M"])
        .arg(&clip)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "making the clip");

    let raw = |w, h| StreamFormat::Rawvideo { width: w, height: h, pix_fmt: PixelFormat::Rgb24 };
    let scaled = "scale=416:416:force_original_aspect_ratio=decrease,pad=416:416:(ow-iw)/2:(oh-ih)/2";
    let mut paths: Vec<(&str, String, Vec<String>, StreamFormat)> = vec![
        (
            "ffmpeg → raw RGB 1920×1080",
            "ffmpeg".into(),
            ffmpeg(&clip, &["-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]),
            raw(1920, 1080),
        ),
        (
            "ffmpeg → raw RGB 416×416 (scaled in the child, as `rtsp` does)",
            "ffmpeg".into(),
            ffmpeg(&clip, &["-vf", scaled, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]),
            raw(416, 416),
        ),
        (
            "ffmpeg → MJPEG 1080p → the agent decodes",
            "ffmpeg".into(),
            ffmpeg(&clip, &["-q:v", "3", "-f", "mjpeg", "pipe:1"]),
            StreamFormat::Mjpeg,
        ),
    ];
    if find_program("gst-launch-1.0").is_some() {
        let location = format!("location={}", clip.display());
        let gst = |caps: &str| -> Vec<String> {
            [
                "-q",
                "filesrc",
                &location,
                "!",
                "qtdemux",
                "!",
                "decodebin",
                "!",
                "videoconvert",
                "!",
                "videoscale",
                "!",
                caps,
                "!",
                "fdsink",
                "fd=1",
            ]
            .map(String::from)
            .to_vec()
        };
        paths.push((
            "GStreamer decodebin → raw RGB 1920×1080",
            "gst-launch-1.0".into(),
            gst("video/x-raw,format=RGB"),
            raw(1920, 1080),
        ));
        paths.push((
            "GStreamer decodebin → raw RGB 416×234",
            "gst-launch-1.0".into(),
            gst("video/x-raw,format=RGB,width=416,height=234"),
            raw(416, 234),
        ));
    }

    let catalog = Catalog::open(&root.join("models")).expect("models");
    let entry = catalog.get("nanodet").expect("nanodet");
    let shared = ModelPool::default().get_or_load(entry, &Precision::Int8).expect("load");
    let detector = Detector::new(shared, DetectStage::defaults("nanodet", Precision::Int8).settings());

    println!("## 1080p H.264 (60 frames, 10 fps pan) → NanoDet int8, one decoder thread\n");
    println!(
        "| path | frames | wall ms/frame | child CPU ms/frame | agent decode ms/frame | NanoDet prep+infer ms | of which inference |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, program, args, format) in paths {
        let spec = CommandSpec { program, args, format, stall: Duration::from_secs(30), label: name.into() };
        let row = run(&spec);
        let image = row.last.clone().expect("a frame");
        // detect() includes letterboxing, tiling and decoding boxes; inference is the model alone
        let times: Vec<(f64, f64)> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let out = detector.detect(&image).expect("detect");
                (t.elapsed().as_secs_f64() * 1e3, out.inference.as_secs_f64() * 1e3)
            })
            .collect();
        let (total, infer) = times.iter().fold((0.0, 0.0), |a, t| (a.0 + t.0 / 3.0, a.1 + t.1 / 3.0));
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {total:.0} | {infer:.0} |",
            row.frames, row.wall_ms, row.child_ms, row.decode_ms
        );
    }
}
