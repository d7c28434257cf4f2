//! The synchronised batch-norm op ([`Tensor::sync_batch_norm`]) on its own,
//! in f64: one rank is plain batch norm bit for bit; over two in-process
//! ranks the outputs and gradients are those of one process on the whole
//! batch, and finite differences of the global loss agree with them; empty
//! slices, empty global batches and mismatched ranks.

use ferrite::distributed::{all_reduce_f64, Communicator, InProcess, SingleProcess, SyncGroup};
use ferrite::ops::BatchNormOptions;
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::{no_grad, DType, Result, Tensor};
use std::rc::Rc;
use std::thread;

const C: usize = 3;

/// A batch of `n` images of 3 channels, 2×3, far from zero mean.
fn batch(n: usize, seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::randn(&[n, C, 2, 3], 4.0, 1.5, DType::F64, &mut rng)
}

/// Weight, bias and the loss's coefficients (per element of the batch).
fn params(n: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(99);
    let w = Tensor::randn(&[C], 1.0, 0.3, DType::F64, &mut rng)?.requires_grad_(true);
    let b = Tensor::randn(&[C], 0.0, 0.3, DType::F64, &mut rng)?.requires_grad_(true);
    let coef = Tensor::randn(&[n, C, 2, 3], 0.0, 1.0, DType::F64, &mut rng)?;
    Ok((w, b, coef))
}

fn group(comm: impl Communicator + 'static) -> SyncGroup {
    let comm: Rc<dyn Communicator> = Rc::new(comm);
    SyncGroup::new(comm)
}

/// Largest |a − b| over the largest |b|.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    diff / scale.max(1e-300)
}

/// Runs `f(comm)` on `world` in-process ranks; their results in rank order.
fn on_ranks<T: Send>(world: usize, f: impl Fn(InProcess) -> T + Sync) -> Vec<T> {
    let group = InProcess::group(world).expect("a group");
    thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| s.spawn(move || f(comm)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no rank panics"))
            .collect()
    })
}

#[test]
fn one_rank_is_plain_batch_norm_bit_for_bit() -> Result<()> {
    let x = batch(5, 1)?.requires_grad_(true);
    let (w, b, coef) = params(5)?;
    let opts = BatchNormOptions::default();
    let stats = || -> Result<(Tensor, Tensor)> {
        let mut rng = StdRng::seed_from_u64(5);
        Ok((
            Tensor::randn(&[C], 0.0, 1.0, DType::F64, &mut rng)?,
            Tensor::rand(&[C], 0.5, 2.0, DType::F64, &mut rng)?,
        ))
    };
    let (rm, rv) = stats()?;
    let y = x.batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), opts)?;
    let g = y.mul(&coef)?.sum_all()?.backward()?;
    let (srm, srv) = stats()?;
    let g1 = group(SingleProcess::new());
    let sy = x.sync_batch_norm(Some(&srm), Some(&srv), Some(&w), Some(&b), opts, &g1)?;
    let sg = sy.mul(&coef)?.sum_all()?.backward()?;
    assert_eq!(sy.to_vec::<f64>()?, y.to_vec::<f64>()?);
    assert_eq!(srm.to_vec::<f64>()?, rm.to_vec::<f64>()?);
    assert_eq!(srv.to_vec::<f64>()?, rv.to_vec::<f64>()?);
    for t in [&x, &w, &b] {
        let (plain, synced) = (g.get(t).expect("grad"), sg.get(t).expect("grad"));
        assert_eq!(synced.to_vec::<f64>()?, plain.to_vec::<f64>()?);
    }
    // Evaluation mode is batch norm with the running statistics.
    let eval = BatchNormOptions {
        training: false,
        ..opts
    };
    let e = x.batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), eval)?;
    let se = x.sync_batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), eval, &g1)?;
    assert_eq!(se.to_vec::<f64>()?, e.to_vec::<f64>()?);
    Ok(())
}

/// One rank's view of a synchronised forward and backward of the global
/// batch `x` cut at `cut` (rank 0 the rows before, rank 1 the rest): its
/// output rows, and its gradients of the global loss
/// `L = (1/N)·Σ y·coef`, weighted by its share as the gradient reducer
/// does (this rank's loss is the mean over its own samples).
struct RankGrads {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
    running: Vec<f64>,
}

fn rank_grads(comm: Rc<dyn Communicator>, x: &Tensor, cut: usize) -> Result<RankGrads> {
    let n = x.shape()[0];
    let (start, len) = if comm.rank() == 0 {
        (0, cut)
    } else {
        (cut, n - cut)
    };
    let g = SyncGroup::new(comm);
    let (w, b, coef) = params(n)?;
    let xr = x.narrow(0, start, len)?.contiguous()?.requires_grad_(true);
    let coef = coef.narrow(0, start, len)?;
    let (rm, rv) = (
        Tensor::zeros(&[C], DType::F64)?,
        Tensor::ones(&[C], DType::F64)?,
    );
    let opts = BatchNormOptions::default();
    let y = xr.sync_batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), opts, &g)?;
    // This rank's loss: the mean over its samples (0 for an empty slice).
    let local = y
        .mul(&coef)?
        .sum_all()?
        .mul_scalar(1.0 / len.max(1) as f64)?;
    let grads = local.backward()?;
    let share = len as f64 / n as f64;
    let scaled = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(grads
            .get(t)
            .expect("a gradient")
            .to_vec::<f64>()?
            .iter()
            .map(|v| v * share)
            .collect())
    };
    let mut running = rm.to_vec::<f64>()?;
    running.extend(rv.to_vec::<f64>()?);
    Ok(RankGrads {
        y: y.to_vec::<f64>()?,
        dx: scaled(&xr)?,
        dw: scaled(&w)?,
        db: scaled(&b)?,
        running,
    })
}

/// The single-process reference: plain batch norm on the whole batch.
fn reference(x: &Tensor) -> Result<RankGrads> {
    let n = x.shape()[0];
    let (w, b, coef) = params(n)?;
    let x = x.detach().requires_grad_(true);
    let (rm, rv) = (
        Tensor::zeros(&[C], DType::F64)?,
        Tensor::ones(&[C], DType::F64)?,
    );
    let y = x.batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), Default::default())?;
    let grads = y
        .mul(&coef)?
        .sum_all()?
        .mul_scalar(1.0 / n as f64)?
        .backward()?;
    let mut running = rm.to_vec::<f64>()?;
    running.extend(rv.to_vec::<f64>()?);
    Ok(RankGrads {
        y: y.to_vec::<f64>()?,
        dx: grads.get(&x).expect("dx").to_vec::<f64>()?,
        dw: grads.get(&w).expect("dw").to_vec::<f64>()?,
        db: grads.get(&b).expect("db").to_vec::<f64>()?,
        running,
    })
}

/// Two ranks cut at `cut` against one process: outputs, input gradients
/// (concatenated), summed weight and bias gradients, running statistics.
fn check_two_ranks_against_one(n: usize, cut: usize) -> Result<()> {
    let x = batch(n, 7)?;
    let want = reference(&x)?;
    let ranks: Vec<RankGrads> = on_ranks(2, |comm| rank_grads(Rc::new(comm), &x, cut))
        .into_iter()
        .collect::<Result<_>>()?;
    let cat = |f: fn(&RankGrads) -> &Vec<f64>| -> Vec<f64> {
        ranks.iter().flat_map(|r| f(r).clone()).collect()
    };
    let sum = |f: fn(&RankGrads) -> &Vec<f64>| -> Vec<f64> {
        (0..C)
            .map(|c| ranks.iter().map(|r| f(r)[c]).sum())
            .collect()
    };
    let errs = [
        ("y", rel(&cat(|r| &r.y), &want.y)),
        ("dx", rel(&cat(|r| &r.dx), &want.dx)),
        ("dw", rel(&sum(|r| &r.dw), &want.dw)),
        ("db", rel(&sum(|r| &r.db), &want.db)),
        ("running", rel(&ranks[0].running, &want.running)),
    ];
    eprintln!("{n} rows cut at {cut}: {errs:?}");
    for (what, err) in errs {
        assert!(err <= 1e-12, "{what}, cut at {cut} of {n}: {err:e}");
    }
    assert_eq!(ranks[0].running, ranks[1].running, "running statistics");
    Ok(())
}

#[test]
fn two_ranks_are_one_process_on_the_whole_batch() -> Result<()> {
    check_two_ranks_against_one(8, 4)?;
    // Uneven slices: the backward weights the sums by each rank's share.
    check_two_ranks_against_one(7, 4)?;
    check_two_ranks_against_one(7, 1)
}

#[test]
fn a_rank_with_an_empty_slice_takes_part_without_dividing_by_zero() -> Result<()> {
    check_two_ranks_against_one(6, 6)?;
    check_two_ranks_against_one(6, 0)
}

/// Central differences of the global loss, every rank evaluating its part
/// of `L = Σ_r (n_r/N)·mean_r(y·coef)` for the same perturbation in step.
#[test]
fn finite_differences_of_the_global_loss_over_two_ranks() -> Result<()> {
    let (n, cut) = (5, 3);
    let x = batch(n, 11)?;
    let ranks: Vec<(RankGrads, Vec<f64>, Vec<f64>)> = on_ranks(2, |comm| -> Result<_> {
        let rank = comm.rank();
        let comm: Rc<dyn Communicator> = Rc::new(comm);
        let g = SyncGroup::new(comm.clone());
        let (start, len) = if rank == 0 { (0, cut) } else { (cut, n - cut) };
        let (w, b, coef) = params(n)?;
        let xr = x.narrow(0, start, len)?.contiguous()?;
        let coef = coef.narrow(0, start, len)?;
        let opts = BatchNormOptions::default();
        // L for parameters (x, w, b) of this rank, summed over the ranks.
        let global_loss = |xv: &[f64], wv: &[f64], bv: &[f64]| -> Result<f64> {
            let y = no_grad(|| {
                let xt = Tensor::from_slice(xv, xr.shape())?;
                let (wt, bt) = (Tensor::from_slice(wv, &[C])?, Tensor::from_slice(bv, &[C])?);
                xt.sync_batch_norm(None, None, Some(&wt), Some(&bt), opts, &g)
            })?;
            let mut l = [y.mul(&coef)?.sum_all()?.item::<f64>()? / n as f64];
            all_reduce_f64(&*comm, &mut l)?;
            Ok(l[0])
        };
        let (x0, w0, b0) = (xr.to_vec::<f64>()?, w.to_vec::<f64>()?, b.to_vec::<f64>()?);
        let h = 1e-6;
        let (mut numeric, mut numeric_wb) = (Vec::new(), Vec::new());
        // Every rank walks the same list: each input element of rank 0,
        // then of rank 1, then the weight and bias; only the owner of an
        // input element moves it.
        let sizes = [cut * C * 6, (n - cut) * C * 6];
        for (owner, &size) in sizes.iter().enumerate() {
            for i in 0..size {
                let mut d = [0.0; 2];
                for (k, sign) in [1.0, -1.0].into_iter().enumerate() {
                    let mut xv = x0.clone();
                    if owner == rank {
                        xv[i] += sign * h;
                    }
                    d[k] = global_loss(&xv, &w0, &b0)?;
                }
                if owner == rank {
                    numeric.push((d[0] - d[1]) / (2.0 * h));
                }
            }
        }
        for which in 0..2 {
            for c in 0..C {
                let mut d = [0.0; 2];
                for (k, sign) in [1.0, -1.0].into_iter().enumerate() {
                    let (mut wv, mut bv) = (w0.clone(), b0.clone());
                    let v = if which == 0 { &mut wv } else { &mut bv };
                    v[c] += sign * h;
                    d[k] = global_loss(&x0, &wv, &bv)?;
                }
                numeric_wb.push((d[0] - d[1]) / (2.0 * h));
            }
        }
        // The analytic gradients, over the same ranks.
        let analytic = rank_grads(comm, &x, cut)?;
        Ok((analytic, numeric, numeric_wb))
    })
    .into_iter()
    .collect::<Result<_>>()?;
    let mut analytic: Vec<f64> = ranks.iter().flat_map(|(r, ..)| r.dx.clone()).collect();
    for c in 0..C {
        analytic.push(ranks[0].0.dw[c] + ranks[1].0.dw[c]);
    }
    for c in 0..C {
        analytic.push(ranks[0].0.db[c] + ranks[1].0.db[c]);
    }
    let mut numeric: Vec<f64> = ranks.iter().flat_map(|(_, n, _)| n.clone()).collect();
    // Every rank differentiated the same global loss by the weight and bias.
    assert_eq!(ranks[0].2, ranks[1].2);
    numeric.extend(&ranks[0].2);
    let err = rel(&analytic, &numeric);
    eprintln!("finite differences over two ranks: {err:e}");
    assert!(err <= 1e-8, "analytic vs finite differences: {err:e}");
    Ok(())
}

/// `f(rank's input)` for every rank's sync forward in training mode; the
/// error messages of the ranks.
fn errors_of(inputs: &[Tensor]) -> Vec<String> {
    on_ranks(inputs.len(), |comm| {
        let x = &inputs[comm.rank()];
        let g = group(comm);
        match x.sync_batch_norm(None, None, None, None, BatchNormOptions::default(), &g) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    })
}

#[test]
fn an_empty_global_batch_or_mismatched_ranks_fail_on_every_rank() -> Result<()> {
    let empty = Tensor::zeros(&[0, C, 2, 3], DType::F64)?;
    let errors = errors_of(&[empty.clone(), empty.clone()]);
    for e in &errors {
        assert!(e.contains("global batch is empty"), "{e}");
    }
    // One value per channel over the whole job.
    let one = Tensor::ones(&[1, C], DType::F64)?;
    let errors = errors_of(&[one, Tensor::zeros(&[0, C], DType::F64)?]);
    for e in &errors {
        assert!(e.contains("more than 1 value per channel"), "{e}");
    }
    // Ranks whose layers have different channels: an error, not a hang.
    let errors = errors_of(&[batch(2, 1)?, Tensor::ones(&[2, C + 1, 2, 3], DType::F64)?]);
    for e in &errors {
        assert!(e.contains("statistics"), "{e}");
    }
    // A bad argument on one rank aborts the others.
    let bad = Tensor::ones(&[4], DType::F64)?;
    let errors = errors_of(&[batch(2, 1)?, bad]);
    assert!(errors[1].contains("rank"), "{}", errors[1]);
    assert!(errors[0].contains("aborted"), "{}", errors[0]);
    Ok(())
}
