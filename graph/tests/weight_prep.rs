//! The weight-preparation hook (`graph::WeightPrep`): a kernel that takes its weight in a
//! layout of its own gets the prepared copy from the executor (made once), while step hooks,
//! views and callers of `Kernel::run` keep the file layout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use graph::backend::{Data, KvLayer, TensorMut, TensorRef};
use graph::{
    Backend, DType, ExecConfig, Executor, GraphBuilder, Kernel, Node, NodeId, Op, Shape, StepHook, TensorFact, WeightPrep,
    WeightSource,
};
use half::f16;

/// Weights held in memory, by name.
struct Mem(HashMap<String, Vec<u8>>);

impl WeightSource for Mem {
    fn weight_len(&self, name: &str) -> Option<usize> {
        self.0.get(name).map(Vec::len)
    }
    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(Vec::as_slice)
    }
    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> Result<(), String> {
        let src = self.0.get(name).ok_or("no such weight")?;
        dst.copy_from_slice(src);
        Ok(())
    }
}

/// Counts the calls of the "f32" layout's preparation.
static PREPARED: AtomicUsize = AtomicUsize::new(0);

/// A backend whose F16 matmul takes its weight as little-endian f32 (the "f32" layout):
/// `y[t][r] = Σ_i w[r][i]·x[t][i]` summed in f32 in index order. Embedding copies rows.
#[derive(Debug)]
struct Prep;

fn f16_to_f32_layout(src: &[u8], dims: &[usize], dst: &mut [u8]) -> graph::Result<()> {
    PREPARED.fetch_add(1, Ordering::SeqCst);
    assert_eq!(src.len(), 2 * dims.iter().product::<usize>());
    for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(2)) {
        d.copy_from_slice(&f16::from_le_bytes([s[0], s[1]]).to_f32().to_le_bytes());
    }
    Ok(())
}

impl Backend for Prep {
    fn name(&self) -> &'static str {
        "prep"
    }
    fn plan(&self, op: &Op, _inputs: &[&TensorFact]) -> Option<Kernel> {
        match op {
            Op::Embedding => {
                Some(Kernel::new("copy_rows", |i: &[TensorRef<'_>], o: &mut TensorMut<'_>, _: Option<&mut KvLayer<'_>>| {
                    let (table, toks) = (i[0].bytes()?, i[1].i32()?);
                    let d = i[0].dims[1];
                    let out = o.f32()?;
                    for (row, &t) in out.chunks_exact_mut(d).zip(toks) {
                        for (j, v) in row.iter_mut().enumerate() {
                            let b = 2 * (t as usize * d + j);
                            *v = f16::from_le_bytes([table[b], table[b + 1]]).to_f32();
                        }
                    }
                    Ok(())
                }))
            }
            Op::MatMulF16 => Some(
                Kernel::new("dot_f32_layout", |i: &[TensorRef<'_>], o: &mut TensorMut<'_>, _: Option<&mut KvLayer<'_>>| {
                    let (m, k) = (i[0].dims[0], i[0].dims[1]);
                    let w = i[0].bytes()?;
                    assert_eq!(w.len(), 4 * m * k, "the kernel gets the prepared (f32) layout");
                    let x = i[1].f32()?;
                    let out = o.f32()?;
                    for (t, orow) in out.chunks_exact_mut(m).enumerate() {
                        for (r, v) in orow.iter_mut().enumerate() {
                            *v = (0..k).fold(0.0f32, |s, j| {
                                let b = 4 * (r * k + j);
                                s + f32::from_le_bytes([w[b], w[b + 1], w[b + 2], w[b + 3]]) * x[t * k + j]
                            });
                        }
                    }
                    Ok(())
                })
                .with_prepared_weight(WeightPrep {
                    input: 0,
                    layout: "f32",
                    len: |dims| Some(4 * dims.iter().product::<usize>()),
                    prepare: Arc::new(f16_to_f32_layout),
                }),
            ),
            _ => None,
        }
    }
}

/// Records the byte length of every weight input a hook sees.
struct SeenWeights(Vec<(String, usize)>);

impl StepHook for SeenWeights {
    fn after(&mut self, _id: NodeId, node: &Node, inputs: &[TensorRef<'_>], _out: TensorRef<'_>) {
        if let (Op::MatMulF16, Some(TensorRef { data: Data::Bytes(w), .. })) = (&node.op, inputs.first()) {
            self.0.push((node.name.clone(), w.len()));
        }
    }
}

fn f16s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect()
}

#[test]
fn kernels_get_prepared_weights_hooks_see_the_file() {
    let (vocab, d, m) = (3usize, 4usize, 2usize);
    let mut b = GraphBuilder::new();
    let tokens = b.add("inp_tokens", Op::InputTokens, &[]).unwrap();
    let seqs = b.add("inp_seqs", Op::InputSeqs, &[]).unwrap();
    let emb = b.weight("emb", TensorFact::new(DType::F16, Shape::fixed(&[vocab, d]))).unwrap();
    let x = b.add("x", Op::Embedding, &[emb, tokens]).unwrap();
    let w = b.weight("w", TensorFact::new(DType::F16, Shape::fixed(&[m, d]))).unwrap();
    // The same weight read twice by preparing kernels: one prepared copy serves both.
    let y1 = b.add("y1", Op::MatMulF16, &[w, x, seqs]).unwrap();
    let y2 = b.add("y2", Op::MatMulF16, &[w, x, seqs]).unwrap();
    let y = b.add("y", Op::Add, &[y1, y2]).unwrap();
    b.output(y);
    let g = b.finish().unwrap();
    let emb_v: Vec<f32> = (0..vocab * d).map(|i| i as f32 * 0.5).collect();
    let w_v = [1.0f32, -2.0, 0.25, 3.0, 0.5, 0.5, -1.0, 2.0];
    let src = Arc::new(Mem(HashMap::from([("emb".to_string(), f16s(&emb_v)), ("w".to_string(), f16s(&w_v))])));
    // Add runs on a backend that plans it: here a plain one (scalar-like), last in the list.
    #[derive(Debug)]
    struct AddOnly;
    impl Backend for AddOnly {
        fn name(&self) -> &'static str {
            "add"
        }
        fn plan(&self, op: &Op, _: &[&TensorFact]) -> Option<Kernel> {
            matches!(op, Op::Add).then(|| {
                Kernel::new("add", |i: &[TensorRef<'_>], o: &mut TensorMut<'_>, _: Option<&mut KvLayer<'_>>| {
                    let (a, b) = (i[0].f32()?, i[1].f32()?);
                    for ((o, a), b) in o.f32()?.iter_mut().zip(a).zip(b) {
                        *o = a + b;
                    }
                    Ok(())
                })
            })
        }
    }
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(Prep), Arc::new(AddOnly)];
    let before = PREPARED.load(Ordering::SeqCst);
    let mut ex = Executor::standalone(g, src, &backends, ExecConfig::solo(8, 8)).unwrap();
    assert_eq!(PREPARED.load(Ordering::SeqCst) - before, 1, "one prepared copy for the two readers");
    // The weight is read only prepared: the arena holds its prepared copy (f32, 32 bytes,
    // one 64-byte line), not its file layout (the embedding table, read only by lookups,
    // stays in the source).
    assert_eq!(ex.program().weight_bytes(), 64, "arena: w as f32");
    let mut seen = SeenWeights(Vec::new());
    let toks = [2u32, 0];
    let logits = ex.forward_hooked(&toks, 0, 2, Some(&mut seen)).unwrap().to_vec();
    for (t, &tok) in toks.iter().enumerate() {
        for r in 0..m {
            let dot: f32 = (0..d).fold(0.0f32, |s, j| s + w_v[r * d + j] * emb_v[tok as usize * d + j]);
            assert_eq!(logits[t * m + r], dot + dot, "token {t} row {r}");
        }
    }
    assert_eq!(PREPARED.load(Ordering::SeqCst) - before, 1, "steps do not prepare again");
    // Hooks saw the file layout (f16: 2 bytes per element).
    assert_eq!(seen.0, vec![("y1".to_string(), 2 * m * d), ("y2".to_string(), 2 * m * d)]);
    // So does a view of the weight.
    match ex.view(w).data {
        Data::Bytes(b) => assert_eq!(b, f16s(&w_v).as_slice()),
        other => panic!("weight view: {other:?}"),
    }
    // Kernel::run takes the file layout and prepares on the fly.
    let facts: Vec<&TensorFact> = vec![];
    let k = Prep.plan(&Op::MatMulF16, &facts).unwrap();
    let (wb, xv) = (f16s(&w_v), vec![1.0f32; d]);
    let (wd, xd, od) = ([m, d], [1, d], [1, m]);
    let ins = [
        TensorRef { dtype: DType::F16, dims: &wd, data: Data::Bytes(&wb) },
        TensorRef { dtype: DType::F32, dims: &xd, data: Data::F32(&xv) },
        TensorRef { dtype: DType::I32, dims: &[1], data: Data::I32(&[0]) },
    ];
    let mut out = vec![0.0f32; m];
    k.run(&ins, &mut TensorMut { dtype: DType::F32, dims: &od, data: graph::DataMut::F32(&mut out) }, None).unwrap();
    assert_eq!(out, vec![2.25, 2.0]);
}
