//! Residual networks: torchvision's ImageNet ResNet-18/34/50, the same
//! networks with a CIFAR stem, and the CIFAR ResNet-20/32/44/56 of He et
//! al. (2016), for any number of classes and input channels.
//!
//! Parameter names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`,
//! `layer2.0.downsample.0`, `fc`), so a torchvision `state_dict` loads by
//! name. Convolutions are initialised Kaiming-normal (fan-out), batch norm
//! with weight 1 and bias 0, the classifier as `nn.Linear`.

use super::{join, BatchNorm2d, Bias, Conv2d, Linear, Module, Role, Visit};
use crate::error::{Error, Result};
use crate::ops::{Conv2dParams, PadCount, Pool2dParams};
use crate::tensor::Tensor;
use rand::Rng;

fn conv<R: Rng + ?Sized>(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    rng: &mut R,
) -> Result<Conv2d> {
    let params = Conv2dParams::default().stride(stride).padding(k / 2);
    let mut c = Conv2d::new(cin, cout, k, params, Bias::No, rng)?;
    c.kaiming_normal_(rng)?;
    Ok(c)
}

/// How a block's input reaches its output when the shapes differ.
#[derive(Module)]
pub enum Shortcut {
    /// The input itself (same shape).
    Identity,
    /// A 1×1 strided convolution and batch norm (torchvision's
    /// `downsample`, option B of the paper).
    Projection(
        #[module(rename = "downsample.0")] Conv2d,
        #[module(rename = "downsample.1")] BatchNorm2d,
    ),
    /// Subsample by `stride` and zero-pad the new channels (option A of the
    /// paper, the CIFAR ResNets' choice: no parameters).
    ZeroPad {
        /// Spatial subsampling step (keeps every `stride`-th pixel).
        stride: usize,
        /// Zero channels added, half before the input's channels and the rest after.
        extra_channels: usize,
    },
}

impl Shortcut {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Shortcut::Identity => Ok(x.clone()),
            Shortcut::Projection(c, bn) => bn.forward(&c.forward(x)?),
            Shortcut::ZeroPad {
                stride,
                extra_channels,
            } => {
                // A 1×1 average pool with stride s keeps every s-th pixel.
                let sub = x.avg_pool2d(Pool2dParams::new(1).stride(*stride), PadCount::Include)?;
                let s = sub.shape();
                let before = extra_channels / 2;
                let zeros =
                    |c: usize| Tensor::zeros_on(&[s[0], c, s[2], s[3]], x.dtype(), x.device());
                Tensor::cat(
                    &[zeros(before)?, sub.clone(), zeros(extra_channels - before)?],
                    1,
                )
            }
        }
    }
}

/// Two 3×3 convolutions with batch norm and a residual connection:
/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Module)]
pub struct BasicBlock {
    /// First 3×3 convolution, carrying the block's stride.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm2d,
    /// Second 3×3 convolution, stride 1.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm2d,
    /// Path from the block's input to the residual sum (its projection is
    /// named `downsample.0`/`.1` under the block's own prefix).
    #[module(flatten)]
    pub shortcut: Shortcut,
}

impl Module for BasicBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward_relu(&self.conv1.forward(x)?)?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?;
        h.add(&self.shortcut.forward(x)?)?.relu()
    }
}

/// 1×1 reduce, 3×3 (strided, as torchvision's v1.5), 1×1 expand ×4, with
/// batch norm after each and a residual connection.
#[derive(Module)]
pub struct Bottleneck {
    /// 1×1 convolution reducing to `planes` channels.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm2d,
    /// 3×3 convolution, carrying the block's stride.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm2d,
    /// 1×1 convolution expanding to `4 × planes` channels.
    pub conv3: Conv2d,
    /// Batch norm after `conv3`.
    pub bn3: BatchNorm2d,
    /// Path from the block's input to the residual sum (its projection is
    /// named `downsample.0`/`.1` under the block's own prefix).
    #[module(flatten)]
    pub shortcut: Shortcut,
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward_relu(&self.conv1.forward(x)?)?;
        let h = self.bn2.forward_relu(&self.conv2.forward(&h)?)?;
        let h = self.bn3.forward(&self.conv3.forward(&h)?)?;
        h.add(&self.shortcut.forward(x)?)?.relu()
    }
}

/// The kind of residual block a network is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// [`BasicBlock`]: two 3×3 convolutions (ResNet-18/34, CIFAR ResNets).
    Basic,
    /// [`Bottleneck`]: 1×1, 3×3, 1×1 convolutions (ResNet-50).
    Bottleneck,
}

impl BlockKind {
    /// Output channels per `planes`: 1 for basic blocks, 4 for bottlenecks.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Either block (its tensors are named as the block's own).
#[derive(Module)]
pub enum Block {
    /// A basic block.
    Basic(#[module(flatten)] BasicBlock),
    /// A bottleneck block.
    Bottleneck(#[module(flatten)] Bottleneck),
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Basic(b) => b.forward(x),
            Block::Bottleneck(b) => b.forward(x),
        }
    }
}

/// The first layers, before the residual stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    /// 7×7 stride-2 convolution, batch norm, ReLU, 3×3 stride-2 max-pool.
    ImageNet,
    /// 3×3 stride-1 convolution, batch norm, ReLU, no pooling (32×32 inputs).
    Cifar,
}

/// How blocks that change shape connect their input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShortcutKind {
    /// 1×1 convolution + batch norm (torchvision).
    Projection,
    /// Subsample + zero channels (the CIFAR ResNets of the paper).
    ZeroPad,
}

/// Everything that defines a residual network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Kind of residual block used in every stage.
    pub block: BlockKind,
    /// Blocks per stage.
    pub layers: Vec<usize>,
    /// `planes` of each stage (the output has `planes × expansion` channels).
    pub widths: Vec<usize>,
    /// Layers before the first stage.
    pub stem: Stem,
    /// Shortcut of blocks whose input and output shapes differ.
    pub shortcut: ShortcutKind,
    /// Channels of the input images (e.g. 3 for RGB).
    pub in_channels: usize,
    /// Number of classes, the classifier's output size.
    pub num_classes: usize,
}

/// A residual network: stem, stages of blocks, global average pool, linear classifier.
///
/// ```
/// use ferrite::nn::resnet::{resnet20, ResNet};
/// use ferrite::nn::{self, Module};
/// use ferrite::{rand::SeedableRng, DType, Tensor};
/// let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(0);
/// let net = ResNet::new(&resnet20(3, 10), &mut rng)?;
/// let n = nn::parameter_count(&net);
/// assert!((260_000..280_000).contains(&n), "{n}");
/// let logits = net.forward(&Tensor::zeros(&[2, 3, 32, 32], DType::F32)?)?;
/// assert_eq!(logits.shape(), &[2, 10]);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub struct ResNet {
    /// Stem convolution (7×7 stride 2 or 3×3 stride 1, see [`Stem`]).
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm2d,
    /// Which stem the network uses (decides the max-pool after `bn1`).
    pub stem: Stem,
    /// `layer1`, `layer2`, ...
    pub stages: Vec<Vec<Block>>,
    /// Classifier on the globally pooled features.
    pub fc: Linear,
}

impl ResNet {
    /// Builds and initialises a network from `config`.
    pub fn new<R: Rng + ?Sized>(config: &ResNetConfig, rng: &mut R) -> Result<Self> {
        if config.layers.len() != config.widths.len() || config.layers.is_empty() {
            return Err(Error::invalid(
                "ResNet::new",
                "layers and widths must be non-empty and of equal length",
            ));
        }
        if config.in_channels == 0 || config.num_classes == 0 {
            return Err(Error::invalid(
                "ResNet::new",
                "in_channels and num_classes must be positive",
            ));
        }
        let stem_width = config.widths[0];
        let conv1 = match config.stem {
            Stem::ImageNet => conv(config.in_channels, stem_width, 7, 2, rng)?,
            Stem::Cifar => conv(config.in_channels, stem_width, 3, 1, rng)?,
        };
        let bn1 = BatchNorm2d::new(stem_width)?;
        let exp = config.block.expansion();
        let mut inplanes = stem_width;
        let mut stages = Vec::new();
        for (i, (&n, &planes)) in config.layers.iter().zip(&config.widths).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let mut blocks = Vec::new();
            for b in 0..n {
                let s = if b == 0 { stride } else { 1 };
                blocks.push(make_block(config, inplanes, planes, s, rng)?);
                inplanes = planes * exp;
            }
            stages.push(blocks);
        }
        let fc = Linear::new(inplanes, config.num_classes, Bias::Yes, rng)?;
        Ok(ResNet {
            conv1,
            bn1,
            stem: config.stem,
            stages,
            fc,
        })
    }

    /// The stem and residual stages: features before pooling.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.bn1.forward_relu(&self.conv1.forward(x)?)?;
        if self.stem == Stem::ImageNet {
            h = h.max_pool2d(Pool2dParams::new(3).stride(2).padding(1))?;
        }
        for stage in &self.stages {
            for block in stage {
                h = block.forward(&h)?;
            }
        }
        Ok(h)
    }
}

fn make_block<R: Rng + ?Sized>(
    config: &ResNetConfig,
    inplanes: usize,
    planes: usize,
    stride: usize,
    rng: &mut R,
) -> Result<Block> {
    let out = planes * config.block.expansion();
    let shortcut = if stride == 1 && inplanes == out {
        Shortcut::Identity
    } else {
        match config.shortcut {
            ShortcutKind::Projection => {
                Shortcut::Projection(conv(inplanes, out, 1, stride, rng)?, BatchNorm2d::new(out)?)
            }
            ShortcutKind::ZeroPad => {
                if out < inplanes {
                    return Err(Error::invalid(
                        "ResNet::new",
                        "zero-pad shortcuts cannot reduce channels",
                    ));
                }
                Shortcut::ZeroPad {
                    stride,
                    extra_channels: out - inplanes,
                }
            }
        }
    };
    Ok(match config.block {
        BlockKind::Basic => Block::Basic(BasicBlock {
            conv1: conv(inplanes, planes, 3, stride, rng)?,
            bn1: BatchNorm2d::new(planes)?,
            conv2: conv(planes, planes, 3, 1, rng)?,
            bn2: BatchNorm2d::new(planes)?,
            shortcut,
        }),
        BlockKind::Bottleneck => Block::Bottleneck(Bottleneck {
            conv1: conv(inplanes, planes, 1, 1, rng)?,
            bn1: BatchNorm2d::new(planes)?,
            conv2: conv(planes, planes, 3, stride, rng)?,
            bn2: BatchNorm2d::new(planes)?,
            conv3: conv(planes, out, 1, 1, rng)?,
            bn3: BatchNorm2d::new(out)?,
            shortcut,
        }),
    })
}

impl Module for ResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self
            .features(x)?
            .adaptive_avg_pool2d((1, 1))?
            .flatten(1, -1)?;
        self.fc.forward(&h)
    }
}

/// By hand: the stages are named `layer1`, `layer2`, ... (from 1, without a
/// dot), which a `Vec` field's `stages.0` would not give.
impl Visit for ResNet {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Role)) {
        self.conv1.visit(&join(prefix, "conv1"), f);
        self.bn1.visit(&join(prefix, "bn1"), f);
        for (i, stage) in self.stages.iter().enumerate() {
            for (j, block) in stage.iter().enumerate() {
                block.visit(&join(prefix, &format!("layer{}.{j}", i + 1)), f);
            }
        }
        self.fc.visit(&join(prefix, "fc"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, Role)) {
        self.conv1.visit_mut(&join(prefix, "conv1"), f);
        self.bn1.visit_mut(&join(prefix, "bn1"), f);
        for (i, stage) in self.stages.iter_mut().enumerate() {
            for (j, block) in stage.iter_mut().enumerate() {
                block.visit_mut(&join(prefix, &format!("layer{}.{j}", i + 1)), f);
            }
        }
        self.fc.visit_mut(&join(prefix, "fc"), f);
    }
    fn set_training(&mut self, training: bool) {
        self.conv1.set_training(training);
        self.bn1.set_training(training);
        for block in self.stages.iter_mut().flatten() {
            block.set_training(training);
        }
        self.fc.set_training(training);
    }
    fn set_sync_group(&mut self, group: Option<&crate::distributed::SyncGroup>) {
        self.bn1.set_sync_group(group);
        for block in self.stages.iter_mut().flatten() {
            block.set_sync_group(group);
        }
    }
}

fn imagenet(
    block: BlockKind,
    layers: &[usize],
    in_channels: usize,
    num_classes: usize,
) -> ResNetConfig {
    ResNetConfig {
        block,
        layers: layers.to_vec(),
        widths: vec![64, 128, 256, 512],
        stem: Stem::ImageNet,
        shortcut: ShortcutKind::Projection,
        in_channels,
        num_classes,
    }
}

/// torchvision's ResNet-18 (ImageNet stem).
///
/// ```
/// use ferrite::nn::resnet::{resnet18, BlockKind, Stem};
/// let c = resnet18(3, 1000);
/// assert_eq!((c.block, c.layers.clone(), c.stem), (BlockKind::Basic, vec![2, 2, 2, 2], Stem::ImageNet));
/// ```
pub fn resnet18(in_channels: usize, num_classes: usize) -> ResNetConfig {
    imagenet(BlockKind::Basic, &[2, 2, 2, 2], in_channels, num_classes)
}

/// torchvision's ResNet-34 (ImageNet stem).
pub fn resnet34(in_channels: usize, num_classes: usize) -> ResNetConfig {
    imagenet(BlockKind::Basic, &[3, 4, 6, 3], in_channels, num_classes)
}

/// torchvision's ResNet-50 (ImageNet stem, bottleneck blocks).
pub fn resnet50(in_channels: usize, num_classes: usize) -> ResNetConfig {
    imagenet(
        BlockKind::Bottleneck,
        &[3, 4, 6, 3],
        in_channels,
        num_classes,
    )
}

/// ResNet-18 for 32×32 inputs: 3×3 stem, no max-pool (11.2 M parameters
/// for 10 classes).
pub fn resnet18_cifar(in_channels: usize, num_classes: usize) -> ResNetConfig {
    ResNetConfig {
        stem: Stem::Cifar,
        ..resnet18(in_channels, num_classes)
    }
}

/// The CIFAR ResNet of depth `6n + 2` (20, 32, 44, 56, 110): three stages
/// of `n` basic blocks with 16, 32, 64 channels and zero-pad shortcuts.
///
/// ```
/// use ferrite::nn::resnet::{resnet_cifar, resnet56};
/// assert_eq!(resnet_cifar(56, 3, 10)?, resnet56(3, 10));
/// assert!(resnet_cifar(21, 3, 10).is_err()); // not 6n + 2
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn resnet_cifar(depth: usize, in_channels: usize, num_classes: usize) -> Result<ResNetConfig> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return Err(Error::invalid(
            "resnet_cifar",
            format!("depth {depth} is not 6n + 2"),
        ));
    }
    let n = (depth - 2) / 6;
    Ok(ResNetConfig {
        block: BlockKind::Basic,
        layers: vec![n; 3],
        widths: vec![16, 32, 64],
        stem: Stem::Cifar,
        shortcut: ShortcutKind::ZeroPad,
        in_channels,
        num_classes,
    })
}

/// ResNet-20 for CIFAR (0.27 M parameters).
pub fn resnet20(in_channels: usize, num_classes: usize) -> ResNetConfig {
    resnet_cifar(20, in_channels, num_classes).expect("valid depth")
}

/// ResNet-32 for CIFAR (0.46 M parameters).
pub fn resnet32(in_channels: usize, num_classes: usize) -> ResNetConfig {
    resnet_cifar(32, in_channels, num_classes).expect("valid depth")
}

/// ResNet-44 for CIFAR.
pub fn resnet44(in_channels: usize, num_classes: usize) -> ResNetConfig {
    resnet_cifar(44, in_channels, num_classes).expect("valid depth")
}

/// ResNet-56 for CIFAR (0.85 M parameters).
pub fn resnet56(in_channels: usize, num_classes: usize) -> ResNetConfig {
    resnet_cifar(56, in_channels, num_classes).expect("valid depth")
}
