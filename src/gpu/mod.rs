//! The wgpu side: adapter discovery and selection, the device with the adapter's real limits,
//! kernels (pipelines built once from `shaders/*.wgsl`), typed kernel calls ([`ops`]), GPU
//! buffers and split weight matrices, and recorded dispatch programs.

mod kernels;
pub mod ops;
mod program;
mod tensor;

pub use kernels::{
    all_variants, dump_shaders, DepthStep, Kernel, KernelId, ReadPath, ShaderVariant, Sums, WeightFormat, BLOCK_COLS, BLOCK_ROWS, DUMP_SHADERS_ENV,
    LISTED_HEAD_DIMS, TEXEL_BYTES, TEXEL_FORMAT, TEXTURE_WIDTH, TILE_COLS,
};
pub use program::{Binding, Operand, Program, ProgramBuilder};
pub use tensor::upload_padded;
pub use tensor::{DType, GpuMatrix, Group, MatrixPart, MatrixUse, PendingRead, GROUP};

use crate::error::{Error, ErrorKind, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a user sees of one adapter in `perplex devices`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_size: (u32, u32),
    pub timestamp_query: bool,
    /// The cooperative-matrix shapes wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX offers (the matrix
    /// units from WGSL), as "MxNxK A/B type -> C type"; empty where the feature is absent.
    pub cooperative_matrix: Vec<String>,
    pub notes: Vec<String>,
}

fn instance() -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // In a browser, WebGPU only: WebGL has no compute shaders.
    if cfg!(target_arch = "wasm32") {
        descriptor.backends = wgpu::Backends::BROWSER_WEBGPU;
    }
    // Where the driver reports a memory budget (Vulkan's VK_EXT_memory_budget, D3D12), creating a
    // buffer past 95% of it fails with out-of-memory, which perplex answers by halving the batch,
    // instead of the device being lost mid-run.
    descriptor.memory_budget_thresholds = wgpu::MemoryBudgetThresholds { for_resource_creation: Some(95), for_device_loss: None };
    wgpu::Instance::new(descriptor)
}

async fn all_adapters() -> Vec<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    return instance().enumerate_adapters(wgpu::Backends::all()).await;
    // A browser offers one adapter, on request (none where it has no WebGPU).
    #[cfg(target_arch = "wasm32")]
    return instance()
        .request_adapter(&wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() })
        .await
        .into_iter()
        .collect();
}

fn summarize(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    let mut notes = Vec::new();
    if info.backend == wgpu::Backend::Dx12 && !features.contains(wgpu::Features::SHADER_F16) {
        notes.push("DX12 without DXC (FXC fallback): no f16 or subgroup shaders; install dxcompiler.dll for them".into());
    }
    if info.device_type == wgpu::DeviceType::Cpu {
        notes.push("software (CPU) adapter: correct but slow; kernels read texture copies of their operands, which are faster there (--reads)".into());
        if let Some(version) = mesa_major_version(&info.driver_info).filter(|&v| v < 25) {
            notes.push(format!(
                "Mesa {version}'s lavapipe: Mesa 25 runs perplex 1.3-1.9x faster with the same results \
                 (on Debian 12: apt-get install -t bookworm-backports mesa-vulkan-drivers)"
            ));
        }
    }
    // Browsers may keep the adapter's name to themselves.
    let name = [&info.name, &info.driver, &info.driver_info].into_iter().find(|n| !n.is_empty()).map_or("unnamed adapter".to_string(), |n| n.to_string());
    AdapterSummary {
        index,
        name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        max_buffer_size: limits.max_buffer_size,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        subgroup_size: (info.subgroup_min_size, info.subgroup_max_size),
        timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        cooperative_matrix: if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            adapter
                .cooperative_matrix_properties()
                .iter()
                .map(|p| format!("{}x{}x{} {:?} -> {:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type))
                .collect()
        } else {
            Vec::new()
        },
        notes,
    }
}

/// The major version in a driver description such as "Mesa 22.3.6 (LLVM 15.0.6)".
fn mesa_major_version(driver_info: &str) -> Option<u32> {
    let after = &driver_info[driver_info.find("Mesa ")? + 5..];
    after.split('.').next()?.parse().ok()
}

/// Every adapter wgpu can see, in enumeration order (the index `--device N` refers to).
pub fn list_adapters() -> Vec<AdapterSummary> {
    pollster::block_on(all_adapters()).iter().enumerate().map(|(i, a)| summarize(i, a)).collect()
}

pub const NO_ADAPTER_HELP: &str = "no GPU adapter found. perplex needs a Vulkan, Metal or DX12 driver. \
On a machine without a GPU, install a software Vulkan driver: on Debian/Ubuntu `sudo apt-get install mesa-vulkan-drivers` \
(lavapipe), on Fedora `sudo dnf install mesa-vulkan-drivers`; on Windows the WARP adapter of DX12 is built in. \
`perplex devices` lists what is visible.";

pub const NO_WEBGPU_HELP: &str = "this browser offers no WebGPU adapter. perplex runs in browsers with WebGPU: current \
Chrome and Edge, Safari 26, Firefox 141 on Windows; elsewhere it may sit behind a flag (chrome://flags/#enable-unsafe-webgpu).";

/// How to pick and configure the device.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// `N` (index in `perplex devices`) or a case-insensitive substring of the adapter name.
    pub device: Option<String>,
    /// Pretend storage bindings are at most this many bytes (tests of tensor splitting).
    pub max_binding_override: Option<u64>,
    /// Where matrix kernels read their operands; None: textures on CPU adapters, buffers elsewhere.
    pub reads: Option<ReadPath>,
    /// Allow the subgroup row sharing of the texture path (None: wherever subgroups allow it).
    pub share_rows: Option<bool>,
    /// How the matrix kernels sum their products.
    pub sums: Sums,
}

/// A device and everything built on it. Cheap to share behind an `Arc`.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    /// Largest storage binding we use (the adapter's, or a smaller forced value).
    pub max_binding: u64,
    pub max_buffer: u64,
    pub max_workgroup_storage: u32,
    pub max_texture_dimension: u32,
    pub read_path: ReadPath,
    /// The matrix kernels on the texture path fetch each input row once per subgroup and
    /// broadcast it (see `kernels::block_product`): subgroups of at least BLOCK_ROWS lanes.
    pub share_rows: bool,
    pub sums: Sums,
    /// Bytes of model weights uploaded and not released, by every model on the device.
    pub resident_weights: AtomicU64,
    kernels: Mutex<std::collections::HashMap<KernelId, Arc<Kernel>>>,
    /// Scratch textures of the texture read path, per kernel slot.
    scratch: Mutex<std::collections::HashMap<usize, Arc<wgpu::Texture>>>,
    lost: Arc<Mutex<Option<String>>>,
    failed: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    pub fn new(options: &GpuOptions) -> Result<Arc<Gpu>> {
        pollster::block_on(Gpu::open(options))
    }

    /// [`Gpu::new`] without blocking: what a browser's page awaits.
    pub async fn open(options: &GpuOptions) -> Result<Arc<Gpu>> {
        let adapters = all_adapters().await;
        if adapters.is_empty() {
            return Err(Error::bad_input(if cfg!(target_arch = "wasm32") { NO_WEBGPU_HELP } else { NO_ADAPTER_HELP }));
        }
        let index = select_adapter(&adapters, options.device.as_deref())?;
        let adapter = &adapters[index];
        let summary = summarize(index, adapter);
        let adapter_limits = adapter.limits();
        // Ask for everything the adapter offers, not WebGPU's defaults (128/256 MiB buffers, 16 KiB shared).
        let mut limits = wgpu::Limits::defaults();
        limits.max_buffer_size = adapter_limits.max_buffer_size;
        limits.max_storage_buffer_binding_size = adapter_limits.max_storage_buffer_binding_size;
        limits.max_storage_buffers_per_shader_stage = adapter_limits.max_storage_buffers_per_shader_stage.min(16);
        limits.max_compute_workgroup_storage_size = adapter_limits.max_compute_workgroup_storage_size;
        limits.max_compute_invocations_per_workgroup = adapter_limits.max_compute_invocations_per_workgroup;
        limits.max_compute_workgroups_per_dimension = adapter_limits.max_compute_workgroups_per_dimension;
        limits.max_compute_workgroup_size_x = adapter_limits.max_compute_workgroup_size_x;
        limits.max_compute_workgroup_size_y = adapter_limits.max_compute_workgroup_size_y;
        limits.max_texture_dimension_2d = adapter_limits.max_texture_dimension_2d;
        let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
            label: Some("perplex"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            // Small allocator blocks: device memory stays within a few percent of what the
            // weights and activations need (measured by `perplex bench`); speed is unaffected.
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
        })
        .await
        .map_err(|e| Error::internal(format!("could not open adapter '{}': {e}", summary.name)))?;

        let lost = Arc::new(Mutex::new(None));
        let lost_slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_slot.lock().unwrap() = Some(format!("{reason:?}: {message}"));
        });
        let failed = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let (failed_flag, error_slot) = (failed.clone(), last_error.clone());
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            // Keep the first error: later ones are usually its consequences.
            if !failed_flag.swap(true, Ordering::SeqCst) {
                *error_slot.lock().unwrap() = Some(error.to_string());
            }
        }));

        let mut max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if let Some(forced) = options.max_binding_override {
            max_binding = max_binding.min(forced);
        }
        let read_path = options.reads.unwrap_or(match adapter.get_info().device_type {
            wgpu::DeviceType::Cpu => ReadPath::Textures,
            _ => ReadPath::Buffers,
        });
        if read_path == ReadPath::Textures {
            // Every matrix part must fit in one texture.
            let texture_bytes = TEXTURE_WIDTH as u64 * limits.max_texture_dimension_2d as u64 * TEXEL_BYTES;
            max_binding = max_binding.min(texture_bytes);
        }
        let share_rows = options.share_rows.unwrap_or(true)
            && features.contains(wgpu::Features::SUBGROUP)
            && summary.subgroup_size.0 as usize >= BLOCK_ROWS;
        Ok(Arc::new(Gpu {
            device,
            queue,
            adapter: summary,
            max_binding,
            max_buffer: limits.max_buffer_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_texture_dimension: limits.max_texture_dimension_2d,
            read_path,
            share_rows,
            sums: options.sums,
            resident_weights: AtomicU64::new(0),
            kernels: Mutex::new(Default::default()),
            scratch: Mutex::new(Default::default()),
            lost,
            failed,
            last_error,
        }))
    }

    /// A texture of [`TEXTURE_WIDTH`]-texel rows holding at least `texels` words, that copies for
    /// kernel slot `slot` go into. Every program shares it (work on one queue runs in order, so each
    /// copy may overwrite the last); a larger request replaces it for later programs, while
    /// programs recorded earlier keep theirs.
    pub fn scratch_texture(&self, slot: usize, texels: u64) -> Arc<wgpu::Texture> {
        let mut cache = self.scratch.lock().unwrap();
        if let Some(texture) = cache.get(&slot) {
            if texture.height() as u64 * TEXTURE_WIDTH as u64 >= texels {
                return texture.clone();
            }
        }
        let texture = Arc::new(self.word_texture("kernel operands", texels));
        cache.insert(slot, texture.clone());
        texture
    }

    /// A texture of [`TEXTURE_WIDTH`]-texel rows with room for `texels` words of four values, as
    /// the texture path's kernels read a buffer (see [`ReadPath`]), filled by copies or writes.
    pub fn word_texture(&self, label: &str, texels: u64) -> wgpu::Texture {
        let rows = texels.div_ceil(TEXTURE_WIDTH as u64).max(1);
        assert!(rows <= self.max_texture_dimension as u64, "{texels} texels exceed the texture limit");
        self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d { width: TEXTURE_WIDTH, height: rows as u32, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: TEXEL_FORMAT,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        })
    }

    /// The rectangles `texels` words fill in a word texture (see [`Gpu::word_texture`]), as
    /// (first row, texels per row, rows): the whole rows, then what is left for a last row.
    pub(crate) fn word_texture_spans(texels: u64) -> impl Iterator<Item = (u64, u64, u64)> {
        let width = TEXTURE_WIDTH as u64;
        let (full_rows, rest) = (texels / width, texels % width);
        [(0, width, full_rows), (full_rows, rest, 1)].into_iter().filter(|&(_, texels, rows)| texels > 0 && rows > 0)
    }

    /// How the matrix and attention kernels read their operands, for reports.
    pub fn describe_reads(&self) -> &'static str {
        match (self.read_path, self.share_rows) {
            (ReadPath::Buffers, _) => "storage buffers",
            (ReadPath::Textures, true) => "texture copies, input rows and attention keys shared across subgroups",
            (ReadPath::Textures, false) => "texture copies",
        }
    }

    /// A one-line description for reports: "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)",
    /// followed by ", compensated sums" where the matrix kernels use them.
    pub fn describe(&self) -> String {
        let sums = match self.sums {
            Sums::Plain => "",
            Sums::Compensated => ", compensated sums",
        };
        format!("{} ({}, {}){sums}", self.adapter.name, self.adapter.backend, self.adapter.device_type)
    }

    /// Fails if the device was lost or a GPU command failed since the last check.
    pub fn check_healthy(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().unwrap().clone() {
            return Err(Error::internal(format!(
                "the GPU device was lost ({reason}). Results written so far are kept; rerun to continue, \
                 with a smaller --batch if the driver reset under memory pressure."
            )));
        }
        if self.failed.load(Ordering::SeqCst) {
            let message = self.last_error.lock().unwrap().clone().unwrap_or_default();
            let lower = message.to_lowercase();
            if lower.contains("out of memory") || lower.contains("outofmemory") {
                return Err(Error {
                    kind: ErrorKind::DeviceMemory,
                    message: format!("the GPU ran out of memory ({message}). Use a smaller --batch or --ctx, or a device with more memory."),
                });
            }
            return Err(Error::internal(format!("a GPU command failed: {message}")));
        }
        Ok(())
    }

    /// Forgets a failure reported since the last check (after an out-of-memory batch is retried
    /// smaller). A lost device stays lost.
    pub fn clear_error(&self) {
        self.failed.store(false, Ordering::SeqCst);
        *self.last_error.lock().unwrap() = None;
    }

    /// Records a failure as the device reports one, asynchronously: the next wait returns it.
    /// For fault injection in tests.
    pub fn report_failure(&self, message: &str) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            *self.last_error.lock().unwrap() = Some(message.to_string());
        }
    }

    /// Runs `upload` and returns what it made, or where the device ran out of memory meanwhile
    /// (wgpu reports an allocation that failed this way, not as a return value), a
    /// [`ErrorKind::DeviceMemory`] error: `does_not_fit(device, error)` says what did not fit and
    /// what to do. The error scope is closed whether or not `upload` succeeds.
    pub fn allocate<T>(&self, upload: impl FnOnce() -> Result<T>, does_not_fit: impl FnOnce(&str, &wgpu::Error) -> String) -> Result<T> {
        // A browser answers an error scope only from its event loop: there, running out of memory
        // is an uncaptured error that the next readback reports (Gpu::check_healthy).
        #[cfg(target_arch = "wasm32")]
        {
            let _ = does_not_fit;
            upload()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let made = upload();
            let error = pollster::block_on(scope.pop());
            let made = made?;
            match error {
                Some(error) => Err(Error { kind: ErrorKind::DeviceMemory, message: does_not_fit(&self.describe(), &error) }),
                None => Ok(made),
            }
        }
    }

    /// Waits, without blocking, until the device has answered for everything queued so far, and
    /// returns what failed: a browser reports errors (running out of memory among them) only
    /// from its event loop, so a page awaits this after loading a model.
    pub async fn settle(&self) -> Result<()> {
        let probe = self.storage("settle", 4);
        self.start_read::<u32>(&probe, 1).read(self).await.map(|_| ())
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.poll(wgpu::PollType::wait_indefinitely())
    }

    /// Blocks until one submission (and those before it) is done; later ones may still run.
    pub fn wait_for(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        self.poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: None })
    }

    fn poll(&self, until: wgpu::PollType) -> Result<()> {
        self.device.poll(until).map_err(|e| Error::internal(format!("waiting for the GPU failed: {e}")))?;
        self.check_healthy()
    }
}

fn select_adapter(adapters: &[wgpu::Adapter], wanted: Option<&str>) -> Result<usize> {
    let names: Vec<String> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  {i}: {} ({:?})", a.get_info().name, a.get_info().backend))
        .collect();
    match wanted {
        Some(text) => {
            if let Ok(index) = text.parse::<usize>() {
                if index < adapters.len() {
                    return Ok(index);
                }
                return Err(Error::bad_input(format!(
                    "--device {index}: there are only {} adapters:\n{}",
                    adapters.len(),
                    names.join("\n")
                )));
            }
            let needle = text.to_lowercase();
            adapters
                .iter()
                .position(|a| a.get_info().name.to_lowercase().contains(&needle))
                .ok_or_else(|| {
                    Error::bad_input(format!("--device '{text}' matches no adapter name; adapters:\n{}", names.join("\n")))
                })
        }
        None => {
            // Prefer a real GPU (discrete, then integrated), then anything else, in enumeration order.
            let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            };
            Ok((0..adapters.len()).min_by_key(|&i| (rank(&adapters[i]), i)).unwrap())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mesa_major_version;

    #[test]
    fn mesa_versions_are_read_from_driver_descriptions() {
        assert_eq!(mesa_major_version("Mesa 22.3.6 (LLVM 15.0.6)"), Some(22));
        assert_eq!(mesa_major_version("Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)"), Some(25));
        assert_eq!(mesa_major_version("4.5 (Core Profile) Mesa 22.3.6"), Some(22));
        assert_eq!(mesa_major_version("NVIDIA 550.54"), None);
        assert_eq!(mesa_major_version("Mesa"), None);
    }
}
