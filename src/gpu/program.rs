//! A program: a fixed list of kernel dispatches with their bindings and parameters, recorded once
//! (for a given batch shape) and replayed for every batch. All parameter blocks live in one uniform
//! buffer, bound with dynamic offsets, so replaying costs no allocation.

use super::kernels::PARAMS_SIZE;
use super::{Gpu, Kernel, KernelId};
use crate::error::Result;
use std::sync::Arc;

/// A buffer bound to the next storage slot of a kernel.
pub type Binding<'a> = &'a wgpu::Buffer;

struct Step {
    kernel: Arc<Kernel>,
    bind_group: wgpu::BindGroup,
    params_offset: u32,
    groups: [u32; 3],
}

struct PendingStep {
    kernel: Arc<Kernel>,
    buffers: Vec<wgpu::Buffer>,
    params_offset: u32,
    groups: [u32; 3],
}

pub struct Program {
    steps: Vec<Step>,
    _params: wgpu::Buffer,
}

/// Collects dispatches, then builds the parameter buffer and bind groups in one go.
pub struct ProgramBuilder<'g> {
    gpu: &'g Gpu,
    pending: Vec<PendingStep>,
    params: Vec<u8>,
    alignment: usize,
}

impl Program {
    pub fn builder(gpu: &Gpu) -> ProgramBuilder<'_> {
        let alignment = gpu.device.limits().min_uniform_buffer_offset_alignment as usize;
        ProgramBuilder { gpu, pending: Vec::new(), params: Vec::new(), alignment: alignment.max(PARAMS_SIZE as usize) }
    }

    /// Records every step into one compute pass and submits it (does not wait).
    pub fn submit(&self, gpu: &Gpu) {
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("program") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            for step in &self.steps {
                pass.set_pipeline(&step.kernel.pipeline);
                pass.set_bind_group(0, &step.bind_group, &[step.params_offset]);
                pass.dispatch_workgroups(step.groups[0], step.groups[1], step.groups[2]);
            }
        }
        gpu.queue.submit([encoder.finish()]);
    }

    /// Submits and waits for completion.
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        self.submit(gpu);
        gpu.wait()
    }

    /// Runs the program once with a timestamp around every dispatch (each in its own compute
    /// pass, which only needs TIMESTAMP_QUERY) and returns (kernel, seconds) per dispatch.
    /// None when the adapter has no timestamp queries.
    pub fn profile(&self, gpu: &Gpu) -> Result<Option<Vec<(KernelId, f64)>>> {
        if !gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) || self.steps.is_empty() {
            return Ok(None);
        }
        let count = 2 * self.steps.len() as u32;
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count });
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
        for (i, step) in self.steps.iter().enumerate() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            pass.set_pipeline(&step.kernel.pipeline);
            pass.set_bind_group(0, &step.bind_group, &[step.params_offset]);
            pass.dispatch_workgroups(step.groups[0], step.groups[1], step.groups[2]);
        }
        encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
        gpu.queue.submit([encoder.finish()]);
        let ticks: Vec<u64> = gpu.read(&resolved, count as usize)?;
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(Some(
            self.steps
                .iter()
                .enumerate()
                .map(|(i, step)| (step.kernel.id, ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period))
                .collect(),
        ))
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Workgroup counts for `count` independent rows spread over y and z (each at most 65535).
pub fn row_grid(x: u32, count: usize) -> [u32; 3] {
    let count = count.max(1);
    let y = count.min(65535);
    [x.max(1), y as u32, count.div_ceil(y) as u32]
}

impl<'g> ProgramBuilder<'g> {
    /// Adds one dispatch. `params` is the kernel's parameter struct as 32-bit words (at most 16);
    /// `buffers` fill the kernel's storage slots in order.
    pub fn dispatch(&mut self, id: KernelId, params: &[u32], buffers: &[Binding], groups: [u32; 3]) {
        let kernel = self.gpu.kernel(id);
        assert_eq!(buffers.len(), id.slots().len(), "{id:?} takes {} buffers", id.slots().len());
        assert!(params.len() * 4 <= PARAMS_SIZE as usize);
        let offset = self.params.len();
        let mut block = vec![0u8; self.alignment];
        block[..params.len() * 4].copy_from_slice(bytemuck::cast_slice(params));
        self.params.extend_from_slice(&block);
        if groups.iter().any(|&g| g == 0) {
            return; // nothing to do (an empty batch or a zero-width tensor)
        }
        self.pending.push(PendingStep {
            kernel,
            buffers: buffers.iter().map(|b| (*b).clone()).collect(),
            params_offset: offset as u32,
            groups,
        });
    }

    pub fn build(self) -> Program {
        let gpu = self.gpu;
        let params = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("program parameters"),
            size: (self.params.len().max(self.alignment)) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: true,
        });
        {
            let mut view = params.slice(..).get_mapped_range_mut().expect("a buffer mapped at creation");
            view.slice(..self.params.len()).copy_from_slice(&self.params);
        }
        params.unmap();
        let steps = self
            .pending
            .into_iter()
            .map(|step| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAMS_SIZE),
                    }),
                }];
                for (slot, buffer) in step.kernel.id.slots().iter().zip(&step.buffers) {
                    entries.push(wgpu::BindGroupEntry { binding: slot.binding, resource: buffer.as_entire_binding() });
                }
                let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &step.kernel.layout,
                    entries: &entries,
                });
                Step { kernel: step.kernel, bind_group, params_offset: step.params_offset, groups: step.groups }
            })
            .collect();
        Program { steps, _params: params }
    }
}

/// f32 parameters travel in the same word array as the integers.
pub fn f32_bits(value: f32) -> u32 {
    value.to_bits()
}
