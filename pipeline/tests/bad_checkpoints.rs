//! Broken checkpoints give an error that names the problem, never a panic or a wrong model.

mod support;

use std::path::Path;

use lookout_models::{Checkpoint, Precision};
use lookout_pipeline::engine::{Engine, EngineOptions};
use support::copy_fixture;

fn load_error(dir: &Path) -> String {
    let options = EngineOptions {
        precision: Precision::F32,
        threads: Some(1),
        compiled_cache: None,
    };
    match Engine::load(dir, &options) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// Rewrites model.safetensors through `edit(name, shape)`, which may drop a tensor (None) or
/// change its declared shape; the data stays consistent with the declared shapes.
fn rewrite_safetensors(dir: &Path, edit: impl Fn(&str, &[usize]) -> Option<Vec<usize>>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, safetensors::tensor::TensorView)> = vec![];
    let mut storage: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = vec![];
    for (name, view) in st.iter() {
        if let Some(shape) = edit(name, view.shape()) {
            let elements: usize = shape.iter().product();
            let size = view.data().len() / view.shape().iter().product::<usize>().max(1);
            let mut data = view.data().to_vec();
            data.resize(elements * size, 0);
            storage.push((name.to_string(), shape, view.dtype(), data));
        }
    }
    for (name, shape, dtype, data) in &storage {
        kept.push((
            name.clone(),
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
        ));
    }
    let out = safetensors::serialize(kept, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_fixture("qwen35-tiny-a", "missing");
    rewrite_safetensors(&dir, |name, shape| {
        (name != "model.layers.2.linear_attn.in_proj_z.weight").then(|| shape.to_vec())
    });
    let err = load_error(&dir);
    assert!(
        err.contains("model.layers.2.linear_attn.in_proj_z.weight") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let dir = copy_fixture("qwen35-tiny-a", "shape");
    rewrite_safetensors(&dir, |name, shape| {
        if name == "model.layers.3.self_attn.k_proj.weight" {
            Some(vec![shape[0], shape[1] - 1])
        } else {
            Some(shape.to_vec())
        }
    });
    let err = load_error(&dir);
    assert!(
        err.contains("model.layers.3.self_attn.k_proj.weight"),
        "{err}"
    );
    assert!(
        err.contains("[64, 63]") && err.contains("[64, 64]"),
        "{err}"
    );
}

#[test]
fn truncated_safetensors_is_reported_at_open() {
    let dir = copy_fixture("qwen35-tiny-a", "truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn unknown_model_type_is_refused() {
    let dir = copy_fixture("qwen35-tiny-a", "model-type");
    edit_config(&dir, |c| c["model_type"] = "llama".into());
    let err = load_error(&dir);
    assert!(err.contains("model_type") && err.contains("llama"), "{err}");
}

#[test]
fn unsupported_config_values_name_the_field() {
    for (field, value, expected) in [
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        (
            "layer_types",
            serde_json::json!([
                "linear_attention",
                "mamba",
                "linear_attention",
                "full_attention"
            ]),
            "layer_types[1]",
        ),
        (
            "num_key_value_heads",
            serde_json::json!(3),
            "num_key_value_heads",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0}),
            "rope_parameters.rope_type",
        ),
        (
            "linear_num_value_heads",
            serde_json::json!(3),
            "linear_num_value_heads",
        ),
    ] {
        let dir = copy_fixture("qwen35-tiny-a", &format!("field-{field}"));
        edit_config(&dir, |c| c[field] = value.clone());
        let err = load_error(&dir);
        assert!(err.contains(expected), "{field}: {err}");
    }
}

#[test]
fn malformed_tokenizer_json_is_named() {
    let dir = copy_fixture("qwen35-tiny-a", "tokenizer");
    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"model\": {\"type\": \"BPE\", \"vocab\": 12",
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn missing_config_is_named() {
    let dir = copy_fixture("qwen35-tiny-a", "no-config");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert!(
        Checkpoint::open(&dir)
            .unwrap_err()
            .to_string()
            .contains("config.json")
    );
}
