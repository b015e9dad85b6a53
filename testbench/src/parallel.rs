//! Running independent jobs (whole scenario runs) on several threads.
//!
//! Each run builds its own world on the thread that runs it, so nothing of
//! the model is shared between threads; results come back in input order,
//! so output does not depend on which thread finished first.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The machine's cores (1 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `job` on every item with up to `jobs` threads and returns the
/// results in the items' order. `done` is called (from the worker thread)
/// after each job, with the item's index and its result: for progress
/// output.
pub fn map<T, R, J, D>(items: &[T], jobs: usize, job: J, done: D) -> Vec<R>
where
    T: Sync,
    R: Send,
    J: Fn(usize, &T) -> R + Sync,
    D: Fn(usize, &R) + Sync,
{
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = job(i, item);
                    done(i, &r);
                    if let Ok(mut out) = results.lock() {
                        out[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item ran: a job that panicked would have ended the scope"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::map;

    #[test]
    fn results_keep_the_input_order_on_any_thread_count() {
        let items: Vec<u64> = (0..50).collect();
        for jobs in [1, 2, 7, 100] {
            let done = std::sync::atomic::AtomicUsize::new(0);
            let out = map(
                &items,
                jobs,
                |i, x| {
                    // Uneven work so threads finish out of order.
                    let mut acc = *x;
                    for k in 0..(x % 7) * 1000 {
                        acc = acc.wrapping_mul(31).wrapping_add(k);
                    }
                    (i, *x * 2, acc)
                },
                |_, _| {
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                },
            );
            assert_eq!(done.into_inner(), 50);
            for (i, r) in out.iter().enumerate() {
                assert_eq!((r.0, r.1), (i, items[i] * 2));
            }
        }
    }

    #[test]
    fn no_items_gives_no_results() {
        let out: Vec<u8> = map(&[] as &[u8], 4, |_, x| *x, |_, _| {});
        assert!(out.is_empty());
    }
}
