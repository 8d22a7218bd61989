//! Planning: the kernel of every node, from an ordered list of backends.

use std::sync::Arc;

use crate::backend::{Backend, Kernel};
use crate::error::{ErrorKind, Result};
use crate::graph::Graph;
use crate::shape::TensorFact;

/// The kernel chosen for a node and the backend that planned it.
pub(crate) struct Planned {
    /// Index into the executor's backend list.
    pub backend: usize,
    pub kernel: Kernel,
}

/// Plans every node that has a kernel ([`crate::OpKind::has_kernel`]) on the first backend
/// of `backends` that plans it. A node no backend plans is an error naming it.
pub(crate) fn plan(graph: &Graph, backends: &[Arc<dyn Backend>]) -> Result<Vec<Option<Planned>>> {
    graph
        .iter()
        .map(|(i, n)| {
            if !n.op.kind().has_kernel() {
                return Ok(None);
            }
            let facts: Vec<&TensorFact> = graph.inputs(i).iter().map(|&j| &graph.node(j).fact).collect();
            backends
                .iter()
                .enumerate()
                .find_map(|(b, be)| be.plan(&n.op, &facts).map(|kernel| Planned { backend: b, kernel }))
                .map(Some)
                .ok_or_else(|| {
                    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
                    ErrorKind::Unsupported { backend: names.join(", "), node: n.name.clone(), op: n.op.info() }.into()
                })
        })
        .collect()
}

/// One line saying which backend runs how many nodes, and which ops fell through to a later
/// backend ("avx2: 49 nodes; scalar: 2 nodes (Embedding)").
pub(crate) fn summary(graph: &Graph, plans: &[Option<Planned>], backends: &[Arc<dyn Backend>]) -> String {
    let mut counts = vec![0usize; backends.len()];
    let mut ops: Vec<Vec<&str>> = vec![Vec::new(); backends.len()];
    for ((_, n), p) in graph.iter().zip(plans) {
        if let Some(p) = p {
            counts[p.backend] += 1;
            if !ops[p.backend].contains(&n.op.name()) {
                ops[p.backend].push(n.op.name());
            }
        }
    }
    backends
        .iter()
        .enumerate()
        .filter(|&(b, _)| counts[b] > 0)
        .map(|(b, be)| {
            // The first backend runs the bulk; later ones list the ops they took over.
            if b == 0 {
                format!("{}: {} nodes", be.name(), counts[b])
            } else {
                format!("{}: {} nodes ({})", be.name(), counts[b], ops[b].join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
