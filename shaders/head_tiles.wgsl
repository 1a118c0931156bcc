// What the fused LM head kernels (lm_head_loss.wgsl, compare_head.wgsl) share: the buffers next
// to the block product, the logit soft-capping, and which of an invocation's block columns are
// logits of the distribution. Prepended to both at build time; each declares its own `params`
// with at least `cols`, `col_offset`, `tiles`, `tile_offset` and `vocab`.

// bindings 1 (input, read with `input_at`) and 2 (weights, read with `weights_at`): see the
// generated prelude (src/gpu/kernels.rs).
@group(0) @binding(5) var<storage, read> targets: array<u32>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;

// `softcap * tanh(logit / softcap)`, or the logit itself where soft-capping is off (0).
fn capped(logit: f32, softcap: f32) -> f32 {
    if (softcap > 0.0) {
        return softcap * tanh(clamp(logit / softcap, -15.0, 15.0));
    }
    return logit;
}

// How many of this invocation's block columns, from the first, are logits of the distribution:
// in this part of the vocabulary matrix and below `vocab`. The columns increase with c, so the
// rest lie past the end.
fn vocab_columns(invocation: Invocation) -> u32 {
    var valid = 0u;
    for (var c = 0u; c < BLOCK_COLS; c++) {
        let col = block_col(invocation, c);
        if (col >= params.cols || params.col_offset + col >= params.vocab) { break; }
        valid = c + 1u;
    }
    return valid;
}

// The vocabulary index of block column c of this invocation.
fn vocab_index(invocation: Invocation, c: u32) -> u32 {
    return params.col_offset + block_col(invocation, c);
}

// Where row `row`'s summary of this workgroup's vocabulary tile goes in `partials`, in units of
// one summary.
fn tile_slot(invocation: Invocation, row: u32) -> u32 {
    return row * params.tiles + params.tile_offset + invocation.group.x;
}
