//! Where a tensor's data lives.

/// A compute device, chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory; kernels run on the CPU with rayon.
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal (requires the `cuda` feature).
    Cuda(usize),
}

impl std::fmt::Display for Device {
    /// `cpu` or `cuda:N`, the spelling [`FromStr`](std::str::FromStr) reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = crate::error::Error;

    /// Reads `cpu`, `cuda` (GPU 0) or `cuda:N`, as PyTorch spells devices.
    fn from_str(s: &str) -> crate::error::Result<Device> {
        let bad = || {
            crate::error::Error::invalid(
                "Device::from_str",
                format!("unknown device `{s}`: expected cpu, cuda or cuda:N"),
            )
        };
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => {
                let n = other.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse::<usize>().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn devices_parse_and_print_as_pytorch_spells_them() {
        for (text, device) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(text.parse::<Device>().unwrap(), device);
        }
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU"] {
            assert!(bad.parse::<Device>().is_err(), "{bad}");
        }
    }
}
