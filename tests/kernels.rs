//! Every kernel against the CPU reference on fresh random inputs at awkward shapes (not multiples
//! of the 64-wide tiles). Tolerance: KERNEL_F32 (1e-4 absolute + 1e-4 relative) unless stated.

mod common;

use common::{assert_close, gpu, seed, Rng, KERNEL_F32};
use perplex::gpu::{f32_bits, row_grid, DType, GpuMatrix, GpuOptions, KernelId, Program, BLOCK_ROWS, TILE_COLS};
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
    }
}

fn run_matmul(rows: usize, n: usize, k: usize, dtype: DType, bias: bool, accumulate: bool, split_rows: Option<usize>, rng: &mut Rng) {
    let gpu = gpu();
    let input = rng.vec(rows * k, 1.0);
    let (bytes, w) = to_bytes(&rng.vec(n * k, 0.5), dtype);
    let bias_values = rng.vec(n + 7, 1.0);
    let initial = rng.vec(rows * (n + 7), 1.0);
    let weight = match split_rows {
        Some(rows_per_part) => {
            // Force parts of `rows_per_part` rows by shrinking the binding limit.
            let limit = (rows_per_part * k * dtype.size() + 4) as u64;
            let limited = perplex::gpu::Gpu::new(&GpuOptions { max_binding_override: Some(limit), ..Default::default() }).unwrap();
            let m = GpuMatrix::upload(&limited, "w", n, k, dtype, &bytes).unwrap();
            assert!(m.parts.len() > 1, "expected a split matrix");
            (m, Some(limited))
        }
        None => (GpuMatrix::upload(&gpu, "w", n, k, dtype, &bytes).unwrap(), None),
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
        p.dispatch(
            KernelId::Matmul { format: dtype.format(), aligned: k % 4 == 0 },
            &[rows as u32, part.rows as u32, k as u32, (offset + part.first_row) as u32, stride as u32, bias as u32, accumulate as u32],
            &[&input_buf, &part.buffer, &bias_buf, &out],
            [part.rows.div_ceil(TILE_COLS) as u32, rows.div_ceil(BLOCK_ROWS) as u32, 1],
        );
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
    assert_close(&got, &want, KERNEL_F32, &format!("matmul {rows}x{n}x{k} {dtype:?}"));
}

#[test]
fn matmul_matches_reference_in_every_weight_format() {
    let mut rng = Rng::new(seed());
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        run_matmul(1, 1, 1, dtype, false, false, None, &mut rng);
        run_matmul(67, 93, 131, dtype, true, false, None, &mut rng);
        run_matmul(130, 65, 17, dtype, false, true, None, &mut rng);
        run_matmul(5, 200, 301, dtype, true, true, None, &mut rng);
    }
}

#[test]
fn matmul_over_a_split_weight_matches_reference() {
    let mut rng = Rng::new(seed());
    for dtype in [DType::F32, DType::F16] {
        run_matmul(33, 1100, 45, dtype, true, false, Some(512), &mut rng);
    }
}
