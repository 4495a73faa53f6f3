//! Grouped-query causal attention over a key/value cache that grows in place.
//!
//! In graph form, each full-attention layer concatenated the new keys and values onto its cache,
//! a fresh copy of the whole cache at every decode step, and ran two einsums and a softmax over
//! it: `lookout bench` measured decode 47 % slower at context 1024 than at 64 (llama.cpp: 33 %).
//! Here a cache is a buffer with spare rows. The new rows are written after the valid ones, the
//! buffer doubles when it is full (appending is amortised O(1) per token), and every query reads
//! the valid rows where they lie. A cache is written in place only when this call holds it
//! alone; one shared with a forked state is copied first.
//!
//! Semantics are the reference's eager attention with a causal mask: query `i` of the call sits
//! at position `past + i` and attends keys `0..=past + i`, softmax of `q·k / sqrt(head_dim)`;
//! query head `h` reads key/value head `h / (heads / kv_heads)`.

use std::ops::Range;

use tract_core::internal::*;

/// Inputs: `q [S, heads, d]`, `k [S, kv_heads, d]`, `v [S, kv_heads, d]`, the key and value
/// caches `[kv_heads, capacity, d]` (rows `0..past` valid) and `past` (a scalar i64). Outputs:
/// the context `[S, heads * d]` and both caches with rows `past..past + S` written (all f32).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CachedAttention {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The returned caches' row count: it is their capacity, not a position, so it gets a
    /// symbol of its own.
    pub capacity: Symbol,
}

/// The smallest cache worth allocating, in rows.
const MIN_CAPACITY: usize = 64;

impl CachedAttention {
    /// `cache` with `new` (`[S, kv_heads, d]`) written at rows `past..past + S`, grown first when
    /// it has no room for them.
    fn append(&self, mut cache: Tensor, new: &[f32], past: usize) -> TractResult<Tensor> {
        let (kv, d) = (self.kv_heads, self.head_dim);
        let tokens = new.len() / (kv * d);
        let capacity = cache.shape()[1];
        ensure!(
            past <= capacity,
            "attention cache holds {capacity} rows, {past} are said to be valid"
        );
        let needed = past + tokens;
        if needed > capacity {
            let grown = needed.max(2 * capacity).max(MIN_CAPACITY);
            let mut bigger = Tensor::zero::<f32>(&[kv, grown, d])?;
            {
                let from = cache.try_as_plain_ram()?;
                let from = from.as_slice::<f32>()?;
                let mut to = bigger.try_as_plain_ram_mut()?;
                let to = to.as_slice_mut::<f32>()?;
                for h in 0..kv {
                    to[h * grown * d..(h * grown + past) * d]
                        .copy_from_slice(&from[h * capacity * d..(h * capacity + past) * d]);
                }
            }
            cache = bigger;
        }
        let capacity = cache.shape()[1];
        {
            let mut rows = cache.try_as_plain_ram_mut()?;
            let rows = rows.as_slice_mut::<f32>()?;
            for (t, token) in new.chunks_exact(kv * d).enumerate() {
                for (h, row) in token.chunks_exact(d).enumerate() {
                    let at = (h * capacity + past + t) * d;
                    rows[at..at + d].copy_from_slice(row);
                }
            }
        }
        Ok(cache)
    }

    /// The context of every query against caches already holding their rows: `[S, heads * d]`.
    ///
    /// The work is cut into tasks of one key/value head and a run of tokens; inside the compute
    /// pool they run in parallel, each into a buffer of its own, scattered into the output at
    /// the end. Within a task, the query heads of the group meet each key and value row
    /// together, so a row is loaded once for all of them.
    fn attend(
        &self,
        tokens: usize,
        past: usize,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
    ) -> Vec<f32> {
        use rayon::prelude::*;
        let (heads, kv_heads, d) = (self.heads, self.kv_heads, self.head_dim);
        let group = heads / kv_heads;
        let capacity = keys.len() / (kv_heads * d);
        let tasks: Vec<(usize, Range<usize>)> = (0..kv_heads)
            .flat_map(|kv| {
                (0..tokens)
                    .step_by(TOKENS_PER_TASK)
                    .map(move |t| (kv, t..(t + TOKENS_PER_TASK).min(tokens)))
            })
            .collect();
        let task = |(kv, tokens): &(usize, Range<usize>)| {
            let rows = (kv * capacity * d)..((kv * capacity + past + tokens.end) * d);
            let job = GroupJob {
                first_head: kv * group,
                group,
                heads,
                head_dim: d,
                past,
                q,
                keys: &keys[rows.clone()],
                values: &values[rows],
            };
            let mut out = vec![0f32; tokens.len() * group * d];
            job.run(tokens.clone(), &mut out);
            out
        };
        // Split only inside the compute pool (see `threads::run`): elsewhere the caller has
        // already shared out the cores.
        let parts: Vec<Vec<f32>> =
            if rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1 {
                tasks.par_iter().map(task).collect()
            } else {
                tasks.iter().map(task).collect()
            };
        let mut out = vec![0f32; tokens * heads * d];
        for ((kv, tokens), part) in tasks.iter().zip(parts) {
            for (t, rows) in tokens.clone().zip(part.chunks_exact(group * d)) {
                let at = (t * heads + kv * group) * d;
                out[at..at + group * d].copy_from_slice(rows);
            }
        }
        out
    }
}

/// Tokens per task: enough work to be worth a task, few enough that a prefill chunk spreads
/// over the cores.
const TOKENS_PER_TASK: usize = 16;

/// The query heads that share one key/value head, over that head's valid rows.
struct GroupJob<'a> {
    first_head: usize,
    group: usize,
    heads: usize,
    head_dim: usize,
    past: usize,
    /// All queries, `[S, heads, d]`.
    q: &'a [f32],
    /// This key/value head's rows `0..past + S`.
    keys: &'a [f32],
    values: &'a [f32],
}

impl GroupJob<'_> {
    /// Fills `out` (`[tokens, group, d]`) with the group's context, with the widest vectors the
    /// CPU has.
    fn run(&self, tokens: Range<usize>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has the features `run_avx512` is compiled for.
                return unsafe { self.run_avx512(tokens, out) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has the features `run_avx2` is compiled for.
                return unsafe { self.run_avx2(tokens, out) };
            }
        }
        self.run_with::<false>(tokens, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn run_avx512(&self, tokens: Range<usize>, out: &mut [f32]) {
        self.run_with::<true>(tokens, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, tokens: Range<usize>, out: &mut [f32]) {
        self.run_with::<true>(tokens, out)
    }

    /// Token by token, the whole group at once where its size has a kernel (one head at a time
    /// otherwise). `FMA`: fused multiply-adds, only where the CPU has them (elsewhere
    /// `mul_add` is a library call).
    #[inline(always)]
    fn run_with<const FMA: bool>(&self, tokens: Range<usize>, out: &mut [f32]) {
        let d = self.head_dim;
        let mut scores = vec![0f32; self.group.min(MAX_ROWS) * (self.past + tokens.end)];
        for (t, out) in tokens.zip(out.chunks_exact_mut(self.group * d)) {
            match self.group {
                8 => self.rows::<8, FMA>(t, 0, &mut scores, out),
                4 => self.rows::<4, FMA>(t, 0, &mut scores, out),
                2 => self.rows::<2, FMA>(t, 0, &mut scores, out),
                _ => {
                    for (g, out) in out.chunks_exact_mut(d).enumerate() {
                        self.rows::<1, FMA>(t, g, &mut scores, out)
                    }
                }
            }
        }
    }

    /// Query heads `first_head + g ..+R` of token `t` into `out` (`[R, d]`): all of them attend
    /// the same `past + t + 1` keys.
    #[inline(always)]
    fn rows<const R: usize, const FMA: bool>(
        &self,
        t: usize,
        g: usize,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let d = self.head_dim;
        let scale = (d as f32).sqrt().recip();
        let queries: [&[f32]; R] = std::array::from_fn(|r| {
            let at = (t * self.heads + self.first_head + g + r) * d;
            &self.q[at..at + d]
        });
        let len = self.past + t + 1;
        let scores = &mut scores[..R * len];
        for (j, key) in self.keys.chunks_exact(d).take(len).enumerate() {
            let dots = dots::<R, FMA>(&queries, key);
            for r in 0..R {
                scores[r * len + j] = dots[r] * scale;
            }
        }
        for row in scores.chunks_exact_mut(len) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in row.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = sum.recip();
            row.iter_mut().for_each(|s| *s *= inv);
        }
        // Each value row, loaded once, is added into the R context rows, which stay in L1.
        out.fill(0.0);
        for (j, value) in self.values.chunks_exact(d).take(len).enumerate() {
            for (r, context) in out.chunks_exact_mut(d).enumerate() {
                let p = scores[r * len + j];
                for (c, &v) in context.iter_mut().zip(value) {
                    *c = multiply_add::<FMA>(p, v, *c);
                }
            }
        }
    }
}

/// The widest group with a kernel of its own.
const MAX_ROWS: usize = 8;

/// Partial sums per query row in a dot product: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

/// `q[r] · k` for each of the `R` queries, with [`LANES`] partial sums per query so that the
/// compiler keeps them in vector registers, added pairwise at the end.
#[inline(always)]
fn dots<const R: usize, const FMA: bool>(q: &[&[f32]; R], k: &[f32]) -> [f32; R] {
    let mut acc = [[0f32; LANES]; R];
    let whole = k.len() / LANES * LANES;
    for (c, kc) in k[..whole].chunks_exact(LANES).enumerate() {
        for r in 0..R {
            let qc = &q[r][c * LANES..(c + 1) * LANES];
            for l in 0..LANES {
                acc[r][l] = multiply_add::<FMA>(qc[l], kc[l], acc[r][l]);
            }
        }
    }
    std::array::from_fn(|r| {
        let tail: f32 = q[r][whole..]
            .iter()
            .zip(&k[whole..])
            .map(|(a, b)| a * b)
            .sum();
        horizontal_sum(acc[r]) + tail
    })
}

/// A tree of additions (8 + 4 + 2 + 1 lanes), which vectorizes, instead of a chain of 15.
#[inline(always)]
fn horizontal_sum(x: [f32; LANES]) -> f32 {
    let x: [f32; 8] = std::array::from_fn(|i| x[i] + x[i + 8]);
    let x: [f32; 4] = std::array::from_fn(|i| x[i] + x[i + 4]);
    let x: [f32; 2] = std::array::from_fn(|i| x[i] + x[i + 2]);
    x[0] + x[1]
}

#[inline(always)]
fn multiply_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

impl Op for CachedAttention {
    fn name(&self) -> StaticName {
        "CachedAttention".into()
    }
    op_as_typed_op!();
}

impl EvalOp for CachedAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 6,
            "CachedAttention expects q, k, v, key cache, value cache, past"
        );
        let (heads, kv, d) = (self.heads, self.kv_heads, self.head_dim);
        let tokens = inputs[0].shape().first().copied().unwrap_or(0);
        for (i, expected) in [[tokens, heads, d], [tokens, kv, d], [tokens, kv, d]]
            .iter()
            .enumerate()
        {
            ensure!(
                inputs[i].shape() == expected,
                "CachedAttention input {i} has shape {:?}, expected {expected:?}",
                inputs[i].shape()
            );
        }
        for i in [3, 4] {
            let shape = inputs[i].shape();
            ensure!(
                shape.len() == 3 && shape[0] == kv && shape[2] == d,
                "CachedAttention cache {i} has shape {shape:?}, expected [{kv}, rows, {d}]"
            );
        }
        let past = inputs.pop().context("past input")?;
        let past = usize::try_from(past.cast_to_scalar::<i64>()?)
            .map_err(|_| format_err!("negative past length"))?;
        // Taken, not cloned: when the plan holds no other reference the caches grow in place.
        let value_cache = inputs.pop().context("value cache")?.into_tensor();
        let key_cache = inputs.pop().context("key cache")?.into_tensor();
        let slice = |i: usize| inputs[i].try_as_plain_ram()?.as_slice::<f32>();
        let key_cache = self.append(key_cache, slice(1)?, past)?;
        let value_cache = self.append(value_cache, slice(2)?, past)?;
        let context = self.attend(
            tokens,
            past,
            slice(0)?,
            key_cache.try_as_plain_ram()?.as_slice::<f32>()?,
            value_cache.try_as_plain_ram()?.as_slice::<f32>()?,
        );
        Ok(tvec![
            Tensor::from_shape(&[tokens, heads * d], &context)?.into_tvalue(),
            key_cache.into_tvalue(),
            value_cache.into_tvalue(),
        ])
    }
}

impl TypedOp for CachedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 6);
        ensure!(
            inputs[..5]
                .iter()
                .all(|f| f.datum_type == f32::datum_type()),
            "CachedAttention computes in f32"
        );
        let tokens = inputs[0].shape[0].clone();
        let cache = f32::fact([
            self.kv_heads.to_dim(),
            self.capacity.clone().into(),
            self.head_dim.to_dim(),
        ]);
        Ok(tvec![
            f32::fact([tokens, (self.heads * self.head_dim).to_dim()]),
            cache.clone(),
            cache,
        ])
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eager attention straight from its definition, over the whole past and the new rows.
    fn reference(
        q: &[f32],
        keys: &[Vec<f32>],
        values: &[Vec<f32>],
        past: usize,
        (heads, kv, d): (usize, usize, usize),
    ) -> Vec<f32> {
        let tokens = q.len() / (heads * d);
        let mut out = vec![0f32; tokens * heads * d];
        for t in 0..tokens {
            for h in 0..heads {
                let g = h / (heads / kv);
                let qv = &q[(t * heads + h) * d..(t * heads + h + 1) * d];
                let scores: Vec<f64> = (0..=past + t)
                    .map(|j| {
                        let k = &keys[g][j * d..(j + 1) * d];
                        qv.iter().zip(k).map(|(a, b)| (a * b) as f64).sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exp.iter().sum();
                for (j, e) in exp.iter().enumerate() {
                    for c in 0..d {
                        out[(t * heads + h) * d + c] +=
                            (e / sum * values[g][j * d + c] as f64) as f32;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 101) as f32 - 50.0) / 40.0)
            .collect()
    }

    #[test]
    fn matches_eager_attention_and_grows_its_cache_in_place() {
        // Groups of 2 and 4 query heads per key/value head have kernels; 3 goes head by head.
        for (heads, kv) in [(4, 2), (8, 2), (3, 1)] {
            check_against_eager(heads, kv, 20);
        }
    }

    fn check_against_eager(heads: usize, kv: usize, d: usize) {
        let op = CachedAttention {
            heads,
            kv_heads: kv,
            head_dim: d,
            capacity: SymbolScope::default().sym("C"),
        };
        let mut key_cache = Tensor::zero::<f32>(&[kv, 0, d]).unwrap();
        let mut value_cache = Tensor::zero::<f32>(&[kv, 0, d]).unwrap();
        // Per kv head, every key and value so far, for the reference.
        let (mut keys, mut vals) = (vec![Vec::new(); kv], vec![Vec::new(); kv]);
        let mut past = 0;
        // A prefill of 7 (a block of four and three single rows), then steps of one, past the
        // first capacity of 64 rows so that the cache grows once.
        for (call, tokens) in [7, 1, 1, 5, 60, 1].into_iter().enumerate() {
            let q = values(tokens * heads * d, 10 * call + 1);
            let k = values(tokens * kv * d, 10 * call + 2);
            let v = values(tokens * kv * d, 10 * call + 3);
            for t in 0..tokens {
                for g in 0..kv {
                    keys[g].extend_from_slice(&k[(t * kv + g) * d..(t * kv + g + 1) * d]);
                    vals[g].extend_from_slice(&v[(t * kv + g) * d..(t * kv + g + 1) * d]);
                }
            }
            let mut outputs = op
                .eval(
                    &EvalContext::out_of_plan(),
                    tvec![
                        Tensor::from_shape(&[tokens, heads, d], &q)
                            .unwrap()
                            .into_tvalue(),
                        Tensor::from_shape(&[tokens, kv, d], &k)
                            .unwrap()
                            .into_tvalue(),
                        Tensor::from_shape(&[tokens, kv, d], &v)
                            .unwrap()
                            .into_tvalue(),
                        key_cache.into_tvalue(),
                        value_cache.into_tvalue(),
                        tensor0(past as i64).into_tvalue(),
                    ],
                )
                .unwrap();
            value_cache = outputs.pop().unwrap().into_tensor();
            key_cache = outputs.pop().unwrap().into_tensor();
            let context = outputs.pop().unwrap();
            let got = context.try_as_plain_ram().unwrap();
            let got = got.as_slice::<f32>().unwrap();
            let expected = reference(&q, &keys, &vals, past, (heads, kv, d));
            for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{heads}/{kv} heads, call {call}, value {i}: {a} vs {b}"
                );
            }
            past += tokens;
            let capacity = key_cache.shape()[1];
            assert!(capacity >= past, "capacity {capacity} < {past} rows");
            assert_eq!(
                capacity,
                if past <= 64 { 64 } else { 128 },
                "after {past} rows"
            );
        }
    }

    #[test]
    fn a_shared_cache_is_copied_not_written() {
        let (heads, kv, d) = (2, 1, 16);
        let op = CachedAttention {
            heads,
            kv_heads: kv,
            head_dim: d,
            capacity: SymbolScope::default().sym("C"),
        };
        let mut cache = Tensor::zero::<f32>(&[kv, 64, d]).unwrap();
        cache
            .try_as_plain_ram_mut()
            .unwrap()
            .as_slice_mut::<f32>()
            .unwrap()[..d]
            .fill(1.0);
        let shared = cache.into_tvalue();
        let run = |past: i64| {
            op.eval(
                &EvalContext::out_of_plan(),
                tvec![
                    Tensor::from_shape(&[1, heads, d], &values(heads * d, 1))
                        .unwrap()
                        .into_tvalue(),
                    Tensor::from_shape(&[1, kv, d], &values(kv * d, 2))
                        .unwrap()
                        .into_tvalue(),
                    Tensor::from_shape(&[1, kv, d], &values(kv * d, 3))
                        .unwrap()
                        .into_tvalue(),
                    shared.clone(),
                    shared.clone(),
                    tensor0(past).into_tvalue(),
                ],
            )
            .unwrap()
        };
        // Two continuations of the same one-row past both write row 1 of their own copy.
        let first = run(1);
        let second = run(1);
        assert_eq!(
            first[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            second[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
        );
        let original = shared.try_as_plain_ram().unwrap();
        assert!(
            original.as_slice::<f32>().unwrap()[d..2 * d]
                .iter()
                .all(|&x| x == 0.0),
            "the shared cache was written"
        );
    }
}
