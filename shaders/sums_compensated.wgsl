// How the matrix kernels' register block (matmul_block.wgsl) accumulates its products with
// `--sums compensated`: each running sum carries the rounding error of every addition and product
// beside it (Ogita, Rump and Oishi's Dot2: TwoSum for the additions, an FMA for each product's
// error), so a dot product of f32 values comes out as if summed in twice the precision and then
// rounded once. A dot product of 1,536 terms lands about 16x closer to float64 than the plain sum
// (tests/kernels.rs), for about twice the kernel time on lavapipe.
//
// Compilers may rewrite floating-point algebra ((s + p) - s into p: Mesa's NIR does), which would
// reduce TwoSum's error term to zero. `kept` passes each value through an integer OR with `zero`,
// a uniform that is 0 at run time and unknown when the shader is compiled, so no rewrite can see
// through it and no multiply is fused into an addition it must not be fused into.

alias Sum = vec2<f32>;   // (running sum, accumulated error)

fn kept(x: f32, zero: u32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | zero);
}

fn add_product(sum: Sum, a: f32, b: f32, zero: u32) -> Sum {
    let product = kept(a * b, zero);
    let product_error = fma(a, b, -product);
    let total = kept(sum.x + product, zero);
    let from_product = kept(total - sum.x, zero);
    let from_sum = kept(total - from_product, zero);
    let addition_error = (sum.x - from_sum) + (product - from_product);
    return Sum(total, sum.y + (addition_error + product_error));
}

fn sum_value(sum: Sum) -> f32 {
    return sum.x + sum.y;
}
