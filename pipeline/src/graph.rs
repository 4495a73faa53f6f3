//! A thin layer over tract's `TypedModel` for building transformer graphs from checkpoint
//! weights: linear layers in a chosen weight precision, norms and element-wise helpers. Both the
//! language model and the vision encoder are wired with it.

use lookout_models::weights::{TensorLocation, TensorReader};
use lookout_models::{Checkpoint, Precision};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math;
use tract_core::ops::nn::{Reduce, Reducer, RmsNorm, Softmax, SoftmaxKind};

use crate::compiled::WeightCache;
use crate::ops::Q4_0Linear;

/// A weight matrix in PyTorch's `[out, in]` layout, either in memory or still in the checkpoint.
///
/// Reading a stored matrix chunk by chunk lets quantized and f16 weights be built without ever
/// holding the whole matrix in f32: for a 248k-row output head that transient alone would be 1 GB.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: MatrixData,
}

pub enum MatrixData {
    Values(Vec<f32>),
    Stored(TensorLocation),
}

/// Rows converted per chunk when streaming a stored matrix (about 4 MB of f32).
const CHUNK_ELEMENTS: usize = 1 << 20;

impl Matrix {
    /// A checkpoint matrix, shape-checked now and read when the graph builder converts it (or
    /// never, when the compiled cache already holds it packed).
    pub fn stored(
        ckpt: &Checkpoint,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> anyhow::Result<Matrix> {
        let location = ckpt.weights.location(name)?;
        if location.shape != [rows, cols] {
            return Err(lookout_models::LoadError::WrongShape {
                name: name.to_string(),
                path: location.path.clone(),
                actual: location.shape.clone(),
                expected: vec![rows, cols],
            }
            .into());
        }
        Ok(Matrix {
            rows,
            cols,
            data: MatrixData::Stored(location.clone()),
        })
    }

    pub fn from_values(rows: usize, cols: usize, data: Vec<f32>) -> Matrix {
        Matrix {
            rows,
            cols,
            data: MatrixData::Values(data),
        }
    }

    /// Calls `f` with consecutive runs of whole rows, in order.
    pub(crate) fn for_each_chunk(&self, mut f: impl FnMut(&[f32])) -> TractResult<()> {
        match &self.data {
            MatrixData::Values(v) => {
                ensure!(
                    v.len() == self.rows * self.cols,
                    "matrix has {} values, expected {}x{}",
                    v.len(),
                    self.rows,
                    self.cols
                );
                f(v);
            }
            MatrixData::Stored(location) => {
                ensure!(
                    location.shape.iter().product::<usize>() == self.rows * self.cols,
                    "tensor in {} has shape {:?}, expected [{}, {}]",
                    location.path.display(),
                    location.shape,
                    self.rows,
                    self.cols
                );
                let reader = TensorReader::open(location)?;
                let rows_per_chunk = (CHUNK_ELEMENTS / self.cols).max(1);
                let mut buffer = vec![0f32; rows_per_chunk * self.cols];
                let mut row = 0;
                while row < self.rows {
                    let n = rows_per_chunk.min(self.rows - row);
                    let chunk = &mut buffer[..n * self.cols];
                    reader.read(row * self.cols, chunk)?;
                    f(chunk);
                    row += n;
                }
            }
        }
        Ok(())
    }

    fn to_f32(&self) -> TractResult<Vec<f32>> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        self.for_each_chunk(|c| out.extend_from_slice(c))?;
        Ok(out)
    }

    fn to_f16(&self) -> TractResult<Vec<f16>> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        self.for_each_chunk(|c| out.extend(c.iter().map(|&v| f16::from_f32(v))))?;
        Ok(out)
    }
}

pub struct GraphBuilder {
    pub model: TypedModel,
    /// Where Q4_0 matrices come from: the compiled cache, or quantization now.
    pub weights: WeightCache,
}

impl Default for GraphBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::with_cache(WeightCache::off())
    }

    pub fn with_cache(weights: WeightCache) -> GraphBuilder {
        GraphBuilder {
            model: TypedModel::default(),
            weights,
        }
    }

    pub fn sym(&self, name: &str) -> TDim {
        self.model.symbols.sym(name).into()
    }

    pub fn input(
        &mut self,
        name: &str,
        shape: impl IntoIterator<Item = TDim>,
    ) -> TractResult<OutletId> {
        let shape: TVec<TDim> = shape.into_iter().collect();
        self.model.add_source(name, f32::fact(shape))
    }

    pub fn wire(
        &mut self,
        name: impl Into<String>,
        op: impl Into<Box<dyn TypedOp>>,
        inputs: &[OutletId],
    ) -> TractResult<OutletId> {
        Ok(self.model.wire_node(name, op, inputs)?[0])
    }

    pub fn wire_all(
        &mut self,
        name: impl Into<String>,
        op: impl Into<Box<dyn TypedOp>>,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        self.model.wire_node(name, op, inputs)
    }

    /// A binary element-wise op, broadcasting lower-rank operands from the left.
    pub fn binary(
        &mut self,
        name: impl AsRef<str>,
        op: tract_core::ops::binary::TypedBinOp,
        a: OutletId,
        b: OutletId,
    ) -> TractResult<OutletId> {
        Ok(wire_with_rank_broadcast(name, &mut self.model, op, &[a, b])?[0])
    }

    pub fn constant(&mut self, name: impl Into<String>, tensor: Tensor) -> TractResult<OutletId> {
        self.model.add_const(name, tensor)
    }

    pub fn vector(&mut self, name: impl Into<String>, values: &[f32]) -> TractResult<OutletId> {
        self.constant(name, Tensor::from_shape(&[values.len()], values)?)
    }

    pub fn scalar(&mut self, name: impl Into<String>, value: f32) -> TractResult<OutletId> {
        self.constant(name, tensor0(value))
    }

    /// `x @ w.T (+ bias)` over the last axis of `x`, with `w` stored at `precision`.
    pub fn linear(
        &mut self,
        name: &str,
        x: OutletId,
        w: Matrix,
        bias: Option<&[f32]>,
        precision: Precision,
    ) -> TractResult<OutletId> {
        let rank = self.model.outlet_fact(x)?.rank();
        ensure!(
            (1..=6).contains(&rank),
            "{name}: linear input must have rank 1 to 6"
        );
        let y = match precision {
            Precision::Q4_0 => {
                let weights = self.weights.q4_0(name, w)?;
                self.wire(name, Q4_0Linear { weights }, &[x])?
            }
            Precision::F32 | Precision::F16 => {
                let t = if precision == Precision::F32 {
                    Tensor::from_shape(&[w.rows, w.cols], &w.to_f32()?)?
                } else {
                    Tensor::from_shape(&[w.rows, w.cols], &w.to_f16()?)?
                };
                drop(w);
                let weight = self.constant(format!("{name}.weight"), t)?;
                let batch = &"abcdef"[..rank - 1];
                let expr = format!("{batch}k,nk->{batch}n");
                self.wire(
                    name,
                    EinSum::new(expr.parse()?, f32::datum_type()),
                    &[x, weight],
                )?
            }
        };
        match bias {
            Some(b) => {
                let b = self.vector(format!("{name}.bias"), b)?;
                self.binary(format!("{name}.add_bias"), math::add(), y, b)
            }
            None => Ok(y),
        }
    }

    /// RMS normalization over `axis`, then a per-channel scale.
    pub fn rms_norm(
        &mut self,
        name: &str,
        x: OutletId,
        axis: usize,
        eps: f32,
        scale: &[f32],
    ) -> TractResult<OutletId> {
        let normed = self.wire(
            format!("{name}.rms"),
            RmsNorm {
                axis,
                eps: Arc::new(tensor0(eps)),
            },
            &[x],
        )?;
        let scale = self.vector(format!("{name}.scale"), scale)?;
        self.binary(format!("{name}.mul"), math::mul(), normed, scale)
    }

    /// LayerNorm over the last axis with weight and bias. tract-core has no LayerNorm op, so it is
    /// spelled out: centre, then scale by the reciprocal root of the mean square.
    pub fn layer_norm(
        &mut self,
        name: &str,
        x: OutletId,
        eps: f32,
        weight: &[f32],
        bias: &[f32],
    ) -> TractResult<OutletId> {
        let rank = self.model.outlet_fact(x)?.rank();
        let width = weight.len();
        let sum = self.wire(
            format!("{name}.sum"),
            Reduce::new(tvec![rank - 1], Reducer::Sum),
            &[x],
        )?;
        let inv_width = self.scalar(format!("{name}.inv_width"), 1.0 / width as f32)?;
        let mean = self.binary(format!("{name}.mean"), math::mul(), sum, inv_width)?;
        let centred = self.wire(format!("{name}.centred"), math::sub(), &[x, mean])?;
        let var = self.wire(
            format!("{name}.var"),
            Reduce::new(tvec![rank - 1], Reducer::MeanOfSquares),
            &[centred],
        )?;
        let eps = self.scalar(format!("{name}.eps"), eps)?;
        let var_eps = self.binary(format!("{name}.var_eps"), math::add(), var, eps)?;
        let inv_std = self.wire(format!("{name}.rsqrt"), math::rsqrt(), &[var_eps])?;
        let normed = self.wire(format!("{name}.normed"), math::mul(), &[centred, inv_std])?;
        let w = self.vector(format!("{name}.weight"), weight)?;
        let scaled = self.binary(format!("{name}.mul"), math::mul(), normed, w)?;
        let b = self.vector(format!("{name}.bias"), bias)?;
        self.binary(format!("{name}.add"), math::add(), scaled, b)
    }

    /// Scaled dot-product attention spelled with einsums, so tract picks matmul kernels for it:
    /// `scores = q·k / sqrt(head_dim)` by `scores_expr`, plus an optional additive `mask`,
    /// softmax over `softmax_axis` (the key axis of the scores), then `context_expr` with `v`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &mut self,
        name: &str,
        (q, k, v): (OutletId, OutletId, OutletId),
        head_dim: usize,
        scores_expr: &str,
        context_expr: &str,
        softmax_axis: usize,
        mask: Option<OutletId>,
    ) -> TractResult<OutletId> {
        let scores = self.wire(
            format!("{name}.scores"),
            EinSum::new(scores_expr.parse()?, f32::datum_type()),
            &[q, k],
        )?;
        let scale = self.scalar(format!("{name}.scale"), 1.0 / (head_dim as f32).sqrt())?;
        let mut scores = self.binary(format!("{name}.scaled"), math::mul(), scores, scale)?;
        if let Some(mask) = mask {
            scores = self.binary(format!("{name}.masked"), math::add(), scores, mask)?;
        }
        let probs = self.softmax(&format!("{name}.softmax"), scores, softmax_axis)?;
        self.wire(
            format!("{name}.context"),
            EinSum::new(context_expr.parse()?, f32::datum_type()),
            &[probs, v],
        )
    }

    pub fn softmax(&mut self, name: &str, x: OutletId, axis: usize) -> TractResult<OutletId> {
        self.wire(
            name,
            Softmax::new(tvec![axis], None, SoftmaxKind::Softmax),
            &[x],
        )
    }

    /// `softplus(x) = max(x, 0) + ln(1 + exp(-|x|))`, the overflow-free form.
    pub fn softplus(&mut self, name: &str, x: OutletId) -> TractResult<OutletId> {
        let abs = self.wire(format!("{name}.abs"), math::abs(), &[x])?;
        let neg = self.wire(format!("{name}.neg"), math::neg(), &[abs])?;
        let exp = self.wire(format!("{name}.exp"), math::exp(), &[neg])?;
        let one = self.scalar(format!("{name}.one"), 1.0)?;
        let one_plus = self.binary(format!("{name}.one_plus"), math::add(), exp, one)?;
        let ln = self.wire(format!("{name}.ln"), math::ln(), &[one_plus])?;
        let zero = self.scalar(format!("{name}.zero"), 0.0)?;
        let relu = self.binary(format!("{name}.relu"), math::max(), x, zero)?;
        self.wire(format!("{name}.sum"), math::add(), &[relu, ln])
    }

    pub fn reshape(
        &mut self,
        name: &str,
        x: OutletId,
        axis: usize,
        from: &[usize],
        to: &[usize],
    ) -> TractResult<OutletId> {
        let from: TVec<TDim> = from.iter().map(|d| d.to_dim()).collect();
        let to: TVec<TDim> = to.iter().map(|d| d.to_dim()).collect();
        self.wire(name, AxisOp::Reshape(axis, from, to), &[x])
    }

    pub fn move_axis(
        &mut self,
        name: &str,
        x: OutletId,
        from: usize,
        to: usize,
    ) -> TractResult<OutletId> {
        self.wire(name, AxisOp::Move(from, to), &[x])
    }

    pub fn slice(
        &mut self,
        name: &str,
        x: OutletId,
        axis: usize,
        start: impl ToDim,
        end: impl ToDim,
    ) -> TractResult<OutletId> {
        self.wire(
            name,
            tract_core::ops::array::Slice::new(axis, start, end),
            &[x],
        )
    }

    pub fn concat(
        &mut self,
        name: &str,
        axis: usize,
        inputs: &[OutletId],
    ) -> TractResult<OutletId> {
        self.wire(name, tract_core::ops::array::TypedConcat::new(axis), inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q4_0::{Q4_0Matrix, Q8Rows};
    use crate::testing::pseudo_random;

    /// Runs `x [s, k] @ w.T` through a one-node graph at `precision`, on a thread of `pool`
    /// when there is one (where products split across its threads).
    fn run_linear(
        w: &Matrix,
        x: &[f32],
        s: usize,
        precision: Precision,
        pool: Option<&rayon::ThreadPool>,
    ) -> Vec<f32> {
        let mut g = GraphBuilder::new();
        let sym = g.sym("S");
        let input = g.input("x", [sym, w.cols.to_dim()]).unwrap();
        let copy = Matrix::from_values(w.rows, w.cols, w.to_f32().unwrap());
        let y = g.linear("lin", input, copy, None, precision).unwrap();
        g.model.select_output_outlets(&[y]).unwrap();
        let plan = g.model.into_optimized().unwrap().into_runnable().unwrap();
        let input = tvec![Tensor::from_shape(&[s, w.cols], x).unwrap().into_tvalue()];
        let out = match pool {
            Some(pool) => pool.install(|| plan.run(input)),
            None => plan.run(input),
        }
        .unwrap();
        out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    /// The values the Q8_0 activation quantization hands to the Q4_0 kernel.
    fn quantized_activations(x: &[f32], cols: usize) -> Vec<f32> {
        let m = x.len() / cols;
        let rows = Q8Rows::quantize(x, m, cols);
        (0..m).flat_map(|s| rows.dequantize_row(s, cols)).collect()
    }

    /// The Q4_0 product is exact: it equals the f32 product of the dequantized weights and
    /// the dequantized activations, for widths that are and are not whole blocks, row counts
    /// that are and are not whole panels, and for one token (decode) as well as many
    /// (prefill): serially, and in a pool both split by panels (few tokens) and by tokens.
    #[test]
    fn q4_0_linear_equals_f32_linear_on_dequantized_operands() {
        for (rows, cols) in [
            (4, 64),
            (256, 64),
            (96, 128),
            (33, 96),
            (40, 72),
            (600, 256),
            (1000, 288),
        ] {
            let w = pseudo_random(rows * cols, rows as u32);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            let mut q = Q4_0Matrix::new(rows, cols);
            q.push_rows(&w);
            let w = Matrix::from_values(rows, cols, w);
            let dequant = Matrix::from_values(rows, cols, q.dequantize());
            for s in [1, 7, 41] {
                let x = pseudo_random(s * cols, 99 + s as u32);
                let reference = run_linear(
                    &dequant,
                    &quantized_activations(&x, cols),
                    s,
                    Precision::F32,
                    None,
                );
                for pool in [None, Some(&pool)] {
                    let got = run_linear(&w, &x, s, Precision::Q4_0, pool);
                    let worst = got
                        .iter()
                        .zip(&reference)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-4,
                        "[{rows}x{cols}] s={s} pool={}: q4_0 product differs from \
                         dequantized f32 by {worst}",
                        pool.is_some()
                    );
                }
            }
        }
    }
}
