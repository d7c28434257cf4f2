//! Models by name, as the CLI and checkpoints refer to them.

use crate::error::{Error, Result};
use crate::nn::resnet::{self, ResNet, ResNetConfig, Stem};
use rand::Rng;

/// The accepted model names: CIFAR-style ResNets of depth 6n + 2
/// (`resnet8` … `resnet110`, 16/32/64 channels, 3×3 stem), the CIFAR
/// ResNet-18 (`resnet18-cifar`) and the ImageNet ResNets.
pub const MODEL_NAMES: &[&str] = &[
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet18-cifar",
    "resnet18",
    "resnet34",
    "resnet50",
];

/// The configuration of model `name` for `in_channels` input channels and
/// `num_classes` outputs; `stem` (`"cifar"` / `"imagenet"`) overrides the
/// model's own stem (e.g. an ImageNet stem shrinks 56×56 inputs to 14×14
/// feature maps and the cost of a CIFAR ResNet by about 16×).
pub fn model_config(
    name: &str,
    stem: Option<&str>,
    in_channels: usize,
    num_classes: usize,
) -> Result<ResNetConfig> {
    let mut config = match name {
        "resnet18-cifar" => resnet::resnet18_cifar(in_channels, num_classes),
        "resnet18" => resnet::resnet18(in_channels, num_classes),
        "resnet34" => resnet::resnet34(in_channels, num_classes),
        "resnet50" => resnet::resnet50(in_channels, num_classes),
        _ => {
            let depth = name
                .strip_prefix("resnet")
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|_| MODEL_NAMES.contains(&name));
            match depth {
                Some(depth) => resnet::resnet_cifar(depth, in_channels, num_classes)?,
                None => {
                    return Err(Error::invalid(
                        "model_config",
                        format!(
                            "unknown model `{name}` (expected one of: {})",
                            MODEL_NAMES.join(", ")
                        ),
                    ))
                }
            }
        }
    };
    match stem {
        None => {}
        Some("cifar") => config.stem = Stem::Cifar,
        Some("imagenet") => config.stem = Stem::ImageNet,
        Some(other) => {
            return Err(Error::invalid(
                "model_config",
                format!("unknown stem `{other}` (expected cifar or imagenet)"),
            ))
        }
    }
    Ok(config)
}

/// Builds and initialises model `name` (see [`model_config`]).
pub fn build_model<R: Rng + ?Sized>(
    name: &str,
    stem: Option<&str>,
    in_channels: usize,
    num_classes: usize,
    rng: &mut R,
) -> Result<ResNet> {
    ResNet::new(&model_config(name, stem, in_channels, num_classes)?, rng)
}
