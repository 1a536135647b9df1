//! The architecture registry (`ARCHITECTURES.md`): every name maps to an [`ArchSpec`] in
//! [`arch_spec`], and [`build_network`] is the one constructor from a name. Unknown names
//! error with the list of valid ones.

use crate::network::Network;
use dfdx::prelude::*;
use std::fmt;

/// The family of an architecture (which blocks and names it uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchFamily {
    /// Post-activation ResNet (`resnet.rs`).
    #[default]
    ResNet,
    /// Pre-activation ResNet (`preact.rs`).
    PreAct,
    /// Wide ResNet (`wrn.rs`).
    Wide,
    /// VGG (`vgg.rs`).
    Vgg,
}

/// The layout of an architecture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchSpec {
    pub name: &'static str,
    pub family: ArchFamily,
    /// Stem width (0: no stem, VGG).
    pub stem: usize,
    /// Width of every stage.
    pub widths: Vec<usize>,
    /// Blocks per stage (VGG: conv units per block).
    pub depths: Vec<usize>,
}

impl ArchSpec {
    /// The PyTorch module name of stage `l` (0-based): `layer{l+1}` (ResNets), `block{l+1}`
    /// (WRN), `block{l}` (VGG).
    pub fn stage_name(&self, l: usize) -> String {
        match self.family {
            ArchFamily::ResNet | ArchFamily::PreAct => format!("layer{}", l + 1),
            ArchFamily::Wide => format!("block{}", l + 1),
            ArchFamily::Vgg => format!("block{l}"),
        }
    }

    /// The classifier's module name: `fc`, or `classifier` for VGG.
    pub fn fc_name(&self) -> &'static str {
        match self.family {
            ArchFamily::Vgg => "classifier",
            _ => "fc",
        }
    }
}

/// Every registered architecture name.
pub const ARCH_NAMES: [&str; 12] = [
    "resnet18",
    "resnet18-preact",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn-16-2",
    "wrn-40-2",
    "vgg8",
    "vgg13",
];

/// The layout of `name`.
pub fn arch_spec(name: &str) -> Result<ArchSpec, ModelError> {
    let (family, stem, widths, depths): (ArchFamily, usize, &[usize], &[usize]) = match name {
        "resnet18" => (ArchFamily::ResNet, 64, &[64, 128, 256, 512], &[2, 2, 2, 2]),
        "resnet18-preact" => (ArchFamily::PreAct, 64, &[64, 128, 256, 512], &[2, 2, 2, 2]),
        "resnet20" => (ArchFamily::ResNet, 16, &[16, 32, 64], &[3, 3, 3]),
        "resnet32" => (ArchFamily::ResNet, 16, &[16, 32, 64], &[5, 5, 5]),
        "resnet56" => (ArchFamily::ResNet, 16, &[16, 32, 64], &[9, 9, 9]),
        "resnet110" => (ArchFamily::ResNet, 16, &[16, 32, 64], &[18, 18, 18]),
        "resnet8x4" => (ArchFamily::ResNet, 32, &[64, 128, 256], &[1, 1, 1]),
        "resnet32x4" => (ArchFamily::ResNet, 32, &[64, 128, 256], &[5, 5, 5]),
        // WRN-d-k: (d − 4)/6 blocks per stage, widths 16k/32k/64k.
        "wrn-16-2" => (ArchFamily::Wide, 16, &[32, 64, 128], &[2, 2, 2]),
        "wrn-40-2" => (ArchFamily::Wide, 16, &[32, 64, 128], &[6, 6, 6]),
        "vgg8" => (
            ArchFamily::Vgg,
            0,
            &[64, 128, 256, 512, 512],
            &[1, 1, 1, 1, 1],
        ),
        "vgg13" => (
            ArchFamily::Vgg,
            0,
            &[64, 128, 256, 512, 512],
            &[2, 2, 2, 2, 2],
        ),
        _ => return Err(ModelError::UnknownArch(name.to_string())),
    };
    let name = ARCH_NAMES
        .iter()
        .copied()
        .find(|n| *n == name)
        .expect("registered");
    Ok(ArchSpec {
        name,
        family,
        stem,
        widths: widths.to_vec(),
        depths: depths.to_vec(),
    })
}

/// What to build around an architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Number of classes `K`.
    pub classes: usize,
    /// Input channels (1 or 3).
    pub in_channels: usize,
    /// Heads: 1 for the plain network, `N` for `N` branches over a shared trunk.
    pub branches: usize,
}

impl Default for NetConfig {
    /// 100 classes, 3 channels, one head (the setting of `ARCHITECTURES.md`'s counts).
    fn default() -> Self {
        Self {
            classes: 100,
            in_channels: 3,
            branches: 1,
        }
    }
}

impl NetConfig {
    pub fn new(classes: usize, in_channels: usize) -> Self {
        Self {
            classes,
            in_channels,
            branches: 1,
        }
    }
    pub fn branches(self, branches: usize) -> Self {
        Self { branches, ..self }
    }
}

/// Why a model could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// The architecture name is not registered.
    UnknownArch(String),
    /// A configuration value is out of range.
    Invalid(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownArch(n) => write!(
                f,
                "unknown architecture `{n}`; valid architectures: {}",
                ARCH_NAMES.join(", ")
            ),
            Self::Invalid(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// Builds architecture `name` (freshly initialised, on `dev`): every head is initialised
/// independently.
pub fn build_network<D: Device<f32>>(
    dev: &D,
    name: &str,
    cfg: NetConfig,
) -> Result<Network<D>, ModelError> {
    let spec = arch_spec(name)?;
    if cfg.classes == 0 || cfg.in_channels == 0 || cfg.branches == 0 {
        return Err(ModelError::Invalid(format!(
            "classes ({}), in_channels ({}) and branches ({}) must be at least 1",
            cfg.classes, cfg.in_channels, cfg.branches
        )));
    }
    Ok(match spec.family {
        ArchFamily::ResNet => crate::resnet::build(dev, spec, cfg),
        ArchFamily::PreAct => crate::preact::build(dev, spec, cfg),
        ArchFamily::Wide => crate::wrn::build(dev, spec, cfg),
        ArchFamily::Vgg => crate::vgg::build(dev, spec, cfg),
    })
}
