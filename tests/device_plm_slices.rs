//! PLM masks of slices of a batch (a data-parallel rank's rows
//! `first_row..`) on every device, compared bit for bit with the CPU's
//! `draw_mask_at` and with the same rows of the whole batch's mask (see
//! `tests/device/mod.rs`). In CI this runs on the emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_plm_slices`.
//!
//! Element `e` of a whole batch uses word `e mod 4` of Philox block
//! `⌊e/4⌋`, so a slice starting at element `first_row · C` starts inside
//! a block unless that is a multiple of 4: the slices below start at every
//! residue mod 4.

mod device;

use device::devices;
use ferrite::ops::plm::cpu::draw_mask_at;
use ferrite::plm::{Plm, PlmConfig, RhatInit};
use ferrite::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A PLM state over `c` classes that masks in every class (ratios far from
/// the balanced target).
fn masking_plm(c: usize) -> Plm {
    let config = PlmConfig {
        seed: 0xDEAD_BEEF_0000_0007,
        n_bins: 7,
        init: RhatInit::Balanced,
        ..PlmConfig::default()
    };
    let positives: Vec<usize> = (0..c).map(|k| 3 + 11 * k).collect();
    Plm::new(config, &positives, 200).unwrap()
}

/// 0/1 targets of `[b, c]` as f32.
fn labels(b: usize, c: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let y: Vec<f32> = (0..b * c)
        .map(|_| f32::from(rng.random_bool(0.3)))
        .collect();
    Tensor::from_vec(y, &[b, c]).unwrap()
}

/// `draw_mask_at` of `plm`'s next mask for the rows `first_row..` held in
/// `slice`, as 0/1 f32 values.
fn cpu_slice_mask(plm: &Plm, slice: &Tensor, first_row: usize) -> Vec<f32> {
    let c = slice.shape()[1];
    let (keep_pos, keep_neg) = plm.keep_probabilities();
    let labels: Vec<bool> = slice
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|&y| y == 1.0)
        .collect();
    let first = (first_row * c) as u64;
    let (seed, batch) = (plm.config().seed, plm.batches_drawn());
    draw_mask_at(seed, batch, first, &labels, &keep_pos, &keep_neg)
        .unwrap()
        .into_iter()
        .map(f32::from)
        .collect()
}

/// `(first_row, rows)` of the slices drawn from a batch of `b` rows: one
/// row, several rows, and a last slice ending at the batch's end.
fn slices(b: usize) -> [(usize, usize); 6] {
    [(1, 1), (2, 3), (3, 1), (5, 2), (7, 1), (7, b - 7)]
}

#[test]
fn slices_start_at_every_residue_of_a_philox_block() {
    let mut residues = [false; 4];
    for c in [1, 3, 5, 7, 8] {
        for (first_row, _) in slices(13) {
            residues[first_row * c % 4] = true;
        }
    }
    assert_eq!(residues, [true; 4]);
}

#[test]
fn plm_masks_of_slices_at_any_row_are_the_cpu_masks_bit_for_bit() {
    let b = 13;
    for c in [1, 3, 5, 7, 8] {
        let y = labels(b, c, 40 + c as u64);
        let mut plm = masking_plm(c);
        // The first mask, and one further on (the counter is part of the
        // Philox counter).
        for skipped in [0, 3] {
            for _ in 0..skipped {
                plm.skip_mask().unwrap();
            }
            let whole = plm.clone().sample_mask(&y).unwrap();
            let whole = whole.to_vec::<f32>().unwrap();
            let kept: f32 = whole.iter().sum();
            assert!(
                kept > 0.0 && kept < (b * c) as f32,
                "C = {c}: the mask masks"
            );
            for device in std::iter::once(Device::Cpu).chain(devices()) {
                // A view into the whole batch on the device: the slice
                // starts at a storage offset too.
                let on_device = y.to_device(device).unwrap();
                for (first_row, rows) in slices(b) {
                    let what = format!("{device:?}, C = {c}, rows {first_row}.. ({rows})");
                    let slice = on_device.narrow(0, first_row, rows).unwrap();
                    let mut drawing = plm.clone();
                    let got = drawing.sample_mask_at(&slice, first_row).unwrap();
                    assert_eq!(got.device(), device, "{what}");
                    assert_eq!(got.shape(), [rows, c], "{what}");
                    assert_eq!(drawing.batches_drawn(), plm.batches_drawn() + 1);
                    drawing.sync_histograms().expect("valid targets");
                    let got = got.to_vec::<f32>().unwrap();
                    let host = y.narrow(0, first_row, rows).unwrap();
                    assert_eq!(got, cpu_slice_mask(&plm, &host, first_row), "{what}");
                    let (start, end) = (first_row * c, (first_row + rows) * c);
                    assert_eq!(got, whole[start..end], "{what}: the whole batch's rows");
                }
            }
        }
    }
}

#[test]
fn a_rank_slices_together_draw_the_single_process_mask() {
    // Ranks holding rows 0..3, 3..4, 4..9 and 9..11 of an 11-row batch of
    // 7 classes (slices starting at elements 0, 21, 28 and 63).
    let (b, c) = (11, 7);
    for device in devices() {
        let mut single = masking_plm(c);
        let mut ranks: Vec<Plm> = (0..4).map(|_| masking_plm(c)).collect();
        for batch in 0..3 {
            let y = labels(b, c, 70 + batch);
            let want = single.sample_mask(&y).unwrap().to_vec::<f32>().unwrap();
            let yd = y.to_device(device).unwrap();
            let mut got = Vec::new();
            for (plm, (first_row, rows)) in ranks.iter_mut().zip([(0, 3), (3, 1), (4, 5), (9, 2)]) {
                let slice = yd.narrow(0, first_row, rows).unwrap();
                let mask = plm.sample_mask_at(&slice, first_row).unwrap();
                got.extend(mask.to_vec::<f32>().unwrap());
            }
            assert_eq!(got, want, "{device:?}: batch {batch}");
        }
    }
}

#[test]
fn a_bad_target_in_a_slice_is_reported_at_its_place_in_the_slice() {
    let (b, c) = (9, 5);
    let mut y = labels(b, c, 90).to_vec::<f32>().unwrap();
    // Rows 3..7 are the slice: 0.5 at its [1, 2] and 0.7 at its [2, 0];
    // 0.25 in the row before it (not part of the slice).
    y[4 * c + 2] = 0.5;
    y[5 * c] = 0.7;
    y[3 * c - 1] = 0.25;
    let y = Tensor::from_vec(y, &[b, c]).unwrap();
    let named = |err: &str| err.contains("0.5") && err.contains("[1, 2]");

    let mut plm = masking_plm(c);
    let err = plm
        .sample_mask_at(&y.narrow(0, 3, 4).unwrap(), 3)
        .unwrap_err()
        .to_string();
    assert!(named(&err), "{err}");
    assert_eq!(plm.batches_drawn(), 0, "a refused batch draws no mask");

    for device in devices() {
        let slice = y.to_device(device).unwrap().narrow(0, 3, 4).unwrap();
        // The training step does not wait for the verdict: it is read with
        // the histograms.
        let mut plm = masking_plm(c);
        plm.sample_mask_at(&slice, 3).unwrap();
        let err = plm.sync_histograms().unwrap_err().to_string();
        // (a deferred verdict names the place, not the value)
        assert!(
            err.contains("mask 0") && err.contains("[1, 2]"),
            "{device:?}: {err}"
        );
        // A slice starting inside a Philox block (row 5 of 5 classes:
        // element 25) with a bad first element.
        let slice = y.to_device(device).unwrap().narrow(0, 5, 2).unwrap();
        let mut plm = masking_plm(c);
        plm.sample_mask_at(&slice, 5).unwrap();
        let err = plm.sync_histograms().unwrap_err().to_string();
        assert!(err.contains("[0, 0]"), "{device:?}: {err}");
    }
}

#[test]
fn a_slice_past_the_last_element_index_is_refused() {
    let c = 5;
    let y = labels(2, c, 3);
    for device in std::iter::once(Device::Cpu).chain(devices()) {
        let y = y.to_device(device).unwrap();
        let mut plm = masking_plm(c);
        // The first element fits in i64, the last does not.
        let first_row = i64::MAX as usize / c;
        let err = plm.sample_mask_at(&y, first_row).unwrap_err().to_string();
        assert!(err.contains(&i64::MAX.to_string()), "{device:?}: {err}");
        // The first element is past u64::MAX.
        let err = plm.sample_mask_at(&y, usize::MAX).unwrap_err().to_string();
        assert!(err.contains("out of range"), "{device:?}: {err}");
        assert_eq!(plm.batches_drawn(), 0, "nothing drawn");
    }
}
