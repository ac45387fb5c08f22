//! The pprof side: the guard that samples, window rotation with the span slots, and turning
//! pprof's unsymbolized samples into a [`Window`].
//!
//! One guard runs across many windows. A window is what the guard counted since the last
//! rotation: each rotation takes `build_unresolved`, the guard's running totals per stack,
//! and subtracts the totals of the rotation before. Replacing the guard each window instead
//! would cost far more than the sampling itself: pprof-rs allocates and fills a fresh table
//! of about 68 MB on every stop and start, and resolves a whole backtrace on every start.
//! The guard is still replaced now and then (see [`MAX_STACKS_PER_GUARD`] and
//! [`MAX_GUARD_AGE`]), which bounds what pprof keeps and the totals kept here.
//!
//! A stack's lines come from one of its samples: pprof tells stacks apart by the function
//! of each frame and keeps the instruction addresses of the first sample, so which inlined
//! function and which line a frame shows is that sample's. A new guard picks a new first
//! sample, so over many windows the lines shown follow where the time went.
//!
//! Windows are taken with `build_unresolved` rather than pprof's symbolizing `build`:
//! `build` resolves every frame of every stack while holding the lock the signal handler
//! needs, so samples are lost for as long as symbolization takes, and the result keeps
//! neither the instruction address of a frame nor the start address of its function. Here
//! the raw stacks are copied out and the addresses are symbolized afterwards, each once,
//! through pprof's own resolver.
//!
//! What is removed from each stack:
//! - the profiler's signal handler and everything above it (the unwinder's frames): the
//!   handler is found by the name pprof itself strips, `perf_signal_handler`;
//! - the frame right below the handler, the kernel's signal return trampoline
//!   (`__restore_rt` on x86-64 glibc, `__kernel_rt_sigreturn` on aarch64) that pprof also
//!   drops;
//! - the span slots' trampoline frames, recognised by their exact function address.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::os::raw::c_int;
use std::time::{Duration, Instant, SystemTime};

use pprof::{ProfilerGuard, ProfilerGuardBuilder, UnresolvedReport};

use crate::encode::{FrameLine, Window, WindowSample};
use crate::span::{self, SLOT_COUNT, WindowSlots};

/// Samples whose interrupted instruction lies in these libraries are skipped. Unwinding
/// from inside libgcc's own unwinder can deadlock on its locks (pprof-rs's advice), and the
/// vDSO's unwind tables are wrong on some distributions. libc stays profiled: skipping it
/// would hide `memcpy` and `malloc` time.
const BLOCKLIST: [&str; 2] = ["libgcc", "vdso"];

/// Addresses symbolized before are reused; past this many the cache starts over, which
/// bounds its memory and forgets code unloaded since.
const MAX_CACHED_ADDRESSES: usize = 100_000;

/// The guard is replaced at the end of a window once it has counted this many distinct
/// stacks. pprof's table holds 4 096 × 4 of them; well below that, a new stack rarely
/// evicts an old one to pprof's temporary file, which grows with every eviction until the
/// guard stops. It also bounds [`Guard::reported`] and the copy each rotation takes.
const MAX_STACKS_PER_GUARD: usize = 2048;

/// The guard is replaced at the end of a window once it has run this long, whatever it
/// counted: the temporary file cannot grow for longer than this, and each stack's lines
/// are taken from a fresh sample at least this often. A replacement costs some tens of
/// milliseconds of the agent's thread, allocating pprof's table above all.
const MAX_GUARD_AGE: Duration = Duration::from_secs(60);

/// A stack as pprof tells stacks apart: the thread and each frame's function address.
type StackKey = (u64, Vec<usize>);

/// What one address symbolized to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resolved {
    Lines(Vec<FrameLine>),
    /// pprof's `perf_signal_handler`.
    SignalHandler,
    Unknown,
}

/// The running pprof guard and what rotating it needs.
pub(crate) struct Sampler {
    builder: ProfilerGuardBuilder,
    guard: Option<Guard>,
    frequency_hz: u32,
    /// Trampoline start address → slot.
    slot_addresses: HashMap<usize, usize>,
    cache: HashMap<usize, Resolved>,
}

/// A running pprof guard, with its totals as of the last rotation.
struct Guard {
    guard: ProfilerGuard<'static>,
    started: Instant,
    /// When the current window began.
    window_start: SystemTime,
    /// Per stack, the samples the guard had counted when the last window ended.
    reported: HashMap<StackKey, isize>,
}

impl Guard {
    fn start(builder: &ProfilerGuardBuilder) -> Result<Self, pprof::Error> {
        Ok(Self {
            guard: builder.clone().build()?,
            started: Instant::now(),
            window_start: SystemTime::now(),
            reported: HashMap::new(),
        })
    }

    /// Ends the current window: a report of its samples per stack, counted since the last
    /// rotation, and when the window began and ended (the next one begins then).
    ///
    /// pprof builds the report under the lock its signal handler takes with `try_write`,
    /// so a sample is counted either before the report (this window) or after it (the
    /// next); one that arrives meanwhile is dropped.
    fn end_window(&mut self) -> Result<(UnresolvedReport, Range<SystemTime>), pprof::Error> {
        let mut report = self.guard.report().build_unresolved()?;
        let end = SystemTime::now();
        let start = std::mem::replace(&mut self.window_start, end);
        report.data.retain(|stack, count| {
            let key = (
                stack.thread_id,
                stack
                    .frames
                    .iter()
                    .map(|frame| frame.symbol_address() as usize)
                    .collect(),
            );
            let total = *count;
            *count -= self.reported.insert(key, total).unwrap_or(0);
            *count > 0
        });
        Ok((report, start..end))
    }

    fn is_worn_out(&self) -> bool {
        self.reported.len() >= MAX_STACKS_PER_GUARD || self.started.elapsed() >= MAX_GUARD_AGE
    }
}

impl Sampler {
    /// Starts sampling; pprof allows one guard per process.
    pub(crate) fn start(frequency_hz: u32) -> Result<Self, pprof::Error> {
        let frequency = c_int::try_from(frequency_hz).unwrap_or(c_int::MAX);
        let builder = ProfilerGuardBuilder::default()
            .frequency(frequency)
            .blocklist(&BLOCKLIST);
        let guard = Guard::start(&builder)?;
        let slot_addresses = (0..SLOT_COUNT)
            .map(|slot| (span::trampoline_address(slot), slot))
            .collect();
        Ok(Self {
            builder,
            guard: Some(guard),
            frequency_hz,
            slot_addresses,
            cache: HashMap::new(),
        })
    }

    /// Whether a guard samples; `false` after a final rotation or a failed restart.
    pub(crate) fn is_running(&self) -> bool {
        self.guard.is_some()
    }

    /// Ends the current window and returns it; sampling goes on into the next one when
    /// `restart`, and stops otherwise.
    ///
    /// The slot protocol: copy the slot table (retired slots to quarantine), end the
    /// window (replacing the guard if it is worn out), then free the quarantine.
    pub(crate) fn rotate(&mut self, restart: bool) -> Result<Window, pprof::Error> {
        let slots = span::begin_rotation();
        let ended = match self.guard.as_mut() {
            Some(guard) => guard.end_window(),
            None => Err(pprof::Error::NotRunning),
        };
        let keep = restart
            && ended.is_ok()
            && self
                .guard
                .as_ref()
                .is_some_and(|guard| !guard.is_worn_out());
        if !keep {
            // Dropping the guard stops the samples; pprof then resets its table.
            self.guard = None;
        }
        if restart && self.guard.is_none() {
            match Guard::start(&self.builder) {
                Ok(guard) => self.guard = Some(guard),
                Err(error) => {
                    span::deactivate();
                    tracing::warn!(%error, "cpu profiler could not start its next window; profiling stops");
                }
            }
        }
        // The samples of the ended window are all in `ended`: later ones go to the next.
        span::end_rotation();
        let (report, time) = ended?;
        Ok(self.collect(&report, &slots, time))
    }

    fn collect(
        &mut self,
        report: &UnresolvedReport,
        slots: &WindowSlots,
        time: Range<SystemTime>,
    ) -> Window {
        if self.cache.len() > MAX_CACHED_ADDRESSES {
            self.cache.clear();
        }
        self.symbolize(report);

        let mut samples = Vec::with_capacity(report.data.len());
        let mut used = HashSet::new();
        for (stack, &count) in &report.data {
            // `end_window` kept only stacks with new samples.
            let count = u64::try_from(count).unwrap_or_default();
            // (instruction address, function start address), leaf first.
            let frames: Vec<(usize, usize)> = stack
                .frames
                .iter()
                .map(|frame| (frame.ip() as usize, frame.symbol_address() as usize))
                .collect();
            // The outermost handler: everything above it ran inside the handler.
            let handler = frames
                .iter()
                .rposition(|(ip, _)| self.cache.get(ip) == Some(&Resolved::SignalHandler));
            let program = match handler {
                Some(index) => frames.get(index + 2..).unwrap_or_default(),
                None => &frames[..],
            };
            // Nested spans belong to the outermost, the slot nearest the root.
            let span = program
                .iter()
                .rev()
                .find_map(|(_, function)| self.slot_addresses.get(function))
                .and_then(|&slot| slots.holder(slot));
            // A zero address ends some unwinds below the thread's entry point.
            let stack: Vec<usize> = program
                .iter()
                .filter(|&&(ip, function)| ip != 0 && !self.slot_addresses.contains_key(&function))
                .map(|&(ip, _)| ip)
                .collect();
            used.extend(stack.iter().copied());
            samples.push(WindowSample { stack, span, count });
        }
        let symbols = used
            .into_iter()
            .map(|ip| {
                let lines = match self.cache.get(&ip) {
                    Some(Resolved::Lines(lines)) => lines.clone(),
                    _ => Vec::new(),
                };
                (ip, lines)
            })
            .collect();
        Window {
            start: time.start,
            duration: time.end.duration_since(time.start).unwrap_or_default(),
            frequency_hz: self.frequency_hz,
            samples,
            symbols,
        }
    }

    /// Resolves every address of the report not in the cache, one at a time, through
    /// pprof's `Frames::from` (pprof's frame types cannot be named outside pprof, so a
    /// stack of the report is cloned as the carrier).
    ///
    /// pprof drops a frame that resolves to `perf_signal_handler` together with the frame
    /// after it, and drops frames that resolve to nothing: both come back empty. To tell
    /// them apart an address that came back empty is resolved again followed by an
    /// address known to resolve: the handler takes that one with it, an unknown address
    /// does not.
    fn symbolize(&mut self, report: &UnresolvedReport) {
        let Some(template) = report.data.keys().next() else {
            return;
        };
        let mut carrier = template.clone();
        carrier.frames.clear();
        let mut anchor = carrier.clone();
        let mut empty = Vec::new();
        let mut seen_empty = HashSet::new();

        for stack in report.data.keys() {
            for frame in &stack.frames {
                let ip = frame.ip() as usize;
                if self.cache.contains_key(&ip) || seen_empty.contains(&ip) {
                    continue;
                }
                let mut single = carrier.clone();
                single.frames.push(frame.clone());
                match pprof::Frames::from(single).frames.into_iter().next() {
                    Some(symbols) => {
                        if anchor.frames.is_empty() {
                            anchor.frames.push(frame.clone());
                        }
                        let lines = symbols
                            .iter()
                            .map(|symbol| FrameLine {
                                name: symbol.name(),
                                system_name: symbol.sys_name().into_owned(),
                                filename: symbol.filename().into_owned(),
                                line: symbol.lineno(),
                            })
                            .collect();
                        self.cache.insert(ip, Resolved::Lines(lines));
                    }
                    None => {
                        seen_empty.insert(ip);
                        empty.push(frame.clone());
                    }
                }
            }
        }

        for frame in empty {
            let ip = frame.ip() as usize;
            let resolved = if anchor.frames.is_empty() {
                Resolved::Unknown
            } else {
                let mut probe = anchor.clone();
                probe.frames.insert(0, frame);
                if pprof::Frames::from(probe).frames.is_empty() {
                    Resolved::SignalHandler
                } else {
                    Resolved::Unknown
                }
            };
            self.cache.insert(ip, resolved);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::encode::encode;
    use crate::encode::tests::label;
    use crate::proto;
    use crate::span::{SPAN_ID_LABEL, TRACE_ID_LABEL};

    #[inline(never)]
    fn burn(iterations: u64) -> u64 {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..iterations {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state = state.wrapping_add(i);
        }
        std::hint::black_box(state)
    }

    #[inline(never)]
    fn inside_span_work(until: Instant) -> u64 {
        let mut total = 0;
        while Instant::now() < until {
            total ^= burn(20_000);
        }
        total
    }

    #[inline(never)]
    fn outside_span_work(until: Instant) -> u64 {
        let mut total = 0;
        while Instant::now() < until {
            total ^= burn(20_000);
        }
        total
    }

    fn stack_names(profile: &proto::Profile, sample: &proto::Sample) -> Vec<String> {
        let mut names = Vec::new();
        for &location_id in &sample.location_id {
            let location = &profile.location[location_id as usize - 1];
            for line in &location.line {
                let function = &profile.function[line.function_id as usize - 1];
                names.push(profile.string_table[function.name as usize].clone());
            }
        }
        names
    }

    /// The only test in this binary that samples: pprof is process-global.
    #[test]
    fn samples_are_attributed_to_exactly_the_span_they_ran_in() {
        span::prepare();
        let mut sampler = Sampler::start(997).expect("pprof starts");
        span::activate();
        let trace_id = [0x4b; 16];
        let span_id = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        let link = span::link(trace_id, span_id).expect("a free slot");
        assert!(
            span::link(trace_id, span_id).is_some(),
            "another span gets its own slot"
        );

        // Interleave both, so both are sampled in the same window on the same thread.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut profile;
        loop {
            for _ in 0..5 {
                let until = Instant::now() + Duration::from_millis(40);
                std::hint::black_box(link.run(|| {
                    assert!(
                        span::link(trace_id, [1; 8]).is_none(),
                        "nested: no own link"
                    );
                    inside_span_work(until)
                }));
                let until = Instant::now() + Duration::from_millis(40);
                std::hint::black_box(outside_span_work(until));
            }
            let window = sampler.rotate(true).expect("window");
            profile = encode(&window);
            // Samples, not distinct stacks: a tight loop in a release build has few stacks.
            let samples = |keep: &dyn Fn(&proto::Sample) -> bool| -> i64 {
                profile
                    .sample
                    .iter()
                    .filter(|sample| keep(sample))
                    .map(|sample| sample.value[0])
                    .sum()
            };
            let labelled = samples(&|sample| label(&profile, sample, SPAN_ID_LABEL).is_some());
            let outside = samples(&|sample| {
                stack_names(&profile, sample)
                    .iter()
                    .any(|n| n.contains("outside_span_work"))
            });
            if labelled >= 3 && outside >= 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "too few samples: {labelled} labelled, {outside} outside"
            );
        }
        // A window holds only its own samples: nothing has run inside the span since.
        let next = encode(&sampler.rotate(true).expect("window"));
        assert!(
            !next.sample.iter().any(|sample| stack_names(&next, sample)
                .iter()
                .any(|n| n.contains("inside_span_work"))),
            "the last window's samples were counted again"
        );
        span::deactivate();
        drop(link);

        let profile_id = "00f067aa0ba902b7";
        for sample in &profile.sample {
            let names = stack_names(&profile, sample);
            let span = label(&profile, sample, SPAN_ID_LABEL);
            if span.is_some() {
                assert_eq!(span, Some(profile_id), "{names:?}");
                assert_eq!(
                    label(&profile, sample, TRACE_ID_LABEL),
                    Some("4b".repeat(16).as_str())
                );
                assert!(
                    names.iter().any(|n| n.contains("inside_span_work")),
                    "{names:?}"
                );
                assert!(
                    !names.iter().any(|n| n.contains("outside_span_work")),
                    "{names:?}"
                );
            }
            if names.iter().any(|n| n.contains("inside_span_work")) {
                assert_eq!(span, Some(profile_id), "unlabelled: {names:?}");
            }
            // In the test's own stacks, the profiler's frames and the trampolines are gone.
            // (Other stacks may hold pprof and backtrace frames legitimately: the rotation's
            // own symbolizing is sampled too.)
            let is_work = names.iter().any(|n| n.contains("side_span_work"));
            for name in names.iter().filter(|_| is_work) {
                assert!(
                    !name.contains("perf_signal_handler")
                        && !name.starts_with("backtrace::")
                        && !name.starts_with("pprof::")
                        && !name.contains("span::slot"),
                    "{name} in {names:?}"
                );
            }
        }

        drop(sampler);
    }
}
