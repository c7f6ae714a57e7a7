//! Just enough of the ONNX protobuf format to take a network's convolutions and
//! their weights out of the embedded model file: nodes (op, inputs, outputs, integer
//! and float attributes) and float initializers. The wire format is read directly
//! (five message types, a handful of fields each) rather than through a generated
//! protobuf binding.

use std::collections::HashMap;

use crate::DetectError;

fn malformed(what: &str) -> DetectError {
    DetectError::Inference(format!("model file: {what}"))
}

/// One field of a protobuf message.
enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// Iterates over the fields of one protobuf message.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, DetectError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.data.split_first().ok_or_else(|| malformed("varint"))?;
            self.data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DetectError> {
        if n > self.data.len() {
            return Err(malformed("field runs past its message"));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, DetectError> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Varint(0) // fixed64: no field we read has this type
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed("length"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        Ok(Some((key >> 3, value)))
    }

    /// Calls `f` with every (field number, value) of `data`.
    fn each(
        data: &'a [u8],
        mut f: impl FnMut(u64, Value<'a>) -> Result<(), DetectError>,
    ) -> Result<(), DetectError> {
        let mut fields = Fields { data };
        while let Some((number, value)) = fields.next_field()? {
            f(number, value)?;
        }
        Ok(())
    }
}

fn string(value: Value) -> Result<String, DetectError> {
    match value {
        Value::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| malformed("string")),
        _ => Err(malformed("expected a string")),
    }
}

/// Integers of a repeated int64 field, packed or not.
fn push_ints(value: Value, out: &mut Vec<i64>) -> Result<(), DetectError> {
    match value {
        Value::Varint(v) => out.push(v as i64),
        Value::Bytes(b) => {
            let mut packed = Fields { data: b };
            while !packed.data.is_empty() {
                out.push(packed.varint()? as i64);
            }
        }
        Value::Fixed32(_) => return Err(malformed("expected integers")),
    }
    Ok(())
}

/// A graph node: operator, its inputs and outputs by name, and its numeric attributes.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Integer and integer-list attributes (`group`, `strides`, `pads`, …).
    pub ints: HashMap<String, Vec<i64>>,
    /// Float attributes (`alpha`).
    pub floats: HashMap<String, f32>,
}

/// A float tensor.
#[derive(Debug)]
pub(crate) struct Tensor {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// The nodes of the model's graph, in file (topological) order, and its weights.
pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    pub weights: HashMap<String, Tensor>,
}

impl Graph {
    pub(crate) fn parse(model: &[u8]) -> Result<Self, DetectError> {
        let mut graph = None;
        // ModelProto.graph = 7
        Fields::each(model, |number, value| {
            if let (7, Value::Bytes(b)) = (number, value) {
                graph = Some(b);
            }
            Ok(())
        })?;
        let graph = graph.ok_or_else(|| malformed("no graph"))?;
        let (mut nodes, mut weights) = (Vec::new(), HashMap::new());
        // GraphProto.node = 1, GraphProto.initializer = 5
        Fields::each(graph, |number, value| {
            match (number, value) {
                (1, Value::Bytes(b)) => nodes.push(parse_node(b)?),
                (5, Value::Bytes(b)) => {
                    let (name, tensor) = parse_tensor(b)?;
                    weights.insert(name, tensor);
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(Self { nodes, weights })
    }

    /// The weight a node input names, following `Identity` nodes to their source.
    pub(crate) fn weight(&self, name: &str) -> Result<&Tensor, DetectError> {
        let mut name = name;
        for _ in 0..8 {
            if let Some(tensor) = self.weights.get(name) {
                return Ok(tensor);
            }
            match self
                .nodes
                .iter()
                .find(|n| n.op == "Identity" && n.outputs.first().map(String::as_str) == Some(name))
            {
                Some(identity) => name = &identity.inputs[0],
                None => break,
            }
        }
        Err(malformed(&format!("no weight {name:?}")))
    }

    /// The node whose first output is `name`.
    pub(crate) fn producer(&self, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.outputs.first().map(String::as_str) == Some(name))
    }

    /// The nodes that read `name`.
    pub(crate) fn consumers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> {
        self.nodes
            .iter()
            .filter(move |n| n.inputs.iter().any(|i| i == name))
    }
}

fn parse_node(data: &[u8]) -> Result<Node, DetectError> {
    let mut node = Node::default();
    // NodeProto: input = 1, output = 2, op_type = 4, attribute = 5
    Fields::each(data, |number, value| {
        match number {
            1 => node.inputs.push(string(value)?),
            2 => node.outputs.push(string(value)?),
            4 => node.op = string(value)?,
            5 => {
                if let Value::Bytes(b) = value {
                    parse_attribute(b, &mut node)?;
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(node)
}

fn parse_attribute(data: &[u8], node: &mut Node) -> Result<(), DetectError> {
    let (mut name, mut ints, mut float) = (String::new(), Vec::new(), None);
    // AttributeProto: name = 1, f = 2, i = 3, ints = 8
    Fields::each(data, |number, value| {
        match (number, value) {
            (1, value) => name = string(value)?,
            (2, Value::Fixed32(bits)) => float = Some(f32::from_bits(bits)),
            (3, value) | (8, value) => push_ints(value, &mut ints)?,
            _ => {}
        }
        Ok(())
    })?;
    if let Some(f) = float {
        node.floats.insert(name.clone(), f);
    }
    if !ints.is_empty() {
        node.ints.insert(name, ints);
    }
    Ok(())
}

fn parse_tensor(data: &[u8]) -> Result<(String, Tensor), DetectError> {
    let (mut name, mut dims, mut data_type) = (String::new(), Vec::new(), 0);
    let (mut raw, mut floats): (Option<&[u8]>, Vec<f32>) = (None, Vec::new());
    // TensorProto: dims = 1, data_type = 2, float_data = 4, name = 8, raw_data = 9
    Fields::each(data, |number, value| {
        match (number, value) {
            (1, value) => push_ints(value, &mut dims)?,
            (2, Value::Varint(t)) => data_type = t,
            (4, Value::Bytes(b)) => floats.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            (4, Value::Fixed32(bits)) => floats.push(f32::from_bits(bits)),
            (8, value) => name = string(value)?,
            (9, Value::Bytes(b)) => raw = Some(b),
            _ => {}
        }
        Ok(())
    })?;
    if data_type != 1 {
        // Only float weights are used; others (shape constants) are skipped by callers.
        return Ok((
            name,
            Tensor {
                dims: Vec::new(),
                data: Vec::new(),
            },
        ));
    }
    if let Some(raw) = raw {
        floats = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
    }
    let dims: Vec<usize> = dims
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| malformed("negative dimension")))
        .collect::<Result<_, _>>()?;
    if dims.iter().product::<usize>() != floats.len() {
        return Err(malformed(&format!("tensor {name:?} has the wrong length")));
    }
    Ok((name, Tensor { dims, data: floats }))
}
