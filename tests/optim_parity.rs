//! Optimizers, schedules and gradient clipping against PyTorch
//! trajectories (`tests/fixtures/optim.json`, made offline by
//! `tests/fixtures/gen_optim.py`), plus the optimizers' own rules.

mod common;
use common::{assert_close, fixture, tensor_of, values};
use ferrite::optim::{
    clip_grad_norm, Adam, AdamConfig, CosineAnnealing, LinearWarmup, LrSchedule, MultiStepLr,
    Optimizer, ParamGroup, SequentialLr, Sgd, SgdConfig, StepLr,
};
use ferrite::{DType, GradStore, Tensor};

#[test]
fn optimizer_trajectories_match_pytorch() {
    let root = fixture("optim.json");
    let cases = root["optimizers"].as_array().unwrap();
    assert_eq!(cases.len(), 11);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let h = &case["hyper"];
        let tol = if case["dtype"] == "f64" { 1e-12 } else { 2e-6 };
        let params: Vec<Tensor> = case["params0"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| tensor_of(v).requires_grad_(true))
            .collect();
        let group = ParamGroup::new(
            params.clone(),
            h["lr"].as_f64().unwrap(),
            h["weight_decay"].as_f64().unwrap(),
        );
        let mut opt: Box<dyn Optimizer> = match case["optimizer"].as_str().unwrap() {
            "sgd" => Box::new(
                Sgd::new(
                    vec![group],
                    SgdConfig {
                        momentum: h["momentum"].as_f64().unwrap(),
                        dampening: h["dampening"].as_f64().unwrap(),
                        nesterov: h["nesterov"].as_bool().unwrap(),
                    },
                )
                .unwrap(),
            ),
            kind => {
                let betas = h["betas"].as_array().unwrap();
                let config = AdamConfig {
                    beta1: betas[0].as_f64().unwrap(),
                    beta2: betas[1].as_f64().unwrap(),
                    eps: h["eps"].as_f64().unwrap(),
                    decoupled_weight_decay: kind == "adamw",
                };
                Box::new(Adam::new(vec![group], config).unwrap())
            }
        };
        for (step, (grads, want)) in case["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["params"].as_array().unwrap())
            .enumerate()
        {
            let mut store = GradStore::new();
            for (p, g) in params.iter().zip(grads.as_array().unwrap()) {
                store.insert(p, tensor_of(g));
            }
            opt.step(&store).unwrap();
            for (i, (p, w)) in params.iter().zip(want.as_array().unwrap()).enumerate() {
                assert_close(
                    &format!("{name} step {step} param {i}"),
                    &p.to_f64_vec().unwrap(),
                    &values(w),
                    tol,
                    tol,
                );
            }
        }
        assert_eq!(opt.steps(), 4);
    }
}

#[test]
fn schedules_match_pytorch() {
    let root = fixture("optim.json");
    let schedule = |name: &str| -> Box<dyn LrSchedule> {
        match name {
            "step" => Box::new(StepLr {
                step_size: 3,
                gamma: 0.5,
            }),
            "multistep" => Box::new(MultiStepLr {
                milestones: vec![2, 5, 8],
                gamma: 0.1,
            }),
            "cosine" => Box::new(CosineAnnealing {
                t_max: 10,
                eta_min: 0.001,
            }),
            "linear_warmup" => Box::new(LinearWarmup {
                start_factor: 0.1,
                end_factor: 1.0,
                total_iters: 3,
            }),
            "warmup_then_cosine" => Box::new(SequentialLr {
                schedules: vec![
                    Box::new(LinearWarmup {
                        start_factor: 0.1,
                        end_factor: 1.0,
                        total_iters: 3,
                    }),
                    Box::new(CosineAnnealing {
                        t_max: 7,
                        eta_min: 0.0,
                    }),
                ],
                milestones: vec![3],
            }),
            "warmup_then_multistep" => Box::new(SequentialLr {
                schedules: vec![
                    Box::new(LinearWarmup {
                        start_factor: 0.25,
                        end_factor: 1.0,
                        total_iters: 2,
                    }),
                    Box::new(MultiStepLr {
                        milestones: vec![3, 6],
                        gamma: 0.1,
                    }),
                ],
                milestones: vec![2],
            }),
            other => panic!("unknown schedule {other}"),
        }
    };
    let cases = root["schedules"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let base = case["base_lr"].as_f64().unwrap();
        let s = schedule(name);
        let got: Vec<f64> = (0..12).map(|e| s.lr_at(base, e)).collect();
        let want: Vec<f64> = case["lrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_close(name, &got, &want, 1e-12, 1e-12);
    }
}

#[test]
fn clipping_matches_pytorch() {
    let root = fixture("optim.json");
    for case in root["clip_grad_norm"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let before: Vec<Tensor> = case["grads_before"]
            .as_array()
            .unwrap()
            .iter()
            .map(tensor_of)
            .collect();
        let params: Vec<Tensor> = before
            .iter()
            .map(|g| g.zeros_like().unwrap().requires_grad_(true))
            .collect();
        let mut store = GradStore::new();
        for (p, g) in params.iter().zip(&before) {
            store.insert(p, g.clone());
        }
        let norm = clip_grad_norm(&mut store, &params, case["max_norm"].as_f64().unwrap()).unwrap();
        assert_close(
            &format!("{name} norm"),
            &[norm],
            &[case["total_norm"].as_f64().unwrap()],
            1e-12,
            1e-12,
        );
        for (i, (p, want)) in params
            .iter()
            .zip(case["grads_after"].as_array().unwrap())
            .enumerate()
        {
            assert_close(
                &format!("{name} grad {i}"),
                &store.get(p).unwrap().to_f64_vec().unwrap(),
                &values(want),
                1e-14,
                1e-14,
            );
        }
    }
}

#[test]
fn param_groups_and_skipped_params() {
    // Group 0 decays, group 1 does not; a parameter without a gradient is untouched.
    let a = Tensor::ones(&[2], DType::F64).unwrap().requires_grad_(true);
    let b = Tensor::ones(&[2], DType::F64).unwrap().requires_grad_(true);
    let c = Tensor::ones(&[2], DType::F64).unwrap().requires_grad_(true);
    let mut opt = Sgd::new(
        vec![
            ParamGroup::new(vec![a.clone()], 0.1, 0.5),
            ParamGroup::new(vec![b.clone(), c.clone()], 0.1, 0.0),
        ],
        SgdConfig::default(),
    )
    .unwrap();
    let mut grads = GradStore::new();
    grads.insert(&a, Tensor::full(&[2], 1.0, DType::F64).unwrap());
    grads.insert(&b, Tensor::full(&[2], 1.0, DType::F64).unwrap());
    opt.step(&grads).unwrap();
    assert_eq!(a.to_vec::<f64>().unwrap(), vec![1.0 - 0.1 * 1.5; 2]);
    assert_eq!(b.to_vec::<f64>().unwrap(), vec![0.9; 2]);
    assert_eq!(c.to_vec::<f64>().unwrap(), vec![1.0; 2]);
    // Schedules scale each group's own base rate.
    opt.apply_schedule(
        &StepLr {
            step_size: 1,
            gamma: 0.5,
        },
        2,
    );
    assert_eq!((opt.lr(0), opt.lr(1)), (0.025, 0.025));
}

#[test]
fn invalid_configurations_are_errors() {
    let p = Tensor::ones(&[2], DType::F32).unwrap().requires_grad_(true);
    let frozen = Tensor::ones(&[2], DType::F32).unwrap();
    let g = |params: Vec<Tensor>, lr| vec![ParamGroup::new(params, lr, 0.0)];
    assert!(Sgd::new(g(vec![p.clone()], -1.0), SgdConfig::default()).is_err());
    assert!(Sgd::new(g(vec![frozen], 0.1), SgdConfig::default()).is_err());
    assert!(Sgd::new(g(vec![p.clone(), p.clone()], 0.1), SgdConfig::default()).is_err());
    let nesterov_without_momentum = SgdConfig {
        nesterov: true,
        ..SgdConfig::default()
    };
    assert!(Sgd::new(g(vec![p.clone()], 0.1), nesterov_without_momentum).is_err());
    assert!(Adam::new(
        g(vec![p.clone()], 0.1),
        AdamConfig {
            beta1: 1.0,
            ..AdamConfig::default()
        }
    )
    .is_err());
    // A gradient of the wrong shape is reported, not applied.
    let mut opt = Sgd::new(g(vec![p.clone()], 0.1), SgdConfig::default()).unwrap();
    let mut grads = GradStore::new();
    grads.insert(&p, Tensor::ones(&[3], DType::F32).unwrap());
    let e = opt.step(&grads).unwrap_err().to_string();
    assert!(e.contains("[2]") && e.contains("[3]"), "{e}");
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    let mut store = GradStore::new();
    assert!(clip_grad_norm(&mut store, &[p], 0.0).is_err());
}
