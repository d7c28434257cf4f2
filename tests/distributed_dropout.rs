//! Dropout in data-parallel training (in-process ranks): each rank draws
//! its slice's masks at their place in the step's stream, so 2 and 3 ranks
//! train what one process trains, also when a rank's slice is empty; a
//! resumed run draws what an uninterrupted one draws; and the placement
//! itself, row by row, against one whole-batch call.

mod ddp;

use ddp::{dataset, on_ranks, relative_error, sgd, BATCH, CLASSES, TRAIN};
use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::data::shard::{with_batch_position, BatchPosition, Slice};
use ferrite::distributed::Communicator;
use ferrite::loss::cross_entropy;
use ferrite::nn::{Bias, Dropout, Flatten, Linear, Module, ReLU, Sequential};
use ferrite::rand::SeedableRng;
use ferrite::train::trainer::{Quiet, Trainer};
use ferrite::{DType, Result, Tensor};

type Loss = Box<dyn FnMut(&Tensor, &Batch) -> Result<Tensor>>;

/// flatten → linear 16→12 → ReLU → dropout(p) → linear 12→3; weights from
/// `seed`, the dropout generator from a fixed seed (the same on every rank).
fn model(seed: u64, p: f64) -> Result<Sequential> {
    let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(seed);
    Ok(Sequential::new()
        .with(Flatten)
        .with(Linear::new(16, 12, Bias::Yes, &mut rng)?)
        .with(ReLU)
        .with(Dropout::new(p, 99)?)
        .with(Linear::new(12, CLASSES, Bias::Yes, &mut rng)?))
}

fn trainer(
    seed: u64,
    p: f64,
    comm: Option<Box<dyn Communicator>>,
) -> Result<Trainer<Sequential, Loss>> {
    let model = model(seed, p)?;
    let optimizer = sgd(&model)?;
    let loss: Loss = Box::new(|logits: &Tensor, batch: &Batch| {
        cross_entropy(logits, batch.class_labels()?, &Default::default())
    });
    let trainer = Trainer::with_criterion(model, optimizer, loss)?.epochs(3);
    match comm {
        Some(comm) => trainer.with_communicator(comm),
        None => Ok(trainer),
    }
}

fn params(model: &Sequential) -> Vec<Vec<f32>> {
    model
        .parameters()
        .iter()
        .map(|p| p.to_vec::<f32>().unwrap())
        .collect()
}

/// Trains 3 epochs of 97 images in batches of 32 (the last batch has one
/// image, so ranks past the first get an empty slice of it).
fn fit(seed: u64, p: f64, comm: Option<Box<dyn Communicator>>) -> Result<Vec<Vec<f32>>> {
    let train_set = dataset(TRAIN, 1, false);
    let mut train = DataLoader::new(&train_set, LoaderConfig::training(BATCH, 5))?;
    let mut trainer = trainer(seed, p, comm)?;
    trainer.fit(&mut train, None, &mut Quiet)?;
    Ok(params(trainer.model()))
}

#[test]
fn ranks_with_dropout_train_what_one_process_trains() {
    let serial = fit(0, 0.5, None).unwrap();
    // Without dropout the run differs: the masks matter in this test.
    let plain = fit(0, 0.0, None).unwrap();
    assert!(
        relative_error(&plain, &serial) > 1e-2,
        "dropout changed nothing"
    );
    for world in [2, 3] {
        let runs: Vec<Vec<Vec<f32>>> = on_ranks(world, |comm| {
            let rank = comm.rank() as u64;
            fit(rank * 7, 0.5, Some(comm))
        })
        .into_iter()
        .collect::<Result<_>>()
        .unwrap();
        for r in 1..world {
            assert!(
                runs[r] == runs[0],
                "{world} ranks: rank {r} differs from rank 0"
            );
        }
        let err = relative_error(&runs[0], &serial);
        assert!(
            err <= 1e-4,
            "{world} ranks: parameters after 3 epochs off by {err:e}"
        );
    }
}

#[test]
fn a_resumed_run_draws_the_masks_of_an_uninterrupted_one() {
    let dir = std::env::temp_dir().join(format!("ferrite-dropout-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let uninterrupted = fit(0, 0.5, None).unwrap();
    let train_set = dataset(TRAIN, 1, false);
    let mut train = DataLoader::new(&train_set, LoaderConfig::training(BATCH, 5)).unwrap();
    let mut first = trainer(0, 0.5, None).unwrap().output(&dir).unwrap();
    first.train_epoch(&mut train, None, &mut Quiet).unwrap();
    drop(first);
    // A new process: a fresh generator, the weights and epoch from the file.
    let mut resumed = trainer(5, 0.5, None).unwrap().resume(&dir).unwrap();
    resumed.fit(&mut train, None, &mut Quiet).unwrap();
    assert!(
        params(resumed.model()) == uninterrupted,
        "the resumed run drew other masks"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn slices_draw_the_rows_of_one_whole_batch_call() {
    let x = Tensor::ones(&[8, 5], DType::F64).unwrap();
    let at = |step: u64, slice: Slice, drop: &Dropout, x: &Tensor| {
        with_batch_position(BatchPosition { step, slice }, || drop.forward(x)).unwrap()
    };
    let whole = at(3, Slice::whole(8), &Dropout::new(0.5, 1).unwrap(), &x);
    // Two ranks' slices (rows 0..3 and 3..8), each with its own layer.
    let (a, b) = (Dropout::new(0.5, 1).unwrap(), Dropout::new(0.5, 1).unwrap());
    let slice = |offset, len| Slice {
        offset,
        len,
        global_len: 8,
    };
    let top = at(3, slice(0, 3), &a, &x.narrow(0, 0, 3).unwrap());
    let bottom = at(3, slice(3, 5), &b, &x.narrow(0, 3, 5).unwrap());
    let joined = Tensor::cat(&[top, bottom], 0).unwrap();
    assert_eq!(
        joined.to_vec::<f64>().unwrap(),
        whole.to_vec::<f64>().unwrap()
    );
    // Another step, or a second call in the same step, draws other masks.
    let drop = Dropout::new(0.5, 1).unwrap();
    let first = at(4, Slice::whole(8), &drop, &x).to_vec::<f64>().unwrap();
    let second = at(4, Slice::whole(8), &drop, &x).to_vec::<f64>().unwrap();
    assert_ne!(first, whole.to_vec::<f64>().unwrap());
    assert_ne!(first, second);
    // The next step starts afresh: step 4 again on a new layer repeats.
    let again = at(4, Slice::whole(8), &Dropout::new(0.5, 1).unwrap(), &x);
    assert_eq!(again.to_vec::<f64>().unwrap(), first);
}
