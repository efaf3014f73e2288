//! The house's rules, checked: no dependency cycle between the top-level modules of any crate
//! (`scripts/check-layers.py`), no source file over 500 lines, and the device build's
//! dependency tree free of the broker, the benchmark's and the progress bar's crates.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::root;

#[test]
fn no_module_depends_on_itself_through_others() {
    let out = Command::new("python3").arg(root().join("scripts/check-layers.py")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for krate in ["edge-int8", "edge-core", "edge-agent"] {
        assert!(text.contains(&format!("{krate}: ")) && !text.contains("cycle between"), "{text}");
    }
}

#[test]
fn no_source_file_is_over_500_lines() {
    let mut long = Vec::new();
    let mut stack = vec![root().join("agent")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let n = std::fs::read_to_string(&p).unwrap().lines().count();
                if n > 500 {
                    long.push(format!("{} ({n})", p.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "over 500 lines: {long:?}");
}

#[test]
fn the_device_build_has_no_broker_bench_or_progress_bar_crates() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "edge-agent", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(root())
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.contains("edge-core") && tree.contains("rumqttc"), "{tree}");
    for name in ["rumqttd ", "indicatif ", "tempfile ", "edge-broker "] {
        assert!(!tree.lines().any(|l| l.starts_with(name)), "{name}in the device build's tree");
    }
}
