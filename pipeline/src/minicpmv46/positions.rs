//! Position ids of a slice's patches in the learned `N x N` SigLIP position table.
//!
//! The reference (`transformers.vision_utils.get_vision_nearest_position_ids`) maps patch row `i`
//! of `h` to `bucketize(i / h, arange(1/N, 1, 1/N), right=True)`, same for columns, and indexes
//! the table with `bucket_row * N + bucket_col`. In exact arithmetic that is
//! `min(i * N / h, N - 1)` (integer division), but torch computes in f32 and its `arange`
//! boundaries are not always the nearest f32 to `k / N`; when `i / h` equals a boundary exactly
//! (`i * N` a multiple of `h`), the float comparison decides, and for some `N` (19, 27, 100, ...
//! but none of 10, 14, 16, 32, 64, 70) torch puts the patch one bucket lower. The boundaries are
//! therefore rebuilt here exactly as torch's CPU `arange` kernel computes them, and the bucket is
//! found with the same f32 comparison.

/// Lanes of one `Vectorized<float>` in torch's CPU `arange` kernel. The kernel runs two vectors
/// per loop step and finishes the tail with the scalar formula. Checked against torch 2.15 on
/// x86-64 for every `N` in 1..=2000 (a build that dispatched 16-lane vectors would differ in the
/// last bit of some boundaries).
const TORCH_ARANGE_LANES: usize = 8;

/// `torch.arange(1/n, 1.0, 1/n)` in f32, bit for bit.
pub fn bucket_boundaries(n: usize) -> Vec<f32> {
    let step = 1.0 / n as f64;
    let start = step;
    let len = ((1.0 - start) / step).ceil().max(0.0) as usize;
    let vectorized = len / (2 * TORCH_ARANGE_LANES) * (2 * TORCH_ARANGE_LANES);
    (0..len)
        .map(|k| {
            if k < vectorized {
                // `Vectorized<float>::arange(start + step * k0, step)`: the base is rounded to
                // f32 first, then each lane adds `lane * step` in f64.
                let k0 = k / TORCH_ARANGE_LANES * TORCH_ARANGE_LANES;
                let base = (start + step * k0 as f64) as f32;
                (base as f64 + (k - k0) as f64 * step) as f32
            } else {
                (start + step * k as f64) as f32
            }
        })
        .collect()
}

/// Bucket of each of `len` coordinates `i / len` (f32 division), `right=True` semantics: the
/// number of boundaries `<=` the coordinate.
fn buckets(len: usize, boundaries: &[f32]) -> Vec<usize> {
    (0..len)
        .map(|i| {
            let x = i as f32 / len as f32;
            boundaries.partition_point(|&b| b <= x)
        })
        .collect()
}

/// Row-major position ids of an `h x w` patch grid into an `n x n` table.
pub fn position_ids(grid: (usize, usize), n: usize) -> Vec<i64> {
    let boundaries = bucket_boundaries(n);
    let rows = buckets(grid.0, &boundaries);
    let cols = buckets(grid.1, &boundaries);
    rows.iter()
        .flat_map(|&r| cols.iter().map(move |&c| (r * n + c) as i64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(len: usize, n: usize) -> Vec<usize> {
        (0..len).map(|i| (i * n / len).min(n - 1)).collect()
    }

    #[test]
    fn matches_exact_buckets_where_torch_does() {
        for n in [10, 14, 16, 32, 64, 70] {
            let b = bucket_boundaries(n);
            for len in 1..=300 {
                assert_eq!(buckets(len, &b), naive(len, n), "n={n} len={len}");
            }
        }
    }

    /// `(n, len, index, torch's bucket)` where torch differs from exact arithmetic, printed by
    /// `torch.bucketize(torch.arange(len) / len, torch.arange(1/n, 1.0, 1/n), right=True)`.
    #[test]
    fn reproduces_torch_rounding_at_exact_boundaries() {
        for (n, len, i, torch) in [
            (27, 27, 10, 9),
            (100, 20, 7, 34),
            (100, 75, 9, 11),
            (19, 38, 24, 11),
        ] {
            let got = buckets(len, &bucket_boundaries(n));
            let mut expected = naive(len, n);
            assert_eq!(expected[i], torch + 1);
            expected[i] = torch;
            assert_eq!(got, expected, "n={n} len={len}");
        }
    }

    #[test]
    fn boundary_count_follows_torch_length_rule() {
        // ceil((1 - 1/n) / (1/n)) in f64: usually n - 1, but n for n = 19, whose extra last
        // boundary rounds to 1.0 and so never counts (coordinates are < 1).
        assert_eq!(bucket_boundaries(10).len(), 9);
        assert_eq!(bucket_boundaries(16).len(), 15);
        assert_eq!(bucket_boundaries(19).len(), 19);
        assert_eq!(bucket_boundaries(19)[18], 1.0);
        assert_eq!(bucket_boundaries(1).len(), 0);
    }

    #[test]
    fn ids_are_row_major() {
        let ids = position_ids((2, 3), 16);
        assert_eq!(ids, vec![0, 5, 10, 8 * 16, 8 * 16 + 5, 8 * 16 + 10]);
    }
}
