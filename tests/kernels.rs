//! Every kernel against the CPU reference on fresh random inputs at awkward shapes (not multiples
//! of the 64-wide tiles). Tolerance: KERNEL_F32 (1e-4 absolute + 1e-4 relative) unless stated.

mod common;

use common::{assert_close, gpu, gpu_reading, read_path_options, same_bits_on_every_read_path, seed, Rng, Tolerance, KERNEL_F32};
use perplex::gpu::{Gpu, ReadPath};
use std::sync::Arc;
use perplex::forward::RowLayout;
use perplex::gpu::{ops, DType, GpuMatrix, GpuOptions, Group, MatrixUse, Program, Sums, GROUP, TILE_COLS};
use perplex::reference::{self, HostMatrix};

fn to_bytes(values: &[f32], dtype: DType) -> (Vec<u8>, Vec<f32>) {
    // Returns the stored bytes and the values as the GPU will see them after widening.
    match dtype {
        DType::F32 => (bytemuck::cast_slice(values).to_vec(), values.to_vec()),
        DType::F16 => {
            let h: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
            (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|v| v.to_f32()).collect())
        }
        DType::BF16 => {
            let h: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_f32(v)).collect();
            (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|v| v.to_f32()).collect())
        }
        DType::Int8Groups => {
            // Each group of 16 quantized around its mean (the offset), as ggml's offset kinds are.
            let (mut bytes, mut seen) = (Vec::new(), Vec::new());
            for chunk in values.chunks(GROUP) {
                let offset = chunk.iter().sum::<f32>() / GROUP as f32;
                let scale = chunk.iter().map(|v| (v - offset).abs()).fold(1e-6, f32::max) / 127.0;
                let group = Group { scale, offset, q: std::array::from_fn(|j| ((chunk[j] - offset) / scale).round() as i8) };
                group.write(&mut bytes);
                seen.extend((0..GROUP).map(|j| group.value(j)));
            }
            (bytes, seen)
        }
    }
}

/// The matmul on every read path: each against the reference, and all bit-identical.
#[allow(clippy::too_many_arguments)]
fn run_matmul(rows: usize, n: usize, k: usize, dtype: DType, bias: bool, accumulate: bool, split_rows: Option<usize>, rng: &mut Rng) {
    let seed = rng.next_u64();
    same_bits_on_every_read_path(&format!("matmul {rows}x{n}x{k} {dtype:?}"), |path| {
        run_matmul_on(gpu_reading(path), path, rows, n, k, dtype, bias, accumulate, split_rows, &mut Rng::new(seed))
    });
}

#[allow(clippy::too_many_arguments)]
fn run_matmul_on(gpu: Arc<Gpu>, path: (ReadPath, bool), rows: usize, n: usize, k: usize, dtype: DType, bias: bool, accumulate: bool, split_rows: Option<usize>, rng: &mut Rng) -> Vec<f32> {
    let input = rng.vec(rows * k, 1.0);
    let (bytes, w) = to_bytes(&rng.vec(n * k, 0.5), dtype);
    let bias_values = rng.vec(n + 7, 1.0);
    let initial = rng.vec(rows * (n + 7), 1.0);
    let weight = match split_rows {
        Some(rows_per_part) => {
            // Force parts of `rows_per_part` rows by shrinking the binding limit.
            let limit = (rows_per_part * dtype.row_bytes(k) + 4) as u64;
            let limited = Gpu::new(&GpuOptions { max_binding_override: Some(limit), ..read_path_options(path) }).unwrap();
            let m = GpuMatrix::upload(&limited, "w", n, k, dtype, &bytes, MatrixUse::Products).unwrap();
            assert!(m.parts.len() > 1, "expected a split matrix");
            (m, Some(limited))
        }
        None => (GpuMatrix::upload(&gpu, "w", n, k, dtype, &bytes, MatrixUse::Products).unwrap(), None),
    };
    let gpu = weight.1.clone().unwrap_or(gpu);
    let weight = weight.0;
    let input_buf = gpu.upload("in", &input);
    let bias_buf = gpu.upload("bias", &bias_values);
    let out = gpu.upload("out", &initial);
    let stride = n + 7;
    let offset = 3;
    let mut p = Program::builder(&gpu);
    for part in &weight.parts {
        let params = ops::Matmul {
            rows: rows as u32,
            cols: part.rows as u32,
            depth: k as u32,
            col_offset: (offset + part.first_row) as u32,
            out_stride: stride as u32,
            has_bias: bias.into(),
            accumulate: accumulate.into(),
        };
        ops::matmul(&mut p, dtype.format(), params, &input_buf, part, &bias_buf, &out);
    }
    p.build().run(&gpu).unwrap();
    let got: Vec<f32> = gpu.read(&out, rows * stride).unwrap();
    let product = reference::matmul(&input, rows, &HostMatrix { rows: n, cols: k, data: w }, None);
    let mut want = initial.clone();
    for r in 0..rows {
        for c in 0..n {
            let mut v = product[r * n + c];
            if bias {
                v += bias_values[offset + c];
            }
            if accumulate {
                v += initial[r * stride + offset + c];
            }
            want[r * stride + offset + c] = v;
        }
    }
    assert_close(&got, &want, KERNEL_F32, &format!("matmul {rows}x{n}x{k} {dtype:?} {path:?}"));
    got
}

/// `--sums compensated`: long dot products land much closer to float64 than the plain f32 sum
/// (measured on lavapipe at depth 1,531: 6.9e-7 relative RMS plain, 3.8e-8 compensated), and
/// still give the same bits on every read path. Depths not a multiple of four, and 16-bit weights
/// taken eight at a time.
#[test]
fn compensated_sums_come_closer_to_float64() {
    let mut rng = Rng::new(seed());
    for (rows, n, k, dtype) in [(13, 75, 1531, DType::F32), (9, 130, 1536, DType::F16)] {
        let input = rng.vec(rows * k, 1.0);
        let (bytes, w) = to_bytes(&rng.vec(n * k, 0.5), dtype);
        let exact: Vec<f64> = (0..rows * n).map(|i| (0..k).map(|j| input[i / n * k + j] as f64 * w[i % n * k + j] as f64).sum()).collect();
        let relative_rms = |got: &[f32]| {
            let (error, size) = got.iter().zip(&exact).fold((0.0, 0.0), |(e, s), (&g, &x)| (e + (g as f64 - x).powi(2), s + x * x));
            (error / size).sqrt()
        };
        let run = |sums: Sums| {
            same_bits_on_every_read_path(&format!("{sums:?} matmul {rows}x{n}x{k}"), |path| {
                let gpu = Gpu::new(&GpuOptions { sums, ..read_path_options(path) }).unwrap();
                let weight = GpuMatrix::upload(&gpu, "w", n, k, dtype, &bytes, MatrixUse::Products).unwrap();
                let (input_buf, bias_buf, out) = (gpu.upload("in", &input), gpu.upload("bias", &vec![0f32; n]), gpu.upload("out", &vec![0f32; rows * n]));
                let mut p = Program::builder(&gpu);
                for part in &weight.parts {
                    let params = ops::Matmul { rows: rows as u32, cols: part.rows as u32, depth: k as u32, col_offset: part.first_row as u32, out_stride: n as u32, has_bias: 0, accumulate: 0 };
                    ops::matmul(&mut p, dtype.format(), params, &input_buf, part, &bias_buf, &out);
                }
                p.build().run(&gpu).unwrap();
                gpu.read(&out, rows * n).unwrap()
            })
        };
        let (plain, compensated) = (relative_rms(&run(Sums::Plain)), relative_rms(&run(Sums::Compensated)));
        eprintln!("depth {k} {dtype:?}: relative RMS error against float64 {plain:.2e} plain, {compensated:.2e} compensated");
        assert!(compensated < 1e-7, "compensated sums at depth {k}: {compensated:e} relative");
        assert!(plain > 4.0 * compensated, "depth {k}: plain {plain:e}, compensated {compensated:e}: no gain");
    }
}

#[test]
fn matmul_matches_reference_in_every_weight_format() {
    let mut rng = Rng::new(seed());
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        run_matmul(1, 1, 1, dtype, false, false, None, &mut rng);
        run_matmul(67, 93, 131, dtype, true, false, None, &mut rng);
        run_matmul(130, 65, 17, dtype, false, true, None, &mut rng);
        run_matmul(5, 200, 301, dtype, true, true, None, &mut rng);
        // Depths a multiple of 4 but not 8, and of 8 but not 16: f16 and bf16 step by four and by
        // eight (`DepthStep`), f32 by four.
        run_matmul(23, 70, 36, dtype, true, false, None, &mut rng);
        run_matmul(19, 141, 136, dtype, false, true, None, &mut rng);
        // Fewer rows than a register block: blocks of 2 and 4 rows (`matmul_block_rows`).
        run_matmul(2, 131, 44, dtype, true, true, None, &mut rng);
        run_matmul(3, 77, 29, dtype, true, false, None, &mut rng);
    }
    // Quantized rows are whole groups of 16: an odd number of them (steps of 16, pairs of groups
    // straddling rows) and an even one (steps of 32).
    run_matmul(1, 1, 16, DType::Int8Groups, false, false, None, &mut rng);
    run_matmul(67, 93, 144, DType::Int8Groups, true, false, None, &mut rng);
    run_matmul(5, 200, 304, DType::Int8Groups, true, true, None, &mut rng);
    run_matmul(37, 75, 160, DType::Int8Groups, true, false, None, &mut rng);
    run_matmul(9, 130, 32, DType::Int8Groups, false, true, None, &mut rng);
    run_matmul(3, 130, 48, DType::Int8Groups, true, true, None, &mut rng);
}

#[test]
fn matmul_over_a_split_weight_matches_reference() {
    let mut rng = Rng::new(seed());
    for dtype in [DType::F32, DType::F16] {
        run_matmul(33, 1100, 45, dtype, true, false, Some(512), &mut rng);
        run_matmul(33, 1100, 40, dtype, true, false, Some(512), &mut rng);
    }
    run_matmul(33, 1100, 48, DType::Int8Groups, true, false, Some(512), &mut rng);
    run_matmul(33, 1100, 64, DType::Int8Groups, true, false, Some(512), &mut rng);
}

#[test]
fn matmul_unaligned_depth_matches_reference() {
    // depth not a multiple of 4: the masked vec4 path.
    let mut rng = Rng::new(seed());
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        run_matmul(19, 150, 90, dtype, true, false, None, &mut rng);
        run_matmul(9, 31, 7, dtype, false, true, None, &mut rng);
    }
}

#[test]
fn matmul_masked_depth_reads_only_the_matrix() {
    // A depth not a multiple of 4 is read in masked steps of four that run past the last row's
    // end. 200 x 301 values fill their buffer to the last byte in every format (no zero padding
    // after them), and past a texture copy lies whatever earlier copies left in the shared scratch
    // texture: NaNs here, which would turn the masked products into NaN if they were read.
    let mut rng = Rng::new(seed());
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let seed = rng.next_u64();
        same_bits_on_every_read_path(&format!("matmul after NaNs {dtype:?}"), |path| {
            let gpu = Gpu::new(&read_path_options(path)).unwrap();
            leave_nans_in_scratch(&gpu, 400, 301, dtype);
            run_matmul_on(gpu, path, 5, 200, 301, dtype, true, false, None, &mut Rng::new(seed))
        });
    }
}

/// Runs a matmul with all-NaN weights of `n` x `k` on `gpu`: on the texture path their copy stays
/// in the scratch texture that later matmuls copy their weights into.
fn leave_nans_in_scratch(gpu: &Gpu, n: usize, k: usize, dtype: DType) {
    let weight = GpuMatrix::upload(gpu, "NaN", n, k, dtype, &vec![0xff; n * dtype.row_bytes(k)], MatrixUse::Products).unwrap();
    let (input, bias, output) = (gpu.storage("in", (k * 4) as u64), gpu.storage("bias", 16), gpu.storage("out", (n * 4) as u64));
    let mut p = Program::builder(gpu);
    let params = ops::Matmul { rows: 1, cols: n as u32, depth: k as u32, col_offset: 0, out_stride: n as u32, has_bias: 0, accumulate: 0 };
    ops::matmul(&mut p, dtype.format(), params, &input, &weight.parts[0], &bias, &output);
    p.build().run(gpu).unwrap();
}

/// The LM head on every read path: each against the reference, and all bit-identical.
fn run_lm_head(rows: usize, vocab: usize, k: usize, dtype: DType, split: bool, softcap: f32, rng: &mut Rng) {
    let seed = rng.next_u64();
    same_bits_on_every_read_path(&format!("LM head {rows}x{vocab}x{k} {dtype:?}"), |path| {
        run_lm_head_on(path, rows, vocab, k, dtype, split, softcap, &mut Rng::new(seed))
    });
}

/// The fused LM head (+ soft-capping) against log-softmax of the reference logits, over a
/// vocabulary split into parts when `split`.
#[allow(clippy::too_many_arguments)]
fn run_lm_head_on(path: (ReadPath, bool), rows: usize, vocab: usize, k: usize, dtype: DType, split: bool, softcap: f32, rng: &mut Rng) -> Vec<[f32; 2]> {
    let gpu = if split {
        let limit = (TILE_COLS * dtype.row_bytes(k) + 16) as u64;
        Gpu::new(&GpuOptions { max_binding_override: Some(limit), ..read_path_options(path) }).unwrap()
    } else {
        gpu_reading(path)
    };
    let hidden = rng.vec(rows * k, 1.0);
    let (bytes, w) = to_bytes(&rng.vec(vocab * k, 1.0), dtype);
    let head = GpuMatrix::upload(&gpu, "head", vocab, k, dtype, &bytes, MatrixUse::Products).unwrap();
    assert_eq!(head.parts.len() > 1, split);
    let targets: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
    let head = ops::LmHead { matrix: &head, vocab, softcap };
    let hidden_buf = gpu.upload("hidden", &hidden);
    let target_buf = gpu.upload("targets", &targets);
    let partials = gpu.storage("partials", (rows * head.tiles() * 16) as u64);
    let scores = gpu.storage("scores", (rows * 8) as u64);
    let mut p = Program::builder(&gpu);
    ops::lm_head_loss(&mut p, rows, head, &hidden_buf, &target_buf, &partials);
    ops::loss_combine(&mut p, rows, head.tiles(), &target_buf, &partials, &scores);
    p.build().run(&gpu).unwrap();
    let got: Vec<[f32; 2]> = gpu.read(&scores, rows).unwrap();
    let mut logits = reference::matmul(&hidden, rows, &HostMatrix { rows: vocab, cols: k, data: w }, None);
    if softcap > 0.0 {
        logits.iter_mut().for_each(|l| *l = softcap * (*l / softcap).tanh());
    }
    for r in 0..rows {
        let (want, greedy) = reference::log_softmax_target(&logits[r * vocab..(r + 1) * vocab], targets[r] as usize);
        let err = (got[r][0] as f64 - want).abs();
        assert!(err < 2e-4 * want.abs().max(1.0), "row {r}: log p {} want {want}", got[r][0]);
        let top = reference::argmax(&logits[r * vocab..(r + 1) * vocab]);
        assert_eq!(got[r][1], top as f32, "row {r}: argmax");
        assert_eq!(top == targets[r] as usize, greedy);
    }
    got
}

#[test]
fn lm_head_loss_matches_log_softmax() {
    let mut rng = Rng::new(seed());
    run_lm_head(13, 1000, 36, DType::F32, false, 0.0, &mut rng);
    run_lm_head(21, 777, 43, DType::BF16, false, 0.0, &mut rng);
    run_lm_head(9, 300, 40, DType::F16, false, 5.0, &mut rng);
    run_lm_head(12, 400, 56, DType::BF16, false, 0.0, &mut rng);
    run_lm_head(10, 555, 64, DType::Int8Groups, false, 0.0, &mut rng);
}

#[test]
fn lm_head_loss_over_split_vocabulary() {
    let mut rng = Rng::new(seed());
    run_lm_head(11, 700, 20, DType::F32, true, 0.0, &mut rng);
    run_lm_head(7, 600, 32, DType::Int8Groups, true, 0.0, &mut rng);
}

#[test]
fn lm_head_argmax_when_target_is_argmax() {
    // Targets chosen as the argmax must come back as the argmax (random targets rarely are).
    let gpu = gpu();
    let (rows, vocab, k) = (10, 259, 8);
    let mut rng = Rng::new(seed());
    let hidden = rng.vec(rows * k, 1.0);
    let w = rng.vec(vocab * k, 1.0);
    let logits = reference::matmul(&hidden, rows, &HostMatrix { rows: vocab, cols: k, data: w.clone() }, None);
    let targets: Vec<u32> = (0..rows).map(|r| reference::argmax(&logits[r * vocab..(r + 1) * vocab]) as u32).collect();
    let head = GpuMatrix::upload(&gpu, "head", vocab, k, DType::F32, bytemuck::cast_slice(&w), MatrixUse::Products).unwrap();
    let head = ops::LmHead { matrix: &head, vocab, softcap: 0.0 };
    let (hb, tb) = (gpu.upload("h", &hidden), gpu.upload("t", &targets));
    let partials = gpu.storage("partials", (rows * head.tiles() * 16) as u64);
    let scores = gpu.storage("scores", (rows * 8) as u64);
    let mut p = Program::builder(&gpu);
    ops::lm_head_loss(&mut p, rows, head, &hb, &tb, &partials);
    ops::loss_combine(&mut p, rows, head.tiles(), &tb, &partials, &scores);
    p.build().run(&gpu).unwrap();
    let got: Vec<[f32; 2]> = gpu.read(&scores, rows).unwrap();
    assert!(got.iter().zip(&targets).all(|(g, &t)| g[1] == t as f32), "{got:?}");
}

#[test]
fn norm_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    for (rows, width, layer, offset, accumulate) in [(7, 72, false, 0.0, false), (5, 301, true, 0.0, false), (3, 130, false, 1.0, true), (1, 5, true, 0.0, true)] {
        let x = rng.vec(rows * width, 2.0);
        let weight = rng.vec(width, 1.0);
        let bias = rng.vec(width, 1.0);
        let initial = rng.vec(rows * width, 1.0);
        let (xb, wb, bb, out) = (gpu.upload("x", &x), gpu.upload("w", &weight), gpu.upload("b", &bias), gpu.upload("o", &initial));
        let mut p = Program::builder(&gpu);
        let params = ops::Norm {
            segments_total: rows as u32,
            width: width as u32,
            segments: 1,
            stride: width as u32,
            offset: 0,
            layer_norm: layer.into(),
            has_bias: layer.into(),
            in_place: 0,
            accumulate: accumulate.into(),
            eps: 1e-5,
            weight_offset: offset,
        };
        ops::norm(&mut p, params, &xb, &wb, &bb, &out);
        p.build().run(&gpu).unwrap();
        let got: Vec<f32> = gpu.read(&out, rows * width).unwrap();
        let kind = if layer { perplex::model::NormKind::Layer } else { perplex::model::NormKind::Rms };
        let mut want = reference::norm(&x, width, &weight, layer.then_some(&bias[..]), kind, 1e-5, offset);
        if accumulate {
            want.iter_mut().zip(&initial).for_each(|(w, i)| *w += i);
        }
        assert_close(&got, &want, KERNEL_F32, &format!("norm rows {rows} width {width} layer {layer}"));
    }
}

#[test]
fn rope_matches_reference_including_partial_rotary() {
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    // Plain windows, and packed ones whose segments restart their positions.
    let packed = |len: usize| {
        let mut layout = RowLayout::default();
        layout.push_window(len, 5, &[3, 1, len - 10]);
        layout
    };
    for (windows, len, heads, head_dim, half, layout) in
        [(2, 13, 5, 12, 6, RowLayout::plain(2, 13)), (1, 40, 3, 16, 4, RowLayout::plain(1, 40)), (1, 23, 3, 16, 5, packed(23))]
    {
        let rows = windows * len;
        let stride = heads * head_dim + 7; // v heads and padding after the rotated heads
        let x = rng.vec(rows * stride, 1.0);
        let table: Vec<[f32; 2]> = (0..len * half).map(|i| { let a = i as f64 * 0.37; [a.cos() as f32, a.sin() as f32] }).collect();
        let (tb, xb) = (gpu.upload("table", bytemuck::cast_slice::<[f32; 2], f32>(&table)), gpu.upload("x", &x));
        let pb = gpu.upload("positions", &layout.positions);
        let mut p = Program::builder(&gpu);
        let params = ops::Rope { rows: rows as u32, heads: heads as u32, head_dim: head_dim as u32, rotary_half: half as u32, stride: stride as u32 };
        ops::rope(&mut p, params, &pb, &tb, &xb);
        p.build().run(&gpu).unwrap();
        let got: Vec<f32> = gpu.read(&xb, rows * stride).unwrap();
        let mut want = x.clone();
        let positions: Vec<usize> = layout.positions.iter().map(|&p| p as usize).collect();
        reference::rope(&mut want, stride, heads, head_dim, half, &positions, &table);
        assert_close(&got, &want, KERNEL_F32, "rope");
    }
}

#[test]
fn attention_matches_reference() {
    let mut rng = Rng::new(seed());
    // (windows, len, q heads, kv heads, head dim, sliding window)
    for (windows, len, qh, kvh, hd, sliding) in [(2, 37, 6, 2, 12, None), (1, 70, 4, 4, 16, None), (3, 33, 2, 1, 10, Some(9)), (1, 5, 1, 1, 64, None)] {
        let qkv = rng.vec(windows * len * (qh + 2 * kvh) * hd, 1.5);
        let got = run_attention(&qkv, windows, len, qh, kvh, hd, sliding, &RowLayout::plain(windows, len));
        let width = (qh + 2 * kvh) * hd;
        let mut want = Vec::new();
        for w in 0..windows {
            let slice = |from: usize, n: usize| -> Vec<f32> {
                (0..len).flat_map(|t| qkv[(w * len + t) * width + from..][..n].to_vec()).collect()
            };
            let (q, k, v) = (slice(0, qh * hd), slice(qh * hd, kvh * hd), slice((qh + kvh) * hd, kvh * hd));
            want.extend(reference::attention(&q, &k, &v, len, qh, kvh, hd, 1.0 / (hd as f32).sqrt(), sliding));
        }
        assert_close(&got, &want, KERNEL_F32, &format!("attention {windows}x{len} {qh}/{kvh} hd {hd} sliding {sliding:?}"));
    }
}

/// The attention kernel's output for `windows` windows of `len` rows laid out by `layout`, the same
/// bits on every read path (tiled through workgroup memory, or keys read from a texture).
#[allow(clippy::too_many_arguments)]
fn run_attention(qkv: &[f32], windows: usize, len: usize, qh: usize, kvh: usize, hd: usize, sliding: Option<usize>, layout: &RowLayout) -> Vec<f32> {
    same_bits_on_every_read_path(&format!("attention {windows}x{len} hd {hd}"), |path| {
        run_attention_on(path, qkv, windows, len, qh, kvh, hd, sliding, layout)
    })
}

#[allow(clippy::too_many_arguments)]
fn run_attention_on(path: (ReadPath, bool), qkv: &[f32], windows: usize, len: usize, qh: usize, kvh: usize, hd: usize, sliding: Option<usize>, layout: &RowLayout) -> Vec<f32> {
    let gpu = gpu_reading(path);
    let rows = windows * len;
    let width = (qh + 2 * kvh) * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let (qb, pb, sb) = (gpu.upload("qkv", qkv), gpu.upload("positions", &layout.positions), gpu.upload("segments", &layout.segments));
    let out = gpu.storage("out", (rows * qh * hd * 4) as u64);
    let mut p = Program::builder(&gpu);
    let params = ops::Attention {
        rows: rows as u32,
        window_len: len as u32,
        q_heads: qh as u32,
        kv_heads: kvh as u32,
        qkv_stride: width as u32,
        scale,
        softcap: 0.0,
        sliding_window: sliding.unwrap_or(0) as u32,
        packed: layout.packed.into(),
    };
    ops::attention(&mut p, hd as u32, params, &qb, &pb, &sb, &out);
    p.build().run(&gpu).unwrap();
    gpu.read(&out, rows * qh * hd).unwrap()
}

/// Packed windows (a shared prefix, then segments that each see the prefix and themselves, at
/// positions restarting after the prefix) against the visibility rule written out on the CPU,
/// next to plain windows and padding in the same pass.
#[test]
fn packed_attention_matches_reference() {
    let mut rng = Rng::new(seed());
    // (len, [(shared rows, segment rows)] per window, q heads, kv heads, head dim, sliding window)
    let cases = [
        (45, vec![(7, vec![3, 1, 12, 5]), (0, vec![]), (20, vec![1, 1])], 6, 2, 12, None),
        (70, vec![(33, vec![30, 2, 5])], 4, 4, 16, None),
        (37, vec![(9, vec![4, 13, 6]), (1, vec![36])], 2, 1, 10, Some(11)),
        (33, vec![(31, vec![1, 1]), (3, vec![2, 2, 2])], 3, 1, 64, Some(4)),
    ];
    for (len, windows, qh, kvh, hd, sliding) in cases {
        let mut layout = RowLayout::default();
        for (shared, segments) in &windows {
            layout.push_window(len, *shared, segments);
        }
        let qkv = rng.vec(windows.len() * len * (qh + 2 * kvh) * hd, 1.5);
        let got = run_attention(&qkv, windows.len(), len, qh, kvh, hd, sliding, &layout);
        let width = (qh + 2 * kvh) * hd;
        let mut want = Vec::new();
        for (w, (shared, segments)) in windows.iter().enumerate() {
            // Per row of the window: its position and the first row of its segment (0 outside).
            let (mut position, mut start): (Vec<usize>, Vec<usize>) = ((0..len).collect(), vec![0; len]);
            let mut row = *shared;
            for &n in segments {
                for i in 0..n {
                    position[row + i] = shared + i;
                    start[row + i] = row;
                }
                row += n;
            }
            let shared_end = if segments.is_empty() { len } else { *shared };
            let visible = |t: usize, s: usize| {
                s <= t && (s < shared_end || s >= start[t]) && sliding.is_none_or(|sw| position[t] - position[s] < sw)
            };
            let slice = |from: usize, n: usize| -> Vec<f32> {
                (0..len).flat_map(|t| qkv[(w * len + t) * width + from..][..n].to_vec()).collect()
            };
            let (q, k, v) = (slice(0, qh * hd), slice(qh * hd, kvh * hd), slice((qh + kvh) * hd, kvh * hd));
            want.extend(reference::attention_masked(&q, &k, &v, len, qh, kvh, hd, 1.0 / (hd as f32).sqrt(), 0.0, visible));
        }
        assert_close(&got, &want, KERNEL_F32, &format!("packed attention len {len} {windows:?} {qh}/{kvh} hd {hd} sliding {sliding:?}"));
    }
}

#[test]
fn activations_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    use perplex::model::Activation;
    for (kind, gated) in [(Activation::Silu, true), (Activation::GeluTanh, true), (Activation::GeluErf, false), (Activation::Silu, false)] {
        let (rows, width) = (6, 77);
        let input = rng.vec(rows * width * if gated { 2 } else { 1 }, 6.0);
        let (ib, out) = (gpu.upload("in", &input), gpu.storage("out", (rows * width * 4) as u64));
        let mut p = Program::builder(&gpu);
        ops::activation(&mut p, kind, ops::Activation { rows: rows as u32, width: width as u32, gated: gated.into() }, &ib, &out);
        p.build().run(&gpu).unwrap();
        let got: Vec<f32> = gpu.read(&out, rows * width).unwrap();
        let stride = if gated { 2 * width } else { width };
        let want: Vec<f32> = (0..rows * width)
            .map(|i| {
                let (r, c) = (i / width, i % width);
                let y = reference::activate(kind, input[r * stride + c]);
                if gated { y * input[r * stride + width + c] } else { y }
            })
            .collect();
        assert_close(&got, &want, KERNEL_F32, &format!("{kind:?} gated {gated}"));
    }
}

#[test]
fn embedding_gather_over_split_table_matches_reference() {
    let mut rng = Rng::new(seed());
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::Int8Groups] {
        let (vocab, width, rows) = (600, if dtype == DType::Int8Groups { 32 } else { 10 }, 23);
        let limit = (TILE_COLS * dtype.row_bytes(width) + 16) as u64;
        let gpu = Gpu::new(&GpuOptions { max_binding_override: Some(limit), ..Default::default() }).unwrap();
        let (bytes, table) = to_bytes(&rng.vec(vocab * width, 1.0), dtype);
        let matrix = GpuMatrix::upload(&gpu, "embed", vocab, width, dtype, &bytes, MatrixUse::Rows).unwrap();
        assert!(matrix.parts.len() >= 4);
        let tokens: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
        let (tb, out) = (gpu.upload("tokens", &tokens), gpu.storage("x", (rows * width * 4) as u64));
        let mut p = Program::builder(&gpu);
        for part in &matrix.parts {
            let params = ops::Embedding {
                rows: rows as u32,
                width: width as u32,
                first_row: part.first_row as u32,
                part_rows: part.rows as u32,
                scale: 1.5,
                accumulate: 0,
            };
            ops::embedding(&mut p, dtype.format(), params, &tb, part.rows_buffer(), &out);
        }
        p.build().run(&gpu).unwrap();
        let got: Vec<f32> = gpu.read(&out, rows * width).unwrap();
        let want: Vec<f32> = tokens.iter().flat_map(|&t| table[t as usize * width..][..width].iter().map(|v| v * 1.5)).collect();
        assert_close(&got, &want, Tolerance { abs: 0.0, rel: 1e-6 }, &format!("embedding {dtype:?}"));
    }
}

/// How the compared model of [`run_compare_on`] relates to the base.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Relation {
    /// Unrelated random weights and hidden states (its own depth).
    Unrelated,
    /// The base itself: KL exactly 0, the same log-probabilities.
    Same,
    /// The base's head with hidden states perturbed by 1e-3: a KL of order 1e-6.
    Close,
}

/// perplex compare's kernels (stack_rows, compare_head, compare_combine) on every read path, each
/// against [`reference::compare_logits`] in f64 on the reference logits, all bit-identical.
#[allow(clippy::too_many_arguments)]
fn run_compare(rows: usize, vocab: usize, depths: (usize, usize), dtype: DType, split: bool, softcaps: (f32, f32), relation: Relation, rng: &mut Rng) {
    let seed = rng.next_u64();
    same_bits_on_every_read_path(&format!("compare {rows}x{vocab}x{depths:?} {dtype:?} {relation:?}"), |path| {
        run_compare_on(path, rows, vocab, depths, dtype, split, softcaps, relation, &mut Rng::new(seed))
    });
}

#[allow(clippy::too_many_arguments)]
fn run_compare_on(path: (ReadPath, bool), rows: usize, vocab: usize, (da, db): (usize, usize), dtype: DType, split: bool, (cap_a, cap_b): (f32, f32), relation: Relation, rng: &mut Rng) -> Vec<[f32; 5]> {
    let k = da + db;
    let gpu = if split {
        let limit = (TILE_COLS * dtype.row_bytes(k) + 16) as u64;
        Gpu::new(&GpuOptions { max_binding_override: Some(limit), ..read_path_options(path) }).unwrap()
    } else {
        gpu_reading(path)
    };
    let hidden_a = rng.vec(rows * da, 1.0);
    let hidden_b = match relation {
        Relation::Unrelated => rng.vec(rows * db, 1.0),
        Relation::Same => hidden_a.clone(),
        Relation::Close => hidden_a.iter().zip(rng.vec(rows * db, 1e-3)).map(|(a, e)| a + e).collect(),
    };
    // Both heads side by side, row v = [head_a row v | head_b row v], in `dtype` (quantized rows
    // are whole groups of each head, so each half quantizes as the head alone would).
    let head_a = rng.vec(vocab * da, 1.0);
    let head_b = if relation == Relation::Unrelated { rng.vec(vocab * db, 1.0) } else { head_a.clone() };
    let mut values = Vec::with_capacity(vocab * k);
    for v in 0..vocab {
        values.extend_from_slice(&head_a[v * da..(v + 1) * da]);
        values.extend_from_slice(&head_b[v * db..(v + 1) * db]);
    }
    let (bytes, seen) = to_bytes(&values, dtype);
    let head = GpuMatrix::upload(&gpu, "paired head", vocab, k, dtype, &bytes, MatrixUse::Products).unwrap();
    assert_eq!(head.parts.len() > 1, split);
    let targets: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
    let (a_buf, b_buf, target_buf) = (gpu.upload("a", &hidden_a), gpu.upload("b", &hidden_b), gpu.upload("targets", &targets));
    let stacked = gpu.storage("stacked", (2 * rows * k * 4) as u64);
    let tiles = ops::vocab_tiles(vocab);
    let partials = gpu.storage("partials", (rows * tiles * 48) as u64);
    let output = gpu.storage("output", (rows * 20) as u64);
    let mut p = Program::builder(&gpu);
    ops::stack_rows(&mut p, ops::StackRows { rows: rows as u32, width_a: da as u32, width_b: db as u32 }, &a_buf, &b_buf, &stacked);
    let paired = ops::PairedHead { matrix: &head, vocab, softcap_base: cap_a, softcap_model: cap_b };
    ops::compare_head(&mut p, rows, paired, &stacked, &target_buf, &partials);
    ops::compare_combine(&mut p, rows, tiles, &target_buf, &partials, &output);
    p.build().run(&gpu).unwrap();

    // stack_rows: exact copies and zeros.
    let got_stacked: Vec<f32> = gpu.read(&stacked, 2 * rows * k).unwrap();
    for m in 0..rows {
        let mut want = vec![0.0; 2 * k];
        want[..da].copy_from_slice(&hidden_a[m * da..(m + 1) * da]);
        want[k + da..].copy_from_slice(&hidden_b[m * db..(m + 1) * db]);
        assert_eq!(&got_stacked[2 * m * k..2 * (m + 1) * k], &want[..], "stacked rows of {m}");
    }

    let got: Vec<[f32; 5]> = gpu.read(&output, rows).unwrap();
    let half = |first: usize, width: usize| HostMatrix { rows: vocab, cols: width, data: (0..vocab).flat_map(|v| seen[v * k + first..v * k + first + width].to_vec()).collect() };
    let cap = |logits: &mut Vec<f32>, c: f32| {
        if c > 0.0 {
            logits.iter_mut().for_each(|l| *l = c * (*l / c).tanh());
        }
    };
    let mut logits_a = reference::matmul(&hidden_a, rows, &half(0, da), None);
    let mut logits_b = reference::matmul(&hidden_b, rows, &half(da, db), None);
    cap(&mut logits_a, cap_a);
    cap(&mut logits_b, cap_b);
    let mut worst_kl = (0.0f64, 0.0f64);
    for r in 0..rows {
        let row = |l: &[f32]| l[r * vocab..(r + 1) * vocab].to_vec();
        let (kl, lp_a, lp_b, top_a, top_b) = reference::compare_logits(&row(&logits_a), &row(&logits_b), targets[r] as usize);
        let [g_kl, g_a, g_b, g_top_a, g_top_b] = got[r];
        let what = format!("row {r} {relation:?} {dtype:?} {path:?}");
        // Log-probabilities as for the LM head; the KL to 1e-4 relative plus 1e-9 absolute, also
        // where the models nearly agree (KL of order 1e-6, a difference of terms of order 1e-3).
        assert!((g_a as f64 - lp_a).abs() < 2e-4 * lp_a.abs().max(1.0), "{what}: log p_base {g_a} want {lp_a}");
        assert!((g_b as f64 - lp_b).abs() < 2e-4 * lp_b.abs().max(1.0), "{what}: log p_model {g_b} want {lp_b}");
        assert!((g_kl as f64 - kl).abs() <= 1e-4 * kl + 1e-9, "{what}: KL {g_kl} want {kl}");
        if (g_kl as f64 - kl).abs() >= worst_kl.0 {
            worst_kl = ((g_kl as f64 - kl).abs(), kl);
        }
        assert_eq!((g_top_a as usize, g_top_b as usize), (top_a, top_b), "{what}: top tokens");
        if relation == Relation::Same {
            assert_eq!(g_kl, 0.0, "{what}: a model against itself");
            assert_eq!(g_a.to_bits(), g_b.to_bits(), "{what}: the same log-probability");
        }
    }
    eprintln!("compare {relation:?} {dtype:?} {path:?}: largest |KL error| {:.1e} (at KL {:.1e})", worst_kl.0, worst_kl.1);
    // The base's log-probabilities are the LM head's, bit for bit: `compare` and `ppl` agree.
    {
        let (bytes_a, _) = to_bytes(&head_a, dtype);
        let alone = GpuMatrix::upload(&gpu, "base head", vocab, da, dtype, &bytes_a, MatrixUse::Products).unwrap();
        let lm = ops::LmHead { matrix: &alone, vocab, softcap: cap_a };
        let partials = gpu.storage("partials", (rows * lm.tiles() * 16) as u64);
        let scores = gpu.storage("scores", (rows * 8) as u64);
        let mut p = Program::builder(&gpu);
        ops::lm_head_loss(&mut p, rows, lm, &a_buf, &target_buf, &partials);
        ops::loss_combine(&mut p, rows, lm.tiles(), &target_buf, &partials, &scores);
        p.build().run(&gpu).unwrap();
        let scores: Vec<[f32; 2]> = gpu.read(&scores, rows).unwrap();
        for r in 0..rows {
            assert_eq!(scores[r][0].to_bits(), got[r][1].to_bits(), "row {r} {path:?}: compare's log p_base is not the LM head's");
        }
    }
    got
}

#[test]
fn compare_kernels_match_reference() {
    let mut rng = Rng::new(seed());
    // Unrelated models of different widths, depths not multiples of 4 (masked steps straddling
    // the two halves), vocabularies not multiples of the tile, rows not of the block.
    run_compare(13, 1000, (36, 20), DType::F32, false, (0.0, 0.0), Relation::Unrelated, &mut rng);
    run_compare(21, 777, (10, 13), DType::F16, false, (0.0, 0.0), Relation::Unrelated, &mut rng);
    run_compare(9, 300, (40, 24), DType::BF16, false, (5.0, 0.0), Relation::Unrelated, &mut rng);
    run_compare(10, 555, (48, 16), DType::Int8Groups, false, (0.0, 0.0), Relation::Unrelated, &mut rng);
    // Near and at equality, where the KL is a small difference of larger terms.
    run_compare(17, 900, (24, 24), DType::F32, false, (0.0, 0.0), Relation::Close, &mut rng);
    run_compare(11, 400, (32, 32), DType::F16, false, (0.0, 0.0), Relation::Same, &mut rng);
}

#[test]
fn compare_kernels_over_split_vocabulary() {
    let mut rng = Rng::new(seed());
    run_compare(11, 700, (12, 8), DType::F32, true, (0.0, 0.0), Relation::Unrelated, &mut rng);
    run_compare(7, 600, (16, 32), DType::Int8Groups, true, (0.0, 0.0), Relation::Unrelated, &mut rng);
}

/// Generation's cache append: the key and value columns of the rows that have a cache row land
/// there exactly, and nothing else changes.
#[test]
fn kv_store_writes_keys_and_values_to_their_cache_rows() {
    let mut rng = Rng::new(seed());
    // (rows, q heads, kv heads, head dim, cache rows)
    for (rows, qh, kvh, hd, cache_len) in [(7, 6, 2, 12, 50), (65, 4, 4, 10, 130), (3, 2, 1, 80, 9)] {
        let gpu = gpu();
        let width = (qh + 2 * kvh) * hd;
        let kv_width = kvh * hd;
        let qkv = rng.vec(rows * width, 1.0);
        let initial = rng.vec(cache_len * 2 * kv_width, 1.0);
        // Distinct destinations in a shuffled order, every third row kept out.
        let mut destinations: Vec<u32> = (0..cache_len as u32).collect();
        for i in (1..destinations.len()).rev() {
            destinations.swap(i, rng.below(i + 1));
        }
        let cache_rows: Vec<u32> = (0..rows).map(|r| if r % 3 == 2 { ops::NO_CACHE_ROW } else { destinations[r] }).collect();
        let (qb, rb, cache) = (gpu.upload("qkv", &qkv), gpu.upload("cache rows", &cache_rows), gpu.upload("cache", &initial));
        let mut p = Program::builder(&gpu);
        let params = ops::KvStore { rows: rows as u32, kv_width: kv_width as u32, qkv_stride: width as u32, k_offset: (qh * hd) as u32 };
        ops::kv_store(&mut p, params, &qb, &rb, &cache);
        p.build().run(&gpu).unwrap();
        let got: Vec<f32> = gpu.read(&cache, cache_len * 2 * kv_width).unwrap();
        let mut want = initial.clone();
        for (r, &dest) in cache_rows.iter().enumerate().filter(|(_, &d)| d != ops::NO_CACHE_ROW) {
            want[dest as usize * 2 * kv_width..][..2 * kv_width].copy_from_slice(&qkv[r * width + qh * hd..][..2 * kv_width]);
        }
        assert!(got == want, "kv_store {rows} rows {qh}/{kvh} hd {hd}");
    }
}

/// Generation's attention: each row's query over the keys of its slot of the KV cache up to its
/// position (within the sliding window), against the reference's causal attention over the same
/// keys, with GQA, soft-capping, head sizes under and over the 64 lanes, and positions that are
/// not multiples of the key tile.
#[test]
fn decode_attention_matches_reference() {
    let mut rng = Rng::new(seed());
    // (q heads, kv heads, head dim, slots, slot length, sliding window, softcap)
    let cases = [
        (6, 2, 12, 3, 150, None, 0.0),
        (4, 4, 64, 2, 70, Some(9), 0.0),
        (2, 1, 10, 4, 129, Some(64), 0.0),
        (8, 2, 80, 2, 33, None, 20.0),
        (3, 1, 256, 1, 67, Some(3), 0.0),
    ];
    for (qh, kvh, hd, slots, slot_len, sliding, softcap) in cases {
        let gpu = gpu();
        let kv_width = kvh * hd;
        let width = (qh + 2 * kvh) * hd;
        let cache = rng.vec(slots * slot_len * 2 * kv_width, 1.5);
        // Rows: every slot at an awkward position, one at its first and one at its last.
        let mut rows: Vec<(usize, usize)> = (0..slots).map(|s| (s, rng.below(slot_len))).collect();
        rows.extend([(0, 0), (slots - 1, slot_len - 1)]);
        let qkv = rng.vec(rows.len() * width, 1.5);
        let cache_rows: Vec<u32> = rows.iter().map(|&(s, p)| (s * slot_len + p) as u32).collect();
        let (qb, rb, cb) = (gpu.upload("qkv", &qkv), gpu.upload("cache rows", &cache_rows), gpu.upload("cache", &cache));
        let out = gpu.storage("out", (rows.len() * qh * hd * 4) as u64);
        let scale = 1.0 / (hd as f32).sqrt();
        let params = ops::DecodeAttention {
            rows: rows.len() as u32,
            q_heads: qh as u32,
            kv_heads: kvh as u32,
            qkv_stride: width as u32,
            slot_len: slot_len as u32,
            scale,
            softcap,
            sliding_window: sliding.unwrap_or(0) as u32,
        };
        let mut p = Program::builder(&gpu);
        ops::decode_attention(&mut p, hd as u32, params, &qb, &rb, &cb, &out);
        p.build().run(&gpu).unwrap();
        let got = gpu.read(&out, rows.len() * qh * hd).unwrap();
        let mut want = Vec::new();
        for (r, &(slot, position)) in rows.iter().enumerate() {
            // The reference over positions 0..=position with this row's query at the last one.
            let len = position + 1;
            let cache_row = |t: usize| &cache[(slot * slot_len + t) * 2 * kv_width..][..2 * kv_width];
            let mut q = vec![0.0; len * qh * hd];
            q[position * qh * hd..].copy_from_slice(&qkv[r * width..][..qh * hd]);
            let k: Vec<f32> = (0..len).flat_map(|t| cache_row(t)[..kv_width].to_vec()).collect();
            let v: Vec<f32> = (0..len).flat_map(|t| cache_row(t)[kv_width..].to_vec()).collect();
            let all = reference::attention_capped(&q, &k, &v, len, qh, kvh, hd, scale, sliding, softcap);
            want.extend_from_slice(&all[position * qh * hd..]);
        }
        assert_close(&got, &want, KERNEL_F32, &format!("decode attention {qh}/{kvh} hd {hd} slot {slot_len} sliding {sliding:?} softcap {softcap}"));
    }
}

/// Generation's head: the argmax of each row's logits (ties to the lowest id) and its
/// log-probability, over a vocabulary split across parts.
#[test]
fn greedy_head_finds_the_argmax_and_its_logprob() {
    let mut rng = Rng::new(seed());
    for (rows, vocab, k, split) in [(5, 300, 24, false), (3, 1000, 33, true)] {
        let gpu = gpu();
        let input = rng.vec(rows * k, 1.0);
        let mut weights = rng.vec(vocab * k, 0.5);
        // Row 1 of the matrix repeated at 2 and vocab - 1: a tie if it wins, decided by the lower id.
        let first: Vec<f32> = weights[k..2 * k].to_vec();
        weights[2 * k..3 * k].copy_from_slice(&first);
        weights[(vocab - 1) * k..].copy_from_slice(&first);
        let gpu = if split { Gpu::new(&GpuOptions { max_binding_override: Some((vocab / 2 * k * 4) as u64), ..Default::default() }).unwrap() } else { gpu };
        let matrix = GpuMatrix::upload(&gpu, "head", vocab, k, DType::F32, bytemuck::cast_slice(&weights), MatrixUse::Products).unwrap();
        assert_eq!(matrix.parts.len() > 1, split);
        let head = ops::LmHead { matrix: &matrix, vocab, softcap: 0.0 };
        let (ib, tb) = (gpu.upload("input", &input), gpu.upload("targets", &vec![0u32; rows]));
        let partials = gpu.storage("partials", (rows * head.tiles() * 16) as u64);
        let out = gpu.storage("out", (rows * 8) as u64);
        let mut p = Program::builder(&gpu);
        ops::lm_head_loss(&mut p, rows, head, &ib, &tb, &partials);
        ops::greedy_combine(&mut p, rows, head.tiles(), &tb, &partials, &out);
        p.build().run(&gpu).unwrap();
        let got: Vec<f32> = gpu.read(&out, rows * 2).unwrap();
        let host = HostMatrix { rows: vocab, cols: k, data: weights.clone() };
        let logits = reference::matmul(&input, rows, &host, None);
        for r in 0..rows {
            let row = &logits[r * vocab..][..vocab];
            let argmax = reference::argmax(row);
            let (logprob, _) = reference::log_softmax_target(row, argmax);
            assert_eq!(got[2 * r] as usize, argmax, "row {r} of {rows}x{vocab}");
            assert!((got[2 * r + 1] as f64 - logprob).abs() < 1e-4, "row {r}: log p {} vs {logprob}", got[2 * r + 1]);
        }
    }
}
