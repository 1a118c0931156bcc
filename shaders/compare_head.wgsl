// Two models' LM heads at once, reduced per row and vocabulary tile without storing a logit
// (perplex compare). The input is stack_rows.wgsl's pairs of rows and the weights are both
// heads side by side, so the block product holds, for pair p of this workgroup, the base
// model's logits in block row 2p and the compared model's in block row 2p + 1, column by
// column. Each lane reduces its columns of a pair to
//   base:   (max, sum of exp relative to max, target logit, argmax)  as lm_head_loss.wgsl,
//   model:  the same,
//   cross:  U = sum of exp(lb - max_b) * ((lb - max_b) - (lm - max_m)),
// which compare_combine.wgsl folds into KL(base || model) = U / S_b - log(S_b / S_m). Keeping
// the cross term relative to both running maxima keeps its terms small where the models agree,
// so nearly equal distributions lose no precision to a difference of large log-normalisers.
// How two summaries merge: compare_stats.wgsl (after loss_stats.wgsl).

struct Params {
    rows: u32,          // input rows: twice the compared rows
    cols: u32,          // vocabulary rows in this part
    depth: u32,         // hidden size of the base plus that of the model
    col_offset: u32,    // first vocabulary index of this part
    tiles: u32,         // vocabulary tiles per row of `partials`, over all parts
    tile_offset: u32,   // index of this part's first tile
    softcap_base: f32,  // logit soft-capping of each model, 0 = off
    softcap_model: f32,
    vocab: u32,         // logits at or beyond this index are not part of the distribution
}

@group(0) @binding(0) var<uniform> params: Params;
// The other buffers, soft-capping and the valid columns: head_tiles.wgsl.

const PAIRS: u32 = BLOCK_ROWS / 2u;

var<workgroup> lane_stats: array<array<CompareStats, LANES>, PAIRS>;

@compute @workgroup_size(LANES, 1, 1)
fn compare_head(invocation: Invocation) {
    let lane = invocation.lid.x;
    let pair0 = invocation.group.y * PAIRS;
    let compared = params.rows / 2u;
    let block = invocation_block(invocation);
    let valid = vocab_columns(invocation);
    for (var p = 0u; p < PAIRS; p++) {
        let target_id = targets[min(pair0 + p, compared - 1u)];
        // This invocation's columns, in increasing order: maxima and argmaxes, then the sums.
        var base_logits: array<f32, BLOCK_COLS>;
        var model_logits: array<f32, BLOCK_COLS>;
        var stats = EMPTY_COMPARE;
        for (var c = 0u; c < valid; c++) {
            let index = vocab_index(invocation, c);
            let lb = capped(block[2u * p][c], params.softcap_base);
            let lm = capped(block[2u * p + 1u][c], params.softcap_model);
            base_logits[c] = lb;
            model_logits[c] = lm;
            if (lb > stats.base.x) { stats.base.x = lb; stats.base.w = f32(index); }
            if (lm > stats.model.x) { stats.model.x = lm; stats.model.w = f32(index); }
            if (index == target_id) { stats.base.z = lb; stats.model.z = lm; }
        }
        for (var c = 0u; c < valid; c++) {
            let shifted_base = base_logits[c] - stats.base.x;
            let shifted_model = model_logits[c] - stats.model.x;
            let weight = exp(shifted_base);
            stats.base.y += weight;
            stats.model.y += exp(shifted_model);
            stats.cross += weight * (shifted_base - shifted_model);
            stats.spread += exp_difference(shifted_model, shifted_base);
        }
        lane_stats[p][lane] = stats;
    }
    workgroupBarrier();
    // One invocation per pair folds the lanes' summaries in a fixed order.
    if (lane < PAIRS) {
        let row = pair0 + lane;
        if (row < compared) {
            var stats = lane_stats[lane][0];
            for (var l = 1u; l < LANES; l++) {
                stats = combine_compare(stats, lane_stats[lane][l]);
            }
            store_compare(tile_slot(invocation, row), stats);
        }
    }
}
