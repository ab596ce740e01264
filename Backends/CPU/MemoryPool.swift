import LoRAFuse
import Foundation

/// Large CPU-backend values come from here: regions mapped from the OS once and handed out
/// again when freed, so a forward pass does not fault in fresh pages for every activation
/// (on a VM first-touch faults cost about as much as the kernels writing the pages).
///
/// A request takes the smallest free region that fits without wasting more than its own
/// size, else is carved from the smallest larger one (the rest stays free), else maps a
/// fresh region (with transparent huge pages where the kernel allows). Free regions are
/// kept while live + free stays within the largest live set seen, oldest unmapped first:
/// graphs repeat their shapes layer after layer and pass after pass, so most requests are
/// hits, and peak RSS stays with the live set (measurements: docs/tuning-log.md).
/// `CPUBackend.Configuration.reuseMemory = false` (`LORAFUSE_CPU_POOL=0`) gives a backend
/// the `unpooled` pool instead: every region is unmapped when freed.
final class CPUMemoryPool: @unchecked Sendable {
    struct Region {
        let pointer: UnsafeMutableRawPointer
        let capacity: Int
    }

    /// The pool of every CPU backend that reuses memory (one per process, so backends
    /// running one after another share their regions).
    static let shared = CPUMemoryPool(reuse: true)
    /// Regions mapped for each request and unmapped on release.
    static let unpooled = CPUMemoryPool(reuse: false)

    /// Mapping granularity: 2 MiB regions can be backed by transparent huge pages.
    static let granularity = 1 << 16
    static let hugePageThreshold = 4 << 20

    let reuse: Bool
    private let lock = NSLock()
    /// Free regions, oldest first.
    private var free: [Region] = []
    private(set) var freeBytes = 0
    /// Bytes handed out and not yet released, and their high-water mark.
    private(set) var liveBytes = 0
    private(set) var peakLiveBytes = 0
    /// Statistics: regions handed out again and regions mapped fresh.
    private(set) var hits = 0
    private(set) var misses = 0

    init(reuse: Bool) { self.reuse = reuse }

    deinit { for region in free { munmap(region.pointer, region.capacity) } }

    /// A region of at least `byteCount` bytes, or nil when the OS refuses the mapping.
    func acquire(_ byteCount: Int) -> Region? {
        let capacity = (byteCount + Self.granularity - 1) / Self.granularity * Self.granularity
        lock.lock()
        if reuse {
            var best: Int?
            for (index, region) in free.enumerated() where region.capacity >= capacity && region.capacity <= 2 * capacity {
                if best == nil || region.capacity < free[best!].capacity { best = index }
            }
            // Else carve the request from the smallest larger region; the rest stays free.
            if best == nil, let larger = free.indices.filter({ free[$0].capacity > capacity }).min(by: { free[$0].capacity < free[$1].capacity }) {
                let region = free[larger]
                free[larger] = Region(pointer: region.pointer + capacity, capacity: region.capacity - capacity)
                free.append(Region(pointer: region.pointer, capacity: capacity))
                best = free.count - 1
            }
            if let best {
                let region = free.remove(at: best)
                freeBytes -= region.capacity
                hits += 1
                liveBytes += region.capacity
                peakLiveBytes = max(peakLiveBytes, liveBytes)
                lock.unlock()
                return region
            }
        }
        misses += 1
        liveBytes += capacity
        peakLiveBytes = max(peakLiveBytes, liveBytes)
        lock.unlock()
        guard let pointer = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              pointer != MAP_FAILED else {
            lock.lock()
            liveBytes -= capacity
            lock.unlock()
            return nil
        }
        #if os(Linux)
        if capacity >= Self.hugePageThreshold { _ = madvise(pointer, capacity, MADV_HUGEPAGE) }
        #endif
        return Region(pointer: pointer, capacity: capacity)
    }

    func release(_ region: Region) {
        var evicted: [Region] = []
        lock.lock()
        liveBytes -= region.capacity
        if reuse {
            free.append(region)
            freeBytes += region.capacity
            // Live and free regions together stay within the largest live set seen, so the
            // pool never holds more than a pass without it would have had mapped at its
            // peak: oldest free regions go first.
            while liveBytes + freeBytes > peakLiveBytes, !free.isEmpty {
                let oldest = free.removeFirst()
                freeBytes -= oldest.capacity
                evicted.append(oldest)
            }
        } else {
            evicted.append(region)
        }
        lock.unlock()
        for region in evicted { munmap(region.pointer, region.capacity) }
    }
}
