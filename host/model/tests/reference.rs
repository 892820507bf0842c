//! Cross-check against candle-transformers' inference-only Qwen3 on the same weights.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen3::{Config, ModelForCausalLM};
use sod_model::{Qwen3Config, SaveDtype, init_random};

#[test]
fn logits_match_candle_transformers_qwen3() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let mut config = Qwen3Config::tiny(300, 64, 2);
        config.tie_word_embeddings = tied;
        config.rope_theta = 10_000.0;
        let m = init_random(&config, 5, &Device::Cpu).unwrap();
        for var in m.varmap.all_vars() {
            let scaled = if var.dims().len() == 2 {
                (var.as_tensor() * 5.0).unwrap()
            } else {
                (var.as_tensor() + 0.1 * var.dims()[0] as f64 / 100.0).unwrap()
            };
            var.set(&scaled).unwrap();
        }
        let path = dir.path().join(format!("m-{tied}"));
        m.save_checkpoint(&path, SaveDtype::F32, None).unwrap();

        let reference_config: Config = serde_json::from_value(serde_json::json!({
            "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads, "head_dim": config.head_dim(),
            "attention_bias": false, "num_key_value_heads": config.num_key_value_heads,
            "max_position_embeddings": config.max_position_embeddings, "sliding_window": null,
            "max_window_layers": config.num_hidden_layers, "tie_word_embeddings": tied,
            "rope_theta": config.rope_theta, "rms_norm_eps": config.rms_norm_eps,
            "use_sliding_window": false, "hidden_act": "silu",
        }))
        .unwrap();
        // SAFETY: the file was just written by this test and is not modified while mapped.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[path.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
        };
        let mut reference = ModelForCausalLM::new(&reference_config, vb).unwrap();

        let seq: Vec<u32> = vec![3, 141, 59, 26, 5, 35, 89, 79, 32, 38, 46, 264];
        let input = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let ours = m.model.forward(&input, None).unwrap();
        let mut worst = 0f32;
        for (i, &tok) in seq.iter().enumerate() {
            let step = Tensor::new(&[[tok]], &Device::Cpu).unwrap();
            let theirs = reference.forward(&step, i).unwrap(); // [1, 1, vocab]
            let d = (ours.narrow(1, i, 1).unwrap() - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            worst = worst.max(d);
        }
        let scale = ours
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("tied={tied}: max abs diff {worst:e}, max abs logit {scale}");
        assert!(
            scale > 1.0,
            "logits too small to be a meaningful comparison: {scale}"
        );
        assert!(
            worst < 1e-4 * scale.max(1.0),
            "tied={tied}: max |diff| {worst} (logit scale {scale})"
        );
    }
}
