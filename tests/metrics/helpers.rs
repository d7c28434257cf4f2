//! Shared helpers: the tolerance and a small example worked out by hand.

pub(super) const TOL: f64 = 1e-12;

/// 4 samples × 3 classes at threshold 0.5.
///
/// ```text
/// scores            targets   predicted
/// 0.9  0.2  0.5     1 0 0     1 0 1
/// 0.6  0.7  0.1     1 1 0     1 1 0
/// 0.3  0.8  0.4     0 1 0     0 1 0
/// 0.2  0.1  0.49    1 0 0     0 0 0
/// ```
/// Class 0: TP 2, FP 0, FN 1 → P 1, R 2/3, F1 0.8.
/// Class 1: TP 2, FP 0, FN 0 → P 1, R 1, F1 1.
/// Class 2: TP 0, FP 1, FN 0 → P 0, R 0 (no positives), F1 0.
pub(super) fn hand_example() -> (Vec<f32>, Vec<u8>) {
    let scores = vec![
        0.9, 0.2, 0.5, //
        0.6, 0.7, 0.1, //
        0.3, 0.8, 0.4, //
        0.2, 0.1, 0.49,
    ];
    let targets = vec![
        1, 0, 0, //
        1, 1, 0, //
        0, 1, 0, //
        1, 0, 0,
    ];
    (scores, targets)
}
