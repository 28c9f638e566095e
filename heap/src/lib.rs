//! The component's heap: small allocations (up to [`MAX_SMALL`] bytes, at
//! most 16-byte aligned) come from size classes in regions the heap takes
//! from the standard allocator (dlmalloc) as it needs them, everything else
//! from dlmalloc itself.
//!
//! Every request runs in a fresh instance, and a small delivery makes about
//! 600 allocations, a delivery of 100 events about 13,000, nearly all of
//! them small and short-lived. dlmalloc's bookkeeping for them was about a
//! sixth of the component's own instructions per small delivery and a
//! ninth of a 100-event one's. Here a small allocation is the head of its
//! class's free list, or else the next bytes of the newest region; a freed
//! one goes back on its class's list (the class follows from the size Rust
//! passes to both calls, so a block carries no header). The first region
//! has [`FIRST_REGION`] bytes, enough for a small delivery; when it is used
//! up the heap takes another, twice as large as the last, up to
//! [`MAX_REGIONS`] of them (128 MiB in all, far more than a delivery
//! reaches); past them, allocations are dlmalloc's.
//!
//! Which allocator a block belongs to is decided by its address alone: a
//! block inside a region is the heap's, anything else dlmalloc's. That
//! matters because not every block the component frees was allocated by
//! it: the host writes strings and lists into the guest's memory through
//! `cabi_realloc`, which allocates from dlmalloc here ([`cabi_realloc!`]),
//! since wasi-libc frees some of those buffers with its own `free` (the
//! environment it reads, for one) while the bindings free others with
//! Rust's `dealloc`. Both then reach dlmalloc.
//!
//! Freed blocks are reused, so the memory an instance reaches stays close
//! to dlmalloc's; a bump allocator that never reused memory took fewer
//! instructions still, but grew every request's memory by a 64 KiB page,
//! and each page costs the runtime on every request (its pooled slot is
//! reset). docs/benchmarks.md ("Run of 2026-12-06 (evening)", and "Run of
//! 2026-12-06 (late): the heap for every delivery, scans a word at a time,
//! one draw of nonces" for the growing regions) has the measurements.
//!
//! Its own crate so that the delivery bench links it as the component does.
#![deny(missing_docs)]
// Built natively too, for its tests; only wasm32 builds install it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The largest small allocation; larger ones are dlmalloc's.
pub const MAX_SMALL: usize = 2048;
/// The alignment every small block has (and the smallest class).
const ALIGN: usize = 16;
/// Classes: 16, 32, 64, … [`MAX_SMALL`] bytes.
const CLASSES: usize = 8;
/// The first region's size, taken from dlmalloc on the first small
/// allocation; each later region is twice the one before.
pub const FIRST_REGION: usize = 32 * 1024;
/// The most regions the heap takes: 32 KiB to 64 MiB, 128 MiB in all.
pub const MAX_REGIONS: usize = 12;

/// The allocator: size classes in growing regions, over dlmalloc.
pub struct Heap {
    /// Each class's free blocks: the first one's address (0: none); each
    /// free block holds the next one's address in its first bytes.
    free: [Cell<usize>; CLASSES],
    /// The regions taken so far (`taken` of them): where each starts, and
    /// its size.
    starts: [Cell<usize>; MAX_REGIONS],
    sizes: [Cell<usize>; MAX_REGIONS],
    taken: Cell<usize>,
    /// The lowest start and highest end of any region: most foreign blocks
    /// are told apart without looking at each region.
    low: Cell<usize>,
    high: Cell<usize>,
    /// The unused rest of the newest region.
    next: Cell<usize>,
    end: Cell<usize>,
    /// The first region's size, and how many regions at most (lowered to
    /// the regions taken when dlmalloc has no memory for the next).
    first: usize,
    limit: Cell<usize>,
}

// SAFETY: a wasm32-wasip2 component runs on one thread; there is no other
// thread to share the cells with. Not on a target with threads (natively,
// or wasm32 with atomics), where the global `HEAP` then does not compile.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl Sync for Heap {}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static HEAP: Heap = Heap::new();

/// Defines the canonical ABI's allocator, `cabi_realloc`, with which the
/// host writes strings and lists into the guest's memory: dlmalloc's
/// ([`host_buffer`]), whatever the global allocator, since wasi-libc frees
/// some of these buffers with its own `free`. Rust code that frees one
/// reaches dlmalloc too: the heap hands every block outside its regions to
/// it (the bindings make these buffers `Vec`s and `String`s, so the heap
/// accepts any block of `System`'s as well as its own). Its strong
/// definition replaces the weak ones of std (which allocates from the
/// global allocator) and wasi-libc.
///
/// A macro, invoked at the root of the crate that is linked (the
/// component, the delivery bench), so that the definition sits in that
/// crate's own object: a linker takes every object of the crate it links,
/// but an archive member of a dependency only for a symbol still missing,
/// and std's weak `cabi_realloc` is not missing. On other targets it
/// defines nothing.
#[macro_export]
macro_rules! cabi_realloc {
    () => {
        /// The canonical ABI's allocator: `cmk_heap::host_buffer`, from
        /// dlmalloc (see the `cmk_heap::cabi_realloc!` macro).
        ///
        /// # Safety
        /// The canonical ABI's contract: `align` is a power of two, and a
        /// nonzero `old_len` comes with the `old_ptr` of an earlier call
        /// that returned `old_len` bytes at that alignment.
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub unsafe extern "C" fn cabi_realloc(
            old_ptr: *mut u8,
            old_len: usize,
            align: usize,
            new_len: usize,
        ) -> *mut u8 {
            // SAFETY: the canonical ABI's contract, passed on.
            let p = unsafe { $crate::host_buffer(old_ptr, old_len, align, new_len) };
            if p.is_null() {
                ::std::process::abort();
            }
            p
        }
    };
}

/// `cabi_realloc`'s work ([`cabi_realloc!`]), from `System`: a new buffer when `old_len` is
/// 0 (as std's and wit-bindgen's versions decide), else `old_ptr` grown;
/// an empty one is the dangling `align`. Null if the size is not a valid
/// layout or memory runs out.
///
/// # Safety
/// `align` is a power of two; a nonzero `old_len` comes with the
/// `old_ptr` of an earlier call that returned `old_len` bytes.
pub unsafe fn host_buffer(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    let Ok(layout) = Layout::from_size_align(new_len, align) else {
        return std::ptr::null_mut();
    };
    if old_len == 0 {
        // SAFETY: a nonzero size.
        unsafe { System.alloc(layout) }
    } else {
        // SAFETY: the caller's earlier buffer of `old_len` bytes.
        unsafe {
            System.realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    }
}

/// The class of a small layout, `None` for dlmalloc's.
#[inline]
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    // 0 for up to 16 bytes, 1 for 17 to 32, … 7 for 1025 to 2048.
    let above = (layout.size().max(ALIGN) - 1) >> 4;
    Some((usize::BITS - above.leading_zeros()) as usize)
}

/// The size of a class's blocks.
#[inline]
fn class_size(class: usize) -> usize {
    ALIGN << class
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

impl Heap {
    /// An empty heap: each region is taken when an allocation needs it.
    pub const fn new() -> Self {
        Self::with_regions(FIRST_REGION, MAX_REGIONS)
    }

    /// A heap whose first region has `first` bytes (a multiple of 16) and
    /// which takes at most `limit` (up to [`MAX_REGIONS`]) regions.
    const fn with_regions(first: usize, limit: usize) -> Self {
        assert!(limit <= MAX_REGIONS && first.is_multiple_of(ALIGN));
        Self {
            free: [const { Cell::new(0) }; CLASSES],
            starts: [const { Cell::new(0) }; MAX_REGIONS],
            sizes: [const { Cell::new(0) }; MAX_REGIONS],
            taken: Cell::new(0),
            low: Cell::new(usize::MAX),
            high: Cell::new(0),
            next: Cell::new(0),
            end: Cell::new(0),
            first,
            limit: Cell::new(limit),
        }
    }

    /// Whether `ptr` is one of the regions' blocks. The newest region is
    /// looked at first: it is as large as all the others together, and
    /// holds most of the blocks in use.
    #[inline(always)]
    fn owns(&self, ptr: *mut u8) -> bool {
        let p = ptr as usize;
        if p < self.low.get() || p >= self.high.get() {
            return false;
        }
        let n = self.taken.get().min(MAX_REGIONS);
        self.starts[..n]
            .iter()
            .zip(&self.sizes[..n])
            .rev()
            .any(|(start, size)| p.wrapping_sub(start.get()) < size.get())
    }

    /// A block of `class`, or null once the regions are used up.
    #[inline]
    fn small(&self, class: usize) -> *mut u8 {
        let head = self.free[class].get();
        if head != 0 {
            // SAFETY: a free block of this class, holding the next one's
            // address (written by `give_back`).
            self.free[class].set(unsafe { (head as *const usize).read() });
            return head as *mut u8;
        }
        let size = class_size(class);
        let at = self.next.get();
        if self.end.get() - at < size {
            return std::ptr::null_mut();
        }
        self.next.set(at + size);
        at as *mut u8
    }

    /// [`GlobalAlloc::alloc`] when the newest region has no room and no
    /// block of the class is free: a new region, or dlmalloc.
    ///
    /// # Safety
    /// As for [`GlobalAlloc::alloc`].
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout) -> *mut u8 {
        if let Some(c) = class(layout) {
            if self.take_region() {
                let p = self.small(c);
                if !p.is_null() {
                    return p;
                }
            }
        }
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    /// Takes the next region, twice the last one's size (whatever was left
    /// of the last one stays unused). False once `limit` regions are taken
    /// or dlmalloc has no memory for one; small allocations are then
    /// dlmalloc's.
    #[cold]
    #[inline(never)]
    fn take_region(&self) -> bool {
        let n = self.taken.get();
        if n >= self.limit.get() {
            return false;
        }
        let size = self.first << n;
        // SAFETY: a nonzero size and a power-of-two alignment.
        let base = unsafe { System.alloc(Layout::from_size_align_unchecked(size, ALIGN)) } as usize;
        if base == 0 {
            // Not retried: dlmalloc serves what it still can.
            self.limit.set(n);
            return false;
        }
        self.starts[n].set(base);
        self.sizes[n].set(size);
        self.taken.set(n + 1);
        self.low.set(self.low.get().min(base));
        self.high.set(self.high.get().max(base + size));
        self.next.set(base);
        self.end.set(base + size);
        true
    }

    /// # Safety
    /// `block` is one of the regions' blocks of `class`, no longer used.
    #[inline]
    unsafe fn give_back(&self, block: *mut u8, class: usize) {
        // SAFETY: a block of this class (at least 16 bytes, 16-aligned)
        // that nothing uses any more.
        unsafe { (block as *mut usize).write(self.free[class].get()) };
        self.free[class].set(block as usize);
    }
}

// Not inlined: the allocator is called from hundreds of places, and inlined
// into each it made the `.wasm` 290 KB larger (249 KB with the fast paths
// alone, for 2 % fewer instructions per 100-event delivery).
unsafe impl GlobalAlloc for Heap {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(c) = class(layout) {
            let p = self.small(c);
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: the caller's layout.
        unsafe { self.alloc_slow(layout) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(layout).is_some() {
            // SAFETY: as in `alloc`.
            let p = unsafe { self.alloc(layout) };
            if !p.is_null() {
                // SAFETY: a block of at least `layout.size()` bytes, which
                // a freed allocation may have written to.
                unsafe { p.write_bytes(0, layout.size()) };
            }
            return p;
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.owns(ptr) {
            // A region's block was allocated with a small layout, and
            // `realloc` keeps it small: the class is always there.
            debug_assert!(
                class(layout).is_some(),
                "a region block with a large layout"
            );
            if let Some(c) = class(layout) {
                // SAFETY: the caller frees a block a region gave out, with
                // the layout it was given for (of this class).
                unsafe { self.give_back(ptr, c) };
            }
            return;
        }
        // SAFETY: outside the regions: dlmalloc allocated `ptr` (through
        // `System` or `cabi_realloc`) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            // SAFETY: dlmalloc's allocation, with the caller's layout; it
            // stays dlmalloc's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees a nonzero `new_size` that, rounded
        // up to `layout.align()`, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // A region's block's layout always has a class (see `dealloc`), so
        // equal classes mean the block already fits.
        if class(new_layout) == class(layout) {
            return ptr;
        }
        // SAFETY: as in `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both hold at least the smaller size, and a fresh
            // allocation does not overlap a live one.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` was allocated with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    //! The allocator on its own (natively, over the system allocator):
    //! random sequences of allocations (some from the system allocator, as
    //! the host's buffers are), reallocations and frees, every live
    //! allocation filled with its own pattern and all of them checked every
    //! 50 steps, so an overlap, a lost copy or a misaligned pointer fails.

    use super::*;

    struct Live {
        ptr: *mut u8,
        layout: Layout,
        fill: u8,
    }

    fn check(live: &[Live]) {
        for l in live {
            // SAFETY: a live allocation of `layout.size()` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(l.ptr, l.layout.size()) };
            assert!(
                bytes.iter().all(|&b| b == l.fill),
                "allocation {:p} overwritten",
                l.ptr
            );
            assert_eq!(l.ptr as usize % l.layout.align(), 0);
        }
    }

    fn paint(l: &Live) {
        // SAFETY: as in `check`.
        unsafe { l.ptr.write_bytes(l.fill, l.layout.size()) };
    }

    /// xorshift64: a reproducible sequence without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn random_use_keeps_every_allocation_intact() {
        for seed in 1..=16u64 {
            // Half the seeds with small regions, which run out: blocks
            // from several regions and from dlmalloc past them.
            let heap = if seed % 2 == 0 {
                Heap::new()
            } else {
                Heap::with_regions(1024, 4)
            };
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut live: Vec<Live> = Vec::new();
            let (mut small, mut large) = (0, 0);
            for step in 0..2000u32 {
                let fill = (step % 251) as u8 + 1;
                match rng.next(10) {
                    0..=4 => {
                        let most = if rng.next(8) == 0 { 20_000 } else { 300 };
                        let size = 1 + rng.next(most) as usize;
                        let align = 1 << rng.next(7);
                        let layout = Layout::from_size_align(size, align).unwrap();
                        let how = rng.next(8);
                        let zeroed = how < 2;
                        // SAFETY: a nonzero size. One in eight comes from
                        // the system allocator, as the host's buffers do
                        // (`cabi_realloc`), and is freed through the heap.
                        let ptr = unsafe {
                            match how {
                                0 | 1 => heap.alloc_zeroed(layout),
                                2 => System.alloc_zeroed(layout),
                                _ => heap.alloc(layout),
                            }
                        };
                        assert!(!ptr.is_null());
                        if zeroed {
                            // SAFETY: just allocated with this size.
                            let bytes = unsafe { std::slice::from_raw_parts(ptr, size) };
                            assert!(
                                bytes.iter().all(|&b| b == 0),
                                "alloc_zeroed gave dirty memory"
                            );
                        }
                        if heap.owns(ptr) {
                            small += 1
                        } else {
                            large += 1
                        }
                        live.push(Live { ptr, layout, fill });
                        paint(live.last().unwrap());
                    }
                    5..=7 if !live.is_empty() => {
                        // Mostly the newest (a growing buffer), sometimes any.
                        let any = rng.next(live.len() as u64) as usize;
                        let i = if rng.next(2) == 0 {
                            live.len() - 1
                        } else {
                            any
                        };
                        let l = &live[i];
                        let new_size = 1 + rng.next(2 * l.layout.size() as u64 + 64) as usize;
                        let keep = l.layout.size().min(new_size);
                        // SAFETY: a live allocation with its layout, a nonzero size.
                        let ptr = unsafe { heap.realloc(l.ptr, l.layout, new_size) };
                        assert!(!ptr.is_null());
                        // SAFETY: the new allocation holds at least `keep` bytes.
                        let kept = unsafe { std::slice::from_raw_parts(ptr, keep) };
                        assert!(
                            kept.iter().all(|&b| b == l.fill),
                            "realloc lost the contents"
                        );
                        let layout = Layout::from_size_align(new_size, l.layout.align()).unwrap();
                        live[i] = Live { ptr, layout, fill };
                        paint(&live[i]);
                    }
                    _ if !live.is_empty() => {
                        let any = rng.next(live.len() as u64) as usize;
                        let i = if rng.next(2) == 0 {
                            live.len() - 1
                        } else {
                            any
                        };
                        let l = live.swap_remove(i);
                        // SAFETY: a live allocation with its layout.
                        unsafe { heap.dealloc(l.ptr, l.layout) };
                    }
                    _ => {}
                }
                // An overlap shows as a painted-over allocation.
                if step % 50 == 0 {
                    check(&live);
                }
            }
            check(&live);
            assert!(
                small > 0 && large > 0,
                "seed {seed}: the regions and dlmalloc both used"
            );
            for l in live {
                // SAFETY: as above.
                unsafe { heap.dealloc(l.ptr, l.layout) };
            }
        }
    }

    #[test]
    fn sizes_map_to_the_smallest_class_that_holds_them() {
        let layout = |size, align| Layout::from_size_align(size, align).unwrap();
        for (size, want) in [
            (1, 0),
            (16, 0),
            (17, 1),
            (32, 1),
            (33, 2),
            (1024, 6),
            (1025, 7),
            (2048, 7),
        ] {
            assert_eq!(class(layout(size, 8)), Some(want), "{size}");
            assert!(class_size(want) >= size);
        }
        assert_eq!(class(layout(2049, 8)), None);
        assert_eq!(class(layout(64, 32)), None, "over-aligned: dlmalloc's");
    }

    #[test]
    fn a_freed_block_is_the_next_of_its_class_and_the_regions_have_an_end() {
        let heap = Heap::with_regions(4096, 1);
        let l = |size| Layout::from_size_align(size, 8).unwrap();
        // SAFETY: nonzero sizes; each pointer is used with its own layout.
        unsafe {
            let a = heap.alloc(l(24));
            let b = heap.alloc(l(24));
            assert!(heap.owns(a) && heap.owns(b));
            assert_eq!(b as usize, a as usize + 32, "in order");
            heap.dealloc(a, l(24));
            assert_eq!(heap.alloc(l(30)), a, "the freed block comes back first");
            assert_eq!(heap.realloc(b, l(24), 32), b, "within its class: in place");
            b.write_bytes(9, 32);
            let moved = heap.realloc(b, l(32), 100);
            assert_ne!(moved, b);
            assert_eq!(std::slice::from_raw_parts(moved, 32), &[9; 32]);
            // Past the last region's end, small blocks are dlmalloc's.
            let mut taken = vec![];
            while heap.owns(*taken.last().unwrap_or(&a)) {
                taken.push(heap.alloc(l(2048)));
            }
            let outside = taken.pop().unwrap();
            assert!(!heap.owns(outside) && !outside.is_null());
            outside.write_bytes(1, 2048);
            heap.dealloc(outside, l(2048));
            for p in taken {
                heap.dealloc(p, l(2048));
            }
        }
    }

    #[test]
    fn each_region_is_twice_the_last_and_all_are_used_before_dlmalloc() {
        let heap = Heap::with_regions(4096, 3);
        let l = Layout::from_size_align(2048, 16).unwrap();
        // SAFETY: a nonzero size; each pointer is freed with its layout.
        unsafe {
            let mut mine = Vec::new();
            let outside = loop {
                let p = heap.alloc(l);
                assert!(!p.is_null());
                if !heap.owns(p) {
                    break p;
                }
                p.write_bytes(mine.len() as u8, 2048);
                mine.push(p);
            };
            assert_eq!(
                mine.len(),
                (4096 + 8192 + 16384) / 2048,
                "every region filled"
            );
            assert_eq!(heap.taken.get(), 3);
            for i in 0..3 {
                assert_eq!(heap.sizes[i].get(), 4096 << i);
                let start = heap.starts[i].get();
                let inside = mine
                    .iter()
                    .filter(|&&p| (start..start + heap.sizes[i].get()).contains(&(p as usize)))
                    .count();
                assert_eq!(inside, 2 << i, "region {i} holds its share");
            }
            for (i, &p) in mine.iter().enumerate() {
                assert_eq!(std::slice::from_raw_parts(p, 2048), &[i as u8; 2048][..]);
            }
            heap.dealloc(outside, l);
            let last = *mine.last().unwrap();
            heap.dealloc(last, l);
            assert_eq!(
                heap.alloc(l),
                last,
                "a freed region block before dlmalloc's"
            );
            for p in mine {
                heap.dealloc(p, l);
            }
        }
    }

    #[test]
    fn a_block_from_elsewhere_goes_back_to_the_system_allocator() {
        // What the host writes through `cabi_realloc` and the bindings free
        // with Rust's `dealloc`: small, but not the heap's to reuse.
        let heap = Heap::new();
        let l = |size| Layout::from_size_align(size, 4).unwrap();
        // SAFETY: nonzero sizes; each pointer is used with its own layout.
        unsafe {
            let mine = heap.alloc(l(20));
            let foreign = System.alloc(l(20));
            assert!(heap.owns(mine) && !heap.owns(foreign));
            foreign.write_bytes(5, 20);
            let grown = heap.realloc(foreign, l(20), 40);
            assert!(!heap.owns(grown), "stays the system allocator's");
            assert_eq!(std::slice::from_raw_parts(grown, 20), &[5; 20]);
            heap.dealloc(grown, l(40));
            let again = heap.alloc(l(40));
            assert_ne!(again, grown, "never on the heap's free lists");
            assert!(heap.owns(again));
            heap.dealloc(again, l(40));
            heap.dealloc(mine, l(20));
        }
    }

    #[test]
    fn host_buffers_come_from_the_system_allocator_and_grow() {
        let heap = Heap::new();
        // SAFETY: the canonical ABI's calls: new buffers (old_len 0),
        // then one grown with its own pointer and length.
        unsafe {
            assert_eq!(
                host_buffer(std::ptr::null_mut(), 0, 8, 0),
                8 as *mut u8,
                "empty: dangling"
            );
            let p = host_buffer(std::ptr::null_mut(), 0, 4, 20);
            assert!(!p.is_null() && (p as usize).is_multiple_of(4));
            p.write_bytes(3, 20);
            let q = host_buffer(p, 20, 4, 4000);
            assert_eq!(std::slice::from_raw_parts(q, 20), &[3; 20]);
            assert!(host_buffer(std::ptr::null_mut(), 0, 8, usize::MAX - 4).is_null());
            // The bindings free it as a `Vec`, through the heap: it goes
            // back to the system allocator, never onto a free list.
            let _ = heap.alloc(Layout::from_size_align(16, 4).unwrap());
            assert!(!heap.owns(q));
            heap.dealloc(q, Layout::from_size_align(4000, 4).unwrap());
        }
    }
}
