//! A batch loader: background threads turn [`BatchPlan`]s into f32 NCHW buffers, with a bounded
//! look-ahead. Batch `i` of epoch `e` draws its augmentation from a stream seeded by
//! `(seed, e, i)` and batches are delivered in order, so the same seed gives the same batches
//! whatever the thread count.

use crate::augment::Transform;
use crate::dataset::ImageSet;
use crate::sampler::{rng_for, BatchPlan, Sampler};
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A batch ready for a forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `rows × channels × height × width`, row-major.
    pub images: Vec<f32>,
    /// One label per row.
    pub labels: Vec<u32>,
    /// Dataset index of each row.
    pub indices: Vec<usize>,
    /// The first `anchors` rows are the batch's own images (see [`Sampler`]).
    pub anchors: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// `(rows, channels, height, width)`.
    pub fn shape(&self) -> (usize, usize, usize, usize) {
        (self.rows(), self.channels, self.height, self.width)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// Anchors per batch (rows are `anchors × sampler.rows_per_anchor()`).
    pub batch_size: usize,
    pub sampler: Sampler,
    /// Drop a short last batch (training); keep it for evaluation.
    pub drop_last: bool,
    /// Worker threads; 0 builds batches on the calling thread.
    pub threads: usize,
    /// Batches built ahead of the consumer.
    pub prefetch: usize,
    pub seed: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 128,
            sampler: Sampler::Shuffled,
            drop_last: true,
            threads: 2,
            prefetch: 4,
            seed: 0,
        }
    }
}

/// Builds batches of one image set with one transform.
#[derive(Clone)]
pub struct Loader {
    set: Arc<ImageSet>,
    transform: Arc<Transform>,
    pub config: LoaderConfig,
}

impl Loader {
    /// Panics if the transform's image size differs from the set's.
    pub fn new(set: Arc<ImageSet>, transform: Transform, config: LoaderConfig) -> Self {
        assert_eq!(
            (transform.channels, transform.height, transform.width),
            (set.channels, set.height, set.width),
            "transform and image set have different image shapes"
        );
        Self {
            set,
            transform: Arc::new(transform),
            config,
        }
    }

    pub fn set(&self) -> &ImageSet {
        &self.set
    }

    /// The plans of `epoch`.
    pub fn plan(&self, epoch: usize) -> Vec<BatchPlan> {
        let c = &self.config;
        c.sampler
            .plan(&self.set.labels, c.batch_size, c.drop_last, c.seed, epoch)
    }

    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.set.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Builds batch `index` of `epoch` from its plan (what the workers run).
    pub fn build(&self, epoch: usize, index: usize, plan: &BatchPlan) -> Batch {
        build(
            &self.set,
            &self.transform,
            self.config.seed,
            epoch,
            index,
            plan,
        )
    }

    /// The batches of `epoch`, in order, built ahead on background threads.
    pub fn epoch(&self, epoch: usize) -> EpochIter {
        EpochIter::start(self, epoch, 0)
    }

    /// Like [`Loader::epoch`], starting at batch `skip` (resuming mid-epoch).
    pub fn epoch_from(&self, epoch: usize, skip: usize) -> EpochIter {
        EpochIter::start(self, epoch, skip)
    }
}

fn build(
    set: &ImageSet,
    t: &Transform,
    seed: u64,
    epoch: usize,
    index: usize,
    plan: &BatchPlan,
) -> Batch {
    let per = t.out_len();
    let mut images = vec![0f32; plan.indices.len() * per];
    let mut rng = rng_for(seed, epoch as u64, index as u64);
    for (&i, dst) in plan.indices.iter().zip(images.chunks_exact_mut(per)) {
        t.apply(set.image(i), &mut rng, dst);
    }
    Batch {
        images,
        labels: plan.indices.iter().map(|&i| set.labels[i]).collect(),
        indices: plan.indices.clone(),
        anchors: plan.anchors,
        channels: t.channels,
        height: t.height,
        width: t.width,
    }
}

struct Window {
    next: usize,
    consumed: usize,
    stop: bool,
}

struct Shared {
    window: Mutex<Window>,
    cv: Condvar,
}

/// Iterator over one epoch's batches.
pub struct EpochIter {
    loader: Loader,
    epoch: usize,
    plans: Arc<Vec<BatchPlan>>,
    pos: usize,
    shared: Arc<Shared>,
    rx: Option<Receiver<(usize, Batch)>>,
    ready: BTreeMap<usize, Batch>,
    workers: Vec<JoinHandle<()>>,
}

impl EpochIter {
    fn start(loader: &Loader, epoch: usize, skip: usize) -> Self {
        let plans = Arc::new(loader.plan(epoch));
        let shared = Arc::new(Shared {
            window: Mutex::new(Window {
                next: skip,
                consumed: skip,
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let mut it = Self {
            loader: loader.clone(),
            epoch,
            plans,
            pos: skip,
            shared,
            rx: None,
            ready: BTreeMap::new(),
            workers: Vec::new(),
        };
        if loader.config.threads > 0 {
            let (tx, rx) = channel();
            let ahead = loader.config.prefetch.max(1);
            for _ in 0..loader.config.threads {
                let (tx, shared, plans) = (tx.clone(), it.shared.clone(), it.plans.clone());
                let (set, t, seed) = (
                    loader.set.clone(),
                    loader.transform.clone(),
                    loader.config.seed,
                );
                it.workers.push(std::thread::spawn(move || loop {
                    let index = {
                        let mut w = shared.window.lock().unwrap();
                        while !w.stop && w.next < plans.len() && w.next >= w.consumed + ahead {
                            w = shared.cv.wait(w).unwrap();
                        }
                        if w.stop || w.next >= plans.len() {
                            return;
                        }
                        w.next += 1;
                        w.next - 1
                    };
                    let batch = build(&set, &t, seed, epoch, index, &plans[index]);
                    if tx.send((index, batch)).is_err() {
                        return;
                    }
                }));
            }
            it.rx = Some(rx);
        }
        it
    }

    /// Batches in this epoch (including any skipped at the start).
    pub fn len_total(&self) -> usize {
        self.plans.len()
    }
}

impl Iterator for EpochIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.pos >= self.plans.len() {
            return None;
        }
        let i = self.pos;
        let batch = match &self.rx {
            None => self.loader.build(self.epoch, i, &self.plans[i]),
            Some(rx) => loop {
                if let Some(b) = self.ready.remove(&i) {
                    break b;
                }
                let (j, b) = rx.recv().expect("loader worker thread panicked");
                self.ready.insert(j, b);
            },
        };
        self.pos += 1;
        self.shared.window.lock().unwrap().consumed = self.pos;
        self.shared.cv.notify_all();
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.plans.len() - self.pos;
        (n, Some(n))
    }
}

impl ExactSizeIterator for EpochIter {}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shared.window.lock().unwrap().stop = true;
        self.shared.cv.notify_all();
        self.rx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
