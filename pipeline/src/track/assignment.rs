//! Optimal one-to-one matching of tracks to detections.
//!
//! Greedy matching (best pair first) can take a detection that a second
//! track needed more; the optimal assignment minimises the total cost
//! instead. Pairs may be forbidden (too little overlap), and leaving a row
//! unmatched has a price: a match is made only if it costs less than leaving
//! both sides unmatched. This is the cost-limited linear assignment SORT and
//! ByteTrack solve with `lapjv`, set up here as a rectangular problem with
//! one "unmatched" column per row and solved with the Hungarian method in
//! its shortest-augmenting-path form with dual potentials (Kuhn 1955,
//! Munkres 1957; the `O(n²m)` formulation of Jonker & Volgenant 1987).

/// The optimal matching of `rows` to `cols` as `(row, col)` pairs, sorted
/// by row.
///
/// `cost(row, col)` is the price of a pair, `None` if the pair must not be
/// matched; leaving a row unmatched costs `unmatched_cost`, so a pair costing
/// more than that is never chosen. Non-finite pair costs count as forbidden,
/// and a non-finite `unmatched_cost` matches nothing: nothing can be weighed
/// against it. Ties between equally cheap solutions are broken
/// deterministically.
pub(super) fn assign(
    rows: usize,
    cols: usize,
    cost: impl Fn(usize, usize) -> Option<f64>,
    unmatched_cost: f64,
) -> Vec<(usize, usize)> {
    if rows == 0 || cols == 0 || !unmatched_cost.is_finite() {
        return Vec::new();
    }
    // Columns `cols..cols + rows` are "unmatched", each open to every row,
    // so every row can always be placed and a forbidden pair, priced above
    // any of them, is never part of the optimum.
    let forbidden = unmatched_cost.abs() + 1.0;
    let width = cols + rows;
    let mut matrix = vec![unmatched_cost; rows * width];
    for row in 0..rows {
        for col in 0..cols {
            matrix[row * width + col] = cost(row, col)
                .filter(|c| c.is_finite() && *c <= unmatched_cost)
                .unwrap_or(forbidden);
        }
    }
    let chosen = minimum_cost_assignment(&matrix, rows, width);
    chosen
        .into_iter()
        .enumerate()
        .filter(|&(row, col)| col < cols && matrix[row * width + col] < forbidden)
        .collect()
}

/// For a `rows × cols` matrix (row-major, finite, `rows <= cols`), the
/// column assigned to each row in a minimum-total-cost assignment.
fn minimum_cost_assignment(cost: &[f64], rows: usize, cols: usize) -> Vec<usize> {
    debug_assert!(rows <= cols && cost.len() == rows * cols);
    // Index 0 of the column arrays is a virtual column holding the row being
    // inserted; real columns are 1-based, as are rows in `row_of`.
    let mut row_potential = vec![0.0; rows + 1];
    let mut col_potential = vec![0.0; cols + 1];
    let mut row_of = vec![0usize; cols + 1];
    let mut previous_col = vec![0usize; cols + 1];
    for row in 1..=rows {
        row_of[0] = row;
        let mut col = 0;
        let mut slack = vec![f64::INFINITY; cols + 1];
        let mut visited = vec![false; cols + 1];
        // Grow a tree of tight edges from `row` until it reaches a free column.
        loop {
            visited[col] = true;
            let tree_row = row_of[col];
            let mut delta = f64::INFINITY;
            let mut next_col = 0;
            for j in 1..=cols {
                if visited[j] {
                    continue;
                }
                let reduced = cost[(tree_row - 1) * cols + (j - 1)]
                    - row_potential[tree_row]
                    - col_potential[j];
                if reduced < slack[j] {
                    slack[j] = reduced;
                    previous_col[j] = col;
                }
                if slack[j] < delta {
                    delta = slack[j];
                    next_col = j;
                }
            }
            for j in 0..=cols {
                if visited[j] {
                    row_potential[row_of[j]] += delta;
                    col_potential[j] -= delta;
                } else {
                    slack[j] -= delta;
                }
            }
            col = next_col;
            if row_of[col] == 0 {
                break;
            }
        }
        // Flip the augmenting path back to the root.
        while col != 0 {
            let previous = previous_col[col];
            row_of[col] = row_of[previous];
            col = previous;
        }
    }
    let mut col_of = vec![0; rows];
    for (col, &row) in row_of.iter().enumerate().skip(1) {
        if row != 0 {
            col_of[row - 1] = col - 1;
        }
    }
    col_of
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_table(table: &[&[f64]]) -> impl Fn(usize, usize) -> Option<f64> {
        move |row, col| Some(table[row][col])
    }

    #[test]
    fn finds_the_optimum_where_greedy_fails() {
        // Greedy takes (0, 0) at 0.1 and is left with (1, 1) at 0.9; the
        // optimum is (0, 1) + (1, 0) = 0.5.
        let table: &[&[f64]] = &[&[0.1, 0.3], &[0.2, 0.9]];
        assert_eq!(assign(2, 2, from_table(table), 1.0), vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn matches_against_brute_force_on_small_matrices() {
        // A fixed pseudo-random sequence keeps the test deterministic.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f64 / 1000.0
        };
        for _ in 0..200 {
            let values: Vec<f64> = (0..12).map(|_| next()).collect();
            let (rows, cols) = (3, 4);
            let matrix = &values[..rows * cols];
            let chosen = minimum_cost_assignment(matrix, rows, cols);
            let total: f64 = chosen
                .iter()
                .enumerate()
                .map(|(r, &c)| matrix[r * cols + c])
                .sum();
            let mut best = f64::INFINITY;
            for a in 0..cols {
                for b in (0..cols).filter(|&b| b != a) {
                    for c in (0..cols).filter(|&c| c != a && c != b) {
                        best = best.min(matrix[a] + matrix[cols + b] + matrix[2 * cols + c]);
                    }
                }
            }
            assert!(
                (total - best).abs() < 1e-9,
                "{total} vs {best} for {matrix:?}"
            );
        }
    }

    #[test]
    fn a_pair_dearer_than_leaving_both_unmatched_is_not_made() {
        // (0, 0) alone costs 0.1 + 0.8 for unmatched row 1; the two weak
        // matches would cost 1.4.
        let table: &[&[f64]] = &[&[0.1, 0.7], &[0.7, 0.9]];
        assert_eq!(assign(2, 2, from_table(table), 0.8), vec![(0, 0)]);
    }

    #[test]
    fn forbidden_and_non_finite_pairs_are_never_matched() {
        let cost = |row: usize, col: usize| match (row, col) {
            (0, 0) => None,
            (0, 1) => Some(f64::NAN),
            (1, 0) => Some(0.5),
            _ => Some(f64::INFINITY),
        };
        assert_eq!(assign(2, 2, cost, 0.8), vec![(1, 0)]);
        assert_eq!(assign(2, 2, |_, _| Some(0.1), f64::NAN), vec![]);
    }

    #[test]
    fn more_tracks_than_detections_and_the_reverse() {
        let cost = |row: usize, col: usize| Some((row as f64 - col as f64).abs() / 10.0);
        assert_eq!(assign(3, 1, cost, 0.8), vec![(0, 0)]);
        assert_eq!(assign(1, 3, cost, 0.8), vec![(0, 0)]);
        assert_eq!(assign(0, 3, cost, 0.8), vec![]);
        assert_eq!(assign(3, 0, cost, 0.8), vec![]);
    }
}
