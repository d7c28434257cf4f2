//! Launch configurations: the grid and block sizes of each kernel shape.
//!
//! Pure functions of the problem size, so they are unit-tested without a
//! GPU. Every kernel loops grid-stride over its work (64-bit indices), so a
//! grid may be clamped to the hardware limits, or to a bound that keeps
//! enough blocks per SM without launching millions of them, and still
//! covers everything. `None` means there is nothing to launch (zero work):
//! a zero-sized grid is an error for the driver.

use crate::error::{Error, Result};
use cudarc::driver::LaunchConfig;

/// The most dims a strided kernel handles (`FERRITE_MAX_DIMS` in
/// `kernels/common.cuh`), after merging the dims that are contiguous with
/// each other.
pub const MAX_DIMS: usize = 8;

/// Threads per block of the 1-D elementwise kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Most blocks an elementwise launch uses (about 500 per SM of an H100);
/// larger problems loop.
pub const ELEMENTWISE_MAX_BLOCKS: u32 = 65_536;
/// The hardware limit of `gridDim.x`.
pub const MAX_GRID_X: u32 = i32::MAX as u32;
/// The hardware limit of `gridDim.y` and `gridDim.z`.
pub const MAX_GRID_YZ: u32 = 65_535;
/// Fewest threads of a row-reduction block (one warp).
pub const ROW_MIN_THREADS: u32 = 32;
/// Most threads of a row-reduction block.
pub const ROW_MAX_THREADS: u32 = 512;
/// Output tile (rows, columns) and threads of `gemm_fwd_f32`.
pub const SGEMM_TILE: (usize, usize, u32) = (128, 128, 256);
/// Output tile (rows, columns) and threads of the tensor-core GEMMs.
pub const TENSOR_CORE_TILE: (usize, usize, u32) = (64, 64, 128);

/// `ceil(a / b)` clamped to `limit` (as a grid dimension).
fn blocks(a: usize, b: usize, limit: u32) -> u32 {
    a.div_ceil(b).min(limit as usize) as u32
}

/// One-dimensional config for `n` independent elements: 256-thread blocks,
/// at most [`ELEMENTWISE_MAX_BLOCKS`] of them.
pub fn elementwise(n: usize) -> Option<LaunchConfig> {
    (n > 0).then(|| LaunchConfig {
        grid_dim: (
            blocks(n, ELEMENTWISE_THREADS as usize, ELEMENTWISE_MAX_BLOCKS),
            1,
            1,
        ),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Config for the PLM mask kernel: one thread per Philox block of 4
/// elements.
pub fn philox_blocks(numel: usize) -> Option<LaunchConfig> {
    elementwise(numel.div_ceil(4))
}

/// Config for reducing `rows` rows of `cols` elements, one block per row:
/// the block has the smallest power of two of threads covering `cols`,
/// clamped to `[ROW_MIN_THREADS, ROW_MAX_THREADS]` (block reductions need a
/// whole number of warps). Empty rows still launch: the kernels write the
/// identity of the reduction.
pub fn rows(rows: usize, cols: usize) -> Option<LaunchConfig> {
    (rows > 0).then(|| {
        let threads = cols
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .clamp(ROW_MIN_THREADS as usize, ROW_MAX_THREADS as usize) as u32;
        LaunchConfig {
            grid_dim: (rows.min(MAX_GRID_X as usize) as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    })
}

/// Config for a tiled GEMM writing `batch` matrices of `m × n` with tiles
/// of `tile_m × tile_n` and `threads` threads per block: x over column
/// tiles, y over row tiles, z over the batch (y and z clamped to 65535; the
/// kernels loop over the rest).
pub fn tiled(
    m: usize,
    n: usize,
    batch: usize,
    (tile_m, tile_n, threads): (usize, usize, u32),
) -> Option<LaunchConfig> {
    (m > 0 && n > 0 && batch > 0).then(|| LaunchConfig {
        grid_dim: (
            blocks(n, tile_n, MAX_GRID_X),
            blocks(m, tile_m, MAX_GRID_YZ),
            batch.min(MAX_GRID_YZ as usize) as u32,
        ),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Config of `gemm_fwd_f32` for `batch` products of `m × n` outputs.
pub fn sgemm(m: usize, n: usize, batch: usize) -> Option<LaunchConfig> {
    tiled(m, n, batch, SGEMM_TILE)
}

/// Config of the tensor-core GEMMs (`gemm_fwd_bf16`, `gemm_fwd_f16`,
/// `gemm_fwd_bf16_to_f32`).
pub fn tensor_core_gemm(m: usize, n: usize, batch: usize) -> Option<LaunchConfig> {
    tiled(m, n, batch, TENSOR_CORE_TILE)
}

/// Config of `im2col_fwd_f32` (and `im2col_fwd_f32_to_bf16`) for `images` images with `channels` input
/// channels, a `kh × kw` kernel and an `oh × ow` output: one thread per
/// column-buffer element. An error when the element count overflows.
pub fn im2col(
    images: usize,
    channels: usize,
    (kh, kw): (usize, usize),
    (oh, ow): (usize, usize),
) -> Result<Option<LaunchConfig>> {
    let dims = [images, channels, kh, kw, oh, ow];
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::bad_shape(
                "im2col",
                format!("the column buffer of sizes {dims:?} has too many elements"),
            )
        })?;
    Ok(elementwise(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(c: &LaunchConfig) -> u64 {
        let (gx, gy, gz) = c.grid_dim;
        let (bx, by, bz) = c.block_dim;
        u64::from(gx) * u64::from(gy) * u64::from(gz) * u64::from(bx * by * bz)
    }

    #[test]
    fn elementwise_covers_small_sizes_with_one_thread_each() {
        assert!(elementwise(0).is_none());
        let c = elementwise(1).unwrap();
        assert_eq!((c.grid_dim, c.block_dim), ((1, 1, 1), (256, 1, 1)));
        let c = elementwise(257).unwrap();
        assert_eq!(c.grid_dim.0, 2);
        let c = elementwise(256 * 1000).unwrap();
        assert_eq!(c.grid_dim.0, 1000);
        assert!(threads(&c) >= 256_000);
    }

    #[test]
    fn huge_sizes_clamp_the_grid_and_rely_on_grid_stride_loops() {
        // 2^40 elements (more than u32 threads, more than the grid limit).
        let c = elementwise(1 << 40).unwrap();
        assert_eq!(c.grid_dim.0, ELEMENTWISE_MAX_BLOCKS);
        assert!(c.grid_dim.0 <= MAX_GRID_X);
        assert_eq!(
            elementwise(usize::MAX).unwrap().grid_dim.0,
            ELEMENTWISE_MAX_BLOCKS
        );
        let c = philox_blocks(10).unwrap();
        assert_eq!(c.grid_dim.0, 1, "3 Philox blocks fit in one CUDA block");
        assert!(philox_blocks(0).is_none());
    }

    #[test]
    fn row_blocks_are_whole_warps_sized_to_the_row() {
        assert!(rows(0, 10).is_none());
        assert_eq!(
            rows(5, 0).unwrap().block_dim.0,
            32,
            "empty rows still launch"
        );
        assert_eq!(rows(5, 1).unwrap().block_dim.0, 32);
        assert_eq!(rows(5, 33).unwrap().block_dim.0, 64);
        assert_eq!(rows(5, 100).unwrap().block_dim.0, 128);
        assert_eq!(rows(5, 1 << 20).unwrap().block_dim.0, 512);
        assert_eq!(rows(5, usize::MAX).unwrap().block_dim.0, 512);
        assert_eq!(rows(7, 3).unwrap().grid_dim, (7, 1, 1));
        assert_eq!(rows(1 << 40, 3).unwrap().grid_dim.0, MAX_GRID_X);
        for cols in [1, 31, 32, 33, 1000, 4097] {
            assert_eq!(rows(1, cols).unwrap().block_dim.0 % 32, 0);
        }
    }

    #[test]
    fn gemm_grids_tile_the_output_and_respect_the_limits() {
        // 257 × 129 with 128 × 128 tiles: 3 row tiles, 2 column tiles.
        let c = sgemm(257, 129, 1).unwrap();
        assert_eq!(c.grid_dim, (2, 3, 1));
        assert_eq!(c.block_dim, (256, 1, 1));
        let c = tensor_core_gemm(257, 129, 4).unwrap();
        assert_eq!(c.grid_dim, (3, 5, 4));
        assert_eq!(c.block_dim, (128, 1, 1));
        for (m, n, b) in [(0, 5, 1), (5, 0, 1), (5, 5, 0)] {
            assert!(sgemm(m, n, b).is_none(), "{m}x{n}x{b}");
        }
        // Beyond gridDim.y / gridDim.z: clamped, the kernel loops.
        let c = sgemm(128 * 70_000, 1, 100_000).unwrap();
        assert_eq!(c.grid_dim, (1, MAX_GRID_YZ, MAX_GRID_YZ));
    }

    #[test]
    fn im2col_counts_every_column_element() {
        let c = im2col(2, 3, (3, 3), (4, 5)).unwrap().unwrap();
        assert_eq!(c.grid_dim.0, (2 * 3 * 9 * 20usize).div_ceil(256) as u32);
        assert!(im2col(0, 3, (3, 3), (4, 5)).unwrap().is_none());
        assert!(im2col(usize::MAX, 2, (1, 1), (1, 1)).is_err(), "overflow");
    }
}
