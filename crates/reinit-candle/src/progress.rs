//! Progress of a verify run, for a progress bar: a clonable callback that
//! [`crate::verify`] calls when a run starts and the trainer calls after each
//! step. The library draws nothing; the CLI turns the events into a bar on
//! stderr when stderr is a terminal.

use std::fmt;
use std::sync::Arc;

/// One progress event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress<'a> {
    /// Run `index` (0-based) of `runs` starts: probes, then `steps` steps.
    Run {
        scheme: &'a str,
        index: usize,
        runs: usize,
        steps: usize,
    },
    /// Training step `step` (1-based) finished with this loss.
    Step { step: usize, loss: f32 },
}

type Callback = dyn Fn(Progress<'_>) + Send + Sync;

/// The callback, or none (the default: nothing is reported).
#[derive(Clone, Default)]
pub struct ProgressHook(Option<Arc<Callback>>);

impl ProgressHook {
    pub fn new(f: impl Fn(Progress<'_>) + Send + Sync + 'static) -> Self {
        ProgressHook(Some(Arc::new(f)))
    }

    pub fn emit(&self, event: Progress<'_>) {
        if let Some(f) = &self.0 {
            f(event);
        }
    }
}

impl fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressHook(set)"
        } else {
            "ProgressHook(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn hook_forwards_events_and_default_is_silent() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let hook = ProgressHook::new(move |p| {
            if let Progress::Step { step, .. } = p {
                sink.lock().unwrap().push(step);
            }
        });
        let copy = hook.clone();
        hook.emit(Progress::Step { step: 1, loss: 2.0 });
        copy.emit(Progress::Step { step: 2, loss: 1.0 });
        ProgressHook::default().emit(Progress::Step { step: 3, loss: 0.5 });
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    }
}
