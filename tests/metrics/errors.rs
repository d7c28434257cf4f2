//! Bad inputs to the metrics are errors.

use super::helpers::hand_example;
use ferrite::metrics::{
    average_precision, binary_targets, class_counts, multilabel_report, single_label_report,
};
use ferrite::Error;

// ---------------------------------------------------------------- errors

#[test]
fn bad_inputs_are_errors() {
    let (scores, targets) = hand_example();
    let bad_shape = |e: Error| matches!(e, Error::BadShape { .. });
    let invalid = |e: Error| matches!(e, Error::InvalidArgument { .. });

    // Multi-label.
    assert!(invalid(
        multilabel_report(&scores, &targets, 0, 0.5).unwrap_err()
    ));
    assert!(bad_shape(
        multilabel_report(&scores, &targets, 5, 0.5).unwrap_err()
    ));
    assert!(bad_shape(
        multilabel_report(&scores, &targets[..11], 3, 0.5).unwrap_err()
    ));
    assert!(bad_shape(multilabel_report(&[], &[], 3, 0.5).unwrap_err()));
    assert!(invalid(
        multilabel_report(&scores, &targets, 3, f64::NAN).unwrap_err()
    ));
    let mut nan_scores = scores.clone();
    nan_scores[7] = f32::NAN;
    let e = multilabel_report(&nan_scores, &targets, 3, 0.5).unwrap_err();
    assert!(e.to_string().contains("row 2, class 1"), "{e}");
    let mut two = targets.clone();
    two[4] = 2;
    let e = multilabel_report(&scores, &two, 3, 0.5).unwrap_err();
    assert!(invalid(e));
    assert!(invalid(
        class_counts(&scores, &targets, 3, f64::NAN).unwrap_err()
    ));
    assert!(bad_shape(
        class_counts(&scores, &targets[1..], 3, 0.5).unwrap_err()
    ));

    // Average precision.
    assert!(bad_shape(average_precision(&[0.1, 0.2], &[1]).unwrap_err()));
    assert!(bad_shape(average_precision(&[], &[]).unwrap_err()));
    assert!(invalid(average_precision(&[f32::NAN], &[1]).unwrap_err()));
    assert!(invalid(average_precision(&[0.3], &[3]).unwrap_err()));

    // Single-label.
    let s = [0.1f32, 0.9, 0.5, 0.5];
    assert!(invalid(
        single_label_report(&s, &[0, 1], 0, &[]).unwrap_err()
    ));
    assert!(bad_shape(
        single_label_report(&s, &[0], 2, &[1, 1]).unwrap_err()
    ));
    assert!(bad_shape(
        single_label_report(&s, &[0, 1], 2, &[1]).unwrap_err()
    ));
    assert!(bad_shape(
        single_label_report(&s[..3], &[0], 2, &[1, 1]).unwrap_err()
    ));
    assert!(matches!(
        single_label_report(&s, &[0, 2], 2, &[1, 1]).unwrap_err(),
        Error::IndexOutOfRange {
            op: "single_label_report",
            index: 2,
            size: 2
        }
    ));
    assert!(invalid(
        single_label_report(&[f32::NAN, 0.0], &[0], 2, &[1, 1]).unwrap_err()
    ));

    // Float targets.
    assert_eq!(binary_targets(&[0.0, 1.0, -0.0]).unwrap(), vec![0, 1, 0]);
    let e = binary_targets(&[1.0, 0.5]).unwrap_err();
    assert!(e.to_string().contains("target 1 is 0.5"), "{e}");
}
