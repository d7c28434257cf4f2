//! PLM's re-weighting control (`reweight(rhat=…)`): its loss is the
//! expectation of PLM's masked loss at the same fixed r̂, so an experiment
//! can tell the effect of stochastic masking from plain re-weighting.

use ferrite::rand::{rngs::StdRng, Rng, SeedableRng};
use ferrite::train::objective::Objective;
use ferrite::train::LossSpec;
use ferrite::Tensor;

/// Logits and multi-hot targets of a batch where class `c` is positive
/// with probability `freq[c]`.
fn batch(rows: usize, freq: &[f64], seed: u64) -> (Tensor, Tensor) {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = freq.len();
    let logits: Vec<f32> = (0..rows * c).map(|_| rng.random_range(-3.0..3.0)).collect();
    let targets: Vec<f32> = (0..rows * c)
        .map(|i| f32::from(rng.random_bool(freq[i % c])))
        .collect();
    (
        Tensor::from_vec(logits, &[rows, c]).unwrap(),
        Tensor::from_vec(targets, &[rows, c]).unwrap(),
    )
}

fn objective(spec: &str, positives: &[usize], n: usize) -> Objective {
    let spec: LossSpec = spec.parse().unwrap();
    Objective::new(&spec, 1, 7, positives, n).unwrap()
}

#[test]
fn the_control_is_the_expectation_of_plm_masked_loss() {
    // Training counts: class 0 balanced, classes 1–3 ever rarer.
    let (positives, n) = ([500, 100, 20, 4], 1000);
    let freq = [0.5, 0.1, 0.02, 0.004];
    for (base, seed) in [("bce", 1), ("focal(gamma=2)", 2), ("cb(beta=0.99)+asl", 3)] {
        let (logits, targets) = batch(64, &freq, seed);
        let mut control = objective(&format!("reweight(rhat=1)+{base}"), &positives, n);
        let want = control
            .loss(&logits, &targets, None)
            .unwrap()
            .item::<f32>()
            .unwrap() as f64;
        let mut plm = objective(
            &format!("plm(init=balanced,lambda=0)+{base}"),
            &positives,
            n,
        );
        let draws: Vec<f64> = (0..3000)
            .map(|_| {
                plm.loss(&logits, &targets, None)
                    .unwrap()
                    .item::<f32>()
                    .unwrap() as f64
            })
            .collect();
        let m = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / m;
        let sd = (draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1.0)).sqrt();
        let se = sd / m.sqrt();
        assert!(sd > 0.0, "{base}: the masks must vary");
        assert!(
            (mean - want).abs() < 4.0 * se + 1e-6,
            "{base}: average masked loss {mean} vs control {want} (standard error {se})"
        );
        // And the control is not plain BCE: the rare classes' negatives
        // count less.
        let mut plain = objective(base, &positives, n);
        let unweighted = plain
            .loss(&logits, &targets, None)
            .unwrap()
            .item::<f32>()
            .unwrap() as f64;
        assert!(want < unweighted, "{base}: {want} vs {unweighted}");
    }
}

#[test]
fn the_control_is_written_and_refused_like_any_loss() {
    // Any accepted r̂ builds an objective, whatever the class counts.
    for rhat in ["1e-6", "0.5", "1e6"] {
        let spec: LossSpec = format!("reweight(rhat={rhat})").parse().unwrap();
        for (positives, n) in [(vec![1, 0, 9], 10), (vec![999_999, 1], 1_000_000)] {
            Objective::new(&spec, 1, 0, &positives, n).unwrap();
        }
    }
    let spec: LossSpec = "reweight+focal".parse().unwrap();
    assert_eq!(spec.reweight, Some(1.0));
    assert_eq!(
        spec.to_string(),
        "reweight(rhat=1)+focal(gamma=2,alpha=none)"
    );
    assert_eq!(spec.to_string().parse::<LossSpec>().unwrap(), spec);
    for (bad, needle) in [
        ("plm+reweight", "in place of plm"),
        ("reweight+ce", "not `ce`"),
        ("reweight(rhat=0)", "rhat must be"),
        ("reweight(rhat=1e300)", "rhat must be"),
        ("reweight(rhat=nan)", "rhat must be"),
        ("reweight(beta=1)", "unknown setting `beta`"),
    ] {
        let err = bad.parse::<LossSpec>().unwrap_err().to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}
