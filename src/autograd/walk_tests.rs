//! The ready-queue walk against a copy of the plain reverse-topological
//! walk it replaced: the same gradients, bit for bit.

use super::super::{BackwardOptions, GradStore, Node};
use super::{freed_error, topological_order};
use crate::error::{Error, Result};
use crate::nn::resnet::{resnet_cifar, BlockKind, ResNet, ResNetConfig, ShortcutKind, Stem};
use crate::nn::Module;
use crate::tensor::{DType, Tensor, TensorId};
use rand::{rngs::StdRng, SeedableRng};
use std::collections::HashMap;

/// The walk before the ready queue, verbatim: every node in reverse
/// topological order, a leaf added to the store when the walk reaches it.
fn reference_backward(root: &Tensor, grad: &Tensor, store: &mut GradStore) -> Result<()> {
    let _no_grad = crate::autograd::NoGradGuard::new();
    let order = topological_order(root)?;
    let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
    pending.insert(root.id(), grad.to_dtype(root.dtype())?);
    for t in order.iter().rev() {
        let Some(g) = pending.remove(&t.id()) else {
            continue;
        };
        let mut node = t.node();
        let recorded = match &*node {
            Node::Leaf => {
                store.accumulate(t, g)?;
                continue;
            }
            Node::Freed(name) => return Err(freed_error(name)),
            Node::Op(recorded) => recorded,
        };
        let op = &recorded.op;
        let inputs = op.inputs();
        recorded.check_versions(&inputs, t)?;
        let grads = op.backward(&t.detach(), &g)?;
        if grads.len() != inputs.len() {
            return Err(Error::Autograd("arity".into()));
        }
        for (input, grad) in inputs.iter().zip(grads) {
            let Some(grad) = grad else { continue };
            if !input.requires_grad() {
                continue;
            }
            match pending.remove(&input.id()) {
                Some(acc) => pending.insert(input.id(), acc.add(&grad)?),
                None => pending.insert(input.id(), grad),
            };
        }
        let name = op.name();
        *node = Node::Freed(name);
    }
    Ok(())
}

/// The bits of each parameter's gradient.
type Bits = Vec<Vec<u32>>;

/// Bits of every parameter's gradient, in parameter order.
fn bits(params: &[Tensor], store: &GradStore) -> Bits {
    params
        .iter()
        .map(|p| {
            let g = store.get(p).expect("every parameter gets a gradient");
            g.to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

/// Gradients of `loss(params)` by the new walk and by the reference, each
/// on its own freshly built graph.
fn both_walks(params: &[Tensor], loss: &dyn Fn() -> Result<Tensor>) -> Result<(Bits, Bits)> {
    let l = loss()?;
    let mut new = GradStore::new();
    l.backward_into(&l.ones_like()?, &mut new, BackwardOptions::default())?;
    let l = loss()?;
    let mut old = GradStore::new();
    reference_backward(&l, &l.ones_like()?, &mut old)?;
    Ok((bits(params, &new), bits(params, &old)))
}

#[test]
fn a_tensor_with_many_consumers_sums_them_in_the_same_order() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(1);
    let w = Tensor::randn(&[257], 0.0, 1.0, DType::F32, &mut rng)?.requires_grad_(true);
    let x = Tensor::randn(&[257], 0.0, 1.0, DType::F32, &mut rng)?;
    let params = [w.clone()];
    // h feeds five consumers, whose gradients the walk must add in the old
    // order (with three or more terms, another order changes the bits).
    let loss = || -> Result<Tensor> {
        let h = w.mul(&x)?;
        let a = h.exp()?.sum_all()?;
        let b = h.sigmoid()?.mul_scalar(3.0)?.sum_all()?;
        let c = h.square()?.mean_all()?;
        let d = h.mul(&w)?.sum_all()?;
        let e = h.tanh()?.sum_all()?;
        a.add(&b)?.add(&c)?.add(&d)?.add(&e)
    };
    let (new, old) = both_walks(&params, &loss)?;
    assert_eq!(new, old);
    Ok(())
}

fn resnet_gradients_match(config: &ResNetConfig) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let net = ResNet::new(config, &mut rng)?;
    let params = net.parameters();
    let x = Tensor::randn(&[4, 3, 8, 8], 0.0, 1.0, DType::F32, &mut rng)?;
    let labels = Tensor::from_vec(vec![0i64, 3, 1, 2], &[4])?;
    let loss = || -> Result<Tensor> {
        let logits = net.forward(&x)?;
        crate::loss::cross_entropy(&logits, &labels, &Default::default())
    };
    let (new, old) = both_walks(&params, &loss)?;
    assert_eq!(new.len(), params.len());
    assert_eq!(new, old);
    Ok(())
}

#[test]
fn resnet8_gradients_are_bit_identical_to_the_reverse_walk() -> Result<()> {
    resnet_gradients_match(&resnet_cifar(8, 3, 4)?)
}

#[test]
fn projection_resnet_gradients_are_bit_identical_to_the_reverse_walk() -> Result<()> {
    resnet_gradients_match(&ResNetConfig {
        block: BlockKind::Basic,
        layers: vec![2, 1],
        widths: vec![8, 16],
        stem: Stem::Cifar,
        shortcut: ShortcutKind::Projection,
        in_channels: 3,
        num_classes: 4,
    })
}
