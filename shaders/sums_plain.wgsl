// How the matrix kernels' register block (matmul_block.wgsl) accumulates its products: one f32
// running sum of fused multiply-adds (`--sums plain`, the default). `zero` is unused here; see
// sums_compensated.wgsl.

alias Sum = f32;

fn add_product(sum: Sum, a: f32, b: f32, zero: u32) -> Sum {
    return fma(a, b, sum);
}

fn sum_value(sum: Sum) -> f32 {
    return sum;
}
