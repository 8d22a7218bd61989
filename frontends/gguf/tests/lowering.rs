//! Lowering of the shared model and of deliberately broken copies of it: a wrong tensor
//! shape must fail at graph build, naming the node, both shapes and the tensor.

use gguf::writer::{write_gguf, TensorSpec};
use gguf::{ErrorKind, GgufFile, Value};

fn shared(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(rel)
}

fn tiny() -> GgufFile {
    GgufFile::open(shared("models/tiny-i2_s.gguf")).expect("open tiny model")
}

/// Rewrites `file` with `edit` applied to each tensor (name, ne, type, data) and
/// `meta` applied to the metadata list.
fn rewrite(
    file: &GgufFile,
    mut edit: impl FnMut(&str, &mut Vec<u64>, &mut u32, &mut Vec<u8>),
    meta: impl FnOnce(&mut Vec<(String, Value)>),
) -> GgufFile {
    let mut md = file.metadata().to_vec();
    meta(&mut md);
    let mut owned: Vec<(TensorSpec, Vec<u8>)> = Vec::new();
    for t in file.tensors() {
        let (mut ne, mut ty, mut data) = (t.ne.clone(), t.ggml_type, file.tensor_data(t).to_vec());
        edit(&t.name, &mut ne, &mut ty, &mut data);
        owned.push((TensorSpec { name: t.name.clone(), ne, ggml_type: ty, nbytes: data.len() as u64 }, data));
    }
    let tensors: Vec<(TensorSpec, &[u8])> = owned.iter().map(|(s, d)| (s.clone(), &d[..])).collect();
    let mut bytes = Vec::new();
    write_gguf(&mut bytes, &md, &tensors, 32).unwrap();
    GgufFile::from_bytes(bytes).expect("rewritten file parses")
}

fn set_meta(md: &mut [(String, Value)], key: &str, v: Value) {
    md.iter_mut().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no key {key}")).1 = v;
}

#[test]
fn shared_model_lowers_with_every_shape_verified() {
    let file = tiny();
    let m = gguf::lower(&file).unwrap();
    let hp = &m.hparams;
    assert_eq!(
        (hp.n_embd, hp.n_ff, hp.n_layer, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_vocab),
        (256, 512, 2, 4, 2, 64, 128256)
    );
    m.graph.verify().unwrap();
    let g = &m.graph;
    let sub = g.node(g.find("ffn_sub_norm-0").unwrap());
    assert_eq!(sub.fact.shape.to_string(), "[T, 512]");
    // The select-hoisting pass runs the last layer's feed-forward block on the output rows
    // only (llama.cpp's `inp_out_ids`); its attention still sees every token.
    assert_eq!(g.node(g.find("ffn_sub_norm-1").unwrap()).fact.shape.to_string(), "[O, 512]");
    assert_eq!(g.node(g.find("ffn_inp-1").unwrap()).fact.shape.to_string(), "[O, 256]");
    assert_eq!(g.node(g.find("kqv_out-1").unwrap()).fact.shape.to_string(), "[T, 256]");
    assert!(g.find("result_rows").is_none(), "the final select moved up");
    let out_id = g.outputs()[0];
    let out = g.node(out_id);
    assert_eq!(out.name, "result_output");
    assert_eq!(out.fact.shape.to_string(), "[O, 128256]");
    // The LM head is the tied embedding.
    assert_eq!(g.node(g.inputs(out_id)[0]).name, "token_embd.weight");
}

#[test]
fn wrong_norm_shape_fails_at_build_naming_node_shapes_and_tensor() {
    let file = tiny();
    // blk.1.attn_sub_norm.weight given the FFN width (512 values instead of 256).
    let bad = rewrite(
        &file,
        |name, ne, _, data| {
            if name == "blk.1.attn_sub_norm.weight" {
                *ne = vec![512];
                *data = vec![0u8; 512 * 4];
            }
        },
        |_| {},
    );
    let err = gguf::lower(&bad).unwrap_err();
    let msg = err.to_string();
    match err.kind() {
        ErrorKind::Graph(g) => match g.kind() {
            graph::ErrorKind::ShapeMismatch { node, expected, got, tensor, .. } => {
                assert_eq!(node, "attn_sub_norm-1");
                assert_eq!(expected.to_string(), "[256]");
                assert_eq!(got.to_string(), "[512]");
                assert_eq!(tensor.as_deref(), Some("blk.1.attn_sub_norm.weight"));
            }
            other => panic!("unexpected graph error {other:?}"),
        },
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        msg.contains("attn_sub_norm-1") && msg.contains("RmsNorm") && msg.contains("[512]") && msg.contains("[256]"),
        "{msg}"
    );
    println!("{msg}");
}

#[test]
fn ffn_sub_norm_of_embedding_width_is_rejected() {
    // The seed project's bug in reverse: a sub-norm sized n_embd where n_ff is needed.
    let file = tiny();
    let bad = rewrite(
        &file,
        |name, ne, _, data| {
            if name == "blk.0.ffn_sub_norm.weight" {
                *ne = vec![256];
                data.truncate(256 * 4);
            }
        },
        |_| {},
    );
    let msg = gguf::lower(&bad).unwrap_err().to_string();
    assert!(msg.contains("ffn_sub_norm-0") && msg.contains("expected [512]") && msg.contains("[256]"), "{msg}");
}

#[test]
fn wrong_matmul_shape_is_rejected() {
    let file = tiny();
    // attn_q with 128 inputs per row instead of 256 (same byte count: 512 rows).
    let bad = rewrite(
        &file,
        |name, ne, _, _| {
            if name == "blk.0.attn_q.weight" {
                *ne = vec![128, 512];
            }
        },
        |_| {},
    );
    let msg = gguf::lower(&bad).unwrap_err().to_string();
    assert!(msg.contains("Qcur-0") && msg.contains("blk.0.attn_q.weight"), "{msg}");
}

#[test]
fn metadata_errors_are_clear() {
    let file = tiny();
    type Edit = Box<dyn Fn(&mut Vec<(String, Value)>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unknown arch",
            Box::new(|md| set_meta(md, "general.architecture", Value::String("gpt-j".into()))),
            "supported: bitnet-b1.58",
        ),
        ("missing key", Box::new(|md| md.retain(|(k, _)| k != "bitnet-b1.58.block_count")), "bitnet-b1.58.block_count"),
        (
            "heads",
            Box::new(|md| set_meta(md, "bitnet-b1.58.attention.head_count", Value::U32(3))),
            "do not divide the embedding width",
        ),
        (
            "kv heads",
            Box::new(|md| set_meta(md, "bitnet-b1.58.attention.head_count_kv", Value::U32(3))),
            "KV heads do not divide",
        ),
        ("zero", Box::new(|md| set_meta(md, "bitnet-b1.58.feed_forward_length", Value::U32(0))), "out of range"),
        ("type", Box::new(|md| set_meta(md, "bitnet-b1.58.block_count", Value::String("2".into()))), "expected an integer"),
        (
            "eps",
            Box::new(|md| set_meta(md, "bitnet-b1.58.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN))),
            "positive finite",
        ),
        ("vocab", Box::new(|md| set_meta(md, "bitnet-b1.58.vocab_size", Value::U32(1000))), "differs from token_embd"),
    ];
    for (what, edit, needle) in cases {
        let bad = rewrite(&file, |_, _, _, _| {}, |md| edit(md));
        let err = gguf::lower(&bad).expect_err(what);
        assert!(err.to_string().contains(needle), "{what}: {err}");
    }
}

#[test]
fn missing_tensor_is_named() {
    let file = tiny();
    let md = file.metadata().to_vec();
    let kept: Vec<(TensorSpec, &[u8])> = file
        .tensors()
        .iter()
        .filter(|t| t.name != "blk.1.ffn_up.weight")
        .map(|t| {
            (TensorSpec { name: t.name.clone(), ne: t.ne.clone(), ggml_type: t.ggml_type, nbytes: t.nbytes }, file.tensor_data(t))
        })
        .collect();
    let mut bytes = Vec::new();
    write_gguf(&mut bytes, &md, &kept, 32).unwrap();
    let err = gguf::lower(&GgufFile::from_bytes(bytes).unwrap()).unwrap_err();
    assert!(err.to_string().contains("blk.1.ffn_up.weight") && err.to_string().contains("missing"), "{err}");
}
