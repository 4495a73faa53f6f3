//! The Qwen3.5 text model (hybrid Gated DeltaNet + gated full attention) as a tract graph.
//!
//! The graph is stateless: every cache is an explicit input and output (a KV pair per full
//! attention layer; a conv window and a recurrent state per linear attention layer), held by
//! [`LmState`] between calls. One graph serves prefill and decode: the number of new tokens `S`
//! and each KV cache's row capacity are symbols, so no shape ever forces a rebuild.
//!
//! Inputs, in order: `embeds [S, hidden]`, `cos [S, 1, rotary]`, `sin [S, 1, rotary]`,
//! `past` (the positions already cached, a scalar i64), then per layer its state inputs. Outputs: `logits`
//! (`[1, vocab]` for the last position, or `[S, vocab]` when built with `all_logits`), then the
//! updated states in the same order.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use lookout_models::{Checkpoint, LayerType, Precision, TextConfig};
use tract_core::internal::*;
use tract_core::ops::math;
use tract_core::ops::nn::{sigmoid, silu::silu};

use crate::compiled::{CacheUse, WeightCache};
use crate::embedding::EmbeddingTable;
use crate::graph::{GraphBuilder, Matrix};
use crate::ops::{CachedAttention, CausalConv, GatedDeltaRule};

/// Most tokens run through the graph in one call.
pub const PREFILL_CHUNK: usize = 128;

#[derive(Clone, Debug)]
pub struct LmOptions {
    pub precision: Precision,
    /// Precision of the output head; large-vocabulary heads are where quantization hurts most.
    pub lm_head_precision: Precision,
    /// Emit logits for every position instead of the last one only (used by tests).
    pub all_logits: bool,
    /// Directory of the compiled cache (see [`crate::compiled`]); `None` quantizes every start.
    pub compiled_cache: Option<PathBuf>,
}

impl LmOptions {
    pub fn new(precision: Precision) -> LmOptions {
        LmOptions {
            precision,
            lm_head_precision: precision,
            all_logits: false,
            compiled_cache: None,
        }
    }
}

pub struct Qwen35 {
    pub config: TextConfig,
    plan: Arc<TypedSimplePlan>,
    embeddings: EmbeddingTable,
    all_logits: bool,
    compiled: CacheUse,
}

/// Per-conversation caches and the position reached.
pub struct LmState {
    pub position: usize,
    states: Vec<TValue>,
    run: TypedSimpleState,
}

impl Qwen35 {
    pub fn load(checkpoint: &Checkpoint, options: &LmOptions) -> anyhow::Result<Qwen35> {
        let config = checkpoint.text.clone();
        let cache = match &options.compiled_cache {
            Some(dir) => WeightCache::open(
                dir,
                checkpoint,
                "language_model",
                &format!("{}+head-{}", options.precision, options.lm_head_precision),
            ),
            None => WeightCache::off(),
        };
        let mut builder = Qwen35Builder {
            g: GraphBuilder::with_cache(cache),
            ckpt: checkpoint,
            cfg: &config,
            options,
        };
        let started = std::time::Instant::now();
        let model = builder.build()?;
        let compiled = std::mem::replace(&mut builder.g.weights, WeightCache::off()).finish();
        let built = started.elapsed();
        let plan = model
            .into_optimized()
            .context("optimizing the language model graph")?
            .into_runnable()?;
        log::info!(
            "language model: weights ready in {} ms (compiled cache: {compiled}), graph optimized \
             in {} ms",
            built.as_millis(),
            (started.elapsed() - built).as_millis()
        );
        let embed_name = checkpoint.text_tensor("embed_tokens.weight");
        let embeddings = EmbeddingTable::new(
            checkpoint.weights.location(&embed_name)?.clone(),
            config.vocab_size,
            config.hidden_size,
        )?;
        crate::memory::release_freed_memory();
        Ok(Qwen35 {
            config,
            plan,
            embeddings,
            all_logits: options.all_logits,
            compiled,
        })
    }

    /// What the compiled cache did at load.
    pub fn compiled_cache(&self) -> &CacheUse {
        &self.compiled
    }

    pub fn embed(&self, ids: &[u32]) -> anyhow::Result<Vec<f32>> {
        self.embeddings.lookup(ids)
    }

    /// A fresh conversation: empty KV caches, zero conv windows and recurrent states.
    pub fn new_state(&self) -> anyhow::Result<LmState> {
        let c = &self.config;
        let mut states = Vec::new();
        for kind in &c.layer_types {
            match kind {
                LayerType::FullAttention => {
                    for _ in 0..2 {
                        states.push(
                            Tensor::zero::<f32>(&[c.num_key_value_heads, 0, c.head_dim])?
                                .into_tvalue(),
                        );
                    }
                }
                LayerType::LinearAttention => {
                    states.push(
                        Tensor::zero::<f32>(&[c.linear_conv_kernel_dim, c.linear_conv_dim()])?
                            .into_tvalue(),
                    );
                    states.push(
                        Tensor::zero::<f32>(&[
                            c.linear_num_value_heads,
                            c.linear_key_head_dim,
                            c.linear_value_head_dim,
                        ])?
                        .into_tvalue(),
                    );
                }
            }
        }
        Ok(LmState {
            position: 0,
            states,
            run: self.plan.spawn()?,
        })
    }

    /// A copy of `state` that continues independently, so one prompt can be continued several
    /// ways without reading it again. The caches are shared, not copied: a call only ever
    /// writes into a state tensor it holds alone, and copies a shared one first.
    pub fn fork(&self, state: &LmState) -> anyhow::Result<LmState> {
        Ok(LmState {
            position: state.position,
            states: state.states.clone(),
            run: self.plan.spawn()?,
        })
    }

    /// Runs `embeds` (`[S, hidden]`, row-major) through the model after the positions already in
    /// `state`, and returns the logits (last position, or all positions with `all_logits`).
    ///
    /// Long inputs run in chunks of [`PREFILL_CHUNK`] tokens: the plan keeps per-node scratch
    /// sized for the longest call it has seen, so one 1000-token call would leave hundreds of MB
    /// resident for the rest of the session.
    pub fn forward(&self, state: &mut LmState, embeds: &[f32]) -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(!embeds.is_empty(), "no input embeddings");
        let width = self.config.hidden_size;
        let mut logits = Vec::new();
        for chunk in embeds.chunks(PREFILL_CHUNK * width) {
            let chunk_logits = self.forward_chunk(state, chunk)?;
            if self.all_logits {
                logits.extend(chunk_logits);
            } else {
                logits = chunk_logits;
            }
        }
        Ok(logits)
    }

    /// [`Qwen35::forward`], with the time of every graph node added to `profile` by op.
    pub fn forward_profiled(
        &self,
        state: &mut LmState,
        embeds: &[f32],
        profile: &mut OpProfile,
    ) -> anyhow::Result<Vec<f32>> {
        let width = self.config.hidden_size;
        let mut logits = Vec::new();
        for chunk in embeds.chunks(PREFILL_CHUNK * width) {
            logits = self.forward_chunk_with(state, chunk, Some(profile))?;
        }
        Ok(logits)
    }

    fn forward_chunk(&self, state: &mut LmState, embeds: &[f32]) -> anyhow::Result<Vec<f32>> {
        self.forward_chunk_with(state, embeds, None)
    }

    fn forward_chunk_with(
        &self,
        state: &mut LmState,
        embeds: &[f32],
        profile: Option<&mut OpProfile>,
    ) -> anyhow::Result<Vec<f32>> {
        let c = &self.config;
        anyhow::ensure!(
            !embeds.is_empty() && embeds.len().is_multiple_of(c.hidden_size),
            "input embeddings have {} values, not a positive multiple of the hidden size {}",
            embeds.len(),
            c.hidden_size
        );
        let s = embeds.len() / c.hidden_size;
        let p = state.position;
        let (cos, sin) = rope_tables(c, p, s);
        let mut inputs: TVec<TValue> = tvec![
            Tensor::from_shape(&[s, c.hidden_size], embeds)?.into_tvalue(),
            Tensor::from_shape(&[s, 1, c.rotary_dim], &cos)?.into_tvalue(),
            Tensor::from_shape(&[s, 1, c.rotary_dim], &sin)?.into_tvalue(),
            tensor0(p as i64).into_tvalue(),
        ];
        inputs.extend(state.states.drain(..));
        let run = &mut state.run;
        let mut outputs = match profile {
            None => crate::threads::run(move || run.run(inputs))?,
            Some(profile) => crate::threads::run(move || {
                let started = std::time::Instant::now();
                let outputs = run.run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
                    let t = std::time::Instant::now();
                    let out = tract_core::plan::eval(ctx, op_state, node, inputs);
                    profile.add(&node.op().name(), t.elapsed());
                    out
                });
                profile.wall += started.elapsed();
                outputs
            })?,
        };
        state.states = outputs.drain(1..).collect();
        state.position += s;
        let logits = outputs.remove(0);
        Ok(logits.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    pub fn all_logits(&self) -> bool {
        self.all_logits
    }
}

/// Where a model call's time went: per op name, the total time and the number of node runs;
/// `wall` is the calls' whole time, so `wall` minus the ops' sum is tract's own dispatch.
#[derive(Clone, Debug, Default)]
pub struct OpProfile {
    pub ops: std::collections::BTreeMap<String, (std::time::Duration, usize)>,
    pub wall: std::time::Duration,
}

impl OpProfile {
    fn add(&mut self, op: &str, time: std::time::Duration) {
        let entry = self.ops.entry(op.to_string()).or_default();
        entry.0 += time;
        entry.1 += 1;
    }

    /// Op names by total time, longest first.
    pub fn by_time(&self) -> Vec<(&str, std::time::Duration, usize)> {
        let mut ops: Vec<_> = self
            .ops
            .iter()
            .map(|(name, &(time, runs))| (name.as_str(), time, runs))
            .collect();
        ops.sort_by_key(|op| std::cmp::Reverse(op.1));
        ops
    }
}

/// Rotary tables for positions `start..start+len`, laid out as the reference builds them:
/// `cat(freqs, freqs)` over the rotated width, computed in f32.
fn rope_tables(c: &TextConfig, start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let half = c.rotary_dim / 2;
    let base = c.rope_theta as f32;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / c.rotary_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(len * c.rotary_dim);
    let mut sin = Vec::with_capacity(len * c.rotary_dim);
    for pos in start..start + len {
        for _ in 0..2 {
            for &f in &inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}

struct Qwen35Builder<'a> {
    g: GraphBuilder,
    ckpt: &'a Checkpoint,
    cfg: &'a TextConfig,
    options: &'a LmOptions,
}

/// Where the rotary tables and the cached length enter every full-attention layer.
struct Shared {
    cos: OutletId,
    sin: OutletId,
    past: OutletId,
}

impl Qwen35Builder<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
        Ok(self.ckpt.weights.f32(&self.ckpt.text_tensor(name), shape)?)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> anyhow::Result<Matrix> {
        Matrix::stored(self.ckpt, &self.ckpt.text_tensor(name), rows, cols)
    }

    fn linear(
        &mut self,
        name: &str,
        x: OutletId,
        rows: usize,
        cols: usize,
    ) -> anyhow::Result<OutletId> {
        let w = self.matrix(&format!("{name}.weight"), rows, cols)?;
        self.g.linear(name, x, w, None, self.options.precision)
    }

    /// Qwen3.5's RMSNorm: the stored weight is an offset from 1.
    fn offset_rms_norm(
        &mut self,
        name: &str,
        x: OutletId,
        axis: usize,
        width: usize,
    ) -> anyhow::Result<OutletId> {
        let scale: Vec<f32> = self
            .tensor(&format!("{name}.weight"), &[width])?
            .iter()
            .map(|w| 1.0 + w)
            .collect();
        self.g
            .rms_norm(name, x, axis, self.cfg.rms_norm_eps, &scale)
    }

    fn build(&mut self) -> anyhow::Result<TypedModel> {
        let c = self.cfg;
        let s = self.g.sym("S");
        let mut x = self
            .g
            .input("embeds", [s.clone(), c.hidden_size.to_dim()])?;
        let cos = self
            .g
            .input("cos", [s.clone(), 1.to_dim(), c.rotary_dim.to_dim()])?;
        let sin = self
            .g
            .input("sin", [s.clone(), 1.to_dim(), c.rotary_dim.to_dim()])?;
        let past = self.g.model.add_source("past", i64::scalar_fact())?;
        let shared = Shared { cos, sin, past };

        let mut state_outputs = vec![];
        for (i, kind) in c.layer_types.iter().enumerate() {
            let prefix = format!("layers.{i}");
            let residual = x;
            let normed =
                self.offset_rms_norm(&format!("{prefix}.input_layernorm"), x, 1, c.hidden_size)?;
            let mixed = match kind {
                LayerType::FullAttention => {
                    // Each layer's caches have a row capacity of their own.
                    let rows = self.g.sym(&format!("C{i}"));
                    let cache = [c.num_key_value_heads.to_dim(), rows, c.head_dim.to_dim()];
                    let k_past = self
                        .g
                        .input(&format!("{prefix}.key_cache"), cache.clone())?;
                    let v_past = self.g.input(&format!("{prefix}.value_cache"), cache)?;
                    let (out, k, v) = self.full_attention(
                        &format!("{prefix}.self_attn"),
                        normed,
                        k_past,
                        v_past,
                        &shared,
                    )?;
                    state_outputs.extend([k, v]);
                    out
                }
                LayerType::LinearAttention => {
                    let conv = self.g.input(
                        &format!("{prefix}.conv_state"),
                        [
                            c.linear_conv_kernel_dim.to_dim(),
                            c.linear_conv_dim().to_dim(),
                        ],
                    )?;
                    let rec = self.g.input(
                        &format!("{prefix}.recurrent_state"),
                        [
                            c.linear_num_value_heads.to_dim(),
                            c.linear_key_head_dim.to_dim(),
                            c.linear_value_head_dim.to_dim(),
                        ],
                    )?;
                    let (out, conv, rec) =
                        self.gated_delta_net(&format!("{prefix}.linear_attn"), normed, conv, rec)?;
                    state_outputs.extend([conv, rec]);
                    out
                }
            };
            x = self.g.wire(
                format!("{prefix}.residual1"),
                math::add(),
                &[residual, mixed],
            )?;
            let residual = x;
            let normed = self.offset_rms_norm(
                &format!("{prefix}.post_attention_layernorm"),
                x,
                1,
                c.hidden_size,
            )?;
            let mlp = self.mlp(&format!("{prefix}.mlp"), normed)?;
            x = self
                .g
                .wire(format!("{prefix}.residual2"), math::add(), &[residual, mlp])?;
        }

        let mut hidden = self.offset_rms_norm("norm", x, 1, c.hidden_size)?;
        if !self.options.all_logits {
            hidden = self
                .g
                .slice("last_position", hidden, 0, s.clone() - 1, s.clone())?;
        }
        let head = Matrix::stored(
            self.ckpt,
            &self.ckpt.lm_head_tensor(),
            c.vocab_size,
            c.hidden_size,
        )?;
        let logits = self.g.linear(
            "lm_head",
            hidden,
            head,
            None,
            self.options.lm_head_precision,
        )?;

        let mut outputs = vec![logits];
        outputs.extend(state_outputs);
        let mut model = std::mem::take(&mut self.g.model);
        model.select_output_outlets(&outputs)?;
        Ok(model)
    }

    fn mlp(&mut self, name: &str, x: OutletId) -> anyhow::Result<OutletId> {
        let c = self.cfg;
        let gate = self.linear(
            &format!("{name}.gate_proj"),
            x,
            c.intermediate_size,
            c.hidden_size,
        )?;
        let up = self.linear(
            &format!("{name}.up_proj"),
            x,
            c.intermediate_size,
            c.hidden_size,
        )?;
        let act = self.g.wire(format!("{name}.silu"), silu(), &[gate])?;
        let prod = self
            .g
            .wire(format!("{name}.mul"), math::mul(), &[act, up])?;
        self.linear(
            &format!("{name}.down_proj"),
            prod,
            c.hidden_size,
            c.intermediate_size,
        )
    }

    /// Gated softmax attention. Returns the layer output and the extended key and value caches.
    fn full_attention(
        &mut self,
        name: &str,
        x: OutletId,
        k_past: OutletId,
        v_past: OutletId,
        shared: &Shared,
    ) -> anyhow::Result<(OutletId, OutletId, OutletId)> {
        let c = self.cfg;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);

        // q_proj yields, per head, the query followed by its output gate.
        let q_gate = self.linear(&format!("{name}.q_proj"), x, nh * hd * 2, c.hidden_size)?;
        let q_gate = self.g.reshape(
            &format!("{name}.q_gate_heads"),
            q_gate,
            1,
            &[nh * hd * 2],
            &[nh, 2 * hd],
        )?;
        let q = self.g.slice(&format!("{name}.query"), q_gate, 2, 0, hd)?;
        let gate = self
            .g
            .slice(&format!("{name}.gate"), q_gate, 2, hd, 2 * hd)?;
        let gate = self
            .g
            .reshape(&format!("{name}.gate_flat"), gate, 1, &[nh, hd], &[nh * hd])?;

        let k = self.linear(&format!("{name}.k_proj"), x, nkv * hd, c.hidden_size)?;
        let k = self
            .g
            .reshape(&format!("{name}.k_heads"), k, 1, &[nkv * hd], &[nkv, hd])?;
        let v = self.linear(&format!("{name}.v_proj"), x, nkv * hd, c.hidden_size)?;
        let v = self
            .g
            .reshape(&format!("{name}.v_heads"), v, 1, &[nkv * hd], &[nkv, hd])?;

        let q = self.offset_rms_norm(&format!("{name}.q_norm"), q, 2, hd)?;
        let k = self.offset_rms_norm(&format!("{name}.k_norm"), k, 2, hd)?;
        let q = self.rope(&format!("{name}.q_rope"), q, shared)?;
        let k = self.rope(&format!("{name}.k_rope"), k, shared)?;

        // Caches are [kv_heads, capacity, head_dim], rows 0..past valid; the op appends k and v.
        let capacity = self.g.model.symbols.new_with_prefix("C_out");
        let outputs = self.g.model.wire_node(
            format!("{name}.attention"),
            CachedAttention {
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
                capacity,
            },
            &[q, k, v, k_past, v_past, shared.past],
        )?;
        let (out, k_all, v_all) = (outputs[0], outputs[1], outputs[2]);
        let gate = self
            .g
            .wire(format!("{name}.gate_sigmoid"), sigmoid(), &[gate])?;
        let out = self
            .g
            .wire(format!("{name}.gated"), math::mul(), &[out, gate])?;
        let out = self.linear(&format!("{name}.o_proj"), out, c.hidden_size, nh * hd)?;
        Ok((out, k_all, v_all))
    }

    /// Rotates the first `rotary_dim` channels of each head (`x: [S, heads, head_dim]`) with the
    /// rotate-half convention; the remaining channels pass through.
    fn rope(&mut self, name: &str, x: OutletId, shared: &Shared) -> anyhow::Result<OutletId> {
        let (rd, hd) = (self.cfg.rotary_dim, self.cfg.head_dim);
        let rot = self.g.slice(&format!("{name}.rot"), x, 2, 0, rd)?;
        let x1 = self.g.slice(&format!("{name}.x1"), rot, 2, 0, rd / 2)?;
        let x2 = self.g.slice(&format!("{name}.x2"), rot, 2, rd / 2, rd)?;
        let neg_x2 = self.g.wire(format!("{name}.neg_x2"), math::neg(), &[x2])?;
        let rotated_half = self
            .g
            .concat(&format!("{name}.rotate_half"), 2, &[neg_x2, x1])?;
        let a = self
            .g
            .wire(format!("{name}.cos"), math::mul(), &[rot, shared.cos])?;
        let b = self.g.wire(
            format!("{name}.sin"),
            math::mul(),
            &[rotated_half, shared.sin],
        )?;
        let embedded = self.g.wire(format!("{name}.sum"), math::add(), &[a, b])?;
        if rd == hd {
            return Ok(embedded);
        }
        let pass = self.g.slice(&format!("{name}.pass"), x, 2, rd, hd)?;
        self.g.concat(&format!("{name}.out"), 2, &[embedded, pass])
    }

    /// Gated DeltaNet. Returns the layer output, the conv window and the recurrent state.
    fn gated_delta_net(
        &mut self,
        name: &str,
        x: OutletId,
        conv_state: OutletId,
        recurrent_state: OutletId,
    ) -> anyhow::Result<(OutletId, OutletId, OutletId)> {
        let c = self.cfg;
        let (hk, hv) = (c.linear_num_key_heads, c.linear_num_value_heads);
        let (dk, dv) = (c.linear_key_head_dim, c.linear_value_head_dim);
        let (key_dim, value_dim, conv_dim) = (
            c.linear_key_dim(),
            c.linear_value_dim(),
            c.linear_conv_dim(),
        );
        let kernel = c.linear_conv_kernel_dim;

        let qkv = self.linear(&format!("{name}.in_proj_qkv"), x, conv_dim, c.hidden_size)?;
        // Causal depthwise conv + SiLU over the tokens, carrying the last `kernel` inputs.
        let stored = self.tensor(&format!("{name}.conv1d.weight"), &[conv_dim, 1, kernel])?;
        let mut taps = vec![0f32; kernel * conv_dim];
        for (ch, w) in stored.chunks_exact(kernel).enumerate() {
            for (tap, &w) in w.iter().enumerate() {
                taps[tap * conv_dim + ch] = w;
            }
        }
        let conv_weight = self.g.constant(
            format!("{name}.conv1d.weight"),
            Tensor::from_shape(&[kernel, conv_dim], &taps)?,
        )?;
        let conv = self.g.wire_all(
            format!("{name}.conv1d"),
            CausalConv {
                channels: conv_dim,
                kernel,
            },
            &[qkv, conv_weight, conv_state],
        )?;
        let (mixed, conv_state_out) = (conv[0], conv[1]);
        let mixed = self
            .g
            .wire(format!("{name}.conv1d_silu"), silu(), &[mixed])?;

        let q = self.g.slice(&format!("{name}.q"), mixed, 1, 0, key_dim)?;
        let k = self
            .g
            .slice(&format!("{name}.k"), mixed, 1, key_dim, 2 * key_dim)?;
        let v = self
            .g
            .slice(&format!("{name}.v"), mixed, 1, 2 * key_dim, conv_dim)?;
        let q = self
            .g
            .reshape(&format!("{name}.q_heads"), q, 1, &[key_dim], &[hk, dk])?;
        let k = self
            .g
            .reshape(&format!("{name}.k_heads"), k, 1, &[key_dim], &[hk, dk])?;
        let v = self
            .g
            .reshape(&format!("{name}.v_heads"), v, 1, &[value_dim], &[hv, dv])?;

        let b = self.linear(&format!("{name}.in_proj_b"), x, hv, c.hidden_size)?;
        let beta = self.g.wire(format!("{name}.beta"), sigmoid(), &[b])?;
        let a = self.linear(&format!("{name}.in_proj_a"), x, hv, c.hidden_size)?;
        let dt_bias = self.tensor(&format!("{name}.dt_bias"), &[hv])?;
        let dt_bias = self.g.vector(format!("{name}.dt_bias"), &dt_bias)?;
        let a = self
            .g
            .binary(format!("{name}.a_dt"), math::add(), a, dt_bias)?;
        let softplus = self.g.softplus(&format!("{name}.softplus"), a)?;
        let neg_a: Vec<f32> = self
            .tensor(&format!("{name}.A_log"), &[hv])?
            .iter()
            .map(|l| -l.exp())
            .collect();
        let neg_a = self.g.vector(format!("{name}.neg_A"), &neg_a)?;
        let log_decay = self
            .g
            .binary(format!("{name}.log_decay"), math::mul(), softplus, neg_a)?;

        let rule = GatedDeltaRule {
            key_heads: hk,
            value_heads: hv,
            key_dim: dk,
            value_dim: dv,
        };
        let core = self.g.wire_all(
            format!("{name}.delta_rule"),
            rule,
            &[q, k, v, log_decay, beta, recurrent_state],
        )?;
        let (out, recurrent_out) = (core[0], core[1]);

        // Gated RMSNorm per value head: rmsnorm(out) * w * silu(z), w used as stored.
        let z = self.linear(&format!("{name}.in_proj_z"), x, value_dim, c.hidden_size)?;
        let z = self
            .g
            .reshape(&format!("{name}.z_heads"), z, 1, &[value_dim], &[hv, dv])?;
        let norm_w = self.tensor(&format!("{name}.norm.weight"), &[dv])?;
        let out = self
            .g
            .rms_norm(&format!("{name}.norm"), out, 2, c.rms_norm_eps, &norm_w)?;
        let z = self.g.wire(format!("{name}.z_silu"), silu(), &[z])?;
        let out = self
            .g
            .wire(format!("{name}.gated"), math::mul(), &[out, z])?;
        let out = self
            .g
            .reshape(&format!("{name}.out_flat"), out, 1, &[hv, dv], &[value_dim])?;
        let out = self.linear(&format!("{name}.out_proj"), out, c.hidden_size, value_dim)?;
        Ok((out, conv_state_out, recurrent_out))
    }
}
