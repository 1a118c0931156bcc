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
    Int8Groups,
}

impl WeightFormat {
    fn snippet(self) -> &'static str {
        match self {
            WeightFormat::F32 => include_str!("../../shaders/weights_f32.wgsl"),
            WeightFormat::F16 => include_str!("../../shaders/weights_f16.wgsl"),
            WeightFormat::BF16 => include_str!("../../shaders/weights_bf16.wgsl"),
            WeightFormat::Int8Groups => include_str!("../../shaders/weights_int8_groups.wgsl"),
        }
    }
}

/// Every kernel perplex dispatches, with what specialises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelId {
    Embedding(WeightFormat),
    /// `aligned`: the depth is a multiple of 4, so rows can be read as whole vec4s.
    Matmul { format: WeightFormat, aligned: bool },
    LmHeadLoss { format: WeightFormat, aligned: bool },
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
    /// The attention kernel for `head_dim`, with as many keys per tile (up to 32) as fit in the
    /// device's workgroup memory: per key, its k and v vectors and its position.
    pub fn attention(gpu: &Gpu, head_dim: u32) -> KernelId {
        let per_key = 2 * head_dim.div_ceil(4) * 16 + 4;
        KernelId::Attention { head_dim, key_tile: (gpu.max_workgroup_storage / per_key).clamp(1, 32) }
    }

    /// The kernel's name without its specialisation, for reports.
    pub fn family(self) -> &'static str {
        match self {
            KernelId::Embedding(_) => "embedding",
            KernelId::Matmul { .. } => "matmul",
            KernelId::LmHeadLoss { .. } => "lm_head_loss",
            KernelId::LossCombine => "loss_combine",
            KernelId::Norm => "norm",
            KernelId::Rope => "rope",
            KernelId::Activation => "activation",
            KernelId::Attention { .. } => "attention",
        }
    }

    fn entry(self) -> &'static str {
        match self {
            KernelId::Matmul { .. } => "matmul",
            KernelId::LmHeadLoss { .. } => "lm_head_loss",
            KernelId::LossCombine => "loss_combine",
            _ => "main",
        }
    }

    /// Storage slots in the order callers pass buffers.
    pub fn slots(self) -> &'static [Slot] {
        // indices (token ids or positions), table -> output
        const EMBEDDING: &[Slot] = &[read(1), read(2), write(4)];
        // input, weights, bias -> output (norm: input, weight, bias -> output)
        const MATMUL: &[Slot] = &[read(1), read(2), read(3), write(4)];
        // input, weights, targets -> partials
        const LM_HEAD: &[Slot] = &[read(1), read(2), read(5), write(6)];
        // targets, partials -> output
        const COMBINE: &[Slot] = &[read(5), write(6), write(4)];
        // positions, cos/sin table -> qkv (in place)
        const ROPE: &[Slot] = &[read(1), read(2), write(4)];
        // qkv, positions, segments -> output
        const ATTENTION: &[Slot] = &[read(1), read(2), read(3), write(4)];
        // input -> output
        const UNARY: &[Slot] = &[read(1), write(4)];
        match self {
            KernelId::Embedding(_) => EMBEDDING,
            KernelId::Matmul { .. } | KernelId::Norm => MATMUL,
            KernelId::LmHeadLoss { .. } => LM_HEAD,
            KernelId::LossCombine => COMBINE,
            KernelId::Rope => ROPE,
            KernelId::Attention { .. } => ATTENTION,
            KernelId::Activation => UNARY,
        }
    }

    fn source(self) -> String {
        const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
        let with_weights = |format: WeightFormat, aligned: bool, body: &str| {
            format!("const ALIGNED: bool = {aligned};\n{}\n{body}", format.snippet())
        };
        let with_block = |format: WeightFormat, aligned: bool| with_weights(format, aligned, &(block_product() + MATMUL));
        match self {
            KernelId::Embedding(format) => with_weights(format, false, include_str!("../../shaders/embedding.wgsl")),
            KernelId::Matmul { format, aligned } | KernelId::LmHeadLoss { format, aligned } => with_block(format, aligned),
            KernelId::LossCombine => with_block(WeightFormat::F32, true),
            KernelId::Norm => include_str!("../../shaders/norm.wgsl").to_string(),
            KernelId::Rope => include_str!("../../shaders/rope.wgsl").to_string(),
            KernelId::Activation => include_str!("../../shaders/activation.wgsl").to_string(),
            KernelId::Attention { head_dim, key_tile } => format!(
                "const KEY_TILE: u32 = {key_tile}u;\n{}\n{}",
                head_vector_helpers(head_dim as usize),
                include_str!("../../shaders/attention.wgsl")
            ),
        }
    }
}

/// The generated part of attention.wgsl: a head vector as HEAD_DIM / 4 named vec4s (padded with
/// zeros when HEAD_DIM is not a multiple of 4) and the few operations the kernel applies to it,
/// unrolled so the vectors stay in registers.
fn head_vector_helpers(head_dim: usize) -> String {
    let n = head_dim.div_ceil(4);
    let all = |f: &dyn Fn(usize) -> String, sep: &str| (0..n).map(f).collect::<Vec<_>>().join(sep);
    // Element e of the head at flat index `base`, zero past HEAD_DIM.
    let element = |e: usize| if e < head_dim { format!("qkv[base + {e}u]") } else { "0.0".to_string() };
    let mut s = format!("const HEAD_DIM: u32 = {head_dim}u;\nconst HEAD_VEC4S: u32 = {n}u;\n");
    s += &format!("struct HeadVec {{ {} }}\n", all(&|i| format!("v{i}: vec4<f32>"), ", "));
    s += &format!(
        "fn load_head(base: u32) -> HeadVec {{ return HeadVec({}); }}\n",
        all(&|i| format!("vec4<f32>({}, {}, {}, {})", element(4 * i), element(4 * i + 1), element(4 * i + 2), element(4 * i + 3)), ", ")
    );
    s += &format!("fn dot_key(q: HeadVec, j: u32) -> f32 {{ return {}; }}\n", all(&|i| format!("dot(q.v{i}, tile_k[j][{i}])"), " + "));
    s += &format!(
        "fn add_value(acc: HeadVec, p: f32, j: u32) -> HeadVec {{ return HeadVec({}); }}\n",
        all(&|i| format!("fma(vec4<f32>(p), tile_v[j][{i}], acc.v{i})"), ", ")
    );
    s += &format!("fn scale_head(x: HeadVec, f: f32) -> HeadVec {{ return HeadVec({}); }}\n", all(&|i| format!("x.v{i} * f"), ", "));
    s += "fn store_head(x: HeadVec, base: u32) {\n";
    for e in 0..head_dim {
        s += &format!("    output[base + {e}u] = x.v{}[{}];\n", e / 4, e % 4);
    }
    s + "}\n"
}

/// Rows and columns of the register block each matmul invocation computes.
pub const BLOCK_ROWS: usize = 8;
pub const BLOCK_COLS: usize = 8;
/// Invocations per matmul workgroup, side by side along the output columns.
pub const LANES: usize = 16;
/// Output columns per matmul workgroup: the LM head's vocabulary tile.
pub const TILE_COLS: usize = LANES * BLOCK_COLS;

/// The generated part of matmul.wgsl: `block_product(row0, col0)` returns the BLOCK_ROWS x
/// BLOCK_COLS products of rows row0.. and columns col0 + 64 c, with every loop over the block
/// unrolled into named accumulators (compilers keep those in registers; arrays they spill).
fn block_product() -> String {
    let (rows, cols) = (BLOCK_ROWS, BLOCK_COLS);
    let mut s = format!(
        "const BLOCK_ROWS: u32 = {rows}u;\nconst BLOCK_COLS: u32 = {cols}u;\nconst LANES: u32 = {LANES}u;\n\
         fn block_product(row0: u32, col0: u32) -> array<array<f32, {cols}>, {rows}> {{\n\
         \x20   let depth = params.depth;\n"
    );
    for r in 0..rows {
        s += &format!("    let a{r} = min(row0 + {r}u, params.rows - 1u) * depth;\n");
    }
    for c in 0..cols {
        s += &format!("    let w{c} = min(col0 + {}u, params.cols - 1u) * depth;\n", LANES * c);
    }
    for r in 0..rows {
        for c in 0..cols {
            s += &format!("    var acc{r}_{c} = vec4<f32>(0.0);\n");
        }
    }
    s += "    for (var k = 0u; k < depth; k += 4u) {\n";
    for c in 0..cols {
        s += &format!("        let wv{c} = load_weight4(w{c} + k);\n");
    }
    for r in 0..rows {
        s += &format!("        let av{r} = load_input4(a{r}, k);\n");
        for c in 0..cols {
            s += &format!("        acc{r}_{c} = fma(av{r}, wv{c}, acc{r}_{c});\n");
        }
    }
    s += &format!("    }}\n    var block: array<array<f32, {cols}>, {rows}>;\n");
    for r in 0..rows {
        for c in 0..cols {
            s += &format!("    block[{r}][{c}] = (acc{r}_{c}.x + acc{r}_{c}.y) + (acc{r}_{c}.z + acc{r}_{c}.w);\n");
        }
    }
    s + "    return block;\n}\n"
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
