//! The processing threads: each owns one [`Pipeline`] — its plugins'
//! instances and the state of its key groups — and runs the jobs the
//! coordinator hands it, one at a time. A job's reply comes back in worker
//! order, so what the coordinator assembles does not depend on timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use crate::pipeline::Pipeline;
use crate::status::{Registry, WorkerCounters};

type Job = Box<dyn FnOnce(&mut Pipeline) + Send>;

/// A worker stopped (a panic in the host: a bug).
#[derive(Debug, thiserror::Error)]
#[error("processing worker {0} stopped unexpectedly")]
pub struct WorkerGone(pub usize);

pub struct Workers {
    jobs: Vec<Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    counters: Vec<Arc<WorkerCounters>>,
}

impl Workers {
    /// A thread for each pipeline, their counters in the registry; until the
    /// first status (a second in) every worker shows idle.
    pub fn start(pipelines: Vec<Pipeline>, registry: &Registry) -> Self {
        let n = pipelines.len();
        let counters: Vec<Arc<WorkerCounters>> = (0..n).map(|_| Arc::default()).collect();
        *registry.workers.lock().expect("registry lock") = counters.clone();
        *registry.worker_status.lock().expect("registry lock") = serde_json::Value::Array(
            (0..n)
                .map(|w| serde_json::json!({"worker": w, "events_per_sec": 0.0, "busy": 0.0, "keys": 0, "exchange_in_per_sec": 0.0, "exchange_queue": 0, "events": 0}))
                .collect(),
        );
        Workers::spawn(pipelines, counters)
    }

    /// A thread for each pipeline (worker `w` of `pipelines.len()`).
    pub fn spawn(pipelines: Vec<Pipeline>, counters: Vec<Arc<WorkerCounters>>) -> Self {
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        for (w, mut p) in pipelines.into_iter().enumerate() {
            let (tx, rx): (Sender<Job>, Receiver<Job>) = channel();
            jobs.push(tx);
            let busy = counters[w].clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rtap-worker-{w}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            let started = Instant::now();
                            job(&mut p);
                            busy.busy_ns
                                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        }
                    })
                    .expect("spawn a worker thread"),
            );
        }
        Workers {
            jobs,
            threads,
            counters,
        }
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn counters(&self, w: usize) -> &WorkerCounters {
        &self.counters[w]
    }

    /// Run `f` on every worker with that worker's input; the results in
    /// worker order.
    pub fn each<T, R>(
        &self,
        inputs: Vec<T>,
        f: impl Fn(&mut Pipeline, T) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, WorkerGone>
    where
        T: Send + 'static,
        R: Send + 'static,
    {
        let f = Arc::new(f);
        let (tx, rx) = channel();
        for (w, input) in inputs.into_iter().enumerate() {
            let (f, tx) = (f.clone(), tx.clone());
            let job: Job = Box::new(move |p| {
                let _ = tx.send((w, f(p, input)));
            });
            self.jobs[w].send(job).map_err(|_| WorkerGone(w))?;
        }
        drop(tx);
        let mut out: Vec<Option<R>> = (0..self.len()).map(|_| None).collect();
        for _ in 0..self.len() {
            let (w, r) = rx
                .recv()
                .map_err(|_| WorkerGone(out.iter().position(Option::is_none).unwrap_or(0)))?;
            out[w] = Some(r);
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every worker replied"))
            .collect())
    }

    /// Run `f` on every worker; the results in worker order.
    pub fn all<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Pipeline) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, WorkerGone> {
        self.each(vec![(); self.len()], move |p, ()| f(p))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Count `n` into `c` (relaxed: counters for the status).
pub fn count(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
