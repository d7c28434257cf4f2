//! Constructors: from data, constant fills, ranges and seeded random draws.
//!
//! Random constructors take the generator explicitly (any `rand::Rng`, e.g.
//! `rand::rngs::StdRng::seed_from_u64(0)`), so runs are reproducible and no
//! hidden global state is involved.

use super::{checked_numel, CpuStorage, DType, Device, StorageElement, Tensor};
use crate::error::{Error, Result};
use rand::Rng;

fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    let n = checked_numel(op, shape)?;
    if len != n {
        return Err(Error::bad_shape(
            op,
            format!("{len} values cannot fill shape {shape:?} ({n} elements)"),
        ));
    }
    Ok(())
}

impl Tensor {
    /// A tensor owning `data` (row-major) with the given shape.
    ///
    /// ```
    /// use ferrite::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(t.shape(), &[2, 3]);
    /// assert_eq!(t.to_vec::<f32>()?, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    /// // The data must fill the shape exactly.
    /// assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).is_err());
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn from_vec<T: StorageElement>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        check_len("from_vec", data.len(), shape)?;
        Tensor::from_storage(T::into_storage(data), shape)
    }

    /// A tensor holding a copy of `data` (row-major) with the given shape.
    pub fn from_slice<T: StorageElement>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A 0-dimensional tensor holding `value`.
    ///
    /// ```
    /// let t = ferrite::Tensor::scalar(2.5f64);
    /// assert_eq!((t.ndim(), t.item::<f64>()?), (0, 2.5));
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn scalar<T: StorageElement>(value: T) -> Tensor {
        Tensor::from_storage(T::into_storage(vec![value]), &[])
            .expect("a 0-dimensional tensor holds exactly one element")
    }

    /// A tensor of `shape` filled with `value` converted to `dtype`.
    ///
    /// ```
    /// use ferrite::{DType, Tensor};
    /// let t = Tensor::full(&[2, 2], 7.0, DType::I64)?;
    /// assert_eq!(t.to_vec::<i64>()?, [7, 7, 7, 7]);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
        let n = checked_numel("full", shape)?;
        Tensor::from_storage(CpuStorage::full(dtype, n, value)?, shape)
    }

    /// Zeros of `shape` and `dtype`.
    ///
    /// ```
    /// use ferrite::{DType, Tensor};
    /// let t = Tensor::zeros(&[2, 3], DType::F32)?;
    /// assert_eq!((t.shape(), t.dtype()), (&[2usize, 3][..], DType::F32));
    /// assert!(t.to_vec::<f32>()?.iter().all(|&v| v == 0.0));
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(shape, 0.0, dtype)
    }

    /// Ones of `shape` and `dtype`.
    ///
    /// ```
    /// use ferrite::{DType, Tensor};
    /// let t = Tensor::ones(&[4], DType::F64)?;
    /// assert_eq!(t.sum_all()?.item::<f64>()?, 4.0);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn ones(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype)
    }

    /// A tensor of `shape` filled with `value` converted to `dtype`, created
    /// directly on `device` (no host buffer for a device tensor: zeros are
    /// a memset, float values a fill kernel).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn full_on(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::full(shape, value, dtype),
            Device::Cuda(n) => crate::ops::dispatch::cuda_arm!(
                crate::ops::elementwise::cuda::full(n, shape, value, dtype)
            ),
        }
    }

    /// Zeros of `shape` and `dtype` on `device`.
    pub fn zeros_on(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full_on(shape, 0.0, dtype, device)
    }

    /// Zeros with this tensor's shape, dtype and device.
    ///
    /// ```
    /// use ferrite::Tensor;
    /// let x = Tensor::from_vec(vec![1.5f32, -2.0], &[2])?;
    /// assert_eq!(x.zeros_like()?.to_vec::<f32>()?, [0.0, 0.0]);
    /// assert_eq!(x.ones_like()?.to_vec::<f32>()?, [1.0, 1.0]);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros_on(self.shape(), self.dtype(), self.device())
    }

    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        self.full_like(1.0)
    }

    /// `value` with this tensor's shape, dtype and device.
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full_on(self.shape(), value, self.dtype(), self.device())
    }

    /// `start, start + step, ...` up to (excluding) `end`, as a 1-D tensor.
    ///
    /// ```
    /// use ferrite::{DType, Tensor};
    /// let t = Tensor::arange(0.0, 1.0, 0.25, DType::F32)?;
    /// assert_eq!(t.to_vec::<f32>()?, [0.0, 0.25, 0.5, 0.75]);
    /// assert_eq!(Tensor::arange(5.0, 0.0, -2.0, DType::I64)?.to_vec::<i64>()?, [5, 3, 1]);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid(
                "arange",
                format!("invalid range {start}..{end} step {step}"),
            ));
        }
        let count = ((end - start) / step).ceil().max(0.0);
        if count > (isize::MAX as usize / 8) as f64 {
            return Err(Error::invalid(
                "arange",
                format!("{start}..{end} step {step} has too many elements"),
            ));
        }
        let n = count as usize;
        let s = CpuStorage::from_f64_iter(dtype, (0..n).map(|i| start + i as f64 * step))?;
        Tensor::from_storage(s, &[n])
    }

    /// The `n × n` identity matrix.
    ///
    /// ```
    /// use ferrite::{DType, Tensor};
    /// let i = Tensor::eye(2, DType::F32)?;
    /// assert_eq!(i.to_vec::<f32>()?, [1.0, 0.0, 0.0, 1.0]);
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(a.matmul(&i)?.to_vec::<f32>()?, a.to_vec::<f32>()?);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn eye(n: usize, dtype: DType) -> Result<Tensor> {
        let total = checked_numel("eye", &[n, n])?;
        let s = CpuStorage::from_f64_iter(
            dtype,
            (0..total).map(|i| if i / n == i % n { 1.0 } else { 0.0 }),
        )?;
        Tensor::from_storage(s, &[n, n])
    }

    /// Uniform samples in `[low, high)` drawn from `rng`.
    ///
    /// ```
    /// use ferrite::rand::{rngs::StdRng, SeedableRng};
    /// use ferrite::{DType, Tensor};
    /// let t = Tensor::rand(&[1000], -1.0, 1.0, DType::F32, &mut StdRng::seed_from_u64(0))?;
    /// assert!(t.to_vec::<f32>()?.iter().all(|v| (-1.0..1.0).contains(v)));
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn rand<R: Rng + ?Sized>(
        shape: &[usize],
        low: f64,
        high: f64,
        dtype: DType,
        rng: &mut R,
    ) -> Result<Tensor> {
        check_float_dtype("rand", dtype)?;
        if low.is_nan() || high.is_nan() || low >= high {
            return Err(Error::invalid(
                "rand",
                format!("empty range [{low}, {high})"),
            ));
        }
        let n = checked_numel("rand", shape)?;
        let s = CpuStorage::from_f64_iter(
            dtype,
            (0..n).map(|_| low + (high - low) * rng.random::<f64>()),
        )?;
        Tensor::from_storage(s, shape)
    }

    /// Normal samples with the given mean and standard deviation, drawn from
    /// `rng` with the Box–Muller transform. `mean` must be finite and `std`
    /// finite and `>= 0` (0 gives a constant tensor).
    ///
    /// ```
    /// use ferrite::rand::{rngs::StdRng, SeedableRng};
    /// use ferrite::{DType, Tensor};
    /// let t = Tensor::randn(&[10_000], 3.0, 0.5, DType::F64, &mut StdRng::seed_from_u64(0))?;
    /// let mean = t.mean_all()?.item::<f64>()?;
    /// assert!((mean - 3.0).abs() < 0.05, "{mean}");
    /// // The same seed draws the same numbers.
    /// let again = Tensor::randn(&[10_000], 3.0, 0.5, DType::F64, &mut StdRng::seed_from_u64(0))?;
    /// assert_eq!(t.to_vec::<f64>()?, again.to_vec::<f64>()?);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn randn<R: Rng + ?Sized>(
        shape: &[usize],
        mean: f64,
        std: f64,
        dtype: DType,
        rng: &mut R,
    ) -> Result<Tensor> {
        check_float_dtype("randn", dtype)?;
        if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
            return Err(Error::invalid(
                "randn",
                format!("need a finite mean and a finite std >= 0, got mean {mean}, std {std}"),
            ));
        }
        let n = checked_numel("randn", shape)?;
        let mut values = crate::backend::cpu::pool::try_with_capacity(n + 1)?;
        while values.len() < n {
            // 1 - u lies in (0, 1], so its log is finite.
            let u1 = 1.0 - rng.random::<f64>();
            let u2 = rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let theta = 2.0 * std::f64::consts::PI * u2;
            values.push(mean + std * r * theta.cos());
            values.push(mean + std * r * theta.sin());
        }
        values.truncate(n);
        Tensor::from_storage(CpuStorage::from_f64_iter(dtype, values.into_iter())?, shape)
    }

    /// Samples 0/1 with probability given by each element of `self` (a float
    /// tensor of probabilities in [0, 1]); same shape and dtype as `self`.
    pub fn bernoulli<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Tensor> {
        self.check_float("bernoulli")?;
        let p = self.to_f64_vec()?;
        if let Some(bad) = p.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return Err(Error::invalid(
                "bernoulli",
                format!("probability {bad} outside [0, 1]"),
            ));
        }
        let s = CpuStorage::from_f64_iter(
            self.dtype(),
            p.iter()
                .map(|&p| if rng.random::<f64>() < p { 1.0 } else { 0.0 }),
        )?;
        Tensor::from_storage(s, self.shape())
    }
}

fn check_float_dtype(op: &'static str, dtype: DType) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::UnsupportedDType { op, dtype });
    }
    Ok(())
}
