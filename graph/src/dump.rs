//! Renderers for `bitnet-graph dump`: a table, deterministic Graphviz DOT, and stable JSON.
//! All return `String`; the CLI prints them.

use std::fmt::Write;

use serde::Serialize;

use crate::graph::{Graph, Node, NodeId};

/// Per-node extras shown in dumps (e.g. which backend and kernel will run the node).
pub type Annotations = Vec<Option<String>>;

fn weight_of(g: &Graph, id: NodeId) -> Option<&Node> {
    g.inputs(id).iter().map(|&i| g.node(i)).find(|i| i.weight_name().is_some())
}

/// A fixed-width table, one node per line.
pub fn table(g: &Graph, ann: Option<&Annotations>) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "id".into(),
        "name".into(),
        "op".into(),
        "inputs".into(),
        "dtype".into(),
        "shape".into(),
        if ann.is_some() { "weight / kernel".into() } else { "weight".into() },
    ]];
    for (i, n) in g.iter() {
        let inputs: Vec<&str> = g.inputs(i).iter().map(|&j| g.node(j).name.as_str()).collect();
        let mut extra = weight_of(g, i).map(|w| format!("{} ({})", w.name, w.fact.dtype)).unwrap_or_default();
        if let Some(Some(k)) = ann.and_then(|a| a.get(i)) {
            if !extra.is_empty() {
                extra.push_str("  ");
            }
            extra.push_str(k);
        }
        rows.push([
            i.to_string(),
            n.name.clone(),
            n.op.info(),
            inputs.join(", "),
            n.fact.dtype.to_string(),
            n.fact.shape.to_string(),
            extra,
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0).min(60)).collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c == 6 {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Deterministic Graphviz: one cluster per layer, weights as grey boxes. `colors` (one per
/// node, e.g. from a cross-check) fills nodes when given.
pub fn dot(g: &Graph, ann: Option<&Annotations>, colors: Option<&[Option<&str>]>) -> String {
    let mut out = String::from("digraph bitnet {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"monospace\", fontsize=10];\n");
    let mut by_layer: std::collections::BTreeMap<Option<usize>, Vec<usize>> = Default::default();
    for (i, n) in g.iter() {
        by_layer.entry(n.layer).or_default().push(i);
    }
    for (layer, ids) in &by_layer {
        let indent = if layer.is_some() { "    " } else { "  " };
        if let Some(l) = layer {
            let _ = writeln!(out, "  subgraph cluster_layer_{l} {{\n    label=\"layer {l}\";\n    style=rounded;");
        }
        for &i in ids {
            let n = g.node(i);
            let mut label = format!("{}\\n{}\\n{} {}", dot_escape(&n.name), dot_escape(&n.op.info()), n.fact.dtype, n.fact.shape);
            if let Some(Some(k)) = ann.and_then(|a| a.get(i)) {
                let _ = write!(label, "\\n{}", dot_escape(k));
            }
            let fill = colors.and_then(|c| c.get(i).copied().flatten()).unwrap_or(if n.weight_name().is_some() {
                "gray90"
            } else {
                "white"
            });
            let _ = writeln!(out, "{indent}n{i} [label=\"{label}\", fillcolor=\"{fill}\"];");
        }
        if layer.is_some() {
            out.push_str("  }\n");
        }
    }
    // Edges in (consumer, argument slot) order, walked from petgraph's edge list.
    let pg = g.petgraph();
    let mut edges: Vec<(usize, usize, usize)> =
        pg.raw_edges().iter().map(|e| (e.target().index(), e.weight, e.source().index())).collect();
    edges.sort_unstable();
    for (i, _, j) in edges {
        let _ = writeln!(out, "  n{j} -> n{i};");
    }
    out.push_str("}\n");
    out
}

/// One node in the JSON dump.
#[derive(Serialize)]
pub struct JsonNode<'a> {
    /// Execution-order index.
    pub id: usize,
    /// Node name.
    pub name: &'a str,
    /// Op name.
    pub op: &'static str,
    /// Op with parameters.
    pub info: String,
    /// Input node names.
    pub inputs: Vec<&'a str>,
    /// Output dtype.
    pub dtype: &'static str,
    /// Output shape; symbolic dims as strings ("T", "O").
    pub shape: &'a crate::Shape,
    /// The weight tensor the node reads (or is), if any.
    pub weight: Option<JsonWeight<'a>>,
    /// Backend and kernel, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<&'a str>,
}

/// A weight reference in the JSON dump.
#[derive(Serialize)]
pub struct JsonWeight<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Its dtype.
    pub dtype: &'static str,
    /// Its shape, outermost first.
    pub shape: &'a crate::Shape,
}

/// The nodes of the JSON dump (the CLI wraps them with metadata).
pub fn json_nodes<'a>(g: &'a Graph, ann: Option<&'a Annotations>) -> Vec<JsonNode<'a>> {
    g.iter()
        .map(|(i, n)| {
            let w = if n.weight_name().is_some() { Some(n) } else { weight_of(g, i) };
            JsonNode {
                id: i,
                name: &n.name,
                op: n.op.name(),
                info: n.op.info(),
                inputs: g.inputs(i).iter().map(|&j| g.node(j).name.as_str()).collect(),
                dtype: n.fact.dtype.name(),
                shape: &n.fact.shape,
                weight: w.map(|w| JsonWeight { name: &w.name, dtype: w.fact.dtype.name(), shape: &w.fact.shape }),
                kernel: ann.and_then(|a| a.get(i)).and_then(|k| k.as_deref()),
            }
        })
        .collect()
}
