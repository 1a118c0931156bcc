//! The kernel registry: every compute pipeline, built once per device from `shaders/*.wgsl` and cached.
//!
//! Each kernel uses the same binding convention: binding 0 is a small uniform parameter block
//! (bound with a dynamic offset into one parameter buffer per program), the rest are storage
//! buffers. Weight-reading kernels get a weight-access snippet prepended for the checkpoint's
//! format, so one kernel source serves f32, f16 and bf16 weights.

use super::Gpu;
use std::sync::Arc;

/// How weights are stored in their GPU buffer (the snippet that defines `load_weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
}

impl WeightFormat {
    fn snippet(self) -> &'static str {
        match self {
            WeightFormat::F32 => include_str!("../../shaders/weights_f32.wgsl"),
            WeightFormat::F16 => include_str!("../../shaders/weights_f16.wgsl"),
            WeightFormat::BF16 => include_str!("../../shaders/weights_bf16.wgsl"),
        }
    }
}

/// Every kernel perplex dispatches, with what specialises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelId {
    Embedding(WeightFormat),
    Matmul(WeightFormat),
    LmHeadLoss(WeightFormat),
    LossCombine,
    Norm,
    Rope,
    Activation,
    Attention { head_dim: u32, key_tile: u32 },
}

/// A storage binding of a kernel: its slot and whether the kernel writes it.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub binding: u32,
    pub writable: bool,
}

const fn read(binding: u32) -> Slot {
    Slot { binding, writable: false }
}
const fn write(binding: u32) -> Slot {
    Slot { binding, writable: true }
}

pub const PARAMS_SIZE: u64 = 64;

impl KernelId {
    fn entry(self) -> &'static str {
        match self {
            KernelId::Matmul(_) => "matmul",
            KernelId::LmHeadLoss(_) => "lm_head_loss",
            KernelId::LossCombine => "loss_combine",
            _ => "main",
        }
    }

    /// Storage slots in the order callers pass buffers.
    pub fn slots(self) -> &'static [Slot] {
        // tokens, table -> output
        const EMBEDDING: &[Slot] = &[read(1), read(2), write(4)];
        // input, weights, bias -> output (norm: input, weight, bias -> output)
        const MATMUL: &[Slot] = &[read(1), read(2), read(3), write(4)];
        // input, weights, targets -> partials
        const LM_HEAD: &[Slot] = &[read(1), read(2), read(5), write(6)];
        // targets, partials -> output
        const COMBINE: &[Slot] = &[read(5), write(6), write(4)];
        // cos/sin table -> qkv (in place)
        const ROPE: &[Slot] = &[read(2), write(4)];
        // input -> output
        const UNARY: &[Slot] = &[read(1), write(4)];
        match self {
            KernelId::Embedding(_) => EMBEDDING,
            KernelId::Matmul(_) | KernelId::Norm => MATMUL,
            KernelId::LmHeadLoss(_) => LM_HEAD,
            KernelId::LossCombine => COMBINE,
            KernelId::Rope => ROPE,
            KernelId::Activation | KernelId::Attention { .. } => UNARY,
        }
    }

    fn source(self) -> String {
        match self {
            KernelId::Embedding(format) => {
                format!("{}\n{}", format.snippet(), include_str!("../../shaders/embedding.wgsl"))
            }
            KernelId::Matmul(format) | KernelId::LmHeadLoss(format) => {
                format!("{}\n{}", format.snippet(), include_str!("../../shaders/matmul.wgsl"))
            }
            KernelId::LossCombine => format!(
                "{}\n{}",
                WeightFormat::F32.snippet(),
                include_str!("../../shaders/matmul.wgsl")
            ),
            KernelId::Norm => include_str!("../../shaders/norm.wgsl").to_string(),
            KernelId::Rope => include_str!("../../shaders/rope.wgsl").to_string(),
            KernelId::Activation => include_str!("../../shaders/activation.wgsl").to_string(),
            KernelId::Attention { head_dim, key_tile } => format!(
                "const HEAD_DIM: u32 = {head_dim}u;\nconst KEY_TILE: u32 = {key_tile}u;\n{}",
                include_str!("../../shaders/attention.wgsl")
            ),
        }
    }
}

pub struct Kernel {
    pub id: KernelId,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Gpu {
    /// The pipeline for `id`, compiled on first use and cached for the device's lifetime.
    pub fn kernel(&self, id: KernelId) -> Arc<Kernel> {
        if let Some(kernel) = self.kernels.lock().unwrap().get(&id) {
            return kernel.clone();
        }
        let kernel = Arc::new(self.build_kernel(id));
        self.kernels.lock().unwrap().insert(id, kernel.clone());
        kernel
    }

    fn build_kernel(&self, id: KernelId) -> Kernel {
        let label = format!("{id:?}");
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(id.source().into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(PARAMS_SIZE),
            },
            count: None,
        }];
        for slot in id.slots() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: slot.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: !slot.writable },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(id.entry()),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        Kernel { id, pipeline, layout }
    }
}
