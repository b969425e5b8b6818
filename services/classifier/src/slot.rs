//! The serving model, swappable while requests run: readers clone an `Arc` under a read lock
//! held for nanoseconds, so a swap never blocks or fails a request, and a request that started
//! with the old model finishes with it.

use crate::onnx::ServingModel;
use std::sync::{Arc, RwLock};

/// Holds the serving model, if any (a fresh install that skipped seeding has none).
#[derive(Debug, Default)]
pub struct ModelSlot {
    current: RwLock<Option<Arc<ServingModel>>>,
}

impl ModelSlot {
    pub fn new(model: ServingModel) -> Self {
        Self { current: RwLock::new(Some(Arc::new(model))) }
    }

    /// The model to use for one request.
    pub fn get(&self) -> Option<Arc<ServingModel>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the serving model; returns the previous one.
    pub fn swap(&self, model: ServingModel) -> Option<Arc<ServingModel>> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        current.replace(Arc::new(model))
    }

    /// Loads `bytes` and swaps only if they load: a corrupt or mismatched model leaves the old
    /// one serving.
    pub fn swap_bytes(&self, bytes: &[u8]) -> Result<Option<Arc<ServingModel>>, crate::onnx::LoadError> {
        let model = ServingModel::load(bytes)?;
        Ok(self.swap(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::extract;
    use crate::onnx::{tests::trained, write};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn model(bias: f32, version: &str) -> Vec<u8> {
        let mut heads = trained();
        heads.task_type.bias[0] = bias;
        write(&heads, version)
    }

    #[test]
    fn swapping_under_concurrent_load_loses_no_request() {
        let slot = Arc::new(ModelSlot::new(ServingModel::load(&model(1.0, "v1")).unwrap()));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let features = extract("fix the flaky login test");
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (slot, stop, served, features) =
                    (slot.clone(), stop.clone(), served.clone(), features.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let model = slot.get().expect("a model always serves");
                        let probabilities =
                            model.probabilities(&features).expect("every request is answered");
                        assert!((probabilities.task_type.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                        assert!(model.version == "v1" || model.version == "v2");
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for round in 0..20 {
            let version = if round % 2 == 0 { "v2" } else { "v1" };
            slot.swap_bytes(&model(f32::from(round as u8) / 10.0, version)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().expect("no reader panicked");
        }
        assert!(served.load(Ordering::Relaxed) > 100);
    }

    #[test]
    fn a_bad_model_leaves_the_old_one_serving() {
        let slot = ModelSlot::new(ServingModel::load(&model(1.0, "good")).unwrap());
        assert!(slot.swap_bytes(b"garbage").is_err());
        assert_eq!(slot.get().unwrap().version, "good");
    }
}
