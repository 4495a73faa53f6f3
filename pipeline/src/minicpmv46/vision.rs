//! The MiniCPM-V 4.6 vision encoder as a tract graph, one slice (crop) per run.
//!
//! The reference packs all crops of an image into one sequence but attends block-diagonally
//! per crop (and the window merger, the position ids and the final merger are per crop too), so
//! encoding each crop on its own is the same computation.
//!
//! Data flow for a crop of `h x w` patches (`k = 4` in 16x mode, `2` in 4x; `h = k a`, `w = k b`):
//! 1. patch embedding: the Conv2d with stride = kernel is a linear map over each flattened
//!    `[channels, patch, patch]` patch, plus the learned position embedding gathered with ids
//!    from [`positions::position_ids`](super::positions::position_ids) -> `[h w, D]`;
//! 2. pre-LN SigLIP encoder layers (attention with biases, gelu_tanh MLP);
//! 3. 16x only, after layer `insert_layer_id`: the window-attention merger. Tokens are regrouped
//!    into 2x2 windows, attend inside their window, and each window's four tokens are merged
//!    (LayerNorm, MLP, plus their mean) into one -> `[h w / 4, D]` on the `h/2 x w/2` grid; the
//!    remaining layers run on that grid;
//! 4. `post_layernorm`, then the merger: 2x2 concat in (0,0),(0,1),(1,0),(1,1) order, LayerNorm
//!    (eps 1e-6), linear, exact erf GELU, linear to the text width -> `[a b, text_hidden]`.
//!
//! The graph is built once with two symbols `A`, `B` (the token grid after all merges), so the
//! token count `k^2 A B` and every regrouping reshape are exact symbolic products, and one plan
//! serves every slice shape ([`PlanStrategy::Symbolic`]). [`PlanStrategy::PerGrid`] instead
//! specialises the graph per grid and caches the plans.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail, ensure};
use lookout_models::{Architecture, Checkpoint, Precision};
use tract_core::internal::*;
use tract_core::ops::array::Gather;
use tract_core::ops::math;
use tract_core::ops::nn::gelu_approximate::gelu_approximate;
use tract_core::ops::nn::gelu_exact::gelu_exact;
use tract_core::ops::nn::{Reduce, Reducer};
use tract_linalg::multithread::{Executor, multithread_tract_scope};

use super::config::{VisionActivation, VisionConfig};
use super::positions::position_ids;
use crate::compiled::{CacheUse, WeightCache};
use crate::graph::{GraphBuilder, Matrix};
use crate::image::DownsampleMode;

const TOWER: &str = "model.vision_tower.";
const MERGER: &str = "model.merger.mlp.0.";
/// The merger's LayerNorm epsilon is hard-coded in the reference (`DownsampleMLP`), not read from
/// the config.
const MERGER_LN_EPS: f32 = 1e-6;

/// How plans for different slice shapes are obtained.
///
/// Measured on a shared 2-vCPU sandbox (load 3-5, so +-20%; one thread, 32x32-patch slice,
/// f32 weights): the tiny 16x fixture takes 70-110 ms with the symbolic plan vs 51-73 ms
/// per-grid; a 4-layer model at the real widths (1152 / 4304, 16 heads, same window merger and
/// merger) 2.5 s vs 2.2 s (matmuls alone 3.7 s vs 3.1 s in a profiled run), and 3.0 s for both
/// with f16 weights. The gap is kernel choice: with a symbolic token count tract pairs a GEMV
/// kernel with a narrow 64x3 matrix kernel, known counts get 32x6 / 16x12 tiles. In exchange,
/// per-grid pays an optimization on every new grid (0.6-2.5 s for that 4-layer model, more with
/// depth) and each cached plan holds its own packed copy of the weights (+680 MiB f32 /
/// +355 MiB f16 for those 198M parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanStrategy {
    /// One plan with symbolic grid dimensions, optimized once at load. The default: no latency
    /// spike for a new slice shape, one copy of the weights.
    Symbolic,
    /// A plan specialised to each grid, optimized on first use and kept in a cache of up to
    /// `capacity` plans (least recently used evicted). Worth it for streams whose slice grids
    /// repeat (a fixed camera resolution gives the same overview and slice grids every frame)
    /// when memory allows.
    PerGrid { capacity: usize },
}

#[derive(Clone, Debug)]
pub struct VisionOptions {
    pub precision: Precision,
    /// Overrides `downsample_mode` from config.json, like the reference's
    /// `get_image_features(downsample_mode=...)`.
    pub downsample_mode: Option<DownsampleMode>,
    pub plans: PlanStrategy,
    /// Also output the intermediate activations (for [`VisionEncoder::encode_with_intermediates`];
    /// tests and diagnostics).
    pub intermediates: bool,
    /// Directory of the compiled cache (see [`crate::compiled`]); `None` quantizes every start.
    pub compiled_cache: Option<PathBuf>,
}

impl VisionOptions {
    pub fn new(precision: Precision) -> VisionOptions {
        VisionOptions {
            precision,
            downsample_mode: None,
            plans: PlanStrategy::Symbolic,
            intermediates: false,
            compiled_cache: None,
        }
    }
}

/// Named intermediate activations of one slice, in graph order (`embeddings`,
/// `encoder_layer{i}`, `vit_merger`, `post_layernorm`), each `[tokens, vision_hidden]`.
pub type Intermediates = Vec<(String, Vec<f32>)>;

pub struct VisionEncoder {
    pub config: VisionConfig,
    mode: DownsampleMode,
    plans: Plans,
    intermediate_names: Vec<String>,
    compiled: CacheUse,
}

enum Plans {
    Symbolic(Arc<TypedSimplePlan>),
    PerGrid {
        /// The decluttered symbolic graph, specialised on demand.
        model: Box<TypedModel>,
        capacity: usize,
        /// Most recently used last.
        cache: PlanCache,
    },
}

impl VisionEncoder {
    /// Loads the encoder with weights at `precision`, the config's downsample mode and one
    /// symbolic plan.
    pub fn load(checkpoint: &Checkpoint, precision: Precision) -> anyhow::Result<VisionEncoder> {
        VisionEncoder::load_with(checkpoint, &VisionOptions::new(precision))
    }

    pub fn load_with(
        checkpoint: &Checkpoint,
        options: &VisionOptions,
    ) -> anyhow::Result<VisionEncoder> {
        ensure!(
            checkpoint.architecture == Architecture::MiniCpmV46,
            "{} holds a {:?} checkpoint, which has no vision encoder",
            checkpoint.dir.display(),
            checkpoint.architecture
        );
        let config = VisionConfig::from_checkpoint(checkpoint)?;
        let mode = options.downsample_mode.unwrap_or(config.downsample_mode);
        let cache = match &options.compiled_cache {
            Some(dir) => WeightCache::open(
                dir,
                checkpoint,
                "vision",
                &format!("{}+{}x", options.precision, mode.token_divisor()),
            ),
            None => WeightCache::off(),
        };
        let mut builder = VisionBuilder {
            g: GraphBuilder::with_cache(cache),
            ckpt: checkpoint,
            cfg: &config,
            precision: options.precision,
            mode,
            taps: vec![],
        };
        let started = std::time::Instant::now();
        let features = builder
            .build()
            .context("building the vision encoder graph")?;
        let compiled = std::mem::replace(&mut builder.g.weights, WeightCache::off()).finish();
        log::info!(
            "vision encoder: weights ready in {} ms (compiled cache: {compiled})",
            started.elapsed().as_millis()
        );
        let mut outputs = vec![features];
        let mut intermediate_names = vec![];
        if options.intermediates {
            for (name, outlet) in std::mem::take(&mut builder.taps) {
                intermediate_names.push(name);
                outputs.push(outlet);
            }
        }
        let mut model = std::mem::take(&mut builder.g.model);
        model.select_output_outlets(&outputs)?;
        let plans = match options.plans {
            PlanStrategy::Symbolic => Plans::Symbolic(
                model
                    .into_optimized()
                    .context("optimizing the vision encoder graph")?
                    .into_runnable()?,
            ),
            PlanStrategy::PerGrid { capacity } => Plans::PerGrid {
                model: Box::new(
                    model
                        .into_decluttered()
                        .context("decluttering the vision encoder graph")?,
                ),
                capacity: capacity.max(1),
                cache: Mutex::new(vec![]),
            },
        };
        crate::memory::release_freed_memory();
        Ok(VisionEncoder {
            config,
            mode,
            plans,
            intermediate_names,
            compiled,
        })
    }

    /// What the compiled cache did at load.
    pub fn compiled_cache(&self) -> &CacheUse {
        &self.compiled
    }

    pub fn downsample_mode(&self) -> DownsampleMode {
        self.mode
    }

    /// Width of each output feature row (the language model's hidden size).
    pub fn output_width(&self) -> usize {
        self.config.text_hidden_size
    }

    /// Number of feature rows a slice of `grid` = (rows, cols) patches yields: `h w / 16` in 16x
    /// mode, `h w / 4` in 4x (for grids [`encode`](Self::encode) accepts).
    pub fn tokens_per_slice(&self, grid: (usize, usize)) -> usize {
        grid.0.saturating_mul(grid.1) / self.mode.token_divisor() as usize
    }

    /// Encodes one slice.
    ///
    /// `pixels` are the normalized values laid out as the processor packs one slice
    /// (`pixel_values` of [`crate::image::Slice`]): shape `[channels, patch, h * w * patch]`,
    /// where patch `n` (row-major in the slice) occupies columns `n * patch .. (n + 1) * patch`.
    /// `grid` is (h, w) in patches; both must be multiples of 4 in 16x mode, of 2 in 4x mode.
    ///
    /// Returns `[tokens_per_slice(grid), output_width()]` features, row-major.
    pub fn encode(&self, pixels: &[f32], grid: (usize, usize)) -> anyhow::Result<Vec<f32>> {
        let mut outputs = self.run(pixels, grid)?;
        Ok(outputs.swap_remove(0))
    }

    /// Like [`encode`](Self::encode), also returning the intermediate activations. Needs an
    /// encoder loaded with [`VisionOptions::intermediates`].
    pub fn encode_with_intermediates(
        &self,
        pixels: &[f32],
        grid: (usize, usize),
    ) -> anyhow::Result<(Vec<f32>, Intermediates)> {
        ensure!(
            !self.intermediate_names.is_empty(),
            "this vision encoder was loaded without VisionOptions::intermediates"
        );
        let mut outputs = self.run(pixels, grid)?.into_iter();
        let features = outputs.next().context("missing features output")?;
        Ok((
            features,
            self.intermediate_names
                .iter()
                .cloned()
                .zip(outputs)
                .collect(),
        ))
    }

    /// Encodes several slices, on up to `threads` worker threads (one slice per thread at a
    /// time; with more than one worker, tract's own matmul threading is switched off inside
    /// them so the cores are not oversubscribed). Results are in input order.
    pub fn encode_many(
        &self,
        slices: &[(&[f32], (usize, usize))],
        threads: usize,
    ) -> anyhow::Result<Vec<Vec<f32>>> {
        let threads = threads.clamp(1, slices.len().max(1));
        if threads == 1 {
            return slices
                .iter()
                .map(|(pixels, grid)| self.encode(pixels, *grid))
                .collect();
        }
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<anyhow::Result<Vec<f32>>>>> =
            Mutex::new((0..slices.len()).map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    multithread_tract_scope(Executor::SingleThread, || {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((pixels, grid)) = slices.get(i) else {
                                break;
                            };
                            let result = self.encode(pixels, *grid);
                            if let Ok(mut slots) = results.lock() {
                                slots[i] = Some(result);
                            }
                        }
                    })
                });
            }
        });
        let results = results
            .into_inner()
            .map_err(|_| anyhow::anyhow!("a vision worker thread panicked"))?;
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|| bail!("slice {i} was not encoded")))
            .collect()
    }

    /// Validates the inputs, runs the plan for `grid`, returns every output as a flat vector.
    fn run(&self, pixels: &[f32], grid: (usize, usize)) -> anyhow::Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let (a, b) = self.merged_grid(grid)?;
        let (h, w) = grid;
        let expected = h
            .checked_mul(w)
            .and_then(|n| n.checked_mul(c.num_channels * c.patch_size * c.patch_size))
            .with_context(|| format!("slice grid {h}x{w} patches is too large"))?;
        let patches = h * w;
        ensure!(
            pixels.len() == expected,
            "pixel buffer for a {h}x{w}-patch slice must hold {} x {} x {} = {expected} values, \
             got {}",
            c.num_channels,
            c.patch_size,
            patches * c.patch_size,
            pixels.len()
        );
        let pixels = Tensor::from_shape(
            &[c.num_channels, c.patch_size, patches * c.patch_size],
            pixels,
        )?;
        let ids = position_ids(grid, c.position_grid);
        let ids = Tensor::from_shape(&[h, w], &ids)?;
        let plan = self.plan((a, b))?;
        let inputs = tvec![pixels.into_tvalue(), ids.into_tvalue()];
        let outputs = crate::threads::run(move || plan.run(inputs))?;
        outputs
            .iter()
            .map(|t| Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
            .collect()
    }

    /// The token grid after all merges, `(h / k, w / k)`, or why `grid` is not encodable.
    fn merged_grid(&self, grid: (usize, usize)) -> anyhow::Result<(usize, usize)> {
        let k = self.mode.merge_factor() as usize;
        let (h, w) = grid;
        ensure!(
            h > 0 && w > 0 && h % k == 0 && w % k == 0,
            "slice grid {h}x{w} patches: both sides must be positive multiples of {k} in {} mode",
            mode_name(self.mode)
        );
        Ok((h / k, w / k))
    }

    fn plan(&self, merged: (usize, usize)) -> anyhow::Result<Arc<TypedSimplePlan>> {
        match &self.plans {
            Plans::Symbolic(plan) => Ok(plan.clone()),
            Plans::PerGrid {
                model,
                capacity,
                cache,
            } => {
                if let Some(plan) = lookup(cache, merged)? {
                    return Ok(plan);
                }
                // Built outside the lock: optimization takes a while and other grids may be
                // served meanwhile. Two threads may build the same plan; one copy wins.
                let plan = specialise(model, merged)?;
                let mut cache = cache
                    .lock()
                    .map_err(|_| anyhow::anyhow!("vision plan cache poisoned"))?;
                cache.retain(|(key, _)| *key != merged);
                if cache.len() >= *capacity {
                    cache.remove(0);
                }
                cache.push((merged, plan.clone()));
                Ok(plan)
            }
        }
    }
}

fn mode_name(mode: DownsampleMode) -> &'static str {
    match mode {
        DownsampleMode::X16 => "16x",
        DownsampleMode::X4 => "4x",
    }
}

type PlanCache = Mutex<Vec<((usize, usize), Arc<TypedSimplePlan>)>>;

/// A cached plan for `key`, marked most recently used.
fn lookup(cache: &PlanCache, key: (usize, usize)) -> anyhow::Result<Option<Arc<TypedSimplePlan>>> {
    let mut cache = cache
        .lock()
        .map_err(|_| anyhow::anyhow!("vision plan cache poisoned"))?;
    let Some(pos) = cache.iter().position(|(k, _)| *k == key) else {
        return Ok(None);
    };
    let entry = cache.remove(pos);
    let plan = entry.1.clone();
    cache.push(entry);
    Ok(Some(plan))
}

/// The symbolic graph with `A`, `B` fixed to `merged`, optimized.
fn specialise(model: &TypedModel, merged: (usize, usize)) -> anyhow::Result<Arc<TypedSimplePlan>> {
    let mut values = HashMap::new();
    values.insert(model.symbols.sym("A"), merged.0.to_dim());
    values.insert(model.symbols.sym("B"), merged.1.to_dim());
    model
        .set_symbols(&values)?
        .into_optimized()
        .with_context(|| format!("optimizing the vision encoder for grid {merged:?}"))?
        .into_runnable()
}

struct VisionBuilder<'a> {
    g: GraphBuilder,
    ckpt: &'a Checkpoint,
    cfg: &'a VisionConfig,
    precision: Precision,
    mode: DownsampleMode,
    /// Intermediate activations, in graph order.
    taps: Vec<(String, OutletId)>,
}

impl VisionBuilder<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
        Ok(self.ckpt.weights.f32(name, shape)?)
    }

    /// `x @ W.T + b` with `W` = `{name}.weight` `[rows, cols]` and `b` = `{name}.bias`.
    fn linear(
        &mut self,
        name: &str,
        x: OutletId,
        rows: usize,
        cols: usize,
    ) -> anyhow::Result<OutletId> {
        self.linear_stored_as(name, x, rows, cols, &[rows, cols])
    }

    /// [`linear`](Self::linear) for a weight stored with another shape of `rows * cols` values,
    /// row-major compatible with `[rows, cols]` (the patch Conv2d's `[D, C, P, P]`).
    fn linear_stored_as(
        &mut self,
        name: &str,
        x: OutletId,
        rows: usize,
        cols: usize,
        stored_shape: &[usize],
    ) -> anyhow::Result<OutletId> {
        let weight = format!("{name}.weight");
        // Left where it is stored unless it must be reshaped: a q4_0 load that finds its
        // compiled cache then never reads it at all.
        let w = if stored_shape == [rows, cols] {
            Matrix::stored(self.ckpt, &weight, rows, cols)?
        } else {
            Matrix::from_values(rows, cols, self.tensor(&weight, stored_shape)?)
        };
        let b = self.tensor(&format!("{name}.bias"), &[rows])?;
        self.g.linear(name, x, w, Some(&b), self.precision)
    }

    fn layer_norm(
        &mut self,
        name: &str,
        x: OutletId,
        width: usize,
        eps: f32,
    ) -> anyhow::Result<OutletId> {
        let w = self.tensor(&format!("{name}.weight"), &[width])?;
        let b = self.tensor(&format!("{name}.bias"), &[width])?;
        self.g.layer_norm(name, x, eps, &w, &b)
    }

    fn gelu(
        &mut self,
        name: &str,
        x: OutletId,
        kind: VisionActivation,
    ) -> anyhow::Result<OutletId> {
        Ok(match kind {
            VisionActivation::GeluTanh => self.g.wire(name, gelu_approximate(false), &[x])?,
            VisionActivation::GeluErf => self.g.wire(name, gelu_exact(), &[x])?,
        })
    }

    /// Reads a token axis `axis` of `2 * rows * 2 * cols` tokens (row-major on a
    /// `2 rows x 2 cols` grid) as `[rows * cols, 4]`: one group per 2x2 block, blocks
    /// row-major, tokens inside a block in (0,0),(0,1),(1,0),(1,1) order.
    fn group_2x2(
        &mut self,
        name: &str,
        x: OutletId,
        rows: &TDim,
        cols: &TDim,
    ) -> anyhow::Result<OutletId> {
        let tokens = self.g.model.outlet_fact(x)?.shape[0].clone();
        let two = 2.to_dim();
        let grid = self.g.wire(
            format!("{name}.grid"),
            AxisOp::Reshape(
                0,
                tvec![tokens],
                tvec![rows.clone(), two.clone(), cols.clone(), two.clone()],
            ),
            &[x],
        )?;
        // [rows, 2, cols, 2, ..] -> [rows, cols, 2, 2, ..]
        let blocks = self.g.move_axis(&format!("{name}.blocks"), grid, 2, 1)?;
        self.g.wire(
            format!("{name}.groups"),
            AxisOp::Reshape(
                0,
                tvec![rows.clone(), cols.clone(), two.clone(), two],
                tvec![rows.clone() * cols.clone(), 4.to_dim()],
            ),
            &[blocks],
        )
    }

    fn build(&mut self) -> anyhow::Result<OutletId> {
        let c = self.cfg;
        let (d, p, ch) = (c.hidden_size, c.patch_size, c.num_channels);
        let a = self.g.sym("A");
        let b = self.g.sym("B");
        let k = self.mode.merge_factor() as i64;
        let tokens = a.clone() * b.clone() * (k * k);

        let pixels = self.g.input(
            "pixels",
            [ch.to_dim(), p.to_dim(), tokens.clone() * p as i64],
        )?;
        // The ids come as a `[k A, k B]` grid: their shape is what binds the symbols A and B at
        // run time (the pixels' `k^2 A B P` alone could not be factored).
        let (rows, cols) = (a.clone() * k, b.clone() * k);
        let ids = self
            .g
            .model
            .add_source("position_ids", i64::fact([rows.clone(), cols.clone()]))?;
        // Patch embedding: [C, P, T*P] -> [C, P, T, P] -> [T, C, P, P] -> [T, C*P*P] -> linear.
        let x = self.g.wire(
            "patches.split",
            AxisOp::Reshape(
                2,
                tvec![tokens.clone() * p as i64],
                tvec![tokens.clone(), p.to_dim()],
            ),
            &[pixels],
        )?;
        let x = self.g.move_axis("patches.tokens_first", x, 2, 0)?;
        let x = self
            .g
            .reshape("patches.flat", x, 1, &[ch, p, p], &[ch * p * p])?;
        let x = self.linear_stored_as(
            &format!("{TOWER}embeddings.patch_embedding"),
            x,
            d,
            ch * p * p,
            &[d, ch, p, p],
        )?;
        let n2 = c.position_grid * c.position_grid;
        let table = self.tensor(
            &format!("{TOWER}embeddings.position_embedding.weight"),
            &[n2, d],
        )?;
        let table = self.g.constant(
            "position_embedding.table",
            Tensor::from_shape(&[n2, d], &table)?,
        )?;
        let pos = self
            .g
            .wire("position_embedding", Gather::new(0), &[table, ids])?;
        let pos = self.g.wire(
            "position_embedding.flat",
            AxisOp::Reshape(0, tvec![rows, cols], tvec![tokens.clone()]),
            &[pos],
        )?;
        let mut x = self.g.wire("embeddings", math::add(), &[x, pos])?;
        self.taps.push(("embeddings".into(), x));

        let merge_in_vit = self.mode == DownsampleMode::X16;
        for i in 0..c.num_hidden_layers {
            x = self.encoder_layer(&format!("{TOWER}encoder.layers.{i}"), x)?;
            self.taps.push((format!("encoder_layer{i}"), x));
            if merge_in_vit && i == c.insert_layer_id {
                // Grid 4A x 4B -> 2A x 2B.
                let (rows, cols) = (a.clone() * 2, b.clone() * 2);
                x = self.vit_merger(x, &rows, &cols)?;
                self.taps.push(("vit_merger".into(), x));
            }
        }
        x = self.layer_norm(&format!("{TOWER}post_layernorm"), x, d, c.layer_norm_eps)?;
        self.taps.push(("post_layernorm".into(), x));
        self.merger(x, &a, &b)
    }

    /// Pre-LN SigLIP layer on `[T, D]`.
    fn encoder_layer(&mut self, name: &str, x: OutletId) -> anyhow::Result<OutletId> {
        let c = self.cfg;
        let normed = self.layer_norm(
            &format!("{name}.layer_norm1"),
            x,
            c.hidden_size,
            c.layer_norm_eps,
        )?;
        let attn = self.attention(&format!("{name}.self_attn"), normed)?;
        let x = self
            .g
            .wire(format!("{name}.residual1"), math::add(), &[x, attn])?;
        let normed = self.layer_norm(
            &format!("{name}.layer_norm2"),
            x,
            c.hidden_size,
            c.layer_norm_eps,
        )?;
        let h = self.linear(
            &format!("{name}.mlp.fc1"),
            normed,
            c.intermediate_size,
            c.hidden_size,
        )?;
        let h = self.gelu(&format!("{name}.mlp.act"), h, c.activation)?;
        let h = self.linear(
            &format!("{name}.mlp.fc2"),
            h,
            c.hidden_size,
            c.intermediate_size,
        )?;
        self.g
            .wire(format!("{name}.residual2"), math::add(), &[x, h])
    }

    /// Full (non-causal) multi-head attention with biased projections over the second-to-last
    /// axis of `x`: `[T, D]`, or `[G, T, D]` for attention inside each of `G` groups.
    fn attention(&mut self, name: &str, x: OutletId) -> anyhow::Result<OutletId> {
        let c = self.cfg;
        let (d, nh, hd) = (c.hidden_size, c.num_attention_heads, c.head_dim());
        let rank = self.g.model.outlet_fact(x)?.rank();
        let (g, head_axis) = if rank == 3 { ("g", 2) } else { ("", 1) };
        let heads = |s: &mut Self, proj: &str| -> anyhow::Result<OutletId> {
            let y = s.linear(&format!("{name}.{proj}"), x, d, d)?;
            s.g.reshape(
                &format!("{name}.{proj}.heads"),
                y,
                head_axis,
                &[d],
                &[nh, hd],
            )
        };
        let q = heads(self, "q_proj")?;
        let k = heads(self, "k_proj")?;
        let v = heads(self, "v_proj")?;
        let out = self.g.attention(
            name,
            (q, k, v),
            hd,
            &format!("{g}qhd,{g}khd->{g}hqk"),
            &format!("{g}hqk,{g}khd->{g}qhd"),
            head_axis + 1,
            None,
        )?;
        let out = self.g.reshape(
            &format!("{name}.context_flat"),
            out,
            head_axis,
            &[nh, hd],
            &[d],
        )?;
        self.linear(&format!("{name}.out_proj"), out, d, d)
    }

    /// The window-attention merger on `[2 rows * 2 cols, D]` -> `[rows * cols, D]`.
    fn vit_merger(&mut self, x: OutletId, rows: &TDim, cols: &TDim) -> anyhow::Result<OutletId> {
        let c = self.cfg;
        let d = c.hidden_size;
        let name = format!("{TOWER}vit_merger");
        // Regroup first: LayerNorm is per token, so LN-then-regroup (the reference) is the same.
        let windows = self.group_2x2(&format!("{name}.windows"), x, rows, cols)?; // [W, 4, D]
        let normed =
            self.layer_norm(&format!("{name}.layer_norm1"), windows, d, c.layer_norm_eps)?;
        let attn = self.attention(&format!("{name}.self_attn"), normed)?;
        let y = self
            .g
            .wire(format!("{name}.residual"), math::add(), &[windows, attn])?;

        let sum = self.g.wire(
            format!("{name}.window_sum"),
            Reduce::new(tvec![1], Reducer::Sum),
            &[y],
        )?;
        let quarter = self.g.scalar(format!("{name}.quarter"), 0.25)?;
        let mean = self
            .g
            .binary(format!("{name}.window_mean"), math::mul(), sum, quarter)?;
        let mean = self
            .g
            .wire(format!("{name}.window_mean_flat"), AxisOp::Rm(1), &[mean])?;

        let flat = self
            .g
            .reshape(&format!("{name}.concat"), y, 1, &[4, d], &[4 * d])?;
        let h = self.layer_norm(&format!("{name}.pre_norm"), flat, 4 * d, c.layer_norm_eps)?;
        let h = self.linear(
            &format!("{name}.linear_1"),
            h,
            4 * c.intermediate_size,
            4 * d,
        )?;
        let h = self.gelu(&format!("{name}.act"), h, VisionActivation::GeluTanh)?;
        let h = self.linear(&format!("{name}.linear_2"), h, d, 4 * c.intermediate_size)?;
        self.g.wire(format!("{name}.out"), math::add(), &[h, mean])
    }

    /// The downsample MLP on `[2 a * 2 b, D]` -> `[a * b, text_hidden]`.
    fn merger(&mut self, x: OutletId, a: &TDim, b: &TDim) -> anyhow::Result<OutletId> {
        let c = self.cfg;
        let d = c.hidden_size;
        let groups = self.group_2x2("merger.blocks", x, a, b)?;
        let flat = self
            .g
            .reshape("merger.concat", groups, 1, &[4, d], &[4 * d])?;
        let h = self.layer_norm(&format!("{MERGER}pre_norm"), flat, 4 * d, MERGER_LN_EPS)?;
        let h = self.linear(&format!("{MERGER}linear_1"), h, 4 * d, 4 * d)?;
        let h = self.gelu(&format!("{MERGER}act"), h, VisionActivation::GeluErf)?;
        self.linear(&format!("{MERGER}linear_2"), h, c.text_hidden_size, 4 * d)
    }
}
