//! PLM in a data-parallel job: the prediction histograms that each rank
//! counted on its slices, summed over the ranks before the epoch's update,
//! so that every rank computes the same r̂ as one process would.

use super::histogram::Histograms;
use super::objective::Plm;
use crate::distributed::{all_reduce_f64, Communicator};
use crate::error::{Error, Result};

/// Largest integer every `f64` holds exactly (2^53).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

impl Plm {
    /// Replaces this rank's histograms of the epoch by their sum over all
    /// ranks (a collective: every rank calls it, before
    /// [`Plm::end_epoch`]). Counts travel as `f64`, exact below 2^53; a
    /// larger sum is an error.
    pub fn all_reduce_histograms(&mut self, comm: &dyn Communicator) -> Result<()> {
        const OP: &str = "Plm::all_reduce_histograms";
        let h = self.sync_histograms()?;
        let (bins, classes) = (h.n_bins(), h.num_classes());
        let lens = [
            h.pos_pred().len(),
            h.neg_pred().len(),
            h.pos_labels().len(),
            h.neg_labels().len(),
        ];
        let mut flat: Vec<f64> = h
            .pos_pred()
            .iter()
            .chain(h.neg_pred())
            .chain(h.pos_labels())
            .chain(h.neg_labels())
            .chain(std::iter::once(&h.discarded()))
            .map(|&n| n as f64)
            .collect();
        all_reduce_f64(comm, &mut flat)?;
        if flat.iter().any(|&v| !(0.0..=EXACT_INT).contains(&v)) {
            return Err(Error::invalid(
                OP,
                "a summed histogram count exceeds 2^53 (end epochs sooner)",
            ));
        }
        let mut counts = flat.into_iter().map(|v| v as u64);
        let mut take = |n: usize| -> Vec<u64> { counts.by_ref().take(n).collect() };
        let (pos_pred, neg_pred) = (take(lens[0]), take(lens[1]));
        let (pos_labels, neg_labels) = (take(lens[2]), take(lens[3]));
        let discarded = take(1).first().copied().unwrap_or(0);
        let summed = Histograms::from_counts(
            bins, classes, pos_pred, neg_pred, pos_labels, neg_labels, discarded,
        )?;
        self.set_histograms(summed)
    }
}
