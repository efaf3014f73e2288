//! Interleaved timing. Every engine and precision of a model runs in its own process, loaded
//! and warmed up once; the benchmark then asks each in turn for a few runs at a time, so that
//! all of them are timed over the same stretch of the host's time. On a shared or throttled
//! machine a slow spell then slows every column alike and their ratios hold (measured before
//! this: one engine timed after the other, NanoDet's tract/onnxruntime ratio was 1.07 in one
//! run and 2.27 in the next, minutes apart).
//!
//! The protocol, the same for `edge-agent bench --child-variant` and `scripts/bench-ort.py`:
//! the child prints one JSON line when it is loaded and warm (`load_ms`, and whatever else it
//! reports about itself); each line `N` it reads makes it time `N` runs and print
//! `{"times": [ms, ...]}`; at the end of its input it prints one last JSON line (its
//! `peak_rss_mb`) and exits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

/// Runs per request: few enough that every engine's runs are spread over the whole
/// measurement, enough that the first run after another engine's (colder caches) stays
/// below the median.
pub const BATCH: usize = 4;

/// One engine's child process.
pub struct Runner {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: std::fs::File,
    /// The child's first line: what it says about its loading.
    pub ready: Value,
    pub times: Vec<f64>,
}

impl Runner {
    /// Starts `cmd` and waits until it has loaded its model.
    pub fn start(name: &str, mut cmd: Command) -> Result<Runner, String> {
        let stderr = tempfile::tempfile().map_err(|e| format!("{name}: {e}"))?;
        let err_handle = stderr.try_clone().map_err(|e| format!("{name}: {e}"))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err_handle)
            .spawn()
            .map_err(|e| format!("{name}: starting {:?}: {e}", cmd.get_program()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(format!("{name}: no pipes to the child"));
        };
        let mut runner = Runner {
            name: name.to_string(),
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr,
            ready: Value::Null,
            times: Vec::new(),
        };
        runner.ready = runner.line()?;
        Ok(runner)
    }

    /// The child's next JSON line; its last error line when it has none.
    fn line(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).map_err(|e| format!("{}: answer {line:?}: {e}", self.name)),
            _ => Err(self.failure()),
        }
    }

    /// Why the child stopped, after its name: the line of its error output that says so.
    fn failure(&mut self) -> String {
        use std::io::{Read, Seek};
        let status = match self.child.wait() {
            Ok(s) => s.to_string(),
            Err(e) => format!("not reaped: {e}"),
        };
        let mut text = String::new();
        if self.stderr.rewind().is_ok() {
            self.stderr.read_to_string(&mut text).ok();
        }
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let why = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("error") || l.contains("Error"))
            .or(lines.last())
            .map(|l| l.to_string())
            .unwrap_or_else(|| format!("exited without an answer ({status})"));
        format!("{}: {why}", self.name)
    }

    /// Times `n` more runs.
    pub fn batch(&mut self, n: usize) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or_else(|| format!("{}: already finished", self.name))?;
        if writeln!(stdin, "{n}").and_then(|_| stdin.flush()).is_err() {
            return Err(self.failure());
        }
        let answer = self.line()?;
        let times = answer.get("times").and_then(Value::as_array).ok_or_else(|| format!("{}: no times", self.name))?;
        self.times.extend(times.iter().filter_map(Value::as_f64));
        Ok(())
    }

    /// Ends the child; its last line (peak memory).
    pub fn finish(mut self) -> Result<Value, String> {
        drop(self.stdin.take());
        let last = self.line();
        self.child.wait().map_err(|e| format!("{}: waiting for it to end: {e}", self.name))?;
        last
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // a runner dropped early (another failed): the child must not outlive the benchmark
        // (nothing to report to from a drop: a child already gone is what was wanted)
        if self.stdin.is_some() && self.child.kill().is_ok() {
            self.child.wait().ok();
        }
    }
}

/// Takes `runs` timings from every runner, `BATCH` at a time in turn, each round starting
/// with the next runner. A runner that fails is dropped, with its error in the answer.
pub fn interleave(runners: &mut Vec<Runner>, runs: usize) -> Vec<String> {
    let mut failed = Vec::new();
    let mut round = 0;
    loop {
        let left: Vec<usize> = (0..runners.len()).filter(|&i| runners[i].times.len() < runs).collect();
        if left.is_empty() {
            break;
        }
        let mut dead = Vec::new();
        for j in 0..left.len() {
            let i = left[(j + round) % left.len()];
            let n = BATCH.min(runs - runners[i].times.len());
            if let Err(e) = runners[i].batch(n) {
                failed.push(e);
                dead.push(i);
            }
        }
        dead.sort_unstable();
        for i in dead.into_iter().rev() {
            runners.remove(i);
        }
        round += 1;
    }
    failed
}

/// The child's side: prints `ready`, then times `run` on request until its input ends, then
/// prints its peak memory.
pub fn serve(ready: Value, mut run: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ready}")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let n: usize = line.trim().parse().map_err(|e| anyhow::anyhow!("bad request {line:?}: {e}"))?;
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            run()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        writeln!(out, "{}", serde_json::json!({ "times": times }))?;
        out.flush()?;
    }
    writeln!(out, "{}", serde_json::json!({ "peak_rss_mb": super::peak_rss_mb() }))?;
    Ok(())
}
