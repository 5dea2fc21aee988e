//! Devices by name: the one mapping from `cpu` / `wgpu` / `cuda` to a burn device, for
//! the command line, the benches and the GPU tests.

use burn::tensor::Device;

use crate::{PonderError, Result};

/// The burn device called `name`, and a description for reports: `cpu` (burn's flex
/// backend), `wgpu` (the default adapter; cargo feature `wgpu`) or `cuda` (NVIDIA GPU 0;
/// cargo feature `cuda`).
///
/// # Errors
/// An unknown name, or a GPU backend this build does not have (the error names the
/// cargo feature that adds it).
pub fn device_named(name: &str) -> Result<(Device, String)> {
    match name {
        "cpu" => Ok((Device::flex(), "cpu (burn flex)".to_string())),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok((
            Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            "wgpu (default adapter)".to_string(),
        )),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => Err(missing_backend("wgpu")),
        #[cfg(feature = "cuda")]
        "cuda" => Ok((Device::cuda(0), "cuda (NVIDIA GPU 0)".to_string())),
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(missing_backend("cuda")),
        other => Err(PonderError::InvalidConfig {
            key: "device".to_string(),
            message: format!("unknown device `{other}`: expected cpu, wgpu or cuda"),
        }),
    }
}

#[cfg(any(not(feature = "wgpu"), not(feature = "cuda")))]
fn missing_backend(name: &str) -> PonderError {
    PonderError::InvalidConfig {
        key: "device".to_string(),
        message: format!("this build has no {name} backend; build with the cargo feature `{name}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_devices_or_clear_errors() {
        let (device, description) = device_named("cpu").unwrap();
        assert!(!device.is_autodiff());
        assert!(description.starts_with("cpu"), "{description}");
        let err = device_named("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device `tpu`"), "{err}");
        #[cfg(not(feature = "cuda"))]
        {
            let err = device_named("cuda").unwrap_err().to_string();
            assert!(err.contains("cargo feature `cuda`"), "{err}");
        }
    }
}
