//! Tests of the emulated GPU itself: memory, launch checks and the strict
//! runtime, through the self-test kernels of `kernels/emulation/selftest.cu`.

use super::{Emulator, LaunchOptions, LaunchReport};
use crate::backend::cuda::driver::{pod_bytes, pod_bytes_mut, KernelArg, Pod};
use crate::error::Result;

/// The emulator.
pub(crate) fn emu() -> &'static Emulator {
    Emulator::global()
}

/// Clamped grids and the race check on, whatever the environment says.
pub(crate) fn strict() -> LaunchOptions {
    LaunchOptions {
        max_grid: 3,
        race_check: true,
    }
}

/// The bytes of a kernel argument (a params struct, a number or a device
/// pointer).
pub(crate) fn bytes_of<T: KernelArg>(v: &T) -> &[u8] {
    v.arg_bytes()
}

/// A device copy of `data`.
pub(crate) fn upload<T: Pod>(data: &[T]) -> u64 {
    let bytes = pod_bytes(data);
    let ptr = emu().alloc(bytes.len()).unwrap();
    emu().copy_htod(ptr, bytes).unwrap();
    ptr
}

/// `n` values of `T` read from device address `ptr`.
pub(crate) fn download<T: Pod>(ptr: u64, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); n];
    emu().copy_dtoh(ptr, pod_bytes_mut(&mut out)).unwrap();
    out
}

/// Launches `name` with `strict()` options; `args` are the argument bytes.
pub(crate) fn run(
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    args: &[&[u8]],
) -> Result<LaunchReport> {
    emu().launch_with(name, grid, block, 0, args, strict())
}

/// The message of a failed launch (which must fail).
fn error_of(r: Result<LaunchReport>) -> String {
    match r {
        Ok(report) => panic!("the launch succeeded: {report:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn memory_is_poisoned_copied_checked_and_freed() {
    let e = emu();
    let p = e.alloc(10).unwrap();
    assert_eq!(p % 256, 0, "cudaMalloc-like alignment");
    let mut out = [0u8; 10];
    e.copy_dtoh(p, &mut out).unwrap();
    assert_eq!(out, [0xFF; 10], "fresh memory reads as NaN bytes");
    e.copy_htod(p + 2, &[1, 2, 3]).unwrap();
    e.copy_dtod(p + 5, p + 2, 3).unwrap();
    e.memset(p, 7, 2).unwrap();
    e.copy_dtoh(p, &mut out).unwrap();
    assert_eq!(out, [7, 7, 1, 2, 3, 1, 2, 3, 0xFF, 0xFF]);
    let q = e.alloc(4).unwrap();
    e.copy_dtod(q, p + 2, 4).unwrap();
    let mut four = [0u8; 4];
    e.copy_dtoh(q, &mut four).unwrap();
    assert_eq!(four, [1, 2, 3, 1]);
    // Ranges that leave the allocation, or start outside any.
    assert!(e.copy_htod(p + 8, &[0; 3]).is_err());
    assert!(e.copy_dtoh(p + 11, &mut [0u8; 0]).is_err());
    assert!(e.copy_dtod(q, p, 5).is_err());
    assert!(e.memset(p - 1, 0, 1).is_err());
    assert!(e.copy_htod(12345, &[0]).is_err());
    e.free(p).unwrap();
    let err = e.free(p).unwrap_err().to_string();
    assert!(err.contains("not a live allocation"), "{err}");
    assert!(e.copy_dtoh(p, &mut out).is_err(), "use after free");
    e.free(q).unwrap();
    assert!(
        e.alloc(usize::MAX).is_err(),
        "an impossible size is an error"
    );
    let z = e.alloc(0).unwrap();
    e.copy_htod(z, &[]).unwrap();
    e.free(z).unwrap();
}

#[test]
fn the_binary_lists_every_family_and_the_selftests() {
    let e = emu();
    let names = e.kernel_names();
    // Every kernel NVRTC builds for a GPU is in the emulated one too.
    for family in crate::backend::cuda::compile::FAMILIES {
        for entry in family.entry_points() {
            assert!(
                names.contains(&entry),
                "kernels/{}.cu: {entry} missing",
                family.name
            );
        }
    }
    for k in [
        "add_fwd_f32",
        "sum_fwd_f32",
        "gemm_fwd_f32",
        "gemm_fwd_bf16",
        "im2col_fwd_f32",
        "max_pool2d_fwd_f32",
        "batch_norm_fwd_f32",
        "plm_histogram_fwd_f32",
        "adam_step_f32",
        "selftest_geometry",
    ] {
        assert!(e.has_kernel(k), "{k}");
        assert!(names.iter().any(|n| n == k), "{k}");
    }
    assert!(!e.has_kernel("nope_fwd_f32"));
    assert!(!e.has_kernel("add_fwd_f32\0"));
    assert!(names.len() > 150, "{} kernels", names.len());
}

#[test]
fn unknown_kernels_and_wrong_arguments_are_errors_naming_the_kernel() {
    let ptr = upload(&[0u32; 4]);
    let arg = ptr;
    let err = error_of(run("nope_fwd_f32", (1, 1, 1), (1, 1, 1), &[bytes_of(&arg)]));
    assert!(
        err.contains("nope_fwd_f32") && err.contains("no kernel"),
        "{err}"
    );
    let err = error_of(run("selftest_geometry", (1, 1, 1), (4, 1, 1), &[&[0u8; 4]]));
    assert!(
        err.contains("selftest_geometry") && err.contains("argument 0 has 4 bytes"),
        "{err}"
    );
    let err = error_of(run("selftest_geometry", (1, 1, 1), (4, 1, 1), &[]));
    assert!(
        err.contains("0 arguments given, the kernel takes 1"),
        "{err}"
    );
    let err = error_of(run(
        "selftest_geometry",
        (1, 1, 1),
        (2048, 1, 1),
        &[bytes_of(&arg)],
    ));
    assert!(err.contains("exceeds the limits"), "{err}");
    let err = error_of(run(
        "selftest_geometry",
        (0, 1, 1),
        (4, 1, 1),
        &[bytes_of(&arg)],
    ));
    assert!(err.contains("empty grid"), "{err}");
    let err = error_of(emu().launch_with(
        "selftest_geometry",
        (1, 1, 1),
        (4, 1, 1),
        64,
        &[bytes_of(&arg)],
        strict(),
    ));
    assert!(err.contains("dynamic shared memory"), "{err}");
    emu().free(ptr).unwrap();
}

#[test]
fn every_thread_of_a_clamped_3d_grid_runs_once() {
    let (block, grid) = ((4u32, 2u32, 3u32), (2u32, 3u32, 2u32));
    let threads = (block.0 * block.1 * block.2) as usize;
    let blocks = (grid.0 * grid.1 * grid.2) as usize;
    let out = upload(&vec![0u32; threads * blocks]);
    let report = run("selftest_geometry", grid, block, &[bytes_of(&out)]).unwrap();
    assert_eq!(report.grid, grid);
    assert!(!report.synchronised && !report.race_checked);
    let got: Vec<u32> = download(out, threads * blocks);
    let want: Vec<u32> = (0..blocks)
        .flat_map(|_| (1..=threads as u32).collect::<Vec<_>>())
        .collect();
    assert_eq!(got, want);
    // A grid of 10 × 5 blocks runs as 3 × 3.
    let report = run(
        "selftest_geometry",
        (10, 5, 1),
        (4, 1, 1),
        &[bytes_of(&out)],
    )
    .unwrap();
    assert_eq!(report.grid, (3, 3, 1));
    emu().free(out).unwrap();
}

#[test]
fn a_barrier_not_reached_by_every_thread_is_an_error() {
    let out = upload(&[0i32; 64]);
    let err = error_of(run(
        "selftest_divergent_barrier",
        (1, 1, 1),
        (64, 1, 1),
        &[bytes_of(&out)],
    ));
    assert!(
        err.contains("selftest_divergent_barrier") && err.contains("divergent barrier"),
        "{err}"
    );
    assert!(err.contains("thread 16 has exited"), "{err}");
    emu().free(out).unwrap();
}

#[test]
fn warp_collectives_are_strict() {
    let out = upload(&[0i32; 64]);
    let err = error_of(run(
        "selftest_divergent_shuffle",
        (1, 1, 1),
        (64, 1, 1),
        &[bytes_of(&out)],
    ));
    assert!(err.contains("divergent warp collective"), "{err}");
    assert!(
        err.contains("__shfl_xor_sync") && err.contains("__shfl_down_sync"),
        "{err}"
    );
    let err = error_of(run(
        "selftest_partial_mask",
        (1, 1, 1),
        (32, 1, 1),
        &[bytes_of(&out)],
    ));
    assert!(err.contains("mask 0x0000ffff"), "{err}");
    // A full mask in a warp of 16 threads: lanes are missing.
    let err = error_of(run(
        "selftest_shuffles",
        (1, 1, 1),
        (16, 1, 1),
        &[bytes_of(&out)],
    ));
    assert!(err.contains("partial warp"), "{err}");
    emu().free(out).unwrap();
}

#[test]
fn trap_and_misaligned_loads_abort_the_launch_only() {
    let out = upload(&[0i32; 8]);
    let err = error_of(run(
        "selftest_trap",
        (2, 1, 1),
        (8, 1, 1),
        &[bytes_of(&out)],
    ));
    assert!(
        err.contains("selftest_trap") && err.contains("__trap() called in thread 3"),
        "{err}"
    );
    assert!(err.contains("block (0,0,0)"), "{err}");
    let halves = upload(&[0u16; 8]);
    let err = error_of(run(
        "selftest_misaligned",
        (1, 1, 1),
        (1, 1, 1),
        &[bytes_of(&halves), bytes_of(&out)],
    ));
    assert!(err.contains("misaligned 4-byte access"), "{err}");
    // The emulator still works after aborted launches.
    run("selftest_geometry", (1, 1, 1), (8, 1, 1), &[bytes_of(&out)]).unwrap();
    emu().free(out).unwrap();
    emu().free(halves).unwrap();
}

#[test]
fn writes_outside_an_allocation_hit_its_guard_zone() {
    let n = 10i64;
    let out = upload(&vec![0f32; n as usize]);
    let err = error_of(run(
        "selftest_write_past_end",
        (1, 1, 1),
        (32, 1, 1),
        &[bytes_of(&out), bytes_of(&n)],
    ));
    assert!(err.contains("selftest_write_past_end"), "{err}");
    assert!(
        err.contains("argument 0") && err.contains("byte offset 40"),
        "{err}"
    );
    // The guard is repaired: an in-bounds launch on the same buffer passes.
    let inside = n - 1;
    run(
        "selftest_write_past_end",
        (1, 1, 1),
        (32, 1, 1),
        &[bytes_of(&out), bytes_of(&inside)],
    )
    .unwrap();
    emu().free(out).unwrap();
}

#[test]
fn shuffles_and_ballots_follow_cuda_semantics() {
    let threads = 64usize;
    let out = upload(&vec![0i32; 6 * threads]);
    let report = run(
        "selftest_shuffles",
        (1, 1, 1),
        (threads as u32, 1, 1),
        &[bytes_of(&out)],
    )
    .unwrap();
    assert!(report.synchronised && report.race_checked);
    let got: Vec<i32> = download(out, 6 * threads);
    for t in 0..threads {
        let (l, warp) = ((t % 32) as i32, (t / 32 * 32) as i32);
        let v = |lane: i32| 100 + warp + lane;
        let xor4 = if (l ^ 3) < (l & !3) + 4 { l ^ 3 } else { l };
        let want = [
            v(31 - l),
            v(if l >= 1 { l - 1 } else { l }),
            v(if l + 2 < 32 { l + 2 } else { l }),
            v(l ^ 5),
            v(xor4),
            0xAAAA_AAAAu32 as i32,
        ];
        assert_eq!(&got[6 * t..6 * t + 6], &want, "thread {t}");
    }
    emu().free(out).unwrap();
}

#[test]
fn the_race_check_catches_a_missing_barrier() {
    let runs = 4usize;
    let x: Vec<f32> = (0..runs * 256).map(|i| (i % 97) as f32).collect();
    let want: Vec<f32> = x.chunks(256).map(|c| c.iter().sum()).collect();
    let xd = upload(&x);
    let out = upload(&vec![0f32; runs]);
    let n = runs as i64;
    let args = [bytes_of(&xd), bytes_of(&out), bytes_of(&n)];
    let report = run(
        "selftest_block_sum",
        (runs as u32, 1, 1),
        (256, 1, 1),
        &args,
    )
    .unwrap();
    assert!(report.synchronised && report.race_checked, "{report:?}");
    assert_eq!(download::<f32>(out, runs), want);
    let err = error_of(run(
        "selftest_block_sum_racy",
        (runs as u32, 1, 1),
        (256, 1, 1),
        &args,
    ));
    assert!(
        err.contains(
            "race between barriers in kernel selftest_block_sum_racy: results depend on thread \
             order; first difference in argument 1 at byte"
        ),
        "{err}"
    );
    // Without the check, the racy kernel passes silently.
    let lax = LaunchOptions {
        race_check: false,
        ..strict()
    };
    let report = emu()
        .launch_with(
            "selftest_block_sum_racy",
            (1, 1, 1),
            (256, 1, 1),
            0,
            &args,
            lax,
        )
        .unwrap();
    assert!(report.synchronised && !report.race_checked);
    emu().free(xd).unwrap();
    emu().free(out).unwrap();
}

#[test]
fn launches_from_several_threads_are_serialised() {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let x: Vec<f32> = (0..512).map(|i| i as f32).collect();
                let xd = upload(&x);
                let out = upload(&[0f32; 2]);
                let n = 2i64;
                for _ in 0..5 {
                    run(
                        "selftest_block_sum",
                        (2, 1, 1),
                        (256, 1, 1),
                        &[bytes_of(&xd), bytes_of(&out), bytes_of(&n)],
                    )
                    .unwrap();
                }
                let got = download::<f32>(out, 2);
                emu().free(xd).unwrap();
                emu().free(out).unwrap();
                got
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), [32640.0, 98176.0]);
    }
}

#[test]
fn the_plain_launch_uses_the_options_from_the_environment() {
    assert_eq!(emu().options(), LaunchOptions::from_env());
    let out = upload(&[0u32; 64]);
    emu()
        .launch(
            "selftest_geometry",
            (2, 1, 1),
            (32, 1, 1),
            0,
            &[bytes_of(&out)],
        )
        .unwrap();
    let got: Vec<u32> = download(out, 64);
    assert_eq!(got[..32], got[32..], "both blocks ran");
    let err = emu()
        .launch("selftest_geometry", (1, 1, 1), (32, 1, 1), 0, &[])
        .unwrap_err();
    assert!(matches!(&err, crate::error::Error::Cuda { op, .. } if op == "selftest_geometry"));
    emu().free(out).unwrap();
}
