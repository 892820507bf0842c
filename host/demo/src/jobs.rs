//! Independent pieces of the demo (model builds, evaluations, on-policy runs) on several cores at once.
//!
//! Each worker thread runs whole jobs, one at a time, in its own one-thread rayon pool, and the process computes
//! every kernel on the calling thread (`crate::threads`: candle's shared element-wise pool would otherwise make
//! side-by-side jobs queue on one lock). On the demo's tiny models a job gains little from a second thread
//! (~9%) and two jobs side by side run nearly as fast as one alone (docs/demo.md). Results come back in job
//! order. A job's numbers do not depend on the pool it ran in (the kernels split work into the same pieces
//! whatever the thread count), so the demo measures the same with any `jobs`; the end-to-end test checks that.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// One job.
pub type Job<'a, T> = Box<dyn FnOnce() -> anyhow::Result<T> + Send + 'a>;

/// Runs `jobs` on up to `workers` threads (inline, in the global pool, when `workers` is 1 or there is one job)
/// and returns their results in order. After a job fails no new job starts; the first failure in job order is
/// returned.
pub fn run<'a, T: Send>(workers: usize, jobs: Vec<Job<'a, T>>) -> anyhow::Result<Vec<T>> {
    let count = jobs.len();
    if workers <= 1 || count <= 1 {
        return jobs.into_iter().map(|job| job()).collect();
    }
    let queue: Mutex<std::vec::IntoIter<(usize, Job<'a, T>)>> =
        Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>().into_iter());
    let results: Mutex<Vec<Option<anyhow::Result<T>>>> =
        Mutex::new((0..count).map(|_| None).collect());
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..workers.min(count) {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
            let (queue, results, failed) = (&queue, &results, &failed);
            handles.push(scope.spawn(move || {
                loop {
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    // A poisoned lock means another worker panicked; that panic is re-raised below.
                    let Some((index, job)) = queue.lock().ok().and_then(|mut q| q.next()) else {
                        break;
                    };
                    let result = pool.install(job);
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut r) = results.lock() {
                        r[index] = Some(result);
                    }
                }
            }));
        }
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Ok(())
    })?;
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a demo job panicked"))?;
    let mut out = Vec::with_capacity(count);
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Some(r) => out.push(r?),
            // Not started because an earlier-finishing job failed; that failure comes first in the loop only if
            // it is earlier in order, so report it here.
            None => anyhow::bail!("demo job {index} did not run: another job failed first"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_and_each_job_runs_in_its_own_one_thread_pool() {
        let jobs: Vec<Job<'_, (usize, usize)>> = (0..7usize)
            .map(|i| {
                Box::new(move || Ok((i, rayon::current_num_threads()))) as Job<'_, (usize, usize)>
            })
            .collect();
        let out = run(3, jobs).unwrap();
        assert_eq!(
            out.iter().map(|r| r.0).collect::<Vec<_>>(),
            (0..7).collect::<Vec<_>>()
        );
        assert!(out.iter().all(|r| r.1 == 1), "{out:?}");
        // Inline with one worker: the global pool.
        let inline = run(
            1,
            vec![Box::new(|| Ok(rayon::current_num_threads())) as Job<'_, usize>],
        )
        .unwrap();
        assert_eq!(inline, vec![rayon::current_num_threads()]);
    }

    #[test]
    fn the_first_failure_in_order_is_returned() {
        let jobs: Vec<Job<'_, usize>> = (0..4usize)
            .map(|i| {
                Box::new(move || {
                    if i == 1 {
                        anyhow::bail!("job one failed")
                    } else {
                        Ok(i)
                    }
                }) as Job<'_, usize>
            })
            .collect();
        let err = run(2, jobs).unwrap_err().to_string();
        assert!(err.contains("job one failed"), "{err}");
    }
}
