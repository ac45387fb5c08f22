//! Meshlight's continuous CPU profiler, linked into a Rust service.
//!
//! One call, [`start`] (or [`start_from_env`]), samples the process's CPU time with
//! pprof-rs's `SIGPROF` profiler, cuts it into windows of `upload_interval` and uploads each
//! window to the Meshlight collector as a gzipped pprof profile, over Pyroscope's ingest
//! protocol, from a background thread. Uploads that fail are kept in a bounded buffer and
//! retried with backoff; [`Profiler::shutdown`] (or dropping the [`Profiler`]) uploads the
//! last, partial window.
//!
//! Samples taken while a span's code runs through [`span::SpanLink::run`] carry the span's
//! ids as `span_id` / `trace_id` labels, exactly: see [`span`] for how, despite pprof
//! aggregating samples. Meshlight's tower middleware does this for every server span.
//!
//! ```no_run
//! use meshlight_profiler::{ProfilerConfig, span};
//!
//! # fn handle_request() {}
//! let mut config = ProfilerConfig::new("checkout");
//! config.endpoint = "http://collector.observability:4318".to_owned();
//! let profiler = meshlight_profiler::start(config)?;
//!
//! // In a request handler, with the ids of the request's span:
//! let link = span::link([0x4b; 16], [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
//! match &link {
//!     // Record link.profile_id() as the span's `pyroscope.profile.id` attribute.
//!     Some(link) => link.run(handle_request),
//!     None => handle_request(),
//! }
//! drop(link);
//!
//! let stats = profiler.shutdown();
//! println!("{} profiles uploaded", stats.profiles_uploaded);
//! # Ok::<(), meshlight_profiler::StartError>(())
//! ```
//!
//! Configuration from the environment (see [`config`] for every variable):
//!
//! ```
//! use meshlight_profiler::ProfilerConfig;
//!
//! let config = ProfilerConfig::from_env()?;
//! assert!(config.frequency_hz >= 1);
//! # Ok::<(), meshlight_profiler::ConfigError>(())
//! ```
//!
//! Only one profiler runs per process (pprof's state is process-wide). Linux is the
//! supported platform: span attribution relies on the unwinder reporting each frame's
//! function start address.
//!
//! # Costs and caveats
//!
//! - CPU: the samples themselves and, once per window on the profiler's thread, copying the
//!   window out of pprof, symbolizing new addresses, encoding and gzipping (`benches/
//!   overhead.rs` measures it).
//! - Memory: pprof-rs 0.15 keeps its samples in a fixed table of 16 384 stacks of 128
//!   frames, about 68 MB, which one guard reuses across windows for up to a minute;
//!   symbolizing adds the parsed debug info. Expect about 140 MB of RSS in the first minute
//!   and about 210 MB once the guard has been replaced (`benches/overhead.rs` reports it),
//!   which stays after shutdown (pprof allocates a fresh table when its guard stops).
//! - Names: functions are named from the binary's debug info. With `debug =
//!   "line-tables-only"` that holds unqualified names only (`burn_cpu`, `{closure#0}`);
//!   fuller debug info gives paths (`my_service::handler::burn_cpu`). Without debug info,
//!   only the symbol table names the outermost function of each frame.
//! - Blocking: [`Profiler::shutdown`] and dropping a [`Profiler`] wait for the last window's
//!   upload, up to `shutdown_timeout`; from async code call them in `spawn_blocking`.

pub mod config;
mod encode;
pub mod proto;
mod sampler;
pub mod span;
mod upload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};

pub use config::{ConfigError, ProfilerConfig};

use upload::Counters;

/// Set while a profiler runs in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Why the profiler did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid profiler configuration: {0}")]
    Config(#[from] ConfigError),
    /// Another [`Profiler`] is running in this process.
    #[error("a profiler is already running in this process")]
    AlreadyRunning,
    /// pprof could not start sampling (for example because something else in the process
    /// uses pprof).
    #[error("cannot start sampling: {0}")]
    Sampling(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP client could not be created.
    #[error("cannot create the HTTP client: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The profiler's thread or its runtime could not be created.
    #[error("cannot start the profiler thread: {0}")]
    Io(#[source] std::io::Error),
    /// The profiler's thread ended before it reported its start.
    #[error("the profiler thread exited while starting")]
    ThreadExited,
}

/// What the profiler has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Profiling windows taken.
    pub windows: u64,
    /// Samples in those windows.
    pub samples: u64,
    /// Profiles the collector accepted.
    pub profiles_uploaded: u64,
    /// Upload attempts that failed (retried or not).
    pub failed_attempts: u64,
    /// Profiles given up on: rejected by the collector, pushed out of the full buffer, or
    /// still buffered when shutdown ran out of time.
    pub profiles_dropped: u64,
    /// Bytes of encoded profiles waiting for upload.
    pub buffered_bytes: u64,
    /// Spans linked to a slot.
    pub spans_linked: u64,
    /// Spans that found every slot taken and ran unlinked.
    pub spans_without_slot: u64,
}

/// The running profiler. Dropping it shuts it down like [`Profiler::shutdown`].
#[derive(Debug)]
pub struct Profiler {
    counters: Arc<Counters>,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    shutdown: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// Starts profiling this process with `config`; the profiler runs until the returned
/// [`Profiler`] is shut down or dropped.
pub fn start(config: ProfilerConfig) -> Result<Profiler, StartError> {
    config.validate()?;
    if RUNNING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(StartError::AlreadyRunning);
    }
    let started = spawn(config);
    if started.is_err() {
        RUNNING.store(false, Ordering::Release);
    }
    started
}

/// [`start`] with [`ProfilerConfig::from_env`].
pub fn start_from_env() -> Result<Profiler, StartError> {
    start(ProfilerConfig::from_env()?)
}

fn spawn(config: ProfilerConfig) -> Result<Profiler, StartError> {
    let counters = Arc::new(Counters::default());
    let (shutdown, shutdown_receiver) = mpsc::channel();
    let (ready_sender, ready) = mpsc::sync_channel(1);
    let thread_counters = Arc::clone(&counters);
    let thread = thread::Builder::new()
        // Linux keeps 15 bytes of a thread name.
        .name("meshlight-prof".to_owned())
        .spawn(move || {
            upload::Agent {
                config,
                counters: thread_counters,
                shutdown: shutdown_receiver,
                ready: ready_sender,
            }
            .run();
        })
        .map_err(StartError::Io)?;
    let outcome = ready.recv().unwrap_or(Err(StartError::ThreadExited));
    if let Err(error) = outcome {
        let _ = thread.join();
        return Err(error);
    }
    Ok(Profiler {
        counters,
        running: Some(Running { shutdown, thread }),
    })
}

impl Profiler {
    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let (spans_linked, spans_without_slot) = span::counts();
        Stats {
            windows: load(&self.counters.windows),
            samples: load(&self.counters.samples),
            profiles_uploaded: load(&self.counters.profiles_uploaded),
            failed_attempts: load(&self.counters.failed_attempts),
            profiles_dropped: load(&self.counters.profiles_dropped),
            buffered_bytes: load(&self.counters.buffered_bytes),
            spans_linked,
            spans_without_slot,
        }
    }

    /// Stops sampling, takes the last (partial) window and uploads what is buffered within
    /// `shutdown_timeout`; returns the final counters.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // The thread also stops when the sender is gone, so a failed send changes nothing.
        let _ = running.shutdown.send(());
        if running.thread.join().is_err() {
            tracing::warn!("the profiler thread panicked");
        }
        RUNNING.store(false, Ordering::Release);
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        self.stop();
    }
}
