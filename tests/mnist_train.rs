//! Training sanity on real data: the small CNN trained on 2,000 MNIST
//! images must lower its loss and reach ≥ 90 % on 1,000 test images.

use ferrite::data::{loader::epoch_batches, mnist};
use ferrite::nn::{self, small_cnn, Module, Visit};
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use ferrite::KeepDim;
use ferrite::{no_grad, DType};
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn small_cnn_learns_mnist_subset() {
    let (train, test) = mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut net = small_cnn(1, 10, &mut rng).unwrap();
    let mut opt = Adam::new(
        vec![ParamGroup::new(nn::parameters(&net), 2e-3, 0.0)],
        AdamConfig::default(),
    )
    .unwrap();
    let (mean, std) = (0.1307, 0.3081);
    let mut epoch_losses = Vec::new();
    for epoch in 0..3 {
        let mut total = 0.0;
        let batches = epoch_batches(2000, 64, 1, epoch);
        for b in &batches {
            let (x, y) = train.batch(b, mean, std).unwrap();
            let loss = net
                .forward(&x)
                .unwrap()
                .log_softmax(1)
                .unwrap()
                .gather(1, &y)
                .unwrap()
                .mean_all()
                .unwrap()
                .neg()
                .unwrap();
            total += loss.to_scalar::<f32>().unwrap() as f64;
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        epoch_losses.push(total / batches.len() as f64);
    }
    net.set_training(false);
    let idx: Vec<usize> = (0..1000).collect();
    let (x, y) = test.batch(&idx, mean, std).unwrap();
    let pred = no_grad(|| net.forward(&x))
        .unwrap()
        .argmax(1, KeepDim::Yes)
        .unwrap();
    let acc = pred
        .eq(&y)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    println!("epoch losses {epoch_losses:?}, test accuracy {acc}");
    assert!(
        epoch_losses[2] < 0.5 * epoch_losses[0],
        "loss did not fall: {epoch_losses:?}"
    );
    assert!(acc >= 0.90, "accuracy {acc} below 0.90");
}
