//! The ready-queue backward: a leaf's gradient is final, stored and
//! announced as soon as its last consumer's rule has run.

use ferrite::autograd::{BackwardOptions, GradStore, LeafReady};
use ferrite::nn::resnet::{resnet_cifar, ResNet};
use ferrite::nn::Module;
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::{DType, Error, Result, Tensor, TensorId};
use std::collections::HashMap;

/// A CIFAR ResNet-8 and the cross-entropy of a small batch through it.
fn resnet8_loss(seed: u64) -> Result<(ResNet, Tensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let net = ResNet::new(&resnet_cifar(8, 3, 4)?, &mut rng)?;
    let x = Tensor::randn(&[4, 3, 8, 8], 0.0, 1.0, DType::F32, &mut rng)?;
    let labels = Tensor::from_vec(vec![0i64, 3, 1, 2], &[4])?;
    let loss = ferrite::loss::cross_entropy(&net.forward(&x)?, &labels, &Default::default())?;
    Ok((net, loss))
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Per leaf: (how many times the hook saw it, ops done then, ops in the
/// graph, the bits of its gradient then).
type Seen = HashMap<TensorId, (usize, usize, usize, Vec<u32>)>;

fn backward_with_record(loss: &Tensor, store: &mut GradStore) -> Result<Seen> {
    let mut seen = Seen::new();
    let opts = BackwardOptions::default();
    loss.backward_into_with_hook(&loss.ones_like()?, store, opts, &mut |ev: LeafReady<'_>| {
        let g = ev
            .store
            .get(ev.leaf)
            .expect("a ready leaf has its gradient");
        let entry = seen
            .entry(ev.leaf.id())
            .or_insert((0, ev.ops_done, ev.ops_total, bits(g)));
        entry.0 += 1;
        Ok(())
    })?;
    Ok(seen)
}

#[test]
fn the_hook_fires_once_per_parameter_with_its_final_gradient() -> Result<()> {
    let (net, loss) = resnet8_loss(3)?;
    let mut store = GradStore::new();
    let seen = backward_with_record(&loss, &mut store)?;
    let params = net.parameters();
    assert_eq!(seen.len(), params.len(), "one announcement per parameter");
    for p in &params {
        let (count, _, _, at_hook) = &seen[&p.id()];
        assert_eq!(*count, 1);
        assert_eq!(
            at_hook,
            &bits(store.get(p).unwrap()),
            "final when announced"
        );
    }
    // The same bits as a plain backward of the same network and batch.
    let (net2, loss2) = resnet8_loss(3)?;
    let plain = loss2.backward()?;
    for (p, q) in params.iter().zip(net2.parameters()) {
        assert_eq!(bits(store.get(p).unwrap()), bits(plain.get(&q).unwrap()));
    }
    Ok(())
}

#[test]
fn with_accumulation_the_hook_sees_the_sum_with_the_earlier_gradient() -> Result<()> {
    let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2])?.requires_grad_(true);
    let mut store = GradStore::new();
    store.insert(&w, Tensor::from_vec(vec![10.0f32, 20.0], &[2])?);
    let loss = w.square()?.sum_all()?;
    let seen = backward_with_record(&loss, &mut store)?;
    let expected: Vec<u32> = [12.0f32, 24.0].iter().map(|v| v.to_bits()).collect();
    assert_eq!(seen[&w.id()].3, expected);
    Ok(())
}

#[test]
fn a_hook_error_stops_backward_and_is_returned() -> Result<()> {
    let (_, loss) = resnet8_loss(4)?;
    let mut store = GradStore::new();
    let mut calls = 0;
    let opts = BackwardOptions::default();
    let r = loss.backward_into_with_hook(&loss.ones_like()?, &mut store, opts, &mut |_| {
        calls += 1;
        Err(Error::Autograd("the reducer failed".into()))
    });
    assert!(r.unwrap_err().to_string().contains("the reducer failed"));
    assert_eq!(calls, 1);
    Ok(())
}

/// When each parameter of a ResNet-8 became ready, as a fraction of the
/// backward pass's op nodes, by name.
fn readiness(seed: u64) -> Result<Vec<(String, f64)>> {
    let (net, loss) = resnet8_loss(seed)?;
    let mut store = GradStore::new();
    let seen = backward_with_record(&loss, &mut store)?;
    Ok(net
        .named_parameters()
        .into_iter()
        .map(|(name, p)| {
            let (_, done, total, _) = seen[&p.id()];
            (name, done as f64 / total as f64)
        })
        .collect())
}

#[test]
fn resnet8_parameters_are_ready_layer_by_layer_from_the_output() -> Result<()> {
    let ready = readiness(5)?;
    let at = |prefix: &str| -> Vec<f64> {
        ready
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, f)| *f)
            .collect()
    };
    let max = |v: Vec<f64>| v.into_iter().fold(f64::MIN, f64::max);
    let min = |v: Vec<f64>| v.into_iter().fold(f64::MAX, f64::min);
    let report = format!("{ready:?}");
    // The classifier is ready right after the loss's and the linear
    // layer's rules (a reverse-topological walk reached its weight last,
    // through the weight's transpose, at 100 %).
    assert!(max(at("fc.")) < 0.3, "{report}");
    // Stage by stage from the output: every parameter of a later stage is
    // ready before any of an earlier one, the stem last.
    assert!(max(at("fc.")) <= min(at("layer3.")), "{report}");
    assert!(max(at("layer3.")) <= min(at("layer2.")), "{report}");
    assert!(max(at("layer2.")) <= min(at("layer1.")), "{report}");
    assert!(max(at("layer1.")) <= min(at("bn1.")), "{report}");
    assert!(max(at("bn1.")) <= min(at("conv1.")), "{report}");
    // The last stage (more than half of the parameters' elements) is ready
    // a little past half-way; the stem's convolution is the last leaf.
    assert!(max(at("layer3.")) < 0.6, "{report}");
    assert_eq!(min(at("conv1.")), 1.0, "{report}");
    Ok(())
}
