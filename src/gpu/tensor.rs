//! GPU buffers: activations (f32), and weight matrices kept in their checkpoint width and split
//! into row ranges whenever one would exceed the device's storage-binding limit.

use super::program::Operand;
use super::{Gpu, ReadPath, WeightFormat, TEXEL_BYTES, TEXTURE_WIDTH};
use crate::error::{Error, Result};
pub use crate::model::MatrixUse;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

// The weight-format types live below both the GPU and the model readers (crate::dtype); the GPU
// side re-exports them for its callers and adds the kernel format each one is read with.
pub use crate::dtype::{DType, Group, GROUP};

impl DType {
    pub fn format(self) -> WeightFormat {
        match self {
            DType::F32 => WeightFormat::F32,
            DType::F16 => WeightFormat::F16,
            DType::BF16 => WeightFormat::BF16,
            DType::Int8Groups => WeightFormat::Int8Groups,
        }
    }
}

/// Rows of a split matrix start at multiples of this (the LM-head kernel's vocabulary tile), so a
/// vocabulary tile never straddles two parts.
pub const ROW_ALIGN: usize = super::TILE_COLS;

/// Buffers are padded to whole 16-byte groups: kernels read them as vec4s.
fn padded(bytes: u64) -> u64 {
    bytes.max(16).div_ceil(16) * 16
}

/// One contiguous range of rows of a weight matrix, in its own buffer or texture (or both).
pub struct MatrixPart {
    /// The part's words in a storage buffer: every matrix on the buffer read path, and on the
    /// texture path those gathered by rows.
    buffer: Option<wgpu::Buffer>,
    /// The same words in rows of [`TEXTURE_WIDTH`] texels: on the texture path, every matrix the
    /// product kernels read.
    texture: Option<wgpu::Texture>,
    pub first_row: usize,
    pub rows: usize,
}

impl MatrixPart {
    /// The part as a kernel operand for the product kernels: its resident texture where it has
    /// one, else its buffer.
    pub fn product_operand(&self) -> Operand {
        match (&self.texture, &self.buffer) {
            (Some(texture), _) => Operand::Texture(texture.clone()),
            (None, Some(buffer)) => Operand::Buffer(buffer.clone()),
            (None, None) => unreachable!("a matrix part holds a buffer or a texture"),
        }
    }

    /// The part's storage buffer, for the embedding gather.
    pub fn rows_buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("a matrix gathered by rows was uploaded with MatrixUse::Rows or RowsAndProducts")
    }
}

/// A `[rows, cols]` row-major weight matrix (a PyTorch Linear weight or an embedding table).
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
    pub parts: Vec<MatrixPart>,
}

impl GpuMatrix {
    /// Uploads raw little-endian bytes of a `[rows, cols]` matrix, read as `usage` says, splitting
    /// it so that no part exceeds `gpu.max_binding`.
    pub fn upload(gpu: &Gpu, name: &str, rows: usize, cols: usize, dtype: DType, bytes: &[u8], usage: MatrixUse) -> Result<GpuMatrix> {
        if dtype == DType::Int8Groups && !cols.is_multiple_of(GROUP) {
            return Err(Error::internal(format!("{name}: {cols} columns are not whole groups of {GROUP}")));
        }
        let row_bytes = dtype.row_bytes(cols);
        if bytes.len() != rows * row_bytes {
            return Err(Error::internal(format!("{name}: {} bytes for a {rows}x{cols} {dtype:?} matrix", bytes.len())));
        }
        // Bytes of a part on the GPU: quantized groups go in pairs (`group_pairs`).
        let part_bytes = |part_rows: usize| match dtype {
            DType::Int8Groups => (part_rows * cols / GROUP).div_ceil(2) * 2 * Group::BYTES,
            _ => part_rows * row_bytes,
        } as u64;
        let rows_per_part = max_rows_per_part(gpu.max_binding, rows, part_bytes).ok_or_else(|| {
            Error::bad_input(format!(
                "{name}: {ROW_ALIGN} rows of {row_bytes} bytes, the smallest part a matrix is split into, exceed this \
                 device's storage binding limit ({} bytes)",
                gpu.max_binding
            ))
        })?;
        let mut parts = Vec::new();
        let mut first_row = 0;
        while first_row < rows {
            let part_rows = rows_per_part.min(rows - first_row);
            let slice = &bytes[first_row * row_bytes..(first_row + part_rows) * row_bytes];
            let label = format!("{name}[{first_row}..]");
            let words = match dtype {
                DType::Int8Groups => Cow::Owned(group_pairs(slice)),
                _ => Cow::Borrowed(slice),
            };
            let textures = gpu.read_path == ReadPath::Textures;
            let buffer = (!textures || usage != MatrixUse::Products).then(|| upload_padded(gpu, &label, &words));
            let texture = (textures && usage != MatrixUse::Rows).then(|| upload_texture(gpu, &label, &words));
            parts.push(MatrixPart { buffer, texture, first_row, rows: part_rows });
            first_row += part_rows;
        }
        Ok(GpuMatrix { rows, cols, dtype, parts })
    }

    pub fn bytes(&self) -> u64 {
        (self.rows * self.dtype.row_bytes(self.cols)) as u64
    }
}

/// The GPU layout of quantized groups (see weights_int8_groups.wgsl): consecutive groups in
/// pairs of three 16-byte words, both headers first, then each group's 16 integers, so that one
/// fetch brings all 16 integers of a group and another the headers of two. A part with an odd
/// number of groups ends with an empty one. The same bytes, moved: the values are unchanged.
fn group_pairs(groups: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(groups.len() + Group::BYTES);
    for pair in groups.chunks(2 * Group::BYTES) {
        let (first, second) = pair.split_at(Group::BYTES);
        let second = if second.is_empty() { &[0u8; Group::BYTES][..] } else { second };
        out.extend_from_slice(&first[..8]);
        out.extend_from_slice(&second[..8]);
        out.extend_from_slice(&first[8..]);
        out.extend_from_slice(&second[8..]);
    }
    out
}

/// Rows per part: all of them if the matrix fits in one binding, else the most that fit in a
/// multiple of ROW_ALIGN. None if even ROW_ALIGN rows do not fit.
fn max_rows_per_part(max_binding: u64, rows: usize, part_bytes: impl Fn(usize) -> u64) -> Option<usize> {
    let fits = |part_rows: usize| padded(part_bytes(part_rows)) <= max_binding;
    if fits(rows) {
        return Some(rows.max(1));
    }
    (1..).map(|n| n * ROW_ALIGN).take_while(|&part_rows| part_rows < rows && fits(part_rows)).last()
}

/// A texture of [`TEXTURE_WIDTH`]-texel rows holding `bytes`, zero-padded to whole texels, laid
/// out as the texture path's kernels index it (word i at texel i / 4 of the row-major texel grid).
fn upload_texture(gpu: &Gpu, label: &str, bytes: &[u8]) -> wgpu::Texture {
    let texels = padded(bytes.len() as u64) / TEXEL_BYTES;
    let texture = gpu.word_texture(label, texels);
    let mut words = Cow::Borrowed(bytes);
    if words.len() as u64 != texels * TEXEL_BYTES {
        words.to_mut().resize((texels * TEXEL_BYTES) as usize, 0);
    }
    let row_bytes = TEXTURE_WIDTH as u64 * TEXEL_BYTES;
    for (y, texels, rows) in Gpu::word_texture_spans(texels) {
        let offset = (y * row_bytes) as usize;
        let end = offset + (texels * TEXEL_BYTES * rows) as usize;
        gpu.queue.write_texture(
            wgpu::TexelCopyTextureInfo { texture: &texture, mip_level: 0, origin: wgpu::Origin3d { x: 0, y: y as u32, z: 0 }, aspect: wgpu::TextureAspect::All },
            &words[offset..end],
            wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some((texels * TEXEL_BYTES) as u32), rows_per_image: None },
            wgpu::Extent3d { width: texels as u32, height: rows as u32, depth_or_array_layers: 1 },
        );
    }
    texture
}

/// A storage buffer holding `bytes`, zero-padded to a multiple of 16 bytes.
pub fn upload_padded(gpu: &Gpu, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: padded(bytes.len() as u64),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: true,
    });
    {
        let mut view = buffer.slice(..).get_mapped_range_mut().expect("a buffer mapped at creation");
        view.slice(..bytes.len()).copy_from_slice(bytes);
    }
    buffer.unmap();
    buffer
}

impl Gpu {
    /// A storage buffer initialised from a slice of plain values.
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        upload_padded(self, label, bytemuck::cast_slice(data))
    }

    /// A zeroed storage buffer of at least `bytes` bytes.
    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: padded(bytes),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Copies the first `count` values of a buffer back to the host (blocking).
    pub fn read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, count: usize) -> Result<Vec<T>> {
        self.start_read(buffer, count).finish(self)
    }

    /// Queues a copy of the first `count` values of a buffer behind the work already submitted and
    /// returns at once; [`PendingRead::finish`] waits for that copy alone, so work submitted after
    /// this call keeps the device busy while the host collects the values.
    pub fn start_read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, count: usize) -> PendingRead<T> {
        let bytes = (count * std::mem::size_of::<T>()) as u64;
        if bytes == 0 {
            return PendingRead::nothing();
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.div_ceil(4) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, staging.size());
        let submission = self.queue.submit([encoder.finish()]);
        let mapped = Arc::new(MapSlot::default());
        let delivery = Delivery(Some(mapped.clone()));
        staging.map_async(wgpu::MapMode::Read, .., move |result| delivery.send(result));
        PendingRead { copy: Some(PendingCopy { staging, submission, mapped }), bytes, values: std::marker::PhantomData }
    }
}

type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;

/// Where a buffer's map callback leaves its result, and the task waiting for it.
#[derive(Default)]
struct MapSlot {
    state: Mutex<(Option<MapResult>, Option<std::task::Waker>)>,
}

impl MapSlot {
    fn deliver(&self, result: MapResult) {
        let mut state = self.state.lock().unwrap();
        state.0 = Some(result);
        if let Some(waker) = state.1.take() {
            waker.wake();
        }
    }
}

/// The map callback's hold on its slot. A callback dropped without being called (the device
/// gone) still delivers, an error, so no reader waits forever.
struct Delivery(Option<Arc<MapSlot>>);

impl Delivery {
    fn send(mut self, result: MapResult) {
        if let Some(slot) = self.0.take() {
            slot.deliver(result);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.deliver(Err(wgpu::BufferAsyncError));
        }
    }
}

/// Resolves once the map callback has run: at once after a native device's wait, or in a
/// browser when its event loop delivers the result.
struct Mapped<'a>(&'a MapSlot);

impl std::future::Future for Mapped<'_> {
    type Output = MapResult;

    fn poll(self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<MapResult> {
        let mut state = self.0.state.lock().unwrap();
        match state.0.take() {
            Some(result) => std::task::Poll::Ready(result),
            None => {
                state.1 = Some(context.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}

/// A readback queued by [`Gpu::start_read`].
pub struct PendingRead<T> {
    copy: Option<PendingCopy>,
    bytes: u64,
    values: std::marker::PhantomData<T>,
}

struct PendingCopy {
    staging: wgpu::Buffer,
    submission: wgpu::SubmissionIndex,
    mapped: Arc<MapSlot>,
}

impl<T: bytemuck::Pod> PendingRead<T> {
    /// A read of no values: finishes at once.
    pub fn nothing() -> PendingRead<T> {
        PendingRead { copy: None, bytes: 0, values: std::marker::PhantomData }
    }

    /// Waits until the copy (and everything submitted before it) is done and returns the values.
    pub fn finish(self, gpu: &Gpu) -> Result<Vec<T>> {
        pollster::block_on(self.read(gpu))
    }

    /// [`PendingRead::finish`] for callers that must not block (a browser's page, where the
    /// result arrives only once control is back in its event loop).
    pub async fn read(self, gpu: &Gpu) -> Result<Vec<T>> {
        let Some(copy) = self.copy else { return Ok(Vec::new()) };
        // A native device runs the map callback while it waits, or soon after on the thread
        // whose wait collected it; a browser's wait returns at once and its event loop runs it.
        gpu.wait_for(copy.submission)?;
        Mapped(&copy.mapped).await.map_err(|e| Error::internal(format!("reading GPU results failed: {e}")))?;
        gpu.check_healthy()?;
        let view = copy
            .staging
            .get_mapped_range(..)
            .map_err(|e| Error::internal(format!("reading GPU results failed: {e}")))?;
        let values = bytemuck::pod_collect_to_vec::<u8, T>(&view[..self.bytes as usize]);
        drop(view);
        copy.staging.unmap();
        Ok(values)
    }
}
