//! Whisper's encoder attention computed one head at a time, so that only one head's scores
//! are in memory at once.
//!
//! The encoder's self-attention is written for all heads together: `softmax(q·kᵀ · c)·v` on
//! `[1, H, T, T]` scores. tract keeps the scores and their softmax alive together, so on the
//! 30 s window (T = 1500, six heads) one attention needed 108 MB (two 54 MB tensors), most
//! of the agent's memory for speech. Here each such chain becomes H chains over one head's
//! `[1, 1, T, T]` scores, joined again along the head axis; tract runs each chain to its end
//! before the next (its plan evaluates a node's inputs in order and frees a tensor after its
//! last use), so one head's 9 MB is what is live. The arithmetic of each head is unchanged.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::type_proto::Value as Type;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto::AttributeType};

/// The heads of the attention, read off the encoder's declared cross-attention outputs
/// (`[1, H, ., .]` each), when they all agree.
fn heads(graph: &GraphProto) -> Option<usize> {
    let mut found = None;
    for output in &graph.output {
        let Some(Type::TensorType(t)) = output.r#type.as_ref().and_then(|t| t.value.as_ref()) else { return None };
        let dims = &t.shape.as_ref()?.dim;
        let Some(Dim::DimValue(h)) = dims.get(1).and_then(|d| d.value.as_ref()) else { return None };
        let h = usize::try_from(*h).ok().filter(|&h| h > 0 && dims.len() == 4)?;
        if found.is_some_and(|f| f != h) {
            return None;
        }
        found = Some(h);
    }
    found
}

/// One attention chain: the nodes (by index) of `MatMul(q, kᵀ)`, `Mul(·, c)`, `Softmax`,
/// `MatMul(·, v)`, each intermediate used by the next node only.
struct Chain {
    nodes: [usize; 4],
}

fn chains(graph: &GraphProto) -> Vec<Chain> {
    let users = |name: &str| graph.node.iter().filter(|n| n.input.iter().any(|i| i == name)).count();
    let only_user = |name: &str, op: &str| -> Option<usize> {
        if users(name) != 1 || graph.output.iter().any(|o| o.name == name) {
            return None;
        }
        graph.node.iter().position(|n| n.op_type == op && n.input.first().is_some_and(|i| i == name))
    };
    let mut found = Vec::new();
    for (s, node) in graph.node.iter().enumerate() {
        if node.op_type != "MatMul" || node.input.len() != 2 || node.output.len() != 1 {
            continue;
        }
        let Some(m) = only_user(&node.output[0], "Mul") else { continue };
        // the scale must be one number: a per-head one would be split too
        let scale = graph.node[m].input.iter().find(|i| **i != node.output[0]);
        let scalar =
            |name: &String| graph.initializer.iter().any(|t| t.name == *name && t.dims.iter().all(|&d| d == 1));
        if graph.node[m].input.len() != 2 || !scale.is_some_and(scalar) {
            continue;
        }
        let Some(x) = only_user(&graph.node[m].output[0], "Softmax") else { continue };
        let softmax = &graph.node[x];
        if !softmax.attribute.iter().any(|a| a.name == "axis" && a.i == -1) {
            continue;
        }
        let Some(o) = only_user(&softmax.output[0], "MatMul") else { continue };
        if graph.node[o].input.len() == 2 {
            found.push(Chain { nodes: [s, m, x, o] });
        }
    }
    found
}

/// Rewrites every attention chain of `graph` to run head by head; how many were rewritten.
/// A graph without declared heads or chains is left as it is.
pub fn by_head(graph: &mut GraphProto) -> usize {
    let Some(h) = heads(graph).filter(|&h| h > 1) else { return 0 };
    let found = chains(graph);
    if found.is_empty() {
        return 0;
    }
    let ones = format!("edge_heads_split_{h}");
    graph.initializer.push(TensorProto {
        name: ones.clone(),
        dims: vec![h as i64],
        data_type: DataType::Int64 as i32,
        int64_data: vec![1; h],
        ..Default::default()
    });
    let mut replaced: Vec<(usize, Vec<NodeProto>)> = Vec::new();
    let mut removed = Vec::new();
    for (c, chain) in found.iter().enumerate() {
        let [s, m, x, o] = chain.nodes.map(|i| graph.node[i].clone());
        let (q, kt) = (&s.input[0], &s.input[1]);
        let scale = &m.input[if m.input[0] == s.output[0] { 1 } else { 0 }];
        let weights_first = o.input[0] == x.output[0];
        let v = &o.input[if weights_first { 1 } else { 0 }];
        let name = |what: &str, i: usize| format!("edge_heads_{c}_{what}_{i}");
        let mut nodes = Vec::new();
        for (what, input) in [("q", q), ("kt", kt), ("v", v)] {
            nodes.push(NodeProto {
                name: name(what, h),
                op_type: "Split".into(),
                input: vec![input.clone(), ones.clone()],
                output: (0..h).map(|i| name(what, i)).collect(),
                attribute: vec![int_attr("axis", 1)],
                ..Default::default()
            });
        }
        let mut parts = Vec::new();
        for i in 0..h {
            let node = |op: &str, what: &str, input: Vec<String>, attribute: Vec<AttributeProto>| NodeProto {
                name: name(what, i),
                op_type: op.into(),
                input,
                output: vec![name(what, i)],
                attribute,
                ..Default::default()
            };
            nodes.push(node("MatMul", "scores", vec![name("q", i), name("kt", i)], vec![]));
            nodes.push(node("Mul", "scaled", vec![name("scores", i), scale.clone()], vec![]));
            nodes.push(node("Softmax", "weights", vec![name("scaled", i)], vec![int_attr("axis", -1)]));
            let pair =
                if weights_first { [name("weights", i), name("v", i)] } else { [name("v", i), name("weights", i)] };
            nodes.push(node("MatMul", "out", pair.to_vec(), vec![]));
            parts.push(name("out", i));
        }
        nodes.push(NodeProto {
            name: name("join", h),
            op_type: "Concat".into(),
            input: parts,
            output: o.output.clone(),
            attribute: vec![int_attr("axis", 1)],
            ..Default::default()
        });
        replaced.push((chain.nodes[0], nodes));
        removed.extend(chain.nodes);
    }
    // rebuilt in order: each chain's nodes where its first product was (its inputs come
    // before it, and whatever reads its output after its last)
    let old = std::mem::take(&mut graph.node);
    for (i, node) in old.into_iter().enumerate() {
        if let Some((_, nodes)) = replaced.iter_mut().find(|(at, _)| *at == i) {
            graph.node.append(nodes);
        } else if !removed.contains(&i) {
            graph.node.push(node);
        }
    }
    found.len()
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{ModelProto, OperatorSetIdProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto};
    use tract_onnx::prelude::*;

    fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&d| tensor_shape_proto::Dimension { value: Some(Dim::DimValue(d)), ..Default::default() })
            .collect();
        let tensor = type_proto::Tensor {
            elem_type: DataType::Float as i32,
            shape: Some(tract_onnx::pb::TensorShapeProto { dim }),
        };
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto { value: Some(Type::TensorType(tensor)), ..Default::default() }),
            ..Default::default()
        }
    }

    fn node(op: &str, input: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: output.into(),
            op_type: op.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    /// softmax(q·kᵀ · 0.5)·v over three heads, then a node reading the result.
    fn attention() -> ModelProto {
        let (h, t, d) = (3, 5, 4);
        let graph = GraphProto {
            node: vec![
                node("MatMul", &["q", "kt"], "s", vec![]),
                node("Mul", &["s", "c"], "m", vec![]),
                node("Softmax", &["m"], "p", vec![int_attr("axis", -1)]),
                node("MatMul", &["p", "v"], "o", vec![]),
                node("Add", &["o", "q"], "y", vec![]),
            ],
            initializer: vec![TensorProto {
                name: "c".into(),
                data_type: DataType::Float as i32,
                float_data: vec![0.5],
                ..Default::default()
            }],
            input: vec![value("q", &[1, h, t, d]), value("kt", &[1, h, d, t]), value("v", &[1, h, t, d])],
            output: vec![value("y", &[1, h, t, d])],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    fn run(proto: &ModelProto, inputs: &[Tensor]) -> Vec<f32> {
        let model = tract_onnx::onnx().model_for_proto_model(proto).unwrap().into_optimized().unwrap();
        let plan = model.into_runnable().unwrap();
        let out = plan.run(inputs.iter().cloned().map(|t| t.into_tvalue()).collect()).unwrap();
        out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn attention_head_by_head_gives_the_same_answer() {
        let data = |shape: &[usize], seed: f32| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 2.0).collect();
            Tensor::from_shape(shape, &values).unwrap()
        };
        let inputs = [data(&[1, 3, 5, 4], 0.1), data(&[1, 3, 4, 5], 0.7), data(&[1, 3, 5, 4], 1.3)];
        let whole = attention();
        let mut split = whole.clone();
        let graph = split.graph.as_mut().unwrap();
        assert_eq!(by_head(graph), 1);
        assert_eq!(graph.node.iter().filter(|n| n.op_type == "Softmax").count(), 3);
        assert!(graph.node.iter().all(|n| n.name != "p"), "the all-heads softmax is gone");
        let (a, b) = (run(&whole, &inputs), run(&split, &inputs));
        assert_eq!(a.len(), 60);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn a_graph_without_declared_heads_is_left_alone() {
        let mut proto = attention();
        let graph = proto.graph.as_mut().unwrap();
        graph.output[0] = ValueInfoProto { name: "y".into(), ..Default::default() };
        let before = graph.node.len();
        assert_eq!(by_head(graph), 0);
        assert_eq!(graph.node.len(), before);
    }
}
