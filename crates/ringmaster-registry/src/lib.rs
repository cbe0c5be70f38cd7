//! Cluster-wide counters, gauges and histograms in one shared-memory
//! segment.
//!
//! The master creates the segment (a memfd, [`Segment::create`]) and hands
//! it to every worker, which maps it ([`Segment::open`]). The segment holds
//! a header, a table of series descriptors that only the master writes
//! ([`Segment::register`]: the master assigns the index, so registering
//! the same name and labels again, from a restarted worker, gives the same
//! index), and the cells.
//!
//! Every series has one row of cells per worker row plus one **retired**
//! row; each row is padded to whole cache lines, so two workers never
//! write the same line. A worker adds to its own row with one relaxed
//! atomic operation (no syscall, no message); readers sum the rows. When a
//! slot is removed the master folds its row into the retired row, so
//! counters never go backwards ([`Segment::fold_row`]); gauges of a dead
//! worker are cleared ([`Segment::clear_gauges`]). The master also writes
//! its own series (per-worker figures it observes) in the retired row.
//!
//! This crate is a leaf: it knows nothing of processes or IPC.
//!
//! # Layout of the segment
//!
//! | offset | what |
//! |---|---|
//! | 0 | header: magic, size, rows, series capacity, series count, fold sequence, cells offset |
//! | 128 | `capacity` descriptors of 1024 bytes: kind, bucket count, offset and stride of the cells, bucket bounds, name, labels, help |
//! | cells offset | per series: `rows + 1` rows of `stride` bytes (a multiple of 64) |
//!
//! # Layout of this crate
//! - `lib.rs`: [`Segment`] and the cells;
//! - `desc`: [`Kind`], names, labels and buckets, and their validation;
//! - `render`: [`Snapshot`], the Prometheus text format and JSON.
//! - `rows`: one metric row by row ([`PerRow`]) and [`quantile`].
//! - [`series`]: the names of ringmaster's own series.

#![warn(missing_docs)]

mod desc;
mod render;
mod rows;
pub mod series;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

pub use desc::{DEFAULT_BUCKETS, Kind, MAX_BUCKETS, validate_name};
pub use render::{Sample, Series, Snapshot, Value};
pub use rows::{PerRow, quantile};

/// The segment's layout version: a reader of another layout cannot read
/// it (an upgraded master then copies nothing; preflight refuses first).
pub const LAYOUT: &str = "RMREG001";
const MAGIC: u64 = u64::from_le_bytes(*b"RMREG001");
const HEADER_LEN: usize = 128;
const DESC_LEN: usize = 1024;
const LINE: usize = 64;
/// The smallest segment accepted.
pub const MIN_SIZE: usize = 1 << 20;

/// A failure of the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The segment could not be created or mapped.
    #[error("shared-memory registry: {what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// The segment is not a registry, or of another version.
    #[error(
        "the fd does not hold a ringmaster registry (bad header); is it the master's registry segment?"
    )]
    BadHeader,
    /// A name, label or bucket list is not acceptable.
    #[error("metric {name:?}: {message}")]
    Invalid {
        /// The metric name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The segment has no room for the series.
    #[error(
        "metric {name:?}: the registry is full ({what}); raise server.registry_size (now {size} bytes) or use fewer label values"
    )]
    Full {
        /// The metric name.
        name: String,
        /// Which part is full.
        what: &'static str,
        /// The segment's size.
        size: usize,
    },
    /// The segment is read-only here.
    #[error("the registry is mapped read-only here")]
    ReadOnly,
}

/// A mapped registry segment.
pub struct Segment {
    ptr: *mut u8,
    len: usize,
    fd: Option<OwnedFd>,
    /// The creator's (the master's) own copy of the descriptors: workers
    /// map the segment too, so the master never trusts what it reads back
    /// from shared memory.
    owner: Option<std::sync::Mutex<Vec<Desc>>>,
    /// The layout, read once (by an opener, validated) or set (by the
    /// creator): never read back from shared memory afterwards.
    rows: u32,
    capacity: usize,
    cells: usize,
    /// The creator's bump pointer for cells.
    used: std::sync::atomic::AtomicUsize,
}

// SAFETY: the mapping is shared memory accessed only through atomics (cells,
// counts) or written by one writer (the master) before it publishes the
// series count with release ordering.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.len)
            .field("rows", &self.rows())
            .field("series", &self.series_count())
            .finish()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; nothing borrows it past `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn os(what: &'static str) -> RegistryError {
    RegistryError::Os {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// One descriptor, as read from the table.
#[derive(Debug, Clone)]
pub(crate) struct Desc {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) buckets: Vec<f64>,
    pub(crate) help: String,
    offset: usize,
    stride: usize,
}

/// Where a series' cells are: what reading its values needs, without its
/// name, labels and help (decoding those allocates).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    cells: usize,
    offset: usize,
    stride: usize,
}

impl Layout {
    fn of(d: &Desc) -> Layout {
        Layout {
            cells: d.kind.cells(d.buckets.len()),
            offset: d.offset,
            stride: d.stride,
        }
    }
}

impl Segment {
    /// Creates a segment of `size` bytes with `rows` worker rows (plus the
    /// retired row), as a memfd whose fd a worker can inherit.
    pub fn create(size: usize, rows: u32) -> Result<Segment, RegistryError> {
        if size < MIN_SIZE {
            return Err(RegistryError::Invalid {
                name: String::new(),
                message: format!("the segment must be at least {MIN_SIZE} bytes, got {size}"),
            });
        }
        // SAFETY: a constant C string and flags.
        let raw = unsafe {
            libc::memfd_create(
                c"ringmaster-registry".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(os("memfd_create"));
        }
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } < 0 {
            return Err(os("ftruncate"));
        }
        // Its size is fixed for good: no worker can shrink it under the
        // master (which would make the master's next access fault).
        // SAFETY: fcntl on our own fd.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(os("sealing the memfd"));
        }
        let rows_total = rows as usize + 1;
        // Room for descriptors: about one per 16 KiB, at least 256.
        let capacity = (size / (16 * 1024)).clamp(256, 16_384);
        let cells = (HEADER_LEN + capacity * DESC_LEN).next_multiple_of(page_size());
        let mut seg = Self::map(fd, size, true)?;
        seg.owner = Some(std::sync::Mutex::new(Vec::new()));
        seg.rows = rows;
        seg.capacity = capacity;
        seg.cells = cells;
        seg.used = std::sync::atomic::AtomicUsize::new(cells);
        if cells + rows_total * LINE > size {
            return Err(RegistryError::Invalid {
                name: String::new(),
                message: format!("{size} bytes cannot hold {rows} worker rows"),
            });
        }
        seg.put_u64(8, size as u64);
        seg.put_u64(16, u64::from(rows));
        seg.put_u64(24, capacity as u64);
        seg.put_u64(48, cells as u64);
        // The magic last: a reader that sees it sees the rest.
        fence(Ordering::Release);
        seg.put_u64(0, MAGIC);
        Ok(seg)
    }

    /// Maps a segment from an fd the master handed over (a worker, with
    /// `writable`), or read-only (a reader such as `stats`).
    pub fn open(fd: OwnedFd, writable: bool) -> Result<Segment, RegistryError> {
        // SAFETY: an all-zero stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into our struct.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
            return Err(os("fstat"));
        }
        let len = st.st_size as usize;
        if len < MIN_SIZE {
            return Err(RegistryError::BadHeader);
        }
        let mut seg = Self::map(fd, len, false)?;
        if seg.get_u64(0) != MAGIC || seg.get_u64(8) as usize != len {
            return Err(RegistryError::BadHeader);
        }
        let cells = seg.get_u64(48) as usize;
        let capacity = seg.get_u64(24) as usize;
        let rows = u32::try_from(seg.get_u64(16)).map_err(|_| RegistryError::BadHeader)?;
        if !cells.is_multiple_of(page_size())
            || cells >= len
            || capacity.saturating_mul(DESC_LEN).saturating_add(HEADER_LEN) > cells
        {
            return Err(RegistryError::BadHeader);
        }
        seg.rows = rows;
        seg.capacity = capacity;
        seg.cells = cells;
        if writable {
            // Only the cells are writable here: the header and the
            // descriptors stay the master's.
            // SAFETY: a page-aligned range inside our own mapping.
            let rc = unsafe {
                libc::mprotect(
                    seg.ptr.add(cells).cast(),
                    len - cells,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if rc < 0 {
                return Err(os("mprotect"));
            }
        }
        Ok(seg)
    }

    fn map(fd: OwnedFd, len: usize, writable: bool) -> Result<Segment, RegistryError> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping `len` bytes of our fd, shared; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os("mmap"));
        }
        Ok(Segment {
            ptr: ptr.cast(),
            len,
            fd: Some(fd),
            owner: None,
            rows: 0,
            capacity: 0,
            cells: len,
            used: std::sync::atomic::AtomicUsize::new(len),
        })
    }

    /// The segment's fd, to hand to a worker.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// The segment's size in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    fn get_u64(&self, at: usize) -> u64 {
        self.atomic(at).load(Ordering::Relaxed)
    }

    fn put_u64(&self, at: usize, v: u64) {
        self.atomic(at).store(v, Ordering::Relaxed);
    }

    /// The 8-byte atomic at header offset `at` (a constant below 64).
    fn atomic(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= HEADER_LEN);
        // SAFETY: in the header, aligned (the mapping is page-aligned); the
        // memory lives as long as `self`.
        unsafe { &*self.ptr.add(at).cast::<AtomicU64>() }
    }

    fn count_atomic(&self) -> &AtomicU32 {
        // SAFETY: bytes 32..36 of the header, aligned, inside the mapping.
        unsafe { &*self.ptr.add(32).cast::<AtomicU32>() }
    }

    fn seq(&self) -> &AtomicU64 {
        self.atomic(40)
    }

    /// Worker rows; the retired row's index is this number.
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// The index of the retired row (also the master's own row).
    pub fn retired_row(&self) -> u32 {
        self.rows()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many series are registered.
    pub fn series_count(&self) -> u32 {
        match &self.owner {
            Some(own) => lock(own).len() as u32,
            None => self
                .count_atomic()
                .load(Ordering::Acquire)
                .min(self.capacity() as u32),
        }
    }

    /// Descriptor `i` (< [`series_count`](Self::series_count)).
    pub(crate) fn desc(&self, i: u32) -> Desc {
        if let Some(own) = &self.owner {
            return lock(own)[i as usize].clone();
        }
        let at = HEADER_LEN + i as usize * DESC_LEN;
        // SAFETY: descriptor `i` < capacity lies inside the table; it was
        // written before the count that made `i` visible (release/acquire).
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.add(at), DESC_LEN) };
        desc::decode(bytes)
    }

    /// Registers a series (master only): the index of the existing series
    /// with this name and labels, or of a new one.
    ///
    /// `help` is the metric's one-line description (the first one
    /// registered for a name is kept).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(String, String)],
        buckets: &[f64],
    ) -> Result<u32, RegistryError> {
        let Some(own) = &self.owner else {
            return Err(RegistryError::ReadOnly);
        };
        let mut own = lock(own);
        let mut labels = labels.to_vec();
        labels.sort();
        let buckets = desc::validate(name, kind, &labels, buckets)?;
        let n = own.len() as u32;
        for (i, d) in own.iter().enumerate() {
            if d.name != name {
                continue;
            }
            if d.kind != kind || d.buckets != buckets {
                return Err(RegistryError::Invalid {
                    name: name.to_string(),
                    message: format!(
                        "already registered as a {} with other buckets or kind; one name has one kind",
                        d.kind.as_str()
                    ),
                });
            }
            if d.labels == labels {
                return Ok(i as u32);
            }
        }
        let full = |what| RegistryError::Full {
            name: name.to_string(),
            what,
            size: self.len,
        };
        if n as usize >= self.capacity() {
            return Err(full("no descriptor left"));
        }
        let stride = (kind.cells(buckets.len()) * 8).next_multiple_of(LINE);
        let need = stride * (self.rows() as usize + 1);
        let offset = self.used.load(Ordering::Relaxed);
        if offset.saturating_add(need) > self.len {
            return Err(full("no room for its cells"));
        }
        self.used.store(offset + need, Ordering::Relaxed);
        let at = HEADER_LEN + n as usize * DESC_LEN;
        let bytes = desc::encode(kind, name, help, &labels, &buckets, offset, stride);
        // SAFETY: descriptor `n` is inside the table and not yet visible to
        // readers (the count is published after this write).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(at), DESC_LEN) };
        own.push(desc::decode(&bytes));
        self.count_atomic().store(n + 1, Ordering::Release);
        Ok(n)
    }

    /// The cells of series `i` in `row`: a counter or gauge has one; a
    /// histogram has one per bucket, one for `+Inf`, then the sum (f64 bits).
    pub fn cells(&self, i: u32, row: u32) -> &[AtomicU64] {
        let d = self.desc(i);
        self.row_cells(&d, row)
    }

    /// The cells of `d` in `row`; none if a corrupt descriptor points
    /// outside the cells region (never a panic, never out of bounds).
    fn row_cells(&self, d: &Desc, row: u32) -> &[AtomicU64] {
        self.laid_out(Layout::of(d), row)
    }

    /// Where series `i`'s cells are, read from its descriptor's fixed
    /// fields only.
    /// An index that is not a registered series has no cells.
    fn layout(&self, i: u32) -> Layout {
        const NONE: Layout = Layout {
            cells: 0,
            offset: 0,
            stride: 0,
        };
        if let Some(own) = &self.owner {
            return lock(own).get(i as usize).map_or(NONE, Layout::of);
        }
        if i >= self.series_count() {
            return NONE;
        }
        let at = HEADER_LEN + i as usize * DESC_LEN;
        // SAFETY: as in `desc`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.add(at), DESC_LEN) };
        desc::layout(bytes)
    }

    /// The cells of the series laid out as `l` in `row`; none if a corrupt
    /// descriptor points outside the cells region.
    fn laid_out(&self, l: Layout, row: u32) -> &[AtomicU64] {
        let n = l.cells;
        let start = self.cells;
        let at = l
            .offset
            .saturating_add((row as usize).saturating_mul(l.stride));
        if row > self.rows()
            || l.offset < start
            || !at.is_multiple_of(8)
            || at.saturating_add(n * 8) > self.len
        {
            return &[];
        }
        // SAFETY: inside the mapping, 8-aligned, checked just above.
        unsafe { std::slice::from_raw_parts(self.ptr.add(at).cast::<AtomicU64>(), n) }
    }

    /// Folds `row` into the retired row and zeroes it (master only, when a
    /// slot is removed): counters and histograms keep their totals, gauges
    /// are dropped.
    pub fn fold_row(&self, row: u32) {
        let retired = self.retired_row();
        if row >= retired {
            return;
        }
        self.seq().fetch_add(1, Ordering::AcqRel);
        for i in 0..self.series_count() {
            let d = self.desc(i);
            let from = self.row_cells(&d, row);
            let to = self.row_cells(&d, retired);
            if from.is_empty() || to.len() != from.len() {
                continue;
            }
            match d.kind {
                Kind::Gauge => from[0].store(0, Ordering::Relaxed),
                Kind::Counter => {
                    to[0].fetch_add(from[0].swap(0, Ordering::Relaxed), Ordering::Relaxed);
                }
                Kind::Histogram => {
                    let last = from.len() - 1;
                    for (f, t) in from[..last].iter().zip(&to[..last]) {
                        t.fetch_add(f.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                    }
                    let sum = f64::from_bits(from[last].swap(0, Ordering::Relaxed));
                    add_f64(&to[last], sum);
                }
            }
        }
        self.seq().fetch_add(1, Ordering::AcqRel);
    }

    /// Zeroes the gauges of `row` (a worker exited: its in-flight requests
    /// and the like are gone with it).
    pub fn clear_gauges(&self, row: u32) {
        for i in 0..self.series_count() {
            let d = self.desc(i);
            if d.kind == Kind::Gauge
                && let Some(cell) = self.row_cells(&d, row).first()
            {
                cell.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Runs `read` until no fold overlapped it, so a reader never sees a
    /// row both folded and not.
    /// Gives up after many tries (a fold takes microseconds; a sequence
    /// stuck odd means a corrupt header) and returns the last reading.
    pub(crate) fn consistent<T>(&self, mut read: impl FnMut() -> T) -> T {
        for _ in 0..10_000 {
            let before = self.seq().load(Ordering::Acquire);
            if !before.is_multiple_of(2) {
                std::hint::spin_loop();
                continue;
            }
            let value = read();
            fence(Ordering::Acquire);
            if self.seq().load(Ordering::Relaxed) == before {
                return value;
            }
        }
        read()
    }

    /// The cluster-wide sum of a counter's or a gauge's rows (a gauge's
    /// rows as `i64`).
    pub fn sum(&self, i: u32) -> u64 {
        let l = self.layout(i);
        let rows = self.rows() as usize;
        let last = l.offset.saturating_add(rows.saturating_mul(l.stride));
        if l.cells > 0
            && l.offset >= self.cells
            && l.offset.is_multiple_of(8)
            && l.stride.is_multiple_of(8)
            && last.saturating_add(8) <= self.len
        {
            // Every row's first cell is inside the mapping and aligned
            // (checked once above, for the last and so for all): a strided
            // read, a few instructions a row (the segment has 64 rows or
            // more; `/counter` sums them on every request).
            return self.consistent(|| {
                (0..=rows)
                    .map(|row| {
                        // SAFETY: offset + row * stride <= last, checked
                        // above, 8-aligned, inside the mapping.
                        let cell = unsafe {
                            &*self.ptr.add(l.offset + row * l.stride).cast::<AtomicU64>()
                        };
                        cell.load(Ordering::Relaxed)
                    })
                    .fold(0u64, u64::wrapping_add)
            });
        }
        self.consistent(|| {
            (0..=self.rows())
                .filter_map(|row| self.laid_out(l, row).first())
                .map(|cell| cell.load(Ordering::Relaxed))
                .fold(0u64, u64::wrapping_add)
        })
    }
}

/// The counter and histogram totals of a segment, by series (name and
/// labels): what [`Segment::absorb`] copied, so that a later call copies
/// only what was added since.
#[derive(Debug, Default, Clone)]
pub struct Totals(std::collections::HashMap<SeriesKey, Vec<u64>>);

/// A series' name and labels.
type SeriesKey = (String, Vec<(String, String)>);

impl Segment {
    /// Adds the counters and histograms of `old` (another master's
    /// segment, mapped read-only) to this segment's retired row, minus
    /// `since` (what an earlier call copied); returns the totals copied so
    /// far. Gauges are live values of `old`'s workers and are not copied.
    ///
    /// This is how an upgraded master keeps every counter's value: once
    /// when it starts, and once more when the old master's last worker has
    /// exited. A series this segment refuses (full, or registered here
    /// with another kind or other buckets) is skipped and returned in the
    /// errors; the totals hold only what was copied.
    pub fn absorb(&self, old: &Segment, since: &Totals) -> (Totals, Vec<RegistryError>) {
        let retired = self.retired_row();
        let mut totals = Totals::default();
        let read: Vec<(Desc, Vec<u64>)> = old.consistent(|| {
            (0..old.series_count())
                .map(|i| old.desc(i))
                .filter(|d| d.kind != Kind::Gauge)
                .map(|d| {
                    let n = d.kind.cells(d.buckets.len());
                    let mut sum = vec![0u64; n];
                    for row in 0..=old.rows() {
                        let cells = old.row_cells(&d, row);
                        if cells.len() != n {
                            continue;
                        }
                        for (k, cell) in cells.iter().enumerate() {
                            let v = cell.load(Ordering::Relaxed);
                            if d.kind == Kind::Histogram && k == n - 1 {
                                let total = f64::from_bits(sum[k]) + f64::from_bits(v);
                                sum[k] = total.to_bits();
                            } else {
                                sum[k] = sum[k].wrapping_add(v);
                            }
                        }
                    }
                    (d, sum)
                })
                .collect()
        });
        let mut errors = Vec::new();
        for (d, sum) in read {
            let key = (d.name.clone(), d.labels.clone());
            let before = since.0.get(&key);
            let i = match self.register(&d.name, &d.help, d.kind, &d.labels, &d.buckets) {
                Ok(i) => i,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let to = self.cells(i, retired);
            if to.len() == sum.len() {
                for (k, (cell, v)) in to.iter().zip(&sum).enumerate() {
                    let was = before.and_then(|b| b.get(k)).copied().unwrap_or(0);
                    if d.kind == Kind::Histogram && k == sum.len() - 1 {
                        add_f64(cell, f64::from_bits(*v) - f64::from_bits(was));
                    } else {
                        cell.fetch_add(v.wrapping_sub(was), Ordering::Relaxed);
                    }
                }
            }
            totals.0.insert(key, sum);
        }
        (totals, errors)
    }
}

/// The system's page size (mappings and `mprotect` work in pages).
fn page_size() -> usize {
    // SAFETY: sysconf with a constant name.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096).max(4096)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Adds `v` to an `f64` kept as bits in `cell`.
pub fn add_f64(cell: &AtomicU64, v: f64) {
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let new = (f64::from_bits(cur) + v).to_bits();
        match cell.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

/// Records `v` in a histogram row: `cells` as [`Segment::cells`] gives
/// them, `bounds` its finite bucket bounds.
pub fn observe(cells: &[AtomicU64], bounds: &[f64], v: f64) {
    if cells.len() != bounds.len() + 2 {
        return;
    }
    let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
    cells[i].fetch_add(1, Ordering::Relaxed);
    add_f64(&cells[bounds.len() + 1], v);
}

#[cfg(test)]
mod tests;
