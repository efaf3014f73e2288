//! The graph rewrite: each ONNX QDQ convolution becomes one `EdgeQConv` node.
//!
//! onnxruntime's static quantization writes a quantized convolution as
//! `QuantizeLinear(u8) → DequantizeLinear → Conv(float) → QuantizeLinear(u8)`, the weights as
//! `DequantizeLinear(i8 initializer, per-channel scale)`. tract runs that literally: a float
//! convolution between passes that quantize and dequantize every activation map, slower than
//! the float model. The rewrite hands the whole sandwich to `EdgeQConv`, which reads the u8
//! tensor, multiplies in integers and writes the u8 tensor the next layer reads. A LeakyReLU
//! the quantizer left between two `Q/DQ` pairs is folded into the same node.
//!
//! Only the shapes the integer op implements are taken (2-D, explicit pads, no dilation,
//! plain or depthwise grouping, u8 activations, symmetric i8 weights); everything else is left
//! as it was, so a graph the rewrite does not understand still runs, in float.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto::AttributeType};
use tract_onnx::prelude::*;

use super::qconv;

/// The custom op's type name in the rewritten graph.
pub const OP: &str = "EdgeQConv";

/// What the rewrite did to one graph.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// convolutions now run in integers
    pub convs: usize,
    /// of which depthwise
    pub depthwise: usize,
    /// LeakyReLUs folded into the convolution before them
    pub folded_activations: usize,
    /// activation quantize/dequantize nodes now run by [`super::qdq`]
    pub qdq: usize,
    /// float-activation matmuls against int8 weights now run by [`super::qmatmul`]
    pub matmuls: usize,
    /// gathers of int8 rows (token embeddings) kept int8 by [`super::qmatmul`]
    pub gathers: usize,
    /// max poolings and resizes now done on u8 values by [`super::spatial`]
    pub spatial: usize,
    /// concatenations and additions now done on u8 values by [`super::join`]
    pub joins: usize,
    /// quantized convolutions left in float, with the reason
    pub left: Vec<(String, String)>,
}

pub(super) struct Index<'g> {
    graph: &'g GraphProto,
    pub(super) producer: HashMap<&'g str, usize>,
    consumers: HashMap<&'g str, Vec<usize>>,
    inits: HashMap<&'g str, &'g TensorProto>,
    outputs: HashSet<&'g str>,
}

impl<'g> Index<'g> {
    pub(super) fn new(graph: &'g GraphProto) -> Index<'g> {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for x in n.input.iter().filter(|x| !x.is_empty()) {
                consumers.entry(x.as_str()).or_default().push(i);
            }
        }
        Index {
            graph,
            producer,
            consumers,
            inits: graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
            outputs: graph.output.iter().map(|o| o.name.as_str()).collect(),
        }
    }

    fn node(&self, i: usize) -> &'g NodeProto {
        &self.graph.node[i]
    }

    /// The producer of `name` if it is a node of type `op`.
    pub(super) fn made_by(&self, name: &str, op: &str) -> Option<&'g NodeProto> {
        self.producer.get(name).map(|&i| self.node(i)).filter(|n| n.op_type == op)
    }

    /// The only reader of `name`, if it has exactly one and is not a graph output.
    pub(super) fn sole_reader(&self, name: &str, op: &str) -> Option<&'g NodeProto> {
        match self.consumers.get(name).map(Vec::as_slice) {
            Some([i]) if !self.outputs.contains(name) => Some(self.node(*i)).filter(|n| n.op_type == op),
            _ => None,
        }
    }

    pub(super) fn init(&self, name: &str) -> Option<&'g TensorProto> {
        self.inits.get(name).copied()
    }

    pub(super) fn tensor(&self, name: &str) -> TractResult<Tensor> {
        let t = self.init(name).with_context(|| format!("{name} is not an initializer"))?;
        tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::MmapDataResolver, t, None)
    }

    fn dtype(&self, name: &str) -> Option<i32> {
        self.init(name).map(|t| t.data_type)
    }
}

/// One convolution the rewrite will replace.
struct Plan {
    conv: usize,
    inputs: Vec<String>,
    output: String,
    alpha: Option<f32>,
    bias: TensorProto,
    depthwise: bool,
    /// the quantize (and folded activation) nodes the new node stands for
    replaced: Vec<usize>,
}

pub(super) fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

pub(super) fn is_zero(t: &Tensor) -> TractResult<bool> {
    Ok(t.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.iter().all(|&v| v == 0.0))
}

/// Decides whether convolution `i` can run in integers, and how.
fn plan(ix: &Index, i: usize) -> Result<Plan, String> {
    let conv = ix.node(i);
    let fail = |why: &str| Err(why.to_string());
    let Some(dq_x) = conv.input.first().and_then(|x| ix.made_by(x, "DequantizeLinear")) else {
        return fail("input not dequantized");
    };
    let Some(dq_w) = conv.input.get(1).and_then(|w| ix.made_by(w, "DequantizeLinear")) else {
        return fail("weights not dequantized");
    };
    if attr(conv, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
        return fail("auto_pad");
    }
    if attr(conv, "dilations").is_some_and(|a| a.ints.iter().any(|&d| d != 1)) {
        return fail("dilation");
    }
    if attr(conv, "pads").is_some_and(|a| a.ints.len() != 4) || attr(conv, "strides").is_some_and(|a| a.ints.len() != 2)
    {
        return fail("not 2-D");
    }
    let Some(q) = ix.sole_reader(&conv.output[0], "QuantizeLinear") else {
        return fail("output not quantized");
    };
    let u8_params = |n: &NodeProto| {
        n.input.len() == 3
            && ix.dtype(&n.input[1]) == Some(DataType::Float as i32)
            && ix.dtype(&n.input[2]) == Some(DataType::Uint8 as i32)
            && ix.init(&n.input[1]).is_some_and(|t| t.dims.iter().product::<i64>() == 1)
    };
    if !u8_params(dq_x) || !u8_params(q) {
        return fail("activations are not per-tensor u8");
    }
    if ix.dtype(&dq_w.input[0]) != Some(DataType::Int8 as i32) {
        return fail("weights are not i8");
    }
    let w_init = ix.init(&dq_w.input[0]).expect("checked above");
    if w_init.dims.len() != 4 {
        return fail("not 2-D");
    }
    let cout = w_init.dims[0] as usize;
    let axis = attr(dq_w, "axis").map(|a| a.i).unwrap_or(1);
    let w_scale = ix.tensor(&dq_w.input[1]).map_err(|e| e.to_string())?;
    if w_scale.len() != 1 && (axis != 0 || w_scale.len() != cout) {
        return fail("weight scales are not per output channel");
    }
    if let Some(z) = dq_w.input.get(2).filter(|z| !z.is_empty())
        && !ix.tensor(z).and_then(|t| is_zero(&t)).unwrap_or(false)
    {
        return fail("weights are not symmetric");
    }
    let group = attr(conv, "group").map(|a| a.i as usize).unwrap_or(1);
    let depthwise = group > 1;
    if depthwise && !(w_init.dims[1] == 1 && group == cout) {
        return fail("grouped, not depthwise");
    }
    if depthwise && w_init.dims[2] * w_init.dims[3] > 512 {
        return fail("depthwise kernel above 512 taps");
    }
    let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
        None => vec![0.0; cout],
        Some(b) => {
            let real = if let Some(dq_b) = ix.made_by(b, "DequantizeLinear") {
                let scale = ix.tensor(&dq_b.input[1]).and_then(|s| Ok(s.cast_to::<f32>()?.into_owned()));
                let q = ix.tensor(&dq_b.input[0]).and_then(|s| Ok(s.cast_to::<f32>()?.into_owned()));
                let (Ok(scale), Ok(q)) = (scale, q) else { return fail("bias is not constant") };
                let (scale, q) = (
                    scale.try_as_plain_ram().map_err(|e| e.to_string())?,
                    q.try_as_plain_ram().map_err(|e| e.to_string())?,
                );
                let (scale, q) = (
                    scale.as_slice::<f32>().map_err(|e| e.to_string())?,
                    q.as_slice::<f32>().map_err(|e| e.to_string())?,
                );
                let zero = dq_b.input.get(2).filter(|z| !z.is_empty()).map(|z| ix.tensor(z).and_then(|t| is_zero(&t)));
                if zero.is_some_and(|z| !z.unwrap_or(false)) || !(scale.len() == 1 || scale.len() == q.len()) {
                    return fail("bias quantization");
                }
                q.iter().enumerate().map(|(c, v)| v * scale[if scale.len() == 1 { 0 } else { c }]).collect::<Vec<f32>>()
            } else {
                let Ok(t) = ix.tensor(b).and_then(|t| Ok(t.cast_to::<f32>()?.into_owned())) else {
                    return fail("bias is not constant");
                };
                t.try_as_plain_ram().and_then(|v| Ok(v.as_slice::<f32>()?.to_vec())).map_err(|e| e.to_string())?
            };
            if real.len() != cout {
                return fail("bias length");
            }
            real
        }
    };
    // Q → DQ → LeakyReLU → Q, nothing else reading the intermediate tensors: fold the activation
    let index_of = |n: &NodeProto| ix.producer[n.output[0].as_str()];
    let mut out_q = q;
    let mut alpha = None;
    let mut replaced = vec![index_of(q)];
    if let Some(dq) = ix.sole_reader(&q.output[0], "DequantizeLinear")
        && let Some(lr) = ix.sole_reader(&dq.output[0], "LeakyRelu")
        && let Some(q2) = ix.sole_reader(&lr.output[0], "QuantizeLinear")
    {
        let same = dq.input.get(1..3) == q.input.get(1..3);
        if same && u8_params(q2) {
            alpha = Some(attr(lr, "alpha").map(|a| a.f).unwrap_or(0.01));
            out_q = q2;
            replaced.extend([index_of(dq), index_of(lr), index_of(q2)]);
        }
    }
    let bias_name = format!("{}.edge_bias", conv.name);
    let bias = TensorProto {
        name: bias_name.clone(),
        dims: vec![cout as i64],
        data_type: DataType::Float as i32,
        float_data: bias,
        ..Default::default()
    };
    let inputs = vec![
        dq_x.input[0].clone(),
        dq_x.input[1].clone(),
        dq_x.input[2].clone(),
        dq_w.input[0].clone(),
        dq_w.input[1].clone(),
        bias_name,
        out_q.input[1].clone(),
        out_q.input[2].clone(),
    ];
    debug_assert_eq!(inputs.len(), qconv::INPUTS.len());
    Ok(Plan { conv: i, inputs, output: out_q.output[0].clone(), alpha, bias, depthwise, replaced })
}

/// Rewrites every quantized convolution and int8-weight matmul of `graph` it can; returns what
/// it did.
pub fn rewrite(graph: &mut GraphProto) -> Rewritten {
    let mut done = Rewritten::default();
    let plans: Vec<Plan> = {
        let ix = Index::new(graph);
        let mut plans = Vec::new();
        for (i, n) in graph.node.iter().enumerate().filter(|(_, n)| n.op_type == "Conv") {
            match plan(&ix, i) {
                Ok(p) => plans.push(p),
                // a float convolution is not one the rewrite missed
                Err(why) if why.ends_with("not dequantized") => {}
                Err(why) => done.left.push((n.name.clone(), why)),
            }
        }
        plans
    };
    let mut replaced = HashSet::new();
    for p in plans {
        replaced.extend(p.replaced.iter().copied());
        let conv = &mut graph.node[p.conv];
        let mut attributes: Vec<AttributeProto> = conv
            .attribute
            .iter()
            .filter(|a| matches!(a.name.as_str(), "pads" | "strides" | "group" | "kernel_shape"))
            .cloned()
            .collect();
        if let Some(alpha) = p.alpha {
            attributes.push(AttributeProto {
                name: "alpha".into(),
                r#type: AttributeType::Float as i32,
                f: alpha,
                ..Default::default()
            });
            done.folded_activations += 1;
        }
        *conv = NodeProto {
            name: conv.name.clone(),
            op_type: OP.into(),
            input: p.inputs,
            output: vec![p.output],
            attribute: attributes,
            ..Default::default()
        };
        graph.initializer.push(p.bias);
        done.convs += 1;
        done.depthwise += p.depthwise as usize;
    }
    drop_nodes(graph, &replaced);
    done.matmuls = super::qmatmul::rewrite(graph);
    done.gathers = super::qmatmul::rewrite_gathers(graph);
    done.spatial = super::spatial::rewrite(graph);
    done.joins = super::join::rewrite(graph);
    prune(graph);
    done.qdq = fast_qdq(graph);
    done
}

/// Hands the per-tensor u8 activation `QuantizeLinear`/`DequantizeLinear` nodes left after the
/// convolutions to [`super::qdq`]'s vectorised ops. Weights' dequantization (an initializer
/// input) stays tract's, which folds it at load.
fn fast_qdq(graph: &mut GraphProto) -> usize {
    let inits: HashMap<String, (i32, i64)> =
        graph.initializer.iter().map(|t| (t.name.clone(), (t.data_type, t.dims.iter().product::<i64>()))).collect();
    let scalar = |name: Option<&String>, dtype: DataType| {
        name.and_then(|n| inits.get(n)).is_some_and(|&(t, len)| t == dtype as i32 && len == 1)
    };
    let mut changed = 0;
    for n in graph.node.iter_mut() {
        let per_tensor_u8 = n.input.len() == 3
            && scalar(n.input.get(1), DataType::Float)
            && scalar(n.input.get(2), DataType::Uint8)
            && !inits.contains_key(&n.input[0]);
        if !per_tensor_u8 {
            continue;
        }
        let op = match n.op_type.as_str() {
            "QuantizeLinear" => super::qdq::QUANTIZE,
            "DequantizeLinear" => super::qdq::DEQUANTIZE,
            _ => continue,
        };
        n.op_type = op.into();
        n.attribute.clear();
        changed += 1;
    }
    changed
}

/// Drops the nodes nothing reads any more (the replaced quantize/dequantize nodes).
fn prune(graph: &mut GraphProto) {
    loop {
        let mut read: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        read.extend(graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)));
        let dead: HashSet<usize> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.output.iter().any(|o| read.contains(o.as_str())))
            .map(|(i, _)| i)
            .collect();
        if dead.is_empty() {
            return;
        }
        drop_nodes(graph, &dead);
    }
}

/// Drops the nodes at `indices`.
pub(super) fn drop_nodes(graph: &mut GraphProto, indices: &HashSet<usize>) {
    let mut i = 0;
    graph.node.retain(|_| {
        i += 1;
        !indices.contains(&(i - 1))
    });
}

/// Puts the node `plan` makes in place of each node it takes, and drops the one node each
/// replacement absorbs (the `QuantizeLinear` after it); returns how many were replaced.
pub(super) fn substitute(
    graph: &mut GraphProto,
    plan: impl Fn(&Index, &NodeProto) -> Option<(NodeProto, usize)>,
) -> usize {
    let plans: Vec<(usize, NodeProto, usize)> = {
        let ix = Index::new(graph);
        graph.node.iter().enumerate().filter_map(|(i, n)| plan(&ix, n).map(|(node, gone)| (i, node, gone))).collect()
    };
    let mut gone = HashSet::new();
    for (i, node, absorbed) in &plans {
        graph.node[*i] = node.clone();
        gone.insert(*absorbed);
    }
    drop_nodes(graph, &gone);
    plans.len()
}
