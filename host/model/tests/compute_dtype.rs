//! Mixed precision: bf16 products over f32 master weights (`Qwen3::with_compute_dtype`).

use candle_core::{D, DType, Device, Tensor};
use sod_model::{ComputeDtype, Qwen3Config, init_random};

/// The logits stay f32 and close to the f32 model's (bf16 keeps about 3 significant digits), every variable stays
/// f32 and gets an f32 gradient through the casts, and the f32 default is the plain model bit for bit.
#[test]
fn bf16_compute_keeps_f32_weights_and_trains_every_variable() {
    let config = Qwen3Config::tiny(256, 64, 2);
    let plain = init_random(&config, 3, &Device::Cpu).unwrap();
    let mixed = init_random(&config, 3, &Device::Cpu).unwrap();
    let bf16 = mixed.model.clone().with_compute_dtype(ComputeDtype::Bf16);
    let ids = Tensor::new(&[[1u32, 5, 9, 200, 17, 3, 44, 8]], &Device::Cpu).unwrap();
    let reference = plain.model.forward(&ids, None).unwrap();
    let logits = bf16.forward(&ids, None).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    let scale = reference
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let diff = (&logits - &reference)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff > 0.0,
        "bf16 products must differ from f32 ones somewhere"
    );
    assert!(diff < 0.05 * scale, "{diff} against logits up to {scale}");
    let f32_again = mixed.model.clone().with_compute_dtype(ComputeDtype::F32);
    let same = f32_again.forward(&ids, None).unwrap();
    assert_eq!(
        same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        reference.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );

    let loss = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .narrow(2, 0, 1)
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let vars = mixed.varmap.all_vars();
    assert!(!vars.is_empty());
    for var in vars {
        assert_eq!(var.dtype(), DType::F32);
        let grad = grads.get(&var).expect("every variable gets a gradient");
        assert_eq!(grad.dtype(), DType::F32);
        let norm = grad
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0,
            "a variable of shape {:?} got a zero gradient",
            var.shape()
        );
    }
}
