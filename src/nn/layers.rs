//! The standard layers.

use super::{init, Module};
use crate::data::shard::BatchPosition;
use crate::distributed::SyncGroup;
use crate::error::{Error, Result};
use crate::ops::{BatchNormOptions, Conv2dParams, PadCount, Pool2dParams};
use crate::tensor::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use std::sync::Mutex;

/// Whether a [`Linear`] or [`Conv2d`] layer learns a bias (PyTorch's
/// `bias=True` / `bias=False`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bias {
    /// A learned bias per output (PyTorch's default).
    #[default]
    Yes,
    /// No bias (e.g. a convolution followed by batch normalisation).
    No,
}

/// `y = x·Wᵀ + b` with `W` of shape (out, in).
///
/// ```
/// use ferrite::nn::{Bias, Linear, Module};
/// use ferrite::{rand::SeedableRng, DType, Tensor};
/// let fc = Linear::new(3, 2, Bias::Yes, &mut ferrite::rand::rngs::StdRng::seed_from_u64(0))?;
/// let y = fc.forward(&Tensor::ones(&[4, 3], DType::F32)?)?;
/// assert_eq!(y.shape(), &[4, 2]);
/// assert_eq!(ferrite::nn::parameter_count(&fc), 3 * 2 + 2);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct Linear {
    /// Weight `W`, shape (out_features, in_features).
    pub weight: Tensor,
    /// Bias `b`, shape (out_features); `None` for a layer without bias.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with PyTorch's default initialisation.
    pub fn new<R: Rng + ?Sized>(
        in_features: usize,
        out_features: usize,
        bias: Bias,
        rng: &mut R,
    ) -> Result<Self> {
        let weight = init::default_uniform(&[out_features, in_features], in_features, rng)?
            .requires_grad_(true);
        let bias = if bias == Bias::Yes {
            Some(init::default_uniform(&[out_features], in_features, rng)?.requires_grad_(true))
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// 2-D convolution layer (see [`Tensor::conv2d`]).
///
/// ```
/// use ferrite::nn::{Bias, Conv2d, Module};
/// use ferrite::ops::Conv2dParams;
/// use ferrite::{rand::SeedableRng, DType, Tensor};
/// let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(0);
/// // 3 → 8 channels, 3×3 kernels, padding 1 keeps 32×32.
/// let conv = Conv2d::new(3, 8, 3, Conv2dParams::default().padding(1), Bias::No, &mut rng)?;
/// let y = conv.forward(&Tensor::ones(&[2, 3, 32, 32], DType::F32)?)?;
/// assert_eq!(y.shape(), &[2, 8, 32, 32]);
/// assert!(conv.bias.is_none());
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct Conv2d {
    /// Kernels, shape (out_channels, in_channels / groups, kernel, kernel).
    pub weight: Tensor,
    /// Bias per output channel, shape (out_channels); `None` without bias.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation and groups.
    #[module(skip)]
    pub params: Conv2dParams,
}

impl Conv2d {
    /// A `kernel × kernel` convolution with PyTorch's default initialisation;
    /// channel counts and `kernel` must be positive.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        params: Conv2dParams,
        bias: Bias,
        rng: &mut R,
    ) -> Result<Self> {
        if in_channels == 0 || out_channels == 0 || kernel == 0 {
            return Err(Error::invalid(
                "Conv2d::new",
                format!(
                    "in_channels ({in_channels}), out_channels ({out_channels}) and kernel ({kernel}) must be positive"
                ),
            ));
        }
        if params.groups == 0
            || !in_channels.is_multiple_of(params.groups)
            || !out_channels.is_multiple_of(params.groups)
        {
            return Err(Error::invalid(
                "Conv2d::new",
                format!(
                    "{in_channels} → {out_channels} channels do not split into {} groups",
                    params.groups
                ),
            ));
        }
        let fan_in = in_channels / params.groups * kernel * kernel;
        let shape = [out_channels, in_channels / params.groups, kernel, kernel];
        let weight = init::default_uniform(&shape, fan_in, rng)?.requires_grad_(true);
        let bias = if bias == Bias::Yes {
            Some(init::default_uniform(&[out_channels], fan_in, rng)?.requires_grad_(true))
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            params,
        })
    }

    /// Re-draws the weight Kaiming-normal (fan-out, ReLU), as torchvision's ResNets do.
    pub fn kaiming_normal_<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Result<()> {
        let s = self.weight.shape();
        let fan_out = s[0] * s[2] * s[3];
        self.weight = init::kaiming_normal_fan_out(s, fan_out, rng)?.requires_grad_(true);
        Ok(())
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.params)
    }
}

/// Batch normalisation over the channels of N×C×H×W inputs, with learned
/// scale and shift and running statistics (buffers) for evaluation.
///
/// ```
/// use ferrite::nn::{BatchNorm2d, Module, Visit};
/// use ferrite::{rand::SeedableRng, DType, Tensor};
/// let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(0);
/// let mut bn = BatchNorm2d::new(4)?;
/// let x = Tensor::randn(&[8, 4, 5, 5], 3.0, 2.0, DType::F32, &mut rng)?;
/// // Training: normalised with the batch's statistics (mean 0 per channel).
/// let y = bn.forward(&x)?;
/// assert!(y.mean_all()?.item::<f32>()?.abs() < 1e-4);
/// // The running mean moved a tenth of the way to the batch mean (about 3).
/// let running = bn.running_mean.to_vec::<f32>()?;
/// assert!(running.iter().all(|&m| (0.2..0.4).contains(&m)), "{running:?}");
/// bn.set_training(false); // evaluation: the running statistics
/// assert_eq!(bn.forward(&x)?.shape(), x.shape());
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct BatchNorm2d {
    /// Learned scale γ per channel, shape (C).
    pub weight: Tensor,
    /// Learned shift β per channel, shape (C).
    pub bias: Tensor,
    /// Running mean per channel (buffer), used in evaluation mode.
    #[module(buffer)]
    pub running_mean: Tensor,
    /// Running variance per channel (buffer), used in evaluation mode.
    #[module(buffer)]
    pub running_var: Tensor,
    /// Training steps seen (i64 scalar), as PyTorch keeps it.
    #[module(buffer)]
    pub num_batches_tracked: Tensor,
    /// Weight of each new batch statistic in the running averages, in [0, 1].
    pub momentum: f64,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Training mode: normalise with batch statistics and update the running ones.
    pub training: bool,
    /// Synchronised statistics: in training mode, normalise with the
    /// statistics of the global batch of the data-parallel job this group
    /// connects (see [`Tensor::sync_batch_norm`]) instead of this rank's
    /// slice; `None` (the default) for per-rank statistics. Set it on every
    /// layer of a model with [`convert_sync_batch_norm`](super::convert_sync_batch_norm).
    #[module(sync_group)]
    pub sync: Option<SyncGroup>,
}

impl BatchNorm2d {
    /// Weight 1, bias 0, running mean 0, running variance 1; momentum 0.1,
    /// eps 1e-5; training mode. `channels` must be positive.
    pub fn new(channels: usize) -> Result<Self> {
        if channels == 0 {
            return Err(Error::invalid(
                "BatchNorm2d::new",
                "channels must be positive, got 0",
            ));
        }
        Ok(BatchNorm2d {
            weight: Tensor::ones(&[channels], DType::F32)?.requires_grad_(true),
            bias: Tensor::zeros(&[channels], DType::F32)?.requires_grad_(true),
            running_mean: Tensor::zeros(&[channels], DType::F32)?,
            running_var: Tensor::ones(&[channels], DType::F32)?,
            num_batches_tracked: Tensor::scalar(0i64),
            momentum: 0.1,
            eps: 1e-5,
            training: true,
            sync: None,
        })
    }
}

impl BatchNorm2d {
    /// `relu(self.forward(x))`, with the relu fused into the normalisation
    /// on the CPU ([`Tensor::batch_norm_relu`]): the same values and
    /// gradients in one pass fewer. Synchronised layers run the two ops.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, true)
    }

    fn forward_then(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let opts = BatchNormOptions {
            training: self.training,
            momentum: self.momentum,
            eps: self.eps,
        };
        let (rm, rv) = (Some(&self.running_mean), Some(&self.running_var));
        let (w, b) = (Some(&self.weight), Some(&self.bias));
        let y = match (&self.sync, relu) {
            (Some(group), _) => {
                let y = x.sync_batch_norm(rm, rv, w, b, opts, group)?;
                if relu {
                    y.relu()?
                } else {
                    y
                }
            }
            (None, true) => x.batch_norm_relu(rm, rv, w, b, opts)?,
            (None, false) => x.batch_norm(rm, rv, w, b, opts)?,
        };
        if self.training {
            self.num_batches_tracked.add_int_(1)?;
        }
        Ok(y)
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, false)
    }
}

/// `max(x, 0)`.
///
/// ```
/// use ferrite::nn::{Module, ReLU};
/// let x = ferrite::Tensor::from_vec(vec![-1.0f32, 0.5], &[2])?;
/// assert_eq!(ReLU.forward(&x)?.to_vec::<f32>()?, [0.0, 0.5]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct ReLU;

impl Module for ReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.relu()
    }
}

/// Max pooling (see [`Tensor::max_pool2d`]).
///
/// ```
/// use ferrite::nn::{MaxPool2d, Module};
/// use ferrite::ops::Pool2dParams;
/// use ferrite::{DType, Tensor};
/// let x = Tensor::arange(0.0, 16.0, 1.0, DType::F32)?.reshape(&[1, 1, 4, 4])?;
/// let y = MaxPool2d(Pool2dParams::new(2)).forward(&x)?; // 2×2 windows, stride 2
/// assert_eq!(y.to_vec::<f32>()?, [5.0, 7.0, 13.0, 15.0]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct MaxPool2d(#[module(skip)] pub Pool2dParams);

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.max_pool2d(self.0)
    }
}

/// Average pooling (see [`Tensor::avg_pool2d`]).
///
/// ```
/// use ferrite::nn::{AvgPool2d, Module};
/// use ferrite::ops::{PadCount, Pool2dParams};
/// use ferrite::{DType, Tensor};
/// let x = Tensor::arange(0.0, 16.0, 1.0, DType::F32)?.reshape(&[1, 1, 4, 4])?;
/// let pool = AvgPool2d { params: Pool2dParams::new(2), count_include_pad: PadCount::Include };
/// assert_eq!(pool.forward(&x)?.to_vec::<f32>()?, [2.5, 4.5, 10.5, 12.5]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct AvgPool2d {
    /// Window size, stride, padding and ceil mode.
    #[module(skip)]
    pub params: Pool2dParams,
    /// Whether padding counts in the divisor (see [`PadCount`]).
    #[module(skip)]
    pub count_include_pad: PadCount,
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool2d(self.params, self.count_include_pad)
    }
}

/// Adaptive average pooling to a fixed output size.
///
/// ```
/// use ferrite::nn::{AdaptiveAvgPool2d, Module};
/// use ferrite::{DType, Tensor};
/// let x = Tensor::ones(&[2, 16, 7, 7], DType::F32)?;
/// // The global average pool of a ResNet head.
/// assert_eq!(AdaptiveAvgPool2d((1, 1)).forward(&x)?.shape(), &[2, 16, 1, 1]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct AdaptiveAvgPool2d(#[module(skip)] pub (usize, usize));

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.adaptive_avg_pool2d(self.0)
    }
}

/// Flattens every dimension after the first.
///
/// ```
/// use ferrite::nn::{Flatten, Module};
/// let x = ferrite::Tensor::ones(&[2, 3, 4, 5], ferrite::DType::F32)?;
/// assert_eq!(Flatten.forward(&x)?.shape(), &[2, 60]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.flatten(1, -1)
    }
}

/// Dropout with its own seeded generator, active in training mode only.
///
/// Called directly, each forward pass takes the next numbers of the
/// generator. Inside a [`Trainer`](crate::train::Trainer)'s training step
/// the numbers come from a place fixed by the step and the rows' global
/// offset ([`crate::data::shard::with_batch_position`]): a data-parallel
/// rank draws for its slice exactly what one process draws for those rows
/// of the global batch (with the same seed on every rank), and a resumed
/// run draws what an uninterrupted one would (tested in
/// `tests/distributed_dropout.rs`).
///
/// ```
/// use ferrite::nn::{Dropout, Module, Visit};
/// use ferrite::{DType, Tensor};
/// let mut drop = Dropout::new(0.5, 7)?;
/// let x = Tensor::ones(&[100], DType::F32)?;
/// let y = drop.forward(&x)?.to_vec::<f32>()?;
/// assert!(y.contains(&0.0) && y.contains(&2.0)); // dropped, or scaled by 1/(1 − p)
/// drop.set_training(false);
/// assert_eq!(drop.forward(&x)?.to_vec::<f32>()?, vec![1.0; 100]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Module)]
pub struct Dropout {
    /// Probability of zeroing each element, in [0, 1].
    pub p: f64,
    /// Training mode; in evaluation mode the input passes unchanged.
    pub training: bool,
    #[module(skip)]
    rng: Mutex<DropoutRng>,
}

impl Dropout {
    /// Drops each element with probability `p`; masks come from a generator
    /// seeded with `seed`, so runs repeat exactly.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "Dropout::new",
                format!("probability {p} outside [0, 1]"),
            ));
        }
        Ok(Dropout {
            p,
            training: true,
            rng: Mutex::new(DropoutRng {
                rng: ChaCha12Rng::seed_from_u64(seed),
                step_calls: None,
            }),
        })
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mode = crate::ops::Mode::from_training(self.training);
        let mut state = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let draws = self.training && self.p > 0.0 && self.p < 1.0;
        match crate::data::shard::current_batch_position() {
            Some(position) if draws => {
                let word = state.place(position, x)?;
                state.rng.set_word_pos(word);
                x.dropout(self.p, mode, &mut state.rng)
            }
            _ => x.dropout(self.p, mode, &mut state.rng),
        }
    }
}

/// Dropout's generator and where a trainer's forward passes take their
/// numbers from it.
struct DropoutRng {
    rng: ChaCha12Rng,
    /// The step of the last positioned call and how many calls it has had
    /// (a layer applied twice in one step draws fresh numbers the second
    /// time).
    step_calls: Option<(u64, u64)>,
}

impl DropoutRng {
    /// log2 of the 32-bit words of the stream reserved per training step.
    const STEP_BITS: u32 = 40;
    /// log2 of the words reserved per call within a step (at most 16 calls,
    /// each at most 2^35 elements: two words per element).
    const CALL_BITS: u32 = 36;

    /// The stream position of the first number of `x`'s rows in a
    /// trainer's forward pass: the step's block, this call's part of it,
    /// and the rows' global offset (one f64, two words, per element), so
    /// ranks and resumed runs draw what one uninterrupted process draws.
    fn place(&mut self, position: BatchPosition, x: &Tensor) -> Result<u128> {
        let BatchPosition { step, slice } = position;
        let call = match self.step_calls {
            Some((s, calls)) if s == step => calls,
            _ => 0,
        };
        self.step_calls = Some((step, call + 1));
        let rows = x.shape().first().copied().unwrap_or(1);
        // Rows of the global batch when dim 0 is this slice's rows;
        // otherwise the whole tensor counts as one row of one batch.
        let (offset, row_len, global) = if slice.len > 0 && rows == slice.len {
            (slice.offset, x.numel() / rows, slice.global_len)
        } else {
            (0, x.numel(), 1)
        };
        let words = 2 * row_len as u128 * global as u128;
        if step >> (68 - Self::STEP_BITS) != 0
            || call >= 1 << (Self::STEP_BITS - Self::CALL_BITS)
            || words > 1 << Self::CALL_BITS
        {
            return Err(Error::invalid(
                "Dropout",
                format!(
                    "step {step}, call {call} of the step with {words} random words: beyond the \
                     generator's layout (2^28 steps, 16 calls per step, 2^35 elements per call)"
                ),
            ));
        }
        Ok(((step as u128) << Self::STEP_BITS)
            + ((call as u128) << Self::CALL_BITS)
            + 2 * row_len as u128 * offset as u128)
    }
}

/// Modules applied in order; children are named `0`, `1`, ... as in PyTorch.
///
/// ```
/// use ferrite::nn::{self, Bias, Flatten, Linear, Module, ReLU, Sequential};
/// use ferrite::{rand::SeedableRng, DType, Tensor};
/// let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(0);
/// let mlp = Sequential::new()
///     .with(Flatten)
///     .with(Linear::new(4, 8, Bias::Yes, &mut rng)?)
///     .with(ReLU)
///     .with(Linear::new(8, 2, Bias::Yes, &mut rng)?);
/// assert_eq!(mlp.forward(&Tensor::ones(&[5, 2, 2], DType::F32)?)?.shape(), &[5, 2]);
/// // Children are named 0, 1, ... as in PyTorch.
/// let names: Vec<String> = nn::named_parameters(&mlp).into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["1.weight", "1.bias", "3.weight", "3.bias"]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Default, Module)]
pub struct Sequential {
    /// The layers, in the order they are applied.
    #[module(flatten)]
    pub layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a layer (builder style).
    pub fn with(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}
