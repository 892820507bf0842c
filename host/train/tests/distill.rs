//! Invariants of on-policy distillation: distilling a model into itself changes nothing; on a one-step bandit
//! with a known optimum (the teacher's distribution) both the sampled-token OPD gradient and the full-distribution
//! gradient lower the reverse KL to the teacher at every step; a student that already answers as the teacher does
//! keeps doing so under 16 on-policy steps.

mod support;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use sod_loss_abi::testing::SplitMix64;
use sod_loss_abi::{DivergenceKind, DivergenceSpec};
use sod_model::{Sampler, SamplingParams, load_model_dir};
use sod_train::divergence::{divergence, tempered_log_softmax};
use sod_train::episode::Scored;
use sod_train::rollout::Trajectory;
use sod_train::teacher::{Teacher, score};
use sod_train::update::{DivergenceTerm, Params, PpoClip, UpdateBatch, policy_gradients};
use sod_train::{METRICS_FILE, Trainer};
use support::{Fixture, options};

fn weights(dir: &Path) -> HashMap<String, Vec<f32>> {
    let model = load_model_dir(dir, &Device::Cpu).unwrap();
    let data = model.varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn distilling_a_model_into_itself_changes_nothing() {
    let fx = Fixture::new();
    let start = weights(&fx.path().join("student"));
    let cases: [(&str, &[&str]); 4] = [
        ("opd-sampled", &["loss.name=opd"]),
        ("sod-sampled", &["loss.name=sod"]),
        ("opd-full", &["loss.name=opd", "loss.settings.signal=full"]),
        (
            "sod-full-jsd",
            &[
                "loss.name=sod",
                "loss.settings.signal=full",
                "loss.settings.divergence=jsd",
            ],
        ),
    ];
    for (name, extra) in cases {
        // The teacher is the student; no outcome term; no weight decay; a learning rate that would move
        // every weight visibly if any gradient came through.
        let mut overrides = vec![
            "teacher=student",
            "loss.settings={}",
            "loss.settings.grpo_weight=0",
            "weight_decay=0",
            "learning_rate=1e-2",
            "temperature=0.8",
        ];
        overrides.extend_from_slice(extra);
        let config = fx.config(name, &overrides);
        let mut trainer = Trainer::new(config.clone(), options(false)).unwrap();
        let summary = trainer.run().unwrap();
        let last = summary.last.unwrap();
        assert_eq!(last.kl_teacher, Some(0.0), "{name}");
        assert!(last.divergence.is_none_or(|d| d == 0.0), "{name}: {last:?}");
        let after = weights(&summary.checkpoint.unwrap());
        for (key, before) in &start {
            let moved = before
                .iter()
                .zip(&after[key])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(moved <= 1e-6, "{name}: {key} moved by {moved}");
        }
        assert!(config.out_dir.join(METRICS_FILE).is_file());
    }
}

/// Exact reverse KL at the bandit's one position, at temperature 1.
fn reverse_kl(student: &sod_model::Qwen3, teacher: &Teacher, prompt: &[u32]) -> f64 {
    let ids = Tensor::new(prompt, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let last = |model: &sod_model::Qwen3| {
        let hidden = model.detached().forward_hidden(&ids, None).unwrap();
        let h = hidden
            .narrow(1, prompt.len() - 1, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        tempered_log_softmax(&model.lm_head(&h).unwrap(), 1.0).unwrap()
    };
    let spec = DivergenceSpec {
        kind: DivergenceKind::ReverseKl,
        top_k: 0,
    };
    let d = divergence(&last(student), &last(teacher.model()), &spec).unwrap();
    f64::from(d.to_vec1::<f32>().unwrap()[0])
}

fn one_token(prompt: &[u32], token: u32, index: u64) -> Trajectory {
    let mut tokens = prompt.to_vec();
    tokens.push(token);
    Trajectory {
        sample_index: index,
        ..Trajectory::offline("bandit".into(), tokens, prompt.len(), vec![1])
    }
}

#[test]
fn on_a_bandit_both_objectives_lower_the_reverse_kl_at_every_step() {
    let fx = Fixture::new();
    let device = Device::Cpu;
    let prompt: Vec<u32> = vec![5, 17, 42, 8];
    for full in [false, true] {
        let student = load_model_dir(&fx.path().join("student"), &device).unwrap();
        let tokenizer = sod_model::ChatTokenizer::from_dir(&fx.path().join("student")).unwrap();
        let teacher = Teacher::load(
            &fx.path().join("teacher"),
            &device,
            &student.model,
            &tokenizer,
        )
        .unwrap();
        let params = Params::from_varmap(&student.varmap).unwrap();
        let mut kl = vec![reverse_kl(&student.model, &teacher, &prompt)];
        for step in 0..8u64 {
            // The batch: 512 tokens sampled from the student at temperature 1 (one for the full objective, whose
            // gradient needs no sampling at a single position).
            let ids = Tensor::new(prompt.as_slice(), &device)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = student
                .model
                .detached()
                .forward(&ids, None)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .get(prompt.len() - 1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let samples = if full { 1 } else { 512 };
            let trajs: Vec<Trajectory> = (0..samples)
                .map(|i| {
                    let mut sampler = Sampler::new(
                        SamplingParams {
                            temperature: 1.0,
                            top_p: 1.0,
                        },
                        step,
                        "bandit",
                        i,
                    )
                    .unwrap();
                    one_token(&prompt, sampler.sample(&logits).unwrap().token, i)
                })
                .collect();
            let spec = DivergenceSpec {
                kind: DivergenceKind::ReverseKl,
                top_k: 0,
            };
            let scores = score(
                &student.model,
                Some(&teacher),
                &trajs,
                64,
                1.0,
                full.then_some((&spec, 1.0)),
                None,
            )
            .unwrap();
            let unscored = trajs.into_iter().map(Scored::unscored).collect();
            let (episodes, teacher_rows) = scores.into_episodes(unscored).unwrap();
            // OPD's advantage; the full objective has none.
            let advantages: Vec<Vec<f32>> = episodes
                .iter()
                .map(|e| {
                    if full {
                        vec![0.0]
                    } else {
                        vec![e.teacher_logprobs.as_ref().unwrap()[0] - e.old_logprobs[0]]
                    }
                })
                .collect();
            let weights: Vec<Vec<f32>> = vec![vec![1.0]; episodes.len()];
            let batch = UpdateBatch {
                divergence: full.then(|| DivergenceTerm {
                    spec,
                    weights: &weights,
                    teacher: teacher.model(),
                    teacher_rows: teacher_rows.as_ref().unwrap(),
                    temperature: 1.0,
                }),
                ..UpdateBatch::ppo(
                    &episodes,
                    &advantages,
                    PpoClip {
                        low: 0.2,
                        high: 0.28,
                    },
                    64,
                )
            };
            let (grads, _) = policy_gradients(&student.model, &params, &batch).unwrap();
            // Plain gradient descent at a small step: the invariant is about the gradient, not the optimiser.
            for (var, g) in params.vars.iter().zip(&grads) {
                var.set(&(var.as_tensor() - (g * 2.0).unwrap()).unwrap())
                    .unwrap();
            }
            kl.push(reverse_kl(&student.model, &teacher, &prompt));
        }
        for pair in kl.windows(2) {
            assert!(
                pair[1] < pair[0],
                "full = {full}: the reverse KL rose: {kl:?}"
            );
        }
        assert!(
            kl[kl.len() - 1] < 0.9 * kl[0],
            "full = {full}: barely moved: {kl:?}"
        );
    }
}

/// Greedy rollouts of `dir`'s model on the fixture's two prompts, as the trainer would prompt them.
fn greedy_tokens(fx: &Fixture, dir: &Path) -> Vec<Vec<u32>> {
    use sod_model::{ChatMessage, ChatTokenizer};
    use sod_sandbox::{Limits, Sandbox, SandboxConfig};
    use sod_train::rollout::{RolloutRequest, ToolBox, rollout};
    let model = load_model_dir(dir, &Device::Cpu).unwrap();
    let tokenizer = ChatTokenizer::from_dir(dir).unwrap();
    let sandbox = Sandbox::new(SandboxConfig {
        tools_dir: Some(support::tools_dir()),
        cache_dir: Some(support::target_dir().join("test-cache")),
        ..SandboxConfig::default()
    })
    .unwrap();
    let toolbox = ToolBox::new(sandbox, &["calculator".to_string()], Limits::default()).unwrap();
    let config = fx.config("unused", &[]);
    let requests: Vec<RolloutRequest> = ["What is 6 * 7?", "What is 2 + 3?"]
        .iter()
        .enumerate()
        .map(|(i, q)| RolloutRequest {
            prompt_id: format!("p{i}"),
            sample_index: 0,
            group: i as u32,
            messages: vec![
                ChatMessage::system(config.rollout.system_prompt.clone().unwrap()),
                ChatMessage::user(*q),
            ],
            prompt_tokens: None,
        })
        .collect();
    let settings = config
        .rollout
        .settings(0, sod_train::config::EVALUATION_TEMPERATURE);
    rollout(&model.model, &tokenizer, &toolbox, &settings, &requests)
        .unwrap()
        .into_iter()
        .map(|t| t.tokens)
        .collect()
}

#[test]
fn a_student_with_the_teachers_greedy_behaviour_keeps_it_under_16_steps() {
    // A confident teacher (the fixture's teacher with its tied embeddings scaled up, so its greedy choices are
    // not near-ties) and a student that is the same model with 1% multiplicative noise on every weight: both
    // answer the prompts greedily token for token alike. Sixteen on-policy steps of the full-distribution
    // objective, with and without SOD's step weights, at the learning rate that teaches the demo's student,
    // must not change that.
    let fx = Fixture::new();
    let teacher_dir = fx.path().join("sharp-teacher");
    let student_dir = fx.path().join("near-student");
    let base = load_model_dir(&fx.path().join("teacher"), &Device::Cpu).unwrap();
    {
        let data = base.varmap.data().lock().unwrap();
        let embed = &data["model.embed_tokens.weight"];
        embed.set(&(embed.as_tensor() * 8.0).unwrap()).unwrap();
    }
    let copy_from = fx.path().join("teacher");
    base.save_checkpoint(&teacher_dir, sod_model::SaveDtype::F32, Some(&copy_from))
        .unwrap();
    {
        let data = base.varmap.data().lock().unwrap();
        let mut keys: Vec<&String> = data.keys().collect();
        keys.sort();
        for (k, key) in keys.into_iter().enumerate() {
            let var = &data[key];
            // Deterministic noise in [-0.01, 0.01]: a SplitMix64 stream per variable.
            let mut rng =
                SplitMix64::new(0x5EED_u64 ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let factors: Vec<f32> = (0..var.elem_count())
                .map(|_| 1.0 + rng.uniform(-0.01, 0.01) as f32)
                .collect();
            let factors = Tensor::from_vec(factors, var.dims(), &Device::Cpu).unwrap();
            var.set(&(var.as_tensor() * factors).unwrap()).unwrap();
        }
    }
    base.save_checkpoint(&student_dir, sod_model::SaveDtype::F32, Some(&copy_from))
        .unwrap();
    let wanted = greedy_tokens(&fx, &teacher_dir);
    assert_eq!(
        greedy_tokens(&fx, &student_dir),
        wanted,
        "the precondition: the noisy student answers as the teacher does"
    );
    for loss in ["opd", "sod"] {
        let name = format!("{loss}-near");
        let config = fx.config(
            &name,
            &[
                "student=near-student",
                "teacher=sharp-teacher",
                &format!("loss.name={loss}"),
                "loss.settings={}",
                "loss.settings.signal=full",
                "steps=16",
                "warmup_steps=2",
                "learning_rate=1e-3",
                "weight_decay=0",
                "temperature=0.6",
                "divergence_temperature=1.0",
                "checkpoint_every=0",
            ],
        );
        let summary = Trainer::new(config, options(false)).unwrap().run().unwrap();
        let after = greedy_tokens(&fx, &summary.checkpoint.unwrap());
        let changed: usize = after
            .iter()
            .zip(&wanted)
            .map(|(a, w)| {
                a.iter().zip(w).filter(|(x, y)| x != y).count() + a.len().abs_diff(w.len())
            })
            .sum();
        assert_eq!(
            changed, 0,
            "{loss}: the student's greedy answers changed ({changed} tokens)"
        );
    }
}
