//! Choice of the compute device (CPU always; CUDA with the `cuda` feature).

use candle_core::Device;

/// The device regsh computes on: the first CUDA GPU when built with the `cuda` feature and one is
/// present, the CPU otherwise. Image I/O always happens on the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
        tracing::warn!("built with CUDA, but no GPU is usable: computing on the CPU");
    }
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
