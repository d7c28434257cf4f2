//! The statistics of synchronised batch norm: every rank's per-channel
//! moments gathered and combined into those of the global batch.
//!
//! Each rank sends `[count, mean_0..mean_C, m2_0..m2_C]` (f64, `count` the
//! values per channel of its slice, `m2 = Σ(x − mean)²` from the shifted
//! one-pass sums of [`super::cpu::channel_moments`]), and every rank merges
//! the parts in rank order with the pairwise update of Chan, Golub and
//! LeVeque: `n = n_a + n_b`, `δ = mean_b − mean_a`,
//! `mean = mean_a + δ·n_b/n`, `m2 = m2_a + m2_b + δ²·n_a·n_b/n`. Unlike
//! summing `Σx` and `Σx²` over the ranks, this keeps the accuracy of the
//! shifted sums when the mean is large compared with the spread; with one
//! rank it returns that rank's moments bit for bit. The same operations in
//! the same order run on every rank, so every rank gets the same bits.

use crate::distributed::{Buffer, Communicator};
use crate::error::{Error, Result};

const OP: &str = "sync_batch_norm";

/// Per-channel moments of a set of values: their count, mean and sum of
/// squared deviations from the mean.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Moments {
    /// Values per channel.
    pub count: usize,
    /// Mean per channel (0 when `count` is 0).
    pub mean: Vec<f64>,
    /// `Σ(x − mean)²` per channel.
    pub m2: Vec<f64>,
}

impl Moments {
    /// No values in `channels` channels.
    pub fn empty(channels: usize) -> Self {
        Moments {
            count: 0,
            mean: vec![0.0; channels],
            m2: vec![0.0; channels],
        }
    }

    /// The wire form: `[count, mean.., m2..]`.
    fn encode(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(1 + 2 * self.mean.len());
        v.push(self.count as f64);
        v.extend(&self.mean);
        v.extend(&self.m2);
        v
    }

    /// Reads rank `rank`'s part of `channels` channels.
    fn decode(part: &Buffer, channels: usize, rank: usize) -> Result<Self> {
        let values = match part {
            Buffer::F64(v) if v.len() == 1 + 2 * channels => v,
            _ => {
                return Err(Error::Distributed {
                    op: OP,
                    msg: format!(
                        "rank {rank} sent {} statistics where this rank expects {} \
                         (1 + 2 × {channels} channels): the ranks' batch-norm layers differ",
                        part.len(),
                        1 + 2 * channels
                    ),
                })
            }
        };
        let count = values[0];
        if !(count >= 0.0 && count.fract() == 0.0 && count <= 9.0e15) {
            return Err(Error::Distributed {
                op: OP,
                msg: format!("rank {rank} sent a value count of {count}"),
            });
        }
        Ok(Moments {
            count: count as usize,
            mean: values[1..1 + channels].to_vec(),
            m2: values[1 + channels..].to_vec(),
        })
    }

    /// Adds the values `other` describes (Chan et al.'s pairwise update).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        for c in 0..self.mean.len() {
            let delta = other.mean[c] - self.mean[c];
            self.mean[c] += delta * (nb / n);
            self.m2[c] += other.m2[c] + delta * delta * (na * nb / n);
        }
        self.count += other.count;
    }
}

/// The moments of the global batch: `local` (this rank's) gathered from
/// every rank and merged in rank order. A collective.
pub(super) fn global_moments(comm: &dyn Communicator, local: &Moments) -> Result<Moments> {
    let channels = local.mean.len();
    let parts = comm.all_gather(&Buffer::F64(local.encode()))?;
    let mut total = Moments::empty(channels);
    for (rank, part) in parts.iter().enumerate() {
        total.merge(&Moments::decode(part, channels, rank)?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(count, mean, m2)` of one channel, directly.
    fn direct(xs: &[f64]) -> Moments {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let m2 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
        Moments {
            count: xs.len(),
            mean: vec![mean],
            m2: vec![m2],
        }
    }

    #[test]
    fn merged_parts_are_the_moments_of_the_whole() {
        let xs: Vec<f64> = (0..37)
            .map(|i| 1e4 + ((i * 7919) % 31) as f64 * 0.1)
            .collect();
        let whole = direct(&xs);
        for cut in [1, 5, 18, 36] {
            let mut m = direct(&xs[..cut]);
            m.merge(&Moments::empty(1));
            m.merge(&direct(&xs[cut..]));
            assert_eq!(m.count, 37);
            assert!((m.mean[0] - whole.mean[0]).abs() <= 1e-12 * whole.mean[0]);
            assert!((m.m2[0] - whole.m2[0]).abs() <= 1e-9 * whole.m2[0], "{cut}");
        }
    }

    #[test]
    fn an_empty_part_changes_nothing_and_bad_parts_are_refused() {
        let a = direct(&[1.0, 2.0, 4.0]);
        let mut m = Moments::empty(1);
        m.merge(&a);
        assert_eq!(m, a);
        let short = Buffer::F64(vec![3.0, 1.0]);
        assert!(Moments::decode(&short, 1, 1).is_err());
        let negative = Buffer::F64(vec![-1.0, 1.0, 1.0]);
        assert!(Moments::decode(&negative, 1, 1).is_err());
        let f32s = Buffer::F32(vec![3.0, 1.0, 1.0]);
        assert!(Moments::decode(&f32s, 1, 1).is_err());
        let roundtrip = Moments::decode(&Buffer::F64(a.encode()), 1, 0).unwrap();
        assert_eq!(roundtrip, a);
    }
}
