//! The outbox against a model (a plain queue) under random operation sequences, plus
//! corruption, restart and cap cases.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

fn msg(i: u32, size: usize) -> Outgoing {
    Outgoing { topic: format!("t/{}", i % 3), payload: vec![(i % 251) as u8; size], retain: i.is_multiple_of(5) }
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    /// take the oldest segment and ack it (the replay succeeded)
    Replay,
    /// take the oldest segment and do not ack it (the replay was interrupted)
    TakeOnly,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..300).prop_map(Op::Push),
        2 => Just(Op::Replay),
        1 => Just(Op::TakeOnly),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    /// With a cap never reached, everything pushed comes out exactly once per ack, in order;
    /// a segment taken but not acked comes out again.
    #[test]
    fn replays_in_order_without_loss(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 1 << 30, 2_000).unwrap();
        let mut model: VecDeque<Outgoing> = VecDeque::new();
        let mut delivered: Vec<Outgoing> = Vec::new();
        let mut expected_delivered: Vec<Outgoing> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push(size) => {
                    let m = msg(i as u32, size);
                    outbox.push(&m).unwrap();
                    model.push_back(m);
                }
                Op::Replay => {
                    if let Some((id, batch)) = outbox.take_oldest().unwrap() {
                        for m in &batch {
                            prop_assert_eq!(Some(m), model.front());
                            expected_delivered.push(model.pop_front().unwrap());
                        }
                        delivered.extend(batch);
                        outbox.ack(id).unwrap();
                    } else {
                        prop_assert!(model.is_empty());
                    }
                }
                Op::TakeOnly => {
                    if let Some((_, batch)) = outbox.take_oldest().unwrap() {
                        prop_assert_eq!(Some(&batch[0]), model.front());
                    }
                }
                Op::Reopen => outbox = Outbox::open(dir.path(), 1 << 30, 2_000).unwrap(),
            }
            prop_assert_eq!(outbox.stats().messages, model.len() as u64);
        }
        prop_assert_eq!(delivered, expected_delivered);
        prop_assert_eq!(outbox.stats().dropped, 0);
    }

    /// With a small cap, the newest messages survive, the oldest are dropped and counted, and
    /// the total stays within the cap.
    #[test]
    fn the_cap_drops_the_oldest_and_counts(sizes in prop::collection::vec(0usize..500, 1..200)) {
        let dir = tempfile::tempdir().unwrap();
        let cap = 10_000;
        let mut outbox = Outbox::open(dir.path(), cap, 1_000).unwrap();
        for (i, size) in sizes.iter().enumerate() {
            outbox.push(&msg(i as u32, *size)).unwrap();
            prop_assert!(outbox.stats().bytes <= cap);
        }
        let mut out = Vec::new();
        while let Some((id, batch)) = outbox.take_oldest().unwrap() {
            out.extend(batch);
            outbox.ack(id).unwrap();
        }
        let pushed: Vec<Outgoing> = sizes.iter().enumerate().map(|(i, s)| msg(i as u32, *s)).collect();
        prop_assert_eq!(out.len() as u64 + outbox.stats().dropped, pushed.len() as u64);
        // what survived is exactly the newest suffix
        prop_assert_eq!(&out[..], &pushed[pushed.len() - out.len()..]);
    }
}

#[test]
fn a_corrupt_segment_is_quarantined_and_the_rest_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), 1 << 20, 300).unwrap();
    for i in 0..10 {
        outbox.push(&msg(i, 100)).unwrap();
    }
    drop(outbox);
    // flip a byte in the middle of the first segment's second record
    let first = dir.path().join(format!("{:016}.seg", 0));
    let mut data = std::fs::read(&first).unwrap();
    let at = data.len() / 2 + 20;
    data[at] ^= 0xff;
    std::fs::write(&first, data).unwrap();

    let mut outbox = Outbox::open(dir.path(), 1 << 20, 300).unwrap();
    let mut got = Vec::new();
    while let Some((id, batch)) = outbox.take_oldest().unwrap() {
        got.extend(batch);
        outbox.ack(id).unwrap();
    }
    assert!(got.len() >= 8 && got.len() < 10, "{}", got.len());
    assert_eq!(got.last(), Some(&msg(9, 100)));
    assert!(dir.path().join(format!("{:016}.corrupt", 0)).exists());
    assert!(outbox.is_empty());
}

#[test]
fn records_round_trip_and_garbage_does_not_decode() {
    let m = Outgoing { topic: "a/b".into(), payload: b"{\"x\":1}".to_vec(), retain: true };
    let enc = segment::encode(&m);
    assert_eq!(segment::decode_all(&enc), (vec![m.clone()], true));
    assert_eq!(segment::decode_all(&enc[..enc.len() - 1]), (vec![], false));
    assert_eq!(segment::decode_all(b"\xea\xff\xff\xff\xff"), (vec![], false));
    assert!(matches!(
        Outbox::open(tempfile::tempdir().unwrap().path(), 1000, 100).unwrap().push(&msg(0, 200)),
        Err(OutboxError::TooLarge(_))
    ));
}

#[test]
fn each_durability_policy_syncs_as_often_as_it_says() {
    let syncs = |durability: Durability, pushes: u32, pause: std::time::Duration| {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 1 << 20, 1_000).unwrap().with_durability(durability);
        for i in 0..pushes {
            outbox.push(&msg(i, 100)).unwrap();
            std::thread::sleep(pause);
            outbox.flush_due().unwrap();
        }
        let before_close = outbox.stats().syncs;
        outbox.close().unwrap();
        (before_close, outbox.stats().syncs)
    };
    let short = std::time::Duration::from_millis(1);
    // 20 records of ~110 bytes in 1000-byte segments: 3 segments
    assert_eq!(syncs(Durability::Never, 20, short), (0, 0));
    assert_eq!(syncs(Durability::Always, 20, short), (20, 20));
    // an interval longer than the run: a sync when each full segment closes, one more at close
    let (running, closed) = syncs(Durability::Interval(std::time::Duration::from_secs(60)), 20, short);
    assert_eq!((running, closed), (2, 3));
    // an interval shorter than the pause: like always
    let (running, _) = syncs(Durability::Interval(std::time::Duration::from_millis(1)), 20, short * 3);
    assert!(running >= 19, "{running}");
}

#[test]
fn synced_records_read_back_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), 1 << 20, 1_000).unwrap().with_durability(Durability::Always);
    for i in 0..20 {
        outbox.push(&msg(i, 100)).unwrap();
    }
    drop(outbox);
    let mut outbox = Outbox::open(dir.path(), 1 << 20, 1_000).unwrap();
    let mut got = Vec::new();
    while let Some((id, batch)) = outbox.take_oldest().unwrap() {
        got.extend(batch);
        outbox.ack(id).unwrap();
    }
    assert_eq!(got, (0..20).map(|i| msg(i, 100)).collect::<Vec<_>>());
}
