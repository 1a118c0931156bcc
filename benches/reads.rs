//! What one read costs on the default adapter, by where it comes from: a loop of fused
//! multiply-adds over 8 vec4 accumulators, with and without one vec4 read per iteration, and the
//! same loop with its body unrolled 4 times (what a loop iteration itself costs).
//! `cargo bench --bench reads` prints ns per body (one read, 8 vec4 FMAs) per invocation and the
//! loop's GFLOP/s. On lavapipe this is what decides where the kernels read their operands
//! (`--reads`) and how much work one loop iteration carries: see BENCHMARKS.md.

use perplex::gpu::{Gpu, GpuOptions};
use std::time::Instant;

const WORKGROUP: u32 = 64;
const WORKGROUPS: u32 = 256;
const ITERATIONS: u32 = 4096;
/// Texels / vec4s the reads cycle over (a power of two).
const SPAN: u32 = 4096;

/// The loop; BODY repeats UNROLL times the folding of one vec4 (`read`, of body `i`, by
/// invocation `lane`) into the accumulators.
const KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read> words: array<vec4<f32>>;
@group(0) @binding(1) var texels: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
var<workgroup> shared_words: array<vec4<f32>, 256>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let lane = id.x;
    shared_words[local] = vec4<f32>(f32(local));
    workgroupBarrier();
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(1.0); var a2 = vec4<f32>(2.0); var a3 = vec4<f32>(3.0);
    var a4 = vec4<f32>(4.0); var a5 = vec4<f32>(5.0); var a6 = vec4<f32>(6.0); var a7 = vec4<f32>(7.0);
    var x = vec4<f32>(f32(lane) * 1e-9);
    for (var j = 0u; j < ITERATIONSu; j += UNROLLu) {
BODY    }
    out[lane] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}
"#;

fn body(read: &str, i: u32) -> String {
    format!(
        "        {{\n            let i = j + {i}u;\n            let r = {read};\n\
         \x20           a0 = fma(r, x, a0); a1 = fma(r, x, a1); a2 = fma(r, x, a2); a3 = fma(r, x, a3);\n\
         \x20           a4 = fma(r, a0, a4); a5 = fma(r, a1, a5); a6 = fma(r, a2, a6); a7 = fma(r, a3, a7);\n        }}\n"
    )
}

/// (what each body reads, the read, bodies per loop iteration).
fn variants() -> Vec<(&'static str, String, u32)> {
    let m = format!("{}u", SPAN - 1);
    let texel = |index: &str| format!("textureLoad(texels, vec2<u32>(({index}) & 63u, (({index}) >> 6u) & 63u), 0)");
    let registers = "vec4<f32>(f32(i) * 1e-9)".to_string();
    vec![
        ("nothing (registers only)", registers.clone(), 1),
        ("nothing, 4 bodies per loop iteration", registers, 4),
        ("storage buffer, same address on every lane", format!("words[i & {m}]"), 1),
        ("storage buffer, a different address per lane", format!("words[(i + lane * 7u) & {m}]"), 1),
        ("workgroup memory", "shared_words[(i + local) & 255u]".to_string(), 1),
        ("texel fetch, same texel on every lane", texel("i"), 1),
        ("texel fetch, a different texel per lane", texel("i + lane * 7u"), 1),
    ]
}

fn main() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    println!("adapter: {}", gpu.describe());
    let device = &gpu.device;
    let words = gpu.upload("words", &vec![0.5f32; 4 * SPAN as usize]);
    let out = gpu.storage("out", (WORKGROUP * WORKGROUPS * 16) as u64);
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("texels"),
        size: wgpu::Extent3d { width: 64, height: SPAN / 64, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: &[],
    });
    let view = texture.create_view(&Default::default());
    let bodies_run = (WORKGROUP * WORKGROUPS) as f64 * ITERATIONS as f64;
    println!("{:<48} {:>8} {:>10}", "each body reads", "ns/body", "GFLOP/s");
    for (name, read, unroll) in variants() {
        let bodies: String = (0..unroll).map(|i| body(&read, i)).collect();
        let source = KERNEL
            .replace("WORKGROUP)", &format!("{WORKGROUP})"))
            .replace("ITERATIONSu", &format!("{ITERATIONS}u"))
            .replace("UNROLLu", &format!("{unroll}u"))
            .replace("BODY", &bodies);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(source.as_str().into()) });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        // Bindings the variant does not use are absent from its derived layout.
        let mut entries = Vec::new();
        if read.starts_with("words[") {
            entries.push(wgpu::BindGroupEntry { binding: 0, resource: words.as_entire_binding() });
        }
        if read.contains("textureLoad") {
            entries.push(wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(&view) });
        }
        entries.push(wgpu::BindGroupEntry { binding: 2, resource: out.as_entire_binding() });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &entries });
        let run = || {
            let mut encoder = device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(WORKGROUPS, 1, 1);
            }
            gpu.queue.submit([encoder.finish()]);
            gpu.wait().unwrap();
        };
        run();
        let repeats = 3;
        let start = Instant::now();
        for _ in 0..repeats {
            run();
        }
        let seconds = start.elapsed().as_secs_f64() / repeats as f64;
        // 8 vec4 FMAs = 64 flops per body.
        println!("{name:<48} {:>8.2} {:>10.2}", seconds / bodies_run * 1e9, 64.0 * bodies_run / seconds / 1e9);
    }
}
