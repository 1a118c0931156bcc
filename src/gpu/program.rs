//! A program: a fixed list of kernel dispatches with their bindings and parameters, recorded once
//! (for a given batch shape) and replayed for every batch. All parameter blocks live in one uniform
//! buffer, bound with dynamic offsets, so replaying costs no allocation. Kernels that read some
//! operands through textures (see [`super::ReadPath`]) get a buffer-to-texture copy of each just
//! before their dispatch, into scratch textures the program owns, except operands that already
//! live in a texture (weight matrices on that path, see [`super::MatrixUse`]).

use super::kernels::PARAMS_SIZE;
use super::ops::KernelParams;
use super::{Gpu, Kernel, KernelId, TEXEL_BYTES, TEXTURE_WIDTH};
use crate::error::Result;
use std::sync::Arc;

/// A buffer bound to the next storage slot of a kernel.
pub type Binding<'a> = &'a wgpu::Buffer;

/// What a kernel slot reads: a storage buffer, or for the slots a kernel reads through textures,
/// a texture already laid out as they index it (bound as it is, with no copy).
#[derive(Clone)]
pub enum Operand {
    Buffer(wgpu::Buffer),
    Texture(wgpu::Texture),
}

struct Step {
    kernel: Arc<Kernel>,
    bind_group: wgpu::BindGroup,
    params_offset: u32,
    groups: [u32; 3],
    copies: Vec<TextureCopy>,
}

/// A buffer's words copied into rows of [`TEXTURE_WIDTH`] texels of the scratch texture for its
/// kernel slot.
struct TextureCopy {
    buffer: wgpu::Buffer,
    slot: usize,
    texels: u64,
}

impl TextureCopy {
    fn encode(&self, encoder: &mut wgpu::CommandEncoder, scratch: &Scratch) {
        let texture = scratch.texture(self.slot);
        let row_bytes = TEXTURE_WIDTH as u64 * TEXEL_BYTES;
        for (y, texels, rows) in Gpu::word_texture_spans(self.texels) {
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &self.buffer,
                    layout: wgpu::TexelCopyBufferLayout { offset: y * row_bytes, bytes_per_row: Some(row_bytes as u32), rows_per_image: None },
                },
                wgpu::TexelCopyTextureInfo { texture, mip_level: 0, origin: wgpu::Origin3d { x: 0, y: y as u32, z: 0 }, aspect: wgpu::TextureAspect::All },
                wgpu::Extent3d { width: texels as u32, height: rows as u32, depth_or_array_layers: 1 },
            );
        }
    }
}

/// The scratch textures one program copies into, one per kernel slot (see
/// [`Gpu::scratch_texture`]).
struct Scratch {
    textures: Vec<(usize, Arc<wgpu::Texture>)>,
}

impl Scratch {
    fn new(gpu: &Gpu, copies: &[&TextureCopy]) -> Scratch {
        let mut slots: Vec<usize> = copies.iter().map(|c| c.slot).collect();
        slots.sort();
        slots.dedup();
        let textures = slots
            .into_iter()
            .map(|slot| {
                let texels = copies.iter().filter(|c| c.slot == slot).map(|c| c.texels).max().unwrap_or(1);
                (slot, gpu.scratch_texture(slot, texels))
            })
            .collect();
        Scratch { textures }
    }

    fn texture(&self, slot: usize) -> &wgpu::Texture {
        &self.textures.iter().find(|(key, _)| *key == slot).expect("a scratch texture for every copy").1
    }
}

struct PendingStep {
    kernel: Arc<Kernel>,
    operands: Vec<Operand>,
    params_offset: u32,
    groups: [u32; 3],
}

pub struct Program {
    steps: Vec<Step>,
    scratch: Scratch,
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

    /// Records every step and submits it (does not wait): consecutive steps share a compute pass,
    /// which ends only where a step needs texture copies first.
    pub fn submit(&self, gpu: &Gpu) {
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("program") });
        let mut start = 0;
        while start < self.steps.len() {
            let end = (start + 1..self.steps.len()).find(|&i| !self.steps[i].copies.is_empty()).unwrap_or(self.steps.len());
            for copy in &self.steps[start].copies {
                copy.encode(&mut encoder, &self.scratch);
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            for step in &self.steps[start..end] {
                step.record(&mut pass);
            }
            drop(pass);
            start = end;
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
            for copy in &step.copies {
                copy.encode(&mut encoder, &self.scratch);
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            step.record(&mut pass);
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

impl Step {
    fn record(&self, pass: &mut wgpu::ComputePass) {
        pass.set_pipeline(&self.kernel.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[self.params_offset]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

impl<'g> ProgramBuilder<'g> {
    /// Adds one dispatch of `id` with its parameter block (see [`super::ops`], whose typed calls
    /// are the only callers); `buffers` fill the kernel's storage slots in order.
    pub(super) fn dispatch<P: KernelParams>(&mut self, id: KernelId, params: P, buffers: &[Binding], groups: [u32; 3]) {
        let operands = buffers.iter().map(|b| Operand::Buffer((*b).clone())).collect();
        self.dispatch_operands(id, params, operands, groups);
    }

    /// [`ProgramBuilder::dispatch`] where some operands may be resident textures.
    pub(super) fn dispatch_operands<P: KernelParams>(&mut self, id: KernelId, params: P, operands: Vec<Operand>, groups: [u32; 3]) {
        let kernel = self.gpu.kernel(id);
        assert_eq!(operands.len(), id.slots().len(), "{id:?} takes {} operands", id.slots().len());
        assert_eq!(P::LAYOUT, id.params_layout(), "{id:?} takes another parameter block");
        let bytes = bytemuck::bytes_of(&params);
        assert!(bytes.len() <= PARAMS_SIZE as usize);
        let offset = self.params.len();
        let mut block = vec![0u8; self.alignment];
        block[..bytes.len()].copy_from_slice(bytes);
        self.params.extend_from_slice(&block);
        if groups.contains(&0) {
            return; // nothing to do (an empty batch or a zero-width tensor)
        }
        for (index, operand) in operands.iter().enumerate() {
            let through_texture = kernel.texture_slots.contains(&index);
            assert!(through_texture || matches!(operand, Operand::Buffer(_)), "{id:?} reads slot {index} from a buffer, not a texture");
        }
        self.pending.push(PendingStep {
            kernel,
            operands,
            params_offset: offset as u32,
            groups,
        });
    }

    pub(super) fn gpu(&self) -> &'g Gpu {
        self.gpu
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
        // Buffers read through textures are copied into scratch before their dispatch.
        let copies: Vec<Vec<TextureCopy>> = self
            .pending
            .iter()
            .map(|step| {
                step.kernel
                    .texture_slots
                    .iter()
                    .filter_map(|&slot| match &step.operands[slot] {
                        Operand::Buffer(buffer) => Some(TextureCopy { buffer: buffer.clone(), slot, texels: buffer.size() / TEXEL_BYTES }),
                        Operand::Texture(_) => None,
                    })
                    .collect()
            })
            .collect();
        let scratch = Scratch::new(gpu, &copies.iter().flatten().collect::<Vec<_>>());
        let views: Vec<(usize, wgpu::TextureView)> = scratch.textures.iter().map(|(slot, t)| (*slot, t.create_view(&Default::default()))).collect();
        let steps = self
            .pending
            .into_iter()
            .zip(copies)
            .map(|(step, copies)| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAMS_SIZE),
                    }),
                }];
                // Resident textures are bound as they are; other texture slots read their scratch
                // copy; the rest are storage buffers.
                let resident: Vec<Option<wgpu::TextureView>> = step
                    .operands
                    .iter()
                    .map(|operand| match operand {
                        Operand::Texture(texture) => Some(texture.create_view(&Default::default())),
                        Operand::Buffer(_) => None,
                    })
                    .collect();
                for (index, (slot, operand)) in step.kernel.id.slots().iter().zip(&step.operands).enumerate() {
                    let resource = match (operand, &resident[index]) {
                        (_, Some(view)) => wgpu::BindingResource::TextureView(view),
                        (_, None) if step.kernel.texture_slots.contains(&index) => {
                            wgpu::BindingResource::TextureView(&views.iter().find(|(k, _)| *k == index).unwrap().1)
                        }
                        (Operand::Buffer(buffer), None) => buffer.as_entire_binding(),
                        (Operand::Texture(_), None) => unreachable!("a texture operand has a view"),
                    };
                    entries.push(wgpu::BindGroupEntry { binding: slot.binding, resource });
                }
                let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &step.kernel.layout,
                    entries: &entries,
                });
                Step { kernel: step.kernel, bind_group, params_offset: step.params_offset, groups: step.groups, copies }
            })
            .collect();
        Program { steps, scratch, _params: params }
    }
}
