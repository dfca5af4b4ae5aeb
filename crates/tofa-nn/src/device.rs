//! Naming a compute device: `cpu`, `cuda` (the first GPU) or `cuda:N`.
//!
//! A build without the `cuda` feature (the default: CI and `cargo test` need no CUDA
//! toolkit) still parses `cuda`, and says how to get a build that can use it.

use candle_core::Device;

use crate::error::{NnError, Result};

/// The device `name` names, opened.
pub fn parse_device(name: &str) -> Result<Device> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(NnError::Input(format!(
                    "device `{name}`: expected `cpu`, `cuda` or `cuda:N`"
                )));
            }
        },
    };
    if !cfg!(feature = "cuda") {
        return Err(NnError::Input(format!(
            "device `{name}`: this build has no CUDA support; build with `--features cuda` (needs the CUDA toolkit, see README)"
        )));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| NnError::Input(format!("device `{name}`: cannot open it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_say_what_is_expected() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let e = parse_device("gpu").unwrap_err().to_string();
        assert!(e.contains("expected `cpu`, `cuda` or `cuda:N`"), "{e}");
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("expected"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = parse_device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("build with `--features cuda`"), "{e}");
        }
    }
}
