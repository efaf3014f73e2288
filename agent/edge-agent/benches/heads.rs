//! Heads and their updates, measured in one run: backbone embedding time (int8 and fp32 side
//! by side), head scoring, training a head on the digits fixtures, verifying a head, the swap
//! itself while two threads classify without pause, and whole pushes over a real in-process
//! broker (sign, chunk, verify, persist, swap, ack).
//! `cargo bench --bench heads` (the fp32 backbone comes from `scripts/make-models.sh classify-fp32`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edge_agent::config::{Precision, UpdateSettings};
use edge_agent::mqtt::Topics;
use edge_agent::update::manager::{Incoming, Manager};
use edge_core::head::Head;
use edge_core::head::slot::{HeadSlot, SlotSpec};
use edge_core::head::train::{Dataset, FitOptions, accuracy, fit};
use edge_core::model::Catalog;
use tract_onnx::prelude::tract_ndarray::Array2;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64() * 1e3)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Catalog::open(&root.join("models")).expect("models folder");
    let photo = edge_core::source::decode_image_file(&root.join("tests/fixtures/images/chelsea.jpg")).expect("photo");

    println!("## backbone: efficientnet-lite0, one 224x224 embedding (tract, 1 thread, median of 15)\n");
    println!("| precision | load ms | embed ms |");
    println!("|---|---|---|");
    let mut medians = Vec::new();
    for precision in [Precision::Int8, Precision::Fp32] {
        let Ok((b, load)) = std::panic::catch_unwind(|| {
            time(|| edge_agent::cli::head::backbone(&catalog, "efficientnet-lite0", &precision))
        }) else {
            continue;
        };
        let Ok(b) = b else {
            println!("| {precision} | missing (scripts/make-models.sh classify-fp32) | |");
            continue;
        };
        let runs: Vec<f64> = (0..15).map(|_| time(|| b.embed(&photo, None).expect("embed")).1).collect();
        medians.push(median(runs.clone()));
        println!("| {precision} | {load:.0} | {:.1} |", median(runs));
    }
    if let [i8, f32] = medians[..] {
        println!("\nint8 / fp32 = {:.2}", i8 / f32);
    }

    let backbone = edge_agent::cli::head::backbone(&catalog, "efficientnet-lite0", &Precision::Int8).expect("int8");
    let entry = catalog.get("efficientnet-lite0").expect("entry");
    let imagenet = edge_core::head::shipped(entry, "imagenet").expect("imagenet head");

    // training on the digits fixtures
    let ds = Dataset::open(&root.join("tests/fixtures/heads/digits")).expect("digits");
    let paths: Vec<_> = ds.examples.iter().map(|(p, _)| p.clone()).collect();
    let (embedded, embed_ms) = time(|| edge_agent::cli::head::embed_all(&backbone, &paths));
    let rows: Vec<f32> = embedded.into_iter().flat_map(|r| r.expect("embedding")).collect();
    let (train, val) = ds.split(0.2, 1);
    let pick = |idx: &[usize]| {
        let x: Vec<f32> = idx.iter().flat_map(|&i| rows[i * 1280..(i + 1) * 1280].to_vec()).collect();
        let y: Vec<usize> = idx.iter().map(|&i| ds.examples[i].1).collect();
        (Array2::from_shape_vec((idx.len(), 1280), x).expect("shape"), y)
    };
    let ((xt, yt), (xv, yv)) = (pick(&train), pick(&val));
    let (fitted, fit_ms) = time(|| fit(&xt, &yt, 10, FitOptions::default()));
    let manifest = edge_core::head::HeadManifest {
        name: "digits".into(),
        version: "1".into(),
        backbone: "efficientnet-lite0".into(),
        backbone_sha256: backbone.sha256(),
        input_dim: 1280,
        labels: ds.labels.clone(),
        metrics: serde_json::Value::Null,
        created: String::new(),
    };
    let digits = Head::new(manifest, fitted.weight.iter().copied().collect(), fitted.bias.to_vec()).expect("head");
    println!("\n## training a head: digits fixtures, {} images, 10 labels\n", paths.len());
    println!("| step | ms |");
    println!("|---|---|");
    println!("| embed all images (every core) | {embed_ms:.0} |");
    println!("| fit softmax regression ({} iterations) | {fit_ms:.0} |", fitted.iterations);
    println!(
        "\ntrain accuracy {:.3}, held-out accuracy {:.3} on {} images (chance 0.100)",
        accuracy(&fitted.weight, &fitted.bias, &xt, &yt),
        accuracy(&fitted.weight, &fitted.bias, &xv, &yv),
        yv.len()
    );

    // scoring and verification
    let embedding = backbone.embed(&photo, None).expect("embed").0;
    let probe = backbone.embed(&edge_core::vision::probe_image(), None).expect("probe").0;
    let dir = tempfile::tempdir().expect("tmp");
    let slot = Arc::new(HeadSlot::open(
        SlotSpec {
            name: "bench",
            backbone: "efficientnet-lite0",
            backbone_sha256: &backbone.sha256(),
            dim: 1280,
            shipped: imagenet.clone(),
            state_dir: dir.path(),
            probation: 0,
            probe,
        },
        crossbeam_channel::unbounded().0,
    ));
    println!("\n## heads: size, scoring, verification (median of 50)\n");
    println!("| head | classes | bytes | score one embedding us | parse + check us |");
    println!("|---|---|---|---|---|");
    for head in [&digits, &imagenet] {
        let bytes = head.to_bytes();
        let score: Vec<f64> = (0..50).map(|_| time(|| head.probabilities(&embedding)).1 * 1e3).collect();
        let verify: Vec<f64> = (0..50)
            .map(|_| time(|| slot.check(&Head::from_bytes(&bytes).expect("parse")).expect("check")).1 * 1e3)
            .collect();
        println!(
            "| {} | {} | {} | {:.0} | {:.0} |",
            head.manifest.name,
            head.classes(),
            bytes.len(),
            median(score),
            median(verify)
        );
    }

    // the swap, with two threads classifying all the time
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (slot, stop, done, e) = (slot.clone(), stop.clone(), done.clone(), embedding.clone());
            std::thread::spawn(move || {
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match slot.classify(&e, 3) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => {
                            errors += 1;
                            0
                        }
                    };
                }
                errors
            })
        })
        .collect();
    let mut swaps = Vec::new();
    for i in 0..200 {
        let head = if i % 2 == 0 { digits.clone() } else { imagenet.clone() };
        swaps.push(time(|| slot.activate(head, &format!("v{i}"))).1 * 1e3);
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    let errors: u64 = readers.into_iter().map(|r| r.join().unwrap_or(u64::MAX)).sum();
    swaps.sort_by(f64::total_cmp);
    println!("\n## swap under load: 200 swaps while 2 threads classify\n");
    println!(
        "activate: median {:.1} us, max {:.1} us; {} classifications meanwhile, {errors} errors",
        median(swaps.clone()),
        swaps.last().copied().unwrap_or(f64::NAN),
        done.load(Ordering::Relaxed)
    );

    push_over_broker(&backbone.sha256(), &digits, &imagenet);
}

/// Whole pushes through an in-process broker to a manager thread.
fn push_over_broker(backbone_sha: &str, digits: &Head, imagenet: &Head) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let port = edge_broker::free_port().expect("port");
    edge_broker::start(port).expect("broker");
    let dir = tempfile::tempdir().expect("tmp");
    let key = edge_agent::update::sign::generate().expect("key");
    let slot = Arc::new(HeadSlot::open(
        SlotSpec {
            name: "bench",
            backbone: "efficientnet-lite0",
            backbone_sha256: backbone_sha,
            dim: 1280,
            shipped: imagenet.clone(),
            state_dir: dir.path(),
            probation: 0,
            probe: vec![0.5; 1280],
        },
        crossbeam_channel::unbounded().0,
    ));
    let topics = Topics::new("edge-agent", "bench");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    // the device side: a subscriber feeding the manager, a publisher draining its statuses
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<edge_agent::mqtt::Outgoing>(64);
    let (req_tx, req_rx) = crossbeam_channel::bounded::<Incoming>(16);
    let mut opts = MqttOptions::new("bench-device", "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 64);
    client.subscribe(topics.model_updates(), QoS::AtLeastOnce).expect("subscribe");
    std::thread::spawn(move || {
        for event in conn.iter() {
            if let Ok(Event::Incoming(Packet::Publish(p))) = event
                && req_tx.send(Incoming { topic: p.topic.clone(), payload: p.payload.to_vec() }).is_err()
            {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        while let Some(m) = out_rx.blocking_recv() {
            if client.publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload).is_err() {
                return;
            }
        }
    });
    let settings = UpdateSettings {
        trusted_keys: vec![edge_agent::update::sign::encode_public(&key.verifying_key())],
        ..Default::default()
    };
    let slots = std::collections::BTreeMap::from([("bench".to_string(), slot.clone())]);
    let device_key = edge_agent::update::sign::generate().unwrap();
    let manager =
        Manager::new("bench", topics, settings, slots, Default::default(), out_tx).with_device_key(device_key.clone());
    std::thread::spawn(move || manager.run(req_rx, crossbeam_channel::never()));
    std::thread::sleep(Duration::from_millis(300));

    println!("\n## a whole push over MQTT (sign, chunks of 192 KiB, verify, persist, swap, ack)\n");
    println!("| head | bytes | chunks | push to active ms |");
    println!("|---|---|---|---|");
    let target = edge_agent::update::push::Target {
        host: "127.0.0.1".into(),
        port,
        prefix: "edge-agent".into(),
        device: "bench".into(),
        timeout: Duration::from_secs(30),
        device_key: Some(device_key.verifying_key()),
    };
    for (i, head) in [digits, imagenet, digits].into_iter().enumerate() {
        let mut h = head.clone();
        h.manifest.version = format!("{}-{i}", h.manifest.name);
        let bytes = h.to_bytes();
        let (result, ms) =
            time(|| rt.block_on(edge_agent::update::push::push_head(&target, &key, "bench", &bytes, |_| {})));
        result.expect("push");
        println!(
            "| {} | {} | {} | {ms:.0} |",
            h.manifest.name,
            bytes.len(),
            bytes.len().div_ceil(edge_agent::update::protocol::CHUNK_BYTES)
        );
        assert_eq!(slot.active_version(), h.manifest.version);
    }
}
