//! Checkpoint state: JSON round trips, identical resumed masks, rejected bad states.

use super::helpers::{labels_4x, masking_plm};
use crate::common;
use ferrite::plm::{Divergence, Plm, PlmConfig, RhatInit};
use ferrite::Error;

// ----- checkpoint state -----------------------------------------------------

#[test]
fn state_json_round_trips_and_resumed_masks_are_identical() {
    let cfg = PlmConfig {
        seed: u64::MAX - 12345,
        lambda: 0.123_456_789_012_345_67,
        init: RhatInit::Balanced,
        divergence: Divergence::TruthVsPred,
        n_bins: 7,
        ..PlmConfig::default()
    };
    let mut a = Plm::new(cfg, &[100, 20, 600, 300], 1000).unwrap();
    let y = labels_4x(32, 50);
    let p = common::uniform(&[32, 4], 0.0, 1.0, 51);
    for _ in 0..3 {
        a.sample_mask(&y).unwrap();
        a.observe(&p, &y).unwrap();
    }
    a.end_epoch().unwrap();
    for _ in 0..2 {
        a.sample_mask(&y).unwrap();
        a.observe(&p.square().unwrap(), &y).unwrap();
    }
    let saved = a.state_json().unwrap();
    let mut b = Plm::from_state_json(&saved).unwrap();
    assert_eq!(b.state_json().unwrap(), saved);
    assert_eq!(b.config(), a.config());
    assert_eq!(
        b.rhat().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        a.rhat().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(b.histograms(), a.histograms());
    assert_eq!((b.batches_drawn(), b.epochs()), (5, 1));
    // The resumed run continues exactly like the uninterrupted one.
    for _ in 0..3 {
        assert_eq!(
            a.sample_mask(&y).unwrap().to_vec::<f64>().unwrap(),
            b.sample_mask(&y).unwrap().to_vec::<f64>().unwrap()
        );
    }
    assert_eq!(a.end_epoch().unwrap(), b.end_epoch().unwrap());
    assert_eq!(a.state_json().unwrap(), b.state_json().unwrap());
}

#[test]
fn from_state_json_rejects_bad_states() {
    let good = masking_plm().state_json().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("format", Box::new(|v| v["format"] = "other".into())),
        ("version", Box::new(|v| v["version"] = 99.into())),
        (
            "missing rhat",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("rhat");
            }),
        ),
        (
            "rhat length",
            Box::new(|v| v["rhat"] = serde_json::json!(["1.0"])),
        ),
        ("rhat negative", Box::new(|v| v["rhat"][0] = "-1.0".into())),
        ("rhat NaN", Box::new(|v| v["rhat"][0] = "NaN".into())),
        ("rhat not a string", Box::new(|v| v["rhat"][0] = 1.0.into())),
        ("bins 0", Box::new(|v| v["config"]["bins"] = 0.into())),
        (
            "bins vs histograms",
            Box::new(|v| v["config"]["bins"] = 9.into()),
        ),
        ("lambda", Box::new(|v| v["config"]["lambda"] = "inf".into())),
        ("init", Box::new(|v| v["config"]["init"] = "uniform".into())),
        (
            "histogram length",
            Box::new(|v| v["histograms"]["pos_pred"] = serde_json::json!([1, 2])),
        ),
        (
            "negative count",
            Box::new(|v| v["histograms"]["neg_labels"][0] = (-1).into()),
        ),
        (
            "positives > N",
            Box::new(|v| v["positives"][0] = 5000.into()),
        ),
        (
            "no classes",
            Box::new(|v| v["positives"] = serde_json::json!([])),
        ),
    ];
    for (what, edit) in edits {
        let mut bad = v.clone();
        edit(&mut bad);
        let r = Plm::from_state_json(&bad.to_string());
        assert!(
            matches!(
                r,
                Err(Error::InvalidArgument {
                    op: "Plm::from_state_json",
                    ..
                })
            ),
            "{what}: {:?}",
            r.map(|_| ())
        );
    }
    assert!(Plm::from_state_json("{not json").is_err());
    assert!(Plm::from_state_json("[1, 2]").is_err());
    // The unedited state still loads.
    v["epochs"] = 3.into();
    assert_eq!(Plm::from_state_json(&v.to_string()).unwrap().epochs(), 3);
}
