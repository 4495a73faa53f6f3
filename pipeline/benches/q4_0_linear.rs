//! Speed of the Q4_0 product on the shapes of the full-size Qwen3.5-0.8B language model and the
//! SigLIP2 vision tower, for one row (decode) and many (prefill, vision), at 1 and 2 threads.
//!
//! `cargo bench -p lookout-pipeline --bench q4_0_linear`

use std::sync::Arc;
use std::time::Instant;

use lookout_pipeline::ops::Q4_0Linear;
use lookout_pipeline::q4_0::Q4_0Matrix;
use lookout_pipeline::threads;

fn main() -> anyhow::Result<()> {
    let shapes = [
        ("lm mlp up", 3584, 1024),
        ("lm mlp down", 1024, 3584),
        ("lm head", 248320, 1024),
        ("vision fc2", 1152, 4304),
    ];
    println!(
        "{:<12} {:>7} {:>6} {:>4} {:>3} {:>10} {:>9} {:>9}",
        "shape", "rows", "cols", "m", "thr", "ms", "GMAC/s", "wGB/s"
    );
    for threads in [1, 2] {
        threads::set_threads(Some(threads))?;
        for (name, rows, cols) in shapes {
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let mut weights = Q4_0Matrix::new(rows, cols);
            weights.push_rows(&values);
            drop(values);
            let bytes = weights.bytes();
            let op = Q4_0Linear {
                weights: Arc::new(weights),
            };
            for m in [1, 128] {
                if rows > 100_000 && m > 1 {
                    continue;
                }
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 31) % 100) as f32 / 100.0 - 0.5)
                    .collect();
                let run = || threads::run(|| op.product(&x, m));
                run();
                let reps = ((2e9 / (rows * cols * m) as f64) as usize).clamp(3, 2000);
                let start = Instant::now();
                for _ in 0..reps {
                    run();
                }
                let secs = start.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{:<12} {:>7} {:>6} {:>4} {:>3} {:>10.3} {:>9.1} {:>9.1}",
                    name,
                    rows,
                    cols,
                    m,
                    threads,
                    secs * 1e3,
                    (rows * cols * m) as f64 / secs / 1e9,
                    bytes as f64 / secs / 1e9
                );
            }
        }
    }
    Ok(())
}
