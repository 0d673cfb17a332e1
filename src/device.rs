//! The compute device (CPU always; CUDA with the `cuda` feature), chosen once per session.
//!
//! Tensors are created on the device of the data they derive from; a session puts loaded images and
//! new networks on [`default_device`]. [`host`] names the CPU where data must be in host memory: file
//! I/O, the parameters of spatial transforms (a few numbers, moved to the data's device where they are
//! applied), and the CPU branches of the fused kernels. Fused kernels written for the CPU fall back to
//! their slow twins (plain candle ops, which run on any device) when their input lives elsewhere.

use candle_core::Device;

/// The device regsh computes on: the first CUDA GPU when built with the `cuda` feature and one is
/// present, the CPU otherwise.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
        tracing::warn!("built with CUDA, but no GPU is usable: computing on the CPU");
    }
    host()
}

/// Host memory (the CPU).
pub fn host() -> Device {
    Device::Cpu
}

/// A short human name of a device, e.g. `cpu` or `cuda:0`.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal".into(),
    }
}
