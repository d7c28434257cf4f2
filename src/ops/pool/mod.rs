//! 2-D pooling (NCHW) with PyTorch semantics: max pooling, average pooling
//! and adaptive average pooling, with their backward rules.
//!
//! Output size per spatial dim (PyTorch's `pooling_output_shape`, dilation 1):
//! `out = floor((in + 2·pad − kernel + (ceil_mode ? stride − 1 : 0)) / stride) + 1`,
//! then, with `ceil_mode`, `out −= 1` if the last window would start at or
//! beyond `in + pad` (every window must start inside the input or the left
//! padding). Adaptive pooling instead takes the output size and derives the
//! windows `[floor(i·in/out), ceil((i+1)·in/out))`.
//!
//! Forward kernels run on f32 and f64 natively; bf16 and f16 are widened to
//! f32 and the result rounded back. Max pooling saves the flat index (within
//! its `H×W` plane) of each window's maximum, and its backward scatters the
//! output gradient to those indices without looking at the input again.
//! Average pooling's backward spreads each output gradient evenly over its
//! window. The CPU kernels are in `cpu.rs`; on a CUDA device (f32) the
//! kernels of `kernels/pool.cu` compute the same windows in the same order,
//! so results match the CPU bit for bit (`cuda.rs`).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub mod params;

use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::ops::dispatch::{cuda_arm, float_dispatch};
use crate::tensor::{CpuStorage, Device, Tensor};
use cpu::{PlaneGeom, Span};

/// Whether average pooling divides by the whole window, padding
/// included, or by the in-bounds inputs only (PyTorch's
/// `count_include_pad=True` / `False`).
///
/// ```
/// use ferrite::ops::{PadCount, Pool2dParams};
/// use ferrite::{DType, Tensor};
/// let x = Tensor::ones(&[1, 1, 2, 2], DType::F32)?;
/// let p = Pool2dParams::new(2).padding(1);
/// // The corner window holds one input and three padding zeros.
/// let with_pad = x.avg_pool2d(p, PadCount::Include)?.to_vec::<f32>()?;
/// let without = x.avg_pool2d(p, PadCount::Exclude)?.to_vec::<f32>()?;
/// assert_eq!((with_pad[0], without[0]), (0.25, 1.0));
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PadCount {
    /// Padding zeros count in the divisor (PyTorch's default).
    #[default]
    Include,
    /// Only in-bounds inputs count.
    Exclude,
}

/// Hyper-parameters of [`Tensor::max_pool2d`] and [`Tensor::avg_pool2d`]:
/// kernel, stride and padding per (rows, columns), and `ceil_mode` as in
/// PyTorch. Build with [`Pool2dParams::new`] (stride = kernel, no padding)
/// and the builder methods; set the fields directly for non-square values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window size, (rows, columns); both must be positive.
    pub kernel: (usize, usize),
    /// Step between windows, (rows, columns); both must be positive.
    pub stride: (usize, usize),
    /// Implicit padding on each side, (rows, columns); at most half the
    /// kernel (PyTorch's rule). Max pooling pads with −∞; average pooling
    /// pads with zeros that count in the divisor only with `count_include_pad`.
    pub padding: (usize, usize),
    /// Round the output size up instead of down: an extra window is added
    /// when the input leaves a partial one, as long as it starts inside the
    /// input or the left padding.
    pub ceil_mode: bool,
}

impl Pool2dParams {
    /// A square `kernel × kernel` window with stride `kernel` (non-overlapping
    /// windows), no padding, floor mode: PyTorch's defaults.
    pub fn new(kernel: usize) -> Self {
        Pool2dParams {
            kernel: (kernel, kernel),
            stride: (kernel, kernel),
            padding: (0, 0),
            ceil_mode: false,
        }
    }
    /// The same stride in both dims.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// The same padding in both dims.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    /// Rounds the output size up (`true`) or down (`false`, the default).
    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.ceil_mode = on;
        self
    }
}

/// Output extent of one spatial dim of max/avg pooling (PyTorch's
/// `pooling_output_shape` with dilation 1), or `None` when it would be less
/// than 1. `stride` must be positive.
pub fn pool_out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let (i, k, s, p) = (input as i64, kernel as i64, stride as i64, pad as i64);
    let extra = if ceil_mode { s - 1 } else { 0 };
    // Floor division: the numerator may be negative for tiny inputs.
    let mut out = (i + 2 * p - k + extra).div_euclid(s) + 1;
    if ceil_mode && (out - 1) * s >= i + p {
        out -= 1;
    }
    (out >= 1).then_some(out as usize)
}

/// Everything a pooling call needs: the plane sizes and the window of every
/// output row and column.
#[derive(Clone, Debug)]
struct PoolPlan {
    /// Input shape `[N, C, H, W]`.
    shape: [usize; 4],
    geom: PlaneGeom,
    rows: Vec<Span>,
    cols: Vec<Span>,
    /// The window hyper-parameters of max/avg pooling; `None` for adaptive
    /// pooling, whose windows follow from the sizes alone. (The CPU kernels
    /// use the spans; the device kernels recompute the windows from these.)
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    window: Option<Pool2dParams>,
}

impl PoolPlan {
    fn out_shape(&self) -> [usize; 4] {
        [self.shape[0], self.shape[1], self.geom.oh, self.geom.ow]
    }
}

/// Checks what every pooling op requires of its input: 4-D, floating point,
/// non-empty channel and spatial dims (an empty batch is allowed, as in
/// PyTorch). Returns `[N, C, H, W]`.
fn check_input(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    x.check_float(op)?;
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::bad_shape(
            op,
            format!("expected a 4-D N×C×H×W input, got shape {:?}", x.shape()),
        ));
    };
    if c == 0 || h == 0 || w == 0 {
        return Err(Error::bad_shape(
            op,
            format!(
                "channel and spatial dims must be non-empty, got shape {:?}",
                x.shape()
            ),
        ));
    }
    Ok([n, c, h, w])
}

/// Validates `p` against the input and lays out the windows of max/avg
/// pooling.
fn plan(op: &'static str, x: &Tensor, p: &Pool2dParams) -> Result<PoolPlan> {
    let shape = check_input(op, x)?;
    let [n, c, h, w] = shape;
    let (kh, kw) = p.kernel;
    let (sh, sw) = p.stride;
    let (ph, pw) = p.padding;
    if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
        return Err(Error::invalid(
            op,
            format!("kernel and stride must be positive, got {p:?}"),
        ));
    }
    if ph > kh / 2 || pw > kw / 2 {
        return Err(Error::invalid(
            op,
            format!(
                "padding {:?} must be at most half the kernel {:?}",
                p.padding, p.kernel
            ),
        ));
    }
    let oh = pool_out_len(h, kh, sh, ph, p.ceil_mode);
    let ow = pool_out_len(w, kw, sw, pw, p.ceil_mode);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(Error::invalid(
            op,
            format!(
                "output size is too small: input {:?} with kernel {:?}, stride {:?}, padding {:?} \
                 leaves no complete window",
                x.shape(),
                p.kernel,
                p.stride,
                p.padding
            ),
        ));
    };
    Ok(PoolPlan {
        shape,
        geom: PlaneGeom {
            planes: n * c,
            h,
            w,
            oh,
            ow,
        },
        rows: cpu::pool_spans(oh, h, kh, sh, ph),
        cols: cpu::pool_spans(ow, w, kw, sw, pw),
        window: Some(*p),
    })
}

/// A contiguous, graph-free handle on `t`'s data (no copy when already
/// contiguous), for handing raw slices to the kernels.
fn contiguous_data(t: &Tensor) -> Result<Tensor> {
    t.detach().contiguous()
}

struct MaxPool2dBackward {
    input: Tensor,
    /// I64 `N×C×oh×ow`: flat index within its plane of each window's maximum.
    indices: Tensor,
    plan: PoolPlan,
}

impl GradFn for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        if let Device::Cuda(_) = self.indices.device() {
            let dx = cuda_arm!(cuda::max_pool2d_backward(g, &self.indices, &self.plan))?;
            return Ok(vec![Some(dx)]);
        }
        let dy = contiguous_data(g)?;
        let idx_storage = self.indices.cpu_storage("max_pool2d backward")?;
        let CpuStorage::I64(idx) = &*idx_storage else {
            unreachable!("max_pool2d indices are i64")
        };
        let geom = &self.plan.geom;
        let s = float_dispatch!(
            "max_pool2d backward",
            &*dy.cpu_storage("max_pool2d backward")?,
            dy.layout(),
            |v, lay| cpu::max_pool2d_backward(&v[lay.offset()..], idx, geom)
        )?;
        let dx = Tensor::from_storage(s, self.input.shape())?.to_dtype(self.input.dtype())?;
        Ok(vec![Some(dx)])
    }
}

struct AvgPool2dBackward {
    input: Tensor,
    plan: PoolPlan,
    count_include_pad: bool,
    name: &'static str,
}

impl GradFn for AvgPool2dBackward {
    fn name(&self) -> &'static str {
        self.name
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        if let Device::Cuda(_) = self.input.device() {
            let dx = cuda_arm!(cuda::avg_pool2d_backward(
                g,
                &self.plan,
                self.count_include_pad
            ))?;
            return Ok(vec![Some(dx)]);
        }
        let dy = contiguous_data(g)?;
        let PoolPlan {
            geom, rows, cols, ..
        } = &self.plan;
        let s = float_dispatch!(
            self.name,
            &*dy.cpu_storage(self.name)?,
            dy.layout(),
            |v, lay| {
                cpu::avg_pool2d_backward(
                    &v[lay.offset()..],
                    geom,
                    rows,
                    cols,
                    self.count_include_pad,
                )
            }
        )?;
        let dx = Tensor::from_storage(s, self.input.shape())?.to_dtype(self.input.dtype())?;
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// 2-D max pooling of an `N×C×H×W` input: each output is the largest
    /// input in its `kernel` window (padding counts as −∞); returns
    /// `N×C×oh×ow` with the output size of [`pool_out_len`].
    ///
    /// Ties go to the first maximum in row-major scan order and a NaN in a
    /// window wins, as in PyTorch on the CPU. The flat index of each
    /// window's maximum is saved for backward, which routes each output
    /// gradient to that input (summing where windows overlap).
    ///
    /// Errors for a non-4-D or non-float input, empty channel/spatial dims,
    /// a zero kernel or stride, padding above half the kernel, or an output
    /// smaller than 1×1.
    pub fn max_pool2d(&self, p: Pool2dParams) -> Result<Tensor> {
        let _profile = crate::profile::scope("max_pool2d");
        Ok(self.max_pool2d_impl(p, false)?.0)
    }

    /// [`max_pool2d`](Self::max_pool2d) that also returns the indices of the
    /// maxima, as PyTorch's `return_indices=True`: an I64 `N×C×oh×ow` tensor
    /// holding, for each output, the flat index `iy·W + ix` of its maximum
    /// within its `H×W` input plane. The indices carry no gradient, and they
    /// are the caller's own copy: changing them does not affect backward.
    pub fn max_pool2d_with_indices(&self, p: Pool2dParams) -> Result<(Tensor, Tensor)> {
        let _profile = crate::profile::scope("max_pool2d");
        self.max_pool2d_impl(p, true)
    }

    /// Runs the max-pooling kernel and records the backward, which keeps the
    /// indices; with `copy_indices`, the returned indices have their own
    /// storage whenever the graph holds the originals.
    fn max_pool2d_impl(&self, p: Pool2dParams, copy_indices: bool) -> Result<(Tensor, Tensor)> {
        const OP: &str = "max_pool2d";
        let plan = plan(OP, self, &p)?;
        let (out, indices) = match self.device() {
            Device::Cpu => {
                let x = contiguous_data(self)?;
                let mut indices = Vec::new();
                let s = float_dispatch!(OP, &*x.cpu_storage(OP)?, x.layout(), |v, lay| {
                    let (values, idx) = cpu::max_pool2d_forward(
                        &v[lay.offset()..],
                        &plan.geom,
                        &plan.rows,
                        &plan.cols,
                    )?;
                    indices = idx;
                    Ok::<_, Error>(values)
                })?;
                let out_shape = plan.out_shape();
                (
                    Tensor::from_storage(s, &out_shape)?,
                    Tensor::from_storage(CpuStorage::I64(indices), &out_shape)?,
                )
            }
            Device::Cuda(_) => cuda_arm!(cuda::max_pool2d(self, &plan))?,
        };
        let out = out.track(&[self], || {
            Box::new(MaxPool2dBackward {
                input: self.clone(),
                indices: indices.clone(),
                plan,
            })
        });
        let indices = if copy_indices && out.requires_grad() {
            indices.contiguous_copy()?
        } else {
            indices
        };
        Ok((out, indices))
    }

    /// 2-D average pooling of an `N×C×H×W` input: each output is the sum of
    /// its `kernel` window divided by the window's size; returns `N×C×oh×ow`
    /// with the output size of [`pool_out_len`].
    ///
    /// The divisor follows PyTorch: with [`PadCount::Include`] it is the window
    /// clamped to the padded extent `[−pad, in + pad)` (padding zeros count,
    /// positions beyond the padding that `ceil_mode` adds do not); without,
    /// only the in-bounds inputs count. Backward spreads each output
    /// gradient over its window with the same divisor.
    ///
    /// Errors as [`max_pool2d`](Self::max_pool2d).
    pub fn avg_pool2d(&self, p: Pool2dParams, pad: PadCount) -> Result<Tensor> {
        let _profile = crate::profile::scope("avg_pool2d");
        let plan = plan("avg_pool2d", self, &p)?;
        self.avg_pool_with_plan("avg_pool2d", plan, pad == PadCount::Include)
    }

    /// Adaptive 2-D average pooling of an `N×C×H×W` input to `N×C×oh×ow`
    /// for the requested `output = (oh, ow)`: output row `i` averages input
    /// rows `[floor(i·H/oh), ceil((i+1)·H/oh))`, and likewise for columns,
    /// as PyTorch does. `(1, 1)` is the global average; `oh > H` up-samples
    /// by repeating rows. Backward spreads each output gradient over its
    /// window.
    ///
    /// Errors for a non-4-D or non-float input, empty channel/spatial dims
    /// or an output size with a zero.
    pub fn adaptive_avg_pool2d(&self, output: (usize, usize)) -> Result<Tensor> {
        let _profile = crate::profile::scope("adaptive_avg_pool2d");
        const OP: &str = "adaptive_avg_pool2d";
        let shape = check_input(OP, self)?;
        let [n, c, h, w] = shape;
        let (oh, ow) = output;
        if oh == 0 || ow == 0 {
            return Err(Error::invalid(
                OP,
                format!("output size must be at least 1×1, got {output:?}"),
            ));
        }
        let plan = PoolPlan {
            shape,
            geom: PlaneGeom {
                planes: n * c,
                h,
                w,
                oh,
                ow,
            },
            rows: cpu::adaptive_spans(oh, h),
            cols: cpu::adaptive_spans(ow, w),
            window: None,
        };
        // Adaptive windows have no padding: both divisor rules agree.
        self.avg_pool_with_plan(OP, plan, false)
    }

    /// Runs the average-pooling kernel over the windows of `plan` and
    /// records the backward.
    fn avg_pool_with_plan(
        &self,
        op: &'static str,
        plan: PoolPlan,
        count_include_pad: bool,
    ) -> Result<Tensor> {
        let out = match self.device() {
            Device::Cpu => {
                let x = contiguous_data(self)?;
                let s = float_dispatch!(op, &*x.cpu_storage(op)?, x.layout(), |v, lay| {
                    cpu::avg_pool2d_forward(
                        &v[lay.offset()..],
                        &plan.geom,
                        &plan.rows,
                        &plan.cols,
                        count_include_pad,
                    )
                })?;
                Tensor::from_storage(s, &plan.out_shape())?
            }
            Device::Cuda(_) => cuda_arm!(cuda::avg_pool2d(self, &plan, count_include_pad))?,
        };
        Ok(out.track(&[self], || {
            Box::new(AvgPool2dBackward {
                input: self.clone(),
                plan,
                count_include_pad,
                name: op,
            })
        }))
    }
}
