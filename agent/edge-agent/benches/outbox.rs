//! Outbox throughput: results spilled to disk and replayed, as a table.
//! `cargo bench --bench outbox`

use std::time::Instant;

use edge_agent::mqtt::Outgoing;
use edge_agent::outbox::Outbox;

fn main() {
    println!("{:>9} {:>8} {:>14} {:>14} {:>10}", "messages", "bytes", "push msg/s", "replay msg/s", "MB/s push");
    for (n, size) in [(20_000usize, 200usize), (20_000, 600), (5_000, 4_000)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut outbox = Outbox::open(dir.path(), 1 << 30, 1 << 20).expect("outbox");
        let msg =
            Outgoing { topic: "edge-agent/bench/detections/objects".into(), payload: vec![b'x'; size], retain: false };
        let t = Instant::now();
        for _ in 0..n {
            outbox.push(&msg).expect("push");
        }
        let push = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut replayed = 0;
        while let Some((id, batch)) = outbox.take_oldest().expect("take") {
            replayed += batch.len();
            outbox.ack(id).expect("ack");
        }
        let replay = t.elapsed().as_secs_f64();
        assert_eq!(replayed, n);
        println!(
            "{n:>9} {size:>8} {:>14.0} {:>14.0} {:>10.1}",
            n as f64 / push,
            n as f64 / replay,
            (n * size) as f64 / push / 1e6
        );
    }
}
