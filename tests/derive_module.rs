//! `#[derive(Module)]` on a custom network: nested modules, `Option` (some
//! and none), `Vec`, an enum, a buffer, skipped and plain fields. Its
//! `state_dict` names and order, a save/load round trip, train/eval mode
//! reaching every layer, `to_device`/`to_dtype` converting every tensor,
//! and the `parameters()` methods.

use ferrite::checkpoint::Strict;
use ferrite::checkpoint::{load_into_module, save_module};
use ferrite::nn::{self, BatchNorm2d, Bias, Conv2d, Dropout, Linear, Module, Role, Visit};
use ferrite::ops::Conv2dParams;
use ferrite::{no_grad, DType, Device, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::Path;

/// Convolution then batch norm: a module of two submodules.
#[derive(Module)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x)?)?.relu()
    }
}

/// A group of layers named without a prefix of its own (`flatten`).
#[derive(Module)]
struct Body {
    blocks: Vec<ConvBn>,
    extra: Option<ConvBn>,
}

/// A normalisation that may be absent: an enum.
#[derive(Module)]
enum Norm {
    Identity,
    Batch(#[module(rename = "bn")] BatchNorm2d),
}

/// A per-feature gain with a call counter (a buffer), a skipped tensor
/// cache, plain fields and its own training flag.
#[derive(Module)]
struct Scale {
    gain: Tensor,
    #[module(buffer)]
    calls: Tensor,
    #[module(skip)]
    cache: Vec<Tensor>,
    #[module(skip)]
    label: String,
    limit: f64,
    #[module(training)]
    active: bool,
}

impl Module for Scale {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.active {
            self.calls.add_int_(1)?;
        }
        x.mul(&self.gain)?.clamp(-self.limit, self.limit)
    }
}

#[derive(Module)]
struct Net {
    stem: ConvBn,
    #[module(flatten)]
    body: Body,
    norm: Norm,
    unused: Option<Linear>,
    drop: Dropout,
    scale: Scale,
    #[module(rename = "classifier")]
    head: Linear,
    training: bool,
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem.forward(x)?;
        for block in &self.body.blocks {
            h = block.forward(&h)?;
        }
        if let Some(extra) = &self.body.extra {
            h = extra.forward(&h)?;
        }
        if let Norm::Batch(bn) = &self.norm {
            h = bn.forward(&h)?;
        }
        let h = self.drop.forward(&h)?;
        let h = h.adaptive_avg_pool2d((1, 1))?.flatten(1, -1)?;
        self.head.forward(&self.scale.forward(&h)?)
    }
}

fn conv_bn(cin: usize, cout: usize, rng: &mut StdRng) -> ConvBn {
    let same = Conv2dParams::default().padding(1);
    ConvBn {
        conv: Conv2d::new(cin, cout, 3, same, Bias::No, rng).unwrap(),
        bn: BatchNorm2d::new(cout).unwrap(),
    }
}

fn net(seed: u64) -> Net {
    let mut rng = StdRng::seed_from_u64(seed);
    Net {
        stem: conv_bn(3, 4, &mut rng),
        body: Body {
            blocks: vec![conv_bn(4, 4, &mut rng), conv_bn(4, 4, &mut rng)],
            extra: Some(conv_bn(4, 4, &mut rng)),
        },
        norm: Norm::Batch(BatchNorm2d::new(4).unwrap()),
        unused: None,
        drop: Dropout::new(0.5, seed).unwrap(),
        scale: Scale {
            gain: Tensor::rand(&[4], 0.5, 1.5, DType::F32, &mut rng)
                .unwrap()
                .requires_grad_(true),
            calls: Tensor::scalar(0i64),
            cache: vec![Tensor::zeros(&[2], DType::F32).unwrap()],
            label: "scale".into(),
            limit: 100.0,
            active: true,
        },
        head: Linear::new(4, 2, Bias::Yes, &mut rng).unwrap(),
        training: true,
    }
}

fn input(batch: usize, seed: u64) -> Tensor {
    Tensor::randn(
        &[batch, 3, 6, 6],
        0.0,
        1.0,
        DType::F32,
        &mut StdRng::seed_from_u64(seed),
    )
    .unwrap()
}

/// `(name, role)` of every tensor, from `visit`.
fn roles(m: &dyn Module) -> Vec<(String, Role)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, _, role| out.push((name.to_string(), role)));
    out
}

fn bn_keys(prefix: &str) -> Vec<String> {
    [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    .iter()
    .map(|k| format!("{prefix}.{k}"))
    .collect()
}

fn expected_state_dict_names() -> Vec<String> {
    let mut names = Vec::new();
    for block in ["stem", "blocks.0", "blocks.1", "extra"] {
        names.push(format!("{block}.conv.weight"));
        names.extend(bn_keys(&format!("{block}.bn")));
    }
    names.extend(bn_keys("norm.bn"));
    for key in [
        "scale.gain",
        "scale.calls",
        "classifier.weight",
        "classifier.bias",
    ] {
        names.push(key.to_string());
    }
    names
}

#[test]
fn state_dict_names_and_order_follow_the_fields() {
    let m = net(0);
    let names: Vec<String> = m.state_dict().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected_state_dict_names());
    // Buffers are the batch norms' statistics and the counter; everything
    // else is a parameter, and `named_parameters` lists exactly those.
    let roles = roles(&m);
    let buffers: Vec<&str> = roles
        .iter()
        .filter(|(_, r)| *r == Role::Buffer)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(buffers.len(), 5 * 3 + 1);
    assert!(buffers.contains(&"scale.calls"));
    let params: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    let want: Vec<String> = roles
        .iter()
        .filter(|(_, r)| *r == Role::Parameter)
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(params, want);
    assert_eq!(params.len(), 5 * 2 + 4 + 1 + 2);
    // Skipped and absent fields contribute nothing.
    assert!(names
        .iter()
        .all(|n| !n.contains("cache") && !n.contains("unused")));
}

#[test]
fn optional_fields_appear_only_when_present() {
    let mut m = net(0);
    m.body.extra = None;
    m.norm = Norm::Identity;
    m.unused = Some(Linear::new(2, 2, Bias::No, &mut StdRng::seed_from_u64(1)).unwrap());
    let names: Vec<String> = m.state_dict().into_iter().map(|(n, _)| n).collect();
    assert!(names
        .iter()
        .all(|n| !n.starts_with("extra.") && !n.starts_with("norm.")));
    assert!(names.contains(&"unused.weight".to_string()));
    assert_eq!(names.len(), expected_state_dict_names().len() - 11 + 1);
}

#[test]
fn parameter_methods_agree_with_the_free_functions() {
    let m = net(0);
    let ids = |ts: Vec<Tensor>| ts.iter().map(Tensor::id).collect::<Vec<_>>();
    assert_eq!(ids(m.parameters()), ids(nn::parameters(&m)));
    assert_eq!(
        m.named_parameters()
            .into_iter()
            .map(|(n, t)| (n, t.id()))
            .collect::<Vec<_>>(),
        nn::named_parameters(&m)
            .into_iter()
            .map(|(n, t)| (n, t.id()))
            .collect::<Vec<_>>()
    );
    assert_eq!(m.state_dict().len(), nn::state_dict(&m).len(), "state_dict");
    assert!(m.parameters().iter().all(Tensor::requires_grad));
}

fn values(m: &dyn Module) -> Vec<(String, Vec<f64>)> {
    m.state_dict()
        .into_iter()
        .map(|(n, t)| (n, t.to_f64_vec().unwrap()))
        .collect()
}

#[test]
fn save_and_load_round_trip_every_tensor() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("derive-module-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.safetensors");
    let source = net(0);
    // A training step changes running statistics and counters too.
    source.forward(&input(4, 7)).unwrap();
    save_module(&path, &source, &BTreeMap::new()).unwrap();

    let target = net(1);
    assert_ne!(
        values(&source),
        values(&target),
        "seeds give different nets"
    );
    let report = load_into_module(&path, &target, Strict::Yes).unwrap();
    assert!(report.is_exact(), "{report:?}");
    assert_eq!(report.loaded, expected_state_dict_names());
    assert_eq!(values(&source), values(&target));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The BN and dropout flags of every layer, the custom flag and the net's own.
fn flags(m: &Net) -> Vec<bool> {
    let mut out = vec![
        m.training,
        m.drop.training,
        m.scale.active,
        m.stem.bn.training,
    ];
    out.extend(m.body.blocks.iter().map(|b| b.bn.training));
    out.extend(m.body.extra.iter().map(|b| b.bn.training));
    if let Norm::Batch(bn) = &m.norm {
        out.push(bn.training);
    }
    out
}

#[test]
fn train_and_eval_reach_every_layer() {
    let mut m = net(0);
    assert_eq!(flags(&m), vec![true; 8]);
    m.set_training(false);
    assert_eq!(flags(&m), vec![false; 8]);

    // Observable: in evaluation every batch norm uses its running
    // statistics, so a sample's output does not depend on its batch, the
    // statistics and counters do not move, and dropout is off.
    let before = values(&m);
    let x = input(4, 3);
    let gap = |m: &Net| {
        let alone = no_grad(|| m.forward(&x.narrow(0, 0, 1)?)).unwrap();
        let in_batch = no_grad(|| m.forward(&x)?.narrow(0, 0, 1)).unwrap();
        let (a, b) = (alone.to_f64_vec().unwrap(), in_batch.to_f64_vec().unwrap());
        a.iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    assert!(gap(&m) < 1e-5, "an evaluating layer used batch statistics");
    assert_eq!(values(&m), before, "evaluation changed a buffer");
    // The same check tells a training net apart (batch statistics).
    assert!(gap(&net(0)) > 1e-3);

    m.set_training(true);
    assert_eq!(flags(&m), vec![true; 8]);
    m.forward(&x).unwrap();
    let after: BTreeMap<String, Vec<f64>> = values(&m).into_iter().collect();
    for name in expected_state_dict_names() {
        if name.ends_with("num_batches_tracked") || name == "scale.calls" {
            assert_eq!(after[&name], vec![1.0], "{name}");
        }
    }
}

#[test]
fn to_dtype_and_to_device_convert_every_tensor() {
    let mut m = net(0);
    let count = m.state_dict().len();
    m.to_dtype(DType::F64).unwrap();
    m.to_device(Device::Cpu).unwrap();
    let mut seen = 0;
    m.visit("", &mut |name, t, role| {
        seen += 1;
        let integer = name.ends_with("num_batches_tracked") || name == "scale.calls";
        let want = if integer { DType::I64 } else { DType::F64 };
        assert_eq!(t.dtype(), want, "{name}");
        assert_eq!(t.device(), Device::Cpu, "{name}");
        assert_eq!(t.requires_grad(), role == Role::Parameter, "{name}");
    });
    assert_eq!(seen, count);
    // visit_mut reaches the same tensors, by the same names.
    let mut names = Vec::new();
    m.visit_mut("net", &mut |name, _, _| names.push(name.to_string()));
    let want: Vec<String> = expected_state_dict_names()
        .into_iter()
        .map(|n| format!("net.{n}"))
        .collect();
    assert_eq!(names, want);
    // The skipped cache was left alone; the net still runs, in f64.
    assert_eq!(m.scale.cache[0].dtype(), DType::F32);
    assert_eq!(m.scale.label, "scale");
    let y = m
        .forward(&input(2, 5).to_dtype(DType::F64).unwrap())
        .unwrap();
    assert_eq!((y.shape(), y.dtype()), (&[2, 2][..], DType::F64));
}

/// A derived module is a `Module` like the built-in ones: it nests in a
/// `Sequential` (as `Box<dyn Module>`), which names it by position.
#[test]
fn derived_modules_nest_in_sequential() {
    let mut seq = nn::Sequential::new().with(net(0)).with(nn::ReLU);
    let names: Vec<String> = seq.state_dict().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "0.stem.conv.weight");
    assert_eq!(names.last().unwrap(), "0.classifier.bias");
    seq.set_training(false);
    assert_eq!(seq.forward(&input(2, 1)).unwrap().shape(), &[2, 2]);
}
