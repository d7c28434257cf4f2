//! The per-op profiler: what it records, what it leaves out, and that it
//! leaves the thread as it found it.

use ferrite::profile::{is_profiling, profile, Phase, Profile};
use ferrite::{DType, Result, Tensor};

fn entry(p: &Profile, name: &str, phase: Phase) -> Option<(u64, std::time::Duration)> {
    p.entries
        .iter()
        .find(|e| e.name == name && e.phase == phase)
        .map(|e| (e.calls, e.total))
}

fn input() -> Result<Tensor> {
    Ok(
        Tensor::from_vec((0..64).map(|i| i as f32 / 64.0 - 0.4).collect(), &[8, 8])?
            .requires_grad_(true),
    )
}

#[test]
fn records_forward_ops_and_backward_rules_by_name() -> Result<()> {
    let x = input()?;
    let (grads, p) = profile(|| -> Result<_> {
        let y = x.matmul(&x)?.relu()?;
        let z = y.mul(&y)?.sum_all()?;
        z.backward()
    });
    let grads = grads?;
    assert!(grads.get(&x).is_some());
    for (name, phase, calls) in [
        ("matmul", Phase::Forward, 1),
        ("relu", Phase::Forward, 1),
        ("mul", Phase::Forward, 1),
        ("sum", Phase::Forward, 1),
        ("matmul", Phase::Backward, 1),
        ("relu", Phase::Backward, 1),
        ("mul", Phase::Backward, 1),
        ("sum", Phase::Backward, 1),
    ] {
        let (c, _) =
            entry(&p, name, phase).unwrap_or_else(|| panic!("no {name} {phase:?} entry in\n{p}"));
        assert_eq!(c, calls, "{name} {phase:?}");
    }
    // Everything backward did (matmuls inside matmul's rule, the seed, the
    // sum of the mul's two input gradients) sits in backward scopes: the
    // forward entries are exactly the four ops called.
    let mut forward: Vec<&str> = p
        .entries
        .iter()
        .filter(|e| e.phase == Phase::Forward)
        .map(|e| e.name)
        .collect();
    forward.sort();
    assert_eq!(forward, ["matmul", "mul", "relu", "sum"], "{p}");
    assert!(entry(&p, "accumulate", Phase::Backward).is_some());
    assert!(entry(&p, "seed", Phase::Backward).is_some());
    assert!(p.entries.iter().all(|e| e.phase != Phase::Update));
    assert!(p.in_ops() <= p.wall);
    // Slowest first.
    assert!(p.entries.windows(2).all(|w| w[0].total >= w[1].total));
    Ok(())
}

#[test]
fn an_op_built_from_ops_counts_once_under_its_own_name() -> Result<()> {
    let x = input()?;
    let w = Tensor::ones(&[4, 8], DType::F32)?;
    let b = Tensor::ones(&[4], DType::F32)?;
    let (out, p) = profile(|| x.linear(&w, Some(&b)));
    out?;
    assert_eq!(entry(&p, "linear", Phase::Forward).map(|e| e.0), Some(1));
    assert!(entry(&p, "matmul", Phase::Forward).is_none(), "{p}");
    assert!(entry(&p, "add", Phase::Forward).is_none(), "{p}");
    Ok(())
}

#[test]
fn nothing_is_recorded_outside_a_profile_call() -> Result<()> {
    let x = input()?;
    x.relu()?;
    assert!(!is_profiling());
    let ((), p) = profile(|| assert!(is_profiling()));
    assert!(p.entries.is_empty(), "{p}");
    assert!(!is_profiling());
    // Profiling ends with the call, also after a call that recorded ops.
    let ((), p) = profile(|| {
        x.relu().unwrap();
    });
    assert_eq!(p.entries.len(), 1);
    assert!(!is_profiling());
    Ok(())
}

#[test]
fn a_nested_profile_collects_its_own_ops() -> Result<()> {
    let x = input()?;
    let ((outer_result, inner), outer) = profile(|| {
        x.exp().unwrap();
        profile(|| x.relu())
    });
    outer_result?;
    assert!(entry(&outer, "exp", Phase::Forward).is_some());
    assert!(entry(&outer, "relu", Phase::Forward).is_none(), "{outer}");
    assert!(entry(&inner, "relu", Phase::Forward).is_some());
    assert!(entry(&inner, "exp", Phase::Forward).is_none(), "{inner}");
    Ok(())
}

#[test]
fn ops_on_other_threads_are_not_recorded() -> Result<()> {
    let x = input()?;
    let ((), p) = profile(|| {
        let x = x.clone();
        std::thread::spawn(move || x.relu().unwrap())
            .join()
            .unwrap();
    });
    assert!(p.entries.is_empty(), "{p}");
    Ok(())
}

#[test]
fn a_panicking_closure_leaves_profiling_off() -> Result<()> {
    let x = input()?;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        profile(|| {
            let _ = x.relu();
            panic!("inside the profiled closure");
        })
    }));
    assert!(caught.is_err());
    assert!(!is_profiling());
    // A profiled op is still recorded afterwards.
    let (_, p) = profile(|| x.relu());
    assert_eq!(entry(&p, "relu", Phase::Forward).map(|e| e.0), Some(1));
    Ok(())
}

#[test]
fn per_step_divides_times_and_calls_and_the_table_names_every_op() -> Result<()> {
    let x = input()?;
    let (_, p) = profile(|| -> Result<()> {
        for _ in 0..4 {
            x.sigmoid()?;
        }
        Ok(())
    });
    let (calls, total) = entry(&p, "sigmoid", Phase::Forward).unwrap();
    assert_eq!(calls, 4);
    let wall = p.wall;
    let avg = p.per_step(4);
    assert_eq!(
        entry(&avg, "sigmoid", Phase::Forward).unwrap(),
        (1, total / 4)
    );
    assert_eq!(avg.wall, wall / 4);
    let table = avg.to_string();
    assert!(
        table.starts_with("| op | pass | calls | total | % of wall |"),
        "{table}"
    );
    assert!(table.contains("| sigmoid | forward | 1 |"), "{table}");
    assert!(table.contains("outside ops"), "{table}");
    Ok(())
}

#[test]
fn updates_pooling_and_accumulation_land_in_the_right_entries() -> Result<()> {
    use ferrite::ops::Pool2dParams;
    let x =
        Tensor::from_vec((0..16).map(|i| i as f32).collect(), &[1, 1, 4, 4])?.requires_grad_(true);
    let (r, p) = profile(|| -> Result<()> {
        let y = x.max_pool2d(Pool2dParams::new(2))?.sum_all()?;
        let mut store = ferrite::GradStore::new();
        let opts = ferrite::autograd::BackwardOptions::default();
        y.backward_into(&y.ones_like()?, &mut store, opts)?;
        let y = x.max_pool2d(Pool2dParams::new(2))?.sum_all()?;
        y.backward_into(&y.ones_like()?, &mut store, opts)?;
        let g = store.get(&x).unwrap().clone();
        ferrite::no_grad(|| x.add_scaled_(&g, -0.1))
    });
    r?;
    assert_eq!(
        entry(&p, "max_pool2d", Phase::Forward).map(|e| e.0),
        Some(2),
        "{p}"
    );
    assert!(entry(&p, "contiguous", Phase::Forward).is_none(), "{p}");
    assert_eq!(
        entry(&p, "max_pool2d", Phase::Backward).map(|e| e.0),
        Some(2)
    );
    // The second backward added into the store's gradient for x.
    assert!(entry(&p, "accumulate", Phase::Backward).is_some(), "{p}");
    assert!(entry(&p, "add", Phase::Forward).is_none(), "{p}");
    assert_eq!(
        entry(&p, "add_scaled", Phase::Update).map(|e| e.0),
        Some(1),
        "{p}"
    );
    assert!(p.to_string().contains("| add_scaled | update | 1 |"));
    Ok(())
}
