//! PLM in data-parallel training on the in-process communicator: each
//! rank's masks are its slice of the single-process masks, bit for bit
//! (the last batch's empty slice included), and r̂ after every epoch is
//! the single-process r̂ on every rank.

mod ddp;

use ddp::{dataset, model, on_ranks, sgd, CLASSES, TRAIN};
use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::data::{ImageDataset, Labels, Slice};
use ferrite::distributed::Communicator;
use ferrite::loss::{bce_with_logits, Reduction};
use ferrite::plm::{apply_mask, Plm, PlmConfig, RhatInit};
use ferrite::train::objective::Objective;
use ferrite::train::run_criterion::RunObjective;
use ferrite::train::trainer::{Criterion, Quiet, Trainer};
use ferrite::{Result, Tensor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// PLM over the trainer with the masks it drew recorded, by epoch and
/// dataset index: the hooks a data-parallel run calls.
struct RecordingPlm {
    plm: Plm,
    epoch: usize,
    masks: BTreeMap<(usize, usize), Vec<u32>>,
}

impl RecordingPlm {
    fn new(train: &ImageDataset) -> RecordingPlm {
        let Labels::Multi { bits, .. } = &train.labels else {
            panic!("multi-label data")
        };
        let positives: Vec<usize> = (0..CLASSES)
            .map(|c| {
                bits.iter()
                    .skip(c)
                    .step_by(CLASSES)
                    .filter(|&&b| b == 1)
                    .count()
            })
            .collect();
        let config = PlmConfig {
            lambda: 0.5,
            init: RhatInit::Balanced,
            seed: 9,
            ..PlmConfig::default()
        };
        RecordingPlm {
            plm: Plm::new(config, &positives, train.len()).unwrap(),
            epoch: 0,
            masks: BTreeMap::new(),
        }
    }
}

impl Criterion for RecordingPlm {
    fn loss(&mut self, output: &Tensor, batch: &Batch) -> Result<Tensor> {
        self.slice_loss(output, batch, Slice::whole(batch.len()))
    }

    fn slice_loss(&mut self, output: &Tensor, batch: &Batch, slice: Slice) -> Result<Tensor> {
        let per_element = bce_with_logits(output, &batch.targets, None, Reduction::None)?;
        let mask = self.plm.sample_mask_at(&batch.targets, slice.offset)?;
        let rows = mask.to_vec::<f32>()?;
        for (row, &index) in rows.chunks(CLASSES).zip(&batch.indices) {
            let bits = row.iter().map(|v| v.to_bits()).collect();
            self.masks.insert((self.epoch, index), bits);
        }
        self.plm
            .observe(&output.detach().sigmoid()?, &batch.targets)?;
        apply_mask(&per_element, &mask)
    }

    fn skip_slice(&mut self, _slice: Slice) -> Result<()> {
        self.plm.skip_mask()
    }

    fn validation_loss(&mut self, _output: &Tensor, _batch: &Batch) -> Result<Option<Tensor>> {
        Ok(None)
    }

    fn all_reduce_epoch(&mut self, comm: &dyn Communicator) -> Result<()> {
        self.plm.all_reduce_histograms(comm)
    }

    fn end_epoch(&mut self) -> Result<Map<String, Value>> {
        self.plm.end_epoch()?;
        self.epoch += 1;
        Ok(Map::new())
    }
}

/// PLM's runs: batches of 8 (the last of 1), 3 epochs.
const PLM_BATCH: usize = 8;
const PLM_EPOCHS: usize = 3;

/// What PLM did: the masks by (epoch, image), r̂, masks drawn.
type PlmOutcome = (BTreeMap<(usize, usize), Vec<u32>>, Vec<f64>, u64);

fn fit_plm(comm: Option<Box<dyn Communicator>>) -> Result<PlmOutcome> {
    let train_set = dataset(TRAIN, 3, true);
    let mut train = DataLoader::new(&train_set, LoaderConfig::training(PLM_BATCH, 5))?;
    let model = model(0)?;
    let optimizer = sgd(&model)?;
    let mut trainer = Trainer::with_criterion(model, optimizer, RecordingPlm::new(&train_set))?
        .epochs(PLM_EPOCHS);
    if let Some(comm) = comm {
        trainer = trainer.with_communicator(comm)?;
    }
    trainer.fit(&mut train, None, &mut Quiet)?;
    let c = trainer.criterion();
    Ok((
        c.masks.clone(),
        c.plm.rhat().to_vec(),
        c.plm.batches_drawn(),
    ))
}

#[test]
fn plm_masks_and_rhat_are_the_single_process_ones() {
    // The mask of a slice is that part of the whole batch's mask.
    let targets = dataset(7, 4, true);
    let mut loader = DataLoader::new(&targets, LoaderConfig::evaluation(7)).unwrap();
    let y = loader.epoch(0).next().unwrap().unwrap().targets;
    let plm = || {
        Plm::new(
            PlmConfig {
                seed: 1,
                init: RhatInit::Balanced,
                ..Default::default()
            },
            &[3, 2, 1],
            7,
        )
        .unwrap()
    };
    let whole = plm().sample_mask(&y).unwrap().to_vec::<f32>().unwrap();
    let mut parts = plm()
        .sample_mask_at(&y.narrow(0, 0, 3).unwrap(), 0)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    parts.extend(
        plm()
            .sample_mask_at(&y.narrow(0, 3, 4).unwrap(), 3)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
    );
    assert_eq!(whole, parts);

    let (masks, rhat, drawn) = fit_plm(None).unwrap();
    assert_eq!(masks.len(), PLM_EPOCHS * TRAIN);
    assert!(
        masks.values().flatten().any(|&b| b == 0),
        "PLM masked nothing"
    );
    let ranks: Vec<PlmOutcome> = on_ranks(2, |comm| fit_plm(Some(comm)))
        .into_iter()
        .collect::<Result<_>>()
        .unwrap();
    let mut union = ranks[0].0.clone();
    union.extend(ranks[1].0.clone());
    assert_eq!(ranks[0].0.len() + ranks[1].0.len(), PLM_EPOCHS * TRAIN);
    assert!(
        union == masks,
        "the ranks' masks are not the single-process masks"
    );
    for (r, (_, rank_rhat, rank_drawn)) in ranks.iter().enumerate() {
        assert_eq!(*rank_drawn, drawn, "rank {r}'s mask counter");
        assert!(*rank_rhat == rhat, "rank {r}'s r̂ {rank_rhat:?} vs {rhat:?}");
    }
    assert!(
        rhat.iter().any(|&r| (r - 1.0).abs() > 1e-3),
        "r̂ did not move: {rhat:?}"
    );
}

/// A run's own objective (`RunObjective`, PLM from a loss spec) trains
/// data-parallel to the single-process r̂.
#[test]
fn a_run_objective_with_plm_reaches_the_single_process_rhat() {
    let fit_run = |comm: Option<Box<dyn Communicator>>| -> Result<(Vec<f64>, u64)> {
        let train_set = dataset(TRAIN, 3, true);
        let Labels::Multi { bits, .. } = &train_set.labels else {
            unreachable!()
        };
        let positives: Vec<usize> = (0..CLASSES)
            .map(|c| {
                bits.iter()
                    .skip(c)
                    .step_by(CLASSES)
                    .filter(|&&b| b == 1)
                    .count()
            })
            .collect();
        let spec = "plm(lambda=0.5,init=balanced)+bce".parse()?;
        let objective = Objective::new(&spec, PLM_EPOCHS, 7, &positives, TRAIN)?;
        let mut train = DataLoader::new(&train_set, LoaderConfig::training(PLM_BATCH, 5))?;
        let model = model(0)?;
        let optimizer = sgd(&model)?;
        let mut trainer = Trainer::with_criterion(model, optimizer, RunObjective::new(objective))?
            .epochs(PLM_EPOCHS);
        if let Some(comm) = comm {
            trainer = trainer.with_communicator(comm)?;
        }
        trainer.fit(&mut train, None, &mut Quiet)?;
        let plm = trainer.criterion().objective().plm().unwrap();
        Ok((plm.rhat().to_vec(), plm.batches_drawn()))
    };
    let serial = fit_run(None).unwrap();
    assert!(
        serial.0.iter().any(|&r| (r - 1.0).abs() > 1e-3),
        "r̂ did not move"
    );
    for (r, rank) in on_ranks(2, |comm| fit_run(Some(comm)))
        .into_iter()
        .enumerate()
    {
        assert!(rank.unwrap() == serial, "rank {r}");
    }
}
