//! `edge-agent bench --profile`: where one model's inference time goes, by op kind, for each
//! way tract can run it. The tool that shows why a variant is slow, not a benchmark: the
//! per-node timing adds a little overhead of its own.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};

/// Time per op kind over `runs` inferences: (op name, nodes, total ms per run), largest first.
pub fn by_op(
    plan: &Arc<TypedRunnableModel>,
    inputs: &TVec<TValue>,
    runs: usize,
) -> TractResult<Vec<(String, usize, f64)>> {
    let mut state = SimpleState::new(plan)?;
    state.run(inputs.clone())?;
    let mut total: HashMap<String, (usize, f64)> = HashMap::new();
    let runs = runs.max(1);
    for _ in 0..runs {
        state.run_plan_with_eval(inputs.clone(), |ctx, op_state, node, inputs| {
            let started = Instant::now();
            let out = eval(ctx, op_state, node, inputs);
            let e = total.entry(node.op().name().to_string()).or_default();
            e.0 += 1;
            e.1 += started.elapsed().as_secs_f64() * 1e3;
            out
        })?;
    }
    let mut rows: Vec<_> = total.into_iter().map(|(k, (n, ms))| (k, n / runs, ms / runs as f64)).collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(rows)
}

/// The profile as a table, the top `top` kinds and the rest summed.
pub fn table(title: &str, rows: &[(String, usize, f64)], top: usize) -> String {
    let all: f64 = rows.iter().map(|r| r.2).sum();
    let mut s = format!("{title}: {all:.1} ms per inference\n  {:<28} {:>5} {:>9} {:>6}\n", "op", "nodes", "ms", "%");
    for (name, n, ms) in rows.iter().take(top) {
        let _ = writeln!(s, "  {name:<28} {n:>5} {ms:>9.2} {:>5.1}%", 100.0 * ms / all);
    }
    if rows.len() > top {
        let rest: f64 = rows[top..].iter().map(|r| r.2).sum();
        let _ = writeln!(s, "  {:<28} {:>5} {rest:>9.2} {:>5.1}%", "(others)", rows.len() - top, 100.0 * rest / all);
    }
    s
}
