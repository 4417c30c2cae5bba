//! placeholder until the header research lands
use vllm_profiler_core::DeviceBackend;
use vllm_profiler_format::{GpuDevice, GpuSample};
pub const AMDSMI_DETECTOR: &str = "AMDSMIDetector";
pub struct AmdSmiBackend {
    found: u32,
    described: Vec<GpuDevice>,
}
impl AmdSmiBackend {
    pub fn open(_o: &crate::Options) -> Result<Self, String> {
        Err("todo".into())
    }
}
impl crate::Found for AmdSmiBackend {
    fn found(&self) -> u32 {
        self.found
    }
}
impl DeviceBackend for AmdSmiBackend {
    fn detector_name(&self) -> &'static str {
        AMDSMI_DETECTOR
    }
    fn devices(&self) -> &[GpuDevice] {
        &self.described
    }
    fn sample(&mut self, _t: f64, _o: &mut Vec<GpuSample>) {}
}
