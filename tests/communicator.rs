//! The communicators: collectives between ranks, bit-reproducible sums,
//! and failures that reach every rank instead of hanging it.

use ferrite::distributed::{Buffer, Communicator, InProcess, SingleProcess};
use ferrite::{Error, Result};
use std::thread;

/// Runs `f(comm)` on every rank of an in-process group of `world` threads
/// and returns each rank's result, in rank order (a panic as `Err`).
fn on_ranks<T: Send>(
    world: usize,
    f: impl Fn(InProcess) -> Result<T> + Sync,
) -> Vec<thread::Result<Result<T>>> {
    let group = InProcess::group(world).unwrap();
    thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| s.spawn(move || f(comm)))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    })
}

fn ok<T>(results: Vec<thread::Result<Result<T>>>) -> Vec<T> {
    results
        .into_iter()
        .map(|r| r.expect("no rank panics").expect("no rank fails"))
        .collect()
}

fn err_text<T: std::fmt::Debug>(r: &thread::Result<Result<T>>) -> String {
    match r {
        Ok(Err(e)) => e.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Values whose float sum depends on the order they are added in.
fn awkward(rank: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = ((rank * 7919 + i * 104_729) % 1000) as f32;
            (x - 500.0) * 10f32.powi((rank as i32 % 3) * 3 - 3)
        })
        .collect()
}

#[test]
fn a_group_needs_a_rank() {
    assert!(InProcess::group(0).is_err());
}

#[test]
fn all_reduce_sums_in_rank_order_with_the_same_bits_on_every_rank() {
    let world = 4;
    let n = 1000;
    let sums = ok(on_ranks(world, |comm| {
        let mut buf = Buffer::F32(awkward(comm.rank(), n));
        comm.all_reduce_sum(&mut buf)?;
        Ok(buf)
    }));
    let mut expected = awkward(0, n);
    for r in 1..world {
        for (e, v) in expected.iter_mut().zip(awkward(r, n)) {
            *e += v;
        }
    }
    for sum in &sums {
        assert_eq!(sum, &Buffer::F32(expected.clone()));
    }
    // The order matters for these values: another order gives other bits.
    let mut reversed = awkward(world - 1, n);
    for r in (0..world - 1).rev() {
        for (e, v) in reversed.iter_mut().zip(awkward(r, n)) {
            *e += v;
        }
    }
    assert_ne!(
        reversed, expected,
        "the test values do not detect the order"
    );
}

#[test]
fn f64_sums_and_means() {
    let means = ok(on_ranks(3, |comm| {
        let mut buf = Buffer::F64(vec![comm.rank() as f64, 1.0]);
        comm.all_reduce_mean(&mut buf)?;
        Ok(buf)
    }));
    for m in means {
        assert_eq!(m, Buffer::F64(vec![1.0, 1.0]));
    }
}

#[test]
fn asynchronous_all_reduces_complete_in_any_wait_order() {
    let results = ok(on_ranks(2, |comm| {
        let r = comm.rank() as f32;
        let a = comm.start_all_reduce_sum(Buffer::F32(vec![r; 3]))?;
        let b = comm.start_all_reduce_sum(Buffer::F32(vec![10.0 + r; 2]))?;
        let b = b.wait()?;
        let a = a.wait()?;
        Ok((a, b))
    }));
    for (a, b) in results {
        assert_eq!(a, Buffer::F32(vec![1.0; 3]));
        assert_eq!(b, Buffer::F32(vec![21.0; 2]));
    }
}

#[test]
fn broadcast_all_gather_and_barrier() {
    let results = ok(on_ranks(3, |comm| {
        let r = comm.rank();
        let mut buf = Buffer::F64(vec![r as f64; 2]);
        comm.broadcast(&mut buf, 2)?;
        comm.barrier()?;
        // Lengths may differ between ranks.
        let gathered = comm.all_gather(&Buffer::F32(vec![r as f32; r + 1]))?;
        Ok((buf, gathered))
    }));
    for (buf, gathered) in results {
        assert_eq!(buf, Buffer::F64(vec![2.0; 2]));
        let expected: Vec<Buffer> = (0..3).map(|r| Buffer::F32(vec![r as f32; r + 1])).collect();
        assert_eq!(gathered, expected);
    }
}

#[test]
fn ranks_that_disagree_all_get_an_error() {
    let results = on_ranks(2, |comm| {
        let mut buf = Buffer::F32(vec![0.0; 3 + comm.rank()]);
        comm.all_reduce_sum(&mut buf)
    });
    for r in &results {
        let msg = err_text(r);
        assert!(
            msg.contains("collective #0") && msg.contains("elements"),
            "{msg}"
        );
    }
    let results = on_ranks(2, |comm| {
        if comm.rank() == 0 {
            comm.barrier()
        } else {
            comm.broadcast(&mut Buffer::default(), 0)
        }
    });
    for r in &results {
        assert!(err_text(r).contains("same collectives"), "{}", err_text(r));
    }
}

#[test]
fn an_abort_ends_the_other_ranks_collectives_with_its_message() {
    let results = on_ranks(3, |comm| {
        if comm.rank() == 1 {
            comm.abort("out of data");
            return Err(Error::invalid("test", "rank 1 gave up"));
        }
        let mut buf = Buffer::F32(vec![1.0]);
        comm.all_reduce_sum(&mut buf)
    });
    for rank in [0, 2] {
        let msg = err_text(&results[rank]);
        assert!(msg.contains("rank 1 aborted: out of data"), "{msg}");
    }
}

#[test]
fn a_panicking_rank_ends_the_other_ranks_collectives() {
    let results = on_ranks(2, |comm| {
        if comm.rank() == 0 {
            panic!("a bug on rank 0");
        }
        // Waits in the first collective; rank 0 never comes.
        comm.barrier()?;
        comm.barrier()
    });
    assert!(results[0].is_err(), "rank 0 panicked");
    let msg = err_text(&results[1]);
    assert!(msg.contains("rank 0 panicked"), "{msg}");
}

#[test]
fn a_rank_that_leaves_early_ends_the_collectives_that_expect_it() {
    let results = on_ranks(2, |comm| {
        comm.barrier()?;
        if comm.rank() == 1 {
            return Ok(()); // drops its communicator: one barrier short
        }
        comm.barrier()
    });
    assert!(results[1].as_ref().unwrap().is_ok());
    let msg = err_text(&results[0]);
    assert!(msg.contains("rank 1 left the group"), "{msg}");
}

#[test]
fn a_single_process_is_the_identity() -> Result<()> {
    let comm = SingleProcess::new();
    assert_eq!((comm.rank(), comm.world_size()), (0, 1));
    let values = awkward(3, 100);
    let mut buf = Buffer::F32(values.clone());
    comm.all_reduce_sum(&mut buf)?;
    assert_eq!(buf, Buffer::F32(values.clone()));
    let handle = comm.start_all_reduce_sum(Buffer::F32(values.clone()))?;
    assert_eq!(handle.wait()?, Buffer::F32(values.clone()));
    comm.broadcast(&mut buf, 0)?;
    assert!(comm.broadcast(&mut buf, 1).is_err());
    assert_eq!(comm.all_gather(&buf)?, vec![buf.clone()]);
    comm.barrier()?;
    comm.abort("done");
    assert!(comm.barrier().unwrap_err().to_string().contains("done"));
    Ok(())
}
