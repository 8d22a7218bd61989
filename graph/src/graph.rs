//! The graph builder, which checks every node as it is added, the rewrite passes, and the
//! immutable graph.
//!
//! ## Design
//! The graph is held as a petgraph graph from the first node to the last: nodes carry their
//! [`Node`] (name, op, verified fact), edges run from an input to its consumer and carry the
//! argument slot. The builder adds nodes to a `StableDiGraph`, so the passes can rewire and
//! remove nodes without renumbering; [`GraphBuilder::finish`] then drops what no output
//! reads, orders the nodes topologically (petgraph's cycle check first), renumbers them in
//! that order into a compact `DiGraph`, and re-verifies every node with the same shape
//! checker that admitted it. Node ids of a finished graph are its execution order.

use std::collections::{BinaryHeap, HashMap};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};
use petgraph::{Direction, Graph as DiGraph};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::op::{InferError, Op};
use crate::shape::{Dim, Shape, Sym, TensorFact};

/// Index of a node in a finished graph (also its position in execution order).
pub type NodeId = usize;

/// One node: a named op with its verified output fact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    /// Unique name (`attn_norm-3`, `blk.3.attn_q.weight`).
    pub name: String,
    /// The op.
    pub op: Op,
    /// Output dtype and shape.
    pub fact: TensorFact,
    /// The decoder layer the node belongs to, as the frontend declared it (`None` for the
    /// nodes before the first layer and after the last). Dumps group nodes by it.
    pub layer: Option<usize>,
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
/// Nodes can only reference existing nodes, so a graph built here is acyclic.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    g: StableDiGraph<Node, usize>,
    names: HashMap<String, NodeIndex>,
    outputs: Vec<NodeIndex>,
    layer: Option<usize>,
}

impl GraphBuilder {
    /// An empty builder.
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// The layer the following nodes belong to (see [`Node::layer`]).
    pub fn set_layer(&mut self, layer: Option<usize>) {
        self.layer = layer;
    }

    /// Adds a node; returns its id, or an error naming the node if its inputs do not fit.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = name.into();
        let wiring = |msg: String| -> Error { ErrorKind::Wiring { node: name.clone(), op: op.info(), msg }.into() };
        if self.names.contains_key(&name) {
            return Err(wiring("a node with this name already exists".into()));
        }
        if let Some(&bad) = inputs.iter().find(|&&i| !self.g.contains_node(NodeIndex::new(i))) {
            return Err(wiring(format!("input id {bad} does not exist")));
        }
        let facts: Vec<&TensorFact> = inputs.iter().map(|&i| &self.g[NodeIndex::new(i)].fact).collect();
        let fact = op.infer(&facts).map_err(|e| self.infer_error(&name, &op, inputs, e))?;
        let id = self.g.add_node(Node { name: name.clone(), op, fact, layer: self.layer });
        for (slot, &src) in inputs.iter().enumerate() {
            self.g.add_edge(NodeIndex::new(src), id, slot);
        }
        self.names.insert(name, id);
        Ok(id.index())
    }

    /// Adds a weight constant named after its tensor.
    pub fn weight(&mut self, name: &str, fact: TensorFact) -> Result<NodeId> {
        self.add(name, Op::Weight { name: name.to_string(), fact }, &[])
    }

    /// Marks a node as a graph output.
    pub fn output(&mut self, id: NodeId) {
        self.outputs.push(NodeIndex::new(id));
    }

    /// The name of an existing node.
    pub fn name(&self, id: NodeId) -> &str {
        &self.g[NodeIndex::new(id)].name
    }

    /// The fact of an existing node.
    pub fn fact(&self, id: NodeId) -> &TensorFact {
        &self.g[NodeIndex::new(id)].fact
    }

    /// A node's inputs in argument order.
    fn inputs_of(&self, id: NodeIndex) -> Vec<NodeIndex> {
        let mut e: Vec<(usize, NodeIndex)> =
            self.g.edges_directed(id, Direction::Incoming).map(|e| (*e.weight(), e.source())).collect();
        e.sort_unstable();
        e.into_iter().map(|(_, s)| s).collect()
    }

    fn infer_error(&self, name: &str, op: &Op, inputs: &[NodeId], e: InferError) -> Error {
        let node = |i: NodeId| &self.g[NodeIndex::new(i)];
        // The weight tensor involved: the offending input if it is a weight, else the
        // node's weight input (a matmul whose activation does not fit its weight).
        let any_weight = inputs.iter().find_map(|&j| node(j).weight_name());
        let input_desc = |i: usize| -> (String, Option<String>) {
            let n = node(inputs[i]);
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

    /// The select-hoisting pass: moves each [`Op::SelectOutputs`] above the row-wise ops
    /// ([`Op::row_inputs`]) that only it reads, so that rows whose logits nobody asked for
    /// skip that work. In a decoder this is llama.cpp's `inp_out_ids` step: the last layer's
    /// output projection, residual and feed-forward block run on the output rows only. Each
    /// move replaces `select(op(x, w))` by `op(select(x), w)`, which gives the same bits
    /// (the op computes each row from that row alone). A node every consumer of which
    /// selects the same rows is moved too (a quantized activation shared by gate and up).
    /// The replaced nodes become unreachable and [`GraphBuilder::finish`] drops them; the
    /// new nodes are verified as they are added. Returns the number of moves.
    pub fn hoist_selects(&mut self) -> Result<usize> {
        let mut moves = 0;
        loop {
            let Some((x, rows, selects)) = self.next_hoist() else { return Ok(moves) };
            let xn = self.g[x].clone();
            let ins = self.inputs_of(x);
            let row_slots = xn.op.row_inputs().unwrap_or(&[]);
            let mut new_inputs = Vec::with_capacity(ins.len());
            for (slot, &src) in ins.iter().enumerate() {
                if row_slots.contains(&slot) {
                    new_inputs.push(self.select_of(src, rows)?);
                } else {
                    new_inputs.push(src.index());
                }
            }
            // The selects and `x` (which only they read) go; the moved node takes `x`'s name
            // and the selects' consumers.
            let mut consumers: Vec<(NodeIndex, usize)> = Vec::new();
            for &s in &selects {
                consumers.extend(self.g.edges_directed(s, Direction::Outgoing).map(|e| (e.target(), *e.weight())));
                let n = self.g.remove_node(s).expect("select exists");
                self.names.remove(&n.name);
            }
            self.g.remove_node(x);
            self.names.remove(&xn.name);
            let prev_layer = std::mem::replace(&mut self.layer, xn.layer);
            let moved = self.add(xn.name.clone(), xn.op.clone(), &new_inputs);
            self.layer = prev_layer;
            let moved = NodeIndex::new(moved?);
            for (c, slot) in consumers {
                self.g.add_edge(moved, c, slot);
            }
            for o in self.outputs.iter_mut().filter(|o| selects.contains(o)) {
                *o = moved;
            }
            moves += 1;
        }
    }

    /// `select(src, rows)`: an existing select of `src` by `rows`, or a new one.
    fn select_of(&mut self, src: NodeIndex, rows: NodeIndex) -> Result<NodeId> {
        let existing = self
            .g
            .neighbors_directed(src, Direction::Outgoing)
            .find(|&c| matches!(self.g[c].op, Op::SelectOutputs) && self.inputs_of(c) == [src, rows]);
        if let Some(s) = existing {
            return Ok(s.index());
        }
        let name = format!("{} (out rows)", self.g[src].name);
        let prev_layer = std::mem::replace(&mut self.layer, self.g[src].layer);
        let id = self.add(name, Op::SelectOutputs, &[src.index(), rows.index()]);
        self.layer = prev_layer;
        id
    }

    /// A node `x` whose consumers are all `select(x, rows)` with the same `rows`, which is
    /// row-wise and whose row inputs have `T` rows (so the move changes their shapes from
    /// `T` to `O`); with those selects.
    fn next_hoist(&self) -> Option<(NodeIndex, NodeIndex, Vec<NodeIndex>)> {
        for s in self.g.node_indices() {
            if !matches!(self.g[s].op, Op::SelectOutputs) {
                continue;
            }
            let ins = self.inputs_of(s);
            let (x, rows) = (ins[0], ins[1]);
            let Some(row_slots) = self.g[x].op.row_inputs() else { continue };
            let consumers: Vec<NodeIndex> = self.g.neighbors_directed(x, Direction::Outgoing).collect();
            let all_select =
                consumers.iter().all(|&c| matches!(self.g[c].op, Op::SelectOutputs) && self.inputs_of(c) == [x, rows]);
            if !all_select || self.outputs.contains(&x) {
                continue;
            }
            let xins = self.inputs_of(x);
            let t = Dim::Sym(Sym::Tokens);
            if row_slots.iter().all(|&sl| self.g[xins[sl]].fact.shape.dims().first() == Some(&t)) {
                let mut selects = consumers;
                selects.sort_unstable();
                selects.dedup();
                return Some((x, rows, selects));
            }
        }
        None
    }

    /// Finishes the graph (it must have at least one output): drops the nodes no output
    /// depends on, orders the rest topologically, renumbers them in that order, and verifies.
    pub fn finish(mut self) -> Result<Graph> {
        if self.outputs.is_empty() {
            return Err(ErrorKind::Runtime("graph has no output".into()).into());
        }
        // Dead-node elimination: keep what some output reads, directly or not.
        let mut live = vec![false; self.g.node_bound()];
        let mut dfs = petgraph::visit::Dfs::empty(petgraph::visit::Reversed(&self.g));
        for &o in &self.outputs {
            dfs.move_to(o);
            while let Some(n) = dfs.next(petgraph::visit::Reversed(&self.g)) {
                live[n.index()] = true;
            }
        }
        self.g.retain_nodes(|_, n| live[n.index()]);
        if petgraph::algo::is_cyclic_directed(&self.g) {
            return Err(Error::runtime("graph has a cycle"));
        }
        // Topological order, ties broken by insertion order (Kahn's algorithm over a
        // min-heap), so an unrewritten graph runs in the order it was built.
        let mut indeg: HashMap<NodeIndex, usize> =
            self.g.node_indices().map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count())).collect();
        let mut ready: BinaryHeap<std::cmp::Reverse<NodeIndex>> =
            indeg.iter().filter(|(_, &d)| d == 0).map(|(&n, _)| std::cmp::Reverse(n)).collect();
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(std::cmp::Reverse(n)) = ready.pop() {
            order.push(n);
            for c in self.g.neighbors_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&c).expect("node is in the graph");
                *d -= 1;
                if *d == 0 {
                    ready.push(std::cmp::Reverse(c));
                }
            }
        }
        let mut new_id: HashMap<NodeIndex, NodeId> = HashMap::new();
        let mut g = DiGraph::<Node, usize>::with_capacity(order.len(), self.g.edge_count());
        for &n in &order {
            new_id.insert(n, g.add_node(self.g[n].clone()).index());
        }
        for e in (&self.g).edge_references() {
            g.add_edge(
                petgraph::graph::NodeIndex::new(new_id[&e.source()]),
                petgraph::graph::NodeIndex::new(new_id[&e.target()]),
                *e.weight(),
            );
        }
        let outputs = self.outputs.iter().map(|o| new_id[o]).collect();
        let graph = Graph::from_petgraph(g, outputs)?;
        graph.verify()?;
        Ok(graph)
    }
}

/// An immutable, verified graph. Node ids are in execution order.
#[derive(Debug, Clone)]
pub struct Graph {
    g: DiGraph<Node, usize>,
    names: HashMap<String, NodeId>,
    outputs: Vec<NodeId>,
    /// Each node's inputs in argument order: an index over the edges, for the executor's
    /// hot path.
    inputs: Vec<Vec<NodeId>>,
}

impl Graph {
    fn from_petgraph(g: DiGraph<Node, usize>, outputs: Vec<NodeId>) -> Result<Graph> {
        let mut inputs = vec![Vec::new(); g.node_count()];
        let mut names = HashMap::new();
        for n in g.node_indices() {
            let mut e: Vec<(usize, NodeId)> =
                g.edges_directed(n, Direction::Incoming).map(|e| (*e.weight(), e.source().index())).collect();
            e.sort_unstable();
            inputs[n.index()] = e.into_iter().map(|(_, s)| s).collect();
            names.insert(g[n].name.clone(), n.index());
        }
        Ok(Graph { g, names, outputs, inputs })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    /// Whether the graph has no nodes (never true for a finished graph).
    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// All nodes with their ids, in execution order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (NodeId, &Node)> {
        self.g.raw_nodes().iter().enumerate().map(|(i, n)| (i, &n.weight))
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[petgraph::graph::NodeIndex::new(id)]
    }

    /// A node's inputs, in the op's argument order.
    pub fn inputs(&self, id: NodeId) -> &[NodeId] {
        &self.inputs[id]
    }

    /// The nodes that read `id`, in execution order.
    pub fn consumers(&self, id: NodeId) -> Vec<NodeId> {
        let mut c: Vec<NodeId> =
            self.g.neighbors_directed(petgraph::graph::NodeIndex::new(id), Direction::Outgoing).map(|n| n.index()).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// A node by name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// The graph outputs.
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    /// The petgraph graph itself (edges from input to consumer, weighted by argument slot).
    pub fn petgraph(&self) -> &DiGraph<Node, usize> {
        &self.g
    }

    /// Re-checks the whole graph: acyclic, every node's inputs precede it, and every node's
    /// fact equals what its op infers from its inputs.
    pub fn verify(&self) -> Result<()> {
        if petgraph::algo::is_cyclic_directed(&self.g) {
            return Err(Error::runtime("graph has a cycle"));
        }
        for (i, n) in self.iter() {
            let ins = self.inputs(i);
            if ins.iter().any(|&j| j >= i) {
                return Err(ErrorKind::Wiring {
                    node: n.name.clone(),
                    op: n.op.info(),
                    msg: "input does not precede node".into(),
                }
                .into());
            }
            let facts: Vec<&TensorFact> = ins.iter().map(|&j| &self.node(j).fact).collect();
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
        self.iter().filter_map(|(i, n)| n.weight_name().map(|w| (i, w)))
    }
}

/// A shape helper for callers: `[n]`.
pub fn vec_shape(n: usize) -> Shape {
    Shape::fixed(&[n])
}
