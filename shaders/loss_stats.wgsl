// The per-tile summaries of the fused LM-head loss (lm_head_loss.wgsl, loss_combine.wgsl).

// Merge two (max, sum of exp relative to max, target logit, argmax) summaries. Ties in the
// maximum keep the lower vocabulary index, as torch.argmax does. An empty summary has max -3e38
// and sum 0, which merges away exactly. Only the summary holding the target has a non-zero
// target lane, so target lanes simply add.
fn combine_stats(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let m = max(a.x, b.x);
    let s = a.y * exp(a.x - m) + b.y * exp(b.x - m);
    let b_first = b.x > a.x || (b.x == a.x && b.w < a.w);
    return vec4<f32>(m, s, a.z + b.z, select(a.w, b.w, b_first));
}

// The argmax travels as an f32 (exact for vocabularies below 2^24); an empty summary has none.
const EMPTY_STATS: vec4<f32> = vec4<f32>(-3.0e38, 0.0, 0.0, 3.0e38);
