//! The graph builder, which checks every node as it is added, and the immutable graph.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::op::{InferError, Op};
use crate::shape::{Shape, TensorFact};

/// Index of a node in its graph (also its position in execution order).
pub type NodeId = usize;

/// One node: a named op applied to earlier nodes, with its verified output fact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    /// Unique name (`attn_norm-3`, `blk.3.attn_q.weight`).
    pub name: String,
    /// The op.
    pub op: Op,
    /// Input nodes, in the op's argument order.
    pub inputs: Vec<NodeId>,
    /// Output dtype and shape.
    pub fact: TensorFact,
}

impl Node {
    /// The weight name if this node is a weight constant.
    pub fn weight_name(&self) -> Option<&str> {
        match &self.op {
            Op::Weight { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Builds a graph one node at a time, inferring and checking each node's output when it is
/// added.
///
/// ## Design
/// The builder owns the only way to create nodes, so every node of a finished [`Graph`]
/// has passed [`Op::infer`] against the facts of its inputs: a wrongly shaped weight is an
/// error naming the node, the op, both shapes and the weight tensor, before any math runs.
/// Nodes can only reference earlier nodes, so insertion order is a valid execution order.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<Node>,
    names: HashMap<String, NodeId>,
    outputs: Vec<NodeId>,
}

impl GraphBuilder {
    /// An empty builder.
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// Adds a node; returns its id, or an error naming the node if its inputs do not fit.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = name.into();
        let wiring = |msg: String| -> Error { ErrorKind::Wiring { node: name.clone(), op: op.info(), msg }.into() };
        if self.names.contains_key(&name) {
            return Err(wiring("a node with this name already exists".into()));
        }
        if let Some(&bad) = inputs.iter().find(|&&i| i >= self.nodes.len()) {
            return Err(wiring(format!("input id {bad} does not exist yet")));
        }
        let facts: Vec<&TensorFact> = inputs.iter().map(|&i| &self.nodes[i].fact).collect();
        let fact = op.infer(&facts).map_err(|e| self.infer_error(&name, &op, inputs, e))?;
        let id = self.nodes.len();
        self.names.insert(name.clone(), id);
        self.nodes.push(Node { name, op, inputs: inputs.to_vec(), fact });
        Ok(id)
    }

    /// Adds a weight constant named after its tensor.
    pub fn weight(&mut self, name: &str, fact: TensorFact) -> Result<NodeId> {
        self.add(name, Op::Weight { name: name.to_string(), fact }, &[])
    }

    /// Marks a node as a graph output.
    pub fn output(&mut self, id: NodeId) {
        self.outputs.push(id);
    }

    /// The name of an existing node.
    pub fn name(&self, id: NodeId) -> &str {
        &self.nodes[id].name
    }

    /// The fact of an existing node.
    pub fn fact(&self, id: NodeId) -> &TensorFact {
        &self.nodes[id].fact
    }

    fn infer_error(&self, name: &str, op: &Op, inputs: &[NodeId], e: InferError) -> Error {
        // The weight tensor involved: the offending input if it is a weight, else the
        // node's weight input (a matmul whose activation does not fit its weight).
        let any_weight = inputs.iter().find_map(|&j| self.nodes[j].weight_name());
        let input_desc = |i: usize| -> (String, Option<String>) {
            let n = &self.nodes[inputs[i]];
            (format!("input {i} (`{}`)", n.name), n.weight_name().or(any_weight).map(str::to_string))
        };
        let kind = match e {
            InferError::Arity(n) => {
                ErrorKind::Wiring { node: name.into(), op: op.info(), msg: format!("takes {} inputs, got {n}", op.arity()) }
            }
            InferError::Shape { input, what, expected, got } => {
                let (desc, tensor) = input_desc(input);
                let what = if what.is_empty() { desc } else { format!("{desc} {what}") };
                ErrorKind::ShapeMismatch { node: name.into(), op: op.info(), what, expected, got, tensor }
            }
            InferError::DType { input, expected, got } => {
                let (what, tensor) = input_desc(input);
                ErrorKind::DTypeMismatch { node: name.into(), op: op.info(), what, expected, got, tensor }
            }
            InferError::Other(msg) => ErrorKind::Wiring { node: name.into(), op: op.info(), msg },
        };
        kind.into()
    }

    /// Finishes the graph (it must have at least one output).
    pub fn finish(self) -> Result<Graph> {
        if self.outputs.is_empty() {
            return Err(ErrorKind::Runtime("graph has no output".into()).into());
        }
        let mut g = DiGraph::<NodeId, usize>::new();
        let idx: Vec<NodeIndex> = (0..self.nodes.len()).map(|i| g.add_node(i)).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            for (slot, &src) in n.inputs.iter().enumerate() {
                g.add_edge(idx[src], idx[i], slot);
            }
        }
        let graph = Graph { nodes: self.nodes, names: self.names, outputs: self.outputs, petgraph: g };
        graph.verify()?;
        Ok(graph)
    }
}

/// An immutable, verified graph. Node ids are in execution order.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    names: HashMap<String, NodeId>,
    outputs: Vec<NodeId>,
    petgraph: DiGraph<NodeId, usize>,
}

impl Graph {
    /// All nodes in execution order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// A node by name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// The graph outputs.
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    /// The dependency graph (edges from input to consumer, weighted by argument slot).
    pub fn petgraph(&self) -> &DiGraph<NodeId, usize> {
        &self.petgraph
    }

    /// Re-checks the whole graph: acyclic, every node's inputs precede it, and every node's
    /// fact equals what its op infers from its inputs.
    pub fn verify(&self) -> Result<()> {
        if petgraph::algo::is_cyclic_directed(&self.petgraph) {
            return Err(Error::runtime("graph has a cycle"));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.inputs.iter().any(|&j| j >= i) {
                return Err(ErrorKind::Wiring {
                    node: n.name.clone(),
                    op: n.op.info(),
                    msg: "input does not precede node".into(),
                }
                .into());
            }
            let facts: Vec<&TensorFact> = n.inputs.iter().map(|&j| &self.nodes[j].fact).collect();
            match n.op.infer(&facts) {
                Ok(f) if f == n.fact => {}
                Ok(f) => {
                    return Err(ErrorKind::ShapeMismatch {
                        node: n.name.clone(),
                        op: n.op.info(),
                        what: "stored output".into(),
                        expected: f.shape,
                        got: n.fact.shape.clone(),
                        tensor: None,
                    }
                    .into())
                }
                Err(_) => {
                    return Err(
                        ErrorKind::Wiring { node: n.name.clone(), op: n.op.info(), msg: "inputs no longer fit".into() }.into()
                    )
                }
            }
        }
        Ok(())
    }

    /// Weight names used by the graph, in node order.
    pub fn weights(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.weight_name().map(|w| (i, w)))
    }
}

/// A shape helper for callers: `[n]`.
pub fn vec_shape(n: usize) -> Shape {
    Shape::fixed(&[n])
}
