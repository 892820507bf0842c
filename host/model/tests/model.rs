//! Model tests on a tiny config built here (no download).

use candle_core::{D, DType, Device, IndexOp, Tensor};
use sod_model::{
    ModelError, Qwen3Config, SaveDtype, TrainableModel, init_random, load_model_dir,
    save_checkpoint,
};

fn tiny(tied: bool) -> Qwen3Config {
    let mut config = Qwen3Config::tiny(320, 64, 2);
    config.tie_word_embeddings = tied;
    config
}

fn ids(rows: &[&[u32]]) -> Tensor {
    let t = rows[0].len();
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A model whose norm weights are not all 1, so that tests exercise them.
fn perturbed(config: &Qwen3Config, seed: u64) -> TrainableModel {
    let m = init_random(config, seed, &Device::Cpu).unwrap();
    for (name, var) in m.varmap.data().lock().unwrap().iter() {
        if var.dims().len() == 1 {
            let n = var.dims()[0];
            let bump: Vec<f32> = (0..n)
                .map(|i| 1.0 + 0.05 * ((i * 7 + name.len()) % 11) as f32)
                .collect();
            var.set(&Tensor::from_vec(bump, n, &Device::Cpu).unwrap())
                .unwrap();
        } else {
            // Larger weights make the logits depend strongly on the input.
            var.set(&(var.as_tensor() * 5.0).unwrap()).unwrap();
        }
    }
    m
}

#[test]
fn every_parameter_gets_a_gradient() {
    for tied in [true, false] {
        let m = perturbed(&tiny(tied), 1);
        let input = ids(&[&[1, 5, 9, 200, 17, 3], &[4, 4, 8, 100, 0, 0]]);
        let mask = Tensor::new(&[[1u8, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
        let logits = m.model.forward(&input, Some(&mask)).unwrap();
        assert_eq!(logits.dims(), [2, 6, 320]);
        // A loss that involves every position's full distribution.
        let loss = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .unwrap()
            .i((.., .., 7))
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let data = m.varmap.data().lock().unwrap();
        assert_eq!(data.len(), sod_model::parameter_shapes(&m.config).len());
        for (name, var) in data.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm {norm}"
            );
        }
    }
}

#[test]
fn kv_cache_decode_matches_full_forward() {
    let m = perturbed(&tiny(false), 2);
    let seq: &[u32] = &[3, 17, 250, 9, 9, 41, 7, 120, 300, 2];
    let full = m.model.forward(&ids(&[seq]), None).unwrap();
    let model = m.model.detached();
    let mut cache = model.new_cache(1);
    let prefill = model
        .forward_with_cache(&ids(&[&seq[..4]]), None, &mut cache)
        .unwrap();
    assert!(max_abs_diff(&prefill, &full.narrow(1, 0, 4).unwrap()) < 1e-4);
    for (i, &tok) in seq.iter().enumerate().skip(4) {
        let step = model
            .forward_with_cache(&ids(&[&[tok]]), None, &mut cache)
            .unwrap();
        let d = max_abs_diff(&step, &full.narrow(1, i, 1).unwrap());
        assert!(d < 1e-4, "position {i}: {d}");
    }
    assert_eq!(cache.len(), seq.len());
    // The logits are not trivially equal everywhere: positions differ.
    assert!(max_abs_diff(&full.i((.., 0, ..)).unwrap(), &full.i((.., 1, ..)).unwrap()) > 1e-2);
}

/// Decoding past the in-place cache's first capacity (64 positions) and its doublings, in a batch of two with
/// padding, still matches the full forward.
#[test]
fn kv_cache_grows_in_place() {
    let m = perturbed(&tiny(false), 5);
    let seq: Vec<u32> = (0..150u32).map(|i| (i * 37 + 11) % 320).collect();
    let full = m.model.forward(&ids(&[&seq]), None).unwrap();
    let model = m.model.detached();
    let mut cache = model.new_cache(2);
    // Row 1 is row 0 left-padded by three positions.
    let mut padded = vec![0u32; 3];
    padded.extend(&seq[..3]);
    let mask = Tensor::new(&[[1u8, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]], &Device::Cpu).unwrap();
    model
        .forward_with_cache(&ids(&[&seq[..6], &padded]), Some(&mask), &mut cache)
        .unwrap();
    for (i, &tok) in seq.iter().enumerate().skip(6) {
        let row1 = seq[i - 3];
        let step = model
            .forward_with_cache(&ids(&[&[tok], &[row1]]), None, &mut cache)
            .unwrap();
        let d0 = max_abs_diff(
            &step.narrow(0, 0, 1).unwrap(),
            &full.narrow(1, i, 1).unwrap(),
        );
        let d1 = max_abs_diff(
            &step.narrow(0, 1, 1).unwrap(),
            &full.narrow(1, i - 3, 1).unwrap(),
        );
        assert!(d0 < 1e-4 && d1 < 1e-4, "position {i}: {d0} {d1}");
    }
    assert_eq!(cache.len(), seq.len());
    assert_eq!(cache.num_tokens(), &[150, 147]);
}

#[test]
fn kv_cache_keeps_the_graph() {
    // A loss on a cached decode step must back-propagate into the prefill positions just like the full forward.
    let m = perturbed(&tiny(true), 3);
    let seq: &[u32] = &[5, 6, 7, 8, 9];
    let full = m.model.forward(&ids(&[seq]), None).unwrap();
    let loss_full = full.i((.., 4, 11)).unwrap().sum_all().unwrap();
    let mut cache = m.model.new_cache(1);
    m.model
        .forward_with_cache(&ids(&[&seq[..4]]), None, &mut cache)
        .unwrap();
    let step = m
        .model
        .forward_with_cache(&ids(&[&seq[4..]]), None, &mut cache)
        .unwrap();
    let loss_step = step.i((.., 0, 11)).unwrap().sum_all().unwrap();
    let (g_full, g_step) = (loss_full.backward().unwrap(), loss_step.backward().unwrap());
    let data = m.varmap.data().lock().unwrap();
    let embed = data["model.embed_tokens.weight"].as_tensor();
    let (a, b) = (g_full.get(embed).unwrap(), g_step.get(embed).unwrap());
    // Row 5 (first prefill token) only influences the loss through the cached keys/values.
    let row_full = a.i(5).unwrap();
    assert!(
        row_full
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    assert!(max_abs_diff(&row_full, &b.i(5).unwrap()) < 1e-5);
}

#[test]
fn left_and_right_padding_match_unpadded() {
    let m = perturbed(&tiny(true), 4);
    let model = &m.model;
    let short: &[u32] = &[10, 20, 30];
    let long: &[u32] = &[11, 12, 13, 14, 15, 16];
    let alone_short = model.forward(&ids(&[short]), None).unwrap();
    let alone_long = model.forward(&ids(&[long]), None).unwrap();
    // Right padding.
    let batch = ids(&[&[10, 20, 30, 0, 0, 0], long]);
    let mask = Tensor::new(&[[1u32, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
    let out = model.forward(&batch, Some(&mask)).unwrap();
    assert!(max_abs_diff(&out.i((0..1, 0..3, ..)).unwrap(), &alone_short) < 1e-4);
    assert!(max_abs_diff(&out.i(1..2).unwrap(), &alone_long) < 1e-4);
    // Left padding.
    let batch = ids(&[&[0, 0, 0, 10, 20, 30], long]);
    let mask = Tensor::new(
        &[[0f32, 0., 0., 1., 1., 1.], [1., 1., 1., 1., 1., 1.]],
        &Device::Cpu,
    )
    .unwrap();
    let out = model.forward(&batch, Some(&mask)).unwrap();
    assert!(max_abs_diff(&out.i((0..1, 3..6, ..)).unwrap(), &alone_short) < 1e-4);
    assert!(max_abs_diff(&out.i(1..2).unwrap(), &alone_long) < 1e-4);
    let all_finite = out
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite());
    assert!(all_finite, "padding rows must stay finite");
}

#[test]
fn token_logprobs_match_log_softmax() {
    let m = perturbed(&tiny(false), 5);
    let input = ids(&[&[1, 2, 3, 4, 5], &[9, 8, 7, 6, 5]]);
    let lp = m.model.next_token_logprobs(&input, None).unwrap();
    assert_eq!(lp.dims(), [2, 4]);
    let logits = m.model.forward(&input, None).unwrap();
    let ls = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    let lp = lp.to_vec2::<f32>().unwrap();
    let rows = [[1u32, 2, 3, 4, 5], [9, 8, 7, 6, 5]];
    for b in 0..2 {
        for i in 0..4 {
            let want = ls
                .i((b, i, rows[b][i + 1] as usize))
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (lp[b][i] - want).abs() < 1e-5,
                "{b},{i}: {} vs {want}",
                lp[b][i]
            );
            assert!(lp[b][i] < 0.0);
        }
    }
    // Gradients flow through token_logprobs.
    let loss = m
        .model
        .next_token_logprobs(&input, None)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let data = m.varmap.data().lock().unwrap();
    assert!(
        grads
            .get(data["model.layers.0.self_attn.q_norm.weight"].as_tensor())
            .is_some()
    );
    // Out-of-range targets are an error, not a panic.
    let bad = ids(&[&[1, 2, 3, 4, 999], &[1, 1, 1, 1, 1]]);
    assert!(matches!(
        m.model.token_logprobs(&input, None, &bad),
        Err(ModelError::Input(_))
    ));
}

#[test]
fn save_then_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let m = perturbed(&tiny(tied), 6);
        let input = ids(&[&[1, 2, 3, 250, 5, 6, 7]]);
        let want = m.model.forward(&input, None).unwrap();
        let path = dir.path().join(format!("ckpt-{tied}"));
        m.save_checkpoint(&path, SaveDtype::F32, None).unwrap();
        // Saving again over an existing checkpoint replaces it.
        m.save_checkpoint(&path, SaveDtype::F32, None).unwrap();
        let loaded = load_model_dir(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.config.tie_word_embeddings, tied);
        assert!(loaded.ignored_tensors.is_empty());
        let got = loaded.model.forward(&input, None).unwrap();
        assert_eq!(max_abs_diff(&got, &want), 0.0);
    }
    // Only the checkpoints are left: no temporary or old directories.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["ckpt-false", "ckpt-true"]);
}

#[test]
fn bf16_file_loads_into_f32_vars() {
    let dir = tempfile::tempdir().unwrap();
    let m = perturbed(&tiny(true), 7);
    let path = dir.path().join("bf16");
    m.save_checkpoint(&path, SaveDtype::Bf16, None).unwrap();
    let on_disk =
        candle_core::safetensors::load(path.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(on_disk.values().all(|t| t.dtype() == DType::BF16));
    let loaded = load_model_dir(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.config.torch_dtype.as_deref(), Some("bfloat16"));
    assert!(
        loaded
            .varmap
            .all_vars()
            .iter()
            .all(|v| v.dtype() == DType::F32)
    );
    let input = ids(&[&[1, 2, 3, 4]]);
    let a = m.model.forward(&input, None).unwrap();
    let b = loaded.model.forward(&input, None).unwrap();
    let scale = a
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        max_abs_diff(&a, &b) < 0.05 * scale.max(1.0),
        "bf16 rounding too large"
    );
}

#[test]
fn sharded_checkpoint_loads() {
    let dir = tempfile::tempdir().unwrap();
    let m = perturbed(&tiny(false), 8);
    let path = dir.path().join("sharded");
    m.save_checkpoint(&path, SaveDtype::F32, None).unwrap();
    // Split model.safetensors into two shards with an index.
    let all = candle_core::safetensors::load(path.join("model.safetensors"), &Device::Cpu).unwrap();
    let (mut a, mut b) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut weight_map = serde_json::Map::new();
    for (name, t) in all {
        let shard = if name.contains("layers.1") || name == "lm_head.weight" {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        weight_map.insert(name.clone(), serde_json::json!(shard));
        if shard.starts_with("model-00001") {
            a.insert(name, t)
        } else {
            b.insert(name, t)
        };
    }
    std::fs::remove_file(path.join("model.safetensors")).unwrap();
    candle_core::safetensors::save(&a, path.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, path.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(path.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let loaded = load_model_dir(&path, &Device::Cpu).unwrap();
    let input = ids(&[&[3, 1, 4, 1, 5]]);
    let d = max_abs_diff(
        &loaded.model.forward(&input, None).unwrap(),
        &m.model.forward(&input, None).unwrap(),
    );
    assert_eq!(d, 0.0);
}

#[test]
fn missing_or_misshapen_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = perturbed(&tiny(true), 9);
    let path = dir.path().join("broken");
    m.save_checkpoint(&path, SaveDtype::F32, None).unwrap();
    let mut all =
        candle_core::safetensors::load(path.join("model.safetensors"), &Device::Cpu).unwrap();
    all.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&all, path.join("model.safetensors")).unwrap();
    let err = load_model_dir(&path, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name, .. } if name == "model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("model.layers.1.mlp.up_proj.weight")
    );

    all.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((5, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&all, path.join("model.safetensors")).unwrap();
    let err = load_model_dir(&path, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::TensorShape { name, found, .. } if name == "model.layers.1.mlp.up_proj.weight" && found == &[5, 64]),
        "{err}"
    );

    // An untied config needs lm_head.weight, which a tied checkpoint lacks.
    all.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((192, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&all, path.join("model.safetensors")).unwrap();
    let mut config = m.config.clone();
    config.tie_word_embeddings = false;
    std::fs::write(path.join("config.json"), config.to_json_string()).unwrap();
    let err = load_model_dir(&path, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name, .. } if name == "lm_head.weight"),
        "{err}"
    );

    // No weights at all, or no config.
    std::fs::remove_file(path.join("model.safetensors")).unwrap();
    assert!(matches!(
        load_model_dir(&path, &Device::Cpu),
        Err(ModelError::ModelDir { .. })
    ));
    std::fs::remove_file(path.join("config.json")).unwrap();
    let err = load_model_dir(&path, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn tied_checkpoint_with_extra_lm_head_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let untied = perturbed(&tiny(false), 10);
    let path = dir.path().join("extra");
    untied.save_checkpoint(&path, SaveDtype::F32, None).unwrap();
    let mut config = untied.config.clone();
    config.tie_word_embeddings = true;
    std::fs::write(path.join("config.json"), config.to_json_string()).unwrap();
    let loaded = load_model_dir(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.ignored_tensors, ["lm_head.weight"]);
    assert!(
        !loaded
            .varmap
            .data()
            .lock()
            .unwrap()
            .contains_key("lm_head.weight")
    );
}

#[test]
fn init_random_is_deterministic() {
    let config = tiny(true);
    let a = init_random(&config, 42, &Device::Cpu).unwrap();
    let b = init_random(&config, 42, &Device::Cpu).unwrap();
    let c = init_random(&config, 43, &Device::Cpu).unwrap();
    let input = ids(&[&[1, 2, 3]]);
    let (la, lb, lc) = (
        a.model.forward(&input, None).unwrap(),
        b.model.forward(&input, None).unwrap(),
        c.model.forward(&input, None).unwrap(),
    );
    assert_eq!(max_abs_diff(&la, &lb), 0.0);
    assert!(max_abs_diff(&la, &lc) > 0.0);
    // Weight scale follows initializer_range.
    let w = a.varmap.data().lock().unwrap()["model.layers.0.mlp.up_proj.weight"]
        .as_tensor()
        .clone();
    let std = w
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    assert!((std - 0.02).abs() < 0.002, "std {std}");
}

#[test]
fn config_parses_hf_json_and_validates() {
    let hf = r#"{
      "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
      "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
      "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
      "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
      "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
      "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true,
      "use_sliding_window": false, "vocab_size": 151936
    }"#;
    let config = Qwen3Config::from_json_str(hf).unwrap();
    config.validate().unwrap();
    assert_eq!(config.head_dim(), 128);
    assert_eq!(config.eos_token_id, [151645]);
    assert_eq!(config.rope_theta, 1e6);
    assert_eq!(config.extra["max_window_layers"], 28);
    // Qwen3-0.6B has about 596M parameters (tied embeddings).
    assert!(
        (590_000_000..600_000_000).contains(&config.num_parameters()),
        "{}",
        config.num_parameters()
    );
    // Round trip through the writer keeps unknown fields.
    let again = Qwen3Config::from_json_str(&config.to_json_string()).unwrap();
    assert_eq!(again, config);

    // Newer files: eos list, rope_theta nested.
    let newer = r#"{"vocab_size": 100, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "num_key_value_heads": 1, "eos_token_id": [1, 2],
      "rope_parameters": {"rope_theta": 5000.0, "rope_type": "default"}}"#;
    let config = Qwen3Config::from_json_str(newer).unwrap();
    config.validate().unwrap();
    assert_eq!(
        (
            config.head_dim(),
            config.rope_theta,
            config.eos_token_id.clone()
        ),
        (4, 5000.0, vec![1, 2])
    );

    type Breaker = Box<dyn Fn(&mut Qwen3Config)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("hidden_size", Box::new(|c| c.hidden_size = 0)),
        (
            "num_key_value_heads",
            Box::new(|c| c.num_key_value_heads = 3),
        ),
        ("head_dim", Box::new(|c| c.head_dim = Some(15))),
        ("rms_norm_eps", Box::new(|c| c.rms_norm_eps = -1.0)),
        ("rope_theta", Box::new(|c| c.rope_theta = f64::INFINITY)),
        ("eos_token_id", Box::new(|c| c.eos_token_id = vec![5000])),
        ("bos_token_id", Box::new(|c| c.bos_token_id = Some(320))),
        ("hidden_act", Box::new(|c| c.hidden_act = "gelu".into())),
        ("attention_bias", Box::new(|c| c.attention_bias = true)),
        (
            "rope_scaling",
            Box::new(|c| c.rope_scaling = Some(serde_json::json!({"type": "yarn"}))),
        ),
        (
            "use_sliding_window",
            Box::new(|c| c.use_sliding_window = true),
        ),
        (
            "torch_dtype",
            Box::new(|c| c.torch_dtype = Some("int8".into())),
        ),
    ];
    for (field, break_it) in cases {
        let mut config = tiny(true);
        break_it(&mut config);
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, field, "{err}");
        // Building a model refuses it too.
        assert!(matches!(
            init_random(&config, 0, &Device::Cpu),
            Err(ModelError::Config(_))
        ));
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, "{\"vocab_size\": 10").unwrap();
    let err = Qwen3Config::from_file(&path).unwrap_err();
    assert!(
        matches!(err, ModelError::Json { .. }) && err.to_string().contains("config.json"),
        "{err}"
    );
    std::fs::write(
        &path,
        tiny(true)
            .to_json_string()
            .replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
    )
    .unwrap();
    assert!(
        matches!(Qwen3Config::from_file(&path), Err(ModelError::Config(e)) if e.field == "num_key_value_heads")
    );
}

#[test]
fn save_checkpoint_copies_tokenizer_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(src.join("tokenizer_config.json"), "{\"eos_token\": \"x\"}").unwrap();
    std::fs::write(src.join("unrelated.txt"), "no").unwrap();
    let m = init_random(&tiny(true), 0, &Device::Cpu).unwrap();
    let out = dir.path().join("out");
    save_checkpoint(&out, &m.config, &m.varmap, SaveDtype::F32, Some(&src)).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap(),
        "{\"eos_token\": \"x\"}"
    );
    assert!(out.join("tokenizer.json").is_file());
    assert!(!out.join("unrelated.txt").exists());
}

#[test]
fn adamw_steps_reduce_the_loss_and_the_sampling_copy_follows() {
    use candle_nn::Optimizer;
    let m = init_random(&tiny(true), 11, &Device::Cpu).unwrap();
    let sampling_copy = m.model.detached();
    let seq: &[u32] = &[1, 17, 33, 17, 33, 17, 33, 17, 33, 2];
    let input = ids(&[seq]);
    let loss = || {
        m.model
            .next_token_logprobs(&input, None)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap()
    };
    let mut opt = candle_nn::AdamW::new(
        m.varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let first = loss().to_scalar::<f32>().unwrap();
    for _ in 0..30 {
        opt.backward_step(&loss()).unwrap();
    }
    let last = loss().to_scalar::<f32>().unwrap();
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    // The detached copy made before training shares storage with the variables: it sees every update.
    let trained = m.model.forward(&input, None).unwrap();
    assert_eq!(
        max_abs_diff(&sampling_copy.forward(&input, None).unwrap(), &trained),
        0.0
    );
}
